//! Admission webhooks: a webhook runs in a pod behind a Service, served over HTTPS on the
//! simulated network; the real kube client's writes pass its mutating and validating
//! configurations, which honour their rules, selectors and failure policies.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sv_sim::programs::Program;
use sv_sim::world::{World, WorldConfig};

const IMAGE: &str = "example.com/test-webhook";

/// What each request of the test client got: the stored object or the error.
type Outcomes = Arc<Mutex<Vec<(String, Result<Value, String>)>>>;

fn tls() -> (Arc<rustls::ServerConfig>, String) {
    common::webhook::tls("admission.default.svc")
}

fn answer(review: &Value, allowed: bool, message: Option<&str>, patch: Option<Value>) -> Json<Value> {
    let mut response = json!({"uid": review["request"]["uid"], "allowed": allowed});
    if let Some(message) = message {
        response["status"] = json!({"message": message, "code": 422});
    }
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
        response["warnings"] = json!(["labelled by the test webhook"]);
    }
    Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

/// Labels what it is shown; refuses ConfigMaps holding a key named `forbidden`.
fn webhook(tls: Arc<rustls::ServerConfig>, reviews: Arc<Mutex<Vec<Value>>>) -> Program {
    let seen = reviews.clone();
    let router = axum::Router::new()
        .route(
            "/mutate",
            post(move |uri: axum::http::Uri, headers: axum::http::HeaderMap, Json(review): Json<Value>| {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let mut recorded = review.clone();
                recorded["http"] =
                    json!({"query": uri.query(), "userAgent": header("user-agent"), "accept": header("accept")});
                seen.lock().expect("lock").push(recorded);
                let labels = &review["request"]["object"]["metadata"]["labels"];
                let patch = if labels.is_object() {
                    json!([{"op": "add", "path": "/metadata/labels/admitted", "value": "yes"}])
                } else {
                    json!([{"op": "add", "path": "/metadata/labels", "value": {"admitted": "yes"}}])
                };
                async move { answer(&review, true, None, Some(patch)) }
            }),
        )
        .route(
            "/validate",
            post(|Json(review): Json<Value>| async move {
                let object = &review["request"]["object"];
                let forbidden =
                    !object["data"]["forbidden"].is_null() || !object["metadata"]["labels"]["forbidden"].is_null();
                answer(&review, !forbidden, forbidden.then_some("the key 'forbidden' is not allowed"), None)
            }),
        );
    common::webhook::serving(tls, router)
}

/// Creates `objects` with the webhook's pod and its Service `default/admission`, and runs until
/// the pod serves.
fn start_with_webhook(world: &mut World, mut objects: Vec<Value>) {
    objects.push(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "admission", "namespace": "default", "labels": {"app": "admission"}},
        "spec": {"containers": [{"name": "webhook", "image": format!("{IMAGE}:1")}]}}));
    objects
        .push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "admission", "namespace": "default"},
        "spec": {"selector": {"app": "admission"}, "ports": [{"port": 443, "targetPort": 8443}]}}));
    for result in world.create_all(objects) {
        result.expect("create");
    }
    world.run_for(Duration::from_secs(5)).expect("the webhook pod starts");
}

