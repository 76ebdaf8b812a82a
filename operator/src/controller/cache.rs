//! Watch caches of what a reconcile reads: namespaces, StorageClasses, and every object the
//! operator created (by its `managed-by` label, one cache per kind). A reconcile reads from these
//! instead of the API server and writes a child only when it differs from the plan, so a
//! reconcile with nothing to change costs no request at all.
//!
//! The cache does not keep the objects the operator created, only what a reconcile reads of them
//! (a [`Child`]): at 1,000 volumes whole copies were most of the operator's memory. Whether a
//! child still holds the plan is told by a fingerprint of the fields the operator's field manager
//! owns: recorded when the operator applied (or checked) the child, compared with the one of
//! the cached copy. An edit by anyone else changes the fingerprint (the value or its owner
//! changes), and the child is checked against the API server again.
//!
//! A cache can lag behind a write the operator just made. Where a stale "missing" would do harm
//! it is checked with the API server: a namespace or StorageClass reported missing (the volume
//! would fail), and the NFS writer token Secret (a second token would be drawn). A stale copy of a
//! child only costs a read that was not needed, or a reconcile later, when the child's watch
//! event arrives.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::ready;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Node, NodeStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use kube::core::DynamicResourceScope;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Map, Value};

use super::Error;
use super::kube_io::{FIELD_MANAGER, OWNED_KINDS, api_resource};
use super::triggers::{TRIGGERING_CHILDREN, Triggers, touched};
use crate::api::VolumeKind;
use crate::api::labels;
use crate::plan::ObjectKey;
use sv_api::watch::WatchBackoff;

/// What a cached object need not keep: `managedFields` (often the larger part of an object, and
/// never read by a reconcile) and the last applied configuration.
pub fn lean<K: ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Of a pod, what the operator reads: name, namespace, deletion, the reference and component
/// labels and the owner annotation (its own pods: syncers and NFS servers), the annotations that
/// ask for volumes (consumer pods), its node and phase, and, for its own pods, the containers that wait and why (an image
/// that cannot be pulled, a crash loop), for the volume's conditions. Consumer and syncer pods
/// are the most numerous objects the operator watches, and their specs the largest.
pub fn lean_pod(pod: &mut Pod) {
    let metadata = std::mem::take(&mut pod.metadata);
    let kept_annotations = [
        VolumeKind::SharedVolume.pod_annotation(),
        VolumeKind::ClusterSharedVolume.pod_annotation(),
        crate::api::annotations::OWNER,
    ];
    pod.metadata = ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        deletion_timestamp: metadata.deletion_timestamp,
        labels: metadata
            .labels
            .map(|l| l.into_iter().filter(|(k, _)| k == labels::REFERENCE || k == labels::COMPONENT).collect()),
        annotations: metadata
            .annotations
            .map(|a| a.into_iter().filter(|(k, _)| kept_annotations.contains(&k.as_str())).collect()),
        ..ObjectMeta::default()
    };
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    pod.spec = Some(PodSpec { node_name, ..PodSpec::default() });
    let ours = pod.metadata.labels.as_ref().is_some_and(|l| l.contains_key(labels::REFERENCE));
    let status = pod.status.take().unwrap_or_default();
    let waiting = status.container_statuses.filter(|_| ours).map(|statuses| {
        statuses
            .into_iter()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_some()))
            .map(|c| ContainerStatus { name: c.name, state: c.state, ..ContainerStatus::default() })
            .collect()
    });
    pod.status = Some(PodStatus { phase: status.phase, container_statuses: waiting, ..PodStatus::default() });
}

/// Of a node, its addresses (images, conditions and capacity are most of a node's status).
pub fn lean_node(node: &mut Node) {
    lean(node);
    node.spec = None;
    let addresses = node.status.as_ref().and_then(|s| s.addresses.clone());
    node.status = Some(NodeStatus { addresses, ..NodeStatus::default() });
}

