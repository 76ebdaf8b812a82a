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

/// The defaults the real server's decoder fills in (the `SetDefaults_*` functions of each API
/// group), before the field manager records who owns what: a creator owns these, unlike what
/// admission plugins and the registry add later (a pod's token volume, tolerations and priority,
/// a Service's ClusterIP, status).
pub fn scheme_defaults(rt: &ResourceType, object: &mut Value) {
    let name = object["metadata"]["name"].clone();
    match (rt.id.group.as_str(), rt.id.plural.as_str()) {
        ("", "namespaces") if name.is_string() => {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
        }
        ("", "services") => {
            let spec = &mut object["spec"];
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                fill_defaults(port, [("protocol", json!("TCP")), ("targetPort", port["port"].clone())]);
            }
            fill_defaults(
                spec,
                [
                    ("type", json!("ClusterIP")),
                    ("sessionAffinity", json!("None")),
                    ("internalTrafficPolicy", json!("Cluster")),
                ],
            );
        }
        ("", "pods") => {
            let spec = &mut object["spec"];
            fill_defaults(
                spec,
                [
                    ("restartPolicy", json!("Always")),
                    ("dnsPolicy", json!("ClusterFirst")),
                    ("schedulerName", json!("default-scheduler")),
                    ("enableServiceLinks", json!(true)),
                    ("securityContext", json!({})),
                    ("terminationGracePeriodSeconds", json!(30)),
                ],
            );
            default_containers(spec);
            default_volumes(spec);
        }
        ("", "persistentvolumeclaims") => fill_defaults(&mut object["spec"], [("volumeMode", json!("Filesystem"))]),
        ("", "persistentvolumes") => {
            fill_defaults(&mut object["spec"], [("persistentVolumeReclaimPolicy", json!("Retain"))]);
        }
        ("", "secrets") => fill_defaults(object, [("type", json!("Opaque"))]),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            fill_defaults(&mut object["spec"], [("conversion", json!({"strategy": "None"}))]);
        }
        ("apps", "statefulsets") => {
            let spec = &mut object["spec"];
            default_containers(&mut spec["template"]["spec"]);
            fill_defaults(
                spec,
                [
                    ("podManagementPolicy", json!("OrderedReady")),
                    ("revisionHistoryLimit", json!(10)),
                    ("updateStrategy", json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})),
                    ("persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"})),
                    ("replicas", json!(1)),
                ],
            );
        }
        ("apps", "replicasets" | "deployments") => {
            default_containers(&mut object["spec"]["template"]["spec"]);
            fill_defaults(&mut object["spec"], [("replicas", json!(1))]);
        }
        _ => {}
    }
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
            object["spec"]["finalizers"] = json!(["kubernetes"]);
            object["status"] = json!({"phase": "Active"});
        }
        ("", "services") => {
            let spec = &mut object["spec"];
            if spec["ports"].as_array().is_none_or(Vec::is_empty) && spec["clusterIP"] != "None" {
                return Err(invalid(rt, &name, &[cause("spec.ports", "FieldValueRequired", "Required value".into())]));
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
            fill_defaults(spec, [("ipFamilies", json!(["IPv4"])), ("ipFamilyPolicy", json!("SingleStack"))]);
            object["status"] = json!({"loadBalancer": {}});
        }
        ("", "pods") => {
            let spec = &mut object["spec"];
            fill_defaults(
                spec,
                [
                    // The ServiceAccount plugin's.
                    ("serviceAccountName", json!("default")),
                    ("serviceAccount", json!("default")),
                    // The Priority plugin's, for a pod without a PriorityClass (none is modelled).
                    ("priority", json!(0)),
                    ("preemptionPolicy", json!("PreemptLowerPriority")),
                ],
            );
            default_tolerations(spec);
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "persistentvolumeclaims") => {
            add_finalizer(object, "kubernetes.io/pvc-protection");
            object["status"] = json!({"phase": "Pending"});
        }
        ("", "persistentvolumes") => {
            add_finalizer(object, "kubernetes.io/pv-protection");
            object["status"] = json!({"phase": "Available"});
        }
        ("", "secrets") => {
            merge_string_data(rt, object)?;
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
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
        ("events.k8s.io", "events") => {
            fill_defaults(
                object,
                [
                    ("deprecatedFirstTimestamp", Value::Null),
                    ("deprecatedLastTimestamp", Value::Null),
                    ("deprecatedSource", json!({})),
                ],
            );
        }
        _ => {}
    }
    Ok(())
}

