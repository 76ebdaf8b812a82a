//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field is a path of object keys. A list is atomic (owned as a whole) unless it is a map
//! list: `x-kubernetes-list-type: map` in a custom resource's schema, or one of the built-in
//! lists in [`builtin_list_keys`]. A map list's items are fields of their own, named by their
//! key fields (`k:{"type":"Ready"}`, as in `fieldsV1`): an applier owns the items it applies and
//! their fields, another manager's items stay, and items merge in the order structured-merge-diff
//! gives them (those only in the live list keep their place; shared and new ones follow the
//! applied order). Update-operation writers own the fields they changed (and the items they
//! added); appliers own exactly the fields of their last configuration.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Which lists of a kind are map lists, and their key fields.
#[derive(Clone, Copy)]
pub enum ListKeys<'a> {
    /// A custom resource: its schema says.
    Schema(&'a super::schema::Schema),
    /// A built-in kind: the lists of [`builtin_list_keys`].
    BuiltIn,
    /// Every list atomic.
    None,
}

impl<'a> ListKeys<'a> {
    /// The map lists of a resource type.
    pub fn of_type(rt: &'a super::registry::ResourceType) -> Self {
        match (&rt.schema, rt.custom) {
            (Some(schema), true) => ListKeys::Schema(schema),
            (None, true) => ListKeys::None,
            (_, false) => ListKeys::BuiltIn,
        }
    }

    /// The key fields of the list at `path` (item segments included), if it is a map list; an
    /// empty list of keys for a set, whose items are their own keys.
    pub fn of(&self, path: &[String]) -> Option<Vec<String>> {
        match self {
            ListKeys::Schema(schema) => schema.list_map_keys(path),
            ListKeys::BuiltIn => builtin_list_keys(path).map(|keys| keys.iter().map(|k| k.to_string()).collect()),
            ListKeys::None => None,
        }
    }
}

impl ListKeys<'_> {
    /// Whether the object at `path` is owned and applied whole (`x-kubernetes-map-type:
    /// atomic`; for built-in kinds the label selectors and `nodeSelector`, atomic in their Go
    /// types).
    pub fn map_is_atomic(&self, path: &[String]) -> bool {
        match self {
            ListKeys::Schema(schema) => schema.map_is_atomic(path),
            ListKeys::BuiltIn => path.last().is_some_and(|field| {
                matches!(field.as_str(), "selector" | "nodeSelector" | "namespaceSelector" | "objectSelector")
            }),
            ListKeys::None => false,
        }
    }
}

/// The built-in map lists the system and kubectl meet, by field name (ports by where they are:
/// a container's, keyed by `containerPort` and `protocol`, or a Service's, by `port` and
/// `protocol`), and the sets (`finalizers`, no keys).
fn builtin_list_keys(path: &[String]) -> Option<&'static [&'static str]> {
    let field = path.last()?;
    Some(match field.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "webhooks" => &["name"],
        "volumeMounts" => &["mountPath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "finalizers" if path == ["metadata", "finalizers"] => &[],
        "ports" if path.len() >= 2 && is_item(&path[path.len() - 2]) => &["containerPort", "protocol"],
        "ports" if path == ["spec", "ports"] => &["port", "protocol"],
        _ => return None,
    })
}

/// The value a key field takes when an item leaves it out: the OpenAPI schema's default, which
/// structured-merge-diff uses to name the item (a port without `protocol` is a TCP port, so an
/// applied configuration may leave it out). Only `protocol` has one among the keys above.
fn key_default(field: &str) -> Option<Value> {
    (field == "protocol").then(|| json!("TCP"))
}

/// Whether a path segment names a list's item rather than an object key: a map list's by its
/// keys (`k:{"name":"app"}`), a set's by its value (`v:"a"`).
fn is_item(segment: &str) -> bool {
    segment.starts_with("k:") || segment.starts_with("v:")
}

/// The segment that names `item` of a map list keyed by `keys` (`k:{"name":"app"}`, its key
/// fields sorted by name), or of a set when `keys` is empty (`v:"a"`, scalars only); None if the
/// item cannot be named so.
fn item_segment(item: &Value, keys: &[String]) -> Option<String> {
    if keys.is_empty() {
        return match item {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(format!("v:{item}")),
            _ => None,
        };
    }
    let mut fields = Map::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for key in sorted {
        let value = item.get(key).filter(|v| !v.is_null()).cloned().or_else(|| key_default(key))?;
        fields.insert(key.clone(), value);
    }
    Some(format!("k:{}", Value::Object(fields)))
}

