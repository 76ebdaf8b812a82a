//! What the webhook knows of the cluster when it answers: volumes, namespaces and the consumer
//! claims that exist. `serve` keeps a [`Snapshot`] current from watches (no API read per review);
//! `review` loads one from YAML files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::Value;
use sv_api::{ClusterSharedVolume, SharedVolume};

/// The cluster state the handlers read.
pub trait ClusterView {
    fn shared_volume(&self, namespace: &str, name: &str) -> Option<SharedVolume>;
    fn cluster_shared_volume(&self, name: &str) -> Option<ClusterSharedVolume>;
    /// Labels of a namespace; None when the namespace is unknown.
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
    /// Whether the claim exists (then its PersistentVolume is not created again), and whether it
    /// is being deleted.
    fn claim_state(&self, namespace: &str, name: &str) -> ClaimState;
}

/// A consumer claim as the webhook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimState {
    Absent,
    Present,
    /// It has a deletionTimestamp: the operator removes it (the namespace's last consumer left).
    /// A pod admitted now would wait forever: the kubelet does not start a pod whose claim is
    /// being deleted, and the claim's protection finalizer keeps it while that pod exists.
    Deleting,
}

impl ClaimState {
    pub fn of(claim: &PersistentVolumeClaim) -> Self {
        if claim.metadata.deletion_timestamp.is_some() { Self::Deleting } else { Self::Present }
    }
}

/// A copy of the objects the webhook reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub shared_volumes: BTreeMap<(String, String), SharedVolume>,
    pub cluster_shared_volumes: BTreeMap<String, ClusterSharedVolume>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub claims: BTreeMap<(String, String), ClaimState>,
    /// PersistentVolumes given in the files, kept only to report them; the claim decides.
    pub volumes: BTreeSet<String>,
}

impl ClusterView for Snapshot {
    fn shared_volume(&self, namespace: &str, name: &str) -> Option<SharedVolume> {
        self.shared_volumes.get(&(namespace.to_string(), name.to_string())).cloned()
    }
    fn cluster_shared_volume(&self, name: &str) -> Option<ClusterSharedVolume> {
        self.cluster_shared_volumes.get(name).cloned()
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(namespace).cloned()
    }
    fn claim_state(&self, namespace: &str, name: &str) -> ClaimState {
        self.claims.get(&(namespace.to_string(), name.to_string())).copied().unwrap_or(ClaimState::Absent)
    }
}

/// Why a cluster file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: document {index}: {message}")]
    Document { path: String, index: usize, message: String },
}

impl Snapshot {
    /// Adds every object of a multi-document YAML (or JSON) file: SharedVolumes,
    /// ClusterSharedVolumes, Namespaces, PersistentVolumeClaims and PersistentVolumes; `List`s are
    /// unpacked. Other kinds are refused, so that a typo does not silently mean "absent".
    pub fn load_file(&mut self, path: &Path) -> Result<(), LoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: shown.clone(), source })?;
        let documents = serde_saphyr::from_multiple::<Value>(&text).map_err(|e| LoadError::Document {
            path: shown.clone(),
            index: 0,
            message: e.to_string(),
        })?;
        for (index, document) in documents.into_iter().enumerate() {
            self.add(document).map_err(|message| LoadError::Document { path: shown.clone(), index, message })?;
        }
        Ok(())
    }

    /// Adds one object (or each item of a `List`).
    pub fn add(&mut self, object: Value) -> Result<(), String> {
        if object.is_null() {
            return Ok(());
        }
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        fn parse<T: for<'de> Deserialize<'de>>(kind: &str, object: Value) -> Result<T, String> {
            serde_json::from_value(object).map_err(|e| format!("a {kind} that does not parse: {e}"))
        }
        let namespace_of = |meta_ns: Option<String>, kind: &str| {
            meta_ns.filter(|n| !n.is_empty()).ok_or_else(|| format!("a {kind} without metadata.namespace"))
        };
        match kind.as_str() {
            "List" => {
                for item in object.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                    self.add(item)?;
                }
            }
            "SharedVolume" => {
                let volume: SharedVolume = parse(&kind, object)?;
                let ns = namespace_of(volume.namespace(), &kind)?;
                self.shared_volumes.insert((ns, volume.name_any()), volume);
            }
            "ClusterSharedVolume" => {
                let volume: ClusterSharedVolume = parse(&kind, object)?;
                self.cluster_shared_volumes.insert(volume.name_any(), volume);
            }
            "Namespace" => {
                let namespace: Namespace = parse(&kind, object)?;
                let mut labels = namespace.labels().clone();
                // The API server sets this label on every namespace; selectors often use it.
                labels.insert("kubernetes.io/metadata.name".to_string(), namespace.name_any());
                self.namespaces.insert(namespace.name_any(), labels);
            }
            "PersistentVolumeClaim" => {
                let claim: PersistentVolumeClaim = parse(&kind, object)?;
                let ns = namespace_of(claim.namespace(), &kind)?;
                self.claims.insert((ns, claim.name_any()), ClaimState::of(&claim));
            }
            "PersistentVolume" => {
                let volume: PersistentVolume = parse(&kind, object)?;
                self.volumes.insert(volume.name_any());
            }
            other => {
                return Err(format!(
                    "kind {other:?} is not cluster state the webhook reads; give SharedVolume, \
                     ClusterSharedVolume, Namespace, PersistentVolumeClaim or PersistentVolume"
                ));
            }
        }
        Ok(())
    }
}
