//! Scenarios: files under `scenarios/` that replay steps, faults and expectations against a whole
//! simulated cluster ([`World`]). The world checks the system's invariants after every simulated
//! step ([`crate::invariants`] on what the API server stores: NFS addresses, Secret values,
//! ClusterSharedVolume namespaces; [`crate::programs::consumer`] over NFS: whole revisions,
//! acknowledged writes, held handles). A broken invariant stops the run at that step with the
//! seed. At the end, an invariant that had nothing to look at is reported as such.
//!
//! ```yaml
//! description: what the scenario shows
//! seed: 1                 # optional; the run is replayed from it
//! skipMissingTargets: false  # optional; true skips a podOf fault whose pod does not exist yet
//! steps:
//!   - install: true       # the operator's namespace, a default StorageClass, the CRDs
//!   - example: 13-http.yaml
//!   - webhook: true       # deploy/base/webhook.yaml, waited for until it serves
//!   - consumer: {name: reader, volume: http-sv, role: reader}   # namespace default; role
//!                         # reader | writer | holder; writer: stable: unstable | file-sync
//!   - waitForConsumers: {rounds: 3, within: 2m}   # every consumer made 3 more rounds
//!   - waitForPod: {pod: default/reader-0, phase: Running, within: 1m}   # or phase: absent
//!   - waitForCount: {kind: PersistentVolumeClaim, namespace: team-a, labels: {a: b}, count: 0, within: 1m}
//!   - apply: |            # any manifests; an existing object gets the document merged in
//!       apiVersion: v1 ...
//!   - waitFor: {volume: default/http-sv, phase: Ready, within: 5m}
//!   - loseNode: {podOf: {volume: default/http-sv, component: nfs-server}}
//!   - source: {identity: "http https://...", revision: r2, files: {README.md: "new"}}
//!   - sourceFailing: {identity: "...", status: 503, message: down}   # or sourceHanging: {identity}
//!   - sourceSlow: {identity: "...", delay: 15s}   # every fetch answered 15 s late; 0s ends it
//!   - partition: [operator, api]
//!   - runFor: 30s
//!   - delete: {kind: SharedVolume, namespace: default, name: http-sv}
//!   - expectClean: {within: 5m}
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::ApiServer;
use crate::examples::{example, install, managed_objects, volumes};
use crate::programs::{SimFile, SourceState};
use crate::world::{World, WorldConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Run the operator (default true).
    #[serde(default)]
    pub operator: Option<bool>,
    /// NFS servers outside the cluster (see [`WorldConfig::external_nfs`]).
    #[serde(default)]
    pub external_nfs: Vec<String>,
    /// A fault aimed at a volume's pod (`podOf`) that has none at that moment is skipped instead
    /// of failing the run: generated scenarios cannot know whether it exists yet.
    #[serde(default)]
    pub skip_missing_targets: bool,
    pub steps: Vec<Step>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Step {
    Install(bool),
    Example(String),
    Apply(String),
    /// A volume whose spec is invalid (one object), sent as `kubectl create` sends it. A refusal
    /// (the CRD's schema and rules, or the validating webhook) must name `field`. Stored (no
    /// webhook installed, or it did not answer: its failure policy is Ignore), liveness holds the
    /// operator to marking it Failed with a message naming `field`, not to Ready.
    ApplyInvalid {
        field: String,
        manifest: String,
    },
    RunFor(String),
    WaitFor(Wait),
    Source(SourceStep),
    SourceFailing {
        identity: String,
        status: u16,
        message: String,
    },
    /// The source accepts fetches and never answers them (the syncer's `syncTimeout` ends each).
    SourceHanging {
        identity: String,
    },
    /// Every fetch of the source is answered `delay` later (`0s` ends it); past a volume's
    /// `syncTimeout` each sync times out, as with a hanging source.
    SourceSlow {
        identity: String,
        delay: String,
    },
    Partition([HostRef; 2]),
    Repair([HostRef; 2]),
    Crash(HostRef),
    /// Crashes a host (by name) right after it has made this many more writes to the API server
    /// (not Leases or Events): `{host: operator, writes: 2}`. `bounce` brings it back (or
    /// disarms it, if it has not crashed yet).
    CrashAfterWrites {
        host: String,
        writes: u64,
    },
    /// A host's wall clock runs `by` ahead (or behind, with a `-`) of true time from now on:
    /// `{host: operator, by: -90s}` (`by: 0s` sets it right). Timers and simulated time are not
    /// affected, only what the host's programs read as the time of day.
    ClockSkew {
        host: HostRef,
        by: String,
    },
    /// Every watch the API server serves ends at once: clients re-list and re-watch (a view
    /// that may travel back to an older state meanwhile).
    DropWatches(bool),
    /// Watches deliver every event this much after its commit (`0s` ends it), bookmarks no
    /// further than what they delivered; reads stay current: a lagging watch cache, a stale view
    /// of the cluster for every client (`watchLag: 8s`).
    WatchLag(String),
    /// `true`: every watch stalls (no events, no bookmarks). `false`: the stall ends with the
    /// history it covered compacted, so every watch that missed an event ends with `410 Gone` and
    /// its client re-lists, never seeing the states in between (Sieve's unobserved states).
    StallWatches(bool),
    /// `{host: operator, stale: true}`: an API server replica's watch cache stops at the
    /// cluster as it is now, and serves the host from its next restart or the end of its next
    /// partition: its informers' lists
    /// (`resourceVersion=0`) and watches see that state until `stale: false`, while its
    /// consistent reads and writes are current. The host travels back in time (Sieve's time
    /// travel).
    StaleReplica {
        host: HostRef,
        stale: bool,
    },
    Bounce(HostRef),
    /// `{volume: default/data, full: true}`: the disk under the volume's NFS export is full (its
    /// files cannot grow: writes that would fail with `NOSPC`, as on a full filesystem, while
    /// overwrites, creates and removes work); `full: false` frees it.
    DiskFull {
        volume: String,
        full: bool,
    },
    /// The node a pod runs on (or a node by name) is lost with its pods' processes.
    LoseNode(HostRef),
    /// A node comes back (a name, or `lost`: the node the last `loseNode` lost).
    NodeBack(String),
    /// The administrator's answer to a node known to be shut down: the `out-of-service` taint (a
    /// name, or `lost`).
    OutOfService(String),
    /// A share of API requests fails with `code` (a `failRate` of 0 ends it).
    #[serde(rename_all = "camelCase")]
    ApiFaults {
        fail_rate: f64,
        code: u16,
        /// A share of writes committed and answered with a 504 (the reply lost).
        #[serde(default, skip_serializing_if = "is_zero")]
        lost_reply_rate: f64,
    },
    Delete {
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        name: String,
    },
    ExpectClean {
        within: String,
    },
    /// Installs the admission webhook from `deploy/base/webhook.yaml` and waits until it serves.
    Webhook(bool),
    /// A consumer pod of a volume (a StatefulSet of the test image, mutated by the webhook).
    Consumer(ConsumerStep),
    /// Waits until pod `namespace/name` is in `phase` (`Running`, `Pending`, ..., or `absent`:
    /// no such pod), or checks that it is now when `within` is not given.
    WaitForPod {
        pod: String,
        phase: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    /// Waits until `count` objects of `kind` (in `namespace`, or everywhere; with all of
    /// `labels`) exist.
    WaitForCount {
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        count: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    /// Waits until every consumer pod (or those of `pods`, `namespace/name-0`) has made `rounds`
    /// more rounds.
    WaitForConsumers {
        rounds: u64,
        within: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pods: Vec<String>,
    },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerStep {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The SharedVolume (in the pod's namespace) or ClusterSharedVolume it mounts.
    pub volume: String,
    /// `reader`, `writer` or `holder`.
    pub role: String,
    /// A writer's `--stable` (`unstable`, the default, or `file-sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// Time between rounds (default 1s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn default_namespace() -> String {
    "default".to_string()
}

/// A condition on a volume, waited for up to `within` (default: it must hold now).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wait {
    /// `namespace/name` of a SharedVolume, or `name` of a ClusterSharedVolume.
    pub volume: String,
    /// `Ready`, `Pending`, ..., or `none` (no status yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Type=Status` or `Type=Status/Reason`, e.g. `Synced=False/SyncFailed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The published revision (`status.sync.revision`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Text that the volume's message or one of its conditions' messages contains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceStep {
    pub identity: String,
    pub revision: String,
    pub files: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A host: a name (`api`, `operator`, `sources`, a node for `loseNode`), or the pod of a volume's
/// component (`nfs-server`, `syncer`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum HostRef {
    Name(String),
    PodOf {
        #[serde(rename = "podOf")]
        pod_of: PodOf,
    },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodOf {
    pub volume: String,
    pub component: String,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A step could not be carried out, or what it expected did not come.
    #[error("step {step} ({what}): {message}")]
    Step { step: usize, what: String, message: String },
    /// An invariant broke during (or at the end of) a step.
    #[error("step {step} ({what}): {message}")]
    Broken { step: usize, what: String, invariant: String, message: String },
    /// With every fault healed, the system did not become whole again in time.
    #[error("step {step} (end): {message}")]
    Liveness { step: usize, message: String },
}

impl ScenarioError {
    /// What kind of failure this is, for telling one failure from another when a failing run is
    /// shrunk: the invariant's name, `liveness`, or `step` (a step could not be carried out).
    pub fn kind(&self) -> String {
        match self {
            Self::Parse { .. } => "parse".to_string(),
            Self::Step { .. } => "step".to_string(),
            Self::Broken { invariant, .. } => invariant.clone(),
            Self::Liveness { .. } => "liveness".to_string(),
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Parse { file: file.clone(), message: e.to_string() })?;
        serde_saphyr::from_str(&text).map_err(|e| ScenarioError::Parse { file, message: e.to_string() })
    }

    /// Replays the steps; returns what happened.
    pub fn run(&self) -> Result<ScenarioReport, ScenarioError> {
        self.run_with(false).map(|(report, _)| report)
    }

    /// Replays the steps twice with the same seed and compares the two runs' traces.
    pub fn check_determinism(&self) -> Result<crate::determinism::Comparison, ScenarioError> {
        // Each on a thread of its own: a thread's HashMap keys are drawn once.
        let (first, first_lines) = crate::os_random::on_new_thread(|| self.run_with(true))?;
        let (second, second_lines) = crate::os_random::on_new_thread(|| self.run_with(true))?;
        Ok(crate::determinism::compare((first.trace_hash, first_lines), (second.trace_hash, second_lines)))
    }

    /// [`Self::run`], and the trace line by line when `keep_trace`.
    pub fn run_with(&self, keep_trace: bool) -> Result<(ScenarioReport, Vec<String>), ScenarioError> {
        self.run_and_inspect(keep_trace, |_| {})
    }

    /// [`Self::run`], showing `inspect` the world once the run is over (for tests).
    pub fn run_inspecting(&self, inspect: impl FnOnce(&World)) -> Result<ScenarioReport, ScenarioError> {
        self.run_and_inspect(false, inspect).map(|(report, _)| report)
    }

    fn run_and_inspect(
        &self,
        keep_trace: bool,
        inspect: impl FnOnce(&World),
    ) -> Result<(ScenarioReport, Vec<String>), ScenarioError> {
        let config = WorldConfig {
            keep_trace,
            seed: self.seed,
            operator: self.operator.unwrap_or(true),
            external_nfs: self.external_nfs.clone(),
            ..WorldConfig::default()
        };
        let wall = std::time::Instant::now();
        let mut run = Run::new(World::new(config).map_err(|e| step_error(0, "world", e))?);
        run.skip_missing_targets = self.skip_missing_targets;
        let mut timeline = Vec::new();
        let last = self.steps.len();
        for (index, step) in self.steps.iter().enumerate() {
            let number = index + 1;
            let what = step.describe();
            let started = run.world.elapsed();
            let stepped = run.step(step);
            run.forget_faults_of_gone_pods();
            let faults_in_place = !run.active_faults.is_empty();
            run.world.set_faults_in_place(faults_in_place);
            // The world checks after every simulated step; a step that only wrote objects is
            // checked here.
            let checked = stepped.and_then(|()| run.world.check_now().map_err(|broken| broken.to_string()));
            checked.map_err(|message| run.failure(number, &what, message))?;
            timeline.push(TimelineEntry { started, took: run.world.elapsed() - started, step: what });
        }
        let liveness = run.check_liveness().map_err(|message| match run.world.broken_invariant() {
            Some(_) => run.failure(last, "end", message),
            None => ScenarioError::Liveness { step: last, message },
        })?;
        run.world.settle_cleanups().map_err(|e| run.failure(last, "end", e.to_string()))?;
        run.check_coverage().map_err(|message| step_error(last, "end", message))?;
        inspect(&run.world);
        let trace = run.world.trace_lines();
        let report = ScenarioReport {
            description: self.description.trim().to_string(),
            seed: self.seed,
            timeline,
            volumes: volumes(&run.world.api).iter().map(VolumeLine::of).collect(),
            consumers: run.world.consumers().pods(),
            invariants: run.world.invariant_counts(),
            failovers: run.failovers(),
            liveness,
            simulated: run.world.elapsed(),
            wall: wall.elapsed(),
            trace_hash: run.world.trace_hash(),
            replayable: run.world.std_hash_keys_seeded(),
        };
        Ok((report, trace))
    }
}

/// How long after the last step, with every fault healed, the system has to be whole again.
const LIVENESS_BOUND: Duration = Duration::from_secs(600);

fn partition_name(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("partition {a} {b}")
}

fn step_error(step: usize, what: &str, e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::Step { step, what: what.to_string(), message: e.to_string() }
}

struct Run {
    world: World,
    /// Whether the scenario started consumers (their invariants must then have checked something).
    consumers: bool,
    /// Each consumer pod (`namespace/name-0`) and the volume it mounts (`namespace/name`).
    consumer_volumes: BTreeMap<String, String>,
    /// Faults of an NFS server: what, of which volume, and when.
    faults: Vec<(String, String, Duration)>,
    /// The node the last `loseNode` lost.
    lost_node: Option<String>,
    /// Faults still in place (partitions, crashed hosts, lost nodes, API faults): liveness is
    /// checked at the end only once there are none.
    active_faults: std::collections::BTreeSet<String>,
    /// See [`Scenario::skip_missing_targets`].
    skip_missing_targets: bool,
    /// Pod hosts crashed by a step, with their pod (`namespace`, `name`): once the pod is gone,
    /// so is the fault.
    crashed_pods: BTreeMap<String, (String, String)>,
    /// The export directories made full, by the volume named in the step.
    full_disks: BTreeMap<String, std::path::PathBuf>,
}

/// One step of a replayed scenario, with when it started and how long it took (simulated).
#[derive(Clone, Debug)]
pub struct TimelineEntry {
    pub started: Duration,
    pub took: Duration,
    pub step: String,
}

/// A volume at the end of a scenario.
#[derive(Clone, Debug)]
pub struct VolumeLine {
    pub volume: String,
    pub phase: String,
    pub revision: String,
    pub nfs_address: String,
}

impl VolumeLine {
    fn of(volume: &Value) -> Self {
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
        Self {
            volume: format!("{} {}", volume["kind"].as_str().unwrap_or_default(), volume_key(volume)),
            phase: text(&volume["status"]["phase"]),
            revision: text(&volume["status"]["sync"]["revision"]),
            nfs_address: text(&volume["status"]["nfsServerAddress"]),
        }
    }
}

/// A fault of a volume's NFS server and how long its consumers waited to be served again (from
/// the fault to the first round any of them completed after it; simulated time).
#[derive(Clone, Debug)]
pub struct Failover {
    pub fault: String,
    pub consumers: usize,
    pub served_again: Option<Duration>,
}

/// What a scenario run saw: its timeline, the volumes and consumers at the end, how often each
/// invariant was checked, and how to replay it.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    pub description: String,
    pub seed: u64,
    pub timeline: Vec<TimelineEntry>,
    pub volumes: Vec<VolumeLine>,
    pub consumers: BTreeMap<String, crate::programs::consumer::PodRecord>,
    /// Each invariant, and how many times it was checked.
    pub invariants: Vec<(String, u64)>,
    /// How long the consumers of a volume waited after each fault of its NFS server.
    pub failovers: Vec<Failover>,
    /// What the liveness check at the end found.
    pub liveness: String,
    pub simulated: Duration,
    pub wall: Duration,
    pub trace_hash: String,
    /// Whether the run's HashMaps iterated in the seed's order (see `World::std_hash_keys_seeded`).
    pub replayable: bool,
}

impl ScenarioReport {
    /// What the run did, without what depends on the machine or on every byte (wall time, the
    /// trace hash): the timeline, the volumes and consumers at the end, the failovers, liveness
    /// and the invariants' counts. The tests keep each named scenario's as a snapshot, so that a
    /// change in behaviour shows in review.
    pub fn outcome(&self) -> String {
        struct Outcome<'a>(&'a ScenarioReport);
        impl std::fmt::Display for Outcome<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.write_outcome(f)
            }
        }
        Outcome(self).to_string()
    }

    fn write_outcome(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.description)?;
        writeln!(f)?;
        writeln!(f, "{:>9}  {:>8}  step", "at", "took")?;
        for entry in &self.timeline {
            let (at, took) = (entry.started.as_secs_f64(), entry.took.as_secs_f64());
            writeln!(f, "{at:>8.1}s  {took:>7.1}s  {}", entry.step)?;
        }
        writeln!(f)?;
        writeln!(f, "{:<40} {:<10} {:<12} nfs address", "volume", "phase", "revision")?;
        for v in &self.volumes {
            writeln!(f, "{:<40} {:<10} {:<12} {}", v.volume, v.phase, v.revision, v.nfs_address)?;
        }
        if !self.consumers.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<28} {:<7} {:>6} {:>8} {:>6} {:>7} {:>6}  revisions read whole",
                "consumer pod", "role", "rounds", "checked", "acked", "resent", "errors"
            )?;
            for (pod, r) in &self.consumers {
                let revisions: Vec<&str> = r.revisions.iter().map(String::as_str).collect();
                writeln!(
                    f,
                    "{pod:<28} {:<7} {:>6} {:>8} {:>6} {:>7} {:>6}  {}",
                    r.role,
                    r.rounds,
                    r.checked,
                    r.acknowledged,
                    r.resent,
                    r.errors,
                    revisions.join(" ")
                )?;
            }
        }
        if !self.failovers.is_empty() {
            writeln!(f)?;
            writeln!(f, "failovers (simulated time until a consumer of the volume completed a round again):")?;
            for failover in &self.failovers {
                match (failover.consumers, failover.served_again) {
                    (0, _) => writeln!(f, "  {}: no consumers to measure with", failover.fault)?,
                    (_, Some(after)) => {
                        writeln!(f, "  {}: served again after {:.1} s", failover.fault, after.as_secs_f64())?
                    }
                    (_, None) => writeln!(f, "  {}: NOT served again by the end of the run", failover.fault)?,
                }
            }
        }
        writeln!(f)?;
        writeln!(f, "liveness: {}", self.liveness)?;
        writeln!(f, "invariants (times checked):")?;
        crate::summary::write_invariants(f, &self.invariants)
    }
}

