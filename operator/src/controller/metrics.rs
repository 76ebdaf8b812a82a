//! Prometheus metrics of the operator.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::{Phase, VolumeKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// The child's kind.
    pub kind: String,
    /// `applied`, or `unchanged` when the cache already held it and nothing was sent.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub kind: String,
    pub phase: String,
}

pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    applies: Family<ApplyLabels, Counter>,
    volumes: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    phases: Mutex<BTreeMap<(VolumeKind, String), Phase>>,
}

impl Metrics {
    /// Creates the metrics and registers them under `sharedvolume_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            errors: Family::default(),
            applies: Family::default(),
            volumes: Family::default(),
            leader: Gauge::default(),
            phases: Mutex::new(BTreeMap::new()),
        };
        let r = registry.sub_registry_with_prefix("sharedvolume");
        r.register("reconciles", "Reconciliations run", metrics.reconciles.clone());
        r.register("reconcile_duration_seconds", "Time one reconciliation took", metrics.reconcile_duration.clone());
        r.register("reconcile_errors", "Failed reconciliations by reason", metrics.errors.clone());
        r.register(
            "child_applies",
            "Planned children by kind: applied, or unchanged (already held, nothing sent)",
            metrics.applies.clone(),
        );
        r.register("volumes", "Volumes by kind and phase", metrics.volumes.clone());
        r.register("leader", "1 while this replica holds the leader lease", metrics.leader.clone());
        metrics
    }

    pub fn observe_reconcile(&self, kind: VolumeKind, took: Duration) {
        let labels = KindLabels { kind: kind.as_str().to_string() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn observe_apply(&self, kind: &str, wrote: bool) {
        let result = if wrote { "applied" } else { "unchanged" };
        self.applies.get_or_create(&ApplyLabels { kind: kind.to_string(), result: result.to_string() }).inc();
    }

    pub fn observe_error(&self, kind: VolumeKind, reason: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.as_str().to_string(), reason: reason.to_string() }).inc();
    }

    /// Records a volume's phase (or its removal, with `None`) and refreshes the per-phase gauges.
    pub fn set_phase(&self, kind: VolumeKind, key: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Some(p) => phases.insert((kind, key.to_string()), p),
            None => phases.remove(&(kind, key.to_string())),
        };
        for k in VolumeKind::ALL {
            for p in Phase::ALL {
                let count = phases.iter().filter(|((vk, _), vp)| *vk == k && **vp == p).count();
                self.volumes
                    .get_or_create(&PhaseLabels { kind: k.as_str().to_string(), phase: p.as_str().to_string() })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}
