//! The public API `sv.sharedvolume.io/v1alpha1`: `SharedVolume` (namespaced, `sv`) and
//! `ClusterSharedVolume` (cluster-scoped, `csv`), the annotations pods use to ask for them, and the
//! labels and names every other crate shares.
//!
//! The operator, the webhook, the syncer and `sv-operator validate` all build on this crate: one
//! [`validation::validate_spec`] decides what a valid volume is, and [`consumer`] builds the
//! storage a consumer namespace gets, whichever program creates it.

pub mod clock;
pub mod consumer;
pub mod lease;
pub mod manifests;
pub mod names;
pub mod redact;
mod spec;
mod status;
pub mod units;
pub mod validation;
pub mod watch;

use std::fmt;
use std::ops::{Deref, DerefMut};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use spec::*;
pub use status::*;

pub const GROUP: &str = "sv.sharedvolume.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "sv.sharedvolume.io/v1alpha1";

/// Pod annotation listing SharedVolumes (in the pod's namespace) to mount, comma separated.
pub const POD_ANNOTATION_SV: &str = "sharedvolume.sv";
/// Pod annotation listing ClusterSharedVolumes to mount, comma separated.
pub const POD_ANNOTATION_CSV: &str = "sharedvolume.csv";
/// Label the webhook puts on every pod it mutated, so the operator watches only consumer pods.
pub const CONSUMER_POD_LABEL: &str = "sv.sharedvolume.io/consumer";
/// Annotation on a volume that asks its syncer for a sync now; any new value triggers one.
pub const SYNC_REQUESTED_ANNOTATION: &str = "sv.sharedvolume.io/sync-requested";
/// Annotation with OpenSSH `known_hosts` lines the SSH and git-over-SSH sources must match.
/// Without it, the first host key seen is pinned in the volume.
pub const SSH_KNOWN_HOSTS_ANNOTATION: &str = "sv.sharedvolume.io/ssh-known-hosts";
/// Annotation (`"true"`) that turns SSH host key checking off.
pub const SSH_INSECURE_ANNOTATION: &str = "sv.sharedvolume.io/ssh-insecure-skip-host-key-check";
/// Annotation (`"true"`) asking the HTTP source to unpack a `.tar`, `.tar.gz`/`.tgz` or `.zip`.
pub const HTTP_UNPACK_ANNOTATION: &str = "sv.sharedvolume.io/http-unpack";

/// Mount options for the managed server: NFSv3 over TCP on one fixed port, no NLM.
pub const MANAGED_MOUNT_OPTIONS: [&str; 5] = ["nfsvers=3", "proto=tcp", "port=2049", "mountport=2049", "nolock"];
/// Annotation on a volume overriding the mount options of its PVs (comma separated).
pub const MOUNT_OPTIONS_ANNOTATION: &str = "sv.sharedvolume.io/mount-options";
/// How a managed NFS server treats consumers' `AUTH_UNIX` identities: `root` (the default: uid
/// and gid 0 become the anonymous ids), `all` (everyone does) or `none` (trusted as sent).
pub const NFS_SQUASH_ANNOTATION: &str = "sv.sharedvolume.io/nfs-squash";
/// The anonymous uid squashed consumers get (default 65534).
pub const NFS_ANON_UID_ANNOTATION: &str = "sv.sharedvolume.io/nfs-anon-uid";
/// The anonymous gid squashed consumers get (default 65534).
pub const NFS_ANON_GID_ANNOTATION: &str = "sv.sharedvolume.io/nfs-anon-gid";

