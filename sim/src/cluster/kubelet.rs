//! Nodes, the scheduler, a kubelet per node, the node lifecycle controller and Endpoints.
//!
//! The kubelet is simulated (no containers run here); what a pod runs is up to the
//! [`PodRuntime`]: the simulation starts our programs as turmoil hosts, other images just "run".

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::workloads::pod_ready;
use super::{Pass, deleting, name, namespace};
use crate::api::DeleteOptions;

/// What runs inside pods.
pub trait PodRuntime: Send {
    /// Starts the pod on its node. An error (a volume that cannot be mounted, a Secret that is
    /// missing) leaves the pod waiting with that reason; the kubelet tries again on its next pass.
    fn start(&mut self, pod: &Value, cluster: &dyn ClusterView) -> Result<(), StartError>;
    /// The pod is being deleted: signal its containers to stop (SIGTERM). See [`Self::stopped`].
    fn stop(&mut self, pod: &Value);
    /// Whether the pod's containers are gone (they exited, or its grace period ran out and they
    /// were killed): only then does the kubelet remove the pod object.
    fn stopped(&mut self, _pod: &Value) -> bool {
        true
    }
    /// What the kubelet reports of a running pod's containers now (and a chance to refresh what
    /// it projects into them, such as Secret volumes).
    fn health(&mut self, pod: &Value, cluster: &dyn ClusterView) -> ContainerHealth;
    /// UIDs of the pods whose containers run now.
    fn running(&self) -> Vec<String> {
        Vec::new()
    }
    /// Stops the containers of the pod with this uid. The kubelet also calls it for containers
    /// whose pod object is gone (deleted with no grace period): it kills what no pod accounts for.
    fn stop_by_uid(&mut self, _uid: &str) {}
}

/// Read access to the cluster's objects while the kubelet starts a pod.
pub trait ClusterView {
    fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Arc<Value>>;
    /// Objects of a collection (all namespaces when `namespace` is None), in name order.
    fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Arc<Value>>;
    /// A token of the pod's ServiceAccount, bound to the pod, as the kubelet requests one for
    /// the projected `kube-api-access` volume; None when that ServiceAccount does not exist.
    fn service_account_token(&self, _pod: &Value) -> Option<String> {
        None
    }
}

/// Why a pod's containers could not start, as `kubectl describe pod` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError {
    /// The container's waiting reason (`ContainerCreating`, `CreateContainerConfigError`, ...).
    pub reason: String,
    pub message: String,
}

/// A running pod's containers as the kubelet sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerHealth {
    /// The readiness probe passes (or the container has none).
    pub ready: bool,
    /// How often the container exited and was started again.
    pub restarts: u32,
}

/// Every pod starts and is Ready at once: images that are not ours.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysReady;

impl PodRuntime for AlwaysReady {
    fn start(&mut self, _pod: &Value, _cluster: &dyn ClusterView) -> Result<(), StartError> {
        Ok(())
    }
    fn stop(&mut self, _pod: &Value) {}
    fn health(&mut self, _pod: &Value, _cluster: &dyn ClusterView) -> ContainerHealth {
        ContainerHealth { ready: true, restarts: 0 }
    }
}

fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn node_not_ready_since(node: &Value) -> Option<Timestamp> {
    let ready = node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
    if ready["status"] == "True" {
        return None;
    }
    ready["lastTransitionTime"].as_str()?.parse().ok()
}

