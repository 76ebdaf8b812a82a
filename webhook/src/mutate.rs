//! `/mutate`: a pod that names volumes in its `sharedvolume.sv` / `sharedvolume.csv` annotations
//! gets one volume per name (its consumer claim), a mount of it at the volume's `mountPath` in
//! every container and init container, and the consumer labels the operator and the NFS
//! servers' NetworkPolicies select.
//!
//! Behaviour the docs promise (`docs/webhook.md`):
//! - Only CREATE is mutated. UPDATE, DELETE and CONNECT are allowed untouched, with no side
//!   effect (`object` is null on DELETE).
//! - A volume that exists but is not Ready yet is admitted: the pod waits (Pending, its claim
//!   missing or unbound) as it would for any claim, and the operator creates the consumer storage
//!   once the server has an address. A volume being deleted is refused, and so is a pod whose
//!   consumer claim is being removed (the namespace's last consumer just left): the kubelet would
//!   never start it; created again a few seconds later (a controller retries by itself), it gets
//!   a new claim.
//! - The consumer PV and PVC are created here when the server's address is known, the claim
//!   does not exist yet and the request is not a dry run.
//! - Annotations are read from `metadata.annotations` only, never from
//!   `kubectl.kubernetes.io/last-applied-configuration`.
//! - Reinvocation: what is already in the pod (the volume, a mount, a label) is not added again,
//!   so a pod this webhook already mutated gets an empty patch.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, PodSpec};
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::{Value, json};
use sv_api::consumer::{Owner, consumer_read_only, consumer_storage};
use sv_api::names::{ChildNames, is_dns1123_subdomain};
use sv_api::{
    CONSUMER_POD_LABEL, ClusterSharedVolume, POD_ANNOTATION_CSV, POD_ANNOTATION_SV, Volume, VolumeKind,
    consumer_label_key, parse_volume_list, selector_matches,
};

use crate::cluster::{ClaimState, ClusterView};
use crate::review::is_dry_run;

/// More names than this in one pod is a mistake, not a workload.
pub const MAX_VOLUMES_PER_POD: usize = 32;

/// Settings the operator shares with the webhook (they shape the consumer PVs both create).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutateSettings {
    /// Mount options of PVs of external servers without a mount-options annotation (the
    /// operator's `--external-mount-options`; both must be given the same value).
    pub external_mount_options: Vec<String>,
}

/// What the handler decided.
#[derive(Debug, Default)]
pub struct Decision {
    /// None when allowed; the message otherwise.
    pub denied: Option<Denial>,
    /// JSONPatch operations (empty: allowed unchanged).
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
    /// Objects to create before answering (never on a dry run).
    pub create: Vec<Storage>,
}

/// Why a pod is refused, for the message and the `denials` metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: &'static str,
    pub message: String,
}

/// A consumer PV and PVC to create.
#[derive(Debug, Clone)]
pub struct Storage {
    pub volume: PersistentVolume,
    pub claim: PersistentVolumeClaim,
}

impl From<Denial> for Decision {
    fn from(denial: Denial) -> Self {
        Decision { denied: Some(denial), ..Decision::default() }
    }
}

impl Decision {
    pub(crate) fn deny(reason: &'static str, message: String) -> Self {
        Decision::from(Denial { reason, message })
    }
}

/// One volume the pod asks for, resolved.
struct Requested {
    kind: VolumeKind,
    name: String,
    owner: Owner,
    mount_path: String,
    read_only: bool,
    claim: String,
    storage: Result<(PersistentVolume, PersistentVolumeClaim), sv_api::consumer::NotYet>,
}

