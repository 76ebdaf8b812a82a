//! What the real API server's admission and registry strategies add to built-in kinds: defaults,
//! allocated ClusterIPs, protection finalizers, initial status, and the immutable fields the
//! system relies on.

use std::net::Ipv4Addr;

use base64::Engine;
use serde_json::{Value, json};

use super::errors::{ApiError, invalid};
use super::registry::ResourceType;
use super::schema::Cause;

/// ClusterIPs come from 10.96.0.0/12, handed out in order (10.96.0.1 is the `kubernetes` Service).
#[derive(Clone, Debug)]
pub struct IpAllocator {
    next: u32,
}

const SERVICE_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);

impl Default for IpAllocator {
    fn default() -> Self {
        Self { next: u32::from(SERVICE_RANGE.0) + 10 }
    }
}

fn in_service_range(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - SERVICE_RANGE.1);
    u32::from(ip) & mask == u32::from(SERVICE_RANGE.0)
}

impl IpAllocator {
    fn allocate(&mut self, taken: &dyn Fn(&str) -> bool) -> String {
        loop {
            let ip = Ipv4Addr::from(self.next).to_string();
            self.next += 1;
            if !taken(&ip) {
                return ip;
            }
        }
    }
}

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause { field: field.to_string(), reason, message }
}

