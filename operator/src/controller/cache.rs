//! Watch caches of what a reconcile reads: namespaces, StorageClasses, and every object the
//! operator created (by its `managed-by` label, one cache per kind). A reconcile reads from these
//! instead of the API server and writes a child only when the cached object does not already hold
//! what the plan wants, so a reconcile with nothing to change costs no request at all.
//!
//! A cache can lag behind a write the operator just made. Where a stale "missing" would do harm
//! it is checked with the API server: a namespace or StorageClass reported missing (the volume
//! would fail), and the NFS writer token Secret (a second token would be drawn). A stale copy of a
//! child only costs a write that was not needed, or a reconcile later, when the child's watch
//! event arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::future::ready;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use super::Error;
use super::kube_io::{OWNED_KINDS, api_resource};
use crate::api::labels;
use crate::plan::ObjectKey;
use sv_api::watch::WatchBackoff;

/// What a cached object need not keep: `managedFields` (often the larger part of an object, and
/// never read by a reconcile) and the last applied configuration. At 1,000 volumes this is most
/// of the operator's memory.
pub fn lean<K: ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

#[derive(Clone)]
pub struct ClusterCache {
    client: Client,
    namespaces: Store<Namespace>,
    storage_classes: Store<StorageClass>,
    owned: BTreeMap<&'static str, (ApiResource, Store<DynamicObject>)>,
    by_reference: Arc<std::sync::RwLock<ReferenceIndex>>,
}

/// The owned objects of each volume, by the value of their reference label, kept current from
/// the same watch events that fill the stores: a reconcile looks up its own children instead of
/// scanning every object the operator made (quadratic in the number of volumes).
#[derive(Default)]
struct ReferenceIndex {
    live: BTreeMap<&'static str, KindIndex>,
    /// Objects of a kind being listed again after its watch restarted; they replace the kind's
    /// live entries at once when the list is complete, as the store does.
    relisting: BTreeMap<&'static str, KindIndex>,
}

#[derive(Default)]
struct KindIndex {
    /// Reference value → (namespace, name).
    children: std::collections::HashMap<String, BTreeSet<(Option<String>, String)>>,
    /// (namespace, name) → its reference value, to find the entry again on a change or delete.
    reference_of: std::collections::HashMap<(Option<String>, String), String>,
}

impl KindIndex {
    fn insert(&mut self, object: &DynamicObject) {
        self.remove(object);
        let Some(reference) = object.labels().get(labels::REFERENCE) else { return };
        let key = (object.namespace(), object.name_any());
        self.children.entry(reference.clone()).or_default().insert(key.clone());
        self.reference_of.insert(key, reference.clone());
    }

    fn remove(&mut self, object: &DynamicObject) {
        let key = (object.namespace(), object.name_any());
        let Some(reference) = self.reference_of.remove(&key) else { return };
        if let Some(children) = self.children.get_mut(&reference) {
            children.remove(&key);
            if children.is_empty() {
                self.children.remove(&reference);
            }
        }
    }
}

impl ReferenceIndex {
    fn apply(&mut self, kind: &'static str, event: &watcher::Event<DynamicObject>) {
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
    pub fn new(client: &Client) -> (Self, BoxFuture<'static, ()>) {
        let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
        let (namespaces, writer) = reflector::store::<Namespace>();
        tasks.push(
            reflector::reflector(writer, watcher(Api::all(client.clone()), watcher::Config::default()).modify(lean))
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
        let by_reference: Arc<std::sync::RwLock<ReferenceIndex>> = Arc::default();
        for kind in OWNED_KINDS {
            let Some((resource, _)) = api_resource(kind) else { continue };
            let writer = Writer::<DynamicObject>::new(resource.clone());
            let store = writer.as_reader();
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            let index = by_reference.clone();
            tasks.push(
                reflector::reflector(writer, watcher(api, watcher::Config::default().labels(&managed)).modify(lean))
                    .backoff(WatchBackoff::default())
                    .for_each(move |event| {
                        if let Ok(event) = event {
                            index.write().unwrap_or_else(|e| e.into_inner()).apply(kind, &event);
                        }
                        ready(())
                    })
                    .boxed(),
            );
            owned.insert(kind, (resource, store));
        }
        let caches = Self { client: client.clone(), namespaces, storage_classes, owned, by_reference };
        (caches, futures::future::join_all(tasks).map(|_| ()).boxed())
    }

    /// Caches that nothing fills (tests that answer every request themselves): every lookup goes
    /// to the API server or finds nothing.
    pub fn detached(client: &Client) -> Self {
        let owned = OWNED_KINDS
            .iter()
            .filter_map(|kind| {
                let (resource, _) = api_resource(kind)?;
                let store = Writer::<DynamicObject>::new(resource.clone()).as_reader();
                Some((*kind, (resource, store)))
            })
            .collect();
        Self {
            client: client.clone(),
            namespaces: reflector::store().0,
            storage_classes: reflector::store().0,
            owned,
            by_reference: Arc::default(),
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

    /// The cached copy of an object the operator created.
    pub fn owned(&self, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        let (resource, store) = self.owned.get(key.kind)?;
        let reference = ObjectRef::<DynamicObject>::new_with(&key.name, resource.clone());
        let reference = match &key.namespace {
            Some(ns) => reference.within(ns),
            None => reference,
        };
        store.get(&reference)
    }

    /// An owned object as JSON, from the cache or, on a miss, from the API server.
    pub async fn owned_or_fetched(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        if let Some(object) = self.owned(key) {
            return Ok(serde_json::to_value(&*object).ok());
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
                    by_kind.children.get(reference).into_iter().flatten().map(|(namespace, name)| ObjectKey {
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

    fn object(name: &str, reference: Option<&str>) -> DynamicObject {
        let labels = reference.map(|r| json!({labels::REFERENCE: r})).unwrap_or(json!({}));
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ns", "labels": labels}}))
        .expect("an object")
    }

    fn children(index: &ReferenceIndex, reference: &str) -> Vec<String> {
        index
            .live
            .get("Service")
            .and_then(|k| k.children.get(reference))
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
        assert_eq!(
            (children(&index, "r1"), children(&index, "r2")),
            (vec!["a".into()], vec!["b".into()]),
            "relabelled"
        );
        index.apply("Service", &Event::Delete(object("a", Some("r1"))));
        assert!(children(&index, "r1").is_empty(), "deleted");
        // A relist: the old entries stand until it is complete, then only what was listed.
        index.apply("Service", &Event::Init);
        index.apply("Service", &Event::InitApply(object("d", Some("r2"))));
        assert_eq!(children(&index, "r2"), ["b"], "during a relist");
        index.apply("Service", &Event::InitDone);
        assert_eq!(children(&index, "r2"), ["d"], "after it");
    }
}