/// Decides a pod review whose object was read as any object (the slow path: a body that did
/// not read as a pod, or a caller that only has the dynamic form).
pub fn mutate(
    request: &AdmissionRequest<DynamicObject>,
    cluster: &impl ClusterView,
    settings: &MutateSettings,
) -> Decision {
    if let Some(denial) = not_a_pod_create(request) {
        return denial;
    }
    let pod = request
        .object
        .as_ref()
        .map(|object| serde_json::to_value(object).and_then(serde_json::from_value::<Pod>).map_err(|e| e.to_string()));
    match pod {
        Some(Ok(pod)) => decide(&pod, request.namespace.as_deref(), is_dry_run(request), cluster, settings),
        Some(Err(e)) => Decision::deny("Malformed", format!("the pod cannot be read: {e}")),
        None => Decision::deny("Malformed", "a CREATE review without an object".to_string()),
    }
}

/// Decides a pod review (what the server runs for every body that reads as a pod review).
pub fn mutate_pod(request: &AdmissionRequest<Pod>, cluster: &impl ClusterView, settings: &MutateSettings) -> Decision {
    if let Some(denial) = not_a_pod_create(request) {
        return denial;
    }
    match &request.object {
        Some(pod) => decide(pod, request.namespace.as_deref(), is_dry_run(request), cluster, settings),
        None => Decision::deny("Malformed", "a CREATE review without an object".to_string()),
    }
}

/// The answer for anything but the CREATE of a pod: a denial for other resources, an
/// unchanged allow for other operations. None for a pod CREATE.
fn not_a_pod_create<K: kube::Resource>(request: &AdmissionRequest<K>) -> Option<Decision> {
    if !request.kind.group.is_empty()
        || request.kind.kind != "Pod"
        || request.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
    {
        return Some(Decision::deny(
            "UnsupportedResource",
            format!(
                "sv-webhook /mutate handles pods only, not {}{}; fix the rules of the MutatingWebhookConfiguration",
                request.kind.kind,
                request.sub_resource.as_deref().map(|s| format!("/{s}")).unwrap_or_default()
            ),
        ));
    }
    (!matches!(request.operation, Operation::Create)).then(Decision::default)
}

fn decide(
    pod: &Pod,
    review_namespace: Option<&str>,
    dry_run: bool,
    cluster: &impl ClusterView,
    settings: &MutateSettings,
) -> Decision {
    let Some(namespace) = review_namespace.map(str::to_string).or_else(|| pod.namespace()).filter(|n| !n.is_empty())
    else {
        return Decision::deny("Malformed", "the review names no namespace for the pod".to_string());
    };
    let requested = match resolve(pod, &namespace, cluster, settings) {
        Ok(r) => r,
        Err(denial) => return Decision::from(denial),
    };
    if requested.is_empty() {
        return Decision::default();
    }
    let mut decision = match patch(pod, &requested) {
        Ok(patch) => Decision { patch, ..Decision::default() },
        Err(denial) => return Decision::from(denial),
    };
    for r in &requested {
        let claim_state = cluster.claim_state(&namespace, &r.claim);
        if claim_state == ClaimState::Deleting {
            return Decision::deny(
                "StorageBeingRemoved",
                format!(
                    "claim {:?} of {} {:?} in namespace {namespace:?} is being removed (its last consumer pod \
                     left); create the pod again in a few seconds: it then gets a new claim",
                    r.claim, r.kind, r.name
                ),
            );
        }
        match &r.storage {
            Ok((volume, claim)) => {
                if !dry_run && claim_state == ClaimState::Absent {
                    decision.create.push(Storage { volume: volume.clone(), claim: claim.clone() });
                }
            }
            Err(why) => decision.warnings.push(format!(
                "{} {:?} is not ready ({why}); the pod waits until claim {:?} exists",
                r.kind, r.name, r.claim
            )),
        }
    }
    decision
}

