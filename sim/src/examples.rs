//! The main job: the bundled examples applied to a simulated three-node cluster running the real
//! operator, until every volume settles; then every volume deleted and the cleanup checked.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::ApiServer;
use crate::programs::consumer::{CONSUMER_IMAGE, Mounts, PodRecord, stateful_set};
use crate::programs::{SimFile, SourceState};
use crate::world::{World, WorldConfig};

/// The bundled example manifests, embedded so the run needs no files.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("01-no-source.yaml", include_str!("../../deploy/examples/01-no-source.yaml")),
    ("02-git-public.yaml", include_str!("../../deploy/examples/02-git-public.yaml")),
    ("03-git-basic-auth.yaml", include_str!("../../deploy/examples/03-git-basic-auth.yaml")),
    ("04-git-basic-auth-secret.yaml", include_str!("../../deploy/examples/04-git-basic-auth-secret.yaml")),
    ("05-git-private-key.yaml", include_str!("../../deploy/examples/05-git-private-key.yaml")),
    ("06-git-private-key-secret.yaml", include_str!("../../deploy/examples/06-git-private-key-secret.yaml")),
    ("07-ssh-password.yaml", include_str!("../../deploy/examples/07-ssh-password.yaml")),
    ("08-ssh-password-secret.yaml", include_str!("../../deploy/examples/08-ssh-password-secret.yaml")),
    ("09-ssh-private-key-secret.yaml", include_str!("../../deploy/examples/09-ssh-private-key-secret.yaml")),
    ("10-ssh-private-key.yaml", include_str!("../../deploy/examples/10-ssh-private-key.yaml")),
    ("11-s3.yaml", include_str!("../../deploy/examples/11-s3.yaml")),
    ("12-s3-secret.yaml", include_str!("../../deploy/examples/12-s3-secret.yaml")),
    ("13-http.yaml", include_str!("../../deploy/examples/13-http.yaml")),
    ("14-http-external-nfs.yaml", include_str!("../../deploy/examples/14-http-external-nfs.yaml")),
    ("15-http-nfs-service.yaml", include_str!("../../deploy/examples/15-http-nfs-service.yaml")),
];

/// The NFS servers outside the cluster that the examples name (`spec.nfsServer.url`); the run
/// gives each a directory so those volumes can sync too.
pub const EXTERNAL_NFS: [&str; 2] = ["nfs.example.com", "10.20.30.40"];

/// One volume's state at the end of the run.
#[derive(Clone, Debug)]
pub struct VolumeReport {
    pub kind: String,
    pub name: String,
    pub phase: String,
    pub nfs_address: String,
    pub conditions: Vec<(String, String, String)>,
}

/// What the run saw.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub volumes: Vec<VolumeReport>,
    /// Whether every volume settled before the run gave up waiting.
    pub all_settled: bool,
    pub settled_after: Duration,
    pub objects_created: usize,
    pub left_after_delete: Vec<String>,
    pub simulated: Duration,
    pub wall: Duration,
    pub trace_hash: String,
    /// Whether the run's HashMaps iterated in the seed's order (see `World::std_hash_keys_seeded`).
    pub replayable: bool,
    /// What each consumer pod saw.
    pub consumers: Vec<ConsumerLine>,
    /// Each invariant, and how many times it was checked (after every simulated step).
    pub invariants: Vec<(String, u64)>,
    /// Faults under the consumers, and how long until every consumer of the volume was served
    /// again (simulated time).
    pub failovers: Vec<(String, Duration)>,
    pub errors: Vec<String>,
}

/// One consumer pod of the main job, the volume it used, and what it saw.
#[derive(Clone, Debug)]
pub struct ConsumerLine {
    pub pod: String,
    pub volume: String,
    pub record: PodRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the example {file} does not parse: {message}")]
    Example { file: String, message: String },
    #[error("the simulation failed: {0}")]
    Simulation(String),
}

