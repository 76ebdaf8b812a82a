//! Deployments → ReplicaSets → Pods, and StatefulSets → Pods with stable names and claims.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Pass, controlled_by, controller_ref, deleting, name, namespace};
use crate::api::DeleteOptions;

const MANAGER: &str = "kube-controller-manager";
/// The users the real controllers' requests come as (their ServiceAccounts in kube-system).
const REPLICASET_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";
const STATEFULSET_CONTROLLER: &str = "system:serviceaccount:kube-system:statefulset-controller";

/// A stable short hash of a pod template (the real controllers use FNV; any stable hash works).
fn template_hash(template: &Value) -> String {
    let digest = blake3::hash(template.to_string().as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest.as_bytes()[..10].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

fn replicas(object: &Value) -> usize {
    object["spec"]["replicas"].as_u64().unwrap_or(1) as usize
}

pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// A pod object from a workload's template.
fn pod_from_template(owner: &Value, template: &Value, extra_labels: &[(&str, String)]) -> Value {
    let mut metadata = template["metadata"].as_object().cloned().unwrap_or_default();
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    for (key, value) in extra_labels {
        labels[*key] = json!(value);
    }
    metadata.insert("namespace".into(), json!(namespace(owner)));
    metadata.insert("ownerReferences".into(), json!([controller_ref(owner)]));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": Value::Object(metadata), "spec": template["spec"].clone()})
}

fn owned_pods(pass: &mut Pass, owner: &Value) -> Vec<Arc<Value>> {
    pass.pods_controlled_by(owner)
}

/// Pods a controller asked for that await admission: counted as if created, as the real
/// controllers' expectations do, so a pass does not ask twice.
fn pending_pods(pass: &Pass, owner: &Value) -> usize {
    pass.pending_pods().filter(|p| controlled_by(p, owner)).count()
}

pub(super) fn replica_sets(pass: &mut Pass) {
    for rs in pass.list("apps", "replicasets", None) {
        let pods = owned_pods(pass, &rs);
        let active: Vec<&Arc<Value>> = pods.iter().filter(|p| !deleting(p)).collect();
        let want = if deleting(&rs) { 0 } else { replicas(&rs) };
        if !deleting(&rs) {
            for _ in active.len() + pending_pods(pass, &rs)..want {
                let mut pod = pod_from_template(&rs, &rs["spec"]["template"], &[]);
                pod["metadata"]["generateName"] = json!(format!("{}-", name(&rs)));
                pass.create_as("", "pods", pod, MANAGER, REPLICASET_CONTROLLER);
            }
        }
        // Scale down: not-ready pods first, then the newest names.
        let mut extra: Vec<&Arc<Value>> = active.clone();
        extra.sort_by_key(|p| (pod_ready(p), std::cmp::Reverse(name(p).to_string())));
        for pod in extra.iter().take(active.len().saturating_sub(want)) {
            pass.delete_as("", "pods", pod, DeleteOptions::default(), REPLICASET_CONTROLLER);
        }
        let pods = owned_pods(pass, &rs);
        let live: Vec<&Arc<Value>> = pods.iter().filter(|p| !deleting(p)).collect();
        let ready = live.iter().filter(|p| pod_ready(p)).count();
        let mut status = json!({
            "replicas": live.len(), "fullyLabeledReplicas": live.len(),
            "observedGeneration": rs["metadata"]["generation"], "terminatingReplicas": pods.len() - live.len(),
        });
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        pass.set_status("apps", "replicasets", &rs, status, MANAGER);
    }
}

pub(super) fn deployments(pass: &mut Pass) {
    for deployment in pass.list("apps", "deployments", None) {
        if deleting(&deployment) {
            continue;
        }
        let hash = template_hash(&deployment["spec"]["template"]);
        let rs_name = format!("{}-{hash}", name(&deployment));
        let owned: Vec<Arc<Value>> = pass
            .list("apps", "replicasets", Some(namespace(&deployment)))
            .into_iter()
            .filter(|rs| controlled_by(rs, &deployment))
            .collect();
        let want = replicas(&deployment);
        match owned.iter().find(|rs| name(rs) == rs_name) {
            None => {
                let mut template = deployment["spec"]["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = deployment["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": namespace(&deployment),
                                 "labels": template["metadata"]["labels"].clone(),
                                 "ownerReferences": [controller_ref(&deployment)]},
                    "spec": {"replicas": want, "selector": selector, "template": template},
                });
                pass.create("apps", "replicasets", rs, MANAGER);
            }
            Some(current) if replicas(current) != want => {
                let mut scaled = (**current).clone();
                scaled["spec"]["replicas"] = json!(want);
                pass.update("apps", "replicasets", scaled, MANAGER);
            }
            Some(_) => {}
        }
        for old in owned.iter().filter(|rs| name(rs) != rs_name && replicas(rs) > 0) {
            let mut scaled = (**old).clone();
            scaled["spec"]["replicas"] = json!(0);
            pass.update("apps", "replicasets", scaled, MANAGER);
        }
        let current = pass.get("apps", "replicasets", namespace(&deployment), &rs_name);
        let count = |key: &str| current.as_ref().and_then(|rs| rs["status"][key].as_u64()).unwrap_or(0);
        let available = count("availableReplicas");
        let (status_word, reason) = if available as usize >= want {
            ("True", "MinimumReplicasAvailable")
        } else {
            ("False", "MinimumReplicasUnavailable")
        };
        let previous = deployment["status"]["conditions"].as_array().and_then(|c| c.first()).cloned();
        let since = previous
            .filter(|c| c["status"] == status_word)
            .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
            .unwrap_or_else(|| pass.now());
        let status = json!({
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": count("replicas"), "updatedReplicas": count("replicas"),
            "readyReplicas": count("readyReplicas"), "availableReplicas": available,
            "conditions": [{"type": "Available", "status": status_word, "reason": reason,
                            "lastUpdateTime": since, "lastTransitionTime": since}],
        });
        pass.set_status("apps", "deployments", &deployment, status, MANAGER);
    }
}

