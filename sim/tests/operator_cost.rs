//! What the operator costs the API server once its volumes are settled: its reads come from watch
//! caches and it writes a child only when the child differs from the plan, so reconciles of
//! settled volumes (every resync, and every sync the syncer reports) send nothing but the leader
//! Lease's renewals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sv_sim::api::{ApiServer, Request};
use sv_sim::examples::{example, install, volumes};
use sv_sim::programs::{SimFile, SourceState};
use sv_sim::world::{World, WorldConfig};

/// `sharedvolume_reconciles_total`, summed over both kinds, scraped from the operator's `/metrics`.
fn reconciles(world: &mut World, client: &str) -> u64 {
    let scraped: Arc<Mutex<Option<String>>> = Arc::default();
    let out = scraped.clone();
    world.sim.client(client.to_string(), async move {
        let request = http::Request::get("/metrics").body(http_body_util::Full::new(bytes::Bytes::new()))?;
        let (_, body) = sv_sim::net::http_request("operator", 8080, request, Duration::from_secs(5)).await?;
        *out.lock().expect("lock") = Some(String::from_utf8_lossy(&body).into_owned());
        Ok(())
    });
    let done = scraped.clone();
    assert!(world.run_until(Duration::from_secs(30), |_| done.lock().expect("lock").is_some()).expect("run"));
    let text = scraped.lock().expect("lock").clone().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("sharedvolume_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

fn difference(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    after.iter().map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect()
}

/// The requests of `made` other than the leader Lease's renewals and the watches.
fn beside_lease_and_watches(made: &BTreeMap<(String, String), u64>) -> BTreeMap<(String, String), u64> {
    let leader_lease =
        |(verb, resource): &(String, String)| resource == "leases" && (verb == "get" || verb == "update");
    made.iter().filter(|(k, _)| !leader_lease(k) && k.0 != "watch").map(|(k, n)| (k.clone(), *n)).collect()
}

#[test]
fn settled_volumes_cost_the_api_server_nothing_but_the_leader_lease() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig::default()).expect("a world");
    assert!(install(&world).expect("install").is_empty());
    let identity = "http https://files.example.com/site/index.html";
    world.sources().set(
        identity,
        SourceState::Tree {
            revision: "v1".into(),
            files: vec![SimFile::new("index.html", "<h1>hi</h1>\n")],
            credential: None,
        },
    );
    let mut objects = example("01-no-source.yaml").expect("example");
    objects.push(json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": "site", "namespace": "default"},
        "spec": {"mountPath": "/site", "storageClassName": "standard", "storage": {"capacity": "1Gi"},
                 "syncInterval": "1m", "syncTimeout": "30s",
                 "source": {"http": {"url": "https://files.example.com/site/index.html"}}},
    }));
    for result in world.create_all(objects) {
        result.expect("create");
    }
    let all_ready = |api: &ApiServer| {
        let all = volumes(api);
        all.len() == 3 && all.iter().all(|v| v["status"]["phase"] == "Ready")
    };
    assert!(world.run_until(Duration::from_secs(600), all_ready).expect("run"), "every volume Ready");
    world.run_for(Duration::from_secs(60)).expect("settle");

    let (requests_before, reconciles_before) = (world.requests_from("operator"), reconciles(&mut world, "scrape-1"));
    let minutes = 20;
    world.run_for(Duration::from_secs(minutes * 60)).expect("run");
    let (requests_after, reconciles_after) = (world.requests_from("operator"), reconciles(&mut world, "scrape-2"));

    let made = difference(&requests_before, &requests_after);
    let reconciled = reconciles_after - reconciles_before;
    // Every 5 minutes a resync of each volume, and a reconcile for every sync the syncer reports
    // (one a minute): the check below is about those.
    assert!(reconciled >= minutes, "{reconciled} reconciles in {minutes} minutes: nothing was measured");
    let other = beside_lease_and_watches(&made);
    let writes: u64 =
        other.iter().filter(|((verb, _), _)| !matches!(verb.as_str(), "get" | "list")).map(|(_, n)| n).sum();
    let reads: u64 =
        other.iter().filter(|((verb, _), _)| matches!(verb.as_str(), "get" | "list")).map(|(_, n)| n).sum();
    assert_eq!(writes, 0, "writes of settled volumes over {reconciled} reconciles: {other:?}");
    assert!(reads <= 2 * reconciled, "{reads} reads over {reconciled} reconciles: {other:?}");
    let per_volume_minute = (writes + reads) as f64 / (3 * minutes) as f64;
    assert!(per_volume_minute < 1.0, "{per_volume_minute:.2} requests per volume per minute: {other:?}");
    eprintln!(
        "{reconciled} reconciles in {minutes} simulated minutes: {reads} reads, {writes} writes beside the leader Lease"
    );

    // Someone else changes a field the operator owns (its cache keeps only a fingerprint of those
    // fields, not the object): the operator notices and puts it back.
    let statefulsets = {
        let state = world.api.state();
        state.registry.types().find(|rt| rt.kind == "StatefulSet").expect("StatefulSets").id.clone()
    };
    let (namespace, name) = {
        let state = world.api.state();
        let found = state.store.list(&statefulsets, None).next().map(|((ns, name), _)| (ns.clone(), name.clone()));
        found.expect("an NFS server StatefulSet")
    };
    let path = format!("/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}");
    let edit = Request::new(http::Method::PATCH, &format!("{path}?fieldManager=kubectl-edit"))
        .with_json("application/merge-patch+json", &json!({"spec": {"replicas": 0}}));
    let before = world.requests_from("operator");
    assert_eq!(futures::executor::block_on(world.api.handle(edit)).code(), 200, "the edit");
    let replicas = |api: &ApiServer| {
        let state = api.state();
        state.store.get(&statefulsets, &namespace, &name).and_then(|s| s["spec"]["replicas"].as_i64())
    };
    assert_eq!(replicas(&world.api), Some(0));
    // A resync (every 5 minutes) at the latest.
    assert!(
        world.run_until(Duration::from_secs(330), |api| replicas(api) == Some(1)).expect("run"),
        "the operator did not restore the edited StatefulSet"
    );
    let made = difference(&before, &world.requests_from("operator"));
    assert!(made.contains_key(&("patch".to_string(), "statefulsets".to_string())), "{made:?}");
    eprintln!("to restore an edited StatefulSet: {made:?}");
}