/// Defaults and checks on create. `taken` says whether a ClusterIP is in use.
pub fn on_create(
    rt: &ResourceType,
    object: &mut Value,
    ips: &mut IpAllocator,
    taken: &dyn Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    match (rt.id.group.as_str(), rt.id.plural.as_str()) {
        ("", "namespaces") => {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["spec"]["finalizers"] = json!(["kubernetes"]);
            object["status"] = json!({"phase": "Active"});
        }
        ("", "services") => {
            let spec = &mut object["spec"];
            if spec["ports"].as_array().is_none_or(Vec::is_empty) && spec["clusterIP"] != "None" {
                return Err(invalid(rt, &name, &[cause("spec.ports", "FieldValueRequired", "Required value".into())]));
            }
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                if port.get("protocol").is_none() {
                    port["protocol"] = json!("TCP");
                }
                if port.get("targetPort").is_none() {
                    port["targetPort"] = port["port"].clone();
                }
            }
            if spec["type"].is_null() {
                spec["type"] = json!("ClusterIP");
            }
            match spec["clusterIP"].as_str() {
                Some("None") => spec["clusterIPs"] = json!(["None"]),
                Some(ip) if !ip.is_empty() => {
                    let parsed: Option<Ipv4Addr> = ip.parse().ok();
                    if !parsed.is_some_and(in_service_range) || taken(ip) {
                        let message = format!(
                            "Invalid value: [{ip:?}]: failed to allocate IP {ip}: the provided network does not match the current range"
                        );
                        return Err(invalid(rt, &name, &[cause("spec.clusterIPs", "FieldValueInvalid", message)]));
                    }
                    spec["clusterIPs"] = json!([ip]);
                }
                _ => {
                    let ip = ips.allocate(taken);
                    spec["clusterIP"] = json!(ip);
                    spec["clusterIPs"] = json!([ip]);
                }
            }
            fill_defaults(spec, [
                ("sessionAffinity", json!("None")),
                ("internalTrafficPolicy", json!("Cluster")),
                ("ipFamilies", json!(["IPv4"])),
                ("ipFamilyPolicy", json!("SingleStack")),
            ]);
            object["status"] = json!({"loadBalancer": {}});
        }
        ("", "pods") => {
            let spec = &mut object["spec"];
            fill_defaults(spec, [
                ("serviceAccountName", json!("default")),
                ("serviceAccount", json!("default")),
                ("restartPolicy", json!("Always")),
                ("dnsPolicy", json!("ClusterFirst")),
                ("schedulerName", json!("default-scheduler")),
                ("enableServiceLinks", json!(true)),
                ("priority", json!(0)),
                ("securityContext", json!({})),
                ("terminationGracePeriodSeconds", json!(30)),
            ]);
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "persistentvolumeclaims") => {
            add_finalizer(object, "kubernetes.io/pvc-protection");
            if object["spec"].get("volumeMode").is_none() {
                object["spec"]["volumeMode"] = json!("Filesystem");
            }
            object["status"] = json!({"phase": "Pending"});
        }
        ("", "persistentvolumes") => {
            add_finalizer(object, "kubernetes.io/pv-protection");
            if object["spec"].get("persistentVolumeReclaimPolicy").is_none() {
                object["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
            }
            object["status"] = json!({"phase": "Available"});
        }
        ("", "secrets") => {
            merge_string_data(rt, object)?;
            if object.get("type").is_none() {
                object["type"] = json!("Opaque");
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            if object["spec"].get("conversion").is_none() {
                object["spec"]["conversion"] = json!({"strategy": "None"});
            }
            let stored: Vec<Value> = object["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect();
            object["status"] =
                json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": null, "storedVersions": stored});
        }
        ("apps", "statefulsets") => {
            let spec = &mut object["spec"];
            fill_defaults(spec, [
                ("podManagementPolicy", json!("OrderedReady")),
                ("revisionHistoryLimit", json!(10)),
                ("updateStrategy", json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})),
                ("persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"})),
                ("replicas", json!(1)),
            ]);
        }
        ("apps", "replicasets" | "deployments") => {
            if object["spec"].get("replicas").is_none() {
                object["spec"]["replicas"] = json!(1);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Keeps server-assigned values and refuses changes to immutable fields on update.
pub fn on_update(rt: &ResourceType, old: &Value, object: &mut Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    match (rt.id.group.as_str(), rt.id.plural.as_str()) {
        ("", "services") => {
            for key in ["clusterIP", "clusterIPs"] {
                if object["spec"].get(key).is_none_or(Value::is_null) {
                    object["spec"][key] = old["spec"][key].clone();
                }
            }
            if object["spec"]["clusterIPs"] != old["spec"]["clusterIPs"] {
                let message = format!("Invalid value: {}: may not change once set", object["spec"]["clusterIPs"]);
                return Err(invalid(rt, &name, &[cause("spec.clusterIPs[0]", "FieldValueInvalid", message)]));
            }
        }
        ("", "secrets") => {
            merge_string_data(rt, object)?;
            if object.get("type").is_none() {
                object["type"] = old["type"].clone();
            }
            if object["type"] != old["type"] {
                let message = format!("Invalid value: {}: field is immutable", object["type"]);
                return Err(invalid(rt, &name, &[cause("type", "FieldValueInvalid", message)]));
            }
        }
        ("", "configmaps") if old["immutable"] == json!(true) => {
            if object["data"] != old["data"] || object["binaryData"] != old["binaryData"] {
                let message = "Forbidden: field is immutable when `immutable` is set".to_string();
                return Err(invalid(rt, &name, &[cause("data", "FieldValueForbidden", message)]));
            }
        }
        _ => {}
    }
    Ok(())
}

fn fill_defaults<const N: usize>(target: &mut Value, defaults: [(&str, Value); N]) {
    for (key, value) in defaults {
        if target.get(key).is_none() {
            target[key] = value;
        }
    }
}

fn add_finalizer(object: &mut Value, finalizer: &str) {
    let finalizers = &mut object["metadata"]["finalizers"];
    if !finalizers.is_array() {
        *finalizers = json!([]);
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
    }
}

/// `stringData` is written into `data` as base64 and never stored; `data` must be base64.
fn merge_string_data(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let engine = base64::engine::general_purpose::STANDARD;
    for value in object["data"].as_object().into_iter().flatten().map(|(_, v)| v) {
        let text = value.as_str().unwrap_or_default();
        if let Err(e) = engine.decode(text) {
            let at = match e {
                base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                _ => text.len(),
            };
            return Err(super::errors::bad_request(format!(
                "{} in version \"v1\" cannot be handled as a {}: illegal base64 data at input byte {at}",
                rt.kind, rt.kind
            )));
        }
    }
    if let Some(Value::Object(string_data)) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (key, value) in string_data {
            object["data"][key] = json!(engine.encode(value.as_str().unwrap_or_default()));
        }
    }
    Ok(())
}
