//! The install as `kubectl apply -k` renders it: `deploy/` (the base) and every overlay, each
//! object checked against the Kubernetes schema of its kind (the k8s-openapi types; a field the
//! type does not know is lost on the way through it, and reported), every workload hardened as the
//! docs promise, and the RBAC the simulation enforces (read from the raw manifests) equal to the
//! RBAC the render installs.

use crate::common;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace")
}

/// The documents `kubectl kustomize DIR` renders, or None (with the reason printed) without
/// kubectl.
fn render(dir: &str) -> Option<Vec<Value>> {
    let output = match std::process::Command::new("kubectl").arg("kustomize").arg(repo().join(dir)).output() {
        Ok(output) => output,
        Err(e) => {
            common::skip(&format!("kubectl is not installed ({e}): the kustomize render is not checked"));
            return None;
        }
    };
    assert!(output.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("the render is YAML");
    Some(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `value` with the empty maps and lists and the nulls taken out: a typed round trip drops
/// those, and they carry no meaning the API server keeps.
fn meaningful(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), meaningful(v)))
                .filter(|(_, v)| !v.is_null() && v != &Value::Array(vec![]))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(meaningful).collect()),
        other => other.clone(),
    }
}

/// The paths of `original` that are not in `round_tripped`.
fn lost(original: &Value, round_tripped: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => lost(value, other, &here, out),
                    None if value == &Value::Object(Default::default()) => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                lost(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("{path} ({a} became {b})")),
        _ => {}
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Vec<String>, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    lost(&meaningful(doc), &meaningful(&back), "", &mut out);
    Ok(out)
}

/// The fields of `doc` its kind's schema does not have, or why it does not parse as its kind.
fn schema_problems(doc: &Value) -> Result<Vec<String>, String> {
    use k8s_openapi::api::admissionregistration::v1 as admission;
    use k8s_openapi::api::{apps, core, networking, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    match (doc["apiVersion"].as_str().unwrap_or_default(), doc["kind"].as_str().unwrap_or_default()) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(doc),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(doc),
        ("v1", "Service") => round_trip::<core::v1::Service>(doc),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(doc),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(doc),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<networking::v1::NetworkPolicy>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<rbac::v1::ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => round_trip::<rbac::v1::ClusterRoleBinding>(doc),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<rbac::v1::RoleBinding>(doc),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            round_trip::<admission::MutatingWebhookConfiguration>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            round_trip::<admission::ValidatingWebhookConfiguration>(doc)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => round_trip::<CustomResourceDefinition>(doc),
        (version, kind) => Err(format!("{version} {kind} is not a kind this test knows")),
    }
}

fn name(doc: &Value) -> String {
    format!("{} {}", doc["kind"].as_str().unwrap_or_default(), doc["metadata"]["name"].as_str().unwrap_or_default())
}

/// Every object of the render against its schema; cert-manager's kinds (not Kubernetes') are
/// returned for the caller to check.
fn check_schema(docs: &[Value]) -> Vec<Value> {
    let mut problems = Vec::new();
    let mut foreign = Vec::new();
    for doc in docs {
        if doc["apiVersion"] == "cert-manager.io/v1" {
            foreign.push(doc.clone());
            continue;
        }
        match schema_problems(doc) {
            Ok(lost) if lost.is_empty() => {}
            Ok(lost) => problems.push(format!("{}: fields its kind does not have: {lost:?}", name(doc))),
            Err(e) => problems.push(format!("{}: {e}", name(doc))),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    foreign
}

/// What the docs promise of every workload: probes, resources, a non-root user (but sv-nfs, whose
/// pods the operator makes), no privilege escalation, a read-only root, every capability dropped.
fn check_workloads(docs: &[Value]) {
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2, "the operator and the webhook");
    for deployment in deployments {
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{}", name(deployment));
        for container in pod["containers"].as_array().expect("containers") {
            let what = format!("{} container {}", name(deployment), container["name"]);
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(container[probe].is_object(), "{what}: {probe}");
            }
            assert!(container["resources"]["requests"]["memory"].is_string(), "{what}: memory request");
            assert!(container["resources"]["limits"]["memory"].is_string(), "{what}: memory limit");
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{what}");
        }
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        let covered = docs
            .iter()
            .any(|d| d["kind"] == "PodDisruptionBudget" && d["spec"]["selector"]["matchLabels"] == *selector);
        assert!(covered, "{}: a PodDisruptionBudget selects its pods", name(deployment));
    }
}

/// The rules of every role of the render, by role.
fn roles(docs: &[Value]) -> Vec<(String, Value)> {
    let mut roles: Vec<(String, Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|d| (name(d), d["rules"].clone()))
        .collect();
    roles.sort_by(|a, b| a.0.cmp(&b.0));
    roles
}

