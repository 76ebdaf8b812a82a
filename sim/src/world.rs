//! A whole simulated cluster on turmoil: the API server and the built-in controllers on host
//! `api`, the real operator on host `operator` talking to it over the simulated network, the
//! simulated sources on host `sources`, one host per running pod of ours (see
//! [`crate::programs`]), nodes, fault controls, and the trace hash that makes a run replayable.
//! Step it with [`World::run_for`] / [`World::run_until`], which also start and stop the pods'
//! hosts; stepping `sim` directly does not.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ApiServer, Faults, Options, Request, ResourceType, Response, http};
use crate::cluster::{AlwaysReady, Cluster, PodRuntime};
use crate::net::SimClock;
use crate::programs::sources::{self, SOURCES_HOST, SourceCatalog};
use crate::programs::{HostCommand, Programs};

/// The host of the API server and the cluster's controllers.
pub const API_HOST: &str = "api";
/// Port of the API server on host `api`.
pub const API_PORT: u16 = 6443;

#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub seed: u64,
    pub nodes: Vec<String>,
    /// Wall-clock time at the start of the run.
    pub start: Timestamp,
    /// Run the operator (`sv-operator run`, leader election on) as host `operator`.
    pub operator: bool,
    /// How many operator replicas run: the first on host `operator` with identity `operator-0`,
    /// the others on hosts `operator-1`, `operator-2`, ... named alike; one leads at a time.
    pub operator_replicas: usize,
    /// Run our images' programs in their pods (see [`crate::programs`]); when false, every pod
    /// just runs and is Ready.
    pub programs: bool,
    /// NFS servers outside the cluster (names or addresses volumes may name in
    /// `spec.nfsServer.url`), each standing in as a directory.
    pub external_nfs: Vec<String>,
    /// The simulation's step; a message is delivered at the first step after its latency.
    pub tick: Duration,
    /// Each message's latency is drawn between these (turmoil's defaults: 0 to 100 ms, slower
    /// than a cluster network, which suits fault finding but not measuring throughput).
    pub message_latency: (Duration, Duration),
    /// Authorize every request by RBAC: the operator then has exactly the rights
    /// `deploy/base/operator.yaml` grants it, each pod's program those of its ServiceAccount.
    pub authorization: bool,
    /// Let hosts use real sockets as well as simulated ones (tokio's I/O driver on every host's
    /// runtime): `sv-sim serve` bridges loopback ports of this machine into the simulated network
    /// with it. Off for tests and the main job, which must not depend on the machine's network.
    pub real_io: bool,
    /// Simulated time after which stepping fails (turmoil's limit on a run).
    pub limit: Duration,
    /// Keep the trace line by line, not only its hash, to find where two runs diverge
    /// ([`crate::determinism`]).
    pub keep_trace: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
            start: Timestamp::from_second(1_790_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
            operator: true,
            operator_replicas: 1,
            programs: true,
            external_nfs: Vec::new(),
            tick: Duration::from_millis(10),
            message_latency: (Duration::ZERO, Duration::from_millis(100)),
            authorization: true,
            real_io: false,
            limit: Duration::from_secs(10 * 24 * 3600),
            keep_trace: false,
        }
    }
}

/// A simulated cluster. Drive it with [`World::run_for`] / [`World::run_until`].
pub struct World {
    pub sim: turmoil::Sim<'static>,
    pub api: ApiServer,
    clock: Arc<SimClock>,
    programs: Option<Programs>,
    sources: SourceCatalog,
    /// Hosts the kubelets started, so that a crash only names hosts that exist.
    pod_hosts: BTreeSet<String>,
    /// Hosts made with the world (API server, sources, operator replicas).
    fixed_hosts: BTreeSet<String>,
    /// Hosts crashed and not restarted yet (see [`crate::teardown`]).
    down_hosts: crate::teardown::DownHosts,
    /// Where the pods' volumes live; removed with the world.
    data: tempfile::TempDir,
    /// Flags the operator gets beyond `run --identity=operator-0`, read at each of its starts.
    operator_args: Arc<Mutex<Vec<String>>>,
    seed: u64,
    /// The invariants on stored objects, checked after every step.
    invariants: crate::invariants::Invariants,
    /// Whether a fault is in place (set by whoever injects them): the cleanup bound waits for it.
    faults_in_place: bool,
    /// Whether this thread's HashMap keys (std's and ahash's) come from the seed (not when the
    /// thread made a HashMap before the world): without it, the order of kube-runtime's work is
    /// not replayable.
    std_hash_keys_seeded: bool,
    /// The programs' log lines since the last step, and the subscriber that records them for as
    /// long as the world lives.
    log_tap: crate::logtap::LogTap,
    _log_subscriber: tracing::subscriber::DefaultGuard,
    /// The last host events and faults, for the report of a broken invariant.
    recent: std::collections::VecDeque<String>,
    /// The invariant that stopped the run, once one has.
    broken_invariant: Option<String>,
    /// A host to crash once it has made this many writes in all (see [`World::crash_after_writes`]).
    crash_after: Option<(String, u64)>,
    /// How far each host's wall clock is off (see [`World::set_clock_skew`]).
    skews: crate::net::ClockSkews,
    /// What the NFS servers wrote without syncing, lost with their node.
    page_cache: crate::page_cache::SharedPageCache,
}

