//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for. Custom resources
//! get their CRD's `additionalPrinterColumns`; the common built-in kinds get the columns the real
//! server prints for them (pods, deployments, replica sets, stateful sets, services, claims,
//! volumes, nodes, namespaces, core Events); any other kind gets Name and Age.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::registry::ResourceType;

/// Renders an object or a list as a Table at time `now`.
pub fn render(rt: &ResourceType, body: &Value, now: &Timestamp) -> Value {
    let objects: Vec<&Value> = match body["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![body],
    };
    if rt.id.group.is_empty() && rt.id.plural == "events" {
        return events(body, &objects, now);
    }
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    let builtin = builtin_columns(rt);
    for (name, kind, _) in &builtin {
        columns.push(json!({"name": name, "type": kind, "format": "", "description": name, "priority": 0}));
    }
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
            cells.extend(builtin.iter().map(|(_, _, cell)| cell(object)));
            for column in &custom {
                let value = column["jsonPath"].as_str().map(|path| at(object, path)).unwrap_or(Value::Null);
                cells.push(if column["type"] == "date" { age(&value, now) } else { value });
            }
            if !has_age {
                cells.push(age(&object["metadata"]["creationTimestamp"], now));
            }
            row(json!(cells), object)
        })
        .collect();
    table(body, columns, rows)
}

/// A row: its cells, and the object's metadata without its managedFields.
fn row(cells: Value, object: &Value) -> Value {
    let mut metadata = object["metadata"].clone();
    if let Some(meta) = metadata.as_object_mut() {
        meta.remove("managedFields");
    }
    json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}})
}

/// The Table of `rows` under `columns`, at the resource version of `body`.
fn table(body: &Value, columns: Vec<Value>, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
        "columnDefinitions": columns, "rows": rows,
    })
}

/// Core Events as the real server prints them (`printEvent`): no Name column first, and the
/// columns of `-o wide` (priority 1) always there, as the server prints wide for kubectl to trim.
fn events(body: &Value, objects: &[&Value], now: &Timestamp) -> Value {
    let column = |name: &str, priority: u8| json!({"name": name, "type": "string", "format": "", "description": name, "priority": priority});
    let columns = vec![
        column("Last Seen", 0),
        column("Type", 0),
        column("Reason", 0),
        column("Object", 0),
        column("Subobject", 1),
        column("Source", 1),
        column("Message", 0),
        column("First Seen", 1),
        column("Count", 1),
        column("Name", 1),
    ];
    let rows: Vec<Value> = objects
        .iter()
        .map(|event| {
            let since = |value: &Value| match age(value, now) {
                Value::Null => json!("<unknown>"),
                text => text,
            };
            let first = match &event["firstTimestamp"] {
                Value::Null => since(&event["eventTime"]),
                value => since(value),
            };
            let (last, count) = match (&event["series"], &event["lastTimestamp"]) {
                (series, _) if series.is_object() => {
                    (since(&series["lastObservedTime"]), series["count"].as_i64().unwrap_or(1))
                }
                (_, Value::Null) => (first.clone(), event["count"].as_i64().filter(|c| *c > 0).unwrap_or(1)),
                (_, value) => (since(value), event["count"].as_i64().filter(|c| *c > 0).unwrap_or(1)),
            };
            let involved = &event["involvedObject"];
            let kind = involved["kind"].as_str().unwrap_or_default().to_lowercase();
            let target = match involved["name"].as_str().filter(|n| !n.is_empty()) {
                Some(name) => format!("{kind}/{name}"),
                None => kind,
            };
            let source = match (event["source"]["component"].as_str(), event["reportingComponent"].as_str()) {
                (Some(component), _) if !component.is_empty() => component.to_string(),
                (_, Some(reporter)) => reporter.to_string(),
                _ => String::new(),
            };
            let cells = json!([
                last,
                text(&event["type"]),
                text(&event["reason"]),
                target,
                text(&involved["fieldPath"]),
                source,
                event["message"].as_str().unwrap_or_default().trim(),
                first,
                count,
                text(&event["metadata"]["name"]),
            ]);
            row(cells, event)
        })
        .collect();
    table(body, columns, rows)
}

type Cell = fn(&Value) -> Value;