/// The volumes the annotations name, each checked: exists, may be mounted here, not deleting.
fn resolve(
    pod: &Pod,
    namespace: &str,
    cluster: &impl ClusterView,
    settings: &MutateSettings,
) -> Result<Vec<Requested>, Denial> {
    let annotations = pod.annotations();
    let mut out: Vec<Requested> = Vec::new();
    for kind in VolumeKind::ALL {
        let annotation = kind.pod_annotation();
        let Some(value) = annotations.get(annotation) else { continue };
        let names = parse_volume_list(value);
        if out.len() + names.len() > MAX_VOLUMES_PER_POD {
            return Err(Denial {
                reason: "TooManyVolumes",
                message: format!(
                    "annotations {POD_ANNOTATION_SV} and {POD_ANNOTATION_CSV} name more than \
                     {MAX_VOLUMES_PER_POD} volumes; a pod may mount at most {MAX_VOLUMES_PER_POD}"
                ),
            });
        }
        for name in names {
            if !is_dns1123_subdomain(&name) {
                let hint = if name.contains('/') && kind == VolumeKind::SharedVolume {
                    "; a SharedVolume can only be mounted in its own namespace: use a ClusterSharedVolume \
                     to share a volume across namespaces"
                } else {
                    "; names are lowercase letters, digits, '-' and '.', separated by commas"
                };
                return Err(Denial {
                    reason: "InvalidName",
                    message: format!("annotation {annotation}: {name:?} is not a valid {kind} name{hint}"),
                });
            }
            let resolved = match kind {
                VolumeKind::SharedVolume => {
                    let Some(volume) = cluster.shared_volume(namespace, &name) else {
                        return Err(Denial {
                            reason: "UnknownVolume",
                            message: format!(
                                "annotation {annotation}: SharedVolume {name:?} does not exist in namespace \
                                 {namespace:?}; create it, or remove the name from the annotation"
                            ),
                        });
                    };
                    requested(&volume, &name, namespace, settings)?
                }
                VolumeKind::ClusterSharedVolume => {
                    let Some(volume) = cluster.cluster_shared_volume(&name) else {
                        return Err(Denial {
                            reason: "UnknownVolume",
                            message: format!(
                                "annotation {annotation}: ClusterSharedVolume {name:?} does not exist; \
                                 create it, or remove the name from the annotation"
                            ),
                        });
                    };
                    allowed_here(&volume, namespace, cluster)?;
                    requested(&volume, &name, namespace, settings)?
                }
            };
            if let Some(other) = out.iter().find(|o| same_path(&o.mount_path, &resolved.mount_path)) {
                return Err(Denial {
                    reason: "MountPathConflict",
                    message: format!(
                        "{} {:?} and {} {:?} both mount at {:?}; a pod can mount only one of them: \
                         remove one name from the annotations",
                        other.kind, other.name, resolved.kind, resolved.name, resolved.mount_path
                    ),
                });
            }
            out.push(resolved);
        }
    }
    Ok(out)
}

fn requested<V: Volume>(
    volume: &V,
    name: &str,
    namespace: &str,
    settings: &MutateSettings,
) -> Result<Requested, Denial> {
    if volume.meta().deletion_timestamp.is_some() {
        return Err(Denial {
            reason: "VolumeDeleting",
            message: format!(
                "{} {name:?} is being deleted and cannot get new consumers; remove it from annotation {}",
                V::KIND,
                V::KIND.pod_annotation()
            ),
        });
    }
    let owner = Owner::of(volume);
    let spec = volume.volume_spec();
    Ok(Requested {
        kind: V::KIND,
        name: name.to_string(),
        claim: ChildNames::new(owner.reference.clone()).consumer_storage(namespace),
        owner,
        mount_path: spec.mount_path.clone(),
        read_only: consumer_read_only(spec),
        storage: consumer_storage(volume, namespace, &settings.external_mount_options),
    })
}

fn allowed_here(volume: &ClusterSharedVolume, namespace: &str, cluster: &impl ClusterView) -> Result<(), Denial> {
    let Some(selector) = volume.namespace_selector() else { return Ok(()) };
    let labels = cluster.namespace_labels(namespace).unwrap_or_default();
    if selector_matches(selector, &labels) || sv_common::bugs::active(sv_common::bugs::Bug::MountOutsideNamespaces) {
        return Ok(());
    }
    let wanted = serde_json::to_string(selector).unwrap_or_default();
    Err(Denial {
        reason: "NamespaceNotAllowed",
        message: format!(
            "ClusterSharedVolume {:?} does not allow namespace {namespace:?}: its spec.namespaceSelector {wanted} \
             does not match the namespace's labels; label the namespace to match, or ask the volume's owner to \
             widen the selector",
            volume.name_any()
        ),
    })
}

