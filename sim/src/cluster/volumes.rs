//! The PersistentVolume controller: static binding (`volumeName`, or a matching Available
//! volume), dynamic provisioning through a StorageClass, release and reclaim, and the
//! protection finalizers.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Pass, deleting, name, namespace, uid};
use crate::api::DeleteOptions;

const MANAGER: &str = "persistentvolume-binder-controller";

use crate::api::builtin::quantity_bytes as bytes;

fn request(pvc: &Value) -> &str {
    pvc["spec"]["resources"]["requests"]["storage"].as_str().unwrap_or("0")
}

fn class_of(object: &Value) -> &str {
    object["spec"]["storageClassName"].as_str().unwrap_or_default()
}

fn modes(object: &Value) -> Vec<Value> {
    object["spec"]["accessModes"].as_array().cloned().unwrap_or_default()
}

fn fits(pv: &Value, pvc: &Value) -> bool {
    pv["status"]["phase"] == "Available"
        && pv["spec"]["claimRef"].is_null()
        && !deleting(pv)
        && class_of(pv) == class_of(pvc)
        && bytes(pv["spec"]["capacity"]["storage"].as_str().unwrap_or("0")) >= bytes(request(pvc))
        && modes(pvc).iter().all(|m| modes(pv).contains(m))
}

fn claimed_by(pv: &Value, pvc: &Value) -> bool {
    let claim = &pv["spec"]["claimRef"];
    claim["name"] == pvc["metadata"]["name"]
        && claim["namespace"] == pvc["metadata"]["namespace"]
        && (claim["uid"].is_null() || claim["uid"] == pvc["metadata"]["uid"])
}

pub(super) fn bind(pass: &mut Pass) {
    for pvc in pass.list("", "persistentvolumeclaims", None) {
        if deleting(&pvc) {
            release_protection(pass, &pvc);
            continue;
        }
        if pvc["status"]["phase"] == "Bound" {
            continue;
        }
        let volume = match pvc["spec"]["volumeName"].as_str() {
            Some(wanted) => pass
                .get("", "persistentvolumes", "", wanted)
                .filter(|pv| pv["spec"]["claimRef"].is_null() || claimed_by(pv, &pvc)),
            None => {
                let mut candidates: Vec<Arc<Value>> =
                    pass.list("", "persistentvolumes", None).into_iter().filter(|pv| fits(pv, &pvc)).collect();
                candidates.sort_by_key(|pv| bytes(pv["spec"]["capacity"]["storage"].as_str().unwrap_or("0")));
                candidates.into_iter().next().or_else(|| provision(pass, &pvc))
            }
        };
        let Some(pv) = volume else { continue };
        let mut bound_pv = (*pv).clone();
        bound_pv["spec"]["claimRef"] = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": name(&pvc), "namespace": namespace(&pvc),
            "uid": uid(&pvc), "resourceVersion": pvc["metadata"]["resourceVersion"],
        });
        bound_pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        let Some(bound_pv) = pass.update("", "persistentvolumes", bound_pv, MANAGER) else { continue };
        set_volume_phase(pass, &bound_pv, "Bound");
        let mut bound_pvc = (*pvc).clone();
        if bound_pvc["spec"]["volumeName"].is_null() {
            bound_pvc["spec"]["volumeName"] = json!(name(&pv));
            bound_pvc["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        }
        bound_pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
        if let Some(bound_pvc) = pass.update("", "persistentvolumeclaims", bound_pvc, MANAGER) {
            let status = json!({"phase": "Bound", "accessModes": bound_pv["spec"]["accessModes"], "capacity": bound_pv["spec"]["capacity"]});
            pass.set_status("", "persistentvolumeclaims", &bound_pvc, status, MANAGER);
        }
    }
    for pv in pass.list("", "persistentvolumes", None) {
        let claim = &pv["spec"]["claimRef"];
        if let Some(claim_name) = claim["name"].as_str()
            && pv["status"]["phase"] == "Bound"
        {
            let ns = claim["namespace"].as_str().unwrap_or_default();
            let still = pass
                .get("", "persistentvolumeclaims", ns, claim_name)
                .is_some_and(|c| c["metadata"]["uid"] == claim["uid"]);
            if !still {
                // Released first, as the real controller does; with the Delete policy the
                // provisioner then deletes it, and its protection finalizer goes since it is no
                // longer Bound.
                set_volume_phase(pass, &pv, "Released");
                if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
                    && let Some(released) = pass.get("", "persistentvolumes", "", name(&pv))
                {
                    pass.delete("", "persistentvolumes", &released, DeleteOptions::default());
                }
            }
        }
        if let Some(pv) = pass.get("", "persistentvolumes", "", name(&pv))
            && deleting(&pv)
            && pv["status"]["phase"] != "Bound"
        {
            remove_finalizer(pass, "persistentvolumes", &pv, "kubernetes.io/pv-protection");
        }
    }
}

