//! The whole simulated cluster on turmoil with the real operator: the bundled examples settle,
//! deletion cleans up, and the same seed replays the same trace.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use sv_sim::world::{API_HOST, API_PORT, World, WorldConfig};

#[test]
fn the_examples_settle_and_clean_up_with_the_same_outcome_every_run() {
    let first = sv_sim::examples::run(7).expect("run");
    eprintln!("{first}");
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let no_source: Vec<_> = first.volumes.iter().filter(|v| v.name.starts_with("nosource")).collect();
    assert_eq!(no_source.len(), 2);
    for volume in &no_source {
        assert_eq!(volume.phase, "Ready", "{volume:?}");
        assert!(volume.nfs_address.starts_with("10.96."), "a ClusterIP from the service range: {volume:?}");
    }
    // Every volume syncs from the simulated sources and is Ready, but the one naming an NFS server
    // Service this cluster does not have.
    for volume in &first.volumes {
        let expected = if volume.name == "http-nfs-service-csv" { "Failed" } else { "Ready" };
        assert_eq!(volume.phase, expected, "{volume:?}");
    }
    assert!(first.left_after_delete.is_empty(), "{:?}", first.left_after_delete);
}

/// `sv-sim` as a program, its output and whether it succeeded.
fn sv_sim(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sv-sim")).args(args).output().expect("sv-sim runs");
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Issue 13's replay: with every program in the run, the main job run twice with one seed, each
/// time in a process of its own, writes, answers and exports the same bytes in the same order.
#[test]
fn one_seed_replays_the_main_job_byte_for_byte_in_separate_processes() {
    let (same, output) = sv_sim(&["run", "--seed", "7", "--check-determinism"]);
    assert!(same, "{output}");
    assert!(output.contains("Deterministic: both runs have trace hash"), "{output}");
}

/// And another seed is another run (a scenario with the operator, in separate processes).
#[test]
fn another_seed_gives_another_trace() {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/nfs-server-node-loss.yaml");
    let hash = |seed: &str| {
        let (ok, output) = sv_sim(&["run", scenario, "--seed", seed]);
        assert!(ok, "{output}");
        let line = output.lines().find(|l| l.contains("trace hash")).expect("the closing line").to_string();
        line.split("trace hash ").nth(1).and_then(|rest| rest.split(';').next()).expect("a hash").to_string()
    };
    let first = hash("11");
    assert_eq!(first, hash("11"), "the same seed in another process");
    assert_ne!(first, hash("12"), "another seed");
}

/// Worlds run one after another in one process replay each other and a run in a process of its
/// own, across an API server restart and the crash of every pod of a node: a crashed host's
/// connections close in the order they were opened, not in the order tokio drops its tasks
/// (which depends on how many tasks the process ran before; `sim/src/teardown.rs`), and the CEL
/// parser, whose process-wide caches make maps as they fill, runs off the world's thread
/// (`sim/src/api/cel.rs`).
#[test]
fn worlds_one_after_another_replay_each_other_across_crashes() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/cleanup-across-faults.yaml");
    let run = || {
        let loaded = sv_sim::scenario::Scenario::load(std::path::Path::new(file)).expect("the scenario");
        sv_sim::os_random::on_new_thread(move || {
            let (report, _) = loaded.run_with(false).expect("the run");
            assert!(report.replayable, "a world on a new thread draws its keys from the seed");
            report.trace_hash
        })
    };
    let first = run();
    assert_eq!(first, run(), "a second world replays the first");
    let (ok, output) = sv_sim(&["run", file]);
    assert!(ok, "{output}");
    assert!(output.contains(&format!("trace hash {first};")), "a process of its own replays them: {output}");
}

