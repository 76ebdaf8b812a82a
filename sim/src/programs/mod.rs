//! What runs inside pods: a registry from container image to program. A pod whose image is one of
//! ours runs that program's library code as its own turmoil host, with the pod's arguments, its
//! environment (values, field references, Secret and ConfigMap keys), its mounted Secrets and
//! its volumes as directories; the kubelet probes its readiness endpoint over the simulated
//! network. A pod with any other image just runs, and is Ready.
//!
//! Volumes: a PersistentVolume with `hostPath` (what the simulated provisioner makes) is one
//! directory per volume that outlives pods, like a network disk; an NFS PersistentVolume is the
//! directory its server exports: the managed server's export (found through the Service's
//! Endpoints, so it mounts only once the server is Ready) or a directory standing in for a server
//! outside the cluster ([`crate::world::WorldConfig::external_nfs`]). There is no kernel NFS
//! client here, so the programs that use a managed volume speak NFSv3 to its server themselves:
//! the syncer through its own client in-process ([`syncer`]), the consumer pods of the test image
//! ([`consumer`]) over simulated sockets, both through the PV's address and mount options.
//!
//! The cluster's controllers run on host `api`, so they cannot add hosts to the simulation:
//! [`Programs`] queues [`HostCommand`]s that the [`crate::world::World`] carries out between steps.

pub mod consumer;
mod nfs;
mod operator;
mod pod;
mod probe;
pub mod sources;
mod syncer;
mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use sv_operator::clock::SharedClock;
use tokio_util::sync::CancellationToken;

use crate::api::proxy::ServiceProxy;
use crate::cluster::{ClusterView, ContainerHealth, PodRuntime, StartError};
pub use consumer::Consumers;
pub use pod::{NfsMount, PodContext};
use probe::{HttpProbe, ProbeState};
pub use sources::{SimFile, SimSources, SourceCatalog, SourceState, identity_of};

/// The image of `sv-webhook`, as `deploy/base/webhook.yaml` names it (any tag).
pub const WEBHOOK_IMAGE: &str = "ghcr.io/sharedvolume/sv-webhook";
/// The image of `sv-operator`, as `deploy/base/operator.yaml` names it (any tag).
pub const OPERATOR_IMAGE: &str = "ghcr.io/sharedvolume/sv-operator";

/// What a pod of a registered image runs.
#[derive(Clone)]
pub enum Program {
    /// `sv-nfs`: the managed NFS server.
    NfsServer,
    /// `sv-syncer`: keeps a volume equal to its source.
    Syncer,
    /// `sv-webhook`: the admission webhook.
    Webhook,
    /// `sv-operator run`: the operator, installed from its manifest.
    Operator,
    /// The test image's consumers: a reader, writer or holder over NFS ([`consumer`]).
    Consumer,
    /// Anything else a test or scenario needs in a pod (a webhook, a source server): called with
    /// the pod as its container sees it, until the pod stops.
    Custom(CustomProgram),
}

/// The code of a [`Program::Custom`]: returns when the program exits (an error is logged and the
/// container restarted, as for ours).
pub type CustomProgram = Arc<dyn Fn(PodContext, CancellationToken) -> ProgramFuture + Send + Sync>;

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Program::NfsServer => "NfsServer",
            Program::Syncer => "Syncer",
            Program::Webhook => "Webhook",
            Program::Operator => "Operator",
            Program::Consumer => "Consumer",
            Program::Custom(_) => "Custom",
        })
    }
}

/// The software of one simulated host; called again when the host restarts.
pub type Software = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = turmoil::Result>>> + Send + Sync>;

/// What the world must do to the simulation for the kubelets.
pub enum HostCommand {
    Start {
        host: String,
        software: Software,
    },
    /// The pod is gone, or its node is lost with it.
    Crash {
        host: String,
    },
    /// The pod's node is back: its containers start again.
    Restart {
        host: String,
    },
}