/// What the cache keeps of an object the operator created.
#[derive(Clone, Debug)]
pub struct Child {
    /// Name, namespace, the labels a reconcile selects by (reference and component), the owner
    /// annotation, and the creation and deletion times.
    pub metadata: ObjectMeta,
    /// The fields a reconcile reads: `status.readyReplicas` of a StatefulSet or ReplicaSet,
    /// `status.phase` of a claim, `spec.clusterIP` of a Service, `data` of a Secret.
    pub view: Value,
    /// [`fingerprint`] of the object as the watch delivered it.
    pub fingerprint: Option<u64>,
}

impl Child {
    pub fn of(kind: &str, object: DynamicObject) -> Self {
        let fingerprint = fingerprint(&object);
        let DynamicObject { metadata, data, .. } = object;
        let kept = |path: &str| data.pointer(path).cloned();
        let view = match kind {
            "StatefulSet" | "ReplicaSet" => {
                kept("/status/readyReplicas").map(|n| serde_json::json!({"status": {"readyReplicas": n}}))
            }
            "PersistentVolumeClaim" => kept("/status/phase").map(|p| serde_json::json!({"status": {"phase": p}})),
            "Service" => kept("/spec/clusterIP").map(|ip| serde_json::json!({"spec": {"clusterIP": ip}})),
            "Secret" => kept("/data").map(|d| serde_json::json!({ "data": d })),
            _ => None,
        };
        let labels = metadata.labels.map(|labels| {
            labels.into_iter().filter(|(k, _)| k == labels::REFERENCE || k == labels::COMPONENT).collect()
        });
        // The owner annotation names the volume the child's changes trigger.
        let annotations = metadata
            .annotations
            .map(|a| a.into_iter().filter(|(k, _)| k == crate::api::annotations::OWNER).collect::<BTreeMap<_, _>>())
            .filter(|a| !a.is_empty());
        let metadata = ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            labels,
            annotations,
            creation_timestamp: metadata.creation_timestamp,
            deletion_timestamp: metadata.deletion_timestamp,
            ..ObjectMeta::default()
        };
        Self { metadata, view: view.unwrap_or(Value::Null), fingerprint }
    }
}

impl Resource for Child {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A hash of the values of every field the operator's field manager owns in `object` (by its
/// `managedFields` entry for apply), or `None` when it owns none. Another writer who changes
/// such a field changes its value, its owner, or both, and so the fingerprint.
pub fn fingerprint(object: &DynamicObject) -> Option<u64> {
    let owned = object.metadata.managed_fields.as_ref()?.iter().find(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.as_deref().unwrap_or_default().is_empty()
    })?;
    let fields = &owned.fields_v1.as_ref()?.0;
    let mut metadata = serde_json::to_value(&object.metadata).ok()?;
    if let Some(meta) = metadata.as_object_mut() {
        meta.remove("managedFields");
    }
    let mut hasher = DefaultHasher::new();
    hash_owned_fields(
        &|name| if name == "metadata" { Some(&metadata) } else { object.data.get(name) },
        fields,
        &mut hasher,
    );
    Some(hasher.finish())
}

/// Hashes what `fields` (a `fieldsV1` tree) selects of the object whose top-level fields
/// `field` looks up: `f:` a field, `k:` a list element by its keys, `v:` a set element, `i:` a
/// list element by position, `.` the element itself; a leaf selects the whole value.
fn hash_owned_fields<'a>(field: &dyn Fn(&str) -> Option<&'a Value>, fields: &Value, hasher: &mut DefaultHasher) {
    let Some(selectors) = fields.as_object() else { return };
    let mut keys: Vec<&String> = selectors.keys().collect();
    keys.sort();
    for key in keys {
        key.hash(hasher);
        if let Some(name) = key.strip_prefix("f:") {
            hash_selected(field(name), &selectors[key], hasher);
        }
    }
}