/// A busy cluster without the operator: workloads, claims, a lost node, deletions.
fn busy_run(seed: u64) -> String {
    let mut world = World::new(WorldConfig { seed, operator: false, ..WorldConfig::default() }).expect("a world");
    world.run_for(Duration::from_secs(1)).expect("run");
    let mut objects =
        vec![json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "standard"},
                                  "provisioner": "sim", "reclaimPolicy": "Delete"})];
    for i in 0..5 {
        objects.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("web-{i}"), "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": format!("web-{i}")}},
                     "template": {"metadata": {"labels": {"app": format!("web-{i}")}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
        }));
        objects.push(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": format!("db-{i}"), "namespace": "default"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": format!("db-{i}")}},
                     "template": {"metadata": {"labels": {"app": format!("db-{i}")}}, "spec": {"containers": [{"name": "c", "image": "postgres:17"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                                               "resources": {"requests": {"storage": "1Gi"}}}}]},
        }));
        objects.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("web-{i}"), "namespace": "default"},
                            "spec": {"selector": {"app": format!("web-{i}")}, "ports": [{"port": 80}]}}));
    }
    for result in world.create_all(objects) {
        result.expect("create");
    }
    world.run_for(Duration::from_secs(20)).expect("run");
    world.set_node_ready("node-2", false);
    world.run_for(Duration::from_secs(330)).expect("run");
    let mut state = world.api.state();
    let rt = state.registry.find("apps", "v1", "deployments").cloned().expect("deployments");
    world.api.delete_in(&mut state, &rt, "default", "web-0", &Default::default()).expect("delete");
    drop(state);
    world.run_for(Duration::from_secs(10)).expect("run");
    world.trace_hash()
}

#[test]
fn same_seed_same_trace() {
    let first = busy_run(11);
    assert_eq!(first, busy_run(11), "a replay writes the same objects in the same order");
    assert_ne!(first, busy_run(12), "the seed reaches the trace (generated names, uids)");
}

/// A client reads the API for a few seconds; `fault` makes the server refuse its pod lists, and
/// `partition` cuts it off from the API server and repairs the link at once.
fn reading_run(seed: u64, fault: bool, partition: bool) -> String {
    let mut world = World::new(WorldConfig { seed, operator: false, ..WorldConfig::default() }).expect("a world");
    if fault {
        world.api.set_request_fault(Some(Arc::new(|_, verb, resource| {
            (verb == "list" && resource == "configmaps").then_some(503)
        })));
    }
    world.sim.client("reader", async {
        let client = sv_sim::net::kube_client(API_HOST, API_PORT)?;
        let maps: Api<ConfigMap> = Api::all(client);
        for _ in 0..3 {
            let _ = maps.list(&Default::default()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    });
    world.run_for(Duration::from_secs(2)).expect("run");
    if partition {
        world.partition("reader", API_HOST);
        world.repair("reader", API_HOST);
    }
    world.run_for(Duration::from_secs(5)).expect("run");
    world.trace_hash()
}

#[test]
fn the_trace_covers_answers_injected_faults_and_host_events() {
    let plain = reading_run(11, false, false);
    assert_eq!(plain, reading_run(11, false, false), "a replay");
    // Neither changes what is written: only the answers and the host events tell these apart.
    assert_ne!(plain, reading_run(11, true, false), "refused lists");
    assert_ne!(plain, reading_run(11, false, true), "a partition");
}

#[test]
fn a_restarted_api_server_keeps_its_data_and_clients_recover() {
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    world.run_for(Duration::from_secs(1)).expect("run");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
    });
    world.create_all([deployment]).into_iter().for_each(|r| {
        r.expect("create");
    });
    let ready_pods = |api: &sv_sim::api::ApiServer| {
        let state = api.state();
        let pods = sv_sim::api::ResourceId::new("", "v1", "pods");
        state
            .store
            .list(&pods, Some("default"))
            .filter(|(_, p)| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count()
    };
    assert!(world.run_until(Duration::from_secs(30), |api| ready_pods(api) == 2).expect("run"), "two pods Ready");

    // A client on its own host follows ConfigMaps with the real kube-runtime watcher.
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let record = seen.clone();
    world.sim.client("watcher", async move {
        let client = sv_sim::net::kube_client(API_HOST, API_PORT)?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = event {
                record.lock().expect("lock").insert(cm.name_any());
            }
        }
        Ok(())
    });
    let config_map = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
    world.create_all([config_map("before")]).into_iter().for_each(|r| {
        r.expect("create");
    });
    let saw = |name: &'static str| {
        let seen = seen.clone();
        move |_: &sv_sim::api::ApiServer| seen.lock().expect("lock").contains(name)
    };
    assert!(world.run_until(Duration::from_secs(30), saw("before")).expect("run"), "the watcher follows");

    let before = world.api.state().store.len();
    world.crash("api");
    world.run_for(Duration::from_secs(5)).expect("run");
    world.bounce("api");
    world.run_for(Duration::from_secs(5)).expect("run");
    assert_eq!(world.api.state().store.len(), before, "storage survives the restart");
    assert_eq!(ready_pods(&world.api), 2);
    world.create_all([config_map("after")]).into_iter().for_each(|r| {
        r.expect("create");
    });
    let recovered = world.run_until(Duration::from_secs(120), saw("after")).expect("run");
    assert!(
        recovered,
        "the watcher missed what was created after the restart; it saw {:?}",
        seen.lock().expect("lock")
    );
}

