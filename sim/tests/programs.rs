//! Pods of our images run our programs on the simulated network: the NFS server serves its export,
//! the syncer fills it from the simulated sources and reports on the volume, the kubelet's
//! readiness probes reach both, and what breaks (credentials, mounts, arguments, nodes, links)
//! shows where a user would look.

use std::time::Duration;

use serde_json::{Value, json};
use sv_sim::api::ApiServer;
use sv_sim::examples::{install, volumes};
use sv_sim::programs::{SimFile, SourceState};
use sv_sim::world::{World, WorldConfig};

fn get(api: &ApiServer, group: &str, version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let state = api.state();
    let rt = state.registry.find(group, version, plural)?;
    state.store.get(&rt.id, namespace, name).map(|o| (**o).clone())
}

fn list(api: &ApiServer, plural: &str, namespace: &str) -> Vec<Value> {
    let state = api.state();
    let Some(rt) = state.registry.find("", "v1", plural) else { return Vec::new() };
    state.store.list(&rt.id, Some(namespace)).map(|(_, o)| (**o).clone()).collect()
}

fn volume(api: &ApiServer, name: &str) -> Value {
    get(api, "sv.sharedvolume.io", "v1alpha1", "sharedvolumes", "default", name).unwrap_or(Value::Null)
}

fn ready(api: &ApiServer, name: &str) -> bool {
    volume(api, name)["status"]["phase"] == "Ready"
}

fn condition(volume: &Value, kind: &str) -> Value {
    volume["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_default()
}

/// A volume of the `default` namespace syncing from `source` every 30 s.
fn shared_volume(name: &str, source: Value) -> Value {
    json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"mountPath": "/data", "storageClassName": "standard", "storage": {"capacity": "1Gi"},
                 "syncInterval": "30s", "syncTimeout": "10s", "source": source},
    })
}

fn world() -> World {
    sv_sim::init_test_logging();
    let world = World::new(WorldConfig::default()).expect("a world");
    assert!(install(&world).expect("install").is_empty());
    world
}

