//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field is a path of object keys; lists are atomic (owned as a whole), which is what the
//! real server does for lists without `x-kubernetes-list-type: map` and is enough for the
//! system's own writers. Update-operation writers own the fields they changed; appliers own
//! exactly the fields of their last configuration.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

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
pub fn leaves(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out.retain(|p| !server_owned(p));
    out
}

fn collect(value: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cursor = value;
    for key in parents {
        match cursor.get_mut(key) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Value::Object(map) = cursor {
        map.remove(last);
    }
}

/// Deep-merges `config` into `target`: objects key by key, everything else replaced.
fn merge_into(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (key, value) in c {
                match t.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge_into(existing, value),
                    _ => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

/// `fieldsV1` of a set: `{"f:spec": {"f:mountPath": {}}}`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cursor = &mut root;
        for key in path {
            let entry = cursor.entry(format!("f:{key}")).or_insert_with(|| json!({}));
            cursor = match entry {
                Value::Object(map) => map,
                // Only objects are ever inserted here.
                _ => break,
            };
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(fields: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> =
            node.as_object().map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect()).unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (key, child) in children {
            path.push(key[2..].to_string());
            walk(child, path, out);
            path.pop();
        }
    }
    walk(fields, &mut Vec::new(), &mut out);
    out
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
    pub fn record_update(&mut self, owner: Owner, old: Option<&Value>, new: &Value, api_version: &str, time: &str) {
        let new_leaves = leaves(new);
        let changed: FieldSet =
            new_leaves.iter().filter(|p| old.and_then(|o| get(o, p)) != get(new, p)).cloned().collect();
        for (set, _, _) in self.entries.values_mut() {
            set.retain(|p| new_leaves.contains(p) && !changed.contains(p));
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
    pub fn apply(
        &mut self,
        owner: Owner,
        live: Option<&Value>,
        config: &Value,
        force: bool,
        api_version: &str,
        time: &str,
    ) -> Result<Value, Vec<(String, Vec<String>)>> {
        let wanted = leaves(config);
        let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(live) = live {
            for (other, (set, other_version, _)) in &self.entries {
                if *other == owner {
                    continue;
                }
                for path in set.intersection(&wanted) {
                    if get(live, path) != get(config, path) {
                        conflicts
                            .entry(other.describe(other_version))
                            .or_default()
                            .push(format!(".{}", path.join(".")));
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
                set.retain(|p| !wanted.contains(p) || live.and_then(|l| get(l, p)) == get(config, p));
            }
        }
        let mut object = live.cloned().unwrap_or_else(|| json!({}));
        for path in previous.difference(&wanted) {
            let owned_elsewhere = self.entries.iter().any(|(o, (set, _, _))| *o != owner && set.contains(path));
            if !owned_elsewhere {
                remove(&mut object, path);
            }
        }
        merge_into(&mut object, config);
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