fn same_path(a: &str, b: &str) -> bool {
    let trim = |p: &str| p.trim_end_matches('/').to_string();
    trim(a) == trim(b)
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSONPatch: appends (never replaces) the volumes and mounts, adds the labels.
fn patch(pod: &Pod, requested: &[Requested]) -> Result<Vec<Value>, Denial> {
    let mut ops = Vec::new();
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let existing_volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut new_volumes = Vec::new();
    for r in requested {
        let volume_name = r.owner.reference.as_str();
        match existing_volumes.iter().find(|v| v.name == volume_name) {
            Some(v) if v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == r.claim) => {}
            Some(_) => {
                return Err(Denial {
                    reason: "VolumeNameConflict",
                    message: format!(
                        "the pod already has a volume named {volume_name:?} that is not the claim {:?} of {} {:?}; \
                         rename that volume",
                        r.claim, r.kind, r.name
                    ),
                });
            }
            None => new_volumes.push(json!({"name": volume_name, "persistentVolumeClaim": {"claimName": r.claim}})),
        }
    }
    if spec.volumes.is_some() {
        ops.extend(new_volumes.into_iter().map(|v| json!({"op": "add", "path": "/spec/volumes/-", "value": v})));
    } else if !new_volumes.is_empty() {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": new_volumes}));
    }

    let groups =
        [("initContainers", spec.init_containers.as_deref().unwrap_or_default()), ("containers", &spec.containers)];
    for (field, containers) in groups {
        for (index, container) in containers.iter().enumerate() {
            let mounts = container.volume_mounts.as_deref().unwrap_or_default();
            let mut add = Vec::new();
            for r in requested {
                let volume_name = r.owner.reference.as_str();
                if mounts.iter().any(|m| m.name == volume_name && same_path(&m.mount_path, &r.mount_path)) {
                    continue; // reinvocation: already mounted
                }
                if let Some(taken) = mounts.iter().find(|m| same_path(&m.mount_path, &r.mount_path)) {
                    return Err(Denial {
                        reason: "MountPathConflict",
                        message: format!(
                            "container {:?} already mounts volume {:?} at {:?}, where {} {:?} would be mounted; \
                             move that mount, or remove the name from the annotations",
                            container.name, taken.name, r.mount_path, r.kind, r.name
                        ),
                    });
                }
                let mut mount = json!({"name": volume_name, "mountPath": r.mount_path});
                if r.read_only {
                    mount["readOnly"] = json!(true);
                }
                add.push(mount);
            }
            let base = format!("/spec/{field}/{index}/volumeMounts");
            if container.volume_mounts.is_some() {
                ops.extend(add.into_iter().map(|m| json!({"op": "add", "path": format!("{base}/-"), "value": m})));
            } else if !add.is_empty() {
                ops.push(json!({"op": "add", "path": base, "value": add}));
            }
        }
    }

    let labels = pod.labels();
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    wanted.insert(CONSUMER_POD_LABEL.to_string(), "true".to_string());
    for r in requested {
        wanted.insert(consumer_label_key(&r.owner.reference), "true".to_string());
    }
    wanted.retain(|k, v| labels.get(k) != Some(v));
    if pod.metadata.labels.is_some() {
        for (key, value) in wanted {
            ops.push(json!({"op": "add", "path": format!("/metadata/labels/{}", pointer_key(&key)), "value": value}));
        }
    } else if !wanted.is_empty() {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": wanted}));
    }
    Ok(ops)
}

/// The kinds of volume a pod asks for, for logs: `sv=a,b csv=x`.
pub fn requested_names(pod_annotations: &BTreeMap<String, String>) -> String {
    VolumeKind::ALL
        .into_iter()
        .filter_map(|k| {
            pod_annotations
                .get(k.pod_annotation())
                .map(|v| format!("{}={}", k.pod_annotation(), parse_volume_list(v).join(",")))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