/// The JSON shape of the parts of an object the server and the simulated controllers write into:
/// a value of the wrong type there is refused like the real server's decoder refuses it (400),
/// instead of being indexed into.
pub fn check_shapes(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let mut objects: Vec<&str> = vec!["metadata", "metadata.labels", "metadata.annotations"];
    let mut arrays: Vec<&str> = vec!["metadata.finalizers", "metadata.ownerReferences"];
    let mut arrays_of_objects: Vec<&str> = vec!["metadata.ownerReferences"];
    if !rt.custom {
        objects.extend(["spec", "status", "data", "stringData"]);
    }
    match (rt.id.group.as_str(), rt.id.plural.as_str()) {
        ("", "services") => arrays_of_objects.push("spec.ports"),
        ("", "pods") => {
            arrays_of_objects.extend(["spec.containers", "spec.initContainers", "spec.volumes", "spec.tolerations"])
        }
        ("", "persistentvolumeclaims" | "persistentvolumes") => {
            objects.extend(["spec.resources", "spec.resources.requests", "spec.capacity", "spec.claimRef"]);
            arrays.push("spec.accessModes");
        }
        ("apps", _) => {
            objects.extend([
                "spec.selector",
                "spec.selector.matchLabels",
                "spec.template",
                "spec.template.metadata",
                "spec.template.metadata.labels",
                "spec.template.spec",
            ]);
            arrays_of_objects.extend([
                "spec.template.spec.containers",
                "spec.template.spec.initContainers",
                "spec.volumeClaimTemplates",
            ]);
        }
        ("apiextensions.k8s.io", _) => {
            objects.extend(["spec.names"]);
            arrays_of_objects.push("spec.versions");
        }
        _ => {}
    }
    arrays.extend(arrays_of_objects.iter().copied());
    let at = |path: &str| path.split('.').try_fold(object, |v, key| v.get(key)).filter(|v| !v.is_null());
    let refuse = |path: &str, found: &Value, expected: &str| {
        super::errors::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: json: cannot unmarshal {} into field {path} of type {expected}",
            rt.kind,
            rt.id.version,
            rt.kind,
            super::schema::type_name(found)
        ))
    };
    for path in objects {
        if let Some(found) = at(path).filter(|v| !v.is_object()) {
            return Err(refuse(path, found, "object"));
        }
    }
    for path in arrays {
        if let Some(found) = at(path).filter(|v| !v.is_array()) {
            return Err(refuse(path, found, "array"));
        }
    }
    for path in arrays_of_objects {
        if let Some(item) = at(path).and_then(Value::as_array).and_then(|items| items.iter().find(|i| !i.is_object())) {
            return Err(refuse(path, item, "array of objects"));
        }
    }
    Ok(())
}