/// Annotation on a volume setting its syncer container's memory limit (a quantity; default
/// [`DEFAULT_SYNCER_MEMORY_LIMIT`]). A git source holds the largest file of a revision whole
/// while it fetches (docs/syncer.md, "Memory"), so a repository with files near the default needs
/// more.
pub const SYNCER_MEMORY_LIMIT_ANNOTATION: &str = "sv.sharedvolume.io/syncer-memory-limit";
/// The syncer container's memory limit unless the volume's annotation says otherwise.
pub const DEFAULT_SYNCER_MEMORY_LIMIT: &str = "512Mi";
/// The smallest memory limit the annotation may set: the syncer container's memory request (the
/// API server refuses a limit below the request).
pub const MIN_SYNCER_MEMORY_LIMIT_BYTES: u64 = 64 << 20;

/// Labels on every object the operator creates.
pub mod labels {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "sharedvolume-operator";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    pub const PART_OF_VALUE: &str = "sharedvolume";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The volume's `referenceValue`: selects everything created for one volume.
    pub const REFERENCE: &str = "sv.sharedvolume.io/reference";
    /// `SharedVolume` or `ClusterSharedVolume`.
    pub const VOLUME_KIND: &str = "sv.sharedvolume.io/volume-kind";
    /// Namespace a consumer PV/PVC serves.
    pub const CONSUMER_NAMESPACE: &str = "sv.sharedvolume.io/consumer-namespace";
    /// Hash of the syncer's pod template: a changed template is a new ReplicaSet (a ReplicaSet
    /// never replaces the pods it already has), and the selectors of two never overlap.
    pub const TEMPLATE_HASH: &str = "sv.sharedvolume.io/template-hash";
}

/// Annotations on objects the operator creates.
pub mod annotations {
    /// `kind/namespace/name` of the owning volume, for objects that cannot carry an ownerReference.
    pub const OWNER: &str = "sv.sharedvolume.io/owner";
}

/// Values of the `app.kubernetes.io/component` label.
pub mod components {
    pub const NFS_SERVER: &str = "nfs-server";
    pub const SYNCER: &str = "syncer";
    pub const SYNCER_STORAGE: &str = "syncer-storage";
    pub const CONSUMER_STORAGE: &str = "consumer-storage";
}

/// The message of an immutable field, in the CRD as in the webhook and the operator.
pub const IMMUTABLE_MESSAGE: &str = "field is immutable; only source, syncInterval and syncTimeout may change after creation: create a new volume to change this";

/// A CRD validation rule that keeps `spec.<field>` as it was created (absent stays absent). In
/// the CRD, so that it holds while the webhook is down.
pub fn immutable_rule(field: &str) -> kube::core::Rule {
    let rule = format!(
        "has(self.spec.{field}) == has(oldSelf.spec.{field}) && \
         (!has(self.spec.{field}) || self.spec.{field} == oldSelf.spec.{field})"
    );
    kube::core::Rule::new(rule).message(IMMUTABLE_MESSAGE).field_path(format!(".spec.{field}"))
}

/// `referenceValue` may be set once (by the operator), then never changes.
pub fn reference_value_rule() -> kube::core::Rule {
    kube::core::Rule::new(
        "!has(oldSelf.spec.referenceValue) || oldSelf.spec.referenceValue == '' || \
         (has(self.spec.referenceValue) && self.spec.referenceValue == oldSelf.spec.referenceValue)",
    )
    .message("field is immutable; it names every object of the volume and cannot change once set: restore the previous value")
    .field_path(".spec.referenceValue")
}

/// A namespaced volume: its NFS server and syncer live in its own namespace, and only pods of that
/// namespace may mount it.
// The repeated `printcolumn(type_ = …)` arguments are separate columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sv.sharedvolume.io",
    version = "v1alpha1",
    kind = "SharedVolume",
    namespaced,
    shortname = "sv",
    status = "VolumeStatus",
    derive = "PartialEq",
    doc = "Shared ReadWriteMany storage in one namespace, kept in sync with an external source.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "NFS Address", type_ = "string", json_path = ".status.nfsServerAddress"),
    printcolumn(name = "Mount Path", type_ = "string", json_path = ".spec.mountPath"),
    printcolumn(name = "SyncInterval", type_ = "string", json_path = ".spec.syncInterval"),
    printcolumn(name = "Capacity", type_ = "string", json_path = ".spec.storage.capacity"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.sync.lastSyncTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = immutable_rule("mountPath"),
    validation = immutable_rule("storage"),
    validation = immutable_rule("storageClassName"),
    validation = immutable_rule("nfsServer"),
    validation = immutable_rule("resourceNamespace"),
    validation = reference_value_rule(),
)]
pub struct SharedVolumeSpec {
    #[serde(flatten)]
    pub volume: VolumeSpec,
}