/// Creates a ConfigMap with `metadata` in each namespace, one after another, with the real kube
/// client over the simulated network: what each create got, in order.
fn create_config_maps(
    world: &mut World,
    namespaces: &[&'static str],
    metadata: Value,
) -> Vec<(String, Result<Value, String>)> {
    let results: Outcomes = Arc::default();
    let record = results.clone();
    let namespaces = namespaces.to_vec();
    let count = namespaces.len();
    world.sim.client("tester", async move {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        for namespace in namespaces {
            let map: ConfigMap = serde_json::from_value(json!({"metadata": metadata})).expect("cm");
            let created =
                Api::<ConfigMap>::namespaced(client.clone(), namespace).create(&PostParams::default(), &map).await;
            let created = created.map(|c| serde_json::to_value(c).unwrap_or_default()).map_err(|e| e.to_string());
            record.lock().expect("lock").push((namespace.to_string(), created));
        }
        Ok(())
    });
    let done = results.clone();
    assert!(world.run_until(Duration::from_secs(60), |_| done.lock().expect("lock").len() == count).expect("run"));
    results.lock().expect("lock").clone()
}

fn configuration(kind: &str, name: &str, path: &str, resources: &[&str], ca: &str, extra: Value) -> Value {
    let mut hook = json!({
        "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "default", "name": "admission", "path": path, "port": 443},
                         "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}],
    });
    if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        hook.extend(extra.clone());
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": [hook]})
}

#[test]
fn writes_pass_the_webhooks_their_rules_and_selectors_choose() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let (tls, ca) = tls();
    let reviews = Arc::new(Mutex::new(Vec::new()));
    world.programs().expect("programs").register_image(IMAGE, webhook(tls, reviews.clone()));
    let unreachable = |policy: &str| {
        json!({"failurePolicy": policy, "clientConfig": {"url": "https://api:9443/nothing-listens-here",
        "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca)}})
    };
    let in_team = json!({"namespaceSelector": {"matchLabels": {"admission": "on"}}});
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"admission": "on"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        configuration(
            "MutatingWebhookConfiguration",
            "label.example.com",
            "/mutate",
            &["configmaps"],
            &ca,
            json!({
                "namespaceSelector": {"matchLabels": {"admission": "on"}},
                "objectSelector": {"matchExpressions": [{"key": "skip-admission", "operator": "DoesNotExist"}]},
            }),
        ),
        configuration(
            "ValidatingWebhookConfiguration",
            "refuse.example.com",
            "/validate",
            &["configmaps"],
            &ca,
            json!({"matchConditions": [{"name": "not-exempt", "expression": "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"}]}),
        ),
        configuration(
            "MutatingWebhookConfiguration",
            "label-pods.example.com",
            "/mutate",
            &["pods"],
            &ca,
            in_team.clone(),
        ),
        configuration(
            "ValidatingWebhookConfiguration",
            "refuse-pods.example.com",
            "/validate",
            &["pods"],
            &ca,
            in_team,
        ),
        configuration(
            "ValidatingWebhookConfiguration",
            "closed.example.com",
            "/",
            &["secrets"],
            &ca,
            unreachable("Fail"),
        ),
        // A naive condition: claims without annotations make it fail to evaluate.
        configuration(
            "ValidatingWebhookConfiguration",
            "naive.example.com",
            "/validate",
            &["persistentvolumeclaims"],
            &ca,
            json!({"matchConditions": [{"name": "annotated", "expression": "'sharedvolume.sv' in object.metadata.annotations"}]}),
        ),
        configuration(
            "ValidatingWebhookConfiguration",
            "open.example.com",
            "/",
            &["serviceaccounts"],
            &ca,
            unreachable("Ignore"),
        ),
    ];
    start_with_webhook(&mut world, objects);

    let results: Outcomes = Arc::default();
    let record = results.clone();
    world.sim.client("tester", async move {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        let maps = |ns: &str| Api::<ConfigMap>::namespaced(client.clone(), ns);
        let cm = |name: &str, labels: Value, data: Value| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data})).expect("cm")
        };
        let note = |what: &str, result: Result<Value, kube::Error>| {
            record.lock().expect("lock").push((what.to_string(), result.map_err(|e| e.to_string())));
        };
        let post = PostParams::default();
        let created = maps("team").create(&post, &cm("labelled", json!(null), json!({"a": "1"}))).await;
        note("team", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        let created = maps("other").create(&post, &cm("plain", json!(null), json!({"a": "1"}))).await;
        note("other", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        let created = maps("team").create(&post, &cm("skipped", json!({"skip-admission": "yes"}), json!({}))).await;
        note("skipped", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        let created = maps("team").create(&post, &cm("refused", json!(null), json!({"forbidden": "x"}))).await;
        note("refused", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        // A merge patch that drops the label: the webhook puts it back.
        let patch = json!({"metadata": {"labels": {"admitted": null, "more": "x"}}});
        let patched = maps("team").patch("labelled", &PatchParams::default(), &Patch::Merge(&patch)).await;
        note("patched", patched.map(|c| serde_json::to_value(c).unwrap_or_default()));
        // The validating webhook's matchCondition skips exempt objects.
        let created =
            maps("team").create(&post, &cm("exempt", json!({"exempt": "yes"}), json!({"forbidden": "x"}))).await;
        note("exempt", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).expect("secret");
        let created = Api::<Secret>::namespaced(client.clone(), "team").create(&post, &secret).await;
        note("closed", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "claim"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .expect("claim");
        let created = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "team").create(&post, &claim).await;
        note("naive", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "sa"}})).expect("sa");
        let created = Api::<ServiceAccount>::namespaced(client.clone(), "team").create(&post, &account).await;
        note("open", created.map(|c| serde_json::to_value(c).unwrap_or_default()));
        Ok(())
    });
    let done = results.clone();
    assert!(world.run_until(Duration::from_secs(120), |_| done.lock().expect("lock").len() == 9).expect("run"));

    let results = results.lock().expect("lock").clone();
    let outcome = |what: &str| results.iter().find(|(w, _)| w == what).map(|(_, r)| r.clone()).expect("recorded");
    let labels =
        |what: &str| outcome(what).map(|c| c["metadata"]["labels"].clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(labels("team")["admitted"], "yes", "the mutating webhook labels ConfigMaps in selected namespaces");
    assert!(labels("other")["admitted"].is_null(), "the namespaceSelector leaves other namespaces alone");
    assert!(labels("skipped")["admitted"].is_null(), "the objectSelector leaves opted-out objects alone");
    let refused = outcome("refused").expect_err("the validating webhook refuses");
    assert!(
        refused.contains(
            "admission webhook \"refuse.example.com\" denied the request: the key 'forbidden' is not allowed"
        ),
        "{refused}"
    );
    let patched = labels("patched");
    assert_eq!((patched["admitted"].as_str(), patched["more"].as_str()), (Some("yes"), Some("x")), "{patched}");
    assert_eq!(labels("exempt")["admitted"], "yes", "a matchCondition skipped the validating webhook only");
    let closed = outcome("closed").expect_err("failurePolicy Fail refuses when the webhook cannot be called");
    assert!(closed.contains("failed calling webhook \"closed.example.com\""), "{closed}");
    assert!(outcome("open").is_ok(), "failurePolicy Ignore lets the write through");
    // As a real v1.36 server answers (shared/admission/README.md): 403, naming the object and
    // the expression, not the 500 of a webhook that cannot be called.
    let naive = outcome("naive").expect_err("a matchCondition that cannot be evaluated refuses under Fail");
    assert!(
        naive.contains("persistentvolumeclaims \"claim\" is forbidden: expression ''sharedvolume.sv' in object.metadata.annotations' resulted in error:"),
        "{naive}"
    );
    assert!(naive.contains("code: 403") && naive.contains("Forbidden"), "{naive}");

    // The mutating webhook saw real AdmissionReviews (the refused ConfigMap too: mutation comes
    // before validation), the update with its old object.
    let reviews = reviews.lock().expect("lock").clone();
    let seen: Vec<(&str, &str)> = reviews
        .iter()
        .filter_map(|r| Some((r["request"]["operation"].as_str()?, r["request"]["name"].as_str()?)))
        .collect();
    assert_eq!(
        seen,
        [("CREATE", "labelled"), ("CREATE", "refused"), ("UPDATE", "labelled"), ("CREATE", "exempt")],
        "{reviews:#?}"
    );
    // Called as a real server calls: the webhook's timeout (10 s by default) in the query.
    assert_eq!(
        reviews[0]["http"],
        json!({"query": "timeout=10s", "userAgent": "kube-apiserver-admission", "accept": "application/json, */*"})
    );
    let update = &reviews[2]["request"];
    assert_eq!(update["oldObject"]["metadata"]["labels"]["admitted"], "yes");
    assert_eq!(update["resource"], json!({"group": "", "version": "v1", "resource": "configmaps"}));
    assert_eq!(update["namespace"], "team");
    // The stored object is the admitted one.
    {
        let state = world.api.state();
        let rt = state.registry.find("", "v1", "configmaps").expect("configmaps");
        assert_eq!(
            state.store.get(&rt.id, "team", "labelled").expect("stored")["metadata"]["labels"]["admitted"],
            "yes"
        );
        assert!(state.store.get(&rt.id, "team", "refused").is_none());
    }

    // Pods the ReplicaSet controller creates pass admission too: labelled, or refused with a
    // FailedCreate Warning on their ReplicaSet.
    let deployment = |name: &str, labels: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "team"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    };
    let objects =
        [deployment("web", json!({"app": "web"})), deployment("bad", json!({"app": "bad", "forbidden": "yes"}))];
    for result in world.create_all(objects) {
        result.expect("create");
    }
    let list = |api: &sv_sim::api::ApiServer, plural: &str| -> Vec<Value> {
        let state = api.state();
        let rt = state.registry.find("", "v1", plural).expect("type");
        state.store.list(&rt.id, Some("team")).map(|(_, o)| (**o).clone()).collect()
    };
    let settled = world
        .run_until(Duration::from_secs(60), |api| {
            let web = list(api, "pods").into_iter().filter(|p| p["metadata"]["labels"]["app"] == "web").count();
            let refused = list(api, "events").iter().any(|e| e["reason"] == "FailedCreate");
            web == 2 && refused
        })
        .expect("run");
    let pods = list(&world.api, "pods");
    assert!(settled, "{pods:#?}");
    assert!(pods.iter().all(|p| p["metadata"]["labels"]["admitted"] == "yes"), "{pods:#?}");
    assert!(pods.iter().all(|p| p["metadata"]["labels"]["app"] == "web"), "the refused pods do not exist");
    let events = list(&world.api, "events");
    let failed = events.iter().find(|e| e["reason"] == "FailedCreate").expect("an event");
    assert_eq!(failed["involvedObject"]["kind"], "ReplicaSet");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Error creating: admission webhook \"refuse-pods.example.com\" denied"), "{message}");
}

