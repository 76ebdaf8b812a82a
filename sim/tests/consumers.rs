//! Consumer pods of the test image use volumes over NFS, as a user's pods do: StatefulSets of
//! readers, writers and holders, mutated by the real webhook, mount through their PersistentVolume
//! (the Service's ClusterIP and the operator's mount options) and speak NFSv3 to the real `sv-nfs`
//! through kube-proxy. Across new revisions and restarts of the NFS servers, no reader sees a
//! mixed revision, no acknowledged write is lost and no held handle goes STALE; and each of those
//! checks fails when its property is broken on purpose.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sv_sim::api::ApiServer;
use sv_sim::examples::install;
use sv_sim::programs::consumer::{Invariant, Mounts, stateful_set};
use sv_sim::programs::{SimFile, SourceState};
use sv_sim::world::{InvariantBroken, World, WorldConfig};

const NAMESPACE: &str = "team-a";
const SOURCE_URL: &str = "https://files.example.com/docs.tar.gz";

fn source_identity() -> String {
    format!("http {SOURCE_URL}")
}

fn revision(revision: &str, files: &[(&str, &str)]) -> SourceState {
    SourceState::Tree {
        revision: revision.to_string(),
        files: files.iter().map(|(p, c)| SimFile::new(p, c)).collect(),
        credential: None,
    }
}

fn stored_volume(api: &ApiServer, name: &str) -> Option<Value> {
    let state = api.state();
    let rt = state.registry.find("sv.sharedvolume.io", "v1alpha1", "sharedvolumes")?;
    state.store.get(&rt.id, NAMESPACE, name).map(|o| (**o).clone())
}

fn consumer(name: &str, volume: &str, args: &[&str]) -> Value {
    stateful_set(NAMESPACE, name, Mounts::Shared(volume), &args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
}

/// Two volumes in team-a, both Ready, with the webhook serving: `docs` (read-only, synced from
/// the simulated HTTP source) and `scratch` (read-write, no source).
fn world(seed: u64) -> World {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { seed, ..WorldConfig::default() }).expect("a world");
    assert!(install(&world).expect("install").is_empty());
    world.sources().set(&source_identity(), revision("r1", &[("guide.md", "first guide"), ("api/index.md", "v1 api")]));
    let mut objects: Vec<Value> = serde_saphyr::from_multiple(include_str!("../../deploy/base/webhook.yaml"))
        .expect("deploy/base/webhook.yaml parses");
    objects.insert(0, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}));
    let volume = |name: &str, access: &str, source: Option<Value>| {
        let mut spec = json!({"mountPath": format!("/mnt/{name}"), "storageClassName": "standard",
                              "syncInterval": "10s", "storage": {"capacity": "1Gi", "accessMode": access}});
        if let Some(source) = source {
            spec["source"] = source;
        }
        json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
               "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
    };
    objects.push(volume("docs", "ReadOnly", Some(json!({"http": {"url": SOURCE_URL}}))));
    objects.push(volume("scratch", "ReadWrite", None));
    for result in world.create_all(objects) {
        result.expect("create");
    }
    let ready = |api: &ApiServer| {
        sv_sim::install::webhook_serving(api)
            && ["docs", "scratch"]
                .iter()
                .all(|v| stored_volume(api, v).is_some_and(|v| v["status"]["phase"] == "Ready"))
    };
    assert!(
        world.run_until(Duration::from_secs(600), ready).expect("run"),
        "the webhook serves and both volumes are Ready"
    );
    world
}

fn start_consumers(world: &World) {
    let sets = [
        consumer("reader", "docs", &["reader", "--mount=/mnt/docs", "--every=1s"]),
        consumer("holder", "docs", &["holder", "--mount=/mnt/docs", "--every=2s"]),
        consumer("writer", "scratch", &["writer", "--mount=/mnt/scratch", "--stable=unstable", "--every=1s"]),
        consumer("syncwriter", "scratch", &["writer", "--mount=/mnt/scratch", "--stable=file-sync", "--every=1s"]),
        consumer("rwholder", "scratch", &["holder", "--mount=/mnt/scratch", "--every=2s"]),
    ];
    for result in world.create_all(sets) {
        result.expect("create");
    }
}

/// Every consumer has completed at least `rounds` rounds more than in `before`.
fn rounds(world: &World) -> std::collections::BTreeMap<String, u64> {
    world.consumers().pods().into_iter().map(|(pod, r)| (pod, r.rounds)).collect()
}

/// The consumer pods `start_consumers` makes.
const CONSUMER_PODS: [&str; 5] =
    ["team-a/reader-0", "team-a/holder-0", "team-a/writer-0", "team-a/syncwriter-0", "team-a/rwholder-0"];

/// Steps until every consumer made `rounds` more rounds; a broken invariant fails the test.
fn run_rounds(world: &mut World, rounds_more: u64, within: Duration) {
    let pods = CONSUMER_PODS.map(String::from);
    let behind = world.run_until_rounds(&pods, rounds_more, within).unwrap_or_else(|e| panic!("{e}"));
    assert!(behind.is_empty(), "{behind:?} made too few rounds in {within:?}: {:#?}", world.consumers().pods());
}

