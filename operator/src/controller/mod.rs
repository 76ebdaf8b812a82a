//! The reconcile loop: kube-runtime controllers for both volume kinds that observe the cluster,
//! ask [`crate::plan`] what should exist, and make it so.

pub mod cache;
pub mod events;
pub mod kube_io;
/// Leader election lives in [`crate::lease`], shared with the syncer; the operator's name for it.
pub use crate::lease as leader;
pub mod metrics;
pub mod observe;
pub mod triggers;

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::events::Recorder;
use self::leader::{LeaderConfig, LeaderElector};
use self::metrics::Metrics;
use self::observe::{Caches, node_addresses};
use self::triggers::{TriggerStreams, Triggers, touched};
use crate::api::{CONSUMER_POD_LABEL, ClusterSharedVolume, Phase, SharedVolume, Volume, condition, labels};
use crate::clock::SharedClock;
use crate::plan::{PlannedEvent, Settings, plan, set_condition};
use crate::telemetry::Health;

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not apply {object}: {source}")]
    Apply { object: String, source: kube::Error },
    #[error("could not delete {object}: {source}")]
    Delete { object: String, source: kube::Error },
    #[error("could not serialize {0}: {1}")]
    Serialize(String, serde_json::Error),
    #[error("the operator does not manage kind {0}")]
    UnknownKind(&'static str),
    #[error("this replica lost the leader lease")]
    LostLeadership,
    #[error("the {0} cache did not sync: {1}")]
    Cache(&'static str, String),
    #[error("drawing random bytes from the OS failed: {0}")]
    Random(String),
}

impl Error {
    /// Short label for the `reason` of the error metric.
    pub fn metric_label(&self) -> String {
        fn api(e: &kube::Error) -> String {
            match e {
                kube::Error::Api(s) => format!("api_{}", s.code),
                _ => "transport".to_string(),
            }
        }
        match self {
            Error::Kube(e) => api(e),
            Error::Apply { source, .. } => format!("apply_{}", api(source)),
            Error::Delete { source, .. } => format!("delete_{}", api(source)),
            Error::Serialize(..) => "serialize".to_string(),
            Error::UnknownKind(_) => "unknown_kind".to_string(),
            Error::LostLeadership => "lost_leadership".to_string(),
            Error::Cache(..) => "cache".to_string(),
            Error::Random(_) => "random".to_string(),
        }
    }

    /// The API server refused a planned object for what it is (not for load or a race): the
    /// volume's status should say so, because retrying alone will not fix it.
    fn is_rejection(&self) -> bool {
        match self {
            Error::Apply { source: kube::Error::Api(s), .. } | Error::Delete { source: kube::Error::Api(s), .. } => {
                matches!(s.code, 400 | 403 | 404 | 422)
            }
            _ => false,
        }
    }
}

/// Delay before retrying a volume after `failures` consecutive failed reconciliations: 1 s
/// doubling to 5 min, without jitter so that runs replay.
pub fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

pub use sv_api::watch::WatchBackoff;

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub clock: SharedClock,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub caches: Caches,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        caches: Caches,
        instance: &str,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), clock.clone(), "sharedvolume-operator", instance);
        Self { client, settings, clock, recorder, metrics, caches, failures: Mutex::new(HashMap::new()) }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn volume_key<V: Volume>(volume: &V) -> String {
    format!("{}/{}", V::KIND, volume.display_name())
}

/// Reconciles one volume.
pub async fn reconcile<V: Volume>(volume: Arc<V>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let span = tracing::info_span!("reconcile", volume = %volume_key(volume.as_ref()));
    let result = reconcile_volume(volume.as_ref(), &ctx).instrument(span).await;
    ctx.metrics.observe_reconcile(V::KIND, started.elapsed());
    if result.is_ok() {
        ctx.failures().remove(&volume_key(volume.as_ref()));
    }
    result
}

