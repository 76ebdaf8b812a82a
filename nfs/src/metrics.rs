//! Prometheus metrics of the NFS server.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub program: &'static str,
    pub procedure: &'static str,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcLabels {
    pub procedure: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

#[derive(Clone)]
pub struct NfsMetrics {
    pub operations: Family<OpLabels, Counter>,
    pub latency: Family<ProcLabels, Histogram>,
    pub rpc_errors: Family<ErrorLabels, Counter>,
    pub bytes_read: Counter,
    pub bytes_written: Counter,
    pub clients: Gauge,
    pub used_bytes: Gauge,
    pub capacity_bytes: Gauge,
    pub dir_syncs: Counter,
    /// The export's sync count already added to `dir_syncs`.
    dir_syncs_reported: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl NfsMetrics {
    /// Creates the metrics and registers them under `sv_nfs_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            operations: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_025, 2.0, 18))),
            rpc_errors: Family::default(),
            bytes_read: Counter::default(),
            bytes_written: Counter::default(),
            clients: Gauge::default(),
            used_bytes: Gauge::default(),
            capacity_bytes: Gauge::default(),
            dir_syncs: Counter::default(),
            dir_syncs_reported: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("sv_nfs");
        r.register("operations", "RPC calls answered, by program, procedure and NFS status", m.operations.clone());
        r.register("operation_duration_seconds", "Time to answer a call, by procedure", m.latency.clone());
        r.register("rpc_errors", "Calls refused at the RPC layer, by kind", m.rpc_errors.clone());
        r.register("read_bytes", "File data bytes read by clients", m.bytes_read.clone());
        r.register("written_bytes", "File data bytes written by clients", m.bytes_written.clone());
        r.register("connected_clients", "Open client connections", m.clients.clone());
        r.register("used_bytes", "Logical bytes of file data in the export", m.used_bytes.clone());
        r.register("capacity_bytes", "Capacity of the export (0: unlimited)", m.capacity_bytes.clone());
        r.register(
            "directory_syncs",
            "Directory syncs made for namespace changes (the writer's scratch trees are synced together)",
            m.dir_syncs.clone(),
        );
        m
    }

    /// Brings `dir_syncs` up to the export's count `now` (calls finish in any order: each sync
    /// is added once).
    pub fn dir_syncs_seen(&self, now: u64) {
        let before = self.dir_syncs_reported.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        if now > before {
            self.dir_syncs.inc_by(now - before);
        }
    }

    pub fn rpc_error(&self, kind: &'static str) {
        self.rpc_errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub fn operation(&self, program: &'static str, procedure: &'static str, status: &str, took: Duration) {
        self.operations.get_or_create(&OpLabels { program, procedure, status: status.to_string() }).inc();
        self.latency.get_or_create(&ProcLabels { procedure }).observe(took.as_secs_f64());
    }
}