/// Field validation of built-in kinds (the subset the system and the recorded transcript meet),
/// on create (`old` None) and update.
pub fn validate(rt: &ResourceType, old: Option<&Value>, object: &Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    match (rt.id.group.as_str(), rt.id.plural.as_str()) {
        ("", "configmaps") => {
            for key in ["data", "binaryData"] {
                for k in object[key].as_object().into_iter().flatten().map(|(k, _)| k) {
                    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
                        causes.push(cause(&format!("{key}[{k}]"), "FieldValueInvalid", format!(
                            "Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                        )));
                    }
                }
            }
        }
        ("", "secrets") => {
            let required: &[&str] = match object["type"].as_str() {
                Some("kubernetes.io/tls") => &["tls.crt", "tls.key"],
                Some("kubernetes.io/ssh-auth") => &["ssh-privatekey"],
                Some("kubernetes.io/dockerconfigjson") => &[".dockerconfigjson"],
                _ => &[],
            };
            for key in required {
                if object["data"].get(*key).is_none() {
                    causes.push(cause(&format!("data[{key}]"), "FieldValueRequired", "Required value".into()));
                }
            }
        }
        ("coordination.k8s.io", "leases") => {
            if let Some(duration) = object["spec"]["leaseDurationSeconds"].as_i64()
                && duration <= 0
            {
                causes.push(cause(
                    "spec.leaseDurationSeconds",
                    "FieldValueInvalid",
                    format!("Invalid value: {duration}: must be greater than 0"),
                ));
            }
        }
        ("apps", "statefulsets" | "replicasets" | "deployments") => {
            if let Some(old) = old.filter(|_| rt.id.plural == "statefulsets") {
                let frozen = |o: &Value| {
                    let mut spec = o["spec"].clone();
                    if let Some(m) = spec.as_object_mut() {
                        for key in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "revisionHistoryLimit",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                        ] {
                            m.remove(key);
                        }
                    }
                    spec
                };
                if frozen(old) != frozen(object) {
                    causes.push(cause("spec", "FieldValueForbidden", "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into()));
                }
            }
            let labels = &object["spec"]["template"]["metadata"]["labels"];
            let selected = object["spec"]["selector"]["matchLabels"]
                .as_object()
                .is_none_or(|m| m.iter().all(|(k, v)| labels[k] == *v));
            if !selected {
                causes.push(cause(
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    format!("Invalid value: {labels}: `selector` does not match template `labels`"),
                ));
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(old) = old
                && old["status"]["phase"] == "Bound"
            {
                let requested = object["spec"]["resources"]["requests"]["storage"].as_str().map(quantity_bytes);
                let capacity = old["status"]["capacity"]["storage"].as_str().map(quantity_bytes);
                if let (Some(requested), Some(capacity)) = (requested, capacity)
                    && requested < capacity
                {
                    causes.push(cause(
                        "spec.resources.requests.storage",
                        "FieldValueForbidden",
                        "Forbidden: field can not be less than status.capacity".into(),
                    ));
                }
                let rest = |o: &Value| {
                    let mut spec = o["spec"].clone();
                    if let Some(m) = spec.as_object_mut() {
                        m.remove("resources");
                        m.remove("volumeAttributesClassName");
                    }
                    spec
                };
                if rest(old) != rest(object) {
                    causes.push(cause("spec", "FieldValueForbidden", "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into()));
                }
            }
        }
        ("events.k8s.io", "events") if old.is_none() => {
            let controller = object["reportingController"].as_str().unwrap_or_default();
            if controller.is_empty() {
                causes.push(cause(
                    "reportingController",
                    "FieldValueInvalid",
                    "Invalid value: \"\": name part must be non-empty".into(),
                ));
                causes.push(cause("reportingController", "FieldValueInvalid", "Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into()));
                causes.push(cause("reportingController", "FieldValueRequired", "Required value".into()));
            }
            let kind = object["type"].as_str().unwrap_or_default();
            if !matches!(kind, "Normal" | "Warning") {
                causes.push(cause(
                    "type",
                    "FieldValueInvalid",
                    format!("Invalid value: \"\": has invalid value: {kind}"),
                ));
            }
        }
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(invalid(rt, name, &causes)) }
}

/// Bytes of a quantity such as `1Gi`, `500M` or `1024`.
pub fn quantity_bytes(quantity: &str) -> u128 {
    let units: [(&str, u128); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u128>().map(|n| n * factor).unwrap_or(0);
        }
    }
    quantity.parse().unwrap_or(0)
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
        ("", "configmaps")
            if old["immutable"] == json!(true)
                && (object["data"] != old["data"] || object["binaryData"] != old["binaryData"]) =>
        {
            let message = "Forbidden: field is immutable when `immutable` is set".to_string();
            return Err(invalid(rt, &name, &[cause("data", "FieldValueForbidden", message)]));
        }
        _ => {}
    }
    Ok(())
}

/// The defaults every container of a pod (or pod template) gets.
/// Where the ServiceAccount admission plugin mounts the token volume.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether a StorageClass says it is the cluster's default (the GA annotation, or the beta one
/// the admission plugin still honours).
pub fn is_default_class(class: &Value) -> bool {
    let annotations = &class["metadata"]["annotations"];
    ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
        .iter()
        .any(|key| annotations[*key] == "true")
}

/// The DefaultTolerationSeconds admission plugin: a pod tolerates a `not-ready` and an
/// `unreachable` node for 300 s, unless it already has a toleration of that taint (or of every
/// taint) with `NoExecute` or any effect.
fn default_tolerations(spec: &mut Value) {
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerated = spec["tolerations"].as_array().is_some_and(|all| {
            all.iter().any(|t| {
                let effect = t["effect"].as_str().unwrap_or_default();
                let every = t["key"].as_str().unwrap_or_default().is_empty() && t["operator"] == "Exists";
                (t["key"] == key || every) && (effect.is_empty() || effect == "NoExecute")
            })
        });
        if !tolerated {
            push(
                &mut spec["tolerations"],
                json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            );
        }
    }
}

/// The ServiceAccount admission plugin on a pod being created (`plugin/pkg/admission/
/// serviceaccount`): unless the pod or its ServiceAccount (`account_automount`) turns automounting
/// off, every init container and container without a mount at the token path gets one of a
/// projected `kube-api-access-<suffix>` volume (a bound token, the cluster CA, the namespace),
/// added after the pod's own volumes. The suffix is drawn from the pod's name here rather than at
/// random, so that the object a webhook is shown and the one stored agree.
pub fn mount_service_account_token(pod: &mut Value, account_automount: Option<bool>) {
    let spec = &pod["spec"];
    let automount = spec["automountServiceAccountToken"].as_bool().or(account_automount).unwrap_or(true);
    if !automount {
        return;
    }
    let existing = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .map(str::to_string);
    let volume_name = existing.clone().unwrap_or_else(|| {
        let meta = &pod["metadata"];
        let key = format!(
            "{}/{}{}",
            meta["namespace"].as_str().unwrap_or_default(),
            meta["name"].as_str().unwrap_or_default(),
            meta["generateName"].as_str().unwrap_or_default()
        );
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let hash = blake3::hash(key.as_bytes());
        let suffix: String =
            hash.as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
        format!("kube-api-access-{suffix}")
    });
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH});
    let mut needed = false;
    for key in ["initContainers", "containers"] {
        // `get_mut`: indexing would add the key, and a pod without init containers would get
        // `initContainers: null`.
        for container in pod["spec"].get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounted = container["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == SERVICE_ACCOUNT_MOUNT_PATH));
            if !mounted {
                push(&mut container["volumeMounts"], mount.clone());
                needed = true;
            }
        }
    }
    if existing.is_none() && needed {
        let mut volume = mount_service_account_token_volume();
        volume["name"] = json!(volume_name);
        push(&mut pod["spec"]["volumes"], volume);
    }
}

/// The token volume the plugin adds, without its name (upstream's `TokenVolumeSource`).
pub fn mount_service_account_token_volume() -> Value {
    json!({"projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

/// Appends to the array at `target`, making it when absent.
fn push(target: &mut Value, item: Value) {
    match target.as_array_mut() {
        Some(items) => items.push(item),
        None => *target = json!([item]),
    }
}

fn default_containers(pod_spec: &mut Value) {
    for key in ["initContainers", "containers"] {
        for container in pod_spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            let image = container["image"].as_str().unwrap_or_default();
            let tag = image.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, tag)| tag);
            let pull = if tag.is_none_or(|t| t == "latest") { "Always" } else { "IfNotPresent" };
            fill_defaults(
                container,
                [
                    ("imagePullPolicy", json!(pull)),
                    ("resources", json!({})),
                    ("terminationMessagePath", json!("/dev/termination-log")),
                    ("terminationMessagePolicy", json!("File")),
                ],
            );
            for port in container.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                fill_defaults(port, [("protocol", json!("TCP"))]);
            }
        }
    }
}

/// The file mode of ConfigMap, Secret, downward API and projected volumes when the pod gives none
/// (0644, as the API's defaulting sets it).
fn default_volumes(pod_spec: &mut Value) {
    for volume in pod_spec.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(source) = volume.get_mut(source).filter(|s| s.is_object()) {
                fill_defaults(source, [("defaultMode", json!(420))]);
            }
        }
    }
}