fn hash_selected(value: Option<&Value>, fields: &Value, hasher: &mut DefaultHasher) {
    let Some(value) = value else {
        0u8.hash(hasher);
        return;
    };
    let Some(selectors) = fields.as_object().filter(|s| !s.is_empty()) else {
        hash_value(value, hasher);
        return;
    };
    let mut keys: Vec<&String> = selectors.keys().collect();
    keys.sort();
    for key in keys {
        key.hash(hasher);
        let sub = &selectors[key];
        let selected = if let Some(name) = key.strip_prefix("f:") {
            value.get(name)
        } else if let Some(element_keys) = key.strip_prefix("k:") {
            let wanted: Option<Map<String, Value>> = serde_json::from_str(element_keys).ok();
            value.as_array().and_then(|items| {
                items.iter().find(|item| wanted.as_ref().is_some_and(|w| w.iter().all(|(k, v)| item.get(k) == Some(v))))
            })
        } else if let Some(index) = key.strip_prefix("i:") {
            index.parse::<usize>().ok().and_then(|i| value.get(i))
        } else {
            // `.` and `v:` say that something exists, which their key already hashed.
            continue;
        };
        hash_selected(selected, sub, hasher);
    }
}

/// A hash of a JSON value that does not depend on the order of object keys.
fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => 1u8.hash(hasher),
        Value::Bool(b) => (2u8, b).hash(hasher),
        Value::Number(n) => (3u8, n.to_string()).hash(hasher),
        Value::String(s) => (4u8, s).hash(hasher),
        Value::Array(items) => {
            (5u8, items.len()).hash(hasher);
            items.iter().for_each(|item| hash_value(item, hasher));
        }
        Value::Object(map) => {
            (6u8, map.len()).hash(hasher);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(hasher);
                hash_value(&map[key], hasher);
            }
        }
    }
}

/// A hash of a planned object, to tell whether the plan for a child changed.
pub fn digest(desired: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_value(desired, &mut hasher);
    hasher.finish()
}

/// Whether a child holds its plan, as far as the cache can tell.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Applied or checked with this plan, and unchanged since.
    Holds,
    /// Not in the cache: apply.
    Differs,
    /// Never applied or checked by this process with this plan, or changed since (by another
    /// writer, or the cache has not yet seen the operator's last write): check with the API
    /// server.
    Unknown,
}

#[derive(Clone)]
pub struct ClusterCache {
    client: Client,
    namespaces: Store<Namespace>,
    storage_classes: Store<StorageClass>,
    owned: BTreeMap<&'static str, (ApiResource, Store<Child>)>,
    by_reference: Arc<RwLock<ReferenceIndex>>,
    /// Per child: the digest of the plan it was last applied or checked with, and the
    /// fingerprint it had then.
    verified: Arc<Mutex<HashMap<ObjectKey, (u64, u64)>>>,
}

/// The owned objects of each volume, by the value of their reference label, kept current from
/// the same watch events that fill the stores: a reconcile looks up its own children instead of
/// scanning every object the operator made (quadratic in the number of volumes). An entry only
/// says where to look (the store is the truth), so an entry left behind by a relabelled object
/// costs a lookup, not a wrong answer.
#[derive(Default)]
struct ReferenceIndex {
    live: BTreeMap<&'static str, KindIndex>,
    /// Objects of a kind being listed again after its watch restarted; they replace the kind's
    /// live entries at once when the list is complete, as the store does.
    relisting: BTreeMap<&'static str, KindIndex>,
}

/// Reference value → (namespace, name) of the objects of one kind that carry it.
#[derive(Default)]
struct KindIndex(HashMap<String, Vec<(Option<String>, String)>>);

impl KindIndex {
    fn insert(&mut self, object: &Child) {
        let Some(reference) = object.labels().get(labels::REFERENCE) else { return };
        let key = (object.metadata.namespace.clone(), object.name_any());
        let children = self.0.entry(reference.clone()).or_default();
        if !children.contains(&key) {
            children.push(key);
        }
    }