/// The pod of `component` (`nfs-server`, `syncer`) serving volume `name`.
fn pod_of(api: &ApiServer, namespace: &str, component: &str) -> Option<Value> {
    list(api, "pods", namespace).into_iter().find(|p| {
        p["metadata"]["labels"]["app.kubernetes.io/component"] == component
            && p["metadata"]["deletionTimestamp"].is_null()
    })
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[test]
fn a_volume_fills_from_its_source_through_the_real_syncer_and_follows_new_revisions() {
    let mut world = world();
    let source = json!({"git": {"url": "https://git.example.com/team/docs.git", "branch": "main"}});
    let identity = "git https://git.example.com/team/docs.git main";
    let tree = |revision: &str, readme: &str| SourceState::Tree {
        revision: revision.to_string(),
        files: vec![SimFile::new("README.md", readme), SimFile::new("guide/intro.md", "hello\n")],
        credential: None,
    };
    world.sources().set(identity, tree("c1", "first\n"));
    world.create_all([shared_volume("docs", source)]).into_iter().for_each(|r| {
        r.expect("create");
    });
    assert!(
        world.run_until(Duration::from_secs(300), |api| ready(api, "docs")).expect("run"),
        "{:#}",
        volume(&world.api, "docs")
    );
    let status = volume(&world.api, "docs")["status"].clone();
    assert_eq!(status["sync"]["revision"], "c1", "{status:#}");
    assert_eq!(status["sync"]["files"], 2, "{status:#}");

    // The files are in the NFS server's export, where consumers mount them.
    let exports = world.programs().expect("programs").exports(&world.api);
    assert_eq!(exports.len(), 1, "one NFS server: {exports:?}");
    let export = exports.values().next().expect("an export");
    assert_eq!(std::fs::read_to_string(export.join("README.md")).expect("README.md"), "first\n");
    assert_eq!(std::fs::read_to_string(export.join("guide/intro.md")).expect("intro"), "hello\n");

    // Both programs' pods are Ready through their probes; their Endpoints list them.
    let namespace = status["resourceNamespace"].as_str().unwrap_or("default").to_string();
    // (The syncer's probe runs every 5 s and passes after the first sync.)
    for component in ["nfs-server", "syncer"] {
        let probed = world
            .run_until(Duration::from_secs(30), |api| pod_of(api, &namespace, component).is_some_and(|p| pod_ready(&p)))
            .expect("run");
        let pod = pod_of(&world.api, &namespace, component).unwrap_or_else(|| panic!("a {component} pod"));
        assert!(probed, "{component}: {:#}", pod["status"]);
        assert!(world.pod_host(&namespace, pod["metadata"]["name"].as_str().unwrap_or_default()).is_some());
    }

    // A new revision is published at the next interval; the unchanged file is kept.
    world.sources().set(identity, tree("c2", "second\n"));
    let followed = world
        .run_until(Duration::from_secs(120), |api| volume(api, "docs")["status"]["sync"]["revision"] == "c2")
        .expect("run");
    assert!(followed, "{:#}", volume(&world.api, "docs")["status"]);
    assert_eq!(std::fs::read_to_string(export.join("README.md")).expect("README.md"), "second\n");
    assert!(world.sources().fetches(identity) >= 2);
}

#[test]
fn the_syncer_writes_through_the_nfs_server_whose_capacity_stops_it() {
    let mut world = world();
    let source = json!({"http": {"url": "https://files.example.com/data.bin"}});
    let identity = "http https://files.example.com/data.bin";
    let tree = |revision: &str, byte: &str| SourceState::Tree {
        revision: revision.to_string(),
        files: vec![SimFile::new("data.bin", &byte.repeat(400 << 10))],
        credential: None,
    };
    world.sources().set(identity, tree("r1", "a"));
    let mut small = shared_volume("small", source);
    small["spec"]["storage"]["capacity"] = json!("1Mi");
    world.create_all([small]).into_iter().for_each(|r| {
        r.expect("create");
    });
    assert!(
        world.run_until(Duration::from_secs(300), |api| ready(api, "small")).expect("run"),
        "{:#}",
        volume(&world.api, "small")
    );

    // Something else fills the export behind the server's back; the server counts it when it
    // starts again. Only the server knows: the disk under it has plenty of room.
    let reference = volume(&world.api, "small")["spec"]["referenceValue"].as_str().unwrap_or_default().to_string();
    let (export, host) = world.nfs_server(&reference).expect("the NFS server");
    std::fs::write(export.join("filler"), vec![0u8; 500 << 10]).expect("filler");
    world.bounce(&host);

    // A new revision of the same size does not fit beside the published one: the syncer learns
    // the free space from the server (FSSTAT) and says so, and the published tree stays.
    world.sources().set(identity, tree("r2", "b"));
    let full = world
        .run_until(Duration::from_secs(300), |api| {
            volume(api, "small")["status"]["sync"]["lastError"].as_str().is_some_and(|e| e.contains("volume is full"))
        })
        .expect("run");
    let status = volume(&world.api, "small")["status"].clone();
    assert!(full, "{status:#}");
    assert_eq!(status["sync"]["revision"], "r1", "{status:#}");
    let published = std::fs::read(export.join("data.bin")).expect("the published file");
    assert!(published.len() == 400 << 10 && published.iter().all(|b| *b == b'a'));
}

/// A volume is Ready the moment its NFS server is: the reconcile that the server's readiness
/// triggers reads the cache that holds it. (Triggered by watches of their own, reconciles could
/// run before the cache had the change and then wait for their 10 s requeue.)
#[test]
fn a_volume_is_ready_as_soon_as_its_nfs_server_is() {
    let mut world = world();
    let names: Vec<String> = (0..6).map(|i| format!("scratch-{i}")).collect();
    let volumes = names.iter().map(|name| {
        json!({
            "apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"mountPath": "/data", "storageClassName": "standard",
                     "storage": {"capacity": "1Gi", "accessMode": "ReadWrite"}},
        })
    });
    world.create_all(volumes).into_iter().for_each(|r| {
        r.expect("create");
    });
    // When each volume's NFS server StatefulSet first reports a ready replica, and when the
    // volume is first Ready, in simulated time.
    let mut server_ready: std::collections::BTreeMap<String, Duration> = Default::default();
    let mut volume_ready: std::collections::BTreeMap<String, Duration> = Default::default();
    let deadline = world.elapsed() + Duration::from_secs(300);
    while volume_ready.len() < names.len() && world.elapsed() < deadline {
        let now = world.elapsed();
        let statefulsets = {
            let state = world.api.state();
            let rt = state.registry.find("apps", "v1", "statefulsets").expect("statefulsets").id.clone();
            state.store.list(&rt, Some("default")).map(|(_, o)| (**o).clone()).collect::<Vec<_>>()
        };
        for sts in statefulsets {
            let owner = sts["metadata"]["annotations"]["sv.sharedvolume.io/owner"].as_str().unwrap_or_default();
            let Some(name) = owner.strip_prefix("SharedVolume/default/") else { continue };
            if sts["status"]["readyReplicas"].as_i64().unwrap_or(0) > 0 {
                server_ready.entry(name.to_string()).or_insert(now);
            }
        }
        for name in &names {
            if ready(&world.api, name) {
                volume_ready.entry(name.clone()).or_insert(now);
            }
        }
        world.run_for(Duration::from_millis(100)).expect("run");
    }
    assert_eq!(volume_ready.len(), names.len(), "every volume Ready: {volume_ready:?}");
    for name in &names {
        let server = server_ready.get(name).copied().unwrap_or_else(|| panic!("{name}: its server was never ready"));
        let lag = volume_ready[name].saturating_sub(server);
        assert!(
            lag < Duration::from_secs(3),
            "{name}: Ready {lag:?} after its NFS server (server ready at {server:?})"
        );
    }
}

