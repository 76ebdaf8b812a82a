//! What the simulated API server sends a webhook, against what a real kube-apiserver v1.36.2
//! sent for the same manifests (`webhook/tests/admission/requests`, recorded by
//! `../shared/admission`): the same requests are made over the simulated network as kubectl made
//! them, a recording webhook keeps each AdmissionReview, and the two are compared field by field.
//! Every difference must be one listed in `KNOWN` with its reason: a new one fails, and so does
//! a listed one that is gone (the list cannot rot).

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};
use sv_sim::examples;
use sv_sim::world::{World, WorldConfig};

const IMAGE: &str = "example.com/recorder";

/// Differences from the real server that are not fixed yet: (case, path, reason). None are left;
/// a difference found again must be fixed or listed here with its reason.
const KNOWN: &[(&str, &str, &str)] = &[];

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(repo("webhook/tests/admission/manifests").join(name)).expect("manifest");
    serde_saphyr::from_str(&text).expect("YAML")
}

fn recorded(name: &str) -> Value {
    let text = std::fs::read_to_string(repo("webhook/tests/admission/requests").join(name)).expect("recording");
    serde_json::from_str(&text).expect("JSON")
}

/// Keeps each review it is sent, and allows it unchanged.
fn recorder(tls: Arc<rustls::ServerConfig>, reviews: Arc<Mutex<Vec<Value>>>) -> sv_sim::programs::Program {
    let router = axum::Router::new().fallback(post(move |Json(review): Json<Value>| {
        reviews.lock().expect("lock").push(review.clone());
        async move {
            Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": review["request"]["uid"], "allowed": true}}))
        }
    }));
    common::webhook::serving(tls, router)
}

/// The two configurations of the recording: pods in `team-a`/`team-b` on every operation, and
/// both kinds of volume, `failurePolicy: Fail`, 5 s.
fn configurations(ca: &str) -> Vec<Value> {
    let hook = |name: &str, rules: Value, extra: Value| {
        let mut hook = json!({
            "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "NoneOnDryRun",
            "failurePolicy": "Fail", "timeoutSeconds": 5,
            "clientConfig": {"service": {"namespace": "default", "name": "recorder", "path": "/review", "port": 443},
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)},
            "rules": rules,
        });
        if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
            hook.extend(extra.clone());
        }
        hook
    };
    let every = json!(["CREATE", "UPDATE", "DELETE"]);
    vec![
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "recorder"}, "webhooks": [hook(
            "pods.recorder.example.com",
            json!([{"operations": every, "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]),
            json!({"namespaceSelector": {"matchLabels": {"sv-fixtures": "true"}}}),
        )]}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "recorder"}, "webhooks": [hook(
            "volumes.recorder.example.com",
            json!([{"operations": every, "apiGroups": ["sv.sharedvolume.io"], "apiVersions": ["v1alpha1"],
                    "resources": ["sharedvolumes", "clustersharedvolumes"]}]),
            json!({}),
        )]}),
    ]
}

/// What makes two reviews of the same request differ without either being wrong: the review's
/// uid, who asked (an x509 user there, the admin token here; both `system:masters`), when, and
/// the random suffix of the token volume; the recording's `openshift-service-ca.crt` source is
/// not upstream's (docs/sim.md).
fn normalize(review: &Value) -> Value {
    let mut request = review["request"].clone();
    if let Some(r) = request.as_object_mut() {
        r.remove("uid");
        r.remove("userInfo");
    }
    for object in ["object", "oldObject"] {
        let o = &mut request[object];
        if !o.is_object() {
            continue;
        }
        for entry in o["metadata"]["managedFields"].as_array_mut().into_iter().flatten() {
            entry["time"] = json!("T");
        }
        for key in ["uid", "creationTimestamp"] {
            if o["metadata"].get(key).is_some() {
                o["metadata"][key] = json!(key.to_uppercase());
            }
        }
        let text = o.to_string();
        let text = regex_free_replace(&text, "kube-api-access-", 5, "kube-api-access-X");
        *o = serde_json::from_str(&text).expect("JSON");
        for volume in o["spec"]["volumes"].as_array_mut().into_iter().flatten() {
            if let Some(sources) = volume["projected"]["sources"].as_array_mut() {
                sources.retain(|s| s["configMap"]["name"] != "openshift-service-ca.crt");
            }
        }
    }
    request
}