#[test]
fn a_lost_node_keeps_its_evicted_pods_terminating_until_it_returns() {
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    world.run_for(Duration::from_secs(1)).expect("run");
    let template = |app: &str| json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "postgres:17"}]}});
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db")},
    });
    // Three replicas spread over the three nodes: one shares the lost node with db-0.
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")},
    });
    world.create_all([sts, rs]).into_iter().for_each(|r| {
        r.expect("create");
    });
    let pods = |api: &sv_sim::api::ApiServer| -> Vec<Value> {
        let state = api.state();
        let id = sv_sim::api::ResourceId::new("", "v1", "pods");
        state.store.list(&id, Some("default")).map(|(_, p)| (**p).clone()).collect()
    };
    let scheduled = |api: &sv_sim::api::ApiServer| {
        pods(api).len() == 4 && pods(api).iter().all(|p| p["spec"]["nodeName"].is_string())
    };
    assert!(world.run_until(Duration::from_secs(30), scheduled).expect("run"));
    let db = pods(&world.api).into_iter().find(|p| p["metadata"]["name"] == "db-0").expect("db-0");
    let lost = db["spec"]["nodeName"].as_str().expect("scheduled").to_string();
    world.set_node_ready(&lost, false);
    world.run_for(Duration::from_secs(400)).expect("run");

    let now = pods(&world.api);
    let on_lost: Vec<&Value> = now.iter().filter(|p| p["spec"]["nodeName"] == lost.as_str()).collect();
    assert_eq!(on_lost.len(), 2, "db-0 and one web pod stay on the lost node: {on_lost:#?}");
    assert!(on_lost.iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null()), "both evicted after 300 s");
    let db_pods: Vec<&Value> = now.iter().filter(|p| p["metadata"]["labels"]["app"] == "db").collect();
    assert_eq!(db_pods.len(), 1, "a StatefulSet makes no db-0 while db-0 exists");
    let web_live =
        now.iter().filter(|p| p["metadata"]["labels"]["app"] == "web" && p["metadata"]["deletionTimestamp"].is_null());
    assert!(
        web_live.clone().count() == 3 && web_live.clone().all(|p| p["spec"]["nodeName"] != lost.as_str()),
        "a ReplicaSet replaces at once"
    );
    let node = {
        let state = world.api.state();
        let id = sv_sim::api::ResourceId::new("", "v1", "nodes");
        (**state.store.get(&id, "", &lost).expect("the node")).clone()
    };
    let taints = node["spec"]["taints"].to_string();
    assert!(taints.contains("node.kubernetes.io/unreachable") && taints.contains("NoExecute"), "{taints}");

    // The node returns: its kubelet removes what was deleted meanwhile, and db-0 starts again.
    world.set_node_ready(&lost, true);
    let replaced = |api: &sv_sim::api::ApiServer| {
        let now = pods(api);
        now.len() == 4
            && now.iter().all(|p| p["metadata"]["deletionTimestamp"].is_null() && p["spec"]["nodeName"].is_string())
    };
    assert!(world.run_until(Duration::from_secs(60), replaced).expect("run"), "{:#?}", pods(&world.api));
    let db = pods(&world.api).into_iter().find(|p| p["metadata"]["name"] == "db-0").expect("db-0");
    assert_ne!(db["metadata"]["uid"], on_lost_uid(&now, "db-0"), "a new db-0");
}