/// A running pod.
struct RunningPod {
    node: String,
    /// Its host, when the pod runs one of our programs.
    host: Option<String>,
    readiness: Option<HttpProbe>,
    probe: ProbeState,
    restarts: Arc<AtomicU32>,
    stop: CancellationToken,
    /// The directory the pod serves over NFS (the NFS server's export).
    export: Option<PathBuf>,
    /// Its node was lost and its processes with it.
    lost: bool,
    /// Set when the program has returned after its stop signal (no restart follows).
    exited: Arc<AtomicBool>,
    /// When the kubelet signalled it to stop, and the pod's grace period.
    stopping: Option<(k8s_openapi::jiff::Timestamp, Duration)>,
    /// When the kubelet saw the program gone after its stop signal: its host is crashed then
    /// (a process that exits takes every thread with it), and the pod object goes a moment later.
    exit_seen: Option<k8s_openapi::jiff::Timestamp>,
    /// Its Secret and ConfigMap volumes, projected again when their object changes.
    projections: Vec<pod::Projection>,
}

struct Inner {
    images: Vec<(String, Program)>,
    root: PathBuf,
    clock: SharedClock,
    /// The same clock, for each program to read through its host's skew.
    sim_clock: Arc<crate::net::SimClock>,
    skews: crate::net::ClockSkews,
    external_nfs: BTreeMap<String, PathBuf>,
    pods: BTreeMap<String, RunningPod>,
    commands: Vec<HostCommand>,
    /// What the consumers saw.
    consumers: Consumers,
    /// The cluster's Services, for the consumers' connections.
    proxy: Option<ServiceProxy>,
    /// The NFS servers serving now, for the syncers' calls.
    nfs_servers: nfs::NfsServers,
    page_cache: crate::page_cache::SharedPageCache,
}

/// How long after a program's exit the kubelet deletes its terminating pod (a status sync).
const KUBELET_EXIT_REPORT: Duration = Duration::from_secs(1);

/// The pod runtime of the simulation (see the module documentation). Clones share state, so the
/// pods keep running when the API server's host restarts.
#[derive(Clone)]
pub struct Programs {
    inner: Arc<Mutex<Inner>>,
}