/// `reinvocationPolicy: IfNeeded`: a mutating webhook whose object a later webhook changed is
/// called once more and sees the change; with `Never` it is not.
#[test]
fn a_webhook_that_asks_is_called_again_when_a_later_one_changed_the_object() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let (tls, ca) = tls();
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let label = |labels: &Value, key: &str, value: &str| {
        if labels.is_object() {
            json!([{"op": "add", "path": format!("/metadata/labels/{key}"), "value": value}])
        } else {
            json!([{"op": "add", "path": "/metadata/labels", "value": {key: value}}])
        }
    };
    let (first_calls, second_calls) = (calls.clone(), calls.clone());
    let router = axum::Router::new()
        .route(
            "/first",
            post(move |Json(review): Json<Value>| {
                let labels = &review["request"]["object"]["metadata"]["labels"];
                let saw = labels["second"].as_str().unwrap_or("nothing").to_string();
                first_calls.lock().expect("lock").push(format!("first saw {saw}"));
                let patch = label(labels, "first-saw", &saw);
                async move { answer(&review, true, None, Some(patch)) }
            }),
        )
        .route(
            "/second",
            post(move |Json(review): Json<Value>| {
                second_calls.lock().expect("lock").push("second".to_string());
                let labels = &review["request"]["object"]["metadata"]["labels"];
                let patch = labels["second"].is_null().then(|| label(labels, "second", "was-here"));
                async move { answer(&review, true, None, patch) }
            }),
        );
    world.programs().expect("programs").register_image(IMAGE, common::webhook::serving(tls, router));
    let config = |name: &str, mode: &str, policy: &str| {
        let hook = |hook: &str| {
            json!({
                "name": format!("{hook}.{name}"), "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "reinvocationPolicy": if hook == "first" { policy } else { "Never" },
                "clientConfig": {"service": {"namespace": "default", "name": "admission", "path": format!("/{hook}"), "port": 443},
                                 "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca)},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
                "namespaceSelector": {"matchLabels": {"mode": mode}},
            })
        };
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": name}, "webhooks": [hook("first"), hook("second")]})
    };
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "again", "labels": {"mode": "again"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "once", "labels": {"mode": "once"}}}),
        config("if-needed.example.com", "again", "IfNeeded"),
        config("never.example.com", "once", "Never"),
    ];
    start_with_webhook(&mut world, objects);

    let results = create_config_maps(&mut world, &["again", "once"], json!({"name": "m"}));
    let labels = |i: usize| results[i].1.clone().expect("created")["metadata"]["labels"].clone();
    assert_eq!(labels(0)["first-saw"], "was-here", "called again, it saw the later change: {:#}", labels(0));
    assert_eq!(labels(1)["first-saw"], "nothing", "never called again: {:#}", labels(1));
    assert_eq!(
        *calls.lock().expect("lock"),
        ["first saw nothing", "second", "first saw was-here", "first saw nothing", "second"],
        "once more for IfNeeded, and only the webhook that asked"
    );
}