/// Runs until a consumer reports a broken invariant, which is returned.
fn run_until_broken(world: &mut World, within: Duration) -> InvariantBroken {
    let mut waited = Duration::ZERO;
    while waited < within {
        if let Err(e) = world.run_for(Duration::from_secs(1)) {
            match e.downcast::<InvariantBroken>() {
                Ok(broken) => return *broken,
                Err(e) => panic!("the simulation failed: {e}"),
            }
        }
        waited += Duration::from_secs(1);
    }
    panic!("no invariant was broken in {within:?}: {:#?}", world.consumers().pods());
}

/// The export directory of `volume`'s NFS server pod, and that pod's host.
fn server(world: &World, volume: &str) -> (PathBuf, String) {
    let stored = stored_volume(&world.api, volume).expect("volume");
    let reference = stored["spec"]["referenceValue"].as_str().expect("referenceValue");
    world.nfs_server(reference).unwrap_or_else(|| panic!("no running NFS server for {volume} ({reference})"))
}

#[test]
fn consumers_see_whole_revisions_keep_acknowledged_writes_and_handles_across_server_restarts() {
    let mut world = world(21);
    start_consumers(&world);
    run_rounds(&mut world, 3, Duration::from_secs(300));

    // New revisions while the reader reads: one file changes with the same size, one is added.
    world.sources().set(&source_identity(), revision("r2", &[("guide.md", "other guide"), ("api/index.md", "v1 api")]));
    run_rounds(&mut world, 15, Duration::from_secs(300));
    world.sources().set(
        &source_identity(),
        revision("r3", &[("guide.md", "third guide"), ("api/index.md", "v2 api"), ("api/new.md", "new")]),
    );
    run_rounds(&mut world, 15, Duration::from_secs(300));

    // Both NFS servers' containers crash, stay down for 10 s, and start again, while the
    // consumers use them: their calls wait (a hard mount) and go on where they were.
    let acknowledged_before = world.consumers().pods()["team-a/writer-0"].acknowledged;
    let hosts: Vec<String> = ["docs", "scratch"].iter().map(|v| server(&world, v).1).collect();
    for host in &hosts {
        world.crash(host);
    }
    // Replies already on the wire when the servers crashed may still finish a round; after a
    // second, nothing is in flight.
    world.run_for(Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
    let before = rounds(&world);
    world.run_for(Duration::from_secs(9)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rounds(&world), before, "no consumer finished a round while its server was down");
    for host in &hosts {
        world.bounce(host);
    }
    run_rounds(&mut world, 5, Duration::from_secs(300));

    let pods = world.consumers().pods();
    assert!(world.consumers().violations().is_empty());
    let reader = &pods["team-a/reader-0"];
    let seen: Vec<&str> = reader.revisions.iter().map(String::as_str).collect();
    assert_eq!(seen, ["r1", "r2", "r3"], "the reader read each revision whole: {reader:#?}");
    assert!(reader.checked >= 3 * reader.rounds.min(10), "{reader:#?}");
    for writer in ["team-a/writer-0", "team-a/syncwriter-0"] {
        let record = &pods[writer];
        assert!(record.acknowledged > 0 && record.checked > 0, "{writer}: {record:#?}");
    }
    assert!(pods["team-a/writer-0"].acknowledged > acknowledged_before, "the writer went on after the restart");
    for holder in ["team-a/holder-0", "team-a/rwholder-0"] {
        assert!(pods[holder].rounds >= 5, "{holder}: {:#?}", pods[holder]);
    }
}

#[test]
fn a_reader_sees_a_file_changed_under_a_published_revision() {
    let mut world = world(22);
    start_consumers(&world);
    run_rounds(&mut world, 2, Duration::from_secs(300));
    let (export, _) = server(&world, "docs");
    // Same size, other content: only the content check can tell.
    let guide = export.join(".sharedvolume/current/guide.md");
    std::fs::write(&guide, "FIRST GUIDE").expect("tamper with the published revision");
    let broken = run_until_broken(&mut world, Duration::from_secs(60));
    assert_eq!(broken.invariant, Invariant::MixedRevision.to_string(), "{broken}");
    assert!(broken.detail.contains("guide.md"), "{broken}");
    assert!(broken.to_string().contains("seed 22"), "the report says how to replay: {broken}");
}

#[test]
fn a_writer_sees_an_acknowledged_record_that_is_gone() {
    let mut world = world(23);
    start_consumers(&world);
    run_rounds(&mut world, 2, Duration::from_secs(300));
    let (export, _) = server(&world, "scratch");
    let records = export.join("writer-0/records");
    let file = std::fs::OpenOptions::new().write(true).open(&records).expect("the writer's file");
    file.set_len(0).expect("truncate");
    let broken = run_until_broken(&mut world, Duration::from_secs(60));
    assert_eq!(broken.invariant, Invariant::LostWrite.to_string(), "{broken}");
    assert!(broken.pod.ends_with("writer-0"), "{broken}");
}

#[test]
fn a_holder_sees_handles_that_do_not_survive_a_restart() {
    let mut world = world(24);
    start_consumers(&world);
    run_rounds(&mut world, 2, Duration::from_secs(300));
    // The server seals its handles with a key kept in the export so that they survive restarts;
    // without it, the restarted server makes a new key and every handle held is refused.
    let (export, host) = server(&world, "scratch");
    world.crash(&host);
    std::fs::remove_file(export.join(".sv-nfs/handle-key")).expect("remove the handle key");
    world.bounce(&host);
    let broken = run_until_broken(&mut world, Duration::from_secs(120));
    assert_eq!(broken.invariant, Invariant::StaleHandle.to_string(), "{broken}");
}
