//! The PersistentVolume and PersistentVolumeClaim pairs a volume is mounted through, and the
//! metadata every child of a volume carries. Built here, once, because two programs create
//! consumer storage: the webhook when the first pod of a namespace asks for the volume, the
//! operator on every reconcile. A PV's source cannot change after creation, so both must build
//! exactly the same object from the same volume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NFSVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::names::{ChildNames, reference_value_from_uid};
use crate::validation::{ServerMode, server_mode};
use crate::{
    API_VERSION, AccessMode, MANAGED_MOUNT_OPTIONS, MOUNT_OPTIONS_ANNOTATION, Volume, VolumeKind, VolumeSpec,
    annotations, components, labels,
};

/// The volume a child belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: VolumeKind,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
    /// The volume's `referenceValue`: every child name and the selecting label derive from it.
    pub reference: String,
}

impl Owner {
    /// The owner of a stored volume. Its `referenceValue`, or, before the operator has stored
    /// one, the value the operator derives from the uid.
    pub fn of<V: Volume>(volume: &V) -> Self {
        let uid = volume.uid().unwrap_or_default();
        Owner {
            kind: V::KIND,
            name: volume.name_any(),
            namespace: volume.namespace(),
            reference: reference_of(volume.volume_spec(), &uid),
            uid,
        }
    }