/// Retries a failed volume later, backing off per volume.
pub fn error_policy<V: Volume>(volume: Arc<V>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = volume_key(volume.as_ref());
    let failures = {
        let mut map = ctx.failures();
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics.observe_error(V::KIND, &error.metric_label());
    let delay = retry_delay(failures);
    tracing::warn!(volume = %key, %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_volume<V: Volume>(volume: &V, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let key = volume_key(volume);
    let deleting = volume.meta().deletion_timestamp.is_some();
    let finalizer = V::KIND.finalizer();
    let has_finalizer = volume.finalizers().iter().any(|f| f == finalizer);
    if deleting && !has_finalizer {
        ctx.metrics.set_phase(V::KIND, &key, None);
        return Ok(Action::await_change());
    }
    // An invalid volume gets no finalizer and no reference value until it is fixed: it creates
    // nothing that would need them, and a validating webhook that does not ratchet (sv-webhook
    // before it did, during an upgrade) refuses every update of an invalid object, so asking would
    // keep a volume stored past admission (the webhook was down; its failure policy is Ignore)
    // from ever being marked Failed. Its status is the subresource, which the webhook does not see.
    let valid = crate::validation::validate_volume(crate::validation::VolumeInput::of(volume), None).is_valid();
    // Later guarded writes (the reference value) must carry the resourceVersion the finalizer
    // patch produced, not the one read before it, or they always conflict once.
    let stored;
    let volume = if !deleting && !has_finalizer && valid {
        stored = kube_io::add_finalizer(client, volume).await?;
        match &stored {
            Some(stored) => stored,
            None => return Ok(Action::await_change()),
        }
    } else {
        volume
    };

    let observed = observe::observe(client, volume, &ctx.caches, &ctx.settings, &ctx.clock).await?;
    let plan = plan(&observed, &ctx.settings);
    if let Some(reference) = &plan.set_reference_value
        && !deleting
        && valid
    {
        kube_io::set_reference_value(client, volume, reference).await?;
    }

    let mut applied = Ok(());
    for object in &plan.objects {
        match kube_io::apply(client, &ctx.caches.cluster, object).await {
            Ok(wrote) => ctx.metrics.observe_apply(object.key().kind, wrote),
            Err(e) => {
                applied = Err(e);
                break;
            }
        }
    }
    if applied.is_ok() {
        for object in &plan.delete {
            applied = kube_io::delete(client, object).await;
            if applied.is_err() {
                break;
            }
        }
    }
    if let Err(error) = applied {
        if error.is_rejection() {
            report_rejection(volume, ctx, &plan.status, &observed.status, &error).await;
        }
        return Err(error);
    }

    if plan.status != observed.status {
        kube_io::apply_status(client, volume, &plan.status).await?;
    }
    publish_events(volume, ctx, &plan.events).await;
    if plan.finalize {
        kube_io::remove_finalizer(client, volume).await?;
        ctx.metrics.set_phase(V::KIND, &key, None);
        tracing::info!(volume = %key, "volume deleted; everything it created is gone");
        return Ok(Action::await_change());
    }
    ctx.metrics.set_phase(V::KIND, &key, plan.status.phase());
    Ok(Action::requeue(plan.requeue_after))
}

/// Puts an object the API server refused on the volume's status and Events.
async fn report_rejection<V: Volume>(
    volume: &V,
    ctx: &Context,
    planned: &crate::api::VolumeStatus,
    current: &crate::api::VolumeStatus,
    error: &Error,
) {
    let message = error.to_string();
    let mut status = planned.clone();
    status.phase = Some(Phase::Failed.as_str().to_string());
    status.message = Some(message.clone());
    set_condition(
        &mut status.conditions,
        condition::READY,
        false,
        "ApplyFailed",
        &message,
        volume.meta().generation,
        ctx.clock.now(),
    );
    if status != *current
        && let Err(e) = kube_io::apply_status(&ctx.client, volume, &status).await
    {
        tracing::warn!(error = %e, "could not report the failure on the volume's status");
    }
    publish_events(volume, ctx, &[PlannedEvent { warning: true, reason: "ApplyFailed".to_string(), note: message }])
        .await;
}

async fn publish_events<V: Volume>(volume: &V, ctx: &Context, events: &[PlannedEvent]) {
    let reference = volume.object_ref(&());
    for event in events {
        if event.warning {
            tracing::warn!(volume = %volume.display_name(), reason = %event.reason, "{}", event.note);
        } else {
            tracing::info!(volume = %volume.display_name(), reason = %event.reason, "{}", event.note);
        }
        if let Err(error) = ctx.recorder.publish(&reference, event).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish an Event");
        }
    }
}

/// What `run` needs besides the client.
pub struct RunOptions {
    pub settings: Settings,
    /// None disables leader election (a single replica, or tests).
    pub leader: Option<LeaderConfig>,
    /// Name of this replica in Events and the Lease.
    pub instance: String,
}

/// Runs both controllers until `shutdown` is cancelled. With leader election, waits to lead first,
/// and returns [`Error::LostLeadership`] if the lease is lost (the process should then exit, so
/// that it restarts as a standby).
pub async fn run(
    client: Client,
    options: RunOptions,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !wait_for_crds(&client, &health, &shutdown).await {
        return Ok(());
    }
    let mut leading = None;
    if let Some(config) = options.leader.clone() {
        let (tx, rx) = watch::channel(false);
        let elector = LeaderElector::new(client.clone(), config, clock.clone());
        tokio::spawn(elector.run(tx, shutdown.clone().cancelled_owned()));
        leading = Some(rx);
    }
    // A standby answers probes too; it is ready to take over.
    health.set_ready(true);
    if let Some(rx) = leading.as_mut() {
        tracing::info!("waiting for the leader lease");
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = rx.changed() => if changed.is_err() { return Ok(()) },
            }
        }
    }
    metrics.set_leader(true);
    let controllers = CancellationToken::new();
    let result = tokio::select! {
        result = run_controllers(client, options, clock, metrics.clone(), controllers.clone()) => result,
        _ = shutdown.cancelled() => Ok(()),
        lost = wait_for_loss(leading) => lost,
    };
    controllers.cancel();
    metrics.set_leader(false);
    result
}

