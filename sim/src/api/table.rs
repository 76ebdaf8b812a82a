//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for. Custom resources
//! get their CRD's `additionalPrinterColumns`; built-in kinds get Name and Age.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::registry::ResourceType;

/// Renders an object or a list as a Table at time `now`.
pub fn render(rt: &ResourceType, body: &Value, now: &Timestamp) -> Value {
    let objects: Vec<&Value> = match body["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![body],
    };
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    let custom: Vec<&Value> = rt.printer_columns.iter().collect();
    for column in &custom {
        columns.push(json!({
            "name": column["name"], "type": column["type"], "format": column["format"].as_str().unwrap_or_default(),
            "description": column["description"].as_str().unwrap_or_default(), "priority": column["priority"].as_i64().unwrap_or(0),
        }));
    }
    let has_age = custom.iter().any(|c| c["jsonPath"] == ".metadata.creationTimestamp");
    if !has_age {
        columns.push(
            json!({"name": "Age", "type": "date", "format": "", "description": "Time since creation", "priority": 0}),
        );
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            for column in &custom {
                let value = column["jsonPath"].as_str().map(|path| at(object, path)).unwrap_or(Value::Null);
                cells.push(if column["type"] == "date" { age(&value, now) } else { value });
            }
            if !has_age {
                cells.push(age(&object["metadata"]["creationTimestamp"], now));
            }
            let mut metadata = object["metadata"].clone();
            if let Some(meta) = metadata.as_object_mut() {
                meta.remove("managedFields");
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
        "columnDefinitions": columns, "rows": rows,
    })
}

/// A simple JSONPath (`.status.phase`, `.spec.storage.capacity`); anything fancier is empty.
fn at(object: &Value, path: &str) -> Value {
    path.trim_start_matches('.').split('.').try_fold(object, |v, key| v.get(key)).cloned().unwrap_or(Value::Null)
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl prints ages.
fn age(timestamp: &Value, now: &Timestamp) -> Value {
    let Some(then) = timestamp.as_str().and_then(|t| t.parse::<Timestamp>().ok()) else { return Value::Null };
    let seconds = now.duration_since(then).as_secs().max(0);
    let text = match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    json!(text)
}
