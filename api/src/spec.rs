//! The spec shared by `SharedVolume` and `ClusterSharedVolume`.
//!
//! Field names and JSON shapes are those of the Go SharedVolume v0.1.0 API, so existing manifests
//! apply unchanged. Types are deliberately lenient (strings and `i64` where the Go API had free
//! strings or ints): an object stored by an older CRD must still deserialize, so that a bad value is
//! reported on that object's status instead of breaking the watch for every volume. Rules live in
//! [`crate::validation`], not in the type system.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state shared by SharedVolume and ClusterSharedVolume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Path at which consumer pods see the volume (absolute).
    pub mount_path: String,

    /// Size and access mode of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// StorageClass of the disk behind the managed NFS server. Required unless `nfsServer` names an
    /// existing server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// How often the source is pulled, e.g. `30s`, `5m`, `2h`, `1d`. Default `60s` when a source is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<String>,

    /// Deadline of one sync; must be smaller than `syncInterval`. Default `120s`, or half the interval
    /// when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_timeout: Option<String>,

    /// An existing NFS server to use instead of a managed one (`url`, or `name`/`namespace` of its
    /// Service), or the image of the managed one (`image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_server: Option<NfsServerSpec>,

    /// Namespace that holds the volume's NFS server and syncer. SharedVolume: its own namespace.
    /// ClusterSharedVolume: defaults to the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_namespace: Option<String>,

    /// Prefix of every object the operator creates for this volume. Set by the operator from the
    /// object's UID; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_value: Option<String>,

    /// The external source the volume mirrors. At most one type may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
}

/// Capacity and access mode of a volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size as a Kubernetes quantity, e.g. `1Gi`. The managed NFS server refuses writes beyond it.
    pub capacity: String,

    /// `ReadWrite` or `ReadOnly` (default): how consumer pods mount the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ReadWrite", "ReadOnly"], "default" = "ReadOnly"))]
    pub access_mode: Option<String>,
}

/// An existing NFS server, or the image of the managed one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NfsServerSpec {
    /// Name of the Service of an existing in-cluster NFS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of that Service (default: the resource namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Host name or IP of an external NFS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Container image of the managed NFS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Exported path on the server (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "/"))]
    pub path: Option<String>,
}

/// The source a volume mirrors. At most one field may be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
}

/// A git repository over HTTPS or SSH.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// `https://…`, `ssh://…` or `user@host:path`.
    pub url: String,
    /// Branch to follow (default: the remote's HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// User for password or token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password or token, inline (prefer `passwordFromSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SSH private key, inline PEM or base64 of it (prefer `privateKeyFromSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_secret: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_from_secret: Option<SecretKeySelector>,
}

/// A directory on an SSH/SFTP server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshSource {
    pub host: String,
    /// TCP port (default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 22))]
    pub port: Option<i64>,
    /// Login user (default `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Remote directory to mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_secret: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_from_secret: Option<SecretKeySelector>,
}

/// A single file (or archive) over HTTP(S).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    pub url: String,
}

/// A bucket (and optional key prefix) on S3-compatible storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    /// Key prefix to mirror (default: the whole bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_from_secret: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_from_secret: Option<SecretKeySelector>,
}

/// One key of a Secret. `namespace` is forbidden on SharedVolume (its own namespace is used) and
/// required on ClusterSharedVolume.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Extra spec of a ClusterSharedVolume: which namespaces may mount it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAccessSpec {
    /// Only pods in namespaces matching this selector may mount the volume (default: every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Which kind of source is configured, for metrics, logs and conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Git,
    Ssh,
    Http,
    S3,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::Ssh => "ssh",
            SourceKind::Http => "http",
            SourceKind::S3 => "s3",
        }
    }
}

impl SourceSpec {
    /// Every source type that is set, in a fixed order.
    pub fn kinds(&self) -> Vec<SourceKind> {
        let mut kinds = Vec::new();
        if self.git.is_some() {
            kinds.push(SourceKind::Git);
        }
        if self.ssh.is_some() {
            kinds.push(SourceKind::Ssh);
        }
        if self.http.is_some() {
            kinds.push(SourceKind::Http);
        }
        if self.s3.is_some() {
            kinds.push(SourceKind::S3);
        }
        kinds
    }
}

/// The access mode consumer pods get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    ReadWrite,
    ReadOnly,
}

impl AccessMode {
    pub fn parse(value: Option<&str>) -> Option<AccessMode> {
        match value {
            None | Some("ReadOnly") => Some(AccessMode::ReadOnly),
            Some("ReadWrite") => Some(AccessMode::ReadWrite),
            Some(_) => None,
        }
    }

    pub fn is_read_only(self) -> bool {
        self == AccessMode::ReadOnly
    }
}

impl VolumeSpec {
    /// The configured source, if any type is set. An empty `source: {}` counts as no source.
    pub fn source_kind(&self) -> Option<SourceKind> {
        self.source.as_ref().and_then(|s| s.kinds().first().copied())
    }

    pub fn has_source(&self) -> bool {
        self.source_kind().is_some()
    }

    /// Every Secret key the source reads, with the role each plays.
    pub fn secret_refs(&self) -> Vec<(CredentialRole, &SecretKeySelector)> {
        self.credential_fields()
            .into_iter()
            .filter_map(|(role, _, from_secret)| from_secret.as_ref().map(|sel| (role, sel)))
            .collect()
    }

    /// Inline credential values (kept for compatibility with the Go API), with their roles.
    pub fn inline_credentials(&self) -> Vec<(CredentialRole, &str)> {
        self.credential_fields()
            .into_iter()
            .filter_map(|(role, inline, _)| inline.as_deref().filter(|v| !v.is_empty()).map(|v| (role, v)))
            .collect()
    }

    /// Each credential of the configured source: its role, inline value and Secret selector.
    #[allow(clippy::type_complexity)]
    fn credential_fields(&self) -> Vec<(CredentialRole, &Option<String>, &Option<SecretKeySelector>)> {
        let mut fields = Vec::new();
        let Some(source) = &self.source else {
            return fields;
        };
        if let Some(git) = &source.git {
            fields.push((CredentialRole::Password, &git.password, &git.password_from_secret));
            fields.push((CredentialRole::PrivateKey, &git.private_key, &git.private_key_from_secret));
        }
        if let Some(ssh) = &source.ssh {
            fields.push((CredentialRole::Password, &ssh.password, &ssh.password_from_secret));
            fields.push((CredentialRole::PrivateKey, &ssh.private_key, &ssh.private_key_from_secret));
        }
        if let Some(s3) = &source.s3 {
            fields.push((CredentialRole::AccessKey, &s3.access_key, &s3.access_key_from_secret));
            fields.push((CredentialRole::SecretKey, &s3.secret_key, &s3.secret_key_from_secret));
        }
        fields
    }
}

/// What a credential is for. Each role is one file in the syncer's credentials directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialRole {
    Password,
    PrivateKey,
    AccessKey,
    SecretKey,
}

impl CredentialRole {
    /// File name inside the mounted credentials directory.
    pub fn file_name(self) -> &'static str {
        match self {
            CredentialRole::Password => "password",
            CredentialRole::PrivateKey => "private-key",
            CredentialRole::AccessKey => "access-key",
            CredentialRole::SecretKey => "secret-key",
        }
    }
}
