//! Strategic merge patch, as the real server applies it to built-in kinds (`kubectl apply`,
//! `kubectl edit`, `kubectl patch` without `--type`): maps merge key by key and `null` deletes;
//! lists whose Go field carries a `patchMergeKey` merge element by element on that key (a
//! Deployment's containers by `name`, their `volumeMounts` by `mountPath`, a webhook
//! configuration's `webhooks` by `name`), `finalizers` merge as a set, and every other list is
//! replaced whole. The directives kubectl writes are honoured: `$patch: delete` on an element,
//! `$patch: replace` on a map or list, `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`
//! and `$retainKeys`.
//!
//! The merge keys are those of the Go types (`patchMergeKey` struct tags in `k8s.io/api`) for the
//! kinds the simulation serves; a list of a kind not listed here is replaced, which is what the
//! real server does for lists without a merge key.

use serde_json::{Map, Value};

/// The merge key of list `field` whose elements look like `sample` (`ports` is keyed by
/// `containerPort` in a container and by `port` in a Service).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "webhooks"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        "ports" if sample.is_some_and(|s| s.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// Lists of scalars merged as sets rather than replaced.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Applies `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(object), Some(patch)) => merge_map(object, patch),
        _ => *target = strip(patch),
    }
}

fn merge_map(object: &mut Map<String, Value>, patch: &Map<String, Value>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *object = strip_map(patch);
        return;
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                object.remove(key);
            }
            Value::Object(patch_map) => match object.get_mut(key).and_then(Value::as_object_mut) {
                Some(existing) => merge_map(existing, patch_map),
                None => {
                    object.insert(key.clone(), Value::Object(strip_map(patch_map)));
                }
            },
            Value::Array(items) => {
                let merged = merge_list(key, object.get(key), items);
                object.insert(key.clone(), merged);
            }
            other => {
                object.insert(key.clone(), other.clone());
            }
        }
    }
    // Directives that act on the result.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(list), Some(remove)) = (object.get_mut(field).and_then(Value::as_array_mut), value.as_array())
        {
            list.retain(|item| !remove.contains(item));
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(list), Some(order)) = (object.get_mut(field).and_then(Value::as_array_mut), value.as_array())
        {
            set_order(field, list, order);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        object.retain(|key, _| retain.iter().any(|k| k == key));
    }
}

fn merge_list(field: &str, current: Option<&Value>, items: &[Value]) -> Value {
    let current: Vec<Value> = current.and_then(Value::as_array).cloned().unwrap_or_default();
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Value::Array(items.iter().filter(|i| i.get("$patch").is_none()).map(strip).collect());
    }
    if merges_primitives(field) {
        let mut merged = current;
        for item in items {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        return Value::Array(merged);
    }
    let sample = items.iter().chain(&current).find(|i| i.is_object());
    let Some(key) = merge_key(field, sample) else {
        return Value::Array(items.iter().map(strip).collect());
    };
    let mut merged = current;
    for item in items {
        let Some(id) = item.get(key) else {
            merged.push(strip(item));
            continue;
        };
        let position = merged.iter().position(|m| m.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(at), true) => {
                merged.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => apply(&mut merged[at], item),
            (None, false) => merged.push(strip(item)),
        }
    }
    Value::Array(merged)
}

/// Orders `list` as `order` names its elements (by merge key, or by value for scalars); elements
/// the order does not name keep their place after those it does.
fn set_order(field: &str, list: &mut [Value], order: &[Value]) {
    let key = merge_key(field, list.first());
    let rank = |item: &Value| {
        order
            .iter()
            .position(|o| match key {
                Some(key) => o.get(key).is_some() && o.get(key) == item.get(key),
                None => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

/// A patch value without its directives, as stored.
fn strip(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_map(map)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none() || i.as_object().is_some_and(|m| m.len() > 1))
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn strip_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter().filter(|(k, v)| !k.starts_with('$') && !v.is_null()).map(|(k, v)| (k.clone(), strip(v))).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keyed_lists_merge_by_key_and_other_lists_are_replaced() {
        let mut deployment = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                           {"name": "sidecar", "image": "side:1"}],
            "tolerations": [{"key": "a", "operator": "Exists"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}],
            "tolerations": [{"key": "b", "operator": "Exists"}]}}}});
        apply(&mut deployment, &patch);
        let spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"][0],
            json!({"name": "app", "image": "app:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]})
        );
        assert_eq!(spec["containers"][1], json!({"name": "sidecar", "image": "side:1"}), "the other container is kept");
        assert_eq!(spec["tolerations"], json!([{"key": "b", "operator": "Exists"}]), "no merge key: replaced");
    }

    #[test]
    fn a_webhook_list_edited_by_kubectl_apply_keeps_what_the_patch_does_not_name() {
        let mut configuration = json!({"webhooks": [{"name": "pods.example.com", "failurePolicy": "Fail",
            "rules": [{"operations": ["CREATE"]}], "clientConfig": {"caBundle": "Q0E="}}]});
        let patch = json!({"$setElementOrder/webhooks": [{"name": "pods.example.com"}],
            "webhooks": [{"name": "pods.example.com", "timeoutSeconds": 5}]});
        apply(&mut configuration, &patch);
        assert_eq!(
            configuration["webhooks"],
            json!([{"name": "pods.example.com", "failurePolicy": "Fail", "rules": [{"operations": ["CREATE"]}],
                    "clientConfig": {"caBundle": "Q0E="}, "timeoutSeconds": 5}])
        );
    }

    #[test]
    fn directives_delete_replace_order_and_retain() {
        let mut pod = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"volumes": [{"name": "v1", "emptyDir": {}}, {"name": "v2", "emptyDir": {}}],
                     "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}});
        let patch = json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}},
            "spec": {"volumes": [{"name": "v1", "$patch": "delete"}, {"name": "v3", "secret": {"secretName": "s"}}],
                     "$setElementOrder/volumes": [{"name": "v3"}, {"name": "v2"}],
                     "containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"}});
        apply(&mut pod, &patch);
        assert_eq!(pod["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(pod["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "v3", "secret": {"secretName": "s"}}, {"name": "v2", "emptyDir": {}}])
        );
        assert_eq!(
            pod["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(pod["strategy"], json!({"type": "Recreate"}));

        let mut replaced = json!({"data": {"a": "1", "b": "2"}, "items": [1, 2]});
        apply(&mut replaced, &json!({"data": {"$patch": "replace", "c": "3"}, "items": [{"$patch": "replace"}, 3]}));
        assert_eq!(replaced, json!({"data": {"c": "3"}, "items": [3]}));
    }
}