/// The columns (after Name, before Age) the real server prints for common built-in kinds.
fn builtin_columns(rt: &ResourceType) -> Vec<(&'static str, &'static str, Cell)> {
    if !rt.printer_columns.is_empty() || rt.custom {
        return Vec::new();
    }
    match (rt.id.group.as_str(), rt.id.plural.as_str()) {
        ("", "pods") => vec![
            ("Ready", "string", |o| {
                let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                json!(format!("{ready}/{total}"))
            }),
            ("Status", "string", |o| {
                let waiting = o["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string));
                let phase = o["status"]["phase"].as_str().unwrap_or("Pending").to_string();
                let deleting = !o["metadata"]["deletionTimestamp"].is_null();
                json!(if deleting { "Terminating".to_string() } else { waiting.unwrap_or(phase) })
            }),
            ("Restarts", "integer", |o| {
                let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
                json!(statuses.iter().filter_map(|c| c["restartCount"].as_u64()).sum::<u64>())
            }),
            ("Node", "string", |o| text(&o["spec"]["nodeName"])),
        ],
        ("apps", "deployments") => vec![
            ("Ready", "string", |o| ratio(&o["status"]["readyReplicas"], &o["spec"]["replicas"])),
            ("Up-to-date", "integer", |o| count(&o["status"]["updatedReplicas"])),
            ("Available", "integer", |o| count(&o["status"]["availableReplicas"])),
        ],
        ("apps", "statefulsets") => {
            vec![("Ready", "string", |o| ratio(&o["status"]["readyReplicas"], &o["spec"]["replicas"]))]
        }
        ("apps", "replicasets") => vec![
            ("Desired", "integer", |o| count(&o["spec"]["replicas"])),
            ("Current", "integer", |o| count(&o["status"]["replicas"])),
            ("Ready", "integer", |o| count(&o["status"]["readyReplicas"])),
        ],
        ("", "services") => vec![
            ("Type", "string", |o| text(&o["spec"]["type"])),
            ("Cluster-IP", "string", |o| text(&o["spec"]["clusterIP"])),
            ("Ports", "string", |o| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                    .collect();
                json!(ports.join(","))
            }),
        ],
        ("storage.k8s.io", "volumeattachments") => vec![
            ("Attacher", "string", |o| text(&o["spec"]["attacher"])),
            ("PV", "string", |o| text(&o["spec"]["source"]["persistentVolumeName"])),
            ("Node", "string", |o| text(&o["spec"]["nodeName"])),
            ("Attached", "boolean", |o| json!(o["status"]["attached"] == true)),
        ],
        ("", "persistentvolumeclaims") => vec![
            ("Status", "string", |o| text(&o["status"]["phase"])),
            ("Volume", "string", |o| text(&o["spec"]["volumeName"])),
            ("Capacity", "string", |o| text(&o["status"]["capacity"]["storage"])),
            ("Access Modes", "string", |o| modes(&o["spec"]["accessModes"])),
            ("StorageClass", "string", |o| text(&o["spec"]["storageClassName"])),
        ],
        ("", "persistentvolumes") => vec![
            ("Capacity", "string", |o| text(&o["spec"]["capacity"]["storage"])),
            ("Access Modes", "string", |o| modes(&o["spec"]["accessModes"])),
            ("Reclaim Policy", "string", |o| text(&o["spec"]["persistentVolumeReclaimPolicy"])),
            ("Status", "string", |o| text(&o["status"]["phase"])),
            ("Claim", "string", |o| {
                let claim = &o["spec"]["claimRef"];
                match (claim["namespace"].as_str(), claim["name"].as_str()) {
                    (Some(ns), Some(name)) => json!(format!("{ns}/{name}")),
                    _ => json!(""),
                }
            }),
        ],
        ("", "nodes") => vec![("Status", "string", |o| {
            let ready = o["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
            json!(if ready.is_some_and(|c| c["status"] == "True") { "Ready" } else { "NotReady" })
        })],
        ("", "namespaces") => vec![("Status", "string", |o| text(&o["status"]["phase"]))],
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> Value {
    json!(value.as_str().unwrap_or_default())
}

fn count(value: &Value) -> Value {
    json!(value.as_u64().unwrap_or(0))
}

fn ratio(ready: &Value, wanted: &Value) -> Value {
    json!(format!("{}/{}", ready.as_u64().unwrap_or(0), wanted.as_u64().unwrap_or(1)))
}

/// Access modes as kubectl abbreviates them.
fn modes(value: &Value) -> Value {
    let short: Vec<&str> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    json!(short.join(","))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Registry;

    #[test]
    fn core_events_print_as_kubectl_get_events_shows_them() {
        let registry = Registry::default();
        let events = registry.find("", "v1", "events").expect("events");
        let event = json!({"metadata": {"name": "http-sv.1"}, "type": "Warning", "reason": "ApplyFailed",
            "involvedObject": {"kind": "SharedVolume", "name": "http-sv"}, "message": " could not apply \n",
            "reportingComponent": "sharedvolume-operator", "eventTime": "2026-01-01T00:01:00.000000Z",
            "firstTimestamp": null, "lastTimestamp": null, "source": {}});
        let now: Timestamp = "2026-01-01T00:03:00Z".parse().expect("time");
        let table = render(events, &event, &now);
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(
            names,
            ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"]
        );
        assert_eq!(
            table["rows"][0]["cells"],
            json!([
                "2m",
                "Warning",
                "ApplyFailed",
                "sharedvolume/http-sv",
                "",
                "sharedvolume-operator",
                "could not apply",
                "2m",
                1,
                "http-sv.1"
            ])
        );
    }

    #[test]
    fn pods_print_readiness_status_restarts_and_node() {
        let registry = Registry::default();
        let pods = registry.find("", "v1", "pods").expect("pods");
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-2", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"ready": true, "restartCount": 2, "state": {"running": {}}},
                {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        });
        let now: Timestamp = "2026-01-01T00:03:00Z".parse().expect("time");
        let table = render(pods, &pod, &now);
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Node", "Age"]);
        assert_eq!(table["rows"][0]["cells"], json!(["web-1", "1/2", "CrashLoopBackOff", 3, "node-2", "3m"]));

        let pvcs = registry.find("", "v1", "persistentvolumeclaims").expect("pvcs");
        let claim = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"], "volumeName": "pv-1", "storageClassName": "standard"},
                           "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        assert_eq!(
            render(pvcs, &claim, &now)["rows"][0]["cells"],
            json!(["data", "Bound", "pv-1", "1Gi", "RWX", "standard", null])
        );
    }
}