#[test]
fn refused_credentials_fail_the_sync_without_leaking_them_and_a_fixed_secret_recovers() {
    let mut world = world();
    let identity = "ssh deploy@files.example.com:22/srv/site";
    world.sources().set(
        identity,
        SourceState::Tree {
            revision: "r1".into(),
            files: vec![SimFile::new("index.html", "<h1>site</h1>\n")],
            credential: Some("the-right-password".into()),
        },
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sftp", "namespace": "default"},
                        "stringData": {"password": "a-wrong-password"}});
    let source = json!({"ssh": {"host": "files.example.com", "port": 22, "user": "deploy", "path": "/srv/site",
                                "passwordFromSecret": {"name": "sftp", "key": "password"}}});
    for result in world.create_all([secret, shared_volume("site", source)]) {
        result.expect("create");
    }
    let failed = world
        .run_until(Duration::from_secs(300), |api| condition(&volume(api, "site"), "Synced")["reason"] == "SyncFailed")
        .expect("run");
    let status = volume(&world.api, "site")["status"].clone();
    assert!(failed, "{status:#}");
    let error = status["sync"]["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("authentication failed"), "{error}");
    assert!(!status.to_string().contains("a-wrong-password"), "{status:#}");

    // Rotate the Secret: the operator copies it, the kubelet projects it, the next retry succeeds.
    let mut state = world.api.state();
    let rt = state.registry.find("", "v1", "secrets").cloned().expect("secrets");
    let mut fixed = (**state.store.get(&rt.id, "default", "sftp").expect("secret")).clone();
    fixed["data"]["password"] = json!("dGhlLXJpZ2h0LXBhc3N3b3Jk");
    world.api.update_in(&mut state, &rt, fixed, &sv_sim::api::WriteOptions::controller("kubectl")).expect("update");
    drop(state);
    assert!(
        world.run_until(Duration::from_secs(300), |api| ready(api, "site")).expect("run"),
        "{:#}",
        volume(&world.api, "site")["status"]
    );
}

