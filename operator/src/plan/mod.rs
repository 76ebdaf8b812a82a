//! Planning: observed state in, desired objects and status out. No I/O, no clock, no randomness:
//! everything the decision depends on is in [`Observed`], so a plan can be snapshot-tested, checked
//! by property tests, and replayed by the simulation.

mod objects;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::{CredentialRole, SecretKeySelector, VolumeKind, VolumeSpec, VolumeStatus};
use crate::names::{ChildNames, reference_value_from_uid};
use crate::validation::{self, ServerMode, Validation};

pub use status::{PlannedEvent, set_condition};

/// Ports and images the planned objects use; set by operator flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Namespace of the operator; default resource namespace of ClusterSharedVolumes.
    pub operator_namespace: String,
    pub nfs_image: String,
    pub syncer_image: String,
    pub image_pull_policy: Option<String>,
    /// Mount options of PVs pointing at an external server, unless the volume's
    /// `sv.sharedvolume.io/mount-options` annotation says otherwise.
    pub external_mount_options: Vec<String>,
    /// Whether to generate a NetworkPolicy in front of each managed NFS server.
    pub network_policy: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operator_namespace: DEFAULT_OPERATOR_NAMESPACE.to_string(),
            nfs_image: format!("ghcr.io/sharedvolume/sv-nfs:{}", env!("CARGO_PKG_VERSION")),
            syncer_image: format!("ghcr.io/sharedvolume/sv-syncer:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: None,
            external_mount_options: Vec::new(),
            network_policy: true,
        }
    }
}

pub const DEFAULT_OPERATOR_NAMESPACE: &str = "shared-volume-controller-system";
/// Port of NFS and MOUNT on the managed server (one port, so no rpcbind is needed).
pub const NFS_PORT: i32 = 2049;
/// Port of `/healthz`, `/readyz` and `/metrics` on the NFS server and the syncer.
pub const PROBE_PORT: i32 = 8080;
pub use sv_api::{
    MANAGED_MOUNT_OPTIONS, MOUNT_OPTIONS_ANNOTATION, NFS_ANON_GID_ANNOTATION, NFS_ANON_UID_ANNOTATION,
    NFS_SQUASH_ANNOTATION,
};
/// Where the managed NFS server reads its writer token.
pub const NFS_WRITER_DIR: &str = "/etc/sv-nfs/writer";
/// Where the syncer finds credential files.
pub const CREDENTIALS_DIR: &str = "/var/run/sharedvolume/credentials";
/// Where the syncer mounts the volume.
pub const SYNCER_DATA_DIR: &str = "/data";
/// Where the NFS server keeps the exported data.
pub const NFS_EXPORT_DIR: &str = "/export";
/// Requeue interval while waiting for something the operator does not watch.
pub const WAIT_REQUEUE: Duration = Duration::from_secs(10);
/// Requeue interval of a volume that just Failed (a missing Secret or StorageClass may appear).
pub const FAILED_REQUEUE: Duration = Duration::from_secs(30);
/// Longest requeue interval of a volume that has been Failed for a while.
pub const FAILED_REQUEUE_MAX: Duration = Duration::from_secs(300);
/// Periodic re-check of a healthy volume, to repair drift.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// Whether an object the plan depends on was found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Not looked up (not needed for this spec).
    #[default]
    NotChecked,
    Missing,
    Found(T),
}

impl<T> Lookup<T> {
    pub fn found(&self) -> Option<&T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// `(namespace, name)` of a namespaced object.
pub type NamespacedName = (String, String);

/// The managed NFS server as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NfsObserved {
    /// Ready replicas of the StatefulSet, if it exists.
    pub statefulset_ready: Option<i32>,
    /// ClusterIP of the Service, if it exists and has one.
    pub service_ip: Option<String>,
    pub service_exists: bool,
    /// Phase of the data PVC, if it exists.
    pub data_claim_phase: Option<String>,
    /// The token of the server's writer mount path, from its Secret (when it exists and holds a
    /// well-formed token).
    pub writer_token: Option<String>,
    /// A fresh token to store when there is none yet. The controller draws it from the OS, so the
    /// plan stays a pure function of what it is given.
    pub new_writer_token: Option<String>,
    /// Why the server's pod cannot run, when one of its containers waits for a reason other than
    /// starting (`pod nfs-…-0: container nfs is waiting: ImagePullBackOff: …`).
    pub pod_problem: Option<String>,
}