pub(super) fn stateful_sets(pass: &mut Pass) {
    for sts in pass.list("apps", "statefulsets", None) {
        let sts_name = name(&sts).to_string();
        let ns = namespace(&sts).to_string();
        let want = if deleting(&sts) { 0 } else { replicas(&sts) };
        // The template changes only with the generation, so the revision observed for this
        // generation stands (hashing every template on every pass is most of a pass at scale).
        let observed = sts["status"]["observedGeneration"] == sts["metadata"]["generation"];
        let revision = match sts["status"]["updateRevision"].as_str().filter(|_| observed) {
            Some(revision) => revision.to_string(),
            None => format!("{sts_name}-{}", template_hash(&sts["spec"]["template"])),
        };
        let ordered = sts["spec"]["podManagementPolicy"] != "Parallel";
        for index in 0..want {
            let pod_name = format!("{sts_name}-{index}");
            if let Some(existing) = pass.get("", "pods", &ns, &pod_name) {
                if ordered && !pod_ready(&existing) {
                    break;
                }
                continue;
            }
            let mut pod = pod_from_template(
                &sts,
                &sts["spec"]["template"],
                &[
                    ("apps.kubernetes.io/pod-index", index.to_string()),
                    ("controller-revision-hash", revision.clone()),
                    ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
                ],
            );
            pod["metadata"]["name"] = json!(pod_name);
            pod["metadata"]["generateName"] = json!(format!("{sts_name}-"));
            pod["spec"]["hostname"] = json!(pod_name);
            if let Some(service) = sts["spec"]["serviceName"].as_str() {
                pod["spec"]["subdomain"] = json!(service);
            }
            for template in sts["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
                let template_name = name(template).to_string();
                let claim = format!("{template_name}-{pod_name}");
                if pass.get("", "persistentvolumeclaims", &ns, &claim).is_none() {
                    let mut metadata: Map<String, Value> =
                        template["metadata"].as_object().cloned().unwrap_or_default();
                    metadata.insert("name".into(), json!(claim));
                    metadata.insert("namespace".into(), json!(ns));
                    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                     "metadata": Value::Object(metadata), "spec": template["spec"].clone()});
                    pass.create("", "persistentvolumeclaims", pvc, MANAGER);
                }
                let volumes = &mut pod["spec"]["volumes"];
                if !volumes.is_array() {
                    *volumes = json!([]);
                }
                if let Some(list) = volumes.as_array_mut()
                    && !list.iter().any(|v| v["name"] == json!(template_name))
                {
                    list.push(json!({"name": template_name, "persistentVolumeClaim": {"claimName": claim}}));
                }
            }
            pass.create_as("", "pods", pod, MANAGER, STATEFULSET_CONTROLLER);
            if ordered {
                break;
            }
        }
        let pods = owned_pods(pass, &sts);
        for pod in pods.iter().rev() {
            let index = pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"]
                .as_str()
                .and_then(|i| i.parse::<usize>().ok());
            if index.is_some_and(|i| i >= want) && !deleting(pod) {
                pass.delete_as("", "pods", pod, DeleteOptions::default(), STATEFULSET_CONTROLLER);
            }
        }
        let pods = owned_pods(pass, &sts);
        let live = pods.iter().filter(|p| !deleting(p)).count();
        let ready = pods.iter().filter(|p| !deleting(p) && pod_ready(p)).count();
        let mut status = json!({
            "observedGeneration": sts["metadata"]["generation"], "replicas": live, "currentReplicas": live,
            "updatedReplicas": live, "availableReplicas": ready, "currentRevision": revision,
            "updateRevision": revision, "collisionCount": 0,
        });
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
        }
        pass.set_status("apps", "statefulsets", &sts, status, MANAGER);
    }
}