/// Every SharedVolume and ClusterSharedVolume in the cluster.
pub fn volumes(api: &ApiServer) -> Vec<Value> {
    let state = api.state();
    ["sharedvolumes", "clustersharedvolumes"]
        .iter()
        .filter_map(|plural| state.registry.types().find(|t| t.id.plural == *plural).cloned())
        .flat_map(|rt| state.store.list(&rt.id, None).map(|(_, o)| (**o).clone()).collect::<Vec<_>>())
        .collect()
}

fn condition(volume: &Value, kind: &str) -> Option<Value> {
    volume["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
}

/// A volume has settled when it is Ready or Failed, or when its sync failed (it will retry, but
/// the run has seen what it came for).
fn settled(volume: &Value) -> bool {
    let phase = volume["status"]["phase"].as_str().unwrap_or_default();
    let sync_failed = condition(volume, "Synced").is_some_and(|c| c["status"] == "False" && c["reason"] != "Pending");
    matches!(phase, "Ready" | "Failed") || sync_failed
}

/// What the system made for volumes and would leave behind: objects with the operator's
/// `managed-by` label or an owner reference to a volume, and the disks provisioned for claims
/// that are gone (a PersistentVolume of the provisioner outliving its claim, and its
/// attachments).
pub fn managed_objects(api: &ApiServer) -> Vec<String> {
    let state = api.state();
    let label = sv_operator::api::labels::MANAGED_BY;
    let ours = |kind: &Value| kind == "SharedVolume" || kind == "ClusterSharedVolume";
    let claim_exists = |namespace: &str, name: &str| {
        state
            .registry
            .find("", "v1", "persistentvolumeclaims")
            .is_some_and(|rt| state.store.get(&rt.id, namespace, name).is_some())
    };
    let mut left = Vec::new();
    let mut orphaned_disks = Vec::new();
    for rt in state.registry.types() {
        for ((namespace, name), object) in state.store.list(&rt.id, None) {
            let meta = &object["metadata"];
            let owned = meta["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| ours(&r["kind"])));
            let orphaned_disk = rt.kind == "PersistentVolume"
                && !meta["annotations"]["pv.kubernetes.io/provisioned-by"].is_null()
                && !claim_exists(
                    object["spec"]["claimRef"]["namespace"].as_str().unwrap_or_default(),
                    object["spec"]["claimRef"]["name"].as_str().unwrap_or_default(),
                );
            if orphaned_disk {
                orphaned_disks.push(name.clone());
            }
            if meta["labels"][label] == sv_operator::api::labels::MANAGED_BY_VALUE || owned || orphaned_disk {
                left.push(format!("{}/{}/{name}", rt.kind, if namespace.is_empty() { "-" } else { namespace }));
            }
        }
    }
    if let Some(rt) = state.registry.find("storage.k8s.io", "v1", "volumeattachments") {
        for ((_, name), attachment) in state.store.list(&rt.id, None) {
            if attachment["spec"]["source"]["persistentVolumeName"]
                .as_str()
                .is_some_and(|pv| orphaned_disks.iter().any(|d| d == pv))
            {
                left.push(format!("VolumeAttachment/-/{name}"));
            }
        }
    }
    left
}

/// What a cluster needs before volumes: the operator's namespace, a default StorageClass, the
/// CRDs. Returns the creation errors.
pub fn install(world: &World) -> Result<Vec<String>, String> {
    install_into(&world.api)
}

/// [`install`] on an API server outside a World (one served on loopback, for example).
pub fn install_into(api: &ApiServer) -> Result<Vec<String>, String> {
    let mut setup = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": sv_operator::plan::DEFAULT_OPERATOR_NAMESPACE}}),
        storage_class(),
    ];
    for crd in sv_operator::api::crds() {
        setup.push(serde_json::to_value(crd).map_err(|e| e.to_string())?);
    }
    // The namespace is there already when the operator's identity was installed with the world.
    let already_there = |e: &crate::api::ApiError| e.code() == 409 && e.reason() == "AlreadyExists";
    Ok(setup
        .into_iter()
        .filter_map(|o| api.create_object(o, "kubectl").err())
        .filter(|e| !already_there(e))
        .map(|e| format!("{e:?}"))
        .collect())
}

/// Creates `objects` one after another by the API server's front door, as `kubectl create -f`
/// does (see [`World::create`]): the refusals, as lines.
fn create_each(world: &mut World, objects: Vec<Value>) -> Result<Vec<String>, String> {
    let mut refused = Vec::new();
    for object in objects {
        if let Err(e) = world.create(object)? {
            refused.push(format!("{e:?}"));
        }
    }
    Ok(refused)
}

/// The StorageClass the examples name, as a cluster provides it: kind's is `standard` too, and the
/// default one.
pub fn storage_class() -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
           "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
           "provisioner": "sim.sharedvolume.io/hostpath", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})
}

