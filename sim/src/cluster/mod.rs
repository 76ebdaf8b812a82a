//! The parts of a cluster besides the API server: the controllers of kube-controller-manager
//! (namespaces, garbage collection, ReplicaSets, Deployments, StatefulSets, Endpoints, PV/PVC
//! binding and provisioning, node lifecycle), the scheduler, and a kubelet per node.
//!
//! They act on the API server's state directly, in one deterministic pass at a time
//! ([`Cluster::step`]): every collection is walked in name order, so the same inputs give the
//! same writes in the same order. What runs inside a pod is behind [`PodRuntime`].

mod gc;
mod kubelet;
mod volumes;
mod workloads;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiServer, DeleteOptions, PendingPod, PendingPodDelete, ResourceType, State, WriteOptions};

pub use kubelet::{AlwaysReady, ClusterView, ContainerHealth, OUT_OF_SERVICE, PodRuntime, StartError};

/// A kubelet's view of what runs in its pods.
pub struct Cluster {
    server: ApiServer,
    runtime: Box<dyn PodRuntime>,
    /// Pod IPs handed out per node (10.244.<node index>.<n>).
    pod_ips: BTreeMap<String, u32>,
    /// Each node's index, in the order nodes were added.
    node_indices: BTreeMap<String, u32>,
    /// Since when each attachment to a node that does not report has been unused.
    unused_attachments: BTreeMap<String, k8s_openapi::jiff::Timestamp>,
    /// How often the controllers look again without any API change (readiness, timers).
    pub resync: Duration,
    /// How long after a change the controllers wait to see what else changes.
    pub batch: Duration,
}

/// One pass's access to the state, with the writes it made counted.
pub(crate) struct Pass<'a> {
    server: &'a ApiServer,
    state: &'a mut State,
    writes: usize,
    /// Pods by the uid of their controller, built when first asked for and kept up to date by
    /// this pass's pod creates (other pod writes drop it): workload controllers ask for the pods
    /// of each of their objects, and a scan of every pod per object is quadratic.
    pods_by_controller: Option<std::collections::HashMap<String, Vec<Arc<Value>>>>,
}

/// The uid of an object's controller, from its ownerReferences.
fn controller_uid(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == json!(true))?["uid"].as_str()
}

impl ClusterView for Pass<'_> {
    fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        Pass::get(self, group, plural, namespace, name)
    }
    fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        Pass::list(self, group, plural, namespace)
    }
    fn service_account_token(&self, pod: &Value) -> Option<String> {
        let account = pod["spec"]["serviceAccountName"].as_str().filter(|a| !a.is_empty()).unwrap_or("default");
        let (name, uid) = (pod["metadata"]["name"].as_str()?, pod["metadata"]["uid"].as_str()?);
        let namespace = namespace(pod);
        self.get("", "serviceaccounts", namespace, account)?;
        Some(self.server.issue_token(namespace, account, Some((name, uid))))
    }
}

impl<'a> Pass<'a> {
    fn rt(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.rt_ref(group, plural).cloned()
    }

    /// Without the copy that writes need (they borrow the state mutably): reads are the most
    /// frequent calls of a pass.
    fn rt_ref(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.state.registry.by_plural(group, plural)
    }

    fn new(server: &'a ApiServer, state: &'a mut State) -> Self {
        Self { server, state, writes: 0, pods_by_controller: None }
    }

    /// Pods whose controller is `owner`, in name order.
    pub(crate) fn pods_controlled_by(&mut self, owner: &Value) -> Vec<Arc<Value>> {
        if self.pods_by_controller.is_none() {
            let mut index: std::collections::HashMap<String, Vec<Arc<Value>>> = Default::default();
            for pod in self.list("", "pods", None) {
                if let Some(controller) = controller_uid(&pod) {
                    index.entry(controller.to_string()).or_default().push(pod.clone());
                }
            }
            self.pods_by_controller = Some(index);
        }
        let mut pods = self
            .pods_by_controller
            .as_ref()
            .and_then(|index| index.get(uid(owner)))
            .map(|pods| pods.iter().filter(|p| namespace(p) == namespace(owner)).cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        pods.sort_by(|a, b| name(a).cmp(name(b)));
        pods
    }

    /// Keeps the pod index true after a write to `plural`.
    fn pods_written(&mut self, group: &str, plural: &str, created: Option<&Value>) {
        if !(group.is_empty() && plural == "pods") {
            return;
        }
        match (created, self.pods_by_controller.as_mut()) {
            (Some(pod), Some(index)) => {
                if let Some(controller) = controller_uid(pod) {
                    index.entry(controller.to_string()).or_default().push(Arc::new(pod.clone()));
                }
            }
            _ => self.pods_by_controller = None,
        }
    }

    /// Pods a controller asked for that await admission.
    pub(crate) fn pending_pods(&self) -> impl Iterator<Item = &Value> {
        self.state.pending_pods.iter().map(|p| &p.pod)
    }

    /// Objects of a collection (all namespaces when `namespace` is None), in name order.
    pub(crate) fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(rt) = self.rt_ref(group, plural) else { return Vec::new() };
        self.state.store.list(&rt.id, namespace).map(|(_, o)| o.clone()).collect()
    }

