//! The syncer's loop on simulated time, with a scripted source and the real `kube::Client` over a
//! recording transport: when syncs start (first at once, interval, backoff, trigger, source
//! change), what a timeout leaves behind, and what reaches the status, the metrics and health.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use sv_api::clock::TokioClock;
use sv_api::{SYNC_REQUESTED_ANNOTATION, VolumeKind, VolumeSpec};
use sv_common::telemetry::Health;
use sv_syncer::credentials::Credentials;
use sv_syncer::error::SyncError;
use sv_syncer::paths::RelPath;
use sv_syncer::report::{StatusWriter, SyncMetrics};
use sv_syncer::run::{LEASE_RENEW_DEADLINE, PublishFence, Syncer, SyncerConfig, VolumeView};
use sv_syncer::source::{BoxFuture, Fetched, Source, SourceFactory, SourceOptions};
use sv_syncer::tree::Stage;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the scripted source does on its next fetch.
#[derive(Clone, Debug)]
enum Step {
    Publish(&'static str),
    /// Publish, after this many simulated seconds.
    SlowPublish(&'static str, u64),
    Fail,
    Stall,
}

/// One fetch, as the source saw it.
#[derive(Debug)]
struct Fetch {
    at: Duration,
    identity: String,
    /// The revision published when the fetch began.
    previous: Option<String>,
    /// What a reader saw at the mount path when the fetch began.
    visible: String,
}

struct Scripted {
    t0: Instant,
    steps: Arc<Mutex<VecDeque<Step>>>,
    fetches: mpsc::UnboundedSender<Fetch>,
}

struct ScriptedSource {
    identity: String,
    t0: Instant,
    steps: Arc<Mutex<VecDeque<Step>>>,
    fetches: mpsc::UnboundedSender<Fetch>,
}

impl SourceFactory for Scripted {
    fn build(&self, spec: &VolumeSpec, _: &Credentials, _: &SourceOptions) -> Result<Box<dyn Source>, SyncError> {
        let url = spec.source.as_ref().and_then(|s| s.http.as_ref()).map(|h| h.url.clone()).unwrap_or_default();
        Ok(Box::new(ScriptedSource {
            identity: url,
            t0: self.t0,
            steps: self.steps.clone(),
            fetches: self.fetches.clone(),
        }))
    }
}

impl Source for ScriptedSource {
    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(async move {
            let previous = stage.previous().map(|p| p.manifest.revision.clone());
            // The stage is `<volume>/.sharedvolume/staging-<n>`.
            let root = stage.dir().parent().and_then(|p| p.parent()).expect("volume root");
            let visible = std::fs::read_to_string(root.join("data.txt")).unwrap_or_default();
            let _ =
                self.fetches.send(Fetch { at: self.t0.elapsed(), identity: self.identity.clone(), previous, visible });
            let step = self.steps.lock().expect("lock").pop_front().unwrap_or(Step::Fail);
            match step {
                Step::Publish(revision) | Step::SlowPublish(revision, _) => {
                    if let Step::SlowPublish(_, seconds) = step {
                        tokio::time::sleep(Duration::from_secs(seconds)).await;
                    }
                    let path = RelPath::parse("data.txt").expect("path");
                    stage.write_file(&path, revision.as_bytes(), false, revision)?;
                    Ok(Fetched::Tree { revision: revision.to_string(), meta: Default::default() })
                }
                Step::Fail => Err(SyncError::Unreachable("scripted outage".to_string())),
                Step::Stall => {
                    // Half a file, then nothing: the timeout must throw the stage away.
                    let path = RelPath::parse("data.txt").expect("path");
                    stage.write_file(&path, b"partial", false, "partial")?;
                    std::future::pending().await
                }
            }
        })
    }
}

/// Status patches sent by the syncer, as `status.sync` bodies.
type Patches = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A `kube::Client` whose transport records every request and echoes the body back.
fn recording_client() -> (kube::Client, Patches) {
    let patches: Patches = Arc::default();
    let recorded = patches.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let recorded = recorded.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let target = format!("{} {}?{}", parts.method, parts.uri.path(), parts.uri.query().unwrap_or(""));
            let content_type =
                parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            recorded.lock().expect("lock").push((target, content_type, body.clone()));
            let mut reply = body;
            reply["metadata"] = json!({"name": "vol", "namespace": "team"});
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from(serde_json::to_vec(&reply).expect("json"))))
                .expect("response");
            Ok::<_, Infallible>(response)
        }
    });
    (kube::Client::new(service, "team"), patches)
}

struct Harness {
    views: watch::Sender<Option<VolumeView>>,
    fetches: mpsc::UnboundedReceiver<Fetch>,
    patches: Patches,
    registry: Registry,
    health: Health,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SyncError>>,
    data: tempfile::TempDir,
}

impl Harness {
    fn start(steps: &[Step], first: VolumeView) -> Self {
        Self::start_fenced(steps, first, None)
    }