#[test]
fn a_force_deleted_pod_of_a_lost_node_leaves_its_disk_attached_for_six_minutes() {
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "postgres:17"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard", "resources": {"requests": {"storage": "1Gi"}}}}]},
    });
    world.create_all([sv_sim::examples::storage_class(), sts]).into_iter().for_each(|r| {
        r.expect("create");
    });
    let get = |api: &sv_sim::api::ApiServer, plural: &str, name: &str| -> Option<Value> {
        let state = api.state();
        let id = match plural {
            "volumeattachments" => sv_sim::api::ResourceId::new("storage.k8s.io", "v1", plural),
            _ => sv_sim::api::ResourceId::new("", "v1", plural),
        };
        let namespace = if plural == "pods" { "default" } else { "" };
        state.store.get(&id, namespace, name).map(|o| (**o).clone())
    };
    let attachments = |api: &sv_sim::api::ApiServer| -> Vec<Value> {
        let state = api.state();
        let id = sv_sim::api::ResourceId::new("storage.k8s.io", "v1", "volumeattachments");
        state.store.list(&id, None).map(|(_, a)| (**a).clone()).collect()
    };
    let running =
        |api: &sv_sim::api::ApiServer| get(api, "pods", "db-0").is_some_and(|p| p["status"]["phase"] == "Running");
    assert!(world.run_until(Duration::from_secs(60), running).expect("run"));
    let first = get(&world.api, "pods", "db-0").expect("db-0")["spec"]["nodeName"].as_str().expect("node").to_string();
    let attached = attachments(&world.api);
    assert_eq!(attached.len(), 1, "{attached:#?}");
    assert_eq!(attached[0]["spec"]["nodeName"], first.as_str());
    assert_eq!(attached[0]["status"]["attached"], true);

    // The node is lost; after the eviction someone force-deletes the pod without declaring the
    // node down. The replacement is scheduled elsewhere but cannot have the disk yet.
    world.set_node_ready(&first, false);
    world.run_for(Duration::from_secs(320)).expect("run");
    {
        let mut state = world.api.state();
        let rt = state.registry.find("", "v1", "pods").cloned().expect("pods");
        let force = sv_sim::api::DeleteOptions { grace_period: Some(0), ..Default::default() };
        world.api.delete_in(&mut state, &rt, "default", "db-0", &force).expect("force delete");
    }
    let forced_at = world.elapsed();
    let elsewhere = |api: &sv_sim::api::ApiServer| {
        get(api, "pods", "db-0").is_some_and(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| n != first))
    };
    assert!(world.run_until(Duration::from_secs(30), elsewhere).expect("run"));
    world.run_for(Duration::from_secs(60)).expect("run");
    let waiting = get(&world.api, "pods", "db-0").expect("db-0");
    assert_eq!(waiting["status"]["phase"], "Pending");
    let message = waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"].to_string();
    assert!(message.contains("Multi-Attach error"), "{message}");

    // After the attach/detach controller's six minutes the disk is detached and attached again.
    assert!(world.run_until(Duration::from_secs(400), running).expect("run"));
    let waited = world.elapsed() - forced_at;
    assert!(waited >= Duration::from_secs(360) && waited < Duration::from_secs(380), "{waited:?}");
    let attached = attachments(&world.api);
    assert_eq!(attached.len(), 1);
    assert_ne!(attached[0]["spec"]["nodeName"], first.as_str());
}

fn on_lost_uid(pods: &[Value], name: &str) -> Value {
    pods.iter().find(|p| p["metadata"]["name"] == name).map(|p| p["metadata"]["uid"].clone()).unwrap_or_default()
}

#[test]
fn the_real_kube_client_lists_and_watches_over_the_simulated_network() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{ConfigMap, Node};
    use kube::api::{Api, PostParams};
    use kube::runtime::watcher;

    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    world.sim.client("probe", async {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        // A long watch holds one pooled connection; other requests open more.
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
        let mut pod_events = watcher(pods, watcher::Config::default().labels("x=y")).boxed();
        tokio::spawn(async move { while pod_events.next().await.is_some() {} });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let nodes: Api<Node> = Api::all(client.clone());
        assert_eq!(nodes.list(&Default::default()).await?.items.len(), 3);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let mut events = watcher(maps.clone(), watcher::Config::default()).boxed();
        let mut seen = Vec::new();
        let mut created = false;
        while seen.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(30), events.next()).await? {
                Some(Ok(watcher::Event::Apply(cm))) => seen.push(cm.metadata.name.unwrap_or_default()),
                Some(Ok(watcher::Event::InitDone)) if !created => {
                    created = true;
                    for name in ["a", "b"] {
                        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}}))?;
                        maps.create(&PostParams::default(), &cm).await?;
                    }
                }
                Some(Ok(watcher::Event::InitApply(cm))) => seen.push(cm.metadata.name.unwrap_or_default()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        assert_eq!(seen, ["kube-root-ca.crt", "a", "b"]);
        Ok(())
    });
    world.sim.run().expect("the client finishes");
}