    pub(crate) fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let rt = self.rt_ref(group, plural)?;
        self.state.store.get(&rt.id, namespace, name).cloned()
    }

    fn now(&self) -> String {
        self.server.now()
    }

    pub(crate) fn create(&mut self, group: &str, plural: &str, object: Value, manager: &str) -> Option<Value> {
        self.create_as(group, plural, object, manager, manager)
    }

    /// [`Self::create`] by `user` (a controller's ServiceAccount), which admission webhooks see.
    pub(crate) fn create_as(
        &mut self,
        group: &str,
        plural: &str,
        object: Value,
        manager: &str,
        user: &str,
    ) -> Option<Value> {
        let rt = self.rt(group, plural)?;
        if group.is_empty() && plural == "pods" && crate::api::pods_need_admission(self.state, &rt) {
            // Admission calls webhooks over the network; the pod is created after this pass.
            let same = |p: &PendingPod| {
                !name(&object).is_empty() && name(&p.pod) == name(&object) && namespace(&p.pod) == namespace(&object)
            };
            if !self.state.pending_pods.iter().any(same) {
                let pending = PendingPod { pod: object, manager: manager.to_string(), user: user.to_string() };
                self.state.pending_pods.push(pending);
                self.writes += 1;
            }
            return None;
        }
        match self.server.create_in(self.state, &rt, object, &WriteOptions::controller(manager)) {
            Ok((created, _)) => {
                self.writes += 1;
                self.pods_written(group, plural, Some(&created));
                Some(created)
            }
            Err(e) => {
                tracing::debug!(manager, plural, error = ?e, "simulated controller create failed");
                None
            }
        }
    }

    fn write(&mut self, group: &str, plural: &str, object: Value, manager: &str, status: bool) -> Option<Value> {
        let rt = self.rt(group, plural)?;
        let before = object["metadata"]["resourceVersion"].clone();
        let mut opts = WriteOptions::controller(manager);
        if status {
            opts.subresource = Some("status".into());
        }
        let result = self.server.update_in(self.state, &rt, object, &opts);
        self.pods_written(group, plural, None);
        match result {
            Ok(updated) => {
                if updated["metadata"]["resourceVersion"] != before {
                    self.writes += 1;
                }
                Some(updated)
            }
            Err(e) => {
                tracing::debug!(manager, plural, error = ?e, "simulated controller update failed");
                None
            }
        }
    }

    pub(crate) fn update(&mut self, group: &str, plural: &str, object: Value, manager: &str) -> Option<Value> {
        self.write(group, plural, object, manager, false)
    }

    /// Writes `status` if it differs from the object's.
    pub(crate) fn set_status(&mut self, group: &str, plural: &str, object: &Value, status: Value, manager: &str) {
        if object["status"] == status {
            return;
        }
        let mut updated = object.clone();
        updated["status"] = status;
        self.write(group, plural, updated, manager, true);
    }

    pub(crate) fn delete(&mut self, group: &str, plural: &str, object: &Value, options: DeleteOptions) {
        self.delete_as(group, plural, object, options, "system:kube-controller-manager");
    }

    /// [`Self::delete`] by `user` (a controller's ServiceAccount, a node), which admission
    /// webhooks see: while a webhook applies to pod deletes, a pod's delete waits for admission
    /// until after this pass.
    pub(crate) fn delete_as(&mut self, group: &str, plural: &str, object: &Value, options: DeleteOptions, user: &str) {
        let Some(rt) = self.rt(group, plural) else { return };
        if group.is_empty() && plural == "pods" && crate::api::pod_deletes_need_admission(self.state, &rt) {
            if !self.state.pending_pod_deletes.iter().any(|p| uid(&p.pod) == uid(object)) {
                let pending = PendingPodDelete { pod: object.clone(), options, user: user.to_string() };
                self.state.pending_pod_deletes.push(pending);
                self.writes += 1;
            }
            return;
        }
        let meta = &object["metadata"];
        let (namespace, name) =
            (meta["namespace"].as_str().unwrap_or_default(), meta["name"].as_str().unwrap_or_default());
        let before = self.state.store.resource_version();
        if let Err(e) = self.server.delete_in(self.state, &rt, namespace, name, &options) {
            tracing::debug!(plural, name, error = ?e, "simulated controller delete failed");
        }
        self.pods_written(group, plural, None);
        if self.state.store.resource_version() != before {
            self.writes += 1;
        }
    }
}

pub(crate) fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub(crate) fn namespace(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

pub(crate) fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

pub(crate) fn deleting(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

/// An ownerReference to `owner` as its controller.
pub(crate) fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

/// Whether `object`'s controller is `owner`.
pub(crate) fn controlled_by(object: &Value, owner: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == json!(true) && r["uid"] == owner["metadata"]["uid"]))
}