impl std::fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_outcome(f)?;
        writeln!(f)?;
        crate::summary::write_closing_line(f, self.simulated, self.wall, &self.trace_hash, self.seed, self.replayable)
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    sv_operator::units::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

/// The first field the operator's own validation finds wrong in a stored volume, if any (a spec
/// that does not even read as one is wrong as a whole: `spec`).
pub(crate) fn invalid_field(volume: &Value) -> Option<String> {
    use sv_operator::api::{ClusterSharedVolume, SharedVolume};
    fn first_error<V: sv_operator::api::Volume>(volume: &Value) -> Option<String> {
        use sv_operator::api::validation::{VolumeInput, validate_volume};
        let Ok(volume) = serde_json::from_value::<V>(volume.clone()) else { return Some("spec".to_string()) };
        validate_volume(VolumeInput::of(&volume), None).errors.first().map(|e| e.field.clone())
    }
    match volume["kind"].as_str() {
        Some("SharedVolume") => first_error::<SharedVolume>(volume),
        Some("ClusterSharedVolume") => first_error::<ClusterSharedVolume>(volume),
        _ => None,
    }
}

/// What liveness holds a volume to once every fault healed.
enum Held {
    /// It is invalid: Failed, with a message naming this field.
    Failed(String),
    /// Its source is down, refuses its credentials or answers past its syncTimeout: it waits.
    Waiting,
    /// Ready, and at this revision when it has a source that answers.
    Ready(Option<String>),
}