#[test]
fn the_operator_recovers_from_api_errors_a_partition_and_an_api_server_restart() {
    use sv_sim::api::Faults;
    use sv_sim::examples::{example, install, volumes};

    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig::default()).expect("a world");
    assert!(install(&world).expect("install").is_empty());
    for result in world.create_all(example("01-no-source.yaml").expect("example")) {
        result.expect("create");
    }
    let all_ready = |api: &sv_sim::api::ApiServer| {
        let all = volumes(api);
        all.len() == 2 && all.iter().all(|v| v["status"]["phase"] == "Ready")
    };
    // One request in twenty fails with a 500 for the first two simulated minutes of the setup (a
    // reconcile makes a dozen requests or more, so most attempts fail and back off, up to five
    // minutes apart); once the failures stop, every volume gets Ready within one more back-off.
    world.set_api_faults(Faults {
        fail_rate: 0.05,
        fail_code: 500,
        delay: Duration::from_millis(5),
        ..Faults::default()
    });
    world.run_for(Duration::from_secs(120)).expect("run");
    world.set_api_faults(Faults::default());
    let ready = world.run_until(Duration::from_secs(330), all_ready).expect("run");
    let phases: Vec<Value> = volumes(&world.api).iter().map(|v| v["status"]["message"].clone()).collect();
    assert!(ready, "Ready once the failures stop, after {:?}: {phases:#?}", world.elapsed());

    // Cut the operator off, change a volume meanwhile, heal: the change is reconciled.
    world.partition("operator", "api");
    let mut state = world.api.state();
    let rt = state.registry.find("sv.sharedvolume.io", "v1alpha1", "sharedvolumes").cloned().expect("type");
    world.api.delete_in(&mut state, &rt, "default", "nosource-sv", &Default::default()).expect("delete");
    drop(state);
    world.run_for(Duration::from_secs(30)).expect("run");
    assert_eq!(volumes(&world.api).len(), 2, "the finalizer holds the volume while the operator is cut off");
    world.repair("operator", "api");
    let gone = world.run_until(Duration::from_secs(300), |api| volumes(api).len() == 1).expect("run");
    assert!(gone, "after the partition heals the operator finishes the deletion");

    // Restart the API server: watches break, the operator re-lists and keeps working.
    world.crash("api");
    world.run_for(Duration::from_secs(3)).expect("run");
    world.bounce("api");
    let mut state = world.api.state();
    let rt = state.registry.find("sv.sharedvolume.io", "v1alpha1", "clustersharedvolumes").cloned().expect("type");
    world.api.delete_in(&mut state, &rt, "", "nosource-csv", &Default::default()).expect("delete");
    drop(state);
    let clean = world
        .run_until(Duration::from_secs(300), |api| {
            volumes(api).is_empty() && sv_sim::examples::managed_objects(api).is_empty()
        })
        .expect("run");
    assert!(clean, "left: {:?}", sv_sim::examples::managed_objects(&world.api));
}

/// Invariant 7 on log lines: a program that logs a Secret's value stops the run, and the report
/// names the line without the value.
#[test]
fn a_program_logging_a_secret_value_breaks_the_run() {
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-credentials", "namespace": "default"},
                        "stringData": {"password": "correct-horse-battery"}});
    for result in world.create_all([secret]) {
        result.expect("create");
    }
    world.run_for(Duration::from_secs(1)).expect("nothing logged it yet");
    world.sim.client("leaky-program", async {
        tracing::info!(url = "https://ci:correct-horse-battery@git.example.com/repo.git", "fetching");
        Ok(())
    });
    let broken = world
        .run_for(Duration::from_secs(1))
        .expect_err("the line is caught")
        .downcast::<sv_sim::world::InvariantBroken>()
        .expect("an invariant, not another failure");
    assert_eq!(broken.invariant, sv_sim::invariants::LOGS);
    assert!(broken.detail.contains("url=https://ci:<the Secret value>@git.example.com"), "{}", broken.detail);
    assert!(!broken.to_string().contains("correct-horse-battery"), "{broken}");
}

#[test]
fn a_write_whose_reply_is_lost_is_committed_and_answered_with_a_timeout() {
    let world =
        World::new(WorldConfig { operator: false, programs: false, ..WorldConfig::default() }).expect("a world");
    world.set_api_faults(sv_sim::api::Faults { lost_reply_rate: 1.0, ..sv_sim::api::Faults::default() });
    let create = |name: &str| {
        sv_sim::api::Request::new(http::Method::POST, "/api/v1/namespaces/default/configmaps").with_json(
            "application/json",
            &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
        )
    };
    let answer = futures::executor::block_on(world.api.handle(create("lost")));
    assert_eq!(answer.code(), 504, "{answer:?}");
    let stored = |name: &str| {
        let state = world.api.state();
        let rt = state.registry.find("", "v1", "configmaps").expect("configmaps").id.clone();
        state.store.get(&rt, "default", name).is_some()
    };
    assert!(stored("lost"), "the write happened although its reply was lost");
    // Reads are answered as usual.
    let read = futures::executor::block_on(
        world.api.handle(sv_sim::api::Request::new(http::Method::GET, "/api/v1/namespaces/default/configmaps/lost")),
    );
    assert_eq!(read.code(), 200);
    world.set_api_faults(sv_sim::api::Faults::default());
    assert_eq!(futures::executor::block_on(world.api.handle(create("kept"))).code(), 201);
}