/// Host events and faults kept for the report of a broken invariant.
const RECENT_EVENTS: usize = 20;

/// An invariant broke (one a consumer checks over NFS, or one on the stored objects): the run
/// stops at that step.
#[derive(Debug)]
pub struct InvariantBroken {
    pub seed: u64,
    pub at: Duration,
    pub invariant: String,
    /// Who saw it: a consumer pod, or `the API server's objects`.
    pub pod: String,
    pub detail: String,
    pub recent: String,
    pub events: String,
}

impl std::fmt::Display for InvariantBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "invariant broken after {:.2?} of simulated time (replay: seed {}): {}",
            self.at, self.seed, self.invariant
        )?;
        writeln!(f, "seen by {}: {}", self.pod, self.detail)?;
        if !self.recent.is_empty() {
            writeln!(f, "its last operations:\n{}", self.recent)?;
        }
        match self.events.is_empty() {
            true => write!(f, "no host event or fault before it"),
            false => write!(f, "the simulation's last host events and faults:\n{}", self.events),
        }
    }
}

impl std::error::Error for InvariantBroken {}

/// The annotation in which `kubectl apply` keeps what it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The field manager of `kubectl apply` (client-side).
const APPLY_MANAGER: &str = "kubectl-client-side-apply";

/// How often [`World::kubectl`] sends a request that failed in a way a client retries.
pub const KUBECTL_ATTEMPTS: usize = 10;
/// How long [`World::kubectl`] waits for one answer.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`World::kubectl`] got back.
#[derive(Debug)]
pub struct Answered {
    pub response: Response,
    /// An earlier attempt may have been committed (its reply was lost, or none came): a create
    /// may then find its object there, a delete find it gone.
    pub uncertain: bool,
}

/// Whether a client sends the request again after this answer.
fn retried_by_clients(response: &Response) -> bool {
    match response.code() {
        409 => !matches!(response, Response::Error(e) if e.reason() == "AlreadyExists"),
        code => matches!(code, 429 | 500 | 503 | 504),
    }
}

impl Answered {
    /// The object (or Status) answered, or the error.
    pub fn into_result(self) -> Result<Value, ApiError> {
        match self.response {
            Response::Json { code, body, .. } if code >= 400 => Err(ApiError::Status { code, body }),
            Response::Json { body, .. } | Response::Discovery(body) | Response::Table(body) => Ok(body),
            Response::Error(e) => Err(e),
            Response::Watch(_) => Ok(Value::Null),
        }
    }
}