fn set_volume_phase(pass: &mut Pass, pv: &Value, phase: &str) {
    let now = pass.now();
    pass.set_status("", "persistentvolumes", pv, json!({"phase": phase, "lastPhaseTransitionTime": now}), MANAGER);
}

/// A volume for a claim whose StorageClass exists, as its provisioner would make it.
fn provision(pass: &mut Pass, pvc: &Value) -> Option<Arc<Value>> {
    let class_name = class_of(pvc);
    if class_name.is_empty() {
        return None;
    }
    let class = pass.get("storage.k8s.io", "storageclasses", "", class_name)?;
    let pv_name = format!("pvc-{}", uid(pvc));
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": class["provisioner"]}},
        "spec": {
            "capacity": {"storage": request(pvc)}, "accessModes": pvc["spec"]["accessModes"],
            "storageClassName": class_name,
            "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
            "volumeMode": "Filesystem",
            "hostPath": {"path": format!("/var/lib/sim-provisioner/{pv_name}"), "type": ""},
        },
    });
    pass.create("", "persistentvolumes", pv, MANAGER)?;
    pass.get("", "persistentvolumes", "", &pv_name)
}

/// A deleted claim keeps `kubernetes.io/pvc-protection` while a pod still uses it.
fn release_protection(pass: &mut Pass, pvc: &Value) {
    let in_use = pass.list("", "pods", Some(namespace(pvc))).iter().any(|pod| {
        pod["spec"]["volumes"].as_array().is_some_and(|volumes| {
            volumes.iter().any(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(name(pvc)))
        })
    });
    if !in_use {
        remove_finalizer(pass, "persistentvolumeclaims", pvc, "kubernetes.io/pvc-protection");
    }
}

fn remove_finalizer(pass: &mut Pass, plural: &str, object: &Value, finalizer: &str) {
    let Some(list) = object["metadata"]["finalizers"].as_array() else { return };
    if !list.iter().any(|f| f == finalizer) {
        return;
    }
    let kept: Vec<Value> = list.iter().filter(|f| *f != finalizer).cloned().collect();
    let mut updated = object.clone();
    updated["metadata"]["finalizers"] = json!(kept);
    pass.update("", plural, updated, MANAGER);
}

/// What the attach/detach controller attaches: the provisioner's disks (`hostPath` volumes it
/// made stand in for network disks). NFS volumes are mounted, not attached.
const ATTACHER: &str = "sim.sharedvolume.io/hostpath";
/// How long the attach/detach controller waits before it detaches a disk from a node that does
/// not report, once no pod there uses it (`maxWaitForUnmountDuration`).
pub(crate) const FORCE_DETACH_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 60);
const ATTACH_DETACH: &str = "attachdetach-controller";

fn attachable(pv: &Value) -> bool {
    !pv["spec"]["hostPath"].is_null()
}

/// A disk that only one node may have attached at a time.
fn single_node(pv: &Value) -> bool {
    modes(pv).iter().all(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
}

/// The attachable volumes a pod uses: their PersistentVolumes.
fn attached_volumes(pass: &Pass, pod: &Value) -> Vec<Arc<Value>> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .filter_map(|claim| pass.get("", "persistentvolumeclaims", namespace(pod), claim))
        .filter_map(|pvc| pass.get("", "persistentvolumes", "", pvc["spec"]["volumeName"].as_str()?))
        .filter(|pv| attachable(pv))
        .collect()
}

fn attachment_name(pv: &str, node: &str) -> String {
    let digest = blake3::hash(format!("{pv}/{ATTACHER}/{node}").as_bytes());
    format!("sim-{}", &digest.to_hex()[..16])
}