/// The documents of one bundled example file.
pub fn example(file: &str) -> Result<Vec<Value>, RunError> {
    let text = EXAMPLES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
        .ok_or_else(|| RunError::Example { file: file.to_string(), message: "no such example".into() })?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| RunError::Example { file: file.to_string(), message: e.to_string() })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Runs the bundled examples.
pub fn run(seed: u64) -> Result<Report, RunError> {
    run_with(seed, false).map(|(report, _)| report)
}

/// [`run`], and the trace line by line when `keep_trace`.
pub fn run_with(seed: u64, keep_trace: bool) -> Result<(Report, Vec<String>), RunError> {
    let wall = Instant::now();
    let config = WorldConfig {
        seed,
        keep_trace,
        external_nfs: EXTERNAL_NFS.map(String::from).to_vec(),
        ..WorldConfig::default()
    };
    let mut world = World::new(config).map_err(|e| RunError::Simulation(e.to_string()))?;
    let simulation = |e: Box<dyn std::error::Error>| RunError::Simulation(e.to_string());
    let mut errors = install(&world).map_err(RunError::Simulation)?;
    let mut documents = Vec::new();
    for (file, _) in EXAMPLES {
        documents.extend(example(file)?);
    }
    let objects_created = documents.len();
    errors.extend(create_each(&mut world, documents).map_err(RunError::Simulation)?);

    let started = world.elapsed();
    let all_settled = world
        .run_until(Duration::from_secs(600), |api| {
            let all = volumes(api);
            !all.is_empty() && all.iter().all(settled)
        })
        .map_err(simulation)?;
    let settled_after = world.elapsed() - started;
    if !all_settled {
        let stuck: Vec<String> = volumes(&world.api)
            .iter()
            .filter(|v| !settled(v))
            .map(|v| v["metadata"]["name"].as_str().unwrap_or_default().to_string())
            .collect();
        errors.push(format!("not settled within {:.0} simulated seconds: {stuck:?}", settled_after.as_secs_f64()));
    }
    let (failovers, consumers) =
        if all_settled { use_the_volumes(&mut world, &mut errors).map_err(simulation)? } else { Default::default() };
    let mut reports: Vec<VolumeReport> = volumes(&world.api)
        .iter()
        .map(|v| VolumeReport {
            kind: v["kind"].as_str().unwrap_or_default().to_string(),
            name: v["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            phase: v["status"]["phase"].as_str().unwrap_or("-").to_string(),
            nfs_address: v["status"]["nfsServerAddress"].as_str().unwrap_or("-").to_string(),
            conditions: ["Ready", "NfsServerReady", "Synced"]
                .iter()
                .filter_map(|c| condition(v, c))
                .map(|c| {
                    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (text("type"), text("status"), text("reason"))
                })
                .collect(),
        })
        .collect();
    reports.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));

    // Delete every volume and wait for the finalizers to clean up.
    for volume in volumes(&world.api) {
        let plural = if volume["kind"] == "SharedVolume" { "sharedvolumes" } else { "clustersharedvolumes" };
        let rt = world.api.state().registry.types().find(|t| t.id.plural == plural).cloned();
        let Some(rt) = rt else { continue };
        let namespace = volume["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = volume["metadata"]["name"].as_str().unwrap_or_default();
        if let Err(e) = world.delete(&rt, namespace, name).map_err(RunError::Simulation)? {
            errors.push(format!("deleting {name}: {e:?}"));
        }
    }
    let cleaned_up = world
        .run_until(Duration::from_secs(300), |api| volumes(api).is_empty() && managed_objects(api).is_empty())
        .map_err(simulation)?;
    if !cleaned_up {
        errors.push("deletion did not finish within 300 simulated seconds".into());
    }
    world.settle_cleanups().map_err(simulation)?;
    let trace = world.trace_lines();
    let report = Report {
        seed,
        volumes: reports,
        all_settled,
        settled_after,
        objects_created,
        left_after_delete: managed_objects(&world.api),
        simulated: world.elapsed(),
        wall: wall.elapsed(),
        trace_hash: world.trace_hash(),
        replayable: world.std_hash_keys_seeded(),
        invariants: world.invariant_counts(),
        consumers,
        failovers,
        errors,
    };
    Ok((report, trace))
}