#[test]
fn the_base_renders_to_valid_hardened_objects_with_the_rbac_the_simulation_enforces() {
    let Some(docs) = render("deploy") else { return };
    assert!(check_schema(&docs).is_empty(), "the base needs nothing but Kubernetes");
    check_workloads(&docs);
    let kinds: std::collections::BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "NetworkPolicy",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Service",
    ] {
        assert!(kinds.contains(kind), "the install has a {kind}");
    }
    // The CRDs of the render are the ones the code generates.
    let crds: Vec<Value> = docs.iter().filter(|d| d["kind"] == "CustomResourceDefinition").cloned().collect();
    let generated: Vec<Value> =
        sv_operator::api::crds().into_iter().map(|c| serde_json::to_value(c).expect("crd")).collect();
    assert_eq!(crds.len(), generated.len());
    for crd in &crds {
        let same = generated.iter().find(|g| g["metadata"]["name"] == crd["metadata"]["name"]).expect("generated");
        assert_eq!(crd["spec"], same["spec"], "{} is as generated", name(crd));
    }
    // The raw manifests the simulation installs grant what the render grants.
    let mut raw = sv_sim::install::documents(sv_sim::install::OPERATOR_MANIFEST).expect("operator manifest");
    raw.extend(sv_sim::install::documents(include_str!("../../deploy/base/webhook.yaml")).expect("webhook manifest"));
    assert_eq!(roles(&docs), roles(&raw));
}

#[test]
fn the_cert_manager_overlay_takes_the_certificate_rights_away_and_asks_for_a_certificate() {
    let Some(docs) = render("deploy/overlays/cert-manager") else { return };
    let foreign = check_schema(&docs);
    let mut kinds: Vec<String> = foreign.iter().map(name).collect();
    kinds.sort();
    assert_eq!(kinds, ["Certificate sv-webhook", "Issuer sharedvolume-selfsigned"]);
    let certificate = foreign.iter().find(|d| d["kind"] == "Certificate").expect("the Certificate");
    check_workloads(&docs);
    let webhook = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "sharedvolume-webhook")
        .expect("webhook");
    let pod = &webhook["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].as_array().expect("args");
    assert!(args.iter().any(|a| a == "--tls-cert-file=/tls/tls.crt"));
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"], certificate["spec"]["secretName"],
        "it mounts the certificate's Secret"
    );
    for doc in docs.iter().filter(|d| d["apiVersion"] == "admissionregistration.k8s.io/v1") {
        assert_eq!(
            doc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "shared-volume-controller-system/sv-webhook"
        );
    }
    // No right on Secrets or on its configurations is left to the webhook.
    let rights = roles(&docs);
    let webhook_rules: Vec<&Value> =
        rights.iter().filter(|(n, _)| n.contains("sharedvolume-webhook")).map(|(_, r)| r).collect();
    let text = serde_json::to_string(&webhook_rules).expect("json");
    assert!(!text.contains("secrets") && !text.contains("webhookconfigurations"), "{text}");
    assert!(text.contains("persistentvolumeclaims"), "the rest of the webhook's rights are there");
    let dns = certificate["spec"]["dnsNames"].as_array().expect("dnsNames");
    let service =
        docs.iter().find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "sv-webhook").expect("service");
    let host = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap_or_default(),
        service["metadata"]["namespace"].as_str().unwrap_or_default()
    );
    assert!(dns.iter().any(|d| d == &Value::String(host.clone())), "the certificate names the Service {host}");
}

#[test]
fn a_field_its_kind_does_not_have_is_reported() {
    let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "replica": 2,
                 "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "cpu": "1"}]}}}});
    let lost = schema_problems(&deployment).expect("a Deployment");
    assert_eq!(lost, [".spec.replica", ".spec.template.spec.containers[0].cpu"]);
}

/// The DefaultStorageClass admission plugin, as the real one: a claim that names no class gets the
/// default (the newest when several are), one that names "" or a class keeps it, and with no
/// default the field stays unset.
#[test]
fn claims_without_a_class_get_the_default_one() {
    let start = k8s_openapi::jiff::Timestamp::from_second(1_790_000_000).expect("a time");
    let clock = std::sync::Arc::new(sv_sim::net::SimClock::new(start));
    let api = sv_sim::api::ApiServer::new(sv_sim::api::Options::default(), clock.clone());
    let claim = |name: &str, class: Option<&str>| {
        let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(class) = class {
            claim["spec"]["storageClassName"] = json!(class);
        }
        api.create_object(claim, "kubectl").expect("claim")["spec"]["storageClassName"].clone()
    };
    let class = |name: &str, default: bool| {
        let annotations =
            if default { json!({"storageclass.kubernetes.io/is-default-class": "true"}) } else { json!({}) };
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "x",
               "metadata": {"name": name, "annotations": annotations}})
    };
    api.create_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}), "kubectl")
        .ok();
    assert_eq!(claim("before", None), Value::Null, "no default class: the claim waits for one");
    api.create_object(class("slow", false), "kubectl").expect("class");
    api.create_object(class("standard", true), "kubectl").expect("class");
    clock.publish(std::time::Duration::from_secs(5));
    api.create_object(class("fast", true), "kubectl").expect("class");
    assert_eq!(claim("plain", None), "fast", "the newest default");
    assert_eq!(claim("none", Some("")), "", "an explicit empty class stays");
    assert_eq!(claim("chosen", Some("slow")), "slow");
}