/// A volume that waits for a Secret nobody created is Failed, and what it waits for is not watched
/// (that would cache every Secret of the cluster): it is checked again less and less often, so a
/// volume left Failed costs under one request per minute.
#[test]
fn a_volume_left_failed_costs_under_one_request_per_minute() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig::default()).expect("a world");
    assert!(install(&world).expect("install").is_empty());
    let volume = json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": "private", "namespace": "default"},
        "spec": {"mountPath": "/private", "storageClassName": "standard", "storage": {"capacity": "1Gi"},
                 "syncInterval": "1m", "syncTimeout": "30s",
                 "source": {"git": {"url": "https://git.example.com/org/private.git", "branch": "main",
                     "user": "demo", "passwordFromSecret": {"name": "not-there", "key": "token"}}}},
    });
    for result in world.create_all([volume]) {
        result.expect("create");
    }
    let failed = |api: &ApiServer| volumes(api).first().is_some_and(|v| v["status"]["phase"] == "Failed");
    assert!(world.run_until(Duration::from_secs(120), failed).expect("run"), "the volume is Failed");
    let secret_reads = |world: &World| {
        world.requests_from("operator").get(&("get".to_string(), "secrets".to_string())).copied().unwrap_or(0)
    };
    let first = secret_reads(&world);
    world.run_for(Duration::from_secs(5 * 60)).expect("run");
    let early = secret_reads(&world) - first;
    let minutes = 20;
    let before = world.requests_from("operator");
    world.run_for(Duration::from_secs(minutes * 60)).expect("run");
    let made = difference(&before, &world.requests_from("operator"));
    let requests: u64 = beside_lease_and_watches(&made).values().sum();
    let reads = made.get(&("get".to_string(), "secrets".to_string())).copied().unwrap_or(0);
    assert!(early >= 3, "{early} checks of the Secret in the first 5 minutes: the volume is not being retried");
    assert!(reads >= minutes / 5, "{reads} checks of the Secret in {minutes} minutes: not retried at all");
    let per_minute = requests as f64 / minutes as f64;
    assert!(per_minute < 1.0, "{per_minute:.2} requests per minute from a Failed volume: {made:?}");
    assert_eq!(volumes(&world.api)[0]["status"]["phase"], "Failed");
    eprintln!(
        "a Failed volume: {early} checks in its first 5 minutes, then {requests} requests in {minutes}: {made:?}"
    );
}