/// `text` with every `prefix` followed by `length` more characters replaced by `with`.
fn regex_free_replace(text: &str, prefix: &str, length: usize, with: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        out.push_str(with);
        let after = &rest[at + prefix.len()..];
        let skip = after.char_indices().nth(length).map(|(i, _)| i).unwrap_or(after.len());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

/// Every path where `ours` differs from `theirs`: `missing` (the real server has it), `extra`
/// (only ours), or `differs` (both, with other values).
fn differences(path: &str, theirs: &Value, ours: &Value, out: &mut BTreeSet<String>) {
    match (theirs, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => differences(&format!("{path}/{key}"), value, other, out),
                    None => {
                        out.insert(format!("missing {path}/{key}"));
                    }
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.insert(format!("extra {path}/{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}/{i}"), x, y, out);
            }
        }
        _ if theirs == ours => {}
        _ => {
            out.insert(format!("differs {path}"));
        }
    }
}

/// One request as kubectl made it: method, path with its query, body.
struct Call {
    case: &'static str,
    method: &'static str,
    path: String,
    body: Value,
}

/// A world with the recording's namespaces and webhook configurations, its webhook running.
fn recording_world() -> (World, Arc<Mutex<Vec<Value>>>) {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    assert!(examples::install(&world).expect("install").is_empty());
    let (tls, ca) = common::webhook::tls("recorder.default.svc");
    let reviews = Arc::new(Mutex::new(Vec::new()));
    world.programs().expect("programs").register_image(IMAGE, recorder(tls, reviews.clone()));
    let mut setup: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(repo("webhook/tests/admission/manifests/namespaces.yaml")).expect("namespaces"),
    )
    .expect("YAML");
    setup.extend([
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "recorder", "namespace": "default", "labels": {"app": "recorder"}},
               "spec": {"containers": [{"name": "webhook", "image": format!("{IMAGE}:1")}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "recorder", "namespace": "default"},
               "spec": {"selector": {"app": "recorder"}, "ports": [{"port": 443, "targetPort": 8443}]}}),
    ]);
    setup.extend(configurations(&ca));
    for result in world.create_all(setup) {
        result.expect("create");
    }
    let ready = world.run_until(Duration::from_secs(30), |api| {
        sv_sim::install::stored(api, "", "pods", "default", "recorder")
            .is_some_and(|p| p["status"]["phase"] == "Running")
            && sv_sim::install::stored(api, "", "serviceaccounts", "team-a", "default").is_some()
    });
    assert!(ready.expect("run"), "the recorder does not run");
    (world, reviews)
}

/// Makes `calls` over the simulated network as kubectl would, with the administrator's token;
/// returns each answer as `case: status body`.
fn call_all(world: &mut World, calls: Vec<Call>) -> Vec<String> {
    let count = calls.len();
    let answers: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = answers.clone();
    // A host of its own per batch: turmoil names a host once.
    let host = format!("kubectl-{}", calls.first().map(|c| c.case).unwrap_or_default());
    world.sim.client(host, async move {
        for call in calls {
            let request = http::Request::builder()
                .method(call.method)
                .uri(call.path.as_str())
                .header(http::header::HOST, "api")
                .header(http::header::AUTHORIZATION, format!("Bearer {}", sv_sim::api::auth::ADMIN_TOKEN))
                // The only PATCH made here is a server-side apply (JSON is YAML).
                .header(
                    http::header::CONTENT_TYPE,
                    if call.method == "PATCH" { "application/apply-patch+yaml" } else { "application/json" },
                )
                .header(http::header::USER_AGENT, "kubectl/v1.36.2 (linux/amd64) kubernetes/sim")
                .body(http_body_util::Full::new(bytes::Bytes::from(call.body.to_string())))?;
            let answer =
                sv_sim::net::http_request("api", sv_sim::world::API_PORT, request, Duration::from_secs(30)).await;
            let line = match answer {
                Ok((status, body)) => format!("{}: {status} {}", call.case, String::from_utf8_lossy(&body)),
                Err(e) => format!("{}: {e}", call.case),
            };
            record.lock().map_err(|e| e.to_string())?.push(line);
        }
        Ok(())
    });
    let done = answers.clone();
    let finished = world.run_until(Duration::from_secs(60), |_| done.lock().map(|a| a.len() == count).unwrap_or(true));
    assert!(finished.expect("run"), "the requests did not finish");
    answers.lock().expect("lock").clone()
}

