//! Object storage of the simulated API server: objects by resource, a global resource version,
//! and a bounded change log that watches read from (what etcd plus the watch cache provide).
//!
//! Everything is ordered (`BTreeMap`, `VecDeque`), so lists and watch streams are the same in every
//! run with the same inputs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::registry::ResourceId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One committed write, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: ResourceId,
    pub namespace: String,
    pub kind: ChangeKind,
    pub object: Arc<Value>,
    /// The object before the change, so that a filtered watch can tell an object entering or
    /// leaving its selection.
    pub previous: Option<Arc<Value>>,
}

/// Key of an object in its collection: (namespace or "", name).
pub type ObjectKey = (String, String);

/// Storage keys ignore the version: CRD versions share one storage (no conversion is simulated).
fn storage_key(id: &ResourceId) -> (String, String) {
    let (group, plural) = id.storage();
    (group.to_string(), plural.to_string())
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<(String, String), BTreeMap<ObjectKey, Arc<Value>>>,
    log: VecDeque<Arc<Change>>,
    capacity: usize,
    /// Changes at or below this version are no longer in the log: a watch from an older version
    /// gets `410 Expired`.
    compacted: u64,
    /// Digest of every change ever recorded, and of what was [noted](Self::note) besides: two
    /// runs with equal traces wrote the same objects in the same order.
    trace: blake3::Hasher,
    /// The trace line by line (a write: its version, kind, resource, name and a digest of the
    /// object), when asked for (see [`Self::keep_trace_lines`]), to find where two runs diverge.
    trace_lines: Option<Vec<String>>,
}

/// Where the global resource version starts, so that `resourceVersion=1` is already compacted as
/// it is on a real cluster.
pub const FIRST_RESOURCE_VERSION: u64 = 1000;

impl Store {
    pub fn new(capacity: usize) -> Self {
        Self {
            rv: FIRST_RESOURCE_VERSION,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            capacity: capacity.max(1),
            compacted: FIRST_RESOURCE_VERSION,
            trace: blake3::Hasher::new(),
            trace_lines: None,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The objects as they are now, to read while this store moves on (what a lagging replica's
    /// cache holds): no change log, no trace.
    pub fn frozen_copy(&self) -> Store {
        Store {
            rv: self.rv,
            objects: self.objects.clone(),
            log: VecDeque::new(),
            capacity: 1,
            compacted: self.rv,
            trace: blake3::Hasher::new(),
            trace_lines: None,
        }
    }

    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &ResourceId, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects.get(&storage_key(id))?.get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of a collection, sorted by (namespace, name); `namespace` None means all.
    pub fn list<'a>(
        &'a self,
        id: &ResourceId,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Arc<Value>)> + 'a {
        self.objects
            .get(&storage_key(id))
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|n| n == ns))
    }

    /// Every stored object, of every collection.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Value>> {
        self.objects.values().flat_map(BTreeMap::values)
    }

    /// Stores `object` with a new resource version (returned).
    pub fn put(&mut self, id: &ResourceId, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = object_key(&object);
        let object = Arc::new(object);
        let previous = self.objects.entry(storage_key(id)).or_default().insert(key.clone(), object.clone());
        let kind = if previous.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(id, key.0, kind, object.clone(), previous);
        object
    }

    /// Removes an object; its DELETED change carries the last state with a new resource version.
    pub fn remove(&mut self, id: &ResourceId, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let key = (namespace.to_string(), name.to_string());
        let previous = self.objects.get_mut(&storage_key(id))?.remove(&key)?;
        self.rv += 1;
        let mut last = (*previous).clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(id, key.0, ChangeKind::Deleted, Arc::new(last), Some(previous.clone()));
        Some(previous)
    }

    /// Drops a whole collection without change events (a deleted CRD's storage).
    pub fn drop_collection(&mut self, id: &ResourceId) {
        self.objects.remove(&storage_key(id));
    }

    pub fn trace_hash(&self) -> String {
        self.trace.finalize().to_hex()[..16].to_string()
    }

    /// Adds something that happened besides a write (a response, a host event) to the trace.
    pub fn note(&mut self, line: &str) {
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
        if let Some(lines) = &mut self.trace_lines {
            lines.push(line.to_string());
        }
    }

    /// Keeps the trace line by line from now on, as well as its digest.
    pub fn keep_trace_lines(&mut self) {
        self.trace_lines.get_or_insert_with(Vec::new);
    }

    /// The trace kept since [`Self::keep_trace_lines`] (empty if it was not asked for).
    pub fn trace_lines(&self) -> &[String] {
        self.trace_lines.as_deref().unwrap_or_default()
    }

    fn record(
        &mut self,
        id: &ResourceId,
        namespace: String,
        kind: ChangeKind,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        self.trace.update(format!("{} {} {}/{} {}\n", self.rv, kind.as_str(), id.group, id.plural, object).as_bytes());
        if let Some(lines) = &mut self.trace_lines {
            let digest = blake3::hash(object.to_string().as_bytes()).to_hex();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let at = if namespace.is_empty() { name.to_string() } else { format!("{namespace}/{name}") };
            lines.push(format!(
                "write {} {} {}/{} {at} {}",
                self.rv,
                kind.as_str(),
                id.group,
                id.plural,
                &digest[..12]
            ));
        }
        if self.log.len() == self.capacity
            && let Some(dropped) = self.log.pop_front()
        {
            self.compacted = dropped.rv;
        }
        self.log.push_back(Arc::new(Change { rv: self.rv, resource: id.clone(), namespace, kind, object, previous }));
    }

    /// Changes after `rv`, or Err(oldest version still available) when some were compacted.
    pub fn changes_since(&self, rv: u64) -> Result<impl Iterator<Item = &Arc<Change>>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        let start = self.log.partition_point(|c| c.rv <= rv);
        Ok(self.log.range(start..))
    }
}

pub fn object_key(object: &Value) -> ObjectKey {
    let meta = &object["metadata"];
    (meta["namespace"].as_str().unwrap_or_default().to_string(), meta["name"].as_str().unwrap_or_default().to_string())
}
