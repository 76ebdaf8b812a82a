//! The exact requests that matter, made by the real `kube::Client` over a mocked transport: the
//! finalizer patches, server-side apply with our field manager, the status patch, and a whole
//! reconciliation of a new volume.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use sv_operator::api::{SharedVolume, VolumeStatus};
use sv_operator::clock::{SharedClock, TokioClock};
use sv_operator::controller::kube_io::{self, FIELD_MANAGER};
use sv_operator::controller::metrics::Metrics;
use sv_operator::controller::observe::Caches;
use sv_operator::controller::{Context, reconcile};
use sv_operator::plan::{Desired, Settings};

#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Call {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

type Handler = dyn Fn(&Call) -> (StatusCode, Value) + Send + Sync;

/// A fake API server: records every request and answers with `handler`.
fn mock_client(handler: Arc<Handler>) -> (Client, Arc<Mutex<Vec<Call>>>) {
    mock_client_cut_off(handler, Arc::default())
}

/// A client whose requests never get an answer while `cut_off` is set (a partition).
fn mock_client_cut_off(
    handler: Arc<Handler>,
    cut_off: Arc<std::sync::atomic::AtomicBool>,
) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let recorded = recorded.clone();
        let handler = handler.clone();
        let cut_off = cut_off.clone();
        async move {
            if cut_off.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, reply) = handler(&call);
            recorded.lock().expect("lock").push(call);
            let body = http_body_util::Full::new(Bytes::from(serde_json::to_vec(&reply).expect("json")));
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(body)
                    .expect("response"),
            )
        }
    });
    (Client::new(service, "default"), calls)
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Answers like an empty cluster that accepts every write: GETs of namespaces and StorageClasses
/// succeed, other GETs are 404, lists are empty, writes echo their body.
fn empty_cluster(call: &Call) -> (StatusCode, Value) {
    let p = call.path.as_str();
    match call.method.as_str() {
        "GET" if p.starts_with("/api/v1/namespaces/") && p.matches('/').count() == 4 => {
            let name = p.rsplit('/').next().unwrap_or_default();
            (StatusCode::OK, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        }
        "GET" if p.starts_with("/apis/storage.k8s.io/v1/storageclasses/") => (
            StatusCode::OK,
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "standard"}, "provisioner": "x"}),
        ),
        "GET" if call.query.contains("labelSelector") || p.ends_with('s') => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        ),
        "GET" => not_found(),
        // The finalizer patch stores a new version of the volume, as the API server would.
        "PATCH" if p.contains("/sharedvolumes/") && call.content_type == "application/json-patch+json" => {
            let mut stored = serde_json::to_value(volume(&["sharedvolume.sv/finalizer"])).expect("json");
            stored["metadata"]["resourceVersion"] = json!("42");
            (StatusCode::OK, stored)
        }
        "PATCH" if p.contains("/sharedvolumes/") => (StatusCode::OK, serde_json::to_value(volume(&[])).expect("json")),
        "PATCH" | "POST" | "PUT" => {
            let mut body = call.body.clone();
            if !body.is_object() {
                body = json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume", "metadata": {"name": "x"}, "spec": {"mountPath": "/m"}});
            }
            if body.get("metadata").is_none() {
                body["metadata"] = json!({"name": "x"});
            }
            (StatusCode::OK, body)
        }
        "DELETE" => (StatusCode::OK, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        _ => not_found(),
    }
}

fn volume(finalizers: &[&str]) -> SharedVolume {
    serde_json::from_value(json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1",
        "kind": "SharedVolume",
        "metadata": {
            "name": "data", "namespace": "team-a", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "resourceVersion": "41", "generation": 1, "finalizers": finalizers,
        },
        "spec": {
            "mountPath": "/opt/mnt/data", "storageClassName": "standard", "storage": {"capacity": "1Gi"},
            "source": {"http": {"url": "https://example.com/data.tar.gz"}}
        }
    }))
    .expect("volume")
}