/// A pod that asks for the volume through its annotations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumerPod {
    pub namespace: String,
    pub name: String,
    pub terminating: bool,
    /// The node it is scheduled to (its kubelet mounts the volume from there).
    pub node: Option<String>,
}

/// Everything [`plan`] decides from.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub kind: VolumeKind,
    pub name: String,
    /// Namespace of a SharedVolume; None for a ClusterSharedVolume.
    pub namespace: Option<String>,
    pub uid: String,
    pub generation: Option<i64>,
    pub annotations: BTreeMap<String, String>,
    pub spec: VolumeSpec,
    pub namespace_selector: Option<LabelSelector>,
    pub status: VolumeStatus,
    pub deleting: bool,
    pub now: Timestamp,
    /// Whether the resource namespace exists.
    pub resource_namespace: Lookup<()>,
    pub storage_class: Lookup<()>,
    /// Data of every Secret the spec references, by (namespace, name).
    pub secrets: BTreeMap<NamespacedName, Lookup<BTreeMap<String, ByteString>>>,
    pub nfs: NfsObserved,
    /// ClusterIP of the Service named by `nfsServer.name`.
    pub external_service: Lookup<Option<String>>,
    /// Ready replicas of the syncer ReplicaSet, if it exists.
    pub syncer_ready: Option<i32>,
    /// Why the syncer's pod cannot run, when one of its containers waits (see `NfsObserved`).
    pub syncer_problem: Option<String>,
    pub consumer_pods: Vec<ConsumerPod>,
    /// Labels of the namespaces of consumer pods (`None` when the namespace is being deleted).
    pub namespaces: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Every object that carries this volume's reference label.
    pub owned: BTreeSet<ObjectKey>,
    /// InternalIP addresses of the cluster's nodes, by node name (a kubelet mounts NFS from its
    /// node's address, not from the pod's).
    pub node_addresses: BTreeMap<String, BTreeSet<String>>,
    /// Nodes the volume's syncer pods are scheduled to.
    pub syncer_nodes: BTreeSet<String>,
    /// Consumer namespaces whose claim was created less than [`CONSUMER_CLAIM_GRACE`] ago, with
    /// the time left: the webhook creates a namespace's claim before its pod is stored, so a young
    /// claim without a consumer pod in sight is not stale yet.
    pub young_consumer_claims: BTreeMap<String, Duration>,
}

/// How long a consumer claim is kept without a consumer pod after it was created.
pub const CONSUMER_CLAIM_GRACE: Duration = Duration::from_secs(30);

impl Observed {
    /// An observation of a volume with nothing else in the cluster yet.
    pub fn new(kind: VolumeKind, name: &str, namespace: Option<&str>, uid: &str, spec: VolumeSpec) -> Self {
        Self {
            kind,
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            uid: uid.to_string(),
            generation: Some(1),
            annotations: BTreeMap::new(),
            spec,
            namespace_selector: None,
            status: VolumeStatus::default(),
            deleting: false,
            now: Timestamp::UNIX_EPOCH,
            resource_namespace: Lookup::Found(()),
            storage_class: Lookup::NotChecked,
            secrets: BTreeMap::new(),
            nfs: NfsObserved::default(),
            external_service: Lookup::NotChecked,
            syncer_ready: None,
            syncer_problem: None,
            consumer_pods: Vec::new(),
            namespaces: BTreeMap::new(),
            owned: BTreeSet::new(),
            node_addresses: BTreeMap::new(),
            syncer_nodes: BTreeSet::new(),
            young_consumer_claims: BTreeMap::new(),
        }
    }

