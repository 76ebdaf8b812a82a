//! The syncer's loop: follow the volume, sync when [`crate::schedule`] says so, within
//! `syncTimeout`, publish, report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sv_api::clock::SharedClock;
use sv_api::units::parse_quantity_bytes;
use sv_api::validation::effective_sync;
use sv_api::{
    ClusterSharedVolume, HTTP_UNPACK_ANNOTATION, SSH_INSECURE_ANNOTATION, SSH_KNOWN_HOSTS_ANNOTATION,
    SYNC_REQUESTED_ANNOTATION, SharedVolume, SyncStatus, VolumeKind, VolumeSpec,
};
use sv_common::telemetry::Health;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::credentials::{Credentials, Redactor};
use crate::error::SyncError;
use crate::publish::Volume;
use crate::report::{ResultLabels, StatusWriter, SyncMetrics, next_status};
use crate::schedule::{Due, Scheduler, Wanted};
use crate::source::{Fetched, SourceFactory, SourceOptions, digest, url_secrets};
use crate::volume_fs::{LocalFs, VolumeFs};

/// What the syncer is told by its pod.
#[derive(Clone, Debug)]
pub struct SyncerConfig {
    pub kind: VolumeKind,
    pub name: String,
    pub namespace: Option<String>,
    /// Where the volume is mounted.
    pub data_dir: PathBuf,
    /// Where the credentials Secret is mounted, if any.
    pub credentials_dir: Option<PathBuf>,
    /// Extra CA certificates to trust (PEM).
    pub extra_ca_pem: Option<Vec<u8>>,
}

/// The syncer's view of its volume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeView {
    pub spec: VolumeSpec,
    pub annotations: BTreeMap<String, String>,
    pub generation: Option<i64>,
    /// `status.sync` as last read.
    pub sync: Option<SyncStatus>,
}

impl VolumeView {
    fn trigger(&self) -> Option<&str> {
        self.annotations.get(SYNC_REQUESTED_ANNOTATION).map(String::as_str)
    }

    fn annotation_true(&self, key: &str) -> bool {
        self.annotations.get(key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Digest of the source part of the spec: a change starts a sync at once.
    fn source_key(&self) -> String {
        digest([serde_json::to_vec(&self.spec.source).unwrap_or_default()])
    }

    fn interval_and_timeout(&self) -> Result<(Duration, Duration), SyncError> {
        effective_sync(&self.spec)
            .map(|s| (s.interval, s.timeout))
            .ok_or_else(|| SyncError::Config("the volume has no source or an invalid schedule".to_string()))
    }
}

/// What one successful sync produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    pub revision: String,
    pub files: u64,
    pub bytes: u64,
    /// Bytes written into the volume (unchanged files are linked from the previous revision).
    pub transferred: u64,
    /// Whether a new revision was published.
    pub published: bool,
}

/// Whether this syncer may publish: it holds the volume's Lease and renewed it less than
/// `deadline` ago. The deadline is shorter than the Lease's duration, so a syncer cut off from the
/// API stops publishing before another can take the Lease over (see [`sv_api::lease`]).
#[derive(Clone, Debug)]
pub struct PublishFence {
    renewals: watch::Receiver<Option<tokio::time::Instant>>,
    deadline: Duration,
}

impl PublishFence {
    pub fn new(renewals: watch::Receiver<Option<tokio::time::Instant>>, deadline: Duration) -> Self {
        Self { renewals, deadline }
    }

    pub fn holds(&self) -> bool {
        self.renewals.borrow().is_some_and(|at| at.elapsed() < self.deadline)
    }
}

/// How long a syncer's Lease lasts without renewal, and how soon a holder stops publishing when
/// it cannot renew: the gap covers one publication and the clocks' drift.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const LEASE_RENEW_DEADLINE: Duration = Duration::from_secs(10);
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// The syncer pod's identity for its volume's Lease, from its environment (`SV_LEASE_NAME`,
/// `SV_POD_NAME`, `SV_POD_NAMESPACE`, which the operator sets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseIdentity {
    pub lease_name: String,
    pub pod_name: String,
    pub pod_namespace: String,
}