#[tokio::test]
async fn finalizer_patches_are_guarded_json_patches() {
    let (client, calls) = mock_client(Arc::new(empty_cluster));
    kube_io::add_finalizer(&client, &volume(&[])).await.expect("add");
    kube_io::add_finalizer(&client, &volume(&["other.io/x"])).await.expect("add second");
    kube_io::remove_finalizer(&client, &volume(&["other.io/x", "sharedvolume.sv/finalizer"])).await.expect("remove");
    kube_io::remove_finalizer(&client, &volume(&["other.io/x"])).await.expect("nothing to remove");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 3, "removing an absent finalizer sends nothing: {calls:#?}");
    for call in &calls {
        assert_eq!(call.line(), "PATCH /apis/sv.sharedvolume.io/v1alpha1/namespaces/team-a/sharedvolumes/data");
        assert_eq!(call.content_type, "application/json-patch+json");
    }
    assert_eq!(
        calls[0].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["sharedvolume.sv/finalizer"]}
        ])
    );
    assert_eq!(
        calls[1].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["other.io/x"]},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "sharedvolume.sv/finalizer"}
        ])
    );
    assert_eq!(
        calls[2].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/1", "value": "sharedvolume.sv/finalizer"},
            {"op": "remove", "path": "/metadata/finalizers/1"}
        ])
    );
}

#[tokio::test]
async fn objects_are_server_side_applied_with_our_field_manager() {
    let (client, calls) = mock_client(Arc::new(empty_cluster));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        json!({"metadata": {"name": "sv-x-credentials", "namespace": "team-a"}, "data": {"password": "cHc="}}),
    )
    .expect("secret");
    let cache = sv_operator::controller::cache::ClusterCache::detached(&client);
    kube_io::apply(&client, &cache, &Desired::Secret(secret)).await.expect("apply");
    let pv: k8s_openapi::api::core::v1::PersistentVolume =
        serde_json::from_value(json!({"metadata": {"name": "sv-x"}})).expect("pv");
    kube_io::apply(&client, &cache, &Desired::PersistentVolume(pv)).await.expect("apply pv");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls[0].line(), "PATCH /api/v1/namespaces/team-a/secrets/sv-x-credentials");
    assert_eq!(calls[1].line(), "PATCH /api/v1/persistentvolumes/sv-x");
    for call in &calls {
        assert_eq!(call.content_type, "application/apply-patch+yaml");
        assert!(call.query.contains(&format!("fieldManager={FIELD_MANAGER}")), "{}", call.query);
        assert!(call.query.contains("force=true"), "{}", call.query);
        assert!(call.body["apiVersion"] == "v1" && call.body["kind"].is_string(), "{}", call.body);
    }
}

#[tokio::test]
async fn status_is_applied_to_the_subresource_without_the_syncers_fields() {
    let (client, calls) = mock_client(Arc::new(empty_cluster));
    let status = VolumeStatus {
        phase: Some("Ready".into()),
        sync: Some(sv_operator::api::SyncStatus { revision: Some("abc".into()), ..Default::default() }),
        ..Default::default()
    };
    kube_io::apply_status(&client, &volume(&[]), &status).await.expect("status");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.line(), "PATCH /apis/sv.sharedvolume.io/v1alpha1/namespaces/team-a/sharedvolumes/data/status");
    assert_eq!(call.content_type, "application/apply-patch+yaml");
    assert!(call.query.contains("fieldManager=sharedvolume-operator") && call.query.contains("force=true"));
    assert_eq!(
        call.body,
        json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume", "status": {"phase": "Ready"}})
    );
}

#[tokio::test]
async fn reference_value_is_written_with_an_optimistic_lock() {
    let (client, calls) = mock_client(Arc::new(empty_cluster));
    kube_io::set_reference_value(&client, &volume(&[]), "sv-abcdefghijkl").await.expect("patch");
    let call = calls.lock().expect("lock")[0].clone();
    assert_eq!(call.content_type, "application/merge-patch+json");
    assert_eq!(
        call.body,
        json!({"metadata": {"resourceVersion": "41"}, "spec": {"referenceValue": "sv-abcdefghijkl"}})
    );
}

fn context(client: Client) -> Arc<Context> {
    let (pods, _pw) = reflector::store();
    let (nodes, _nw) = reflector::store();
    let (own_pods, _sw) = reflector::store();
    let clock: SharedClock = Arc::new(TokioClock::starting_at(Timestamp::UNIX_EPOCH));
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let settings = Settings { nfs_image: "nfs:test".into(), syncer_image: "syncer:test".into(), ..Settings::default() };
    let cluster = sv_operator::controller::cache::ClusterCache::detached(&client);
    let caches = Caches { pods, nodes, own_pods, cluster };
    Arc::new(Context::new(client, settings, clock, metrics, caches, "test-0"))
}