fn fill_defaults<const N: usize>(target: &mut Value, defaults: [(&str, Value); N]) {
    // A value of another shape is the validation's to refuse; indexing into it would panic.
    if !(target.is_object() || target.is_null()) {
        return;
    }
    for (key, value) in defaults {
        // A null decodes to Go's zero value, which the defaulting functions then fill.
        if target.get(key).is_none_or(Value::is_null) {
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

/// Converts an Event to the shape of the API it is read through: `v1` and `events.k8s.io/v1`
/// share one storage, as on a real server.
pub fn convert_event(object: &Value, to_core: bool) -> Value {
    let is_core = object["apiVersion"] == "v1";
    if is_core == to_core {
        return object.clone();
    }
    let renames: [(&str, &str); 6] = [
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("reportingController", "reportingComponent"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
    ];
    let mut converted = object.clone();
    let Some(map) = converted.as_object_mut() else { return converted };
    for (new_name, core_name) in renames {
        let (from, to) = if to_core { (new_name, core_name) } else { (core_name, new_name) };
        if let Some(value) = map.remove(from) {
            map.insert(to.to_string(), value);
        }
    }
    let (from, to) = if to_core { ("deprecatedCount", "count") } else { ("count", "deprecatedCount") };
    if let Some(value) = map.remove(from) {
        map.insert(to.to_string(), value);
    }
    map.insert("apiVersion".into(), json!(if to_core { "v1" } else { "events.k8s.io/v1" }));
    if to_core {
        for key in ["firstTimestamp", "lastTimestamp"] {
            map.entry(key).or_insert(Value::Null);
        }
        map.entry("source").or_insert(json!({}));
    }
    converted
}
