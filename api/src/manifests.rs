//! Reading Kubernetes manifests (multi-document YAML) into typed objects: the examples, test
//! fixtures, and files handed to `sv-operator plan` or `validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::Value;

use crate::{API_VERSION, ClusterSharedVolume, SharedVolume};

/// One document of a manifest file.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    SharedVolume(Box<SharedVolume>),
    ClusterSharedVolume(Box<ClusterSharedVolume>),
    Secret(Box<Secret>),
    Pod(Box<Pod>),
    /// Any other kind, kept as JSON.
    Other {
        api_version: String,
        kind: String,
        value: Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: document {index}: {message}")]
    Document { path: String, index: usize, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Parses every document of a YAML stream. `origin` names the stream in errors.
pub fn parse_manifests(text: &str, origin: &str) -> Result<Vec<Manifest>, ManifestError> {
    parse_each(text, origin)?.into_iter().collect()
}

/// Parses a YAML stream document by document: the stream fails only when it is not YAML; a
/// document that is not a manifest fails on its own, and the others are still read.
pub fn parse_each(text: &str, origin: &str) -> Result<Vec<Result<Manifest, ManifestError>>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| ManifestError::Parse { path: origin.to_string(), message: e.to_string() })?;
    Ok(docs
        .into_iter()
        .enumerate()
        .filter(|(_, doc)| !doc.is_null())
        .map(|(index, doc)| {
            to_manifest(doc).map_err(|message| ManifestError::Document { path: origin.to_string(), index, message })
        })
        .collect())
}

/// The manifest files `path` names: itself, or every manifest file under it when a directory.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    if path.is_dir() { manifest_files(path) } else { Ok(vec![path.to_path_buf()]) }
}

fn to_manifest(doc: Value) -> Result<Manifest, String> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if api_version.is_empty() || kind.is_empty() {
        return Err("apiVersion and kind are required".to_string());
    }
    let typed = |e: serde_json::Error| format!("{kind} {api_version}: {e}");
    Ok(match (api_version.as_str(), kind.as_str()) {
        (API_VERSION, "SharedVolume") => Manifest::SharedVolume(Box::new(serde_json::from_value(doc).map_err(typed)?)),
        (API_VERSION, "ClusterSharedVolume") => {
            Manifest::ClusterSharedVolume(Box::new(serde_json::from_value(doc).map_err(typed)?))
        }
        ("v1", "Secret") => Manifest::Secret(Box::new(normalize_secret(serde_json::from_value(doc).map_err(typed)?))),
        ("v1", "Pod") => Manifest::Pod(Box::new(serde_json::from_value(doc).map_err(typed)?)),
        _ => Manifest::Other { api_version, kind, value: doc },
    })
}

/// Merges `stringData` into `data`, as the API server does on write.
pub fn normalize_secret(mut secret: Secret) -> Secret {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    secret
}

/// Every `.yaml`/`.yml` file under `dir`, recursively, sorted by path.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |path: &Path, source| ManifestError::Io { path: path.display().to_string(), source };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let path = entry.map_err(|e| io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses a file or every manifest file under a directory.
pub fn load(path: &Path) -> Result<Vec<(PathBuf, Manifest)>, ManifestError> {
    let mut out = Vec::new();
    for file in files(path)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|source| ManifestError::Io { path: file.display().to_string(), source })?;
        for manifest in parse_manifests(&text, &file.display().to_string())? {
            out.push((file.clone(), manifest));
        }
    }
    Ok(out)
}