/// The administrator's requests (`World::create`, `apply`) are sent as kubectl sends them: they
/// wait for an API server that is down (one given up on is never sent once it is back), are sent
/// again after a conflict or overload, and carry kubectl's field managers, strict validation and
/// an apply's last-applied annotation.
#[test]
fn the_administrators_requests_are_sent_as_kubectl_sends_them() {
    sv_sim::init_test_logging();
    let config = WorldConfig { operator: false, programs: false, ..WorldConfig::default() };
    let mut world = World::new(config).expect("a world");
    let config_map = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let exists = |world: &World, name: &str| {
        let state = world.api.state();
        let rt = state.registry.find("", "v1", "configmaps").expect("configmaps").clone();
        state.store.get(&rt.id, "default", name).is_some()
    };
    world.create(config_map("first")).expect("answered").expect("created");
    assert!(exists(&world, "first"), "a namespaced object without a namespace goes to default");

    world.crash("api");
    let started = world.elapsed();
    let error = world.create(config_map("unsent")).expect_err("no answer while the API server is down");
    assert!(error.contains("after 10 attempts; the last: no answer within 30s"), "{error}");
    let waited = world.elapsed() - started;
    assert!(waited >= Duration::from_secs(300), "each attempt waits 30 s, then a second: {waited:?}");
    world.bounce("api");
    world.run_for(Duration::from_secs(5)).expect("run");
    assert!(!exists(&world, "unsent"), "an abandoned request is not sent when the server is back");
    world.create(config_map("later")).expect("answered").expect("created");
    assert!(exists(&world, "later"));

    // Conflicts and overload are sent again, as clients do; AlreadyExists is an answer.
    let refused = Arc::new(Mutex::new(0));
    let count = refused.clone();
    world.api.set_request_fault(Some(Arc::new(move |peer, verb, _: &str| {
        let mut count = count.lock().expect("lock");
        (peer.is_none() && verb == "create" && *count < 4).then(|| {
            *count += 1;
            if *count % 2 == 0 { 409 } else { 429 }
        })
    })));
    world.create(config_map("retried")).expect("answered").expect("created after two 409s and two 429s");
    assert_eq!(*refused.lock().expect("lock"), 4);
    assert!(exists(&world, "retried"));
    let again = world.create(config_map("retried")).expect("answered").expect_err("it exists");
    assert_eq!(again.reason(), "AlreadyExists", "{again:?}");
    world.api.set_request_fault(None);

    // What kubectl sends with them: an apply's annotation and field manager, strict validation.
    world.apply(config_map("applied")).expect("answered").expect("applied");
    let stored = {
        let state = world.api.state();
        let rt = state.registry.find("", "v1", "configmaps").expect("configmaps").clone();
        (**state.store.get(&rt.id, "default", "applied").expect("stored")).clone()
    };
    let last_applied = stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .expect("the last-applied annotation holds the object as JSON");
    assert_eq!(last_applied["metadata"]["name"], "applied");
    assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "kubectl-client-side-apply");
    assert!(sv_sim::examples::install(&world).expect("install").is_empty());
    let mut volume: Value = serde_saphyr::from_str(
        "{apiVersion: sv.sharedvolume.io/v1alpha1, kind: SharedVolume, metadata: {name: v}, spec: {mountPath: /mnt/v, storageClassName: standard, storage: {capacity: 1Gi, accessMode: ReadWrite}}}",
    )
    .expect("yaml");
    volume["spec"]["bogus"] = json!(1);
    let refused = world.create(volume).expect("answered").expect_err("strict validation refuses unknown fields");
    let sv_sim::api::ApiError::Status { body, .. } = &refused else { panic!("{refused:?}") };
    assert!(body["message"].as_str().is_some_and(|m| m.contains("unknown field \"spec.bogus\"")), "{body}");
}