/// Pods on a node that stopped reporting are evicted once their toleration of an unreachable
/// node (300 s unless the pod says otherwise) has run out.
pub(super) fn node_lifecycle(pass: &mut Pass, runtime: &mut dyn PodRuntime) {
    let now = pass.server.clock().now();
    let nodes: BTreeMap<String, Arc<Value>> =
        pass.list("", "nodes", None).into_iter().map(|n| (name(&n).to_string(), n)).collect();
    for pod in pass.list("", "pods", None) {
        let Some(node) = pod["spec"]["nodeName"].as_str() else { continue };
        let since = match nodes.get(node) {
            Some(n) => node_not_ready_since(n),
            None => Some(now),
        };
        let Some(since) = since else { continue };
        let toleration = pod["spec"]["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["key"] == "node.kubernetes.io/unreachable")
            .and_then(|t| t["tolerationSeconds"].as_i64())
            .unwrap_or(300);
        let elapsed = now.duration_since(since).as_secs();
        if elapsed >= toleration {
            // The node is gone and its processes with it: nothing to wait for.
            runtime.stop_by_uid(pod["metadata"]["uid"].as_str().unwrap_or_default());
            let options = DeleteOptions { grace_period: Some(0), ..DeleteOptions::default() };
            pass.delete_as("", "pods", &pod, options, "system:serviceaccount:kube-system:pod-garbage-collector");
        } else if pod_ready(&pod) {
            // As the node lifecycle controller's MarkPodsNotReady: a pod whose node stopped
            // reporting is not Ready, long before it is evicted, so its Endpoints and its
            // workload's ready count drop at once.
            let mut status = pod["status"].clone();
            set_condition(&mut status, "Ready", false, None, &pass.now());
            pass.set_status("", "pods", &pod, status, "node-controller");
        }
    }
}

/// Binds pending pods to the Ready node with the fewest pods, once their claims are bound.
pub(super) fn schedule(pass: &mut Pass) {
    let nodes: Vec<Arc<Value>> = pass
        .list("", "nodes", None)
        .into_iter()
        .filter(|n| node_ready(n) && n["spec"]["unschedulable"] != json!(true))
        .collect();
    let pods = pass.list("", "pods", None);
    let mut load: BTreeMap<String, usize> = nodes.iter().map(|n| (name(n).to_string(), 0)).collect();
    for pod in &pods {
        if let Some(node) = pod["spec"]["nodeName"].as_str()
            && let Some(count) = load.get_mut(node)
        {
            *count += 1;
        }
    }
    for pod in pods {
        if !pod["spec"]["nodeName"].is_null() || deleting(&pod) {
            continue;
        }
        let unbound_claim = pod["spec"]["volumes"].as_array().into_iter().flatten().find_map(|v| {
            let claim = v["persistentVolumeClaim"]["claimName"].as_str()?;
            let bound = pass
                .get("", "persistentvolumeclaims", namespace(&pod), claim)
                .is_some_and(|c| c["status"]["phase"] == "Bound");
            (!bound).then(|| claim.to_string())
        });
        let chosen = load.iter().min_by_key(|(node, count)| (**count, (*node).clone())).map(|(n, _)| n.clone());
        let message = match (&unbound_claim, &chosen) {
            (Some(claim), _) => format!(
                "0/{} nodes are available: pod has unbound immediate PersistentVolumeClaims ({claim}).",
                nodes.len()
            ),
            (None, None) => "0/0 nodes are available: no node is Ready.".to_string(),
            (None, Some(node)) => {
                let mut bound = (*pod).clone();
                bound["spec"]["nodeName"] = json!(node);
                if let Some(count) = load.get_mut(node) {
                    *count += 1;
                }
                if let Some(updated) = pass.update("", "pods", bound, "kube-scheduler") {
                    let mut status = updated["status"].clone();
                    set_condition(&mut status, "PodScheduled", true, None, &pass.now());
                    pass.set_status("", "pods", &updated, status, "kube-scheduler");
                }
                continue;
            }
        };
        let mut status = pod["status"].clone();
        let already = status["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "PodScheduled" && c["message"] == json!(message)));
        if !already {
            set_condition(&mut status, "PodScheduled", false, Some(("Unschedulable", &message)), &pass.now());
            pass.set_status("", "pods", &pod, status, "kube-scheduler");
        }
    }
}

/// Sets a pod condition, keeping its transition time when the status does not flip.
fn set_condition(status: &mut Value, kind: &str, value: bool, reason: Option<(&str, &str)>, now: &str) {
    let word = if value { "True" } else { "False" };
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else { return };
    let mut condition = json!({"type": kind, "status": word, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some((reason, message)) = reason {
        condition["reason"] = json!(reason);
        condition["message"] = json!(message);
    }
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            if existing["status"] == word {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// Each node's kubelet starts its pods, reports readiness, and finishes deletions.
pub(super) fn kubelets(
    pass: &mut Pass,
    runtime: &mut dyn PodRuntime,
    pod_ips: &mut BTreeMap<String, u32>,
    node_indices: &BTreeMap<String, u32>,
) {
    let nodes: BTreeMap<String, Arc<Value>> =
        pass.list("", "nodes", None).into_iter().map(|n| (name(&n).to_string(), n)).collect();
    let pods = pass.list("", "pods", None);
    let live: std::collections::BTreeSet<&str> = pods.iter().filter_map(|p| p["metadata"]["uid"].as_str()).collect();
    for uid in runtime.running() {
        if !live.contains(uid.as_str()) {
            runtime.stop_by_uid(&uid);
        }
    }
    for pod in pods {
        let Some(node_name) = pod["spec"]["nodeName"].as_str() else { continue };
        let Some(node) = nodes.get(node_name).filter(|n| node_ready(n)) else { continue };
        if deleting(&pod) {
            runtime.stop(&pod);
            if runtime.stopped(&pod) {
                // The kubelet's own request, the second DELETE review of a graceful delete.
                let options = DeleteOptions {
                    grace_period: Some(0),
                    uid: Some(super::uid(&pod).to_string()),
                    ..DeleteOptions::default()
                };
                pass.delete_as("", "pods", &pod, options, &format!("system:node:{node_name}"));
            }
            continue;
        }
        let now = pass.now();
        let mut status = pod["status"].clone();
        if status["phase"] == "Pending" {
            if let Err(error) = runtime.start(&pod, &*pass) {
                let containers: Vec<Value> = pod["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        json!({"name": c["name"], "image": c["image"], "ready": false, "started": false, "restartCount": 0,
                               "state": {"waiting": {"reason": error.reason, "message": error.message}}})
                    })
                    .collect();
                status["containerStatuses"] = json!(containers);
                pass.set_status("", "pods", &pod, status, "kubelet");
                continue;
            }
            let index = node_indices.get(node_name).copied().unwrap_or(0);
            let next = pod_ips.entry(node_name.to_string()).or_insert(1);
            *next += 1;
            status["phase"] = json!("Running");
            status["podIP"] = json!(format!("10.244.{index}.{}", *next));
            status["podIPs"] = json!([{"ip": status["podIP"]}]);
            status["hostIP"] = node["status"]["addresses"][0]["address"].clone();
            status["startTime"] = json!(now);
            set_condition(&mut status, "PodReadyToStartContainers", true, None, &now);
            set_condition(&mut status, "Initialized", true, None, &now);
        }
        let ContainerHealth { ready, restarts } = runtime.health(&pod, &*pass);
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "ready": ready, "started": true, "restartCount": restarts,
                       "state": {"running": {"startedAt": status["startTime"]}}})
            })
            .collect();
        status["containerStatuses"] = json!(containers);
        set_condition(&mut status, "ContainersReady", ready, None, &now);
        set_condition(&mut status, "Ready", ready, None, &now);
        pass.set_status("", "pods", &pod, status, "kubelet");
    }
}