    fn remove(&mut self, object: &Child) {
        let Some(reference) = object.labels().get(labels::REFERENCE) else { return };
        let Some(children) = self.0.get_mut(reference) else { return };
        children.retain(|(namespace, name)| *namespace != object.metadata.namespace || *name != object.name_any());
        if children.is_empty() {
            self.0.remove(reference);
        }
    }
}

impl ReferenceIndex {
    fn apply(&mut self, kind: &'static str, event: &watcher::Event<Child>) {
        match event {
            watcher::Event::Apply(object) => self.live.entry(kind).or_default().insert(object),
            watcher::Event::Delete(object) => self.live.entry(kind).or_default().remove(object),
            watcher::Event::Init => {
                self.relisting.insert(kind, KindIndex::default());
            }
            watcher::Event::InitApply(object) => self.relisting.entry(kind).or_default().insert(object),
            watcher::Event::InitDone => {
                let listed = self.relisting.remove(kind).unwrap_or_default();
                self.live.insert(kind, listed);
            }
        }
    }
}

impl ClusterCache {
    /// The caches, and the future that keeps them current (run it as long as they are used).
    /// A change of a child of a [`TRIGGERING_CHILDREN`] kind triggers its volume, once stored.
    pub fn new(client: &Client, triggers: Triggers) -> (Self, BoxFuture<'static, ()>) {
        let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
        let (namespaces, writer) = reflector::store::<Namespace>();
        tasks.push(
            reflector::reflector(
                writer,
                watcher(Api::all(client.clone()), watcher::Config::default()).modify(|ns: &mut Namespace| {
                    lean(ns);
                    ns.spec = None;
                }),
            )
            .backoff(WatchBackoff::default())
            .for_each(|_| ready(()))
            .boxed(),
        );
        let (storage_classes, writer) = reflector::store::<StorageClass>();
        tasks.push(
            reflector::reflector(writer, watcher(Api::all(client.clone()), watcher::Config::default()).modify(lean))
                .backoff(WatchBackoff::default())
                .for_each(|_| ready(()))
                .boxed(),
        );
        let mut owned = BTreeMap::new();
        let by_reference: Arc<RwLock<ReferenceIndex>> = Arc::default();
        let verified: Arc<Mutex<HashMap<ObjectKey, (u64, u64)>>> = Arc::default();
        for kind in OWNED_KINDS {
            let Some((resource, namespaced)) = api_resource(kind) else { continue };
            let writer = Writer::<Child>::new(resource.clone());
            let store = writer.as_reader();
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            let index = by_reference.clone();
            let verified = verified.clone();
            let triggers = TRIGGERING_CHILDREN.contains(&kind).then(|| triggers.clone());
            let children = watcher(api, watcher::Config::default().labels(&managed)).map_ok(move |event| match event {
                watcher::Event::Apply(o) => watcher::Event::Apply(Child::of(kind, o)),
                watcher::Event::InitApply(o) => watcher::Event::InitApply(Child::of(kind, o)),
                watcher::Event::Delete(o) => watcher::Event::Delete(Child::of(kind, o)),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
            });
            tasks.push(
                reflector::reflector(writer, children)
                    .backoff(WatchBackoff::default())
                    .for_each(move |event| {
                        if let Ok(event) = event {
                            if let watcher::Event::Delete(child) = &event {
                                let key = ObjectKey {
                                    kind,
                                    namespace: child.namespace().filter(|_| namespaced),
                                    name: child.name_any(),
                                };
                                verified.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                            }
                            index.write().unwrap_or_else(|e| e.into_inner()).apply(kind, &event);
                            if let (Some(triggers), Some(child)) = (&triggers, touched(&event)) {
                                triggers.owned(&child.metadata);
                            }
                        }
                        ready(())
                    })
                    .boxed(),
            );
            owned.insert(kind, (resource, store));
        }
        let caches = Self { client: client.clone(), namespaces, storage_classes, owned, by_reference, verified };
        (caches, futures::future::join_all(tasks).map(|_| ()).boxed())
    }