#[test]
fn readiness_follows_the_probe_over_the_network_and_a_lost_node_moves_the_server_with_its_data() {
    let mut world = world();
    world.sources().set(
        "http https://files.example.com/data.txt",
        SourceState::Tree {
            revision: "v1".into(),
            files: vec![SimFile::new("data.txt", "the data\n")],
            credential: None,
        },
    );
    world
        .create_all([shared_volume("data", json!({"http": {"url": "https://files.example.com/data.txt"}}))])
        .into_iter()
        .for_each(|r| {
            r.expect("create");
        });
    assert!(world.run_until(Duration::from_secs(300), |api| ready(api, "data")).expect("run"));
    let namespace = volume(&world.api, "data")["status"]["resourceNamespace"].as_str().unwrap_or("default").to_string();
    let server = pod_of(&world.api, &namespace, "nfs-server").expect("server pod");
    let server_name = server["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let host = world.pod_host(&namespace, &server_name).expect("a host");

    // The kubelet cannot reach the server's probe endpoint: after failureThreshold probes the pod
    // is not Ready, and the volume says so; when the link heals it is Ready again.
    world.partition("api", &host);
    let unready = world
        .run_until(Duration::from_secs(60), |api| pod_of(api, &namespace, "nfs-server").is_some_and(|p| !pod_ready(&p)))
        .expect("run");
    assert!(unready, "the pod stays Ready with its probe cut off");
    let noticed = world
        .run_until(Duration::from_secs(60), |api| {
            condition(&volume(api, "data"), "NfsServerReady")["status"] == "False"
        })
        .expect("run");
    assert!(noticed, "{:#}", volume(&world.api, "data")["status"]);
    world.repair("api", &host);
    assert!(world.run_until(Duration::from_secs(120), |api| ready(api, "data")).expect("run"));

    // Lose the server's node: after the toleration its pod is evicted but stays Terminating, and
    // the StatefulSet makes no other while it exists; once the node is tainted out-of-service,
    // the pod is removed, recreated on another node, and serves the same data (the volume
    // outlives the pod).
    let export = world.programs().expect("programs").exports(&world.api).into_values().next().expect("an export");
    assert_eq!(std::fs::read_to_string(export.join("data.txt")).expect("synced before the move"), "the data\n");
    let node = server["spec"]["nodeName"].as_str().expect("scheduled").to_string();
    world.set_node_ready(&node, false);
    world.run_for(Duration::from_secs(600)).expect("run");
    let pods = list(&world.api, "pods", &namespace);
    let servers: Vec<&Value> =
        pods.iter().filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == "nfs-server").collect();
    assert_eq!(servers.len(), 1, "no replacement while the evicted pod exists: {servers:#?}");
    assert!(!servers[0]["metadata"]["deletionTimestamp"].is_null(), "evicted after its toleration");
    assert_eq!(servers[0]["spec"]["nodeName"], node.as_str());
    let message = condition(&volume(&world.api, "data"), "NfsServerReady")["message"].to_string();
    assert!(message.contains("out-of-service") && message.contains(&node), "the volume says what to do: {message}");
    world.taint_out_of_service(&node).expect("taint");
    let moved = world
        .run_until(Duration::from_secs(600), |api| {
            pod_of(api, &namespace, "nfs-server")
                .is_some_and(|p| p["spec"]["nodeName"] != node.as_str() && pod_ready(&p))
        })
        .expect("run");
    assert!(moved, "{:#?}", pod_of(&world.api, &namespace, "nfs-server"));
    assert!(world.run_until(Duration::from_secs(120), |api| ready(api, "data")).expect("run"));
    let exports = world.programs().expect("programs").exports(&world.api);
    assert_eq!(exports.into_values().next().as_ref(), Some(&export), "the same volume directory");
    assert_eq!(std::fs::read_to_string(export.join("data.txt")).expect("served after the move"), "the data\n");
}