#[tokio::test]
async fn reconciling_a_new_volume_makes_the_expected_requests() {
    let (client, calls) = mock_client(Arc::new(empty_cluster));
    let action = reconcile(Arc::new(volume(&[])), context(client)).await.expect("reconcile");
    assert!(format!("{action:?}").contains("10s"), "pending volumes are rechecked soon: {action:?}");
    let calls = calls.lock().expect("lock").clone();
    let writes: Vec<String> = calls.iter().filter(|c| c.method != "GET").map(Call::line).collect();
    let reference_patch =
        calls.iter().find(|c| c.content_type == "application/merge-patch+json").expect("reference value written");
    let reference = reference_patch.body["spec"]["referenceValue"].as_str().expect("reference value").to_string();
    // Guarded by the version the finalizer patch stored, not the one read before it (which
    // would conflict every time).
    assert_eq!(reference_patch.body["metadata"]["resourceVersion"], "42");
    let vol = "/apis/sv.sharedvolume.io/v1alpha1/namespaces/team-a/sharedvolumes/data";
    assert_eq!(
        writes,
        [
            format!("PATCH {vol}"),
            format!("PATCH {vol}"),
            format!("PATCH /api/v1/namespaces/team-a/persistentvolumeclaims/nfs-{reference}-data"),
            format!("PATCH /api/v1/namespaces/team-a/services/nfs-{reference}"),
            format!("PATCH /api/v1/namespaces/team-a/secrets/nfs-{reference}-writer"),
            format!("PATCH /apis/apps/v1/namespaces/team-a/statefulsets/nfs-{reference}"),
            format!("PATCH /apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/nfs-{reference}"),
            format!("PATCH /api/v1/namespaces/team-a/serviceaccounts/{reference}-syncer"),
            format!("PATCH /apis/coordination.k8s.io/v1/namespaces/team-a/leases/{reference}-syncer"),
            format!("PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/{reference}-syncer"),
            format!("PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings/{reference}-syncer"),
            format!("PATCH {vol}/status"),
            "POST /apis/events.k8s.io/v1/namespaces/team-a/events".to_string(),
        ]
    );
    let status = calls.iter().find(|c| c.path.ends_with("/status")).expect("status call");
    assert_eq!(status.body["status"]["phase"], "Pending");
    assert_eq!(status.body["status"]["observedGeneration"], 1);
    let event = calls.iter().find(|c| c.path.ends_with("/events")).expect("event");
    assert_eq!(event.body["reason"], "Pending");
    assert_eq!(event.body["regarding"]["name"], "data");
    assert_eq!(event.body["reportingController"], "sharedvolume-operator");
}

#[tokio::test]
async fn a_rejected_object_is_reported_on_status_and_events() {
    let handler = |call: &Call| {
        if call.method == "PATCH" && call.path.contains("/statefulsets/") {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": "StatefulSet.apps \"nfs\" is invalid: spec.template: bad"}),
            );
        }
        empty_cluster(call)
    };
    let (client, calls) = mock_client(Arc::new(handler));
    let result = reconcile(Arc::new(volume(&["sharedvolume.sv/finalizer"])), context(client)).await;
    let error = result.expect_err("the rejection is an error, so the volume backs off");
    assert!(error.to_string().contains("is invalid"), "{error}");
    let calls = calls.lock().expect("lock").clone();
    let status = calls.iter().find(|c| c.path.ends_with("/status")).expect("status reported");
    assert_eq!(status.body["status"]["phase"], "Failed");
    assert!(status.body["status"]["message"].as_str().unwrap_or_default().contains("is invalid"));
    let event = calls.iter().find(|c| c.path.ends_with("/events")).expect("event published");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "ApplyFailed");
}

#[tokio::test]
async fn repeated_events_become_a_series() {
    let (client, calls) = mock_client(Arc::new(empty_cluster));
    let clock: SharedClock = Arc::new(TokioClock::starting_at(Timestamp::UNIX_EPOCH));
    let recorder = sv_operator::controller::events::Recorder::new(client, clock, "sharedvolume-operator", "test-0");
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("ClusterSharedVolume".into()),
        name: Some("shared".into()),
        uid: Some("u".into()),
        ..Default::default()
    };
    let event = sv_operator::plan::PlannedEvent { warning: true, reason: "Failed".into(), note: "boom".into() };
    recorder.publish(&regarding, &event).await.expect("first");
    recorder.publish(&regarding, &event).await.expect("second");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls[0].line(), "POST /apis/events.k8s.io/v1/namespaces/default/events");
    let name = calls[0].body["metadata"]["name"].as_str().expect("name").to_string();
    assert_eq!(calls[1].line(), format!("PATCH /apis/events.k8s.io/v1/namespaces/default/events/{name}"));
    assert_eq!(calls[1].body["series"]["count"], 2);
}