#[test]
fn reviews_are_the_ones_a_real_server_sends() {
    let (mut world, reviews) = recording_world();
    let create = "?fieldManager=kubectl-create&fieldValidation=Strict";
    let calls = vec![
        Call {
            case: "001-pod-create-plain",
            method: "POST",
            path: format!("/api/v1/namespaces/team-a/pods{create}"),
            body: manifest("pod-plain.yaml"),
        },
        Call {
            case: "004-pod-create-multi-container",
            method: "POST",
            path: format!("/api/v1/namespaces/team-a/pods{create}"),
            body: manifest("pod-multi-container.yaml"),
        },
        Call {
            case: "005-pod-create-mounts-secctx",
            method: "POST",
            path: format!("/api/v1/namespaces/team-a/pods{create}"),
            body: manifest("pod-mounts-secctx.yaml"),
        },
        Call {
            case: "011-sharedvolume-create-data",
            method: "POST",
            path: format!("/apis/sv.sharedvolume.io/v1alpha1/namespaces/team-a/sharedvolumes{create}"),
            body: manifest("sharedvolume.yaml"),
        },
        Call {
            case: "014-clustersharedvolume-create-shared",
            method: "POST",
            path: format!("/apis/sv.sharedvolume.io/v1alpha1/clustersharedvolumes{create}"),
            body: manifest("clustersharedvolume.yaml"),
        },
    ];
    let cases: Vec<&str> = calls.iter().map(|c| c.case).collect();
    for line in call_all(&mut world, calls) {
        assert!(line.contains(": 201 Created"), "{line}");
    }

    let reviews = reviews.lock().expect("lock").clone();
    assert_eq!(reviews.len(), cases.len(), "one review per request");
    let mut found = BTreeSet::new();
    for (case, ours) in cases.iter().zip(&reviews) {
        let theirs = recorded(&format!("{case}.json"));
        let user = &ours["request"]["userInfo"];
        assert!(user["groups"].as_array().is_some_and(|g| g.contains(&json!("system:masters"))), "{case}: {user}");
        let mut diff = BTreeSet::new();
        differences("", &normalize(&theirs), &normalize(ours), &mut diff);
        found.extend(diff.into_iter().map(|d| format!("{case} {d}")));
    }
    let known: BTreeSet<String> = KNOWN.iter().map(|(case, path, _)| format!("{case} {path}")).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&found).collect();
    assert!(new.is_empty() && gone.is_empty(), "differences not listed: {new:#?}\nlisted but gone: {gone:#?}");
}