#[test]
fn pods_that_cannot_start_say_why() {
    sv_sim::init_test_logging();
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let image = sv_operator::plan::Settings::default().nfs_image;
    let pod = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "nowhere"},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                        "nfs": {"server": "nowhere.example", "path": "/"},
                        "claimRef": {"namespace": "default", "name": "nowhere"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "nowhere", "namespace": "default"},
               "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "nowhere",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
        pod(
            "mounts-nowhere",
            json!({"containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "nowhere"}}]}),
        ),
        pod(
            "missing-secret",
            json!({"containers": [{"name": "c", "image": image,
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]}),
        ),
        pod(
            "bad-args",
            json!({"containers": [{"name": "c", "image": image, "args": ["serve", "--export=/export", "--bogus"],
            "volumeMounts": [{"name": "e", "mountPath": "/export"}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}}}],
            "volumes": [{"name": "e", "emptyDir": {}}]}),
        ),
        pod("web", json!({"containers": [{"name": "c", "image": "nginx:1.27"}]})),
    ];
    for result in world.create_all(objects) {
        result.expect("create");
    }
    world.run_for(Duration::from_secs(60)).expect("run");
    let pod = |name: &str| get(&world.api, "", "v1", "pods", "default", name).expect("pod");
    let waiting = |name: &str| pod(name)["status"]["containerStatuses"][0]["state"]["waiting"].clone();

    let mount = waiting("mounts-nowhere");
    assert_eq!(mount["reason"], "ContainerCreating", "{mount:#}");
    assert!(
        mount["message"].as_str().unwrap_or_default().contains("no NFS server answers at nowhere.example"),
        "{mount:#}"
    );
    assert_eq!(pod("mounts-nowhere")["status"]["phase"], "Pending");

    let config = waiting("missing-secret");
    assert_eq!(config["reason"], "CreateContainerConfigError", "{config:#}");
    assert!(config["message"].as_str().unwrap_or_default().contains("secret \"absent\" not found"), "{config:#}");

    // Our program with a flag it does not know exits at once, again and again, and is never Ready.
    let crashing = pod("bad-args");
    assert_eq!(crashing["status"]["phase"], "Running");
    assert!(!pod_ready(&crashing), "{:#}", crashing["status"]);
    assert!(
        crashing["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) >= 2,
        "{:#}",
        crashing["status"]
    );

    // An image that is not ours just runs.
    assert!(pod_ready(&pod("web")));
    assert!(volumes(&world.api).is_empty());
}

/// The syncer ReplicaSets of `namespace` that are not being deleted.
fn syncer_replica_sets(api: &ApiServer, namespace: &str) -> Vec<Value> {
    let state = api.state();
    let Some(rt) = state.registry.find("apps", "v1", "replicasets") else { return Vec::new() };
    state
        .store
        .list(&rt.id, Some(namespace))
        .map(|(_, o)| (**o).clone())
        .filter(|rs| {
            rs["metadata"]["labels"]["app.kubernetes.io/component"] == "syncer"
                && rs["metadata"]["deletionTimestamp"].is_null()
        })
        .collect()
}

fn reference_of(api: &ApiServer) -> String {
    volume(api, "site")["spec"]["referenceValue"].as_str().unwrap_or_default().to_string()
}

fn image_of(object: &Value) -> String {
    let spec = if object["kind"] == "Pod" { &object["spec"] } else { &object["spec"]["template"]["spec"] };
    spec["containers"][0]["image"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_new_syncer_image_and_a_new_secret_reference_reach_the_running_syncer() {
    let mut world = world();
    let identity = "ssh deploy@files.example.com:22/srv/site";
    let site = |revision: &str, password: &str| SourceState::Tree {
        revision: revision.into(),
        files: vec![SimFile::new("index.html", &format!("<h1>{revision}</h1>\n"))],
        credential: Some(password.into()),
    };
    world.sources().set(identity, site("r1", "first-password"));
    let secret = |name: &str, password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
               "stringData": {"password": password}})
    };
    let source = |secret: &str| {
        json!({"ssh": {"host": "files.example.com", "port": 22, "user": "deploy", "path": "/srv/site",
                       "passwordFromSecret": {"name": secret, "key": "password"}}})
    };
    let objects = [
        secret("sftp-a", "first-password"),
        secret("sftp-b", "second-password"),
        shared_volume("site", source("sftp-a")),
    ];
    for result in world.create_all(objects) {
        result.expect("create");
    }
    let synced =
        |revision: &'static str| move |api: &ApiServer| volume(api, "site")["status"]["sync"]["revision"] == revision;
    assert!(
        world.run_until(Duration::from_secs(300), synced("r1")).expect("run"),
        "{:#}",
        volume(&world.api, "site")["status"]
    );
    let before = syncer_replica_sets(&world.api, "default");
    assert_eq!(before.len(), 1, "one syncer ReplicaSet");
    let old_image = image_of(&before[0]);

    // The operator is upgraded with a new syncer image: its template changes, so a new ReplicaSet
    // replaces the old one, and the pod that runs is the new image's.
    let new_image = "ghcr.io/sharedvolume/sv-syncer:next";
    assert_ne!(old_image, new_image);
    world.set_operator_args([format!("--syncer-image={new_image}")]);
    world.bounce("operator");
    let rolled = world
        .run_until(Duration::from_secs(300), |api| {
            let sets = syncer_replica_sets(api, "default");
            sets.len() == 1
                && image_of(&sets[0]) == new_image
                && pod_of(api, "default", "syncer").is_some_and(|p| image_of(&p) == new_image && pod_ready(&p))
                && !list(api, "pods", "default").iter().any(|p| {
                    p["metadata"]["labels"]["app.kubernetes.io/component"] == "syncer" && image_of(p) == old_image
                })
        })
        .expect("run");
    assert!(rolled, "{:#?}", syncer_replica_sets(&world.api, "default"));
    // The old pod's program is gone with its pod: the new pod holds the syncer Lease.
    let new_set =
        syncer_replica_sets(&world.api, "default")[0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let holder = |api: &ApiServer| {
        get(api, "coordination.k8s.io", "v1", "leases", "default", &format!("{}-syncer", reference_of(api)))
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert!(
        world.run_until(Duration::from_secs(120), |api| holder(api).starts_with(&new_set)).expect("run"),
        "the Lease is held by {:?}, not a pod of {new_set}",
        holder(&world.api)
    );
    // The new pod syncs: a new revision reaches the volume.
    world.sources().set(identity, site("r2", "first-password"));
    assert!(
        world.run_until(Duration::from_secs(300), synced("r2")).expect("run"),
        "{:#}",
        volume(&world.api, "site")["status"]
    );

    // The source's password changes and the volume is pointed at another Secret: the operator
    // copies it into the syncer's credentials, the kubelet projects them into the running pod, and
    // the next sync logs in with them.
    world.sources().set(identity, site("r3", "second-password"));
    let mut state = world.api.state();
    let rt = state.registry.find("sv.sharedvolume.io", "v1alpha1", "sharedvolumes").cloned().expect("sharedvolumes");
    let mut edited = (**state.store.get(&rt.id, "default", "site").expect("volume")).clone();
    edited["spec"]["source"] = source("sftp-b");
    world.api.update_in(&mut state, &rt, edited, &sv_sim::api::WriteOptions::controller("kubectl")).expect("update");
    drop(state);
    assert!(
        world.run_until(Duration::from_secs(300), synced("r3")).expect("run"),
        "{:#}",
        volume(&world.api, "site")["status"]
    );
    let status = volume(&world.api, "site")["status"].clone();
    assert!(!status.to_string().contains("second-password"), "{status:#}");
}
