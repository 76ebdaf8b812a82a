//! Reporting sync results: the volume's `status.sync` (server-side apply with the syncer's own
//! field manager, so the operator's status fields are never touched), and Prometheus metrics.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use sv_api::units::format_duration;
use sv_api::{ClusterSharedVolume, SharedVolume, SyncStatus, VolumeKind, sync_result};

/// Field manager of the syncer's status writes.
pub const FIELD_MANAGER: &str = "sharedvolume-syncer";

/// Where results go.
pub struct StatusWriter {
    api: Api<DynamicObject>,
    name: String,
    resource: ApiResource,
}

impl StatusWriter {
    pub fn new(client: Client, kind: VolumeKind, name: &str, namespace: Option<&str>) -> Self {
        let resource = match kind {
            VolumeKind::SharedVolume => ApiResource::erase::<SharedVolume>(&()),
            VolumeKind::ClusterSharedVolume => ApiResource::erase::<ClusterSharedVolume>(&()),
        };
        let api = match namespace {
            Some(ns) => Api::namespaced_with(client, ns, &resource),
            None => Api::all_with(client, &resource),
        };
        Self { api, name: name.to_string(), resource }
    }

    /// Writes `status.sync`. Every field is sent each time: under server-side apply a field the
    /// syncer stops sending is removed.
    pub async fn write(&self, sync: &SyncStatus) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "status": {"sync": sync},
        });
        self.api
            .patch_status(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map(|_| ())
    }
}

/// Builds the next `status.sync` from the last one and a result. A failure keeps the last
/// successful sync's time, revision and size.
pub fn next_status(
    previous: &SyncStatus,
    started: Time,
    duration: Duration,
    generation: Option<i64>,
    outcome: Result<(&str, u64, u64), &str>,
    now: Time,
) -> SyncStatus {
    let mut next = previous.clone();
    next.last_attempt_time = Some(started);
    next.last_duration = Some(format_duration(duration));
    next.observed_generation = generation;
    match outcome {
        Ok((revision, files, bytes)) => {
            next.last_result = Some(sync_result::SUCCEEDED.to_string());
            next.last_sync_time = Some(now);
            next.revision = Some(revision.to_string());
            next.consecutive_failures = Some(0);
            next.last_error = None;
            next.files = Some(i64::try_from(files).unwrap_or(i64::MAX));
            next.bytes = Some(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        Err(message) => {
            next.last_result = Some(sync_result::FAILED.to_string());
            next.consecutive_failures = Some(previous.consecutive_failures.unwrap_or(0) + 1);
            next.last_error = Some(truncate(message, 1024));
        }
    }
    next
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct SyncMetrics {
    pub syncs: Family<ResultLabels, Counter>,
    pub duration: Histogram,
    pub transferred_bytes: Counter,
    pub files: Gauge,
    pub bytes: Gauge,
    pub last_success: Gauge,
    pub consecutive_failures: Gauge,
}

impl SyncMetrics {
    /// Creates the metrics and registers them under `sv_syncer_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            syncs: Family::default(),
            duration: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            transferred_bytes: Counter::default(),
            files: Gauge::default(),
            bytes: Gauge::default(),
            last_success: Gauge::default(),
            consecutive_failures: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("sv_syncer");
        r.register("syncs", "Syncs run, by result (succeeded, unchanged, failed) and failure kind", m.syncs.clone());
        r.register("sync_duration_seconds", "Time a sync took, successful or not", m.duration.clone());
        r.register(
            "written_bytes",
            "Bytes written into the volume; files unchanged since the previous revision are linked, not written",
            m.transferred_bytes.clone(),
        );
        r.register("published_files", "Files in the published revision", m.files.clone());
        r.register("published_bytes", "Bytes in the published revision", m.bytes.clone());
        r.register("last_success_timestamp_seconds", "Unix time of the last successful sync", m.last_success.clone());
        r.register("consecutive_failures", "Failed syncs since the last success", m.consecutive_failures.clone());
        m
    }
}