/// One Lease held in memory, with resourceVersion checks on replace, like the API server.
fn lease_server() -> Arc<Handler> {
    let stored: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let version = Arc::new(Mutex::new(0u64));
    Arc::new(move |call: &Call| {
        let mut lease = stored.lock().expect("lock");
        let mut rv = version.lock().expect("lock");
        match call.method.as_str() {
            "GET" => match lease.as_ref() {
                Some(l) => (StatusCode::OK, l.clone()),
                None => not_found(),
            },
            "POST" if lease.is_some() => (
                StatusCode::CONFLICT,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409}),
            ),
            "POST" | "PUT" => {
                let sent = call.body["metadata"]["resourceVersion"].as_str().map(str::to_string);
                let current =
                    lease.as_ref().and_then(|l| l["metadata"]["resourceVersion"].as_str().map(str::to_string));
                if call.method == "PUT" && sent != current {
                    return (
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
                    );
                }
                *rv += 1;
                let mut body = call.body.clone();
                body["metadata"]["resourceVersion"] = json!(rv.to_string());
                *lease = Some(body.clone());
                (StatusCode::OK, body)
            }
            _ => not_found(),
        }
    })
}

#[tokio::test(start_paused = true)]
async fn leader_election_hands_over_on_release_and_on_expiry() {
    use sv_operator::controller::leader::{LeaderConfig, LeaderElector};
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    let (client, _calls) = mock_client(lease_server());
    let clock: SharedClock = Arc::new(TokioClock::starting_at(Timestamp::UNIX_EPOCH));
    let start = |identity: &str| {
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let elector = LeaderElector::new(client.clone(), LeaderConfig::new("ops", identity), clock.clone());
        let task = tokio::spawn(elector.run(tx, stop.clone().cancelled_owned()));
        (rx, stop, task)
    };
    let (mut a, stop_a, task_a) = start("a");
    a.wait_for(|leading| *leading).await.expect("a leads");
    let (mut b, stop_b, task_b) = start("b");
    // b keeps seeing a's renewals, so it never takes over while a is alive.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert!(!*b.borrow_and_update(), "b must not lead while a renews");

    // a shuts down and releases the lease: b takes over within one retry period.
    stop_a.cancel();
    task_a.await.expect("a stops");
    assert!(!*a.borrow());
    let handover = tokio::time::Instant::now();
    b.wait_for(|leading| *leading).await.expect("b leads");
    assert!(handover.elapsed() <= std::time::Duration::from_secs(3), "took {:?}", handover.elapsed());

    // b dies without releasing: c waits out the lease duration (15 s) from its own observation.
    let (mut c, stop_c, task_c) = start("c");
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(!*c.borrow_and_update());
    task_b.abort();
    let crash = tokio::time::Instant::now();
    c.wait_for(|leading| *leading).await.expect("c leads");
    let waited = crash.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(13) && waited <= std::time::Duration::from_secs(20),
        "took {waited:?}"
    );
    drop(stop_b);
    stop_c.cancel();
    task_c.await.expect("c stops");
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_api_steps_down_before_another_may_take_over() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use sv_operator::controller::leader::{LeaderConfig, LeaderElector};
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    let server = lease_server();
    let clock: SharedClock = Arc::new(TokioClock::starting_at(Timestamp::UNIX_EPOCH));
    let start = |identity: &str, cut_off: Arc<AtomicBool>| {
        let (client, _) = mock_client_cut_off(server.clone(), cut_off);
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let elector = LeaderElector::new(client, LeaderConfig::new("ops", identity), clock.clone());
        let task = tokio::spawn(elector.run(tx, stop.clone().cancelled_owned()));
        (rx, stop, task)
    };
    let partition = Arc::new(AtomicBool::new(false));
    let (mut a, stop_a, task_a) = start("a", partition.clone());
    a.wait_for(|leading| *leading).await.expect("a leads");
    let (mut b, stop_b, task_b) = start("b", Arc::default());
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;

    // a's requests now hang, as on a partitioned connection: without a deadline on each attempt
    // it would believe it leads for ever.
    partition.store(true, Ordering::SeqCst);
    let cut = tokio::time::Instant::now();
    a.wait_for(|leading| !*leading).await.expect("a steps down");
    let stepped_down = cut.elapsed();
    b.wait_for(|leading| *leading).await.expect("b takes over");
    let took_over = cut.elapsed();
    assert!(stepped_down <= std::time::Duration::from_secs(12), "a stepped down after {stepped_down:?}");
    assert!(took_over > stepped_down, "b leads after {took_over:?}, a led until {stepped_down:?}: both at once");
    stop_a.cancel();
    stop_b.cancel();
    task_a.abort();
    task_b.await.expect("b stops");
}