    /// The reference value in the spec, or the one derived from the UID.
    pub fn reference(&self) -> String {
        match self.spec.reference_value.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None => reference_value_from_uid(&self.uid),
        }
    }

    /// Namespace that holds the NFS server and syncer.
    pub fn resource_namespace(&self, settings: &Settings) -> String {
        if let Some(ns) = self.spec.resource_namespace.as_deref().filter(|s| !s.is_empty()) {
            return ns.to_string();
        }
        match &self.namespace {
            Some(ns) => ns.clone(),
            None => settings.operator_namespace.clone(),
        }
    }

    /// Where a Secret selector points: the volume's namespace for a SharedVolume, the selector's
    /// own `namespace` for a ClusterSharedVolume.
    pub fn secret_location(&self, selector: &SecretKeySelector) -> NamespacedName {
        let ns = match (self.kind, &self.namespace, selector.namespace.as_deref()) {
            (VolumeKind::SharedVolume, Some(ns), _) => ns.clone(),
            (_, _, Some(ns)) => ns.to_string(),
            (_, Some(ns), None) => ns.clone(),
            (_, None, None) => String::new(),
        };
        (ns, selector.name.clone())
    }

    /// Every Secret the plan needs to read.
    pub fn referenced_secrets(&self) -> BTreeSet<NamespacedName> {
        self.spec.secret_refs().into_iter().map(|(_, sel)| self.secret_location(sel)).collect()
    }

    /// Whether the namespace may mount this volume.
    pub fn namespace_allowed(&self, namespace: &str) -> bool {
        match self.kind {
            VolumeKind::SharedVolume => self.namespace.as_deref() == Some(namespace),
            VolumeKind::ClusterSharedVolume => {
                let Some(Some(labels)) = self.namespaces.get(namespace) else {
                    // Unknown or terminating namespace: do not create storage in it.
                    return false;
                };
                match &self.namespace_selector {
                    None => true,
                    Some(sel) => selector_matches(sel, labels),
                }
            }
        }
    }
}

pub use sv_api::selector_matches;

/// An object the operator wants to exist, in the order it should be applied.
// A plan holds a dozen of these, built once per reconcile; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Desired {
    Secret(Secret),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    PersistentVolumeClaim(PersistentVolumeClaim),
    PersistentVolume(PersistentVolume),
    Service(Service),
    StatefulSet(StatefulSet),
    NetworkPolicy(NetworkPolicy),
    ReplicaSet(ReplicaSet),
    Lease(Lease),
}

/// Identity of an object: kind, namespace (empty for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

impl Desired {
    pub fn key(&self) -> ObjectKey {
        use kube::ResourceExt;
        let (kind, meta_ns, name) = match self {
            Desired::Secret(o) => ("Secret", o.namespace(), o.name_any()),
            Desired::ServiceAccount(o) => ("ServiceAccount", o.namespace(), o.name_any()),
            Desired::Role(o) => ("Role", o.namespace(), o.name_any()),
            Desired::RoleBinding(o) => ("RoleBinding", o.namespace(), o.name_any()),
            Desired::ClusterRole(o) => ("ClusterRole", None, o.name_any()),
            Desired::ClusterRoleBinding(o) => ("ClusterRoleBinding", None, o.name_any()),
            Desired::PersistentVolumeClaim(o) => ("PersistentVolumeClaim", o.namespace(), o.name_any()),
            Desired::PersistentVolume(o) => ("PersistentVolume", None, o.name_any()),
            Desired::Service(o) => ("Service", o.namespace(), o.name_any()),
            Desired::StatefulSet(o) => ("StatefulSet", o.namespace(), o.name_any()),
            Desired::NetworkPolicy(o) => ("NetworkPolicy", o.namespace(), o.name_any()),
            Desired::ReplicaSet(o) => ("ReplicaSet", o.namespace(), o.name_any()),
            Desired::Lease(o) => ("Lease", o.namespace(), o.name_any()),
        };
        ObjectKey { kind, namespace: meta_ns, name }
    }
}

/// The result of planning one volume.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub reference: String,
    /// `spec.referenceValue` to write first, when the spec has none.
    pub set_reference_value: Option<String>,
    /// Objects to server-side apply, in order.
    pub objects: Vec<Desired>,
    /// Objects to delete: stale ones (e.g. storage of a namespace without consumer pods left, the
    /// syncer of a volume whose source was removed), or everything once a deleted volume has no
    /// consumer pods.
    pub delete: Vec<ObjectKey>,
    /// The status the volume should have. `sync` is the syncer's and is carried over unchanged.
    pub status: VolumeStatus,
    /// Events for what changed between the observed and the planned status.
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Duration,
    /// While deleting: no consumer pod and nothing the volume created is left, so the finalizer
    /// may go.
    pub finalize: bool,
}