/// The volumes that do not hold to what liveness asks of them yet.
#[derive(Default)]
struct Unmet {
    not_ready: Vec<String>,
    not_failed: Vec<String>,
    behind: Vec<String>,
}

impl Unmet {
    fn is_empty(&self) -> bool {
        self.not_ready.is_empty() && self.not_failed.is_empty() && self.behind.is_empty()
    }
}

fn volume_key(volume: &Value) -> String {
    let name = volume["metadata"]["name"].as_str().unwrap_or_default();
    match volume["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

fn find_volume(api: &ApiServer, key: &str) -> Option<Value> {
    volumes(api).into_iter().find(|v| volume_key(v) == key)
}

impl Wait {
    fn holds(&self, api: &ApiServer) -> Result<bool, String> {
        let Some(volume) = find_volume(api, &self.volume) else { return Ok(false) };
        let status = &volume["status"];
        // `none`: the operator has not reported on the volume yet.
        let phase_ok = self.phase.as_ref().is_none_or(|p| match p.as_str() {
            "none" => status["phase"].is_null(),
            p => status["phase"] == p,
        });
        let revision_ok = self.revision.as_ref().is_none_or(|r| status["sync"]["revision"] == r.as_str());
        let message_ok = self.message.as_ref().is_none_or(|text| {
            let conditions = status["conditions"].as_array().into_iter().flatten().map(|c| &c["message"]);
            std::iter::once(&status["message"])
                .chain(conditions)
                .filter_map(Value::as_str)
                .any(|m| m.contains(text.as_str()))
        });
        let condition_ok = match &self.condition {
            None => true,
            Some(wanted) => {
                let (kind, rest) =
                    wanted.split_once('=').ok_or(format!("condition {wanted:?}: write Type=Status[/Reason]"))?;
                let (value, reason) = rest.split_once('/').map_or((rest, None), |(v, r)| (v, Some(r)));
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == kind && c["status"] == value && reason.is_none_or(|r| c["reason"] == r))
            }
        };
        Ok(phase_ok && revision_ok && condition_ok && message_ok)
    }
}

impl Step {
    /// The step as the timeline shows it: as it is written in the file, on one line.
    pub fn describe(&self) -> String {
        let text = match self {
            // The objects, not the first line of their YAML.
            Step::Apply(manifests) => {
                let documents: Vec<Value> = serde_saphyr::from_multiple(manifests).unwrap_or_default();
                let objects: Vec<String> = documents
                    .iter()
                    .filter(|d| !d.is_null())
                    .map(|d| {
                        let (kind, meta) = (d["kind"].as_str().unwrap_or("?"), &d["metadata"]);
                        match meta["namespace"].as_str() {
                            Some(ns) => format!("{kind} {ns}/{}", meta["name"].as_str().unwrap_or("?")),
                            None => format!("{kind} {}", meta["name"].as_str().unwrap_or("?")),
                        }
                    })
                    .collect();
                format!("apply: {}", objects.join(", "))
            }
            Step::ApplyInvalid { field, manifest } => {
                let document: Value = serde_saphyr::from_str(manifest).unwrap_or_default();
                let (kind, meta) = (document["kind"].as_str().unwrap_or("?"), &document["metadata"]);
                let name = match meta["namespace"].as_str() {
                    Some(ns) => format!("{ns}/{}", meta["name"].as_str().unwrap_or("?")),
                    None => meta["name"].as_str().unwrap_or("?").to_string(),
                };
                format!("applyInvalid: {kind} {name} ({field})")
            }
            _ => serde_json::to_value(self).map(|v| flow(&v, true)).unwrap_or_else(|_| format!("{self:?}")),
        };
        if text.chars().count() > 110 { format!("{}...", text.chars().take(107).collect::<String>()) } else { text }
    }
}

/// A value in YAML's flow style (`{key: value, list: [a, b]}`); at the top, a single-key map as
/// `key: value`, as a step is written.
fn flow(value: &Value, top: bool) -> String {
    match value {
        Value::Object(map) if top && map.len() == 1 => {
            map.iter().map(|(k, v)| format!("{k}: {}", flow(v, false))).collect::<String>()
        }
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {}", flow(v, false))).collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(|v| flow(v, false)).collect::<Vec<_>>().join(", ")),
        Value::String(text) => {
            let line = text.lines().next().unwrap_or_default();
            let line = if text.lines().nth(1).is_some() { format!("{line} ...") } else { line.to_string() };
            if line.is_empty() || line.contains(": ") || line.contains(['{', '}', '[', ']', ',', '#']) {
                format!("{line:?}")
            } else {
                line
            }
        }
        other => other.to_string(),
    }
}

impl Run {
    fn new(world: World) -> Self {
        Self {
            world,
            consumers: false,
            consumer_volumes: BTreeMap::new(),
            faults: Vec::new(),
            lost_node: None,
            active_faults: Default::default(),
            skip_missing_targets: false,
            crashed_pods: BTreeMap::new(),
            full_disks: BTreeMap::new(),
        }
    }

    /// A step's failure: a broken invariant if one stopped the run, else the step's own.
    fn failure(&self, step: usize, what: &str, message: String) -> ScenarioError {
        let what = what.to_string();
        match self.world.broken_invariant() {
            Some(invariant) => ScenarioError::Broken { step, what, invariant: invariant.to_string(), message },
            None => ScenarioError::Step { step, what, message },
        }
    }

    /// Records a fault aimed at a volume's NFS server, to measure how long its consumers waited.
    fn note_fault(&mut self, what: &str, host: &HostRef) {
        if let HostRef::PodOf { pod_of } = host
            && pod_of.component == "nfs-server"
        {
            self.faults.push((what.to_string(), pod_of.volume.clone(), self.world.elapsed()));
        }
    }

    /// For each NFS server fault: how long after it a consumer of that volume completed a round
    /// again (`None`: none did, or the volume has no consumers).
    fn failovers(&self) -> Vec<Failover> {
        let pods = self.world.consumers().pods();
        self.faults
            .iter()
            .map(|(what, volume, at)| {
                let served_again = pods
                    .iter()
                    .filter(|(pod, _)| self.consumer_volumes.get(*pod) == Some(volume))
                    .filter_map(|(_, record)| record.round_times.iter().find(|t| *t > at).copied())
                    .min()
                    .map(|t| t - *at);
                let consumers = self.consumer_volumes.values().filter(|v| *v == volume).count();
                Failover {
                    fault: format!("{what} of {volume}'s NFS server at {:.1}s", at.as_secs_f64()),
                    consumers,
                    served_again,
                }
            })
            .collect()
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        if self.skip_missing_targets
            && let Some(missing) = self.missing_target(step)
        {
            tracing::info!(%missing, step = %step.describe(), "skipped: nothing to aim the fault at");
            return Ok(());
        }
        let world = &mut self.world;
        let run = |world: &mut World, d: Duration| world.run_for(d).map_err(|e| format!("the simulation failed: {e}"));
        match step {
            Step::Install(_) => {
                let errors = install(world)?;
                if !errors.is_empty() {
                    return Err(format!("installing: {errors:?}"));
                }
            }
            Step::Example(file) => {
                let documents = example(file).map_err(|e| e.to_string())?;
                self.create(documents)?;
            }
            Step::Apply(text) => {
                let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
                self.create(documents.into_iter().filter(|d| !d.is_null()).collect())?;
            }
            Step::ApplyInvalid { field, manifest } => {
                let document: Value = serde_saphyr::from_str(manifest).map_err(|e| e.to_string())?;
                match self.world.create(document)? {
                    Err(crate::api::ApiError::Status { body, .. })
                        if body["message"].as_str().is_some_and(|m| m.contains(field.as_str())) => {}
                    Err(e) => return Err(format!("refused, but the answer does not name {field}: {e:?}")),
                    // Stored (no webhook refused it, or none answered): the operator must mark
                    // it Failed (liveness).
                    Ok(()) => {}
                }
            }
            Step::RunFor(text) => run(world, duration(text)?)?,
            Step::WaitFor(wait) => {
                let within = wait.within.as_deref().map(duration).transpose()?.unwrap_or_default();
                let mut failure = None;
                let held = world
                    .run_until(within, |api| match wait.holds(api) {
                        Ok(held) => held,
                        Err(e) => {
                            failure = Some(e);
                            true
                        }
                    })
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if let Some(e) = failure {
                    return Err(e);
                }
                if !held {
                    let status = find_volume(&world.api, &wait.volume).map(|v| v["status"].clone());
                    return Err(format!("not reached within {within:?}; the volume's status: {status:#?}"));
                }
            }
            Step::Source(source) => world.sources().set(
                &source.identity,
                SourceState::Tree {
                    revision: source.revision.clone(),
                    files: source.files.iter().map(|(p, c)| SimFile::new(p, c)).collect(),
                    credential: source.credential.clone(),
                },
            ),
            Step::SourceFailing { identity, status, message } => {
                world.sources().set(identity, SourceState::Failing { status: *status, message: message.clone() });
            }
            Step::SourceHanging { identity } => world.sources().set(identity, SourceState::Hanging),
            Step::SourceSlow { identity, delay } => world.sources().set_latency(identity, duration(delay)?),
            Step::Partition([a, b]) => {
                let (a, b) = (self.host(a)?, self.host(b)?);
                self.active_faults.insert(partition_name(&a, &b));
                self.world.partition(&a, &b);
            }
            Step::Repair([a, b]) => {
                let (a, b) = (self.host(a)?, self.host(b)?);
                self.active_faults.remove(&partition_name(&a, &b));
                self.world.repair(&a, &b);
            }
            Step::Crash(host_ref) => {
                let host = self.host(host_ref)?;
                if let HostRef::PodOf { pod_of } = host_ref {
                    let pod = self.pod_of(pod_of)?;
                    let (namespace, name) = (&pod["metadata"]["namespace"], &pod["metadata"]["name"]);
                    let pod = (namespace.as_str().unwrap_or_default(), name.as_str().unwrap_or_default());
                    self.crashed_pods.insert(host.clone(), (pod.0.to_string(), pod.1.to_string()));
                }
                self.note_fault("crash", host_ref);
                self.active_faults.insert(format!("host {host} crashed"));
                self.world.crash(&host);
            }
            Step::CrashAfterWrites { host, writes } => {
                let host = self.host(&HostRef::Name(host.clone()))?;
                self.active_faults.insert(format!("host {host} crashed"));
                self.world.crash_after_writes(&host, *writes);
            }
            Step::DropWatches(_) => self.world.api.drop_watches(),
            Step::WatchLag(text) => {
                let lag = duration(text)?;
                self.fault_in_place("watch lag".to_string(), !lag.is_zero());
                self.world.api.set_watch_lag(lag);
            }
            Step::DiskFull { volume, full: true } => {
                let export = self.export_of(volume)?;
                self.world.set_disk_full(&export, true);
                self.full_disks.insert(volume.clone(), export);
                self.fault_in_place(format!("disk of {volume} full"), true);
            }
            Step::DiskFull { volume, full: false } => {
                if let Some(export) = self.full_disks.remove(volume) {
                    self.world.set_disk_full(&export, false);
                }
                self.fault_in_place(format!("disk of {volume} full"), false);
            }
            Step::StallWatches(stalled) => {
                self.fault_in_place("watches stalled".to_string(), *stalled);
                self.world.stall_watches(*stalled);
            }
            Step::StaleReplica { host: host_ref, stale } => {
                let host = self.host(host_ref)?;
                self.fault_in_place(format!("replica of {host} stale"), *stale);
                self.world.set_stale_replica(&host, *stale);
            }
            Step::ClockSkew { host, by } => {
                let host = self.host(host)?;
                let (sign, magnitude) = by.strip_prefix('-').map_or((1, by.as_str()), |rest| (-1, rest));
                let skew = k8s_openapi::jiff::SignedDuration::try_from(duration(magnitude)?)
                    .map_err(|e| format!("{by:?}: {e}"))?
                    * sign;
                self.fault_in_place(format!("clock of {host} skewed"), !skew.is_zero());
                self.world.set_clock_skew(&host, skew);
            }
            Step::Bounce(host_ref) => {
                let host = self.host(host_ref)?;
                self.note_fault("restart", host_ref);
                self.active_faults.remove(&format!("host {host} crashed"));
                self.world.bounce(&host);
            }
            Step::LoseNode(host) => {
                self.note_fault("node loss", host);
                let node = match host {
                    HostRef::Name(node) => {
                        self.node_exists(node)?;
                        node.clone()
                    }
                    HostRef::PodOf { pod_of } => {
                        self.pod_of(pod_of)?["spec"]["nodeName"].as_str().ok_or("the pod is not scheduled")?.to_string()
                    }
                };
                self.world.set_node_ready(&node, false);
                self.active_faults.insert(format!("node {node} lost"));
                self.lost_node = Some(node);
            }
            Step::NodeBack(node) => {
                let node = self.node_name(node)?;
                self.active_faults.remove(&format!("node {node} lost"));
                self.world.set_node_ready(&node, true)
            }
            Step::OutOfService(node) => {
                let node = self.node_name(node)?;
                // Declared down: what it held may move, so liveness no longer waits for it.
                self.active_faults.remove(&format!("node {node} lost"));
                self.world.taint_out_of_service(&node)?;
                // Measured from here too: how long a failover takes once the node is declared down.
                let now = self.world.elapsed();
                let lost: Vec<String> =
                    self.faults.iter().filter(|(what, ..)| what == "node loss").map(|(_, v, _)| v.clone()).collect();
                for volume in lost {
                    self.faults.push(("out-of-service taint after the node loss".into(), volume, now));
                }
            }
            Step::ApiFaults { fail_rate, code, lost_reply_rate } => {
                self.fault_in_place("API faults".to_string(), *fail_rate > 0.0 || *lost_reply_rate > 0.0);
                self.world.set_api_faults(crate::api::Faults {
                    fail_rate: *fail_rate,
                    fail_code: *code,
                    lost_reply_rate: *lost_reply_rate,
                    ..crate::api::Faults::default()
                })
            }
            Step::Delete { kind, namespace, name } => {
                let rt = world.api.state().registry.types().find(|t| t.kind == *kind).cloned();
                let rt = rt.ok_or(format!("no kind {kind} is served"))?;
                let namespace = namespace.as_deref().unwrap_or_default();
                world.delete(&rt, namespace, name)?.map_err(|e| format!("{e:?}"))?;
            }
            Step::Webhook(_) => {
                let documents: Vec<Value> = serde_saphyr::from_multiple(include_str!("../../deploy/base/webhook.yaml"))
                    .map_err(|e| e.to_string())?;
                self.create(documents.into_iter().filter(|d| !d.is_null()).collect())?;
                let within = Duration::from_secs(300);
                let serving = self
                    .world
                    .run_until(within, crate::install::webhook_serving)
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if !serving {
                    return Err(format!("the webhook did not serve within {within:?}"));
                }
            }
            Step::Consumer(consumer) => {
                let mut args = vec![consumer.role.clone()];
                let mount = self.mount_path(&consumer.namespace, &consumer.volume)?;
                args.push(format!("--mount={mount}"));
                args.push(format!("--every={}", consumer.every.as_deref().unwrap_or("1s")));
                match (consumer.role.as_str(), &consumer.stable) {
                    ("writer", Some(stable)) => args.push(format!("--stable={stable}")),
                    ("reader" | "writer" | "holder", None) => {}
                    ("reader" | "holder", Some(_)) => return Err("only a writer takes `stable`".into()),
                    (role, _) => return Err(format!("role {role:?}: write reader, writer or holder")),
                }
                use crate::programs::consumer::{Mounts, stateful_set};
                let shared = format!("{}/{}", consumer.namespace, consumer.volume);
                let (mounts, volume) = match find_volume(&self.world.api, &shared) {
                    Some(_) => (Mounts::Shared(&consumer.volume), shared),
                    None => (Mounts::Cluster(&consumer.volume), consumer.volume.clone()),
                };
                let set = stateful_set(&consumer.namespace, &consumer.name, mounts, &args);
                self.consumers = true;
                self.consumer_volumes.insert(format!("{}/{}-0", consumer.namespace, consumer.name), volume);
                self.create(vec![set])?;
            }
            Step::WaitForPod { pod, phase, within } => {
                let (namespace, name) = pod.split_once('/').ok_or(format!("pod {pod:?}: write namespace/name"))?;
                let within = within.as_deref().map(duration).transpose()?.unwrap_or_default();
                let phase_of = |api: &ApiServer| -> String {
                    let state = api.state();
                    let pod = state
                        .registry
                        .find("", "v1", "pods")
                        .and_then(|rt| state.store.get(&rt.id, namespace, name).cloned());
                    match pod {
                        None => "absent".to_string(),
                        Some(p) if !p["metadata"]["deletionTimestamp"].is_null() => "Terminating".to_string(),
                        Some(p) => p["status"]["phase"].as_str().unwrap_or("Pending").to_string(),
                    }
                };
                let held = self
                    .world
                    .run_until(within, |api| phase_of(api) == *phase)
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if !held {
                    return Err(format!("pod {pod} is {} after {within:?}, not {phase}", phase_of(&self.world.api)));
                }
            }
            Step::WaitForCount { kind, namespace, labels, count, within } => {
                let within = within.as_deref().map(duration).transpose()?.unwrap_or_default();
                let counted = |api: &ApiServer| -> Result<Vec<String>, String> {
                    let state = api.state();
                    let rt =
                        state.registry.types().find(|t| t.kind == *kind).ok_or(format!("no kind {kind} is served"))?;
                    Ok(state
                        .store
                        .list(&rt.id, namespace.as_deref())
                        .filter(|(_, o)| labels.iter().all(|(k, v)| o["metadata"]["labels"][k] == v.as_str()))
                        .map(|((ns, name), _)| if ns.is_empty() { name.clone() } else { format!("{ns}/{name}") })
                        .collect())
                };
                counted(&self.world.api)?;
                let held = self
                    .world
                    .run_until(within, |api| counted(api).is_ok_and(|found| found.len() == *count))
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if !held {
                    return Err(format!(
                        "{} {kind} after {within:?}, not {count}: {:?}",
                        counted(&self.world.api)?.len(),
                        counted(&self.world.api)?
                    ));
                }
            }
            Step::WaitForConsumers { rounds, within, pods } => {
                let within = duration(within)?;
                // Every consumer the scenario made, or the ones it names (not one it expects to be
                // refused at admission).
                let expected: Vec<String> = if pods.is_empty() { self.consumer_pods() } else { pods.clone() };
                if expected.is_empty() {
                    return Err("no consumer to wait for".into());
                }
                let behind = self.world.run_until_rounds(&expected, *rounds, within).map_err(|e| e.to_string())?;
                if !behind.is_empty() {
                    let pods = self.world.consumers().pods();
                    let state: Vec<String> = behind
                        .iter()
                        .map(|p| match pods.get(p) {
                            Some(r) => format!("{p}: {} rounds, last error {:?}", r.rounds, r.last_error),
                            None => format!("{p}: never started"),
                        })
                        .collect();
                    return Err(format!("consumers made fewer than {rounds} rounds within {within:?}: {state:?}"));
                }
            }
            Step::ExpectClean { within } => {
                let within = duration(within)?;
                let clean = world
                    .run_until(within, |api| volumes(api).is_empty() && managed_objects(api).is_empty())
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if !clean {
                    let left: Vec<String> =
                        volumes(&world.api).iter().map(volume_key).chain(managed_objects(&world.api)).collect();
                    return Err(format!("left after {within:?}: {left:?}"));
                }
            }
        }
        Ok(())
    }

    /// Applies `documents` one after another, as `kubectl apply` does (see [`World::apply`]).
    fn create(&mut self, documents: Vec<Value>) -> Result<(), String> {
        let mut errors = Vec::new();
        for document in documents {
            if let Err(e) = self.world.apply(document)? {
                errors.push(format!("{e:?}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(format!("applying: {errors:?}")) }
    }

    /// The `mountPath` of a SharedVolume in `namespace`, or of a ClusterSharedVolume.
    fn mount_path(&self, namespace: &str, volume: &str) -> Result<String, String> {
        let found = find_volume(&self.world.api, &format!("{namespace}/{volume}"))
            .or_else(|| find_volume(&self.world.api, volume))
            .ok_or(format!("no SharedVolume {namespace}/{volume} and no ClusterSharedVolume {volume}"))?;
        found["spec"]["mountPath"].as_str().map(str::to_string).ok_or(format!("volume {volume} has no mountPath"))
    }

    /// `namespace/name-0` of every consumer StatefulSet the scenario made.
    fn consumer_pods(&self) -> Vec<String> {
        let state = self.world.api.state();
        let Some(rt) = state.registry.find("apps", "v1", "statefulsets") else { return Vec::new() };
        let image = crate::programs::consumer::CONSUMER_IMAGE;
        state
            .store
            .list(&rt.id, None)
            .filter(|(_, s)| {
                s["spec"]["template"]["spec"]["containers"][0]["image"].as_str().is_some_and(|i| i.starts_with(image))
            })
            .map(|((namespace, name), _)| format!("{namespace}/{name}-0"))
            .collect()
    }

    /// Why a fault step has nothing to aim at now (a volume's pod that does not exist, `lost`
    /// when no node was lost), if it has not.
    fn missing_target(&self, step: &Step) -> Option<String> {
        match step {
            Step::Crash(HostRef::PodOf { pod_of })
            | Step::Bounce(HostRef::PodOf { pod_of })
            | Step::LoseNode(HostRef::PodOf { pod_of }) => self.pod_of(pod_of).err(),
            Step::NodeBack(node) | Step::OutOfService(node) => self.node_name(node).err(),
            Step::DiskFull { volume, full: true } => self.export_of(volume).err(),
            _ => None,
        }
    }

    /// Records a fault as in place or healed (liveness waits until none is in place).
    fn fault_in_place(&mut self, fault: String, in_place: bool) {
        match in_place {
            true => self.active_faults.insert(fault),
            false => self.active_faults.remove(&fault),
        };
    }

    /// The directory the NFS server of a volume (`namespace/name`, or a ClusterSharedVolume's
    /// name) exports.
    fn export_of(&self, volume: &str) -> Result<std::path::PathBuf, String> {
        let object = find_volume(&self.world.api, volume).ok_or(format!("no volume {volume}"))?;
        let reference =
            object["spec"]["referenceValue"].as_str().ok_or(format!("volume {volume} has no reference yet"))?;
        self.world.nfs_server(reference).map(|(export, _)| export).ok_or(format!("no NFS server serves {volume}"))
    }

    /// A crashed pod's fault ends with its pod: forgets those whose pod is gone (or replaced).
    fn forget_faults_of_gone_pods(&mut self) {
        let gone: Vec<String> = self
            .crashed_pods
            .iter()
            .filter(|(host, (namespace, name))| self.world.pod_host(namespace, name).as_ref() != Some(*host))
            .map(|(host, _)| host.clone())
            .collect();
        for host in gone {
            self.crashed_pods.remove(&host);
            self.active_faults.remove(&format!("host {host} crashed"));
        }
    }

    /// Of `pods` (`namespace/name`), those that exist.
    fn existing_pods(&self, pods: Vec<String>) -> Vec<String> {
        let state = self.world.api.state();
        let kind = state.registry.find("", "v1", "pods").map(|rt| rt.id.clone());
        pods.into_iter()
            .filter(|p| {
                let (namespace, name) = p.split_once('/').unwrap_or_default();
                kind.as_ref().is_some_and(|id| state.store.get(id, namespace, name).is_some())
            })
            .collect()
    }

    /// The newest live pod of a volume's component.
    fn pod_of(&self, pod_of: &PodOf) -> Result<Value, String> {
        let volume = find_volume(&self.world.api, &pod_of.volume).ok_or(format!("no volume {}", pod_of.volume))?;
        let owner = match volume["metadata"]["namespace"].as_str() {
            Some(namespace) => format!(
                "{}/{namespace}/{}",
                volume["kind"].as_str().unwrap_or_default(),
                volume["metadata"]["name"].as_str().unwrap_or_default()
            ),
            None => format!(
                "{}/{}",
                volume["kind"].as_str().unwrap_or_default(),
                volume["metadata"]["name"].as_str().unwrap_or_default()
            ),
        };
        let state = self.world.api.state();
        let owner_key = sv_operator::api::annotations::OWNER;
        let component_key = sv_operator::api::labels::COMPONENT;
        let workloads =
            ["statefulsets", "replicasets"].into_iter().filter_map(|p| state.registry.find("apps", "v1", p).cloned());
        let selector = workloads
            .flat_map(|rt| state.store.list(&rt.id, None).map(|(_, o)| o.clone()).collect::<Vec<_>>())
            .find(|w| {
                w["metadata"]["annotations"][owner_key] == owner.as_str()
                    && w["metadata"]["labels"][component_key] == pod_of.component.as_str()
            })
            .map(|w| w["spec"]["selector"]["matchLabels"].clone())
            .ok_or(format!("no {} workload for {owner}", pod_of.component))?;
        let pods = state.registry.find("", "v1", "pods").cloned().ok_or("no pods")?;
        state
            .store
            .list(&pods.id, None)
            .map(|(_, p)| p)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| selector.as_object().is_some_and(|s| s.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v)))
            .max_by_key(|p| p["metadata"]["creationTimestamp"].as_str().map(str::to_string))
            .map(|p| (**p).clone())
            .ok_or(format!("no live {} pod for {owner}", pod_of.component))
    }

    fn host(&self, host: &HostRef) -> Result<String, String> {
        match host {
            HostRef::Name(name) if self.world.has_host(name) => Ok(name.clone()),
            HostRef::Name(name) => Err(format!("no host named {name:?} (hosts: api, sources, operator, or pod_of)")),
            HostRef::PodOf { pod_of } => {
                let pod = self.pod_of(pod_of)?;
                let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                self.world.pod_host(namespace, name).ok_or(format!("pod {namespace}/{name} runs no program"))
            }
        }
    }

    /// Liveness, once the steps are done: with every fault healed, every volume whose source
    /// answers becomes Ready and every consumer pod is served again, within [`LIVENESS_BOUND`].
    /// Returns what was found; a run that still has faults in place is not held to it (and says
    /// so), and a volume whose source is failing or stalled is expected to wait (and listed).
    fn check_liveness(&mut self) -> Result<String, String> {
        self.forget_faults_of_gone_pods();
        if !self.active_faults.is_empty() {
            return Ok(format!("not checked: faults still in place at the end: {:?}", self.active_faults));
        }
        let sources = self.world.sources().clone();
        // What each volume is held to, decided once per look at it.
        let held = |volume: &Value| -> Held {
            if let Some(field) = invalid_field(volume) {
                return Held::Failed(field);
            }
            let spec = serde_json::from_value::<sv_operator::api::VolumeSpec>(volume["spec"].clone()).ok();
            let Some(spec) = spec else { return Held::Ready(None) };
            // A source slower than the volume's syncTimeout never completes a sync.
            let timeout = sv_operator::api::validation::effective_sync(&spec).map(|s| s.timeout);
            let Some(identity) = spec.source.as_ref().and_then(crate::programs::identity_of) else {
                return Held::Ready(None);
            };
            match sources.get(&identity) {
                SourceState::Failing { .. } | SourceState::Hanging => Held::Waiting,
                _ if sources.refused_last_fetch(&identity) => Held::Waiting,
                _ if timeout.is_some_and(|t| sources.latency(&identity) >= t) => Held::Waiting,
                SourceState::Tree { revision, .. } => Held::Ready(Some(revision)),
            }
        };
        let consumers = self.existing_pods(self.consumer_pods());
        let started = self.world.elapsed();
        let served = |world: &World| world.consumers().unserved_since(&consumers, started).is_empty();
        // The volumes that do not hold to it yet, and why.
        let unmet = |api: &ApiServer| -> Unmet {
            let mut unmet = Unmet::default();
            for volume in volumes(api) {
                let status = &volume["status"];
                match held(&volume) {
                    // An invalid volume cannot converge to Ready: it must say so, naming the field.
                    Held::Failed(field) => {
                        if status["phase"] != "Failed"
                            || !status["message"].as_str().is_some_and(|m| m.contains(field.as_str()))
                        {
                            unmet.not_failed.push(volume_key(&volume));
                        }
                    }
                    Held::Waiting => {}
                    Held::Ready(revision) => {
                        if status["phase"] != "Ready" {
                            unmet.not_ready.push(volume_key(&volume));
                        }
                        // A volume whose source answers publishes its newest revision, not only some.
                        if revision.is_some_and(|r| status["sync"]["revision"] != r.as_str()) {
                            let at = status["sync"]["revision"].as_str().unwrap_or("none");
                            unmet.behind.push(format!("{} at {at}", volume_key(&volume)));
                        }
                    }
                }
            }
            unmet
        };
        let mut live = false;
        while self.world.elapsed() < started + LIVENESS_BOUND {
            if unmet(&self.world.api).is_empty() && served(&self.world) {
                live = true;
                break;
            }
            self.world.run_for(Duration::from_millis(500)).map_err(|e| format!("the simulation failed: {e}"))?;
        }
        if !live {
            let unserved = self.world.consumers().unserved_since(&consumers, started);
            let Unmet { not_ready, not_failed, behind } = unmet(&self.world.api);
            return Err(format!(
                "liveness: with every fault healed, after {LIVENESS_BOUND:?}: volumes not Ready {not_ready:?}, invalid volumes not Failed with a message naming the field {not_failed:?}, volumes behind their source's newest revision {behind:?}, consumers not served {unserved:?}"
            ));
        }
        let (mut invalid, mut waiting, mut synced) = (Vec::new(), Vec::new(), 0);
        let left = volumes(&self.world.api);
        for volume in &left {
            match held(volume) {
                Held::Failed(_) => invalid.push(volume_key(volume)),
                Held::Waiting => waiting.push(volume_key(volume)),
                Held::Ready(Some(_)) => synced += 1,
                Held::Ready(None) => {}
            }
        }
        let after = (self.world.elapsed() - started).as_secs_f64();
        let every = if invalid.is_empty() { "every volume" } else { "every valid volume" };
        let what = match (left.is_empty(), consumers.len()) {
            (true, 0) => "no volume or consumer left to hold to it".to_string(),
            (true, n) => format!("no volume left, {n} consumer pod(s) served"),
            (false, 0) => format!("{every} Ready (no consumers)"),
            (false, n) => format!("{every} Ready and {n} consumer pod(s) served"),
        };
        let mut found = format!("{what} {after:.1} s after the last step (bound {}s)", LIVENESS_BOUND.as_secs());
        if synced > 0 {
            found.push_str(&format!("; {synced} with a source at its newest revision"));
        }
        if !invalid.is_empty() {
            found.push_str(&format!("; invalid, and Failed naming the field, as expected: {invalid:?}"));
        }
        if !waiting.is_empty() {
            found.push_str(&format!(
                "; waiting on their failing source (or one that refuses their credentials or answers past their syncTimeout), as expected: {waiting:?}"
            ));
        }
        Ok(found)
    }

    /// Once the steps are done: an invariant that had nothing to look at says so.
    fn check_coverage(&self) -> Result<(), String> {
        let (secrets, events) = self.world.invariants().secret_coverage();
        if secrets > 0 && events == 0 {
            return Err("the run wrote Secrets but no Event was ever there to check for their values".into());
        }
        if self.consumers {
            // A consumer that started and never completed a round checked nothing; one refused
            // at admission never started (a scenario may mean that).
            // One deleted before its first round checked nothing, and says so in the counts
            // (a shrunk failure may need just that: a consumer that came and went).
            let records = self.world.consumers().pods();
            let idle: Vec<String> = match records.is_empty() {
                // None started: fine only if every one was refused (no pod exists).
                true => self.existing_pods(self.consumer_pods()),
                false => {
                    self.existing_pods(records.iter().filter(|(_, r)| r.rounds == 0).map(|(p, _)| p.clone()).collect())
                }
            };
            if !idle.is_empty() {
                return Err(format!("consumers that never completed a round checked nothing: {idle:?}"));
            }
        }
        Ok(())
    }

    /// A node by name, or `lost` for the node the last `loseNode` lost.
    fn node_name(&self, node: &str) -> Result<String, String> {
        if node == "lost" {
            return self.lost_node.clone().ok_or("`lost`: no node was lost before this step".to_string());
        }
        self.node_exists(node)?;
        Ok(node.to_string())
    }

    fn node_exists(&self, node: &str) -> Result<(), String> {
        let state = self.world.api.state();
        let nodes = state.registry.find("", "v1", "nodes").ok_or("no nodes")?;
        match state.store.get(&nodes.id, "", node) {
            Some(_) => Ok(()),
            None => Err(format!("no node named {node:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        let world =
            World::new(WorldConfig { operator: false, programs: false, ..WorldConfig::default() }).expect("a world");
        Run::new(world)
    }

    #[test]
    fn a_misspelt_host_or_node_is_an_error() {
        let mut run = run();
        assert!(run.host(&HostRef::Name("api".into())).is_ok());
        assert!(run.host(&HostRef::Name("apii".into())).is_err());
        assert!(run.step(&Step::NodeBack("node-9".into())).is_err());
    }
}