/// The consumers of the main job: (namespace, name, volumes, arguments). Readers and holders of
/// several volumes each, writers of the volumes without a source, in three namespaces.
const CONSUMERS: &[(&str, &str, Mounts<'static>, &str)] = &[
    (
        "default",
        "reader",
        Mounts::Shared("http-sv,git-public-sv,s3-sv"),
        "reader --mount=/opt/mnt/http --mount=/opt/mnt/git-public --mount=/opt/mnt/s3",
    ),
    (
        "default",
        "holder",
        Mounts::Shared("http-sv,nosource-sv"),
        "holder --mount=/opt/mnt/http --mount=/opt/mnt/nosource",
    ),
    ("default", "writer", Mounts::Shared("nosource-sv"), "writer --mount=/opt/mnt/nosource --stable=unstable"),
    (
        "team-a",
        "reader",
        Mounts::Cluster("http-csv,git-public-csv"),
        "reader --mount=/opt/mnt/http --mount=/opt/mnt/git-public",
    ),
    ("team-a", "writer", Mounts::Cluster("nosource-csv"), "writer --mount=/opt/mnt/nosource --stable=file-sync"),
    ("team-b", "reader", Mounts::Cluster("http-csv"), "reader --mount=/opt/mnt/http"),
    (
        "team-b",
        "holder",
        Mounts::Cluster("nosource-csv,ssh-password-csv"),
        "holder --mount=/opt/mnt/nosource --mount=/opt/mnt/ssh",
    ),
];

/// What the consumers must do before the run goes on.
const CONSUMER_ROUNDS: u64 = 5;

/// What the consumers went through: each fault and how long until they were served again.
type Failovers = Vec<(String, Duration)>;

/// Installs the webhook, starts [`CONSUMERS`], publishes a new revision of the HTTP source under
/// the readers, restarts NFS servers under them, and removes the consumers again (a volume in use
/// is not deleted). A broken invariant stops the run (an error); what stands in the way is added
/// to `errors`.
fn use_the_volumes(
    world: &mut World,
    errors: &mut Vec<String>,
) -> Result<(Failovers, Vec<ConsumerLine>), Box<dyn std::error::Error>> {
    let mut objects: Vec<Value> = serde_saphyr::from_multiple(include_str!("../../deploy/base/webhook.yaml"))?;
    objects.retain(|o| !o.is_null());
    for namespace in ["team-a", "team-b"] {
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
    }
    errors.extend(create_each(world, objects)?);
    if !world.run_until(Duration::from_secs(300), crate::install::webhook_serving)? {
        errors.push("the webhook did not serve within 300 simulated seconds".into());
        return Ok((Vec::new(), Vec::new()));
    }
    let sets: Vec<Value> = CONSUMERS
        .iter()
        .map(|(namespace, name, volume, args)| {
            let args: Vec<String> = args.split(' ').map(str::to_string).collect();
            stateful_set(namespace, name, *volume, &args)
        })
        .collect();
    errors.extend(create_each(world, sets)?);
    let pods: Vec<String> = CONSUMERS.iter().map(|(namespace, name, ..)| format!("{namespace}/{name}-0")).collect();
    let wait_rounds =
        |world: &mut World, errors: &mut Vec<String>, what: &str| -> Result<(), Box<dyn std::error::Error>> {
            let behind = world.run_until_rounds(&pods, CONSUMER_ROUNDS, Duration::from_secs(300))?;
            if !behind.is_empty() {
                errors.push(format!(
                    "{what}: consumers made fewer than {CONSUMER_ROUNDS} rounds in 300 simulated seconds: {behind:?}"
                ));
            }
            Ok(())
        };
    wait_rounds(world, errors, "consumers starting")?;
    // A new revision of the HTTP source (both HTTP volumes sync it) while the readers read.
    let identity = "http https://raw.githubusercontent.com/distribution/distribution/main/README.md";
    let files = vec![SimFile::new("README.md", "The second revision.\n"), SimFile::new("docs/new.md", "New.\n")];
    world.sources().set(identity, SourceState::Tree { revision: "sim-2".into(), files, credential: None });
    let republished = |api: &ApiServer| {
        volumes(api)
            .iter()
            .filter(|v| ["http-sv", "http-csv"].contains(&v["metadata"]["name"].as_str().unwrap_or_default()))
            .all(|v| v["status"]["sync"]["revision"] == "sim-2")
    };
    if !world.run_until(Duration::from_secs(300), republished)? {
        errors.push("the HTTP volumes did not publish the new revision within 300 simulated seconds".into());
    }
    wait_rounds(world, errors, "after the new revision")?;
    // A fault under the consumers: the NFS server of each volume they use restarts (a container
    // crash the kubelet restarts at once); each volume's consumers must be served again.
    let mut failovers = Vec::new();
    for volume in ["http-sv", "nosource-csv"] {
        let Some(host) = server_host(world, volume) else {
            errors.push(format!("no running NFS server found for {volume}"));
            continue;
        };
        let pods: Vec<String> = CONSUMERS
            .iter()
            .filter(|(_, _, mounts, _)| {
                matches!(mounts, Mounts::Shared(v) | Mounts::Cluster(v) if v.split(',').any(|v| v == volume))
            })
            .map(|(namespace, name, ..)| format!("{namespace}/{name}-0"))
            .collect();
        let at = world.elapsed();
        world.bounce(&host);
        let served = |world: &World| world.consumers().unserved_since(&pods, at).is_empty();
        while !served(world) && world.elapsed() < at + Duration::from_secs(120) {
            world.run_for(Duration::from_millis(100))?;
        }
        match served(world) {
            true => failovers.push((
                format!("NFS server of {volume} restarted under {} consumers", pods.len()),
                world.elapsed() - at,
            )),
            false => errors
                .push(format!("the consumers of {volume} were not served within 120 s of its NFS server's restart")),
        }
    }
    // The consumers go, and with the last consumer of a namespace its claims (the webhook's).
    for (namespace, name, ..) in CONSUMERS {
        let Some(rt) = world.api.state().registry.find("apps", "v1", "statefulsets").cloned() else { continue };
        if let Err(e) = world.delete(&rt, namespace, name)? {
            errors.push(format!("deleting consumer {namespace}/{name}: {e:?}"));
        }
    }
    let gone = |api: &ApiServer| {
        let state = api.state();
        state.registry.find("", "v1", "pods").is_some_and(|rt| {
            state.store.list(&rt.id, None).all(|(_, p)| {
                p["spec"]["containers"][0]["image"].as_str().is_none_or(|i| !i.starts_with(CONSUMER_IMAGE))
            })
        })
    };
    if !world.run_until(Duration::from_secs(300), gone)? {
        errors.push("the consumer pods were not gone within 300 simulated seconds".into());
    }
    let records = world.consumers().pods();
    Ok((
        failovers,
        CONSUMERS
            .iter()
            .map(|(namespace, name, volume, _)| {
                let pod = format!("{namespace}/{name}-0");
                let volume = match volume {
                    Mounts::Shared(v) => format!("SharedVolume {namespace}/{v}"),
                    Mounts::Cluster(v) => format!("ClusterSharedVolume {v}"),
                };
                ConsumerLine { record: records.get(&pod).cloned().unwrap_or_default(), pod, volume }
            })
            .collect(),
    ))
}

/// The simulated host of the running NFS server of volume `name` (a SharedVolume or a
/// ClusterSharedVolume of that name).
fn server_host(world: &World, name: &str) -> Option<String> {
    let volume = volumes(&world.api).into_iter().find(|v| v["metadata"]["name"] == name)?;
    world.nfs_server(volume["spec"]["referenceValue"].as_str()?).map(|(_, host)| host)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "SharedVolume simulation: 3 nodes, the real operator, {} example objects, seed {}",
            self.objects_created, self.seed
        )?;
        writeln!(f)?;
        writeln!(f, "{:<20} {:<26} {:<10} {:<14} conditions", "kind", "name", "phase", "nfs address")?;
        for v in &self.volumes {
            let conditions: Vec<String> = v
                .conditions
                .iter()
                .map(|(t, s, r)| if r.is_empty() { format!("{t}={s}") } else { format!("{t}={s} ({r})") })
                .collect();
            writeln!(
                f,
                "{:<20} {:<26} {:<10} {:<14} {}",
                v.kind,
                v.name,
                v.phase,
                v.nfs_address,
                conditions.join(", ")
            )?;
        }
        writeln!(f)?;
        let ready = self.volumes.iter().filter(|v| v.phase == "Ready").count();
        if self.all_settled {
            writeln!(
                f,
                "{ready} of {} volumes Ready; all settled after {:.1} simulated seconds.",
                self.volumes.len(),
                self.settled_after.as_secs_f64()
            )?;
        } else {
            writeln!(
                f,
                "{ready} of {} volumes Ready; NOT all settled: gave up after {:.1} simulated seconds.",
                self.volumes.len(),
                self.settled_after.as_secs_f64()
            )?;
        }
        if self.volumes.iter().any(|v| v.phase == "Failed") {
            writeln!(f, "A Failed volume names what this cluster does not have (see its NfsServerReady reason).")?;
        }
        if !self.consumers.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "Consumer pods over NFS (the test image, mounted by the webhook; a new revision was published under them):"
            )?;
            writeln!(
                f,
                "{:<18} {:<7} {:<48} {:>6} {:>8}  what was checked",
                "pod", "role", "volumes", "rounds", "errors"
            )?;
            for c in &self.consumers {
                let r = &c.record;
                let checked = match r.role.as_str() {
                    "reader" => {
                        let revisions: Vec<&str> = r.revisions.iter().map(String::as_str).collect();
                        format!("{} files read in whole revisions ({})", r.checked, revisions.join(", "))
                    }
                    "writer" => format!("{} records acknowledged and read back", r.acknowledged),
                    _ => format!("{} uses of held handles", r.checked),
                };
                writeln!(f, "{:<18} {:<7} {:<48} {:>6} {:>8}  {checked}", c.pod, r.role, c.volume, r.rounds, r.errors)?;
            }
        }
        for (fault, after) in &self.failovers {
            writeln!(
                f,
                "Fault survived: {fault}; all served again after {:.1} simulated seconds.",
                after.as_secs_f64()
            )?;
        }
        if !self.invariants.is_empty() {
            writeln!(f)?;
            writeln!(f, "Invariants, checked after every simulated step (times checked; none broke):")?;
            crate::summary::write_invariants(f, &self.invariants)?;
        }
        if self.left_after_delete.is_empty() {
            writeln!(f, "After deleting every volume, nothing the operator created is left.")?;
        } else {
            writeln!(
                f,
                "After deleting every volume, {} objects are left: {:?}",
                self.left_after_delete.len(),
                self.left_after_delete
            )?;
        }
        for error in &self.errors {
            writeln!(f, "error: {error}")?;
        }
        crate::summary::write_closing_line(f, self.simulated, self.wall, &self.trace_hash, self.seed, self.replayable)
    }
}