/// Endpoints of every Service with a selector: the addresses of its matching pods. Endpoints of a
/// Service that is gone are deleted.
pub(super) fn endpoints(pass: &mut Pass) {
    for endpoints in pass.list("", "endpoints", None) {
        if pass.get("", "services", namespace(&endpoints), name(&endpoints)).is_none() && !deleting(&endpoints) {
            pass.delete("", "endpoints", &endpoints, DeleteOptions::default());
        }
    }
    // Pods by namespace and label, so that each Service looks only at pods carrying one of its
    // selector's labels (a scan of every pod per Service is quadratic).
    let mut by_label: std::collections::HashMap<(String, String, String), Vec<Arc<Value>>> = Default::default();
    for pod in pass.list("", "pods", None) {
        for (key, value) in pod["metadata"]["labels"].as_object().into_iter().flatten() {
            let Some(value) = value.as_str() else { continue };
            by_label
                .entry((namespace(&pod).to_string(), key.clone(), value.to_string()))
                .or_default()
                .push(pod.clone());
        }
    }
    for service in pass.list("", "services", None) {
        let Some(selector) = service["spec"]["selector"].as_object().filter(|s| !s.is_empty()) else { continue };
        if deleting(&service) {
            continue;
        }
        let ns = namespace(&service).to_string();
        // The rarest of the selector's labels narrows the pods to look at most.
        let candidates = selector
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .and_then(|v| by_label.get(&(ns.clone(), k.clone(), v.to_string())))
                    .map_or(&[][..], |p| &p[..])
            })
            .min_by_key(|pods| pods.len())
            .unwrap_or_default()
            .to_vec();
        let matches = |pod: &Value| selector.iter().all(|(k, v)| pod["metadata"]["labels"][k] == *v);
        // A named targetPort is resolved per pod, from its containers' ports, as the endpoints
        // controller does; pods that resolve alike share a subset.
        let ports_of = |pod: &Value| -> Vec<Value> {
            service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let target = match &p["targetPort"] {
                        Value::String(port_name) => pod["spec"]["containers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                            .find(|cp| cp["name"] == port_name.as_str())
                            .and_then(|cp| cp["containerPort"].as_i64())?,
                        other => other.as_i64().or_else(|| p["port"].as_i64()).unwrap_or(0),
                    };
                    let mut port = json!({"port": target, "protocol": p["protocol"]});
                    if let Some(name) = p["name"].as_str() {
                        port["name"] = json!(name);
                    }
                    Some(port)
                })
                .collect()
        };
        let mut groups: Vec<(Vec<Value>, Vec<Value>, Vec<Value>)> = Vec::new();
        for pod in candidates {
            if !matches(&pod) || deleting(&pod) || pod["status"]["podIP"].is_null() {
                continue;
            }
            let address = json!({"ip": pod["status"]["podIP"], "nodeName": pod["spec"]["nodeName"],
                                 "targetRef": {"kind": "Pod", "namespace": ns, "name": name(&pod), "uid": pod["metadata"]["uid"]}});
            let ports = ports_of(&pod);
            let index = match groups.iter().position(|(p, _, _)| *p == ports) {
                Some(i) => i,
                None => {
                    groups.push((ports, Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            if pod_ready(&pod) { groups[index].1.push(address) } else { groups[index].2.push(address) }
        }
        let subsets: Vec<Value> = groups
            .into_iter()
            .map(|(ports, ready, not_ready)| {
                let mut subset = json!({"ports": ports});
                if !ready.is_empty() {
                    subset["addresses"] = json!(ready);
                }
                if !not_ready.is_empty() {
                    subset["notReadyAddresses"] = json!(not_ready);
                }
                subset
            })
            .collect();
        let subsets = json!(subsets);
        match pass.get("", "endpoints", &ns, name(&service)) {
            Some(current) if current["subsets"] == subsets => {}
            Some(current) => {
                let mut updated = (*current).clone();
                updated["subsets"] = subsets;
                pass.update("", "endpoints", updated, "kube-controller-manager");
            }
            None => {
                let object = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name(&service), "namespace": ns, "labels": service["metadata"]["labels"].clone()},
                    "subsets": subsets});
                pass.create("", "endpoints", object, "kube-controller-manager");
            }
        }
    }
}