/// The attach/detach controller, for the provisioner's disks: a VolumeAttachment per disk and
/// node where a scheduled pod uses it. A ReadWriteOnce disk is attached to one node at a time: a
/// pod elsewhere waits (see [`attach_problem`]) until it is detached, which happens once no pod
/// object on its node uses it: at once when the node reports, is gone, or is tainted
/// out-of-service; after [`FORCE_DETACH_AFTER`] when the node does not report. A pod of a lost
/// node keeps its disk while the pod object exists, even Terminating.
///
/// `unused_since` remembers since when an attachment to a node that does not report is unused.
pub(super) fn attach_detach(
    pass: &mut Pass,
    unused_since: &mut std::collections::BTreeMap<String, k8s_openapi::jiff::Timestamp>,
) {
    let mut desired: std::collections::BTreeSet<(String, String)> = Default::default();
    for pod in pass.list("", "pods", None) {
        let Some(node) = pod["spec"]["nodeName"].as_str() else { continue };
        for pv in attached_volumes(pass, &pod) {
            desired.insert((name(&pv).to_string(), node.to_string()));
        }
    }
    let attachments = pass.list("storage.k8s.io", "volumeattachments", None);
    let attached = |pv: &str, node: &str| {
        attachments.iter().any(|a| a["spec"]["source"]["persistentVolumeName"] == pv && a["spec"]["nodeName"] == node)
    };
    for (pv_name, node) in &desired {
        if attached(pv_name, node) {
            continue;
        }
        let Some(pv) = pass.get("", "persistentvolumes", "", pv_name) else { continue };
        let elsewhere = attachments.iter().any(|a| a["spec"]["source"]["persistentVolumeName"] == pv_name.as_str());
        if elsewhere && single_node(&pv) {
            continue;
        }
        let attachment = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": attachment_name(pv_name, node)},
            "spec": {"attacher": ATTACHER, "nodeName": node, "source": {"persistentVolumeName": pv_name}},
        });
        if let Some(created) = pass.create("storage.k8s.io", "volumeattachments", attachment, ATTACH_DETACH) {
            pass.set_status("storage.k8s.io", "volumeattachments", &created, json!({"attached": true}), ATTACH_DETACH);
        }
    }
    let now = pass.server.clock().now();
    for attachment in attachments {
        let pv = attachment["spec"]["source"]["persistentVolumeName"].as_str().unwrap_or_default().to_string();
        let node_name = attachment["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        let key = name(&attachment).to_string();
        if desired.contains(&(pv, node_name.clone())) || deleting(&attachment) {
            unused_since.remove(&key);
            continue;
        }
        let node = pass.get("", "nodes", "", &node_name);
        let reports = node.as_ref().is_none_or(|n| {
            super::kubelet::node_ready(n) || super::kubelet::has_no_execute_taint(n, super::kubelet::OUT_OF_SERVICE)
        });
        let since = *unused_since.entry(key.clone()).or_insert(now);
        if reports || now.duration_since(since).unsigned_abs() >= FORCE_DETACH_AFTER {
            unused_since.remove(&key);
            pass.delete("storage.k8s.io", "volumeattachments", &attachment, DeleteOptions::default());
        }
    }
}

/// Why a pod's disks are not attached to its node yet, as the pod's Events say it.
pub(super) fn attach_problem(pass: &Pass, pod: &Value) -> Option<String> {
    let node = pod["spec"]["nodeName"].as_str()?;
    let attachments = pass.list("storage.k8s.io", "volumeattachments", None);
    attached_volumes(pass, pod).iter().find_map(|pv| {
        let pv_name = name(pv);
        let on = |a: &&Arc<Value>| a["spec"]["source"]["persistentVolumeName"] == pv_name;
        let here = attachments.iter().filter(on).find(|a| a["spec"]["nodeName"] == node);
        match here {
            Some(a) if a["status"]["attached"] == true => None,
            Some(_) => Some(format!("AttachVolume.Attach pending for volume \"{pv_name}\"")),
            None if attachments.iter().any(|a| on(&a)) && single_node(pv) => Some(format!(
                "Multi-Attach error for volume \"{pv_name}\" Volume is already exclusively attached to one node and can't be attached to another"
            )),
            None => Some(format!("AttachVolume.Attach pending for volume \"{pv_name}\"")),
        }
    })
}