/// A validating webhook is shown the name (from `generateName`), uid and creation time the
/// object is stored with, whether or not a mutating webhook changed it first: the real server
/// draws them before validating admission (`BeforeCreate`).
#[test]
fn a_validating_webhook_sees_the_identity_that_is_stored() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let (tls, ca) = tls();
    let shown = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (record, recorded) = (shown.clone(), shown.clone());
    let router = axum::Router::new()
        .route(
            "/mutate",
            post(|Json(review): Json<Value>| async move {
                let patch = json!([{"op": "add", "path": "/data", "value": {"mutated": "yes"}}]);
                answer(&review, true, None, Some(patch))
            }),
        )
        .route(
            "/validate",
            post(move |Json(review): Json<Value>| {
                record.lock().expect("lock").push(review["request"]["object"].clone());
                async move { answer(&review, true, None, None) }
            }),
        );
    world.programs().expect("programs").register_image(IMAGE, common::webhook::serving(tls, router));
    let in_namespace =
        |namespace: &str| json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}});
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mutated"}}),
        configuration(
            "ValidatingWebhookConfiguration",
            "record.example.com",
            "/validate",
            &["configmaps", "pods"],
            &ca,
            json!({}),
        ),
        configuration(
            "MutatingWebhookConfiguration",
            "mutate.example.com",
            "/mutate",
            &["configmaps"],
            &ca,
            in_namespace("mutated"),
        ),
    ];
    start_with_webhook(&mut world, objects);

    let results = create_config_maps(&mut world, &["plain", "mutated"], json!({"generateName": "named-"}));
    let shown: Vec<Value> = shown.lock().expect("lock").iter().map(|o| o["metadata"].clone()).collect();
    assert_eq!(shown.len(), 2, "one validating review per create: {shown:#?}");
    for ((namespace, created), shown) in results.iter().zip(&shown) {
        let stored = &created.clone().expect("created")["metadata"];
        for key in ["name", "uid", "creationTimestamp"] {
            assert_eq!(shown[key], stored[key], "{namespace}: {key} shown to the validating webhook");
        }
        assert!(stored["name"].as_str().is_some_and(|n| n.starts_with("named-")), "{stored:#}");
    }
    let mutated = results[1].1.clone().expect("created");
    assert_eq!(mutated["data"]["mutated"], "yes", "the mutating webhook ran");
    // The real server records managed fields before mutating admission: what a webhook adds is
    // owned by nobody.
    let owned = mutated["metadata"]["managedFields"].to_string();
    assert!(owned.contains("f:generateName"), "the client owns what it sent: {owned}");
    assert!(!owned.contains("f:data"), "the webhook's data is owned by nobody: {owned}");

    // A controller's pod, named by generateName, is shown as it is stored too.
    let replicas = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "plain"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    for result in world.create_all(vec![replicas]) {
        result.expect("create");
    }
    world.run_for(Duration::from_secs(5)).expect("run");
    let recorded = recorded.lock().expect("lock").clone();
    let shown = recorded.iter().find(|o| o["kind"] == "Pod").expect("the pod's validating review");
    let name = shown["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let stored = {
        let state = world.api.state();
        let pods = state.registry.find("", "v1", "pods").expect("pods").id.clone();
        state.store.get(&pods, "plain", &name).map(|p| (**p).clone())
    };
    let stored = stored.unwrap_or_else(|| panic!("no pod {name:?} stored"));
    for key in ["uid", "creationTimestamp"] {
        assert_eq!(shown["metadata"][key], stored["metadata"][key], "the controller's pod {name}: {key}");
    }
}