/// The recorded facts about deletes: a graceful pod delete gives two DELETE reviews (the
/// client's, then the kubelet's once the containers stopped), and the garbage collector's deletes
/// come as its ServiceAccount with preconditions; a controller's pod create has no field manager
/// and no name yet.
#[test]
fn deletes_give_the_reviews_a_real_server_sends() {
    let (mut world, reviews) = recording_world();
    let pods = "/api/v1/namespaces/team-a/pods";
    let replica_set = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "team-a"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}});
    let answers = call_all(
        &mut world,
        vec![
            Call {
                case: "create",
                method: "POST",
                path: format!("{pods}?fieldManager=kubectl-create"),
                body: manifest("pod-plain.yaml"),
            },
            Call {
                case: "replicaset",
                method: "POST",
                path: "/apis/apps/v1/namespaces/team-a/replicasets".into(),
                body: replica_set,
            },
        ],
    );
    assert!(answers.iter().all(|a| a.contains(" 201 ")), "{answers:#?}");
    let running = world.run_until(Duration::from_secs(60), |api| {
        let state = api.state();
        let Some(rt) = state.registry.find("", "v1", "pods") else { return false };
        state.store.list(&rt.id, Some("team-a")).filter(|(_, p)| p["status"]["phase"] == "Running").count() == 2
    });
    assert!(running.expect("run"), "the pods did not start");
    let answers = call_all(
        &mut world,
        vec![
            Call {
                case: "delete",
                method: "DELETE",
                path: format!("{pods}/plain"),
                body: json!({"propagationPolicy": "Background"}),
            },
            Call {
                case: "delete-rs",
                method: "DELETE",
                path: "/apis/apps/v1/namespaces/team-a/replicasets/web".into(),
                body: json!({"propagationPolicy": "Background"}),
            },
        ],
    );
    assert!(answers.iter().all(|a| a.contains(" 200 ")), "{answers:#?}");
    let gone = world.run_until(Duration::from_secs(120), |api| {
        let state = api.state();
        let Some(rt) = state.registry.find("", "v1", "pods") else { return false };
        state.store.list(&rt.id, Some("team-a")).next().is_none()
    });
    assert!(gone.expect("run"), "the pods were not deleted");

    let reviews = reviews.lock().expect("lock").clone();
    let deletes = |name_prefix: &str| -> Vec<Value> {
        reviews
            .iter()
            .map(|r| r["request"].clone())
            .filter(|r| r["operation"] == "DELETE" && r["name"].as_str().is_some_and(|n| n.starts_with(name_prefix)))
            .collect()
    };
    let plain = deletes("plain");
    assert_eq!(plain.len(), 2, "two DELETE reviews for one kubectl delete: {plain:#?}");
    assert_ne!(plain[0]["uid"], plain[1]["uid"]);
    assert!(plain.iter().all(|r| r["object"].is_null()), "object is null on DELETE");
    assert!(plain[0]["oldObject"]["metadata"]["deletionTimestamp"].is_null(), "the first sees the pod as stored");
    assert!(!plain[1]["oldObject"]["metadata"]["deletionTimestamp"].is_null(), "the second sees it terminating");
    assert_eq!(plain[0]["options"]["gracePeriodSeconds"], 30, "{}", plain[0]["options"]);
    assert_eq!(plain[0]["options"]["propagationPolicy"], "Background");
    assert_eq!(plain[1]["options"]["gracePeriodSeconds"], 0, "{}", plain[1]["options"]);
    assert!(
        plain[1]["userInfo"]["username"].as_str().is_some_and(|u| u.starts_with("system:node:")),
        "{}",
        plain[1]["userInfo"]
    );

    let created = reviews
        .iter()
        .map(|r| &r["request"])
        .find(|r| r["operation"] == "CREATE" && r["object"]["metadata"]["generateName"] == "web-")
        .expect("the ReplicaSet's pod was reviewed");
    assert!(created.get("name").is_none() && created["object"]["metadata"].get("name").is_none(), "{created}");
    assert_eq!(created["userInfo"]["username"], "system:serviceaccount:kube-system:replicaset-controller");
    assert!(created["options"].get("fieldManager").is_none(), "{}", created["options"]);
    let collected = deletes("web-");
    let by_collector = collected
        .iter()
        .find(|r| r["userInfo"]["username"] == "system:serviceaccount:kube-system:generic-garbage-collector")
        .unwrap_or_else(|| panic!("no delete by the garbage collector: {collected:#?}"));
    let preconditions = &by_collector["options"]["preconditions"];
    assert!(preconditions["uid"].is_string() && preconditions["resourceVersion"].is_string(), "{preconditions}");
}

/// The recorded fact about server-side apply: an apply that creates is a CREATE review, with the
/// apply's field manager, and managedFields of operation Apply.
#[test]
fn an_apply_that_creates_is_reviewed_as_a_create() {
    let (mut world, reviews) = recording_world();
    let mut pod = manifest("pod-plain.yaml");
    pod["metadata"]["name"] = json!("applied");
    let answers = call_all(
        &mut world,
        vec![Call {
            case: "apply",
            method: "PATCH",
            path: "/api/v1/namespaces/team-a/pods/applied?fieldManager=kubectl&fieldValidation=Strict&force=false"
                .into(),
            body: pod,
        }],
    );
    assert!(answers[0].contains(": 201 Created"), "{answers:?}");
    let reviews = reviews.lock().expect("lock").clone();
    let review = &reviews.iter().find(|r| r["request"]["name"] == "applied").expect("a review")["request"];
    assert_eq!(review["operation"], "CREATE", "{review}");
    assert!(review["oldObject"].is_null());
    assert_eq!(
        review["options"],
        json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl", "fieldValidation": "Strict"})
    );
    assert_eq!(
        review["object"]["metadata"]["managedFields"][0]["operation"], "Apply",
        "{}",
        review["object"]["metadata"]
    );
}