async fn wait_for_loss(leading: Option<watch::Receiver<bool>>) -> Result<(), Error> {
    let Some(mut rx) = leading else {
        return std::future::pending().await;
    };
    loop {
        if !*rx.borrow_and_update() {
            return Err(Error::LostLeadership);
        }
        if rx.changed().await.is_err() {
            return Err(Error::LostLeadership);
        }
    }
}

async fn run_controllers(
    client: Client,
    options: RunOptions,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let (triggers, trigger_streams) = Triggers::new();
    let consumer_pods = watcher::Config::default().labels(&format!("{CONSUMER_POD_LABEL}=true"));
    let (pods, pod_writer) = reflector::store::<Pod>();
    let consumer_triggers = triggers.clone();
    let pod_cache = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), consumer_pods).modify(cache::lean_pod),
    )
    .backoff(WatchBackoff::default())
    .for_each(move |event| {
        if let Some(pod) = event.as_ref().ok().and_then(touched) {
            consumer_triggers.consumer_pod(pod);
        }
        ready(())
    });
    let (nodes, node_writer) = reflector::store::<Node>();
    let (mut sv_nodes_tx, sv_nodes_rx) = mpsc::channel::<()>(1);
    let (mut csv_nodes_tx, csv_nodes_rx) = mpsc::channel::<()>(1);
    let node_store = nodes.clone();
    let node_api = Api::<Node>::all(client.clone());
    let node_cache = async move {
        let mut last = None;
        let mut events = std::pin::pin!(
            reflector::reflector(node_writer, watcher(node_api, watcher::Config::default()).modify(cache::lean_node))
                .backoff(WatchBackoff::default())
        );
        // Awaiting the store's readiness in here would stop polling the very stream that makes it
        // ready (the first event comes before the first list): wait for `InitDone` instead.
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => listed = true,
                Ok(_) => {}
                Err(_) => continue,
            }
            if !listed {
                continue;
            }
            // Node status changes often; volumes only care when the set of node addresses does.
            let addresses = node_addresses(&node_store);
            if last.as_ref() != Some(&addresses) {
                last = Some(addresses);
                let _ = sv_nodes_tx.try_send(());
                let _ = csv_nodes_tx.try_send(());
            }
        }
    };
    // The cache holds the NFS servers' pods too: why one waits (an image that cannot be pulled)
    // goes on its volume's NfsServerReady condition.
    let own_pods_config = watcher::Config::default().labels(&format!(
        "{}={},{} in ({},{})",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE,
        labels::COMPONENT,
        crate::api::components::SYNCER,
        crate::api::components::NFS_SERVER
    ));
    let (own_pods, own_pod_writer) = reflector::store::<Pod>();
    let own_pod_cache = reflector::reflector(
        own_pod_writer,
        watcher(Api::<Pod>::all(client.clone()), own_pods_config).modify(cache::lean_pod),
    )
    .backoff(WatchBackoff::default())
    .for_each({
        let triggers = triggers.clone();
        move |event| {
            if let Some(pod) = event.as_ref().ok().and_then(touched) {
                triggers.owned(&pod.metadata);
            }
            ready(())
        }
    });
    let (cluster, cluster_cache) = cache::ClusterCache::new(&client, triggers);
    let caches =
        Caches { pods: pods.clone(), nodes: nodes.clone(), own_pods: own_pods.clone(), cluster: cluster.clone() };
    let ctx = Arc::new(Context::new(client.clone(), options.settings, clock, metrics, caches, &options.instance));

    let TriggerStreams { shared_volumes, cluster_shared_volumes } = trigger_streams;
    let sv = volume_controller::<SharedVolume>(&client, shared_volumes, sv_nodes_rx, shutdown.clone())
        .run(reconcile::<SharedVolume>, error_policy::<SharedVolume>, ctx.clone())
        .for_each(|result| {
            log_watch_error("SharedVolume", result.err());
            ready(())
        });
    let csv = volume_controller::<ClusterSharedVolume>(&client, cluster_shared_volumes, csv_nodes_rx, shutdown.clone())
        .run(reconcile::<ClusterSharedVolume>, error_policy::<ClusterSharedVolume>, ctx)
        .for_each(|result| {
            log_watch_error("ClusterSharedVolume", result.err());
            ready(())
        });

    let wait_caches = async {
        pods.wait_until_ready().await.map_err(|e| Error::Cache("pod", e.to_string()))?;
        nodes.wait_until_ready().await.map_err(|e| Error::Cache("node", e.to_string()))?;
        own_pods.wait_until_ready().await.map_err(|e| Error::Cache("syncer and NFS server pod", e.to_string()))?;
        cluster.wait_until_ready().await?;
        tracing::info!("caches synced; controllers starting");
        futures::join!(sv, csv);
        Ok(())
    };
    tokio::select! {
        result = wait_caches => result,
        _ = pod_cache => Ok(()),
        _ = own_pod_cache => Ok(()),
        _ = cluster_cache => Ok(()),
        _ = node_cache => Ok(()),
        _ = shutdown.cancelled() => Ok(()),
    }
}