/// Which item a segment names.
enum ItemId {
    /// A map list's item, by its key fields.
    Keys(Map<String, Value>),
    /// A set's item, by its value.
    Value(Value),
}

fn item_id(segment: &str) -> Option<ItemId> {
    if let Some(keys) = segment.strip_prefix("k:") {
        return match serde_json::from_str(keys) {
            Ok(Value::Object(fields)) => Some(ItemId::Keys(fields)),
            _ => None,
        };
    }
    serde_json::from_str(segment.strip_prefix("v:")?).ok().map(ItemId::Value)
}

fn item_matches(item: &Value, id: &ItemId) -> bool {
    match id {
        ItemId::Keys(key) => key.iter().all(|(field, value)| match item.get(field).filter(|v| !v.is_null()) {
            Some(found) => found == value,
            None => key_default(field).as_ref() == Some(value),
        }),
        ItemId::Value(value) => item == value,
    }
}

/// Parts of an object that belong to the server, never owned by a manager.
fn server_owned(path: &[String]) -> bool {
    match path {
        [top] => matches!(top.as_str(), "apiVersion" | "kind"),
        [meta, field, ..] if meta == "metadata" => matches!(
            field.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "managedFields"
                | "selfLink"
        ),
        _ => false,
    }
}

/// Every leaf of `value` (scalars, lists, empty objects) as a path.
pub fn leaves(value: &Value, keys: ListKeys<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), keys, false, &mut out);
    out.retain(|p| !server_owned(p));
    out
}

/// The leaves and the maps that hold them (`metadata` itself is the server's): what an
/// Update-operation writer can own, a map by adding it (`.` in fieldsV1).
fn fields_and_maps(value: &Value, keys: ListKeys<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), keys, true, &mut out);
    out.retain(|p| !server_owned(p) && p.as_slice() != ["metadata"] && !always_there(p, keys));
    out
}

/// A built-in kind's field that is in the empty object the real server compares a create with:
/// a struct that is not a pointer in its Go type, or a list without `omitempty` (a pod's
/// `containers`), reached through such fields only. It is never added, so never owned as a map
/// or list (a pod's `f:spec` and `f:containers` have no `.`, a custom resource's `f:spec` has;
/// a container's `f:resources` is owned, since the container is new). The common ones only.
fn always_there(path: &[String], keys: ListKeys<'_>) -> bool {
    matches!(keys, ListKeys::BuiltIn)
        && path.iter().all(|field| {
            matches!(
                field.as_str(),
                "spec"
                    | "status"
                    | "template"
                    | "metadata"
                    | "resources"
                    | "strategy"
                    | "updateStrategy"
                    | "containers"
            )
        })
}

/// Whether the list at `path` of `value` is a map list whose items all carry their keys (owned
/// item by item, the list itself by whoever added it); otherwise a list is a value, owned whole.
fn is_keyed_list(value: &Value, path: &[String], keys: ListKeys<'_>) -> bool {
    match (value, keys.of(path)) {
        (Value::Array(items), Some(key_fields)) => items.iter().all(|item| item_segment(item, &key_fields).is_some()),
        _ => false,
    }
}