/// Plans one volume. Pure: the same observation gives the same plan.
pub fn plan(observed: &Observed, settings: &Settings) -> Plan {
    let reference = observed.reference();
    let set_reference_value = match observed.spec.reference_value.as_deref() {
        Some(r) if !r.is_empty() => None,
        _ => Some(reference.clone()),
    };
    let names = ChildNames::new(&reference);
    let validation = validation::validate_volume(
        validation::VolumeInput {
            kind: observed.kind,
            namespace: observed.namespace.as_deref(),
            spec: &observed.spec,
            namespace_selector: observed.namespace_selector.as_ref(),
            annotations: &observed.annotations,
        },
        None,
    );
    let ctx = PlanContext {
        observed,
        settings,
        names: &names,
        resource_namespace: observed.resource_namespace(settings),
        mode: validation::server_mode(&observed.spec),
    };

    let problems = ctx.blocking_problems(&validation);
    let consumer_namespaces = ctx.consumer_namespaces();
    let server_address = ctx.server_address();

    // Objects applied this round, and objects that belong to the steady state but wait for
    // something (a StorageClass, a Secret, the server's address or readiness). Anything the volume
    // owns outside both sets is stale and deleted.
    let mut objects = Vec::new();
    let mut waiting: BTreeSet<ObjectKey> = BTreeSet::new();
    let serving = !observed.deleting && validation.is_valid() && !problems.resource_namespace_missing;
    if serving {
        let server = ctx.server_objects();
        if problems.storage_class_missing {
            waiting.extend(server.iter().map(Desired::key));
        } else {
            objects.extend(server);
        }
        // A young claim whose pod is not in sight yet is kept, not deleted as stale.
        for ns in observed.young_consumer_claims.keys().filter(|ns| !consumer_namespaces.contains(*ns)) {
            waiting.extend(ctx.storage_keys(Some(ns)));
        }
        let mut storage_namespaces = vec![None];
        storage_namespaces.extend(consumer_namespaces.iter().map(Some));
        for ns in storage_namespaces {
            let ns = ns.map(String::as_str);
            match server_address.as_deref() {
                // The syncer's PV names the writer path, and a PV's path can never change: it
                // waits until the token is stored.
                Some(_) if ns.is_none() && ctx.syncer_export_path().is_none() => {
                    waiting.extend(ctx.storage_keys(ns));
                }
                Some(address) => objects.extend(ctx.storage(ns, address)),
                None => waiting.extend(ctx.storage_keys(ns)),
            }
        }
        if observed.spec.has_source() {
            let syncer = ctx.syncer_objects();
            if !problems.missing_credentials.is_empty() {
                waiting.extend(syncer.iter().map(Desired::key));
            } else if server_address.is_none() || !ctx.nfs_ready() {
                // Without a reachable server the syncer pod would hang on its mount.
                for object in syncer {
                    match object {
                        Desired::ReplicaSet(_) => {
                            waiting.insert(object.key());
                        }
                        other => objects.push(other),
                    }
                }
            } else {
                objects.extend(syncer);
            }
        }
    }
    // Known bug for the simulation's tests: the cleanup forgets the claims made in consumer
    // namespaces.
    let forgotten = |key: &ObjectKey| {
        sv_common::bugs::active(sv_common::bugs::Bug::ForgetConsumerClaim)
            && key.kind == "PersistentVolumeClaim"
            && key.namespace.as_deref() != Some(ctx.resource_namespace.as_str())
    };
    let delete: Vec<ObjectKey> = if observed.deleting {
        // Consumer pods block the cleanup: their mounts would hang on a vanished server.
        match observed.consumer_pods.is_empty() {
            true => observed.owned.iter().filter(|k| !forgotten(k)).cloned().collect(),
            false => Vec::new(),
        }
    } else if serving {
        let applied: BTreeSet<ObjectKey> = objects.iter().map(Desired::key).collect();
        observed.owned.iter().filter(|k| !applied.contains(*k) && !waiting.contains(*k)).cloned().collect()
    } else {
        // An invalid spec or a missing namespace loses nothing: keep what exists.
        Vec::new()
    };
    let delete = workloads_first(delete);

    let outcome = status::compute(&ctx, &validation, &problems, server_address.as_deref(), &consumer_namespaces);
    let events = status::events(observed, &outcome.status, &validation, &ctx.disallowed_consumers());
    Plan {
        reference,
        set_reference_value,
        objects,
        delete,
        status: outcome.status,
        events,
        // Back when the youngest claim without a consumer comes of age, to remove it if its
        // pod never came.
        requeue_after: observed
            .young_consumer_claims
            .iter()
            .filter(|(ns, _)| !consumer_namespaces.contains(*ns))
            .map(|(_, left)| *left)
            .fold(outcome.requeue_after, Duration::min),
        finalize: observed.deleting && observed.consumer_pods.is_empty() && observed.owned.iter().all(forgotten),
    }
}

