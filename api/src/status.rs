//! Status of a volume: the Go API's fields plus what the original never reported (observed
//! generation, conditions, sync results).
//!
//! Ownership is split by server-side apply field manager: the operator owns everything except
//! `sync`, which the volume's syncer writes. `conditions` is a map list keyed by `type`, so the two
//! writers never clobber each other.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a SharedVolume or ClusterSharedVolume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// `Pending`, `Preparing`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Human-readable detail of the phase; says what to fix when `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Address consumer PVs mount: the managed server's ClusterIP, or the external server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_server_address: Option<String>,
    /// PVC the syncer mounts, in the resource namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// PV behind that PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_name: Option<String>,
    /// Service in front of the managed NFS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `NfsServerReady` and `Synced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Pods that still mount the volume while it is being deleted (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocking_pods: Vec<String>,
    /// Namespaces that currently have consumer pods (and so a consumer PV/PVC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_namespaces: Vec<String>,
    /// Namespaces whose pods ask for this ClusterSharedVolume although its `namespaceSelector`
    /// does not allow them: they get no storage (the webhook refuses such pods; these got past it,
    /// for example while it was down, or the namespace's labels changed since).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Results of the syncer, written by the syncer itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

/// What the syncer last did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// Start of the last attempt, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// End of the last successful sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Source revision now published in the volume (commit, ETag, listing digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Wall time of the last attempt, e.g. `1.250s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration: Option<String>,
    /// Failed attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,
    /// Error of the last failed attempt, free of credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Files in the published tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// Bytes in the published tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// `metadata.generation` of the volume whose source the last attempt used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The phases of the Go API, kept as strings on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Pending,
    Preparing,
    Ready,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Pending, Phase::Preparing, Phase::Ready, Phase::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Preparing => "Preparing",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Condition types the operator maintains.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const NFS_SERVER_READY: &str = "NfsServerReady";
    pub const SYNCED: &str = "Synced";
}

/// Results a syncer reports in `status.sync.lastResult`.
pub mod sync_result {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
}

impl VolumeStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn phase(&self) -> Option<Phase> {
        self.phase.as_deref().and_then(Phase::parse)
    }
}
