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

    /// The key fields of the list at `path` (item segments included), if it is a map list.
    pub fn of(&self, path: &[String]) -> Option<Vec<String>> {
        match self {
            ListKeys::Schema(schema) => schema.list_map_keys(path),
            ListKeys::BuiltIn => builtin_list_keys(path).map(|keys| keys.iter().map(|k| k.to_string()).collect()),
            ListKeys::None => None,
        }
    }
}

/// The built-in map lists the system and kubectl meet, by field name, where every key field is
/// required (lists keyed by a defaulted field, as container ports by `containerPort` and
/// `protocol`, stay atomic here).
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
        _ => return None,
    })
}

/// Whether a path segment names a map list's item rather than an object key.
fn is_item(segment: &str) -> bool {
    segment.starts_with("k:")
}

/// The segment that names `item` of a map list keyed by `keys`: `k:{"name":"app"}`, its key
/// fields sorted by name; None if the item lacks one.
fn item_segment(item: &Value, keys: &[String]) -> Option<String> {
    let mut fields = Map::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for key in sorted {
        let value = item.get(key).filter(|v| !v.is_null())?;
        fields.insert(key.clone(), value.clone());
    }
    Some(format!("k:{}", Value::Object(fields)))
}

/// The key fields a segment names (`k:{...}`).
fn item_key(segment: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(segment.strip_prefix("k:")?) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(field, value)| item.get(field) == Some(value))
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

/// A built-in kind's struct that is not a pointer in its Go type: present in the empty object
/// the real server compares a create with, so never added and never owned as a map (a pod's
/// `f:spec` has no `.`, a custom resource's has). The common ones only.
fn always_there(path: &[String], keys: ListKeys<'_>) -> bool {
    matches!(keys, ListKeys::BuiltIn)
        && path.last().is_some_and(|field| {
            matches!(
                field.as_str(),
                "spec" | "status" | "template" | "metadata" | "resources" | "strategy" | "updateStrategy"
            )
        })
}

fn collect(value: &Value, path: &mut FieldPath, keys: ListKeys<'_>, maps: bool, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
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
            let Some(key_fields) = keys.of(path) else {
                out.insert(path.clone());
                return;
            };
            for item in items {
                match item_segment(item, &key_fields) {
                    Some(segment) => {
                        path.push(segment);
                        // The item itself (`.` in fieldsV1), and its fields.
                        out.insert(path.clone());
                        collect(item, path, keys, false, out);
                        path.pop();
                    }
                    // An item without its key cannot be named: the list is owned whole.
                    None => {
                        out.insert(path.clone());
                    }
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
    path.iter().try_fold(value, |v, segment| match item_key(segment).filter(|_| is_item(segment)) {
        Some(key) => v.as_array()?.iter().find(|item| item_matches(item, &key)),
        None => v.get(segment),
    })
}

fn get_mut<'a>(value: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    match item_key(segment).filter(|_| is_item(segment)) {
        Some(key) => value.as_array_mut()?.iter_mut().find(|item| item_matches(item, &key)),
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
    match (cursor, item_key(last).filter(|_| is_item(last))) {
        (Value::Array(items), Some(key)) => items.retain(|item| !item_matches(item, &key)),
        (Value::Object(map), None) => {
            map.remove(last);
        }
        _ => {}
    }
}

/// Deep-merges `config` into `target`: objects key by key, map lists item by item, everything
/// else replaced.
fn merge_into(target: &mut Value, config: &Value, path: &mut FieldPath, keys: ListKeys<'_>) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
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
            if rest.is_empty() && (is_item(segment) || holds_more) {
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
        .map(|segment| match item_key(segment).filter(|_| is_item(segment)) {
            Some(key) => {
                let fields: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", fields.join(","))
            }
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
        // A map, or a map list's item, is the updater's if it added it; a value, if it changed it.
        let changed: FieldSet = new_fields
            .iter()
            .filter(|p| match get(new, p) {
                Some(Value::Object(map)) if !map.is_empty() => old.and_then(|o| get(o, p)).is_none(),
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
        let entry = written["metadata"]["managedFields"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["manager"] == "syncer"))
            .cloned()
            .expect("the syncer's entry");
        assert_eq!(
            entry["fieldsV1"],
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
        let fields = |manager: &str| {
            second["metadata"]["managedFields"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["manager"] == manager))
                .map(|e| e["fieldsV1"].clone())
        };
        assert_eq!(
            fields("kubectl-create"),
            Some(json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:b": {".": {}, "f:c": {}}}})),
            "a built-in kind's spec is always there, the map b was added, and a is the editor's now"
        );
        assert_eq!(fields("editor"), Some(json!({"f:spec": {"f:a": {}}})));
    }

    /// Without a map list, a list is one field, owned whole.
    #[test]
    fn a_list_that_is_no_map_is_owned_whole() {
        let set = leaves(&json!({"spec": {"args": ["a", "b"], "containers": [{"name": "c"}]}}), ListKeys::None);
        let paths: Vec<String> = set.iter().map(|p| p.join("/")).collect();
        assert_eq!(paths, ["spec/args", "spec/containers"]);
    }
}
