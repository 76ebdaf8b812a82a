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

pub(super) fn node_ready(node: &Value) -> bool {
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

/// The taint the node lifecycle controller puts on a node whose kubelet stopped reporting.
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint an administrator puts on a node known to be shut down (non-graceful node shutdown):
/// its terminating pods are then removed at once, and its volumes detached.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

const POD_GC: &str = "system:serviceaccount:kube-system:pod-garbage-collector";
/// The taint eviction controller runs with the node controller's credentials (it was part of it
/// until v1.29).
const TAINT_EVICTION: &str = "system:serviceaccount:kube-system:node-controller";

/// Whether a node carries a taint with this key and effect `NoExecute`.
pub(crate) fn has_no_execute_taint(node: &Value, key: &str) -> bool {
    node["spec"]["taints"].as_array().is_some_and(|t| t.iter().any(|t| t["key"] == key && t["effect"] == "NoExecute"))
}

/// The node lifecycle controller, the taint eviction controller and the pod garbage collector, as
/// far as a lost node goes:
///
/// - a node whose kubelet stopped reporting gets the `unreachable` taints (NoSchedule and
///   NoExecute), and loses them when it reports again; its pods are marked not Ready at once
///   (`MarkPodsNotReady`, without the 40 s grace before the node is Unknown);
/// - once a pod's toleration of the `unreachable` taint runs out (300 s unless the pod says
///   otherwise), it is evicted: deleted with its grace period. Nobody on the lost node confirms
///   the end of its containers, so the pod stays Terminating. A StatefulSet does not replace it
///   while it exists; a ReplicaSet does at once;
/// - the pod garbage collector removes (grace period 0) the pods of a node object that is gone,
///   and the terminating pods of a not-Ready node that carries the `out-of-service` taint, which
///   also evicts every pod there that does not tolerate it.
///
/// When the node reports again, its kubelet finishes what is terminating there (see
/// [`kubelets`]); its other pods go on.
pub(super) fn node_lifecycle(pass: &mut Pass, runtime: &mut dyn PodRuntime) {
    let now = pass.server.clock().now();
    let mut nodes: BTreeMap<String, Arc<Value>> = BTreeMap::new();
    for node in pass.list("", "nodes", None) {
        let node = taint_unreachable(pass, node);
        nodes.insert(name(&node).to_string(), node);
    }
    for pod in pass.list("", "pods", None) {
        let Some(node_name) = pod["spec"]["nodeName"].as_str() else { continue };
        let node = nodes.get(node_name);
        let not_ready_since = node.and_then(|n| node_not_ready_since(n));
        let out_of_service = node.is_some_and(|n| has_no_execute_taint(n, OUT_OF_SERVICE)) && not_ready_since.is_some();
        if node.is_none() || (out_of_service && deleting(&pod)) {
            // Its processes are gone with the node: nothing to wait for.
            runtime.stop_by_uid(super::uid(&pod));
            let options = DeleteOptions { grace_period: Some(0), ..DeleteOptions::default() };
            pass.delete_as("", "pods", &pod, options, POD_GC);
            continue;
        }
        let Some(since) = not_ready_since else { continue };
        if deleting(&pod) {
            continue;
        }
        let toleration = pod["spec"]["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["key"] == UNREACHABLE)
            .and_then(|t| t["tolerationSeconds"].as_i64())
            .unwrap_or(300);
        let elapsed = now.duration_since(since).as_secs();
        if elapsed >= toleration || out_of_service {
            pass.delete_as("", "pods", &pod, DeleteOptions::default(), TAINT_EVICTION);
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

/// Puts the `unreachable` taints on a node that stopped reporting and takes them off one that
/// reports again; returns the node as stored.
fn taint_unreachable(pass: &mut Pass, node: Arc<Value>) -> Arc<Value> {
    // The taint's time is when the node stopped reporting, in the stored form.
    let since = node_not_ready_since(&node).and_then(|_| {
        node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?["lastTransitionTime"]
            .as_str()
            .map(str::to_string)
    });
    let taints: Vec<Value> = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
    let ours = |t: &Value| t["key"] == UNREACHABLE;
    let mut wanted: Vec<Value> = taints.iter().filter(|t| !ours(t)).cloned().collect();
    if let Some(since) = since {
        let added = taints
            .iter()
            .find(|t| ours(t) && t["effect"] == "NoExecute")
            .map(|t| t["timeAdded"].clone())
            .unwrap_or_else(|| json!(since));
        wanted.push(json!({"key": UNREACHABLE, "effect": "NoSchedule"}));
        wanted.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added}));
    }
    if wanted == taints {
        return node;
    }
    let mut updated = (*node).clone();
    updated["spec"]["taints"] = if wanted.is_empty() { Value::Null } else { json!(wanted) };
    if let Some(spec) = updated["spec"].as_object_mut() {
        spec.retain(|_, v| !v.is_null());
    }
    match pass.update("", "nodes", updated, "node-controller") {
        Some(stored) => Arc::new(stored),
        None => node,
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
            let attached = match super::volumes::attach_problem(pass, &pod) {
                Some(message) => Err(StartError { reason: "ContainerCreating".into(), message }),
                None => Ok(()),
            };
            if let Err(error) = attached.and_then(|()| runtime.start(&pod, &*pass)) {
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
