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
                if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
                    pass.delete("", "persistentvolumes", &pv, DeleteOptions::default());
                } else {
                    set_volume_phase(pass, &pv, "Released");
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