/// A cluster-wide volume: its NFS server and syncer live in the operator's namespace, and pods of
/// any namespace (or those matching `namespaceSelector`) may mount it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sv.sharedvolume.io",
    version = "v1alpha1",
    kind = "ClusterSharedVolume",
    shortname = "csv",
    status = "VolumeStatus",
    derive = "PartialEq",
    doc = "Shared ReadWriteMany storage for the whole cluster, kept in sync with an external source.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "NFS Address", type_ = "string", json_path = ".status.nfsServerAddress"),
    printcolumn(name = "Mount Path", type_ = "string", json_path = ".spec.mountPath"),
    printcolumn(name = "SyncInterval", type_ = "string", json_path = ".spec.syncInterval"),
    printcolumn(name = "Capacity", type_ = "string", json_path = ".spec.storage.capacity"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.sync.lastSyncTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = immutable_rule("mountPath"),
    validation = immutable_rule("storage"),
    validation = immutable_rule("storageClassName"),
    validation = immutable_rule("nfsServer"),
    validation = immutable_rule("resourceNamespace"),
    validation = reference_value_rule(),
)]
pub struct ClusterSharedVolumeSpec {
    #[serde(flatten)]
    pub volume: VolumeSpec,
    #[serde(flatten)]
    pub access: ClusterAccessSpec,
}

impl Deref for SharedVolumeSpec {
    type Target = VolumeSpec;
    fn deref(&self) -> &VolumeSpec {
        &self.volume
    }
}

impl DerefMut for SharedVolumeSpec {
    fn deref_mut(&mut self) -> &mut VolumeSpec {
        &mut self.volume
    }
}

impl Deref for ClusterSharedVolumeSpec {
    type Target = VolumeSpec;
    fn deref(&self) -> &VolumeSpec {
        &self.volume
    }
}

impl DerefMut for ClusterSharedVolumeSpec {
    fn deref_mut(&mut self) -> &mut VolumeSpec {
        &mut self.volume
    }
}

/// The two volume kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VolumeKind {
    SharedVolume,
    ClusterSharedVolume,
}

impl VolumeKind {
    pub const ALL: [VolumeKind; 2] = [VolumeKind::SharedVolume, VolumeKind::ClusterSharedVolume];

    pub fn as_str(self) -> &'static str {
        match self {
            VolumeKind::SharedVolume => "SharedVolume",
            VolumeKind::ClusterSharedVolume => "ClusterSharedVolume",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            VolumeKind::SharedVolume => "sharedvolumes",
            VolumeKind::ClusterSharedVolume => "clustersharedvolumes",
        }
    }

    pub fn is_cluster_scoped(self) -> bool {
        self == VolumeKind::ClusterSharedVolume
    }

    /// The finalizer; the same string as the Go operator, so volumes it created are cleaned up too.
    pub fn finalizer(self) -> &'static str {
        match self {
            VolumeKind::SharedVolume => "sharedvolume.sv/finalizer",
            VolumeKind::ClusterSharedVolume => "clustersharedvolume.sv/finalizer",
        }
    }

    /// The pod annotation that asks for volumes of this kind.
    pub fn pod_annotation(self) -> &'static str {
        match self {
            VolumeKind::SharedVolume => POD_ANNOTATION_SV,
            VolumeKind::ClusterSharedVolume => POD_ANNOTATION_CSV,
        }
    }

    pub fn crd(self) -> CustomResourceDefinition {
        match self {
            VolumeKind::SharedVolume => SharedVolume::crd(),
            VolumeKind::ClusterSharedVolume => ClusterSharedVolume::crd(),
        }
    }

    pub fn parse(s: &str) -> Option<VolumeKind> {
        VolumeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator needs from either kind, so one reconciler serves both.
pub trait Volume:
    Resource<DynamicType = ()> + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    const KIND: VolumeKind;
    fn volume_spec(&self) -> &VolumeSpec;
    fn volume_spec_mut(&mut self) -> &mut VolumeSpec;
    fn volume_status(&self) -> Option<&VolumeStatus>;
    /// Namespaces allowed to mount the volume; `None` means every namespace that may see it.
    fn namespace_selector(&self) -> Option<&LabelSelector>;
    /// The API of this kind, in `namespace` for a namespaced kind.
    fn api(client: kube::Client, namespace: Option<&str>) -> kube::Api<Self>;

    /// `namespace/name` or `name`, for messages and logs.
    fn display_name(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{ns}/{}", self.name_any()),
            None => self.name_any(),
        }
    }
}