/// Logs what a controller's watches fail with (a CRD removed while running, RBAC taken away);
/// reconcile errors are the error policy's to report.
fn log_watch_error<E: std::error::Error>(
    kind: &str,
    error: Option<kube::runtime::controller::Error<E, watcher::Error>>,
) {
    if let Some(kube::runtime::controller::Error::QueueError(error)) = error {
        tracing::warn!(%error, "a watch of the {kind} controller failed; retrying with back-off");
    }
}

/// Waits until the API server serves SharedVolumes and ClusterSharedVolumes (their CRDs are
/// installed), unready meanwhile, so that a missing CRD shows as an operator that never becomes
/// Ready and one clear log line, not as controllers whose watches fail in silence. Returns false
/// if `shutdown` came first.
async fn wait_for_crds(client: &Client, health: &Health, shutdown: &CancellationToken) -> bool {
    let group_version = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
    use kube::Resource as _;
    let wanted = [SharedVolume::plural(&()).to_string(), ClusterSharedVolume::plural(&()).to_string()];
    let mut told = false;
    loop {
        let missing: Option<Vec<&String>> = match client.list_api_group_resources(&group_version).await {
            Ok(list) => Some(wanted.iter().filter(|w| !list.resources.iter().any(|r| &r.name == *w)).collect()),
            Err(kube::Error::Api(status)) if status.code == 404 => Some(wanted.iter().collect()),
            Err(error) => {
                tracing::warn!(%error, "could not check that the CRDs are installed; trying again");
                None
            }
        };
        match missing {
            Some(missing) if missing.is_empty() => {
                if told {
                    tracing::info!("the CRDs are installed now");
                }
                return true;
            }
            Some(missing) if !told => {
                told = true;
                let crds: Vec<String> =
                    missing.iter().map(|plural| format!("{plural}.{}", crate::api::GROUP)).collect();
                tracing::error!(
                    missing = %crds.join(", "),
                    "the API server does not serve {group_version}: the CRDs are not installed; install them with \
                     `kubectl apply -k deploy/` (or `sv-operator crd | kubectl apply -f -`); unready until then"
                );
            }
            _ => {}
        }
        health.set_ready(false);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// A controller for one volume kind: its volumes' own changes, and the triggers the caches send
/// (children, consumer pods, syncer and NFS server pods; see [`triggers`]).
fn volume_controller<V: Volume>(
    client: &Client,
    triggers: futures::channel::mpsc::UnboundedReceiver<(Option<String>, String)>,
    node_changes: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) -> Controller<V> {
    // The controller's own cache of volumes, without what a reconcile never reads.
    let (volumes, writer) = reflector::store::<V>();
    let volume_events = reflector::reflector(
        writer,
        watcher(Api::<V>::all(client.clone()), watcher::Config::default()).modify(cache::lean),
    )
    .applied_objects();
    Controller::for_stream(volume_events, volumes)
        .with_config(ControllerConfig::default().concurrency(4))
        .trigger_backoff(WatchBackoff::default())
        .reconcile_on(triggers::references::<V>(triggers))
        .reconcile_all_on(node_changes)
        .graceful_shutdown_on(shutdown.cancelled_owned())
}