    /// Caches that nothing fills (tests that answer every request themselves): every lookup goes
    /// to the API server or finds nothing.
    pub fn detached(client: &Client) -> Self {
        let owned = OWNED_KINDS
            .iter()
            .filter_map(|kind| {
                let (resource, _) = api_resource(kind)?;
                let store = Writer::<Child>::new(resource.clone()).as_reader();
                Some((*kind, (resource, store)))
            })
            .collect();
        Self {
            client: client.clone(),
            namespaces: reflector::store().0,
            storage_classes: reflector::store().0,
            owned,
            by_reference: Arc::default(),
            verified: Arc::default(),
        }
    }

    /// Waits until every cache has listed once.
    pub async fn wait_until_ready(&self) -> Result<(), Error> {
        let cache = |what: &'static str| move |e: reflector::store::WriterDropped| Error::Cache(what, e.to_string());
        self.namespaces.wait_until_ready().await.map_err(cache("namespace"))?;
        self.storage_classes.wait_until_ready().await.map_err(cache("storage class"))?;
        for (kind, (_, store)) in &self.owned {
            store.wait_until_ready().await.map_err(cache(kind))?;
        }
        Ok(())
    }

    /// The namespace, unless it is being deleted; a cache miss is checked with the API server.
    pub async fn live_namespace(&self, name: &str) -> Result<Option<Arc<Namespace>>, Error> {
        let found = match self.namespaces.get(&ObjectRef::new(name)) {
            Some(ns) => Some(ns),
            None => Api::<Namespace>::all(self.client.clone()).get_opt(name).await?.map(Arc::new),
        };
        Ok(found.filter(|ns| ns.metadata.deletion_timestamp.is_none()))
    }

    /// Whether the StorageClass exists; a cache miss is checked with the API server.
    pub async fn storage_class_exists(&self, name: &str) -> Result<bool, Error> {
        if self.storage_classes.get(&ObjectRef::new(name)).is_some() {
            return Ok(true);
        }
        Ok(Api::<StorageClass>::all(self.client.clone()).get_opt(name).await?.is_some())
    }

    /// What the cache holds of an object the operator created.
    pub fn owned(&self, key: &ObjectKey) -> Option<Arc<Child>> {
        let (resource, store) = self.owned.get(key.kind)?;
        let reference = ObjectRef::<Child>::new_with(&key.name, resource.clone());
        let reference = match &key.namespace {
            Some(ns) => reference.within(ns),
            None => reference,
        };
        store.get(&reference)
    }

    /// What a reconcile reads of an owned object (its [`Child::view`]), from the cache or, on a
    /// miss, from the API server (then the whole object).
    pub async fn owned_or_fetched(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        if let Some(object) = self.owned(key) {
            return Ok(Some(object.view.clone()));
        }
        let Some((resource, _)) = self.owned.get(key.kind) else { return Ok(None) };
        let api: Api<DynamicObject> = match &key.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        Ok(api.get_opt(&key.name).await?.and_then(|o| serde_json::to_value(o).ok()))
    }

    /// Objects (not being deleted) of one volume, by its `reference` label value, that carry
    /// every label of `also`, of every kind the operator creates.
    pub fn owned_keys(&self, reference: &str, also: &BTreeMap<&str, &str>) -> BTreeSet<ObjectKey> {
        let candidates: Vec<ObjectKey> = {
            let index = self.by_reference.read().unwrap_or_else(|e| e.into_inner());
            index
                .live
                .iter()
                .flat_map(|(kind, by_kind)| {
                    by_kind.0.get(reference).into_iter().flatten().map(|(namespace, name)| ObjectKey {
                        kind,
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })
                })
                .collect()
        };
        candidates
            .into_iter()
            .filter(|key| {
                // The store is the truth; the index only says where to look.
                self.owned(key).is_some_and(|object| {
                    let labels = object.labels();
                    object.metadata.deletion_timestamp.is_none()
                        && labels.get(labels::REFERENCE).is_some_and(|r| r == reference)
                        && also.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
                })
            })
            .collect()
    }