impl Volume for SharedVolume {
    const KIND: VolumeKind = VolumeKind::SharedVolume;
    fn volume_spec(&self) -> &VolumeSpec {
        &self.spec.volume
    }
    fn volume_spec_mut(&mut self) -> &mut VolumeSpec {
        &mut self.spec.volume
    }
    fn volume_status(&self) -> Option<&VolumeStatus> {
        self.status.as_ref()
    }
    fn namespace_selector(&self) -> Option<&LabelSelector> {
        None
    }
    fn api(client: kube::Client, namespace: Option<&str>) -> kube::Api<Self> {
        match namespace {
            Some(ns) => kube::Api::namespaced(client, ns),
            None => kube::Api::all(client),
        }
    }
}

impl Volume for ClusterSharedVolume {
    const KIND: VolumeKind = VolumeKind::ClusterSharedVolume;
    fn volume_spec(&self) -> &VolumeSpec {
        &self.spec.volume
    }
    fn volume_spec_mut(&mut self) -> &mut VolumeSpec {
        &mut self.spec.volume
    }
    fn volume_status(&self) -> Option<&VolumeStatus> {
        self.status.as_ref()
    }
    fn namespace_selector(&self) -> Option<&LabelSelector> {
        self.spec.access.namespace_selector.as_ref()
    }
    fn api(client: kube::Client, _namespace: Option<&str>) -> kube::Api<Self> {
        kube::Api::all(client)
    }
}

/// Names listed in a pod annotation: comma separated, trimmed, empty entries dropped, duplicates
/// removed (first occurrence kept).
pub fn parse_volume_list(value: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Volumes of `kind` a pod asks for through its annotations.
pub fn pod_requested_volumes(
    annotations: &std::collections::BTreeMap<String, String>,
    kind: VolumeKind,
) -> Vec<String> {
    annotations.get(kind.pod_annotation()).map(|v| parse_volume_list(v)).unwrap_or_default()
}

/// Label on consumer pods of one volume: `consumer.sv.sharedvolume.io/<reference>: "true"`. The
/// webhook sets it; the NFS server's NetworkPolicy admits the pods that carry it.
pub fn consumer_label_key(reference: &str) -> String {
    format!("consumer.sv.sharedvolume.io/{reference}")
}

/// Whether a label selector matches a label set. An empty selector matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // Validation rejects other operators; match nothing rather than everything.
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Both CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    VolumeKind::ALL.into_iter().map(VolumeKind::crd).collect()
}

/// Both CRDs as one multi-document YAML stream, as committed under `deploy/base/crds/`.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

/// Selects ring as the process's TLS crypto provider. A workspace build compiles rustls with more
/// than one provider (different dependencies ask for different ones), and rustls then refuses to
/// guess: every program and test that builds a `kube::Client` or a TLS server calls this first.
/// Safe to repeat.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