    /// Labels every child carries.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            (labels::PART_OF.to_string(), labels::PART_OF_VALUE.to_string()),
            (labels::COMPONENT.to_string(), component.to_string()),
            (labels::REFERENCE.to_string(), self.reference.clone()),
            (labels::VOLUME_KIND.to_string(), self.kind.as_str().to_string()),
        ])
    }

    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: API_VERSION.to_string(),
            kind: self.kind.as_str().to_string(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Metadata of a child. An ownerReference is set wherever Kubernetes honours it: the owner is
    /// a ClusterSharedVolume, or a SharedVolume owning an object in its own namespace. Elsewhere
    /// the owner is recorded in an annotation and the operator's finalizer does the cleanup.
    /// `Kind/namespace/name` (or `Kind/name` for a ClusterSharedVolume): the value of
    /// [`annotations::OWNER`], which names the volume where an ownerReference cannot.
    pub fn owner_annotation(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// The volume an [`annotations::OWNER`] value names, if it is of `kind`: (namespace, name).
    pub fn parse_owner_annotation(value: &str, kind: VolumeKind) -> Option<(Option<String>, String)> {
        let rest = value.strip_prefix(kind.as_str())?.strip_prefix('/')?;
        match (kind, rest.split_once('/')) {
            (VolumeKind::SharedVolume, Some((ns, name))) => Some((Some(ns.to_string()), name.to_string())),
            (VolumeKind::ClusterSharedVolume, None) => Some((None, rest.to_string())),
            _ => None,
        }
    }

    pub fn meta(&self, name: String, namespace: Option<&str>, component: &str) -> ObjectMeta {
        let owner_valid = match self.kind {
            VolumeKind::ClusterSharedVolume => true,
            VolumeKind::SharedVolume => namespace.is_some() && namespace == self.namespace.as_deref(),
        };
        let owner = self.owner_annotation();
        ObjectMeta {
            name: Some(name),
            namespace: namespace.map(str::to_string),
            labels: Some(self.labels(component)),
            annotations: Some(BTreeMap::from([(annotations::OWNER.to_string(), owner)])),
            owner_references: owner_valid.then(|| vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }
}

/// The `referenceValue` in the spec, or the one derived from the uid while none is stored.
pub fn reference_of(spec: &VolumeSpec, uid: &str) -> String {
    match spec.reference_value.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => reference_value_from_uid(uid),
    }
}

/// Where and how a pair of PV and PVC reaches the NFS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageTarget {
    /// The server's address: a managed server's ClusterIP, or the external host.
    pub server: String,
    /// The path the PV mounts.
    pub path: String,
    pub mount_options: Vec<String>,
    /// `storage.capacity` as written in the spec.
    pub capacity: String,
    pub read_only: bool,
}

/// The path consumers mount: `/` of a managed server, the configured path of an external one.
pub fn export_path(mode: &ServerMode) -> String {
    match mode {
        ServerMode::Managed { .. } => "/".to_string(),
        ServerMode::ExternalUrl { path, .. } | ServerMode::ExternalService { path, .. } => path.clone(),
    }
}

/// Mount options of every PV of a volume: the volume's annotation if set; otherwise those the
/// managed server needs, or `external_defaults` (an operator setting) for an external server.
pub fn mount_options(
    volume_annotations: &BTreeMap<String, String>,
    mode: &ServerMode,
    external_defaults: &[String],
) -> Vec<String> {
    if let Some(custom) = volume_annotations.get(MOUNT_OPTIONS_ANNOTATION) {
        return custom.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    }
    match mode {
        ServerMode::Managed { .. } => MANAGED_MOUNT_OPTIONS.iter().map(|s| s.to_string()).collect(),
        _ => external_defaults.to_vec(),
    }
}

/// A PV pointing at the server and a PVC pre-bound to it, both named `name`, the claim in
/// `namespace`. `consumer_namespace` is set for a consumer pair (it labels both objects).
pub fn storage_pair(
    owner: &Owner,
    name: &str,
    namespace: &str,
    component: &str,
    consumer_namespace: Option<&str>,
    target: &StorageTarget,
) -> (PersistentVolume, PersistentVolumeClaim) {
    let access_modes = vec![if target.read_only { "ReadOnlyMany" } else { "ReadWriteMany" }.to_string()];
    let capacity = Quantity(target.capacity.trim().to_string());
    let mut pv_meta = owner.meta(name.to_string(), None, component);
    let mut pvc_meta = owner.meta(name.to_string(), Some(namespace), component);
    if let Some(ns) = consumer_namespace {
        for meta in [&mut pv_meta, &mut pvc_meta] {
            meta.labels.get_or_insert_default().insert(labels::CONSUMER_NAMESPACE.to_string(), ns.to_string());
        }
    }
    let pv = PersistentVolume {
        metadata: pv_meta,
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), capacity.clone())])),
            access_modes: Some(access_modes.clone()),
            // The PV is only a pointer to the server; deleting it must never touch the data.
            persistent_volume_reclaim_policy: Some("Retain".to_string()),
            storage_class_name: Some(String::new()),
            mount_options: Some(target.mount_options.clone()).filter(|o| !o.is_empty()),
            nfs: Some(NFSVolumeSource {
                server: target.server.clone(),
                path: target.path.clone(),
                read_only: Some(target.read_only),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("PersistentVolumeClaim".to_string()),
                namespace: Some(namespace.to_string()),
                name: Some(name.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if consumer_namespace.is_some() && sv_common::bugs::active(sv_common::bugs::Bug::ForgetConsumerClaim) {
        // Known bug for the simulation's tests (with its other half in the operator's cleanup):
        // a consumer claim the garbage collector cannot find by its owner either.
        pvc_meta.owner_references = None;
    }
    let pvc = PersistentVolumeClaim {
        metadata: pvc_meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(access_modes),
            storage_class_name: Some(String::new()),
            volume_name: Some(name.to_string()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), capacity)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    (pv, pvc)
}

/// Why a volume's consumer storage cannot be built yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotYet {
    #[error("the volume has no NFS server address yet (status.nfsServerAddress is empty)")]
    NoServerAddress,
    #[error("the volume has no storage.capacity")]
    NoCapacity,
}

/// The consumer pair `<referenceValue>-<namespace>` of a stored volume, as the operator builds it:
/// the server address comes from `status.nfsServerAddress`, which the operator writes as soon as
/// it knows it.
pub fn consumer_storage<V: Volume>(
    volume: &V,
    namespace: &str,
    external_mount_options: &[String],
) -> Result<(PersistentVolume, PersistentVolumeClaim), NotYet> {
    let spec = volume.volume_spec();
    let server = volume
        .volume_status()
        .and_then(|s| s.nfs_server_address.clone())
        .filter(|a| !a.is_empty())
        .ok_or(NotYet::NoServerAddress)?;
    let storage = spec.storage.as_ref().filter(|s| !s.capacity.trim().is_empty()).ok_or(NotYet::NoCapacity)?;
    let mode = server_mode(spec);
    let owner = Owner::of(volume);
    let target = StorageTarget {
        server,
        path: export_path(&mode),
        mount_options: mount_options(volume.annotations(), &mode, external_mount_options),
        capacity: storage.capacity.clone(),
        read_only: consumer_read_only(spec),
    };
    let name = ChildNames::new(owner.reference.clone()).consumer_storage(namespace);
    Ok(storage_pair(&owner, &name, namespace, components::CONSUMER_STORAGE, Some(namespace), &target))
}

/// Whether consumers get the volume read-only (`storage.accessMode`, ReadOnly by default).
pub fn consumer_read_only(spec: &VolumeSpec) -> bool {
    AccessMode::parse(spec.storage.as_ref().and_then(|s| s.access_mode.as_deref()))
        .unwrap_or(AccessMode::ReadOnly)
        .is_read_only()
}