fn collect(value: &Value, path: &mut FieldPath, keys: ListKeys<'_>, maps: bool, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() && !keys.map_is_atomic(path) => {
            if maps && !path.is_empty() {
                out.insert(path.clone());
            }
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, keys, maps, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() && !path.is_empty() => {
            let Some(key_fields) = keys.of(path).filter(|_| is_keyed_list(value, path, keys)) else {
                // An atomic list, or an item without its key, which cannot be named: the list is
                // owned whole.
                out.insert(path.clone());
                return;
            };
            if maps {
                out.insert(path.clone());
            }
            for item in items {
                if let Some(segment) = item_segment(item, &key_fields) {
                    path.push(segment);
                    // The item itself (`.` in fieldsV1), and its fields.
                    out.insert(path.clone());
                    collect(item, path, keys, maps, out);
                    path.pop();
                }
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, segment| match item_id(segment) {
        Some(id) => v.as_array()?.iter().find(|item| item_matches(item, &id)),
        None => v.get(segment),
    })
}

fn get_mut<'a>(value: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    match item_id(segment) {
        Some(id) => value.as_array_mut()?.iter_mut().find(|item| item_matches(item, &id)),
        None => value.get_mut(segment),
    }
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cursor = value;
    for segment in parents {
        match get_mut(cursor, segment) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    match (cursor, item_id(last)) {
        (Value::Array(items), Some(id)) => items.retain(|item| !item_matches(item, &id)),
        (Value::Object(map), None) => {
            map.remove(last);
        }
        _ => {}
    }
}

/// Deep-merges `config` into `target`: objects key by key (an atomic one is replaced), map lists
/// item by item, sets value by value, everything else replaced.
fn merge_into(target: &mut Value, config: &Value, path: &mut FieldPath, keys: ListKeys<'_>) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) if !keys.map_is_atomic(path) => {
            for (key, value) in c {
                path.push(key.clone());
                match t.get_mut(key) {
                    Some(existing)
                        if (existing.is_object() && value.is_object()) || (existing.is_array() && value.is_array()) =>
                    {
                        merge_into(existing, value, path, keys)
                    }
                    _ => {
                        t.insert(key.clone(), value.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(live), Value::Array(applied)) => {
            // A list that is no map, or an item without its key: the applied list replaces it.
            let merged = keys.of(path).and_then(|key_fields| merge_list(live, applied, &key_fields, path, keys));
            *live = merged.unwrap_or_else(|| applied.clone());
        }
        (target, config) => *target = config.clone(),
    }
}

/// Merges a map list as structured-merge-diff orders it: walking both lists, an item only in
/// the live list keeps its place, items in both follow the applied order (a live one is
/// skipped until the applied list reaches it), and new items come where the applied list has
/// them. Items in both are merged field by field.
fn merge_list(
    live: &[Value],
    applied: &[Value],
    key_fields: &[String],
    path: &mut FieldPath,
    keys: ListKeys<'_>,
) -> Option<Vec<Value>> {
    let live_keys: Vec<String> = live.iter().map(|i| item_segment(i, key_fields)).collect::<Option<_>>()?;
    let applied_keys: Vec<String> = applied.iter().map(|i| item_segment(i, key_fields)).collect::<Option<_>>()?;
    let in_live: BTreeSet<&String> = live_keys.iter().collect();
    let in_applied: BTreeSet<&String> = applied_keys.iter().collect();
    let mut shared = applied_keys.iter().filter(|k| in_live.contains(k));
    let mut next_shared = shared.next();
    let mut merged_applied: BTreeSet<&String> = BTreeSet::new();
    let mut out = Vec::with_capacity(live.len().max(applied.len()));
    let merged = |l: Option<&Value>, a: &Value, segment: &String, path: &mut FieldPath| {
        let mut item = l.cloned().unwrap_or_else(|| json!({}));
        path.push(segment.clone());
        merge_into(&mut item, a, path, keys);
        path.pop();
        item
    };
    let live_item = |segment: &String| live_keys.iter().position(|k| k == segment).map(|i| &live[i]);
    let (mut l, mut a) = (0, 0);
    while l < live.len() || a < applied.len() {
        if l < live.len() && a < applied.len() {
            if live_keys[l] == applied_keys[a] {
                out.push(merged(Some(&live[l]), &applied[a], &applied_keys[a], path));
                merged_applied.insert(&applied_keys[a]);
                (l, a) = (l + 1, a + 1);
                next_shared = shared.next();
                continue;
            }
            // A shared item the applied order wants later: it comes when the applied list does.
            if in_applied.contains(&live_keys[l]) && next_shared.is_some_and(|n| *n != live_keys[l]) {
                l += 1;
                continue;
            }
        }
        if l < live.len() {
            if !in_applied.contains(&live_keys[l]) {
                out.push(live[l].clone());
                l += 1;
                continue;
            }
            if merged_applied.contains(&live_keys[l]) {
                l += 1;
            }
        }
        if a < applied.len() {
            let segment = &applied_keys[a];
            merged_applied.insert(segment);
            out.push(merged(live_item(segment), &applied[a], segment, path));
            a += 1;
            if next_shared == Some(segment) {
                next_shared = shared.next();
            }
        }
    }
    Some(out)
}

/// `fieldsV1` of a set: `{"f:spec": {"f:mountPath": {}}}`; a map list's item is
/// `"k:{\"type\":\"Ready\"}": {".": {}, ...}`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String], holds_more: bool) {
        let Some((segment, rest)) = path.split_first() else { return };
        let name = if is_item(segment) { segment.clone() } else { format!("f:{segment}") };
        // Only objects are ever inserted here.
        if let Value::Object(child) = node.entry(name).or_insert_with(|| json!({})) {
            // A map list's item is owned as an item (`.`); a set's value is a leaf.
            if rest.is_empty() && (segment.starts_with("k:") || holds_more) {
                child.insert(".".into(), json!({}));
            }
            insert(child, rest, holds_more);
        }
    }
    let mut root = Map::new();
    for path in set {
        // A field owned itself and through fields in it (a map an updater added): `.`. The set
        // is ordered, so such fields come right after it.
        let holds_more = set.range(path.clone()..).nth(1).is_some_and(|next| next.starts_with(path));
        insert(&mut root, path, holds_more);
    }
    Value::Object(root)
}