impl Programs {
    /// Programs keeping their volumes under `root`; `clock` is the wall clock they read, off by
    /// their host's entry in `skews`.
    /// `page_cache` is the journal of what the NFS servers did not sync, which the syncers' calls
    /// into their servers (from their blocking threads) report to as well.
    pub fn new(
        root: &Path,
        clock: Arc<crate::net::SimClock>,
        skews: crate::net::ClockSkews,
        page_cache: crate::page_cache::SharedPageCache,
    ) -> Self {
        let settings = sv_operator::plan::Settings::default();
        let images = vec![
            (repository(&settings.nfs_image).to_string(), Program::NfsServer),
            (repository(&settings.syncer_image).to_string(), Program::Syncer),
            (WEBHOOK_IMAGE.to_string(), Program::Webhook),
            (OPERATOR_IMAGE.to_string(), Program::Operator),
            (consumer::CONSUMER_IMAGE.to_string(), Program::Consumer),
        ];
        let inner = Inner {
            images,
            root: root.to_path_buf(),
            clock: clock.clone(),
            sim_clock: clock,
            skews,
            external_nfs: BTreeMap::new(),
            pods: BTreeMap::new(),
            commands: Vec::new(),
            consumers: Consumers::default(),
            proxy: None,
            nfs_servers: nfs::NfsServers::default(),
            page_cache,
        };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets pods' programs connect to Services (the consumers mount their volumes through them).
    pub fn set_service_proxy(&self, proxy: ServiceProxy) {
        self.lock().proxy = Some(proxy);
    }

    /// What the consumer pods saw.
    pub fn consumers(&self) -> Consumers {
        self.lock().consumers.clone()
    }

    /// Runs `program` for pods whose image is `repository` (any tag or digest).
    pub fn register_image(&self, repository: &str, program: Program) {
        self.lock().images.push((repository.to_string(), program));
    }

    /// An NFS server outside the cluster at `address` (a name or an IP), standing in as a
    /// directory; returns it.
    pub fn add_external_nfs(&self, address: &str) -> std::io::Result<PathBuf> {
        let mut inner = self.lock();
        let dir = inner.root.join("external-nfs").join(sanitize(address));
        std::fs::create_dir_all(&dir)?;
        inner.external_nfs.insert(address.to_string(), dir.clone());
        Ok(dir)
    }

    /// The program an image runs, if it is one of ours.
    pub fn program_for(&self, image: &str) -> Option<Program> {
        self.lock().program_for(image)
    }

    /// Whether pulling `image` fails: a repository of our registry that no program is registered
    /// for (a misspelt name in an overlay). Images of other registries (a consumer's busybox)
    /// always pull; tags are not checked.
    fn unpullable(&self, image: &str) -> bool {
        let repository = repository(image);
        let ours = OPERATOR_IMAGE.rsplit_once('/').map(|(registry, _)| registry).unwrap_or(OPERATOR_IMAGE);
        repository.strip_prefix(ours).is_some_and(|rest| rest.starts_with('/')) && self.program_for(image).is_none()
    }

    /// What the world must do now.
    pub fn take_commands(&self) -> Vec<HostCommand> {
        std::mem::take(&mut self.lock().commands)
    }

    /// The directory each running NFS server exports, by `namespace/pod`.
    pub fn exports(&self, cluster: &crate::api::ApiServer) -> BTreeMap<String, PathBuf> {
        // The API server's lock is taken before ours everywhere else (the kubelet holds it while
        // starting pods), so read the pods first and let go.
        let pods: Vec<(String, String)> = {
            let state = cluster.state();
            let Some(rt) = state.registry.find("", "v1", "pods") else { return BTreeMap::new() };
            state
                .store
                .list(&rt.id, None)
                .filter_map(|((namespace, name), pod)| {
                    Some((format!("{namespace}/{name}"), pod["metadata"]["uid"].as_str()?.to_string()))
                })
                .collect()
        };
        let inner = self.lock();
        pods.into_iter().filter_map(|(pod, uid)| Some((pod, inner.pods.get(&uid)?.export.clone()?))).collect()
    }

    /// The simulated host a running pod's program runs on.
    pub fn host_of(&self, pod_uid: &str) -> Option<String> {
        self.lock().pods.get(pod_uid)?.host.clone()
    }

    /// The directories the NFS servers on `node` export.
    pub fn exports_on(&self, node: &str) -> Vec<PathBuf> {
        self.lock().pods.values().filter(|p| p.node == node).filter_map(|p| p.export.clone()).collect()
    }

    /// The node is lost with everything on it: its pods' processes stop.
    pub fn node_lost(&self, node: &str) {
        let mut inner = self.lock();
        let mut crashed = Vec::new();
        for pod in inner.pods.values_mut().filter(|p| p.node == node && !p.lost) {
            pod.lost = true;
            pod.probe = ProbeState::default();
            crashed.extend(pod.host.clone());
        }
        inner.commands.extend(crashed.into_iter().map(|host| HostCommand::Crash { host }));
    }

    /// The node is back: the containers of its pods start again, except those of pods deleted
    /// meanwhile (`terminating`, by uid), which its kubelet finishes off instead.
    pub fn node_back(&self, node: &str, terminating: &std::collections::BTreeSet<String>) {
        let mut inner = self.lock();
        let mut restarted = Vec::new();
        for (_, pod) in inner.pods.iter_mut().filter(|(uid, p)| p.node == node && p.lost && !terminating.contains(*uid))
        {
            pod.lost = false;
            restarted.extend(pod.host.clone());
        }
        inner.commands.extend(restarted.into_iter().map(|host| HostCommand::Restart { host }));
    }
}

impl PodRuntime for Programs {
    fn start(&mut self, pod: &Value, cluster: &dyn ClusterView) -> Result<(), StartError> {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        if self.lock().pods.contains_key(&uid) {
            return Ok(());
        }
        let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
        if let Some(image) = containers.iter().filter_map(|c| c["image"].as_str()).find(|i| self.unpullable(i)) {
            return Err(image_pull_back_off(image));
        }
        let ours = containers.iter().find_map(|c| Some((c, Some(self.program_for(c["image"].as_str()?)?))));
        let mut running = RunningPod {
            node,
            host: None,
            readiness: None,
            probe: ProbeState::default(),
            restarts: Arc::new(AtomicU32::new(0)),
            stop: CancellationToken::new(),
            export: None,
            lost: false,
            exited: Arc::new(AtomicBool::new(false)),
            stopping: None,
            exit_seen: None,
            projections: Vec::new(),
        };
        // Volumes are mounted and the environment is resolved for every pod, ours or not.
        let mut inner = self.lock();
        let Some((container, program)) = ours.or_else(|| containers.first().map(|c| (c, None))) else {
            inner.pods.insert(uid, running);
            return Ok(());
        };
        let context = inner.resolve(pod, container, cluster, &mut running.projections)?;
        let Some(program) = program else {
            inner.pods.insert(uid, running);
            return Ok(());
        };
        let host = format!("{}.{}.{}", context.name, context.namespace, uid.split('-').next().unwrap_or_default());
        let clock: SharedClock =
            Arc::new(crate::net::SkewedClock::new(inner.sim_clock.clone(), &host, inner.skews.clone()));
        let run: Arc<dyn Fn(CancellationToken, u32) -> ProgramFuture + Send + Sync> = match &program {
            Program::NfsServer => {
                running.export = nfs::export_dir(&context).ok();
                let (context, host, servers) = (context.clone(), host.clone(), inner.nfs_servers.clone());
                Arc::new(move |stop, incarnation| {
                    Box::pin(nfs::run(context.clone(), host.clone(), servers.clone(), incarnation, stop))
                })
            }
            Program::Syncer => {
                let network = syncer::Network {
                    proxy: inner.proxy.clone(),
                    servers: inner.nfs_servers.clone(),
                    page_cache: inner.page_cache.clone(),
                };
                let context = context.clone();
                Arc::new(move |stop, _| Box::pin(syncer::run(context.clone(), clock.clone(), network.clone(), stop)))
            }
            Program::Webhook => {
                let context = context.clone();
                Arc::new(move |stop, _| Box::pin(webhook::run(context.clone(), clock.clone(), stop)))
            }
            Program::Operator => {
                let context = context.clone();
                Arc::new(move |stop, _| Box::pin(operator::run(context.clone(), clock.clone(), stop)))
            }
            Program::Consumer => {
                let (context, consumers) = (context.clone(), inner.consumers.clone());
                let proxy = inner.proxy.clone().ok_or_else(|| StartError {
                    reason: "ContainerCreating".into(),
                    message: "the simulation gives pods no network to Services".into(),
                })?;
                Arc::new(move |stop, _| {
                    Box::pin(consumer::run(context.clone(), proxy.clone(), consumers.clone(), stop))
                })
            }
            Program::Custom(code) => {
                let (context, code) = (context.clone(), code.clone());
                Arc::new(move |stop, _| code(context.clone(), stop))
            }
        };
        running.readiness = HttpProbe::readiness(container);
        let software =
            container_loop(host.clone(), run, running.restarts.clone(), running.stop.clone(), running.exited.clone());
        running.host = Some(host.clone());
        tracing::info!(pod = %format!("{}/{}", context.namespace, context.name), %host, ?program, "starting the pod's program");
        inner.commands.push(HostCommand::Start { host, software });
        inner.pods.insert(uid, running);
        Ok(())
    }