/// Runs the election for the volume's Lease until `shutdown` (then releases it, so a replacement
/// takes over at once), and returns the fence that says whether this pod may publish.
pub fn elect(
    client: Client,
    identity: &LeaseIdentity,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> PublishFence {
    let config = sv_api::lease::LeaderConfig {
        namespace: identity.pod_namespace.clone(),
        lease_name: identity.lease_name.clone(),
        identity: identity.pod_name.clone(),
        lease_duration: LEASE_DURATION,
        renew_deadline: LEASE_RENEW_DEADLINE,
        retry_period: LEASE_RETRY,
    };
    let elector = sv_api::lease::LeaderElector::new(client, config, clock);
    let fence = PublishFence::new(elector.renewals(), LEASE_RENEW_DEADLINE);
    let (leading, _) = watch::channel(false);
    tokio::spawn(elector.run(leading, shutdown.cancelled_owned()));
    fence
}

pub struct Syncer {
    config: SyncerConfig,
    factory: Arc<dyn SourceFactory>,
    clock: SharedClock,
    metrics: SyncMetrics,
    health: Health,
    status: Option<StatusWriter>,
    fence: Option<PublishFence>,
    /// How the volume at `config.data_dir` is reached.
    volume_fs: Arc<dyn VolumeFs>,
}

impl Syncer {
    pub fn new(
        config: SyncerConfig,
        factory: Arc<dyn SourceFactory>,
        clock: SharedClock,
        metrics: SyncMetrics,
        health: Health,
        status: Option<StatusWriter>,
    ) -> Self {
        Self { config, factory, clock, metrics, health, status, fence: None, volume_fs: LocalFs::shared() }
    }

    /// Reaches the volume through `fs` instead of system calls on `data_dir`.
    pub fn with_volume_fs(mut self, fs: Arc<dyn VolumeFs>) -> Self {
        self.volume_fs = fs;
        self
    }

    /// Syncs and publishes only while `fence` holds (several syncer pods of one volume).
    pub fn with_fence(mut self, fence: PublishFence) -> Self {
        self.fence = Some(fence);
        self
    }

    fn fenced(&self) -> bool {
        self.fence.as_ref().is_some_and(|f| !f.holds())
    }

    /// A syncer outside Kubernetes (`sv-syncer once`, tests): real network sources, the system
    /// clock, metrics nobody scrapes, no status writes.
    pub fn standalone(config: SyncerConfig) -> Self {
        Self::new(
            config,
            Arc::new(crate::source::NetworkSources),
            Arc::new(sv_api::clock::SystemClock),
            SyncMetrics::register(&mut prometheus_client::registry::Registry::default()),
            Health::new(),
            None,
        )
    }

    /// One sync of `view` into `volume`, bounded by the volume's `syncTimeout`. On failure or
    /// timeout the stage is thrown away and the published tree is untouched. Errors are redacted.
    pub async fn sync_once(&self, view: &VolumeView, volume: &Volume) -> Result<SyncOutcome, (SyncError, Redactor)> {
        let mut redactor = Redactor::default();
        let mut result = self.sync_inner(view, volume, &mut redactor).await;
        // The revision before the published one is kept only so that reads in progress at the
        // last switch finish; when the new revision does not fit beside both, it goes first.
        if matches!(result, Err(SyncError::VolumeFull { .. } | SyncError::NoSpace(_))) {
            match volume.free_previous() {
                Ok(true) => {
                    tracing::info!(
                        "the volume is full: removed the revision before the published one and trying again"
                    );
                    result = self.sync_inner(view, volume, &mut redactor).await;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "could not remove the previous revision"),
            }
        }
        result.map_err(|e| (e, redactor))
    }

    async fn sync_inner(
        &self,
        view: &VolumeView,
        volume: &Volume,
        redactor: &mut Redactor,
    ) -> Result<SyncOutcome, SyncError> {
        let (_, timeout) = view.interval_and_timeout()?;
        let credentials = Credentials::load(self.config.credentials_dir.as_deref())?;
        *redactor = credentials.redactor();
        for inline in view.spec.inline_credentials() {
            redactor.add(inline.1);
        }
        if let Some(source) = &view.spec.source {
            let urls = [
                source.http.as_ref().map(|h| &h.url),
                source.git.as_ref().map(|g| &g.url),
                source.s3.as_ref().and_then(|s| s.endpoint_url.as_ref()),
            ];
            for secret in urls.into_iter().flatten().flat_map(|u| url_secrets(u)) {
                redactor.add(&secret);
            }
        }
        let options = SourceOptions {
            extra_ca_pem: self.config.extra_ca_pem.clone(),
            known_hosts: view.annotations.get(SSH_KNOWN_HOSTS_ANNOTATION).cloned(),
            insecure_host_keys: view.annotation_true(SSH_INSECURE_ANNOTATION),
            unpack_archives: view.annotation_true(HTTP_UNPACK_ANNOTATION),
            state_dir: volume.local_state_dir(),
        };
        let source = self.factory.build(&view.spec, &credentials, &options)?;
        let capacity = view.spec.storage.as_ref().and_then(|s| parse_quantity_bytes(&s.capacity).ok());
        let previous = volume.previous_for(&source.identity())?;
        let mut stage = volume.stage(previous, capacity)?;
        let stage_dir = stage.dir().to_path_buf();
        let fetched = tokio::time::timeout(timeout, source.fetch(&mut stage)).await;
        let fetched = match fetched {
            Err(_) => {
                drop(stage);
                discard(volume, &stage_dir);
                return Err(SyncError::Timeout(timeout));
            }
            Ok(Err(e)) => {
                drop(stage);
                discard(volume, &stage_dir);
                return Err(e);
            }
            Ok(Ok(f)) => f,
        };
        match fetched {
            Fetched::Unchanged => {
                drop(stage);
                discard(volume, &stage_dir);
                let (_, manifest) = volume
                    .current()?
                    .ok_or_else(|| SyncError::Source("unchanged, but nothing is published".to_string()))?;
                Ok(SyncOutcome {
                    revision: manifest.revision.clone(),
                    files: manifest.files(),
                    bytes: manifest.bytes(),
                    transferred: 0,
                    published: false,
                })
            }
            Fetched::Tree { revision, meta } => {
                let staged = match stage.finish(&revision, &source.identity(), meta) {
                    Ok(staged) => staged,
                    Err(e) => {
                        discard(volume, &stage_dir);
                        return Err(e);
                    }
                };
                // Checked last, just before the switch: the sync may have outlasted the Lease.
                if self.fenced() {
                    discard(volume, &stage_dir);
                    return Err(SyncError::Fenced);
                }
                let transferred = staged.transferred;
                let published = volume.publish(staged)?;
                Ok(SyncOutcome {
                    revision: published.revision,
                    files: published.files,
                    bytes: published.bytes,
                    transferred,
                    published: true,
                })
            }
        }
    }

    /// Runs until `shutdown`, syncing as the schedule and the volume's changes demand.
    pub async fn run(
        self,
        mut views: watch::Receiver<Option<VolumeView>>,
        shutdown: CancellationToken,
    ) -> Result<(), SyncError> {
        let volume = Volume::open_on(self.volume_fs.clone(), &self.config.data_dir)?;
        self.health.set_live(true);
        // Wait for the first view of the volume.
        let first = loop {
            if let Some(view) = views.borrow_and_update().clone() {
                break view;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = views.changed() => if changed.is_err() { return Ok(()) },
            }
        };
        let mut scheduler = Scheduler::new(first.trigger());
        let mut last = first.sync.clone().unwrap_or_default();
        if volume.current()?.is_some() && last.last_sync_time.is_some() {
            // A restarted syncer keeps serving what is published; it is ready at once.
            self.health.set_ready(true);
        }
        loop {
            let Some(view) = views.borrow_and_update().clone() else { break };
            let (interval, _) = match view.interval_and_timeout() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "nothing to sync");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        changed = views.changed() => if changed.is_err() { break } else { continue },
                    }
                }
            };
            let source_key = view.source_key();
            let wanted = Wanted { interval, source: &source_key, trigger: view.trigger() };
            let now = tokio::time::Instant::now();
            match scheduler.next(now, &wanted) {
                Due::At(at) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(at) => {}
                        changed = views.changed() => if changed.is_err() { break },
                    }
                    continue;
                }
                Due::Now(_) if self.fenced() => {
                    tracing::info!("waiting for the volume's syncer Lease (another syncer pod may hold it)");
                    let Some(mut renewals) = self.fence.as_ref().map(|f| f.renewals.clone()) else { continue };
                    renewals.borrow_and_update();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        // The election ends only with the process: without it nothing can publish.
                        changed = renewals.changed() => if changed.is_err() { break },
                        changed = views.changed() => if changed.is_err() { break },
                    }
                    continue;
                }
                Due::Now(reason) => {
                    tracing::info!(reason = reason.as_str(), "sync starting");
                    let started_wall = Time(self.clock.now());
                    let started = tokio::time::Instant::now();
                    let result = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        result = self.sync_once(&view, &volume) => result,
                    };
                    let took = started.elapsed();
                    self.metrics.duration.observe(took.as_secs_f64());
                    scheduler.record(started, &wanted, result.is_ok());
                    let now_wall = Time(self.clock.now());
                    let next = match &result {
                        Ok(outcome) => {
                            let label = if outcome.published { "succeeded" } else { "unchanged" };
                            self.metrics.syncs.get_or_create(&ResultLabels { result: label, reason: "" }).inc();
                            self.metrics.transferred_bytes.inc_by(outcome.transferred);
                            self.metrics.files.set(i64::try_from(outcome.files).unwrap_or(i64::MAX));
                            self.metrics.bytes.set(i64::try_from(outcome.bytes).unwrap_or(i64::MAX));
                            self.metrics.last_success.set(now_wall.0.as_second());
                            self.health.set_ready(true);
                            tracing::info!(revision = %outcome.revision, published = outcome.published, files = outcome.files, bytes = outcome.bytes, transferred = outcome.transferred, took = ?took, "sync succeeded");
                            next_status(
                                &last,
                                started_wall,
                                took,
                                view.generation,
                                Ok((&outcome.revision, outcome.files, outcome.bytes)),
                                now_wall,
                            )
                        }
                        Err((error, redactor)) => {
                            let message = redactor.redact(&error.to_string());
                            self.metrics
                                .syncs
                                .get_or_create(&ResultLabels { result: "failed", reason: error.kind() })
                                .inc();
                            tracing::warn!(error = %message, failures = scheduler.failures(), "sync failed");
                            next_status(&last, started_wall, took, view.generation, Err(&message), now_wall)
                        }
                    };
                    self.metrics.consecutive_failures.set(i64::from(scheduler.failures()));
                    if let Some(writer) = &self.status
                        && let Err(error) = writer.write(&next).await
                    {
                        tracing::warn!(%error, "could not report the result on the volume's status");
                    }
                    last = next;
                }
            }
        }
        Ok(())
    }
}