impl World {
    /// A new world. Fails only if its data directory cannot be made.
    pub fn new(config: WorldConfig) -> std::io::Result<Self> {
        // Every host runs on this thread: the programs' random bytes (writer tokens, handle keys,
        // write verifiers, and through the interposed `getrandom` the HashMap keys and ahash) come
        // from the seed (see `sv_common::entropy` and `crate::os_random`). First of all, before
        // anything here makes a HashMap.
        sv_common::entropy::seed_thread(config.seed);
        crate::teardown::reset();
        // fastrand seeds each thread's generator from the wall clock; kube-runtime's watch
        // back-off (backon) takes its jitter from it, so the order clients come back after an
        // API server restart would change from run to run.
        fastrand::seed(config.seed ^ 0x6661_7374_7261_6e64);
        let std_hash_keys_seeded = crate::os_random::seed_std_hash_keys() & crate::os_random::seed_ahash_keys();
        crate::os_random::seed_ahash_stream(config.seed);
        crate::os_random::seed_certificate_keys();
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(config.seed)
            .simulation_duration(config.limit)
            .tick_duration(config.tick)
            .min_message_latency(config.message_latency.0)
            .max_message_latency(config.message_latency.1);
        if config.real_io {
            builder.enable_tokio_io();
        }
        let sim = builder.build();
        let log_tap = crate::logtap::LogTap::default();
        let log_subscriber = log_tap.install();
        let clock = Arc::new(SimClock::new(config.start));
        // What the programs remember and compare later (the NFS server's entry cache) reads the
        // simulation's time: each host's tokio clock starts from the wall time its runtime was
        // made, so comparing across hosts or restarts would measure the machine's load.
        let monotonic = clock.clone();
        sv_common::monotonic::install_thread_source(move || Some(monotonic.elapsed()));
        let skews = crate::net::ClockSkews::default();
        let page_cache = crate::page_cache::SharedPageCache::default();
        sv_common::durability::install(Some(std::rc::Rc::new(page_cache.clone())));
        let options = Options {
            seed: config.seed,
            address: format!("api:{API_PORT}"),
            authorization: config.authorization,
            ..Options::default()
        };
        let api = ApiServer::new(options, clock.clone());
        if config.keep_trace {
            api.state().store.keep_trace_lines();
        }
        if config.operator {
            // The operator runs as the ServiceAccount of its manifest, with that manifest's roles.
            crate::install::operator_identity(&api).map_err(std::io::Error::other)?;
        }
        let data = tempfile::Builder::new().prefix("sv-sim-").tempdir()?;
        let programs = if config.programs {
            let programs = Programs::new(data.path(), clock.clone(), skews.clone(), page_cache.clone());
            let hosts = programs.clone();
            api.set_pod_hosts(Arc::new(move |uid| hosts.host_of(uid)));
            programs.set_service_proxy(api.service_proxy());
            for address in &config.external_nfs {
                programs.add_external_nfs(address)?;
            }
            Some(programs)
        } else {
            None
        };
        let sources = SourceCatalog::default();
        let mut world = Self {
            sim,
            api: api.clone(),
            clock: clock.clone(),
            programs: programs.clone(),
            sources: sources.clone(),
            pod_hosts: BTreeSet::new(),
            fixed_hosts: BTreeSet::new(),
            down_hosts: Default::default(),
            data,
            operator_args: Arc::default(),
            seed: config.seed,
            invariants: Default::default(),
            faults_in_place: false,
            std_hash_keys_seeded,
            log_tap,
            _log_subscriber: log_subscriber,
            recent: std::collections::VecDeque::new(),
            broken_invariant: None,
            crash_after: None,
            skews: skews.clone(),
            page_cache,
        };

        let nodes = config.nodes.clone();
        world.fixed_hosts.insert(API_HOST.to_string());
        world.sim.host(
            API_HOST,
            crate::teardown::host_software(API_HOST, world.down_hosts.clone(), move || {
                let (api, nodes, programs) = (api.clone(), nodes.clone(), programs.clone());
                async move {
                    // A restarted API server keeps its storage; its clients lost their connections and
                    // watches and must recover.
                    api.drop_watches();
                    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", API_PORT)).await?;
                    let runtime: Box<dyn PodRuntime> = match programs {
                        Some(programs) => Box::new(programs),
                        None => Box::new(AlwaysReady),
                    };
                    let mut cluster = Cluster::new(api.clone(), runtime);
                    for node in &nodes {
                        cluster.add_node(node);
                    }
                    tokio::spawn(cluster.run(CancellationToken::new()));
                    let submitted = api.clone();
                    tokio::spawn(async move { submitted.answer_submitted().await });
                    http::serve_turmoil(api, listener).await;
                    Ok(())
                }
            }),
        );
        if config.programs {
            world.fixed_hosts.insert(SOURCES_HOST.to_string());
            let down = world.down_hosts.clone();
            world.sim.host(
                SOURCES_HOST,
                crate::teardown::host_software(SOURCES_HOST, down, move || sources::serve(sources.clone())),
            );
        }
        if config.operator {
            for replica in 0..config.operator_replicas.max(1) {
                let (host, identity) = operator_replica(replica);
                world.fixed_hosts.insert(host.clone());
                let clock = Arc::new(crate::net::SkewedClock::new(clock.clone(), &host, skews.clone()));
                let operator_args = world.operator_args.clone();
                let api = world.api.clone();
                let down = world.down_hosts.clone();
                world.sim.host(
                    host.clone(),
                    crate::teardown::host_software(&host, down, move || {
                        let (clock, operator_args, identity) = (clock.clone(), operator_args.clone(), identity.clone());
                        let token = crate::install::operator_token(&api);
                        async move {
                            // The kubelet restarts the container whenever the program exits (lost
                            // lease, fatal error), with the usual doubling back-off.
                            let mut backoff = Duration::from_secs(10);
                            loop {
                                let extra = operator_args.lock().map(|a| a.clone()).unwrap_or_default();
                                match run_operator(clock.clone(), &identity, &extra, &token).await {
                                    Ok(()) => tracing::info!(%identity, "operator exited"),
                                    Err(e) => tracing::warn!(%identity, error = %e, "operator exited with an error"),
                                }
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(300));
                            }
                        }
                    }),
                );
            }
        }
        Ok(world)
    }

    /// Runs `software` on a host of its own that the kubelets did not start (a bridge to the
    /// machine's network, a test's server); faults may name it like the world's own hosts.
    pub fn add_host<F, Fut>(&mut self, name: &str, software: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: std::future::Future<Output = turmoil::Result> + 'static,
    {
        self.fixed_hosts.insert(name.to_string());
        self.sim.host(name, crate::teardown::host_software(name, self.down_hosts.clone(), software));
    }

    /// The contents of every source the syncers fetch from.
    pub fn sources(&self) -> &SourceCatalog {
        &self.sources
    }

    /// The pods' programs, when they run.
    pub fn programs(&self) -> Option<&Programs> {
        self.programs.as_ref()
    }

    /// The simulated host running the program of pod `namespace/name`, to partition or crash it.
    pub fn pod_host(&self, namespace: &str, name: &str) -> Option<String> {
        let uid = {
            let state = self.api.state();
            let pods = state.registry.find("", "v1", "pods")?;
            state.store.get(&pods.id, namespace, name)?["metadata"]["uid"].as_str()?.to_string()
        };
        self.programs.as_ref()?.host_of(&uid)
    }

    /// The export directory and the host of the running NFS server of the volume whose
    /// `spec.referenceValue` is `reference` (its pod is `nfs-<reference>-0`).
    pub fn nfs_server(&self, reference: &str) -> Option<(std::path::PathBuf, String)> {
        let programs = self.programs.as_ref()?;
        let (pod, export) = programs.exports(&self.api).into_iter().find(|(pod, _)| pod.contains(reference))?;
        let (namespace, name) = pod.split_once('/')?;
        Some((export, self.pod_host(namespace, name)?))
    }

    /// Where the pods' volumes live.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// Carries out what the kubelets asked of the simulation.
    fn apply_host_commands(&mut self) {
        let Some(programs) = &self.programs else { return };
        for command in programs.take_commands() {
            match command {
                HostCommand::Start { host, software } => {
                    self.note(&format!("start {host}"));
                    let down = self.down_hosts.clone();
                    self.sim.host(host.as_str(), crate::teardown::host_software(&host, down, move || software()));
                    self.pod_hosts.insert(host);
                }
                HostCommand::Crash { host } if self.pod_hosts.contains(&host) => self.crash(&host),
                HostCommand::Restart { host } if self.pod_hosts.contains(&host) => self.restart(&host),
                HostCommand::Crash { .. } | HostCommand::Restart { .. } => {}
            }
        }
    }

    /// Creates objects in-process, as `kubectl create -f` would (errors are returned per object).
    pub fn create_all(&self, objects: impl IntoIterator<Item = Value>) -> Vec<Result<Value, crate::api::ApiError>> {
        objects.into_iter().map(|o| self.api.create_object(o, "kubectl")).collect()
    }

    /// Sends `request` by the API server's front door, as an administrator's `kubectl` does (see
    /// [`ApiServer::submit`]: faults, authentication and admission webhooks apply), and runs the
    /// simulation until it is answered. What a client retries is sent again a second later, up
    /// to [`KUBECTL_ATTEMPTS`] times: 409 other than AlreadyExists (a conflict: `kubectl apply`
    /// patches again), 429, 500, 503, 504 (the reply was lost, so the write may have been
    /// committed: [`Answered::uncertain`] says so), and no answer within [`KUBECTL_TIMEOUT`] (the
    /// API server's host is down).
    pub fn kubectl(&mut self, request: Request) -> Result<Answered, String> {
        let mut uncertain = false;
        let mut last = String::new();
        for _ in 0..KUBECTL_ATTEMPTS {
            let answer = self.api.submit(request.clone());
            let until = self.elapsed() + KUBECTL_TIMEOUT;
            while !answer.answered() && self.elapsed() < until {
                // One step of the simulation at a time: the answer usually comes within one.
                self.run_for(Duration::from_millis(1)).map_err(|e| format!("the simulation failed: {e}"))?;
            }
            match answer.take() {
                Some(response) if !retried_by_clients(&response) => return Ok(Answered { response, uncertain }),
                Some(response) => {
                    uncertain |= response.code() == 504;
                    last = match &response {
                        Response::Error(e) => format!("{} {}", e.code(), e.reason()),
                        other => other.code().to_string(),
                    };
                }
                None => {
                    answer.abandon();
                    uncertain = true;
                    last = format!("no answer within {KUBECTL_TIMEOUT:?}");
                }
            }
            self.run_for(Duration::from_secs(1)).map_err(|e| format!("the simulation failed: {e}"))?;
        }
        Err(format!(
            "{} {}: given up after {KUBECTL_ATTEMPTS} attempts; the last: {last}",
            request.method, request.path
        ))
    }

    /// `kubectl create` of one object by the front door (see [`World::kubectl`]): the server's
    /// answer, or why none came.
    pub fn create(&mut self, object: Value) -> Result<Result<(), ApiError>, String> {
        self.create_as(object, "kubectl-create")
    }

    /// A create with the query kubectl (1.27 and later) sends: its field manager, and strict
    /// field validation (an unknown field is refused).
    fn create_as(&mut self, object: Value, manager: &str) -> Result<Result<(), ApiError>, String> {
        let (rt, namespace, _) = self.target_of(&object)?;
        let path = format!("{}?fieldManager={manager}&fieldValidation=Strict", rt.path(&namespace, None));
        let answered =
            self.kubectl(Request::new(::http::Method::POST, &path).with_json("application/json", &object))?;
        let uncertain = answered.uncertain;
        Ok(match answered.into_result() {
            // The object of an earlier attempt whose reply was lost.
            Err(e) if uncertain && e.code() == 409 && e.reason() == "AlreadyExists" => Ok(()),
            other => other.map(|_| ()),
        })
    }

    /// `kubectl apply` (client-side) of one object as the scenarios write it: created, or, when it
    /// exists, the object merged into the stored one (a patch of the whole object, where
    /// `kubectl apply` sends a three-way one, which also removes what the last apply set and this
    /// one leaves out). Both carry the object in the
    /// `kubectl.kubernetes.io/last-applied-configuration` annotation, as kubectl's do.
    pub fn apply(&mut self, mut object: Value) -> Result<Result<(), ApiError>, String> {
        let mut applied = object.clone();
        if let Some(meta) = applied["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let annotation = format!("{applied}\n");
        if let Some(meta) = object["metadata"].as_object_mut() {
            let annotations = meta.entry("annotations").or_insert_with(|| serde_json::json!({}));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(LAST_APPLIED.to_string(), Value::String(annotation));
            }
        }
        match self.create_as(object.clone(), APPLY_MANAGER)? {
            Err(e) if e.code() == 409 && e.reason() == "AlreadyExists" => {}
            other => return Ok(other),
        }
        let (rt, namespace, name) = self.target_of(&object)?;
        let query = format!("fieldManager={APPLY_MANAGER}&fieldValidation=Strict");
        let path = format!("{}?{query}", rt.path(&namespace, Some(&name)));
        // kubectl's kinds of patch: strategic for a built-in kind (lists such as containers or
        // webhooks merge by their keys, so what others set in an item, a caBundle, stays), a JSON
        // merge patch for a custom resource.
        let patch = if rt.custom { "application/merge-patch+json" } else { "application/strategic-merge-patch+json" };
        let request = Request::new(::http::Method::PATCH, &path).with_json(patch, &object);
        Ok(self.kubectl(request)?.into_result().map(|_| ()))
    }

    /// `kubectl delete` of one object by the front door (see [`World::kubectl`]).
    pub fn delete(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Result<(), ApiError>, String> {
        let answered = self.kubectl(Request::new(::http::Method::DELETE, &rt.path(namespace, Some(name))))?;
        let uncertain = answered.uncertain;
        Ok(match answered.into_result() {
            // Deleted by an earlier attempt whose reply was lost.
            Err(e) if uncertain && e.code() == 404 => Ok(()),
            other => other.map(|_| ()),
        })
    }

    /// The type, namespace (`default` when a namespaced object names none) and name of `object`.
    fn target_of(&self, object: &Value) -> Result<(ResourceType, String, String), String> {
        let (api_version, kind) =
            (object["apiVersion"].as_str().unwrap_or_default(), object["kind"].as_str().unwrap_or_default());
        let rt = self.api.state().registry.by_kind(api_version, kind).cloned();
        let rt = rt.ok_or(format!("no resource serves {kind} in {api_version}"))?;
        let namespace = match object["metadata"]["namespace"].as_str() {
            _ if !rt.namespaced => "",
            Some(namespace) if !namespace.is_empty() => namespace,
            _ => "default",
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        Ok((rt, namespace.to_string(), name))
    }

    /// Advances simulated time by `duration`.
    pub fn run_for(&mut self, duration: Duration) -> turmoil::Result {
        let until = self.sim.elapsed() + duration;
        while self.sim.elapsed() < until {
            self.sim.step()?;
            self.apply_host_commands();
            self.crash_after_write();
            // Unsized, not boxed again, so that callers can downcast it to `InvariantBroken`.
            self.check_invariants().map_err(|broken| broken as Box<dyn std::error::Error>)?;
        }
        self.clock.publish(self.sim.elapsed());
        Ok(())
    }

    /// Every invariant, after every step: the writes committed since the last step, and the first
    /// violation a consumer reported; either stops the run.
    fn check_invariants(&mut self) -> Result<(), Box<InvariantBroken>> {
        let now = self.sim.elapsed();
        let broken = {
            let state = self.api.state();
            self.invariants
                .check(&state.store)
                .and_then(|()| self.invariants.check_cleanup(&state.store, now, self.faults_in_place))
                .and_then(|()| self.invariants.check_log_lines(&self.log_tap.take()))
                .err()
        };
        if let Some((invariant, detail)) = broken {
            return Err(self.broken(invariant.to_string(), "the API server's objects".to_string(), detail, &[]));
        }
        self.check_consumers()
    }

    /// The report of a broken invariant seen by `who` now, with `who`'s last operations and the
    /// world's last host events and faults.
    fn broken(
        &mut self,
        invariant: String,
        who: String,
        detail: String,
        operations: &[String],
    ) -> Box<InvariantBroken> {
        self.broken_invariant = Some(invariant.clone());
        let lines =
            |items: &mut dyn Iterator<Item = &String>| items.map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
        Box::new(InvariantBroken {
            seed: self.seed,
            at: self.sim.elapsed(),
            invariant,
            pod: who,
            detail,
            recent: lines(&mut operations.iter()),
            events: lines(&mut self.recent.iter()),
        })
    }

    /// The invariant that stopped the run (by name), if one did.
    pub fn broken_invariant(&self) -> Option<&str> {
        self.broken_invariant.as_deref()
    }

    /// Whether the HashMaps of this world's thread (std's and ahash's) iterate in an order the
    /// seed decides (see [`crate::os_random`]).
    pub fn std_hash_keys_seeded(&self) -> bool {
        self.std_hash_keys_seeded
    }

    /// Says whether a fault is in place (a partition, a crashed host, a lost node, API faults):
    /// while one is, deleted volumes are not yet expected to be cleaned up.
    pub fn set_faults_in_place(&mut self, in_place: bool) {
        self.faults_in_place = in_place;
    }

    /// Runs until the cleanup of every deleted volume has been checked (the bound passed with no
    /// fault in place), so that a run ending soon after a deletion still checks it. With a fault
    /// in place it returns at once: the bound cannot pass.
    pub fn settle_cleanups(&mut self) -> turmoil::Result {
        let until = self.elapsed() + crate::invariants::CLEANUP_BOUND + Duration::from_secs(5);
        while !self.faults_in_place && self.invariants.cleanups_pending() > 0 && self.elapsed() < until {
            self.run_for(Duration::from_secs(1))?;
        }
        Ok(())
    }

    /// Checks every invariant now, without stepping (after writes made from outside the
    /// simulation, such as a scenario's).
    pub fn check_now(&mut self) -> Result<(), Box<InvariantBroken>> {
        self.check_invariants()
    }

    /// How often each invariant on stored objects was checked, and what the Secret invariant had
    /// to look at (see [`crate::invariants::Invariants`]).
    pub fn invariants(&self) -> &crate::invariants::Invariants {
        &self.invariants
    }

    /// Every invariant with how many times it was checked: those on stored objects (each write
    /// looked at), then the consumers' (their completed rounds, by role).
    pub fn invariant_counts(&self) -> Vec<(String, u64)> {
        use crate::programs::consumer::Invariant;
        let pods = self.consumers().pods();
        let rounds = |role: &str| pods.values().filter(|r| r.role == role).map(|r| r.rounds).sum::<u64>();
        let mut counts = self.invariants.counts();
        counts.extend([
            (format!("{} (whole revisions read)", Invariant::MixedRevision), rounds("reader")),
            (format!("{} (writer read-backs)", Invariant::LostWrite), rounds("writer")),
            (format!("{} (holder rounds)", Invariant::StaleHandle), rounds("holder")),
        ]);
        counts
    }

    fn check_consumers(&mut self) -> Result<(), Box<InvariantBroken>> {
        let Some(programs) = &self.programs else { return Ok(()) };
        let consumers = programs.consumers();
        consumers.stamp(self.sim.elapsed());
        let Some(violation) = consumers.take_new_violation() else {
            return Ok(());
        };
        Err(self.broken(violation.invariant.to_string(), violation.pod, violation.detail, &violation.recent))
    }

    /// Steps until each consumer pod of `pods` (`namespace/name`) has completed `rounds` more
    /// rounds than now, or `within` passes; returns the pods still behind (none when all made it).
    pub fn run_until_rounds(&mut self, pods: &[String], rounds: u64, within: Duration) -> turmoil::Result<Vec<String>> {
        let rounds_of = |world: &World| -> std::collections::BTreeMap<String, u64> {
            world.consumers().pods().into_iter().map(|(pod, r)| (pod, r.rounds)).collect()
        };
        let before = rounds_of(self);
        let until = self.elapsed() + within;
        loop {
            let now = rounds_of(self);
            let count =
                |map: &std::collections::BTreeMap<String, u64>, pod: &String| map.get(pod).copied().unwrap_or(0);
            let behind: Vec<String> =
                pods.iter().filter(|pod| count(&now, pod) < count(&before, pod) + rounds).cloned().collect();
            if behind.is_empty() || self.elapsed() >= until {
                return Ok(behind);
            }
            self.run_for(Duration::from_millis(500))?;
        }
    }

    /// What the consumer pods saw (empty without programs).
    pub fn consumers(&self) -> crate::programs::Consumers {
        self.programs.as_ref().map(|p| p.consumers()).unwrap_or_default()
    }

    /// Steps until `done` holds (checked every simulated 100 ms) or `limit` passes; returns
    /// whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&ApiServer) -> bool) -> turmoil::Result<bool> {
        let until = self.sim.elapsed() + limit;
        while self.sim.elapsed() < until {
            if done(&self.api) {
                return Ok(true);
            }
            self.run_for(Duration::from_millis(100))?;
        }
        Ok(done(&self.api))
    }

    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// The hash of the run: every write the API server committed and every answer it gave, in
    /// order, the host events (starts, crashes, restarts, partitions, lost nodes) with their
    /// simulated times, and the files every running NFS server exports now. Equal for equal runs.
    pub fn trace_hash(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.api.state().store.trace_hash().as_bytes());
        if let Some(programs) = &self.programs {
            for (pod, export) in programs.exports(&self.api) {
                hasher.update(format!("export {pod}\n").as_bytes());
                hash_tree(&export, &export, &mut hasher);
            }
        }
        hasher.finalize().to_hex()[..16].to_string()
    }

    /// The trace line by line, when [`WorldConfig::keep_trace`] asked for it.
    pub fn trace_lines(&self) -> Vec<String> {
        self.api.state().store.trace_lines().to_vec()
    }

    /// Records a host event in the trace, with the simulated time.
    fn note(&mut self, event: &str) {
        let at = self.sim.elapsed();
        let line = format!("host {event} at {at:?}");
        self.api.state().store.note(&line);
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    pub fn set_api_faults(&self, faults: Faults) {
        self.api.set_faults(faults);
    }

    /// Loses a node with everything running on it (its pods' programs stop and its kubelet stops
    /// reporting), or brings it back (the containers of its pods start again, except those of pods
    /// deleted meanwhile, which its kubelet removes).
    pub fn set_node_ready(&mut self, node: &str, ready: bool) {
        self.note(&format!("node {node} ready={ready}"));
        crate::cluster::set_node_ready(&self.api, node, ready);
        if let Some(programs) = &self.programs {
            if ready {
                let terminating: std::collections::BTreeSet<String> = {
                    let state = self.api.state();
                    state
                        .registry
                        .find("", "v1", "pods")
                        .into_iter()
                        .flat_map(|rt| state.store.list(&rt.id, None))
                        .map(|(_, p)| p)
                        .filter(|p| p["spec"]["nodeName"] == node && !p["metadata"]["deletionTimestamp"].is_null())
                        .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
                        .collect()
                };
                programs.node_back(node, &terminating);
            } else {
                // What the node's NFS servers wrote and did not sync goes with its page cache.
                for export in programs.exports_on(node) {
                    for file in self.page_cache.0.lose_unsynced_under(&export) {
                        tracing::info!(node, file = %file.display(), "unsynced writes lost with the node");
                    }
                }
                programs.node_lost(node);
            }
        }
        self.apply_host_commands();
    }

    /// What an administrator does for a node known to be shut down (non-graceful node shutdown):
    /// taints it `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`, so that its
    /// terminating pods are removed and their replacements can start elsewhere.
    pub fn taint_out_of_service(&mut self, node: &str) -> Result<(), String> {
        self.note(&format!("node {node} out-of-service"));
        let mut state = self.api.state();
        let rt = state.registry.find("", "v1", "nodes").cloned().ok_or("no nodes")?;
        let mut stored = state.store.get(&rt.id, "", node).map(|n| (**n).clone()).ok_or(format!("no node {node:?}"))?;
        let taint =
            serde_json::json!({"key": crate::cluster::OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"});
        match stored["spec"]["taints"].as_array_mut() {
            Some(taints) => taints.push(taint),
            None => stored["spec"]["taints"] = serde_json::json!([taint]),
        }
        self.api
            .update_in(&mut state, &rt, stored, &crate::api::WriteOptions::controller("kubectl-taint"))
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    /// Whether a host of that name runs in this world (turmoil gives an unknown name a fresh
    /// address, so a fault aimed at a misspelt host would silently hit nothing).
    pub fn has_host(&self, name: &str) -> bool {
        self.fixed_hosts.contains(name) || self.pod_hosts.contains(name)
    }

    pub fn partition(&mut self, a: &str, b: &str) {
        self.note(&format!("partition {a} {b}"));
        self.sim.partition(a, b);
    }

    /// Ends a partition. A host with a stale API server replica waiting for it reconnects to
    /// that replica (see [`World::set_stale_replica`]).
    pub fn repair(&mut self, a: &str, b: &str) {
        self.note(&format!("repair {a} {b}"));
        self.sim.repair(a, b);
        for host in [a, b] {
            self.api.serve_from_stale_replica(self.sim.lookup(host));
        }
    }

    /// Stalls every watch, or ends the stall with the history it covered compacted (see
    /// [`crate::api::ApiServer::stall_watches`]).
    pub fn stall_watches(&mut self, stalled: bool) {
        self.note(&format!("watches {}", if stalled { "stalled" } else { "resumed past compacted history" }));
        self.api.stall_watches(stalled);
    }

    /// Stops an API server replica at the cluster as it is now, which serves `host` from its
    /// next start or the end of its next partition, or lets that replica catch up (see
    /// [`crate::api::ApiServer::set_stale_replica`]).
    pub fn set_stale_replica(&mut self, host: &str, stale: bool) {
        self.note(&format!("replica for {host} {}", if stale { "stopped" } else { "caught up" }));
        let ip = self.sim.lookup(host);
        self.api.set_stale_replica(ip, stale);
    }

    /// Makes the disk under an NFS export full, or frees it (see [`crate::page_cache`]).
    pub fn set_disk_full(&mut self, export: &std::path::Path, full: bool) {
        let name = export.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.note(&format!("disk of {name} {}", if full { "full" } else { "freed" }));
        self.page_cache.0.set_full(export, full);
    }

    /// Requests host `host` made to the API server so far, by verb and resource.
    pub fn requests_from(&self, host: &str) -> std::collections::BTreeMap<(String, String), u64> {
        let ip = self.sim.lookup(host);
        self.api
            .request_counts()
            .into_iter()
            .filter(|((peer, _, _), _)| *peer == ip)
            .map(|((_, verb, resource), n)| ((verb, resource), n))
            .collect()
    }

    /// Flags the operator starts with from its next start on (`bounce("operator")` restarts it,
    /// as a changed Deployment would).
    pub fn set_operator_args(&self, args: impl IntoIterator<Item = impl Into<String>>) {
        if let Ok(mut current) = self.operator_args.lock() {
            *current = args.into_iter().map(Into::into).collect();
        }
    }

    /// Sets how far `host`'s wall clock is off (zero: right again). Only the programs' clocks
    /// skew: simulated time, timers and the API server's own timestamps do not.
    pub fn set_clock_skew(&mut self, host: &str, skew: k8s_openapi::jiff::SignedDuration) {
        self.note(&format!("clock of {host} off by {skew:#}"));
        if let Ok(mut skews) = self.skews.lock() {
            match skew.is_zero() {
                true => skews.remove(host),
                false => skews.insert(host.to_string(), skew),
            };
        }
    }

    /// Crashes `host` right after its `writes`th write from now (create, update, patch or delete
    /// of anything but Leases and Events, answered or not): the intermediate states a controller
    /// leaves when it dies between two writes that belong together (Sieve's first perturbation).
    pub fn crash_after_writes(&mut self, host: &str, writes: u64) {
        let target = self.writes_by(host) + writes.max(1);
        self.note(&format!("crash {host} armed: after {writes} more write(s)"));
        self.crash_after = Some((host.to_string(), target));
    }

    /// Writes `host` made to the API server so far (not Leases or Events).
    fn writes_by(&self, host: &str) -> u64 {
        self.requests_from(host)
            .into_iter()
            .filter(|((verb, resource), _)| {
                crate::api::is_write_verb(verb) && !resource.starts_with("leases") && !resource.starts_with("events")
            })
            .map(|(_, n)| n)
            .sum()
    }

    fn crash_after_write(&mut self) {
        let Some((host, target)) = &self.crash_after else { return };
        if self.writes_by(host) >= *target {
            let host = host.clone();
            self.crash_after = None;
            self.crash(&host);
        }
    }

    /// Crashes `host`: its program stops, its connections close (in the order they were opened,
    /// see [`crate::teardown`]), and it runs nothing until [`World::bounce`].
    pub fn crash(&mut self, host: &str) {
        self.note(&format!("crash {host}"));
        self.down_hosts.borrow_mut().insert(host.to_string());
        // A restart into software that does nothing: turmoil's crash would leave the host no
        // software to close the connections from, in order.
        crate::teardown::tearing_down(|| self.sim.bounce(host));
    }

    /// Restarts `host`'s program, after a crash or while it runs (its connections close first).
    pub fn bounce(&mut self, host: &str) {
        if self.crash_after.as_ref().is_some_and(|(armed, _)| armed == host) {
            self.crash_after = None;
        }
        self.restart(host);
    }

    fn restart(&mut self, host: &str) {
        self.note(&format!("restart {host}"));
        self.down_hosts.borrow_mut().remove(host);
        crate::teardown::tearing_down(|| self.sim.bounce(host));
        self.api.serve_from_stale_replica(self.sim.lookup(host));
    }
}

/// The host and the identity of operator replica `n` (see [`WorldConfig::operator_replicas`]).
pub fn operator_replica(n: usize) -> (String, String) {
    let identity = format!("operator-{n}");
    (if n == 0 { "operator".to_string() } else { identity.clone() }, identity)
}

/// `sv-operator run --identity=<identity>` on the simulated network: the program's own flags,
/// settings and wiring (`sv_operator::program`), with the simulation's client, clock and sockets.
async fn run_operator(
    clock: Arc<crate::net::SkewedClock>,
    identity: &str,
    extra: &[String],
    token: &str,
) -> turmoil::Result {
    use clap::Parser as _;
    use sv_operator::program::{Cli, Command};

    let argv = ["sv-operator".to_string(), "run".to_string(), format!("--identity={identity}")]
        .into_iter()
        .chain(extra.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let Command::Run(args) = cli.command else { return Err("not the run command".into()) };
    let client = crate::net::kube_client_with_token(API_HOST, API_PORT, Some(token))?;
    let http = crate::net::SimListener::bind(args.http_addr.port()).await?;
    let identity = args.identity(identity);
    let result = sv_operator::program::run(&args, identity, client, clock, http, CancellationToken::new()).await;
    result.map_err(|e| e.to_string().into())
}

/// Hashes the files under `dir` (paths relative to `root`, contents, link targets) in name order.
fn hash_tree(root: &std::path::Path, dir: &std::path::Path, hasher: &mut blake3::Hasher) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            hasher.update(format!("dir {relative}\n").as_bytes());
            hash_tree(root, &path, hasher);
        } else if meta.is_symlink() {
            let target = std::fs::read_link(&path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            hasher.update(format!("link {relative} {target}\n").as_bytes());
        } else if let Ok(content) = std::fs::read(&path) {
            hasher.update(format!("file {relative} {}\n", content.len()).as_bytes());
            hasher.update(&content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_hash(files: &[(&str, &str)], link: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, content).expect("write");
        }
        std::os::unix::fs::symlink(link, dir.path().join("current")).expect("link");
        let mut hasher = blake3::Hasher::new();
        hash_tree(dir.path(), dir.path(), &mut hasher);
        hasher.finalize().to_hex().to_string()
    }

    #[test]
    fn the_hash_of_an_export_covers_names_contents_and_links() {
        let base = tree_hash(&[("a/x.txt", "one"), ("b.txt", "two")], "a");
        assert_eq!(base, tree_hash(&[("b.txt", "two"), ("a/x.txt", "one")], "a"), "written in another order");
        assert_ne!(base, tree_hash(&[("a/x.txt", "One"), ("b.txt", "two")], "a"), "a content");
        assert_ne!(base, tree_hash(&[("a/y.txt", "one"), ("b.txt", "two")], "a"), "a name");
        assert_ne!(base, tree_hash(&[("a/x.txt", "one"), ("b.txt", "two")], "b"), "a link target");
    }
}