impl Cluster {
    pub fn new(server: ApiServer, runtime: Box<dyn PodRuntime>) -> Self {
        Self {
            server,
            runtime,
            pod_ips: BTreeMap::new(),
            node_indices: BTreeMap::new(),
            unused_attachments: BTreeMap::new(),
            resync: Duration::from_secs(1),
            batch: Duration::from_millis(100),
        }
    }

    pub fn server(&self) -> &ApiServer {
        &self.server
    }

    /// One pass of every controller; returns how many writes it made.
    pub fn step(&mut self) -> usize {
        let server = self.server.clone();
        let mut state = server.state();
        let mut pass = Pass::new(&server, &mut state);
        gc::namespaces(&mut pass);
        gc::collect_garbage(&mut pass);
        workloads::deployments(&mut pass);
        workloads::replica_sets(&mut pass);
        workloads::stateful_sets(&mut pass);
        volumes::bind(&mut pass);
        kubelet::node_lifecycle(&mut pass, self.runtime.as_mut());
        kubelet::schedule(&mut pass);
        volumes::attach_detach(&mut pass, &mut self.unused_attachments);
        kubelet::kubelets(&mut pass, self.runtime.as_mut(), &mut self.pod_ips, &self.node_indices);
        kubelet::endpoints(&mut pass);
        pass.writes
    }

    /// Steps until nothing changes (bounded, so a controller fight cannot spin forever).
    pub fn settle(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..50 {
            let writes = self.step();
            total += writes;
            if writes == 0 {
                break;
            }
        }
        total
    }

    /// Runs the controllers on every API change and every `resync` until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut changes = self.server.subscribe();
        loop {
            self.settle();
            let seen = self.server.state().store.resource_version();
            let (creates, deletes) = {
                let state = self.server.state();
                (!state.pending_pods.is_empty(), !state.pending_pod_deletes.is_empty())
            };
            if deletes {
                self.server.delete_pending_pods().await;
            }
            if creates || deletes {
                if creates {
                    self.server.create_pending_pods().await;
                }
                // Created pods need the next pass at once; a refused one is asked for again at
                // the next resync (the real controllers back off too).
                if self.relevant_changes_since(seen) {
                    continue;
                }
            }
            changes.borrow_and_update();
            // One deadline for the whole wait: a timer started again after every change would
            // never fire while Leases are renewed more often than `resync`, and then readiness
            // and timers would wait for an unrelated write.
            let resync_at = tokio::time::Instant::now() + self.resync;
            loop {
                tokio::select! {
                    _ = changes.changed() => {
                        // Controllers see a burst of writes together, as informers batch them.
                        tokio::time::sleep(self.batch).await;
                    }
                    _ = tokio::time::sleep_until(resync_at) => break,
                    _ = stop.cancelled() => return,
                }
                if self.relevant_changes_since(seen) {
                    break;
                }
            }
        }
    }

    /// Whether anything but Leases and Events changed after `rv` (those two never need a pass;
    /// lease renewals alone would otherwise wake every controller every few seconds).
    fn relevant_changes_since(&self, rv: u64) -> bool {
        let state = self.server.state();
        match state.store.changes_since(rv) {
            Ok(mut changes) => changes.any(|c| !matches!(c.resource.plural.as_str(), "leases" | "events")),
            Err(_) => true,
        }
    }

    /// Adds a Ready node.
    pub fn add_node(&mut self, node: &str) {
        let index = self.node_index(node);
        let server = self.server.clone();
        let mut state = server.state();
        let mut pass = Pass::new(&server, &mut state);
        let now = pass.now();
        let object = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": format!("10.244.{index}.0/24")},
        });
        if let Some(created) = pass.create("", "nodes", object, "kubelet") {
            let status = node_status(index, true, &now);
            pass.set_status("", "nodes", &created, status, "kubelet");
        }
    }

    fn node_index(&mut self, node: &str) -> u32 {
        let next = self.node_indices.len() as u32 + 1;
        *self.node_indices.entry(node.to_string()).or_insert(next)
    }
}

/// Marks a node Ready or lost (its kubelet stops reporting; its pods are evicted after their
/// toleration of an unreachable node).
pub fn set_node_ready(server: &ApiServer, node: &str, ready: bool) {
    let mut state = server.state();
    let mut pass = Pass::new(server, &mut state);
    let now = pass.now();
    let Some(current) = pass.get("", "nodes", "", node) else { return };
    let index = current["spec"]["podCIDR"]
        .as_str()
        .and_then(|cidr| cidr.split('.').nth(2))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    pass.set_status("", "nodes", &current, node_status(index, ready, &now), "kubelet");
}

fn node_status(index: u32, ready: bool, now: &str) -> Value {
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    };
    json!({
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{index}")}, {"type": "Hostname", "address": format!("node-{index}")}],
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
    })
}