    fn stop(&mut self, pod: &Value) {
        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_u64())
            .unwrap_or(30);
        let now = self.lock().clock.now();
        let mut inner = self.lock();
        let Some(running) = inner.pods.get_mut(pod["metadata"]["uid"].as_str().unwrap_or_default()) else { return };
        if running.stopping.is_none() {
            // SIGTERM: the program drains and returns; the kubelet waits for that, or for the
            // grace period, before the container (and then the pod object) is gone.
            running.stopping = Some((now, Duration::from_secs(grace)));
            running.stop.cancel();
        }
    }

    fn stopped(&mut self, pod: &Value) -> bool {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let now = self.lock().clock.now();
        let done = {
            let mut inner = self.lock();
            let Some(running) = inner.pods.get_mut(uid) else { return true };
            let overdue =
                running.stopping.is_some_and(|(since, grace)| now.duration_since(since).unsigned_abs() >= grace);
            if running.host.is_none() || running.lost {
                true
            } else if running.exited.load(Ordering::Relaxed) {
                // The process is gone: what it left running (a spawned lease renewal) must not
                // outlive it and call with the token of a pod about to be deleted. The kubelet
                // reports the exit and deletes the pod on a later sync, as a real one does.
                let first = running.exit_seen.is_none();
                let seen = *running.exit_seen.get_or_insert(now);
                let host = running.host.clone().filter(|_| first);
                inner.commands.extend(host.map(|host| HostCommand::Crash { host }));
                overdue || now.duration_since(seen).unsigned_abs() >= KUBELET_EXIT_REPORT
            } else {
                overdue
            }
        };
        if done {
            self.stop_by_uid(uid);
        }
        done
    }