/// The kinds whose objects run pods.
pub const WORKLOAD_KINDS: [&str; 2] = ["StatefulSet", "ReplicaSet"];

/// Of what is to go, the workloads first (deleted in the foreground, so they stay until their
/// pods are gone): their pods stop, and release their Lease and report, while the ServiceAccount,
/// roles, Lease and Secrets they use still exist. The rest goes once no workload is left to
/// delete.
fn workloads_first(keys: Vec<ObjectKey>) -> Vec<ObjectKey> {
    let workloads: Vec<ObjectKey> = keys.iter().filter(|k| WORKLOAD_KINDS.contains(&k.kind)).cloned().collect();
    if workloads.is_empty() { keys } else { workloads }
}

/// What keeps a valid spec from being served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Problems {
    pub resource_namespace_missing: bool,
    pub storage_class_missing: bool,
    /// Human-readable, one per missing Secret or key.
    pub missing_credentials: Vec<String>,
    pub external_service_missing: bool,
}

impl Problems {
    fn any(&self) -> bool {
        self.resource_namespace_missing
            || self.storage_class_missing
            || !self.missing_credentials.is_empty()
            || self.external_service_missing
    }
}

pub(crate) struct PlanContext<'a> {
    pub observed: &'a Observed,
    pub settings: &'a Settings,
    pub names: &'a ChildNames,
    pub resource_namespace: String,
    pub mode: ServerMode,
}