pub fn from_fields_v1(fields: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let map = node.as_object();
        if map.is_some_and(|m| m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        let children: Vec<(String, &Value)> = map
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| match k.strip_prefix("f:") {
                Some(field) => Some((field.to_string(), v)),
                None if is_item(k) => Some((k.clone(), v)),
                None => None,
            })
            .collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (segment, child) in children {
            path.push(segment);
            walk(child, path, out);
            path.pop();
        }
    }
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// A path as the real server prints it in a conflict: `.status.conditions[type="Ready"].status`.
fn describe_path(path: &[String]) -> String {
    path.iter()
        .map(|segment| match item_id(segment) {
            Some(ItemId::Keys(key)) => {
                let fields: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", fields.join(","))
            }
            Some(ItemId::Value(value)) => format!("[={value}]"),
            None => format!(".{segment}"),
        })
        .collect()
}

/// One `managedFields` entry, identified by manager, operation and subresource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub manager: String,
    pub apply: bool,
    pub subresource: Option<String>,
}

impl Owner {
    fn describe(&self, api_version: &str) -> String {
        match (&self.subresource, self.apply) {
            (_, true) => format!("{:?}", self.manager),
            (Some(sub), false) => format!("{:?} with subresource {sub:?} using {api_version}", self.manager),
            (None, false) => format!("{:?} using {api_version}", self.manager),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Ownership {
    entries: BTreeMap<Owner, (FieldSet, String, String)>,
}

impl Ownership {
    pub fn read(object: &Value) -> Self {
        let mut entries = BTreeMap::new();
        for entry in object["metadata"]["managedFields"].as_array().into_iter().flatten() {
            let owner = Owner {
                manager: entry["manager"].as_str().unwrap_or_default().to_string(),
                apply: entry["operation"].as_str() == Some("Apply"),
                subresource: entry["subresource"].as_str().map(String::from),
            };
            let api_version = entry["apiVersion"].as_str().unwrap_or_default().to_string();
            let time = entry["time"].as_str().unwrap_or_default().to_string();
            entries.insert(owner, (from_fields_v1(&entry["fieldsV1"]), api_version, time));
        }
        Self { entries }
    }

    pub fn write(&self, object: &mut Value) {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .filter(|(_, (set, _, _))| !set.is_empty())
            .map(|(owner, (set, api_version, time))| {
                let mut entry = json!({
                    "manager": owner.manager,
                    "operation": if owner.apply { "Apply" } else { "Update" },
                    "apiVersion": api_version,
                    "time": time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": to_fields_v1(set),
                });
                if let Some(sub) = &owner.subresource {
                    entry["subresource"] = json!(sub);
                }
                entry
            })
            .collect();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            if entries.is_empty() {
                meta.remove("managedFields");
            } else {
                meta.insert("managedFields".into(), Value::Array(entries));
            }
        }
    }

    /// After an Update-operation write from `owner`: it owns what changed; removed fields are
    /// owned by nobody.
    pub fn record_update(
        &mut self,
        owner: Owner,
        old: Option<&Value>,
        new: &Value,
        keys: ListKeys<'_>,
        api_version: &str,
        time: &str,
    ) {
        let new_fields = fields_and_maps(new, keys);
        // A map, a map list or its item is the updater's if it added it; a value, if it changed it.
        let changed: FieldSet = new_fields
            .iter()
            .filter(|p| match get(new, p) {
                Some(Value::Object(map)) if !map.is_empty() && !keys.map_is_atomic(p) => {
                    old.and_then(|o| get(o, p)).is_none()
                }
                Some(list @ Value::Array(items)) if !items.is_empty() && is_keyed_list(list, p, keys) => {
                    old.and_then(|o| get(o, p)).is_none()
                }
                value => old.and_then(|o| get(o, p)) != value,
            })
            .cloned()
            .collect();
        for (set, _, _) in self.entries.values_mut() {
            set.retain(|p| new_fields.contains(p) && !changed.contains(p));
        }
        if !changed.is_empty() {
            let entry = self.entries.entry(owner).or_insert_with(|| (FieldSet::new(), String::new(), String::new()));
            entry.0.extend(changed);
            entry.1 = api_version.to_string();
            entry.2 = time.to_string();
        }
    }

    /// Server-side apply of `config` by `owner` onto `live` (None: a create). Returns the new
    /// object, or the conflicts as `(owner description, paths)`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        owner: Owner,
        live: Option<&Value>,
        config: &Value,
        force: bool,
        keys: ListKeys<'_>,
        api_version: &str,
        time: &str,
    ) -> Result<Value, Vec<(String, Vec<String>)>> {
        let wanted = leaves(config, keys);
        // Owning a map list's item is shared: only values conflict.
        let valued = |path: &&FieldPath| !path.last().is_some_and(|s| is_item(s));
        let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(live) = live {
            for (other, (set, other_version, _)) in &self.entries {
                if *other == owner {
                    continue;
                }
                for path in set.intersection(&wanted).filter(valued) {
                    if get(live, path) != get(config, path) {
                        conflicts.entry(other.describe(other_version)).or_default().push(describe_path(path));
                    }
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts.into_iter().collect());
        }
        let previous = self.entries.get(&owner).map(|(set, _, _)| set.clone()).unwrap_or_default();
        for (other, (set, _, _)) in self.entries.iter_mut() {
            if *other != owner && force {
                set.retain(|p| !valued(&p) || !wanted.contains(p) || live.and_then(|l| get(l, p)) == get(config, p));
            }
        }
        let mut object = live.cloned().unwrap_or_else(|| json!({}));
        // What this applier no longer applies goes, unless another manager owns it or, for a
        // map list's item, something in it.
        for path in previous.difference(&wanted) {
            let owned_elsewhere =
                self.entries.iter().any(|(o, (set, _, _))| *o != owner && set.iter().any(|p| p.starts_with(path)));
            if !owned_elsewhere {
                remove(&mut object, path);
            }
        }
        merge_into(&mut object, config, &mut Vec::new(), keys);
        self.entries.insert(owner, (wanted, api_version.to_string(), time.to_string()));
        Ok(object)
    }
}

/// The real server's conflict message.
pub fn conflict_message(conflicts: &[(String, Vec<String>)]) -> String {
    let total: usize = conflicts.iter().map(|(_, paths)| paths.len()).sum();
    if let [(owner, paths)] = conflicts
        && let [path] = paths.as_slice()
    {
        return format!("Apply failed with 1 conflict: conflict with {owner}: {path}");
    }
    let body: Vec<String> = conflicts
        .iter()
        .map(|(owner, paths)| {
            let lines: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
            format!("conflicts with {owner}:\n{}", lines.join("\n"))
        })
        .collect();
    format!("Apply failed with {total} conflicts: {}", body.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applier(name: &str) -> Owner {
        Owner { manager: name.into(), apply: true, subresource: None }
    }

    fn apply(ownership: &mut Ownership, who: &str, live: &Value, config: Value) -> Value {
        ownership.apply(applier(who), Some(live), &config, false, ListKeys::BuiltIn, "v1", "t").expect("no conflict")
    }

    fn conditions(object: &Value) -> Vec<(String, String)> {
        object["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["type"].as_str().unwrap_or("").into(), c["status"].as_str().unwrap_or("").into()))
            .collect()
    }

    /// The `fieldsV1` of `manager`'s entry in `object`'s written managedFields.
    fn fields_of(object: &Value, manager: &str) -> Option<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["manager"] == manager))
            .map(|e| e["fieldsV1"].clone())
    }

    fn condition(kind: &str, status: &str) -> Value {
        json!({"type": kind, "status": status})
    }

    /// Two appliers of one map list own an item each: neither removes the other's, a new value
    /// of the other's item conflicts, and an item its applier stops sending goes.
    #[test]
    fn appliers_of_a_map_list_own_its_items_apart() {
        let mut ownership = Ownership::default();
        let live = json!({"metadata": {"name": "volume"}, "status": {}});
        let live =
            apply(&mut ownership, "operator", &live, json!({"status": {"conditions": [condition("Ready", "True")]}}));
        let live =
            apply(&mut ownership, "syncer", &live, json!({"status": {"conditions": [condition("Synced", "True")]}}));
        assert_eq!(conditions(&live), [("Ready".into(), "True".into()), ("Synced".into(), "True".into())]);

        let mut written = live.clone();
        ownership.write(&mut written);
        assert_eq!(
            fields_of(&written, "syncer").expect("the syncer's entry"),
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Synced\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        assert_eq!(Ownership::read(&written).entries, ownership.entries, "fieldsV1 reads back");

        let refused = ownership.apply(
            applier("syncer"),
            Some(&live),
            &json!({"status": {"conditions": [condition("Synced", "True"), condition("Ready", "False")]}}),
            false,
            ListKeys::BuiltIn,
            "v1",
            "t",
        );
        let conflicts = refused.expect_err("the operator's condition");
        assert_eq!(
            conflicts,
            [("\"operator\"".to_string(), vec![".status.conditions[type=\"Ready\"].status".to_string()])]
        );

        let live = apply(
            &mut ownership,
            "operator",
            &live,
            json!({"status": {"conditions": [condition("Degraded", "False")]}}),
        );
        assert_eq!(
            conditions(&live),
            [("Synced".into(), "True".into()), ("Degraded".into(), "False".into())],
            "the operator's Ready went, the syncer's Synced stayed"
        );
    }

    /// The merged order is structured-merge-diff's: a live-only item keeps its place, shared
    /// items follow the applied order, new ones come where the applied list has them.
    #[test]
    fn a_map_list_merges_in_the_order_structured_merge_diff_gives() {
        let mut ownership = Ownership::default();
        let names = |object: &Value| -> Vec<String> {
            object["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let containers = |list: &[&str]| json!({"spec": {"containers": list.iter().map(|n| json!({"name": n, "image": "i"})).collect::<Vec<_>>()}});
        let live = apply(&mut ownership, "other", &json!({}), containers(&["x"]));
        let live = apply(&mut ownership, "me", &live, containers(&["a", "b"]));
        assert_eq!(names(&live), ["x", "a", "b"]);
        let live = apply(&mut ownership, "me", &live, containers(&["b", "a", "new"]));
        assert_eq!(names(&live), ["x", "b", "a", "new"]);
        let live = apply(&mut ownership, "me", &live, containers(&["new"]));
        assert_eq!(names(&live), ["x", "new"], "what it stopped applying went; the other's stayed");
        // A shared item is held back until the applied order reaches it, so a live-only item
        // before it keeps its place ahead of the shared ones.
        let live = apply(&mut Ownership::default(), "me", &containers(&["a", "y", "b"]), containers(&["b", "a"]));
        assert_eq!(names(&live), ["y", "b", "a"]);
    }

    /// An Update-operation writer owns the maps it added (`.`) besides the values it changed,
    /// as the real server records it; a later writer of one value owns that value only.
    #[test]
    fn an_updater_owns_the_maps_it_added() {
        let mut ownership = Ownership::default();
        let updater = |name: &str| Owner { manager: name.into(), apply: false, subresource: None };
        let first = json!({"metadata": {"name": "v", "labels": {"app": "x"}}, "spec": {"a": 1, "b": {"c": 2}}});
        ownership.record_update(updater("kubectl-create"), None, &first, ListKeys::BuiltIn, "v1", "t");
        let mut second = first.clone();
        second["spec"]["a"] = json!(3);
        ownership.record_update(updater("editor"), Some(&first), &second, ListKeys::BuiltIn, "v1", "t");
        ownership.write(&mut second);
        let fields = |manager: &str| fields_of(&second, manager);
        assert_eq!(
            fields("kubectl-create"),
            Some(json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:b": {".": {}, "f:c": {}}}})),
            "a built-in kind's spec is always there, the map b was added, and a is the editor's now"
        );
        assert_eq!(fields("editor"), Some(json!({"f:spec": {"f:a": {}}})));
    }

    /// A creator owns the map lists it added (`.`) and the maps inside their items, but not a
    /// list that is in every empty object of its kind (a pod's containers); a later writer that
    /// adds an item owns that item only.
    #[test]
    fn an_updater_owns_the_map_lists_it_added() {
        let updater = |name: &str| Owner { manager: name.into(), apply: false, subresource: None };
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "app", "resources": {}, "securityContext": {"runAsUser": 1},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }});
        let mut ownership = Ownership::default();
        ownership.record_update(updater("create"), None, &pod, ListKeys::BuiltIn, "v1", "t");
        let mut edited = pod.clone();
        edited["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}, {"name": "more", "emptyDir": {}}]);
        ownership.record_update(updater("edit"), Some(&pod), &edited, ListKeys::BuiltIn, "v1", "t");
        ownership.write(&mut edited);
        let fields = |manager: &str| fields_of(&edited, manager);
        assert_eq!(
            fields("create"),
            Some(json!({"f:spec": {
                "f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:resources": {},
                    "f:securityContext": {".": {}, "f:runAsUser": {}},
                    "f:volumeMounts": {".": {}, "k:{\"mountPath\":\"/data\"}": {".": {}, "f:mountPath": {}, "f:name": {}}}}},
                "f:volumes": {".": {}, "k:{\"name\":\"data\"}": {".": {}, "f:emptyDir": {}, "f:name": {}}},
            }}))
        );
        assert_eq!(
            fields("edit"),
            Some(
                json!({"f:spec": {"f:volumes": {"k:{\"name\":\"more\"}": {".": {}, "f:emptyDir": {}, "f:name": {}}}}})
            )
        );
    }

    /// Ports are keyed by port and protocol; an applied port without a protocol is the TCP one,
    /// as the schema's default makes it.
    #[test]
    fn ports_are_keyed_by_port_and_protocol_which_defaults_to_tcp() {
        let service = |ports: Value| json!({"spec": {"ports": ports}});
        let mut ownership = Ownership::default();
        let live = apply(
            &mut ownership,
            "one",
            &json!({}),
            service(json!([{"port": 53, "protocol": "UDP"}, {"port": 80, "protocol": "TCP", "name": "http"}])),
        );
        let live = apply(&mut ownership, "two", &live, service(json!([{"port": 80, "targetPort": 8080}])));
        assert_eq!(
            live["spec"]["ports"],
            json!([{"port": 53, "protocol": "UDP"}, {"port": 80, "protocol": "TCP", "name": "http", "targetPort": 8080}]),
            "the second applier's port 80 is the first's TCP port 80, merged"
        );
        let refused = ownership.apply(
            applier("two"),
            Some(&live),
            &service(json!([{"port": 80, "name": "web"}])),
            false,
            ListKeys::BuiltIn,
            "v1",
            "t",
        );
        assert_eq!(
            refused.expect_err("the first applier's name"),
            [("\"one\"".to_string(), vec![".spec.ports[port=80,protocol=\"TCP\"].name".to_string()])]
        );
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]}]}});
        let paths: Vec<String> = leaves(&pod, ListKeys::BuiltIn).iter().map(|p| p.join("/")).collect();
        assert!(
            paths.contains(
                &"spec/containers/k:{\"name\":\"c\"}/ports/k:{\"containerPort\":80,\"protocol\":\"UDP\"}/protocol"
                    .to_string()
            ),
            "{paths:#?}"
        );
    }

    /// A set's values are owned one by one (`v:"..."`, no `.`), so two appliers keep each
    /// other's finalizers and one that stops applying its own removes only that one.
    #[test]
    fn a_set_merges_value_by_value() {
        let mut ownership = Ownership::default();
        let named = json!({"metadata": {"name": "x"}});
        let finalizers = |list: Value| json!({"metadata": {"finalizers": list}});
        let live = apply(&mut ownership, "a", &named, finalizers(json!(["a.example/f"])));
        let live = apply(&mut ownership, "b", &live, finalizers(json!(["b.example/f"])));
        assert_eq!(live["metadata"]["finalizers"], json!(["a.example/f", "b.example/f"]));
        let mut live = apply(&mut ownership, "a", &live, json!({"metadata": {"labels": {"k": "v"}}}));
        assert_eq!(live["metadata"]["finalizers"], json!(["b.example/f"]), "a's went, b's stayed");
        ownership.write(&mut live);
        assert_eq!(fields_of(&live, "b"), Some(json!({"f:metadata": {"f:finalizers": {"v:\"b.example/f\"": {}}}})));
        assert_eq!(Ownership::read(&live).entries, ownership.entries, "fieldsV1 reads back");
    }

    /// An atomic map (a Service's selector) is one value: another applier's different selector
    /// conflicts as a whole, and a new one replaces it rather than merging.
    #[test]
    fn an_atomic_map_is_one_value() {
        let mut ownership = Ownership::default();
        let selector = |labels: Value| json!({"spec": {"selector": labels}});
        let live = apply(&mut ownership, "a", &json!({}), selector(json!({"app": "x", "tier": "web"})));
        let refused = ownership.apply(
            applier("b"),
            Some(&live),
            &selector(json!({"app": "x"})),
            false,
            ListKeys::BuiltIn,
            "v1",
            "t",
        );
        assert_eq!(refused.expect_err("a's selector"), [("\"a\"".to_string(), vec![".spec.selector".to_string()])]);
        let live = apply(&mut ownership, "a", &live, selector(json!({"app": "y"})));
        assert_eq!(live["spec"]["selector"], json!({"app": "y"}), "replaced, not merged");
    }

    /// A custom resource's schema says the same: `x-kubernetes-list-type: set` merges by value,
    /// `x-kubernetes-map-type: atomic` is one value, a list of no type is atomic.
    #[test]
    fn a_custom_resource_schema_names_its_sets_and_atomic_maps() {
        let schema = super::super::schema::Schema::new(&json!({"type": "object", "properties": {"spec": {
        "type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "args": {"type": "array", "items": {"type": "string"}},
            "target": {"type": "object", "x-kubernetes-map-type": "atomic",
                       "properties": {"host": {"type": "string"}, "port": {"type": "integer"}}},
        }}}}));
        let keys = ListKeys::Schema(&schema);
        let object = json!({"spec": {"tags": ["a", "b"], "args": ["x"], "target": {"host": "h", "port": 1}}});
        let paths: Vec<String> = leaves(&object, keys).iter().map(|p| p.join("/")).collect();
        assert_eq!(paths, ["spec/args", "spec/tags/v:\"a\"", "spec/tags/v:\"b\"", "spec/target"]);
        let mut ownership = Ownership::default();
        let live = ownership
            .apply(
                applier("other"),
                Some(&object),
                &json!({"spec": {"tags": ["c"], "target": {"host": "g"}}}),
                true,
                keys,
                "v1",
                "t",
            )
            .expect("forced");
        assert_eq!(live["spec"]["tags"], json!(["a", "b", "c"]));
        assert_eq!(live["spec"]["target"], json!({"host": "g"}));
    }

    /// Without a map list, a list is one field, owned whole.
    #[test]
    fn a_list_that_is_no_map_is_owned_whole() {
        let set = leaves(&json!({"spec": {"args": ["a", "b"], "containers": [{"name": "c"}]}}), ListKeys::None);
        let paths: Vec<String> = set.iter().map(|p| p.join("/")).collect();
        assert_eq!(paths, ["spec/args", "spec/containers"]);
    }
}