    fn running(&self) -> Vec<String> {
        self.lock().pods.keys().cloned().collect()
    }

    fn stop_by_uid(&mut self, uid: &str) {
        let mut inner = self.lock();
        let Some(running) = inner.pods.remove(uid) else { return };
        // SIGTERM, then the container is gone: the program sees its shutdown signal, but the
        // simulation does not wait out the grace period.
        running.stop.cancel();
        if let Some(host) = running.host
            && !running.lost
            && running.exit_seen.is_none()
        {
            inner.commands.push(HostCommand::Crash { host });
        }
    }

    fn health(&mut self, pod: &Value, cluster: &dyn ClusterView) -> ContainerHealth {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let mut inner = self.lock();
        if let Some(running) = inner.pods.get_mut(uid) {
            for projection in &mut running.projections {
                projection.refresh(cluster);
            }
        }
        let Some(running) = inner.pods.get_mut(uid) else {
            // Not started by this runtime: ours would have to be, so it is not running.
            let ours = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["image"].as_str().is_some_and(|i| inner.program_for(i).is_some()));
            return ContainerHealth { ready: !ours, restarts: 0 };
        };
        let restarts = running.restarts.load(Ordering::Relaxed);
        let ready = match (&running.host, &running.readiness) {
            _ if running.lost => false,
            (Some(host), Some(probe)) => running.probe.poll(host, probe),
            _ => true,
        };
        ContainerHealth { ready, restarts }
    }
}