impl PlanContext<'_> {
    fn blocking_problems(&self, validation: &Validation) -> Problems {
        let mut p = Problems::default();
        if !validation.is_valid() {
            return p;
        }
        let o = self.observed;
        p.resource_namespace_missing = o.resource_namespace == Lookup::Missing;
        if matches!(self.mode, ServerMode::Managed { .. }) {
            p.storage_class_missing = o.storage_class == Lookup::Missing;
        }
        if matches!(self.mode, ServerMode::ExternalService { .. }) {
            p.external_service_missing = o.external_service == Lookup::Missing;
        }
        for (role, sel) in o.spec.secret_refs() {
            let (ns, name) = o.secret_location(sel);
            match o.secrets.get(&(ns.clone(), name.clone())) {
                Some(Lookup::Found(data)) => {
                    if !data.contains_key(&sel.key) {
                        p.missing_credentials.push(format!(
                            "Secret {ns}/{name} has no key {:?} (needed as the {} credential); add the key or fix the selector",
                            sel.key,
                            role_label(role)
                        ));
                    }
                }
                Some(Lookup::Missing) => p.missing_credentials.push(format!(
                    "Secret {ns}/{name} not found (needed as the {} credential); create it or fix the selector",
                    role_label(role)
                )),
                // Not looked up yet: treat as unknown, not as missing.
                Some(Lookup::NotChecked) | None => {}
            }
        }
        p.missing_credentials.sort();
        p.missing_credentials.dedup();
        p
    }

    /// Namespaces that get consumer storage: those of consumer pods that may mount the volume.
    fn consumer_namespaces(&self) -> BTreeSet<String> {
        self.observed
            .consumer_pods
            .iter()
            .map(|p| p.namespace.clone())
            .filter(|ns| self.observed.namespace_allowed(ns))
            .collect()
    }

    /// Consumer pods in namespaces that may not mount the volume.
    pub(crate) fn disallowed_consumers(&self) -> Vec<&ConsumerPod> {
        self.observed.consumer_pods.iter().filter(|p| !self.observed.namespace_allowed(&p.namespace)).collect()
    }

    /// The address PVs mount, once it is known. For the managed server it is the ClusterIP, which
    /// never changes for the volume's life (status keeps it, and a recreated Service asks for it).
    fn server_address(&self) -> Option<String> {
        match &self.mode {
            // Known bug for the simulation's tests: a restarted operator names the Service by its
            // DNS name instead of the address the volume has kept.
            ServerMode::Managed { .. }
                if sv_common::bugs::active(sv_common::bugs::Bug::NfsAddressChangesAfterRestart)
                    && sv_common::bugs::operator_starts() > 1 =>
            {
                Some(format!("{}.{}.svc", self.names.nfs_server(), self.resource_namespace))
            }
            ServerMode::Managed { .. } => self.observed.nfs.service_ip.clone(),
            ServerMode::ExternalUrl { host, .. } => Some(host.clone()),
            ServerMode::ExternalService { .. } => self.observed.external_service.found().cloned().flatten(),
        }
    }

    fn nfs_ready(&self) -> bool {
        match &self.mode {
            ServerMode::Managed { .. } => {
                self.observed.nfs.statefulset_ready.unwrap_or(0) >= 1 && self.observed.nfs.service_ip.is_some()
            }
            ServerMode::ExternalUrl { .. } => true,
            ServerMode::ExternalService { .. } => self.server_address().is_some(),
        }
    }

    fn export_path(&self) -> String {
        sv_api::consumer::export_path(&self.mode)
    }

    /// The path the syncer mounts: a managed server's writer path, once its token is stored.
    fn syncer_export_path(&self) -> Option<String> {
        match &self.mode {
            ServerMode::Managed { .. } => self.observed.nfs.writer_token.as_deref().map(crate::names::nfs_writer_path),
            _ => Some(self.export_path()),
        }
    }

    /// The writer token the server is given: the stored one, or the one about to be stored.
    fn writer_token(&self) -> Option<&str> {
        self.observed.nfs.writer_token.as_deref().or(self.observed.nfs.new_writer_token.as_deref())
    }

    fn mount_options(&self) -> Vec<String> {
        sv_api::consumer::mount_options(&self.observed.annotations, &self.mode, &self.settings.external_mount_options)
    }

    /// The credential files the syncer gets, by file name.
    fn credential_files(&self) -> BTreeMap<String, ByteString> {
        let o = self.observed;
        let mut files = BTreeMap::new();
        for (role, value) in o.spec.inline_credentials() {
            files.insert(role.file_name().to_string(), ByteString(decode_inline(role, value)));
        }
        for (role, sel) in o.spec.secret_refs() {
            if let Some(Lookup::Found(data)) = o.secrets.get(&o.secret_location(sel))
                && let Some(value) = data.get(&sel.key)
            {
                files.insert(role.file_name().to_string(), value.clone());
            }
        }
        files
    }
}

fn role_label(role: CredentialRole) -> &'static str {
    match role {
        CredentialRole::Password => "password",
        CredentialRole::PrivateKey => "private key",
        CredentialRole::AccessKey => "access key",
        CredentialRole::SecretKey => "secret key",
    }
}

/// Inline private keys in the Go examples are base64 of the PEM text; accept both forms.
fn decode_inline(role: CredentialRole, value: &str) -> Vec<u8> {
    use base64::Engine;
    if role == CredentialRole::PrivateKey && !value.contains("-----BEGIN") {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(compact)
            && decoded.starts_with(b"-----BEGIN")
        {
            return decoded;
        }
    }
    value.as_bytes().to_vec()
}

/// `Time` for a timestamp.
pub(crate) fn time(ts: Timestamp) -> Time {
    Time(ts)
}

#[cfg(test)]
mod tests;