    /// Whether the child `key` holds the plan whose [`digest`] is `desired`.
    pub fn verdict(&self, key: &ObjectKey, desired: u64) -> Verdict {
        let Some(cached) = self.owned(key) else { return Verdict::Differs };
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied();
        match verified {
            Some((plan, seen)) if plan == desired && cached.fingerprint == Some(seen) => Verdict::Holds,
            // A changed plan may ask for what the child already has (a Service's clusterIP,
            // pinned once allocated): a read tells, where an apply would be a write.
            _ => Verdict::Unknown,
        }
    }

    /// Records that the child `key` held the plan `desired` when its fingerprint was
    /// `fingerprint` (just applied, or checked with the API server).
    pub fn record(&self, key: &ObjectKey, desired: u64, fingerprint: Option<u64>) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match fingerprint {
            Some(seen) => verified.insert(key.clone(), (desired, seen)),
            None => verified.remove(key),
        };
    }
}

/// Whether `current` already holds everything `desired` sets (what server-side apply of
/// `desired` would leave unchanged): every field of `desired` is in `current` with the same value,
/// lists element by element. Fields the server or others added to `current` do not matter.
pub fn holds(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (_, Value::Null) => true,
        (Value::Object(c), Value::Object(d)) => {
            d.iter().all(|(k, dv)| dv.is_null() || c.get(k).is_some_and(|cv| holds(cv, dv)))
        }
        (Value::Array(c), Value::Array(d)) => c.len() == d.len() && c.iter().zip(d).all(|(cv, dv)| holds(cv, dv)),
        (c, d) => c == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_holds_what_it_was_applied_with_and_more() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 2049}]}});
        let current = json!({
            "metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}},
            "spec": {"ports": [{"port": 2049, "protocol": "TCP"}], "clusterIP": "10.96.0.10"},
            "status": {},
        });
        assert!(holds(&current, &desired));
        let changed = json!({"metadata": {"name": "a", "labels": {"x": "2"}}});
        assert!(!holds(&current, &changed), "a changed label");
        let more_ports = json!({"spec": {"ports": [{"port": 2049}, {"port": 8080}]}});
        assert!(!holds(&current, &more_ports), "a list that grew");
        assert!(!holds(&current, &json!({"spec": {"type": "NodePort"}})), "a field that is missing");
    }

    fn statefulset(replicas: i64, image: &str, ready: i64, owned: Option<Value>) -> DynamicObject {
        let mut managed = vec![json!({"manager": "kube-controller-manager", "operation": "Update",
            "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:readyReplicas": {}}}})];
        if let Some(owned) = owned {
            managed.push(json!({"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1", "fieldsV1": owned}));
        }
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "1"}, "managedFields": managed,
                         "annotations": {"big": "x".repeat(1000)}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "nfs", "image": image, "imagePullPolicy": "IfNotPresent"}]}}},
            "status": {"readyReplicas": ready},
        }))
        .expect("a StatefulSet")
    }

    #[test]
    fn a_fingerprint_changes_with_the_fields_the_operator_owns_and_nothing_else() {
        // As a real server writes it: list elements by their keys.
        let owned = json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:replicas": {},
            "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nfs\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}});
        let base = fingerprint(&statefulset(1, "nfs:1", 0, Some(owned.clone())));
        assert!(base.is_some());
        assert_eq!(base, fingerprint(&statefulset(1, "nfs:1", 1, Some(owned.clone()))), "status is not the operator's");
        assert_ne!(base, fingerprint(&statefulset(0, "nfs:1", 0, Some(owned.clone()))), "replicas");
        assert_ne!(base, fingerprint(&statefulset(1, "nfs:2", 0, Some(owned.clone()))), "a field of a keyed element");
        let taken = json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:replicas": {}}});
        assert_ne!(base, fingerprint(&statefulset(1, "nfs:1", 0, Some(taken))), "a field another writer took");
        // As the simulated server writes it: lists owned whole.
        let atomic = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}});
        assert_ne!(
            fingerprint(&statefulset(1, "nfs:1", 0, Some(atomic.clone()))),
            fingerprint(&statefulset(1, "nfs:2", 0, Some(atomic))),
            "a list owned whole"
        );
        assert_eq!(fingerprint(&statefulset(1, "nfs:1", 0, None)), None, "nothing owned");
    }

    #[test]
    fn the_cache_keeps_what_a_reconcile_reads_and_drops_the_rest() {
        let child = Child::of("StatefulSet", statefulset(1, "nfs:1", 1, Some(json!({"f:spec": {"f:replicas": {}}}))));
        assert_eq!(child.view, json!({"status": {"readyReplicas": 1}}));
        assert!(child.metadata.managed_fields.is_none() && child.metadata.annotations.is_none());
        assert!(child.labels().is_empty(), "only the labels a reconcile selects by are kept");
        assert!(child.fingerprint.is_some());
        let mut owned = statefulset(1, "nfs:1", 1, None);
        owned
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(crate::api::annotations::OWNER.to_string(), "SharedVolume/team-a/docs".to_string());
        let owned = Child::of("StatefulSet", owned);
        assert_eq!(
            owned.metadata.annotations,
            Some(BTreeMap::from([(
                crate::api::annotations::OWNER.to_string(),
                "SharedVolume/team-a/docs".to_string()
            )])),
            "the owner annotation is kept: it names the volume a change triggers"
        );
        let service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 2049}]}}))
        .expect("a Service");
        assert_eq!(Child::of("Service", service).view, json!({"spec": {"clusterIP": "10.96.0.9"}}));
        let secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "data": {"token": "dG9rZW4="}, "type": "Opaque"}))
        .expect("a Secret");
        assert_eq!(Child::of("Secret", secret).view, json!({"data": {"token": "dG9rZW4="}}));
    }

    fn object(name: &str, reference: Option<&str>) -> Child {
        let labels = reference.map(|r| json!({labels::REFERENCE: r})).unwrap_or(json!({}));
        let object = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ns", "labels": labels}}))
        .expect("an object");
        Child::of("Service", object)
    }

    fn children(index: &ReferenceIndex, reference: &str) -> Vec<String> {
        index
            .live
            .get("Service")
            .and_then(|k| k.0.get(reference))
            .into_iter()
            .flatten()
            .map(|(_, n)| n.clone())
            .collect()
    }

    #[test]
    fn the_reference_index_follows_changes_deletes_and_relists() {
        use watcher::Event;
        let mut index = ReferenceIndex::default();
        index.apply("Service", &Event::Apply(object("a", Some("r1"))));
        index.apply("Service", &Event::Apply(object("b", Some("r1"))));
        index.apply("Service", &Event::Apply(object("c", None)));
        assert_eq!(children(&index, "r1"), ["a", "b"]);
        index.apply("Service", &Event::Apply(object("b", Some("r2"))));
        // A relabelled object is found under its new reference; the old entry may stay (the
        // store, which has the new labels, rules it out).
        assert_eq!(children(&index, "r2"), ["b"], "relabelled");
        index.apply("Service", &Event::Delete(object("a", Some("r1"))));
        assert!(!children(&index, "r1").contains(&"a".to_string()), "deleted");
        // A relist: the old entries stand until it is complete, then only what was listed.
        index.apply("Service", &Event::Init);
        index.apply("Service", &Event::InitApply(object("d", Some("r2"))));
        assert_eq!(children(&index, "r2"), ["b"], "during a relist");
        index.apply("Service", &Event::InitDone);
        assert_eq!(children(&index, "r2"), ["d"], "after it");
    }
}