/// A running program; its error says why it exited.
pub type ProgramFuture = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// The container as the kubelet runs it: the program, started again with a doubling back-off
/// whenever it exits, until the pod stops. A restarted host (a bounce, a node that came back)
/// counts as a restart too.
fn container_loop(
    host: String,
    run: Arc<dyn Fn(CancellationToken, u32) -> ProgramFuture + Send + Sync>,
    restarts: Arc<AtomicU32>,
    stop: CancellationToken,
    exited: Arc<AtomicBool>,
) -> Software {
    let started = Arc::new(AtomicBool::new(false));
    Arc::new(move || {
        let (host, run, restarts, stop, exited) =
            (host.clone(), run.clone(), restarts.clone(), stop.clone(), exited.clone());
        if started.swap(true, Ordering::Relaxed) {
            restarts.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async move {
            let mut backoff = Duration::from_secs(10);
            loop {
                let this_run = stop.child_token();
                let result = run(this_run.clone(), restarts.load(Ordering::Relaxed)).await;
                // Whatever the program left running (probe and metrics servers) ends with it.
                this_run.cancel();
                match result {
                    Ok(()) => tracing::info!(%host, "the program exited"),
                    Err(error) => tracing::warn!(%host, %error, "the program exited with an error"),
                }
                if stop.is_cancelled() {
                    exited.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                restarts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        })
    })
}

impl Inner {
    fn program_for(&self, image: &str) -> Option<Program> {
        let repo = repository(image);
        self.images.iter().find(|(r, _)| r == repo).map(|(_, p)| p.clone())
    }

    /// The pod's environment and volumes as its container sees them.
    fn resolve(
        &mut self,
        pod: &Value,
        container: &Value,
        cluster: &dyn ClusterView,
        projections: &mut Vec<pod::Projection>,
    ) -> Result<PodContext, StartError> {
        let mut context = PodContext::new(pod, container, cluster)?;
        let pod_dir = self.root.join("pods").join(sanitize(pod["metadata"]["uid"].as_str().unwrap_or_default()));
        context.scratch = pod_dir.join("container-fs");
        let (mut volumes, mut nfs) = (BTreeMap::new(), BTreeMap::new());
        for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = volume["name"].as_str().unwrap_or_default();
            let (dir, mount) = self.volume_dir(volume, pod, &pod_dir, &context, cluster, projections)?;
            volumes.insert(name.to_string(), dir);
            nfs.extend(mount.map(|m| (name.to_string(), m)));
        }
        context.mount(container, &volumes, &nfs)?;
        Ok(context)
    }

    fn volume_dir(
        &self,
        volume: &Value,
        pod: &Value,
        pod_dir: &Path,
        context: &PodContext,
        cluster: &dyn ClusterView,
        projections: &mut Vec<pod::Projection>,
    ) -> Result<(PathBuf, Option<NfsMount>), StartError> {
        let name = volume["name"].as_str().unwrap_or_default();
        let mount_failed = |why: String| StartError {
            reason: "ContainerCreating".into(),
            message: format!("MountVolume.SetUp failed for volume {name:?}: {why}"),
        };
        let io = |e: std::io::Error| mount_failed(e.to_string());
        let own_dir = pod_dir.join(sanitize(name));
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            let pvc = cluster
                .get("", "persistentvolumeclaims", &context.namespace, claim)
                .ok_or_else(|| mount_failed(format!("persistentvolumeclaim {claim:?} not found")))?;
            let pv_name = pvc["spec"]["volumeName"].as_str().filter(|_| pvc["status"]["phase"] == "Bound");
            let pv = pv_name
                .and_then(|n| cluster.get("", "persistentvolumes", "", n))
                .ok_or_else(|| mount_failed(format!("persistentvolumeclaim {claim:?} is not bound")))?;
            if let Some(server) = pv["spec"]["nfs"]["server"].as_str() {
                let path = pv["spec"]["nfs"]["path"].as_str().unwrap_or("/");
                let (dir, external) = self.nfs_dir(server, path, cluster).map_err(mount_failed)?;
                let options = pv["spec"]["mountOptions"].as_array().into_iter().flatten();
                let mount = NfsMount {
                    server: server.to_string(),
                    path: path.to_string(),
                    options: options.filter_map(|o| o.as_str().map(str::to_string)).collect(),
                    read_only: volume["persistentVolumeClaim"]["readOnly"] == true
                        || pv["spec"]["nfs"]["readOnly"] == true,
                    external,
                };
                return Ok((dir, Some(mount)));
            }
            let dir = self.root.join("pv").join(sanitize(pv["metadata"]["name"].as_str().unwrap_or_default()));
            std::fs::create_dir_all(&dir).map_err(io)?;
            return Ok((dir, None));
        }
        std::fs::create_dir_all(&own_dir).map_err(io)?;
        let projected = [("secrets", "secret", "secretName"), ("configmaps", "configMap", "name")]
            .into_iter()
            .find_map(|(plural, field, key)| Some((plural, &volume[field], volume[field][key].as_str()?)));
        if let Some((plural, source, object)) = projected {
            let mut projection = pod::Projection::new(&own_dir, plural, &context.namespace, object, source);
            if !projection.refresh(cluster) && source["optional"] != true {
                let kind = if plural == "secrets" { "secret" } else { "configmap" };
                return Err(mount_failed(format!("{kind} {object:?} not found")));
            }
            projections.push(projection);
        }
        if let Some(sources) = volume["projected"]["sources"].as_array() {
            for (path, content) in pod::projected_files(pod, sources, cluster).map_err(mount_failed)? {
                let file = own_dir.join(path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(file, content).map_err(io)?;
            }
        }
        // emptyDir, and kinds the simulation does not model, are an empty directory of the pod.
        Ok((own_dir, None))
    }

    /// The directory behind an NFS mount of `server:path`, and whether the server is outside the
    /// cluster (a directory standing in for it).
    fn nfs_dir(&self, server: &str, path: &str, cluster: &dyn ClusterView) -> Result<(PathBuf, bool), String> {
        let relative = path.trim_start_matches('/');
        if relative.split('/').any(|c| c == "..") {
            return Err(format!("mount.nfs: {server}:{path}: access denied by server"));
        }
        let service = cluster.list("", "services", None).into_iter().find(|s| crate::api::proxy::answers_at(s, server));
        if let Some(service) = service {
            let (name, namespace) = (
                service["metadata"]["name"].as_str().unwrap_or_default(),
                service["metadata"]["namespace"].as_str().unwrap_or_default(),
            );
            let endpoints = cluster.get("", "endpoints", namespace, name);
            let export = endpoints
                .iter()
                .flat_map(|e| e["subsets"].as_array().cloned().unwrap_or_default())
                .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
                .find_map(|a| self.pods.get(a["targetRef"]["uid"].as_str()?)?.export.clone());
            // The writer's secret path is the export itself. Programs that speak NFS (the syncer,
            // the consumers) go through the server, which checks the token and the identity
            // policy; the directory is what the pod's other mounts of the volume see.
            let relative = if relative.starts_with(".sv-writer-") { "" } else { relative };
            return match export {
                Some(export) => Ok((export.join(relative), false)),
                None => Err(format!(
                    "mount.nfs: Connection timed out: no ready NFS server behind Service {namespace}/{name} ({server})"
                )),
            };
        }
        match self.external_nfs.get(server) {
            Some(root) => {
                let dir = root.join(relative);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                Ok((dir, true))
            }
            None => Err(format!("mount.nfs: Connection timed out: no NFS server answers at {server}")),
        }
    }
}

/// The kubelet's report of an image that cannot be pulled: the back-off and the pull error it
/// follows, worded after a kubelet on containerd (the registry's own text is not modelled).
fn image_pull_back_off(image: &str) -> StartError {
    StartError {
        reason: "ImagePullBackOff".to_string(),
        message: format!(
            "Back-off pulling image \"{image}\": ErrImagePull: failed to pull and unpack image \"{image}\": \
             failed to resolve reference \"{image}\": {image}: not found"
        ),
    }
}

/// `registry/name` of an image reference, without its tag or digest.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// A name made safe as one path component.
fn sanitize(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') { format!("_{cleaned}") } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repositories_drop_tags_and_digests_but_not_ports() {
        assert_eq!(repository("ghcr.io/sharedvolume/sv-nfs:0.1.0"), "ghcr.io/sharedvolume/sv-nfs");
        assert_eq!(repository("ghcr.io/sharedvolume/sv-nfs@sha256:abc"), "ghcr.io/sharedvolume/sv-nfs");
        assert_eq!(repository("registry:5000/sv-nfs"), "registry:5000/sv-nfs");
        assert_eq!(repository("registry:5000/sv-nfs:1"), "registry:5000/sv-nfs");
        assert_eq!(repository("busybox"), "busybox");
    }

    #[test]
    fn names_become_single_path_components() {
        assert_eq!(sanitize("pvc-1"), "pvc-1");
        assert_eq!(sanitize("a/../b"), "a_.._b");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize(""), "_");
    }
}