/// Throws a stage away; a failure to do so is logged, not reported in place of the sync's own
/// result (the next sync removes what is left).
fn discard(volume: &Volume, stage_dir: &std::path::Path) {
    if let Err(error) = volume.discard(stage_dir) {
        tracing::warn!(%error, stage = %stage_dir.display(), "could not remove an abandoned stage yet");
    }
}

/// Follows the volume through the API and publishes each version of it on a watch channel.
pub fn watch_volume(
    client: Client,
    kind: VolumeKind,
    name: &str,
    namespace: Option<&str>,
) -> (watch::Receiver<Option<VolumeView>>, impl std::future::Future<Output = ()> + Send + 'static) {
    let resource = match kind {
        VolumeKind::SharedVolume => ApiResource::erase::<SharedVolume>(&()),
        VolumeKind::ClusterSharedVolume => ApiResource::erase::<ClusterSharedVolume>(&()),
    };
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let (tx, rx) = watch::channel(None);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = async move {
        let mut stream =
            std::pin::pin!(watcher(api, config).backoff(sv_api::watch::WatchBackoff::default()).applied_objects());
        while let Some(event) = stream.next().await {
            match event {
                Ok(object) => match view_of(&object) {
                    Ok(view) => {
                        tx.send_replace(Some(view));
                    }
                    Err(error) => tracing::warn!(%error, "the volume's spec cannot be read"),
                },
                Err(error) => tracing::warn!(%error, "watching the volume"),
            }
        }
    };
    (rx, task)
}

fn view_of(object: &DynamicObject) -> Result<VolumeView, serde_json::Error> {
    let spec: VolumeSpec = serde_json::from_value(object.data.get("spec").cloned().unwrap_or_default())?;
    let sync =
        object.data.get("status").and_then(|s| s.get("sync")).cloned().map(serde_json::from_value).transpose()?;
    Ok(VolumeView { spec, annotations: object.annotations().clone(), generation: object.metadata.generation, sync })
}