    fn start_fenced(steps: &[Step], first: VolumeView, fence: Option<PublishFence>) -> Self {
        let t0 = Instant::now();
        let (tx, fetches) = mpsc::unbounded_channel();
        let factory = Scripted { t0, steps: Arc::new(Mutex::new(steps.iter().cloned().collect())), fetches: tx };
        let data = tempfile::tempdir().expect("tempdir");
        let (client, patches) = recording_client();
        let mut registry = Registry::default();
        let metrics = SyncMetrics::register(&mut registry);
        let health = Health::new();
        let config = SyncerConfig {
            kind: VolumeKind::SharedVolume,
            name: "vol".to_string(),
            namespace: Some("team".to_string()),
            data_dir: data.path().to_path_buf(),
            credentials_dir: None,
            extra_ca_pem: None,
        };
        let writer = StatusWriter::new(client, VolumeKind::SharedVolume, "vol", Some("team"));
        let mut syncer = Syncer::new(
            config,
            Arc::new(factory),
            Arc::new(TokioClock::starting_at(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            metrics,
            health.clone(),
            Some(writer),
        );
        if let Some(fence) = fence {
            syncer = syncer.with_fence(fence);
        }
        let (views, rx) = watch::channel(Some(first));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(syncer.run(rx, shutdown.clone()));
        Self { views, fetches, patches, registry, health, shutdown, task, data }
    }

    /// The next fetch (simulated time runs until it happens; bounded by a simulated day).
    async fn next_fetch(&mut self) -> Fetch {
        tokio::time::timeout(Duration::from_secs(86_400), self.fetches.recv())
            .await
            .expect("a fetch within a day")
            .expect("running")
    }

    /// Lets the loop run for `d` of simulated time.
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn statuses(&self) -> Vec<Value> {
        self.patches.lock().expect("lock").iter().map(|(_, _, body)| body["status"]["sync"].clone()).collect()
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    fn published(&self) -> String {
        std::fs::read_to_string(self.data.path().join("data.txt")).unwrap_or_default()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.task).await.expect("stops").expect("no panic");
        assert!(result.is_ok(), "{result:?}");
    }
}

fn view(url: &str, interval: &str, timeout: &str, trigger: Option<&str>) -> VolumeView {
    let yaml = format!(
        "mountPath: /data\nsource:\n  http:\n    url: {url}\nsyncInterval: {interval}\nsyncTimeout: {timeout}\n"
    );
    let mut v =
        VolumeView { spec: serde_saphyr::from_str(&yaml).expect("spec"), generation: Some(3), ..VolumeView::default() };
    if let Some(t) = trigger {
        v.annotations.insert(SYNC_REQUESTED_ANNOTATION.to_string(), t.to_string());
    }
    v
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn schedule_backoff_and_timeout() {
    let steps = [Step::Publish("r1"), Step::Fail, Step::Fail, Step::Stall, Step::Publish("r2"), Step::Publish("r2")];
    let mut h = Harness::start(&steps, view("http://src/a", "1m", "10s", None));
    assert!(!h.health.is_ready(), "not ready before the first sync");

    let mut starts = Vec::new();
    for _ in 0..steps.len() {
        let fetch = h.next_fetch().await;
        if starts.len() == 4 {
            assert_eq!(fetch.previous.as_deref(), Some("r1"), "the timed-out sync left r1 published");
            assert_eq!(fetch.visible, "r1", "readers still see r1, not the partial file");
        }
        starts.push(fetch.at.as_secs());
    }
    // First at once; the interval; retries after 5 s, 10 s, then 20 s (the third attempt stalled
    // and was cut off at 10 s); then the interval again.
    assert_eq!(starts, [0, 60, 65, 75, 95, 155]);
    assert!(h.health.is_ready());
    assert_eq!(h.published(), "r2");

    h.run_for(secs(1)).await;
    let statuses = h.statuses();
    let summary: Vec<(String, i64)> = statuses
        .iter()
        .map(|s| (s["lastResult"].as_str().unwrap_or("").to_string(), s["consecutiveFailures"].as_i64().unwrap_or(-1)))
        .collect();
    let expected = [("Succeeded", 0), ("Failed", 1), ("Failed", 2), ("Failed", 3), ("Succeeded", 0), ("Succeeded", 0)];
    assert_eq!(summary, expected.map(|(r, n)| (r.to_string(), n)));
    assert_eq!(
        statuses[3]["lastError"],
        "the sync did not finish within syncTimeout (10s); the published tree is unchanged"
    );
    assert_eq!(statuses[3]["revision"], "r1", "a failure keeps the last good revision");
    assert_eq!(statuses[3]["lastDuration"], "10s");
    assert_eq!(statuses[1]["lastError"], "source unreachable: scripted outage");
    assert_eq!(statuses[4]["revision"], "r2");
    assert!(statuses[4].get("lastError").is_none_or(Value::is_null), "cleared on success: {}", statuses[4]);
    assert_eq!(statuses[4]["observedGeneration"], 3);

    let (target, content_type, body) = h.patches.lock().expect("lock")[0].clone();
    assert_eq!(
        target,
        "PATCH /apis/sv.sharedvolume.io/v1alpha1/namespaces/team/sharedvolumes/vol/status?&force=true&fieldManager=sharedvolume-syncer"
    );
    assert_eq!(content_type, "application/apply-patch+yaml");
    assert_eq!(body["kind"], "SharedVolume");

    let metrics = h.metrics();
    for line in [
        "sv_syncer_syncs_total{result=\"succeeded\",reason=\"\"} 3",
        "sv_syncer_syncs_total{result=\"failed\",reason=\"unreachable\"} 2",
        "sv_syncer_syncs_total{result=\"failed\",reason=\"timeout\"} 1",
        "sv_syncer_consecutive_failures 0",
        "sv_syncer_sync_duration_seconds_count 6",
        "sv_syncer_published_files 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(h.data.path().join(".sharedvolume"))
        .expect("state")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("staging"))
        .collect();
    assert!(leftovers.is_empty(), "no stage left behind");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn triggers_and_source_changes_start_a_sync_at_once() {
    let steps = [Step::Publish("r1"), Step::Publish("r2"), Step::Publish("other-1"), Step::Publish("other-2")];
    let mut h = Harness::start(&steps, view("http://src/a", "1h", "30s", Some("old-request")));
    assert_eq!(h.next_fetch().await.at, secs(0));

    h.run_for(secs(100)).await;
    h.views.send_replace(Some(view("http://src/a", "1h", "30s", Some("2026-11-21T10:00:00Z"))));
    let requested = h.next_fetch().await;
    assert_eq!(requested.at, secs(100), "a new annotation value starts a sync at once");

    h.run_for(secs(100)).await;
    h.views.send_replace(Some(view("http://src/b", "1h", "30s", Some("2026-11-21T10:00:00Z"))));
    let changed = h.next_fetch().await;
    assert_eq!(
        (changed.at, changed.identity.as_str()),
        (secs(200), "http://src/b"),
        "a new source applies without a restart"
    );
    assert_eq!(changed.previous, None, "a different source does not reuse the old tree");

    // The same request value again does nothing; the next sync is an interval after the last.
    h.views.send_replace(Some(view("http://src/b", "1h", "30s", Some("2026-11-21T10:00:00Z"))));
    assert_eq!(h.next_fetch().await.at, secs(3800));

    // A spec the syncer cannot work with (no source) parks the loop; it does not crash.
    let mut broken = view("http://src/b", "1h", "30s", None);
    broken.spec.source = None;
    h.views.send_replace(Some(broken));
    h.run_for(secs(7200)).await;
    assert!(h.fetches.try_recv().is_err(), "no sync without a source");
    assert!(!h.task.is_finished(), "still running");
    h.stop().await;
}

/// Two syncer pods of one volume: only the Lease holder syncs, and one that cannot renew in time
/// (cut off from the API mid-sync) throws its finished tree away instead of publishing it.
#[tokio::test(start_paused = true)]
async fn only_the_lease_holder_publishes_and_a_late_holder_publishes_nothing() {
    let (renewals, rx) = watch::channel(None);
    let fence = PublishFence::new(rx, LEASE_RENEW_DEADLINE);
    let steps = [Step::Publish("r1"), Step::SlowPublish("r2", 30)];
    let mut h = Harness::start_fenced(&steps, view("http://h/a", "60s", "50s", None), Some(fence));
    // Without the Lease nothing is fetched, for as long as it is held elsewhere.
    assert!(tokio::time::timeout(secs(120), h.fetches.recv()).await.is_err(), "no sync without the Lease");
    assert_eq!(h.published(), "");

    // Acquired, and renewed every two seconds while the first sync runs.
    renewals.send_replace(Some(Instant::now()));
    let keep_renewing = {
        let renewals = renewals.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(secs(2)).await;
                renewals.send_replace(Some(Instant::now()));
            }
        })
    };
    h.next_fetch().await;
    h.run_for(secs(1)).await;
    assert_eq!(h.published(), "r1", "the holder publishes");

    // The next sync takes 30 s; the renewals stop (a partition) as it starts.
    let second = h.next_fetch().await;
    keep_renewing.abort();
    h.run_for(secs(31)).await;
    assert_eq!(second.previous.as_deref(), Some("r1"));
    assert_eq!(h.published(), "r1", "a tree finished after the renew deadline is not published");
    let failed = h.statuses().into_iter().rev().find(|s| s["lastResult"] == "Failed").expect("a failed sync");
    assert!(failed["lastError"].as_str().unwrap_or_default().contains("Lease"), "{failed}");
    let leftovers: Vec<_> = std::fs::read_dir(h.data.path().join(".sharedvolume"))
        .expect("state")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("staging") || n.starts_with("current.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "the fenced stage was thrown away: {leftovers:?}");
    drop(renewals);
    h.shutdown.cancel();
    let _ = tokio::time::timeout(secs(60), h.task).await;
}
