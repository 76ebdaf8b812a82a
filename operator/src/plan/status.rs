//! Status, conditions and Events computed from what was observed.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use super::{
    ConsumerPod, FAILED_REQUEUE, FAILED_REQUEUE_MAX, Lookup, NFS_PORT, Observed, PlanContext, Problems, RESYNC_PERIOD,
    WAIT_REQUEUE, time,
};
use crate::api::{Phase, SyncStatus, VolumeStatus, condition, sync_result};
use crate::validation::{ServerMode, Validation};

/// An Event to publish about the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    /// CamelCase reason, e.g. `Ready`, `SyncFailed`.
    pub reason: String,
    pub note: String,
}

impl PlannedEvent {
    fn normal(reason: &str, note: impl Into<String>) -> Self {
        Self { warning: false, reason: reason.to_string(), note: note.into() }
    }

    fn warning(reason: &str, note: impl Into<String>) -> Self {
        Self { warning: true, reason: reason.to_string(), note: note.into() }
    }
}

pub(crate) struct Outcome {
    pub status: VolumeStatus,
    pub requeue_after: Duration,
}

struct ConditionValue {
    status: bool,
    reason: &'static str,
    message: String,
}

impl ConditionValue {
    /// Messages quote the syncer's errors and the spec's URLs: credentials in a URL are scrubbed
    /// here, whatever produced the text.
    fn new(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = crate::redact::scrub_userinfo(&message).into_owned();
        Self { status, reason, message }
    }
}

pub(crate) fn compute(
    ctx: &PlanContext<'_>,
    validation: &Validation,
    problems: &Problems,
    server_address: Option<&str>,
    consumer_namespaces: &BTreeSet<String>,
) -> Outcome {
    let o = ctx.observed;
    let generation = o.generation;
    let mut status = VolumeStatus {
        sync: o.status.sync.clone(),
        observed_generation: generation,
        conditions: o.status.conditions.clone(),
        consumer_namespaces: consumer_namespaces.iter().cloned().collect(),
        excluded_namespaces: ctx
            .disallowed_consumers()
            .iter()
            .map(|p| p.namespace.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        persistent_volume_claim_name: Some(ctx.names.syncer_storage()),
        persistent_volume_name: Some(ctx.names.syncer_storage()),
        ..VolumeStatus::default()
    };
    if let ServerMode::Managed { .. } = ctx.mode {
        status.service_name = Some(ctx.names.nfs_server());
    }
    // The mount address never changes once known; keep the recorded one while the Service is gone.
    status.nfs_server_address = server_address.map(str::to_string).or_else(|| o.status.nfs_server_address.clone());

    let nfs = nfs_condition(ctx, server_address);
    let synced = synced_condition(o);
    let (phase, message) = phase_and_message(ctx, validation, problems, &nfs, &synced);

    let (phase, message) = if o.deleting {
        status.blocking_pods = o.consumer_pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        let previous = o.status.phase().unwrap_or(phase);
        let message = if status.blocking_pods.is_empty() {
            format!("deleting: removing {} objects the volume created", o.owned.len())
        } else {
            format!(
                "deleting: waiting for {} pod(s) to stop using the volume: {}",
                status.blocking_pods.len(),
                status.blocking_pods.join(", ")
            )
        };
        (previous, message)
    } else {
        (phase, message)
    };

    let ready = if o.deleting {
        ConditionValue::new(false, "Deleting", message.clone())
    } else {
        ConditionValue::new(phase == Phase::Ready, phase_reason(phase), message.clone())
    };
    for (type_, value) in [(condition::READY, ready), (condition::NFS_SERVER_READY, nfs), (condition::SYNCED, synced)] {
        set_condition(&mut status.conditions, type_, value.status, value.reason, &value.message, generation, o.now);
    }
    status.phase = Some(phase.as_str().to_string());
    status.message = Some(crate::redact::scrub_userinfo(&message).into_owned());

    let requeue_after = if o.deleting {
        WAIT_REQUEUE
    } else {
        match phase {
            Phase::Failed => failed_requeue(&status.conditions, o.now),
            Phase::Pending | Phase::Preparing => WAIT_REQUEUE,
            Phase::Ready => RESYNC_PERIOD,
        }
    };
    Outcome { status, requeue_after }
}

/// A Failed volume is checked again after as long as it has not been Ready, within
/// [`FAILED_REQUEUE`] and [`FAILED_REQUEUE_MAX`]: what it waits for (a Secret, a StorageClass, a
/// namespace) is not watched, so each check reads it from the API server, and a volume left
/// Failed must not cost that every 30 s for ever. An edit of the volume is reconciled at once.
fn failed_requeue(conditions: &[Condition], now: Timestamp) -> Duration {
    let failing = conditions
        .iter()
        .find(|c| c.type_ == condition::READY && c.status == "False")
        .map(|c| now.duration_since(c.last_transition_time.0).unsigned_abs())
        .unwrap_or_default();
    failing.clamp(FAILED_REQUEUE, FAILED_REQUEUE_MAX)
}

fn phase_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Preparing => "Preparing",
        Phase::Ready => "Ready",
        Phase::Failed => "Failed",
    }
}

fn phase_and_message(
    ctx: &PlanContext<'_>,
    validation: &Validation,
    problems: &Problems,
    nfs: &ConditionValue,
    synced: &ConditionValue,
) -> (Phase, String) {
    let o = ctx.observed;
    if !validation.is_valid() {
        return (Phase::Failed, format!("invalid spec: {}", validation.summary()));
    }
    if problems.any() {
        let mut reasons = Vec::new();
        if problems.resource_namespace_missing {
            reasons.push(format!(
                "namespace {} not found; create it or change spec.resourceNamespace",
                ctx.resource_namespace
            ));
        }
        if problems.storage_class_missing {
            reasons.push(format!(
                "StorageClass {} not found; create it or fix spec.storageClassName",
                o.spec.storage_class_name.as_deref().unwrap_or_default()
            ));
        }
        if problems.external_service_missing
            && let ServerMode::ExternalService { name, namespace, .. } = &ctx.mode
        {
            reasons.push(format!(
                "NFS server Service {}/{name} not found; fix spec.nfsServer.name/namespace",
                namespace.as_deref().unwrap_or(&ctx.resource_namespace)
            ));
        }
        reasons.extend(problems.missing_credentials.iter().cloned());
        return (Phase::Failed, reasons.join("; "));
    }
    if !nfs.status {
        return (Phase::Pending, nfs.message.clone());
    }
    let published = o.status.sync.as_ref().is_some_and(|s| s.last_sync_time.is_some());
    if o.spec.has_source() && !published {
        return (Phase::Preparing, synced.message.clone());
    }
    let message = if o.spec.has_source() { format!("serving; {}", synced.message) } else { "serving".to_string() };
    (Phase::Ready, message)
}

fn nfs_condition(ctx: &PlanContext<'_>, server_address: Option<&str>) -> ConditionValue {
    let o = ctx.observed;
    match &ctx.mode {
        ServerMode::Managed { .. } => {
            let server = ctx.names.nfs_server();
            match (o.nfs.statefulset_ready, server_address) {
                (Some(ready), Some(ip)) if ready >= 1 => {
                    ConditionValue::new(true, "Ready", format!("NFS server {server} serves at {ip}:{NFS_PORT}"))
                }
                (None, _) => ConditionValue::new(false, "Creating", format!("creating NFS server {server}")),
                _ if o.nfs.data_claim_phase.as_deref().is_some_and(|p| p != "Bound") => ConditionValue::new(
                    false,
                    "WaitingForStorage",
                    format!("waiting for PVC {} to be bound", ctx.names.nfs_data_claim()),
                ),
                (_, None) => ConditionValue::new(
                    false,
                    "WaitingForAddress",
                    format!("waiting for Service {server} to get a ClusterIP"),
                ),
                _ => {
                    let why = o.nfs.pod_problem.as_deref().map(|p| format!(": {p}")).unwrap_or_default();
                    ConditionValue::new(
                        false,
                        "NotReady",
                        format!("waiting for NFS server {server} to become ready{why}"),
                    )
                }
            }
        }
        ServerMode::ExternalUrl { host, path } => {
            ConditionValue::new(true, "External", format!("using external NFS server {host}:{path}"))
        }
        ServerMode::ExternalService { name, .. } => match (&o.external_service, server_address) {
            (_, Some(ip)) => ConditionValue::new(true, "External", format!("using NFS server Service {name} at {ip}")),
            (Lookup::Missing, None) => {
                ConditionValue::new(false, "ServiceNotFound", format!("NFS server Service {name} not found"))
            }
            _ => ConditionValue::new(
                false,
                "WaitingForAddress",
                format!("waiting for Service {name} to get a ClusterIP"),
            ),
        },
    }
}

fn synced_condition(o: &Observed) -> ConditionValue {
    if !o.spec.has_source() {
        return ConditionValue::new(true, "NoSource", "the volume has no source");
    }
    match &o.status.sync {
        None | Some(SyncStatus { last_result: None, .. }) => {
            if o.syncer_ready.unwrap_or(0) >= 1 {
                ConditionValue::new(false, "Pending", "waiting for the first sync")
            } else {
                let why = o.syncer_problem.as_deref().map(|p| format!(": {p}")).unwrap_or_default();
                ConditionValue::new(false, "Pending", format!("waiting for the syncer to start{why}"))
            }
        }
        Some(sync) if sync.last_result.as_deref() == Some(sync_result::FAILED) => {
            let failures = sync.consecutive_failures.unwrap_or(1);
            let error = sync.last_error.as_deref().unwrap_or("unknown error");
            ConditionValue::new(false, "SyncFailed", format!("{failures} consecutive failed sync(s): {error}"))
        }
        Some(sync) => {
            let current = match (sync.observed_generation, o.generation) {
                (Some(seen), Some(generation)) => seen >= generation,
                _ => true,
            };
            let revision = sync.revision.as_deref().unwrap_or("unknown");
            if current {
                ConditionValue::new(true, "Synced", format!("revision {revision} is published"))
            } else {
                ConditionValue::new(
                    false,
                    "SourceChanged",
                    format!("revision {revision} is published; waiting for a sync of the changed source"),
                )
            }
        }
    }
}

/// Sets a condition, keeping `lastTransitionTime` when its status does not flip. Conditions keep a
/// stable order (the order they were first set).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let status_text = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status_text {
                existing.last_transition_time = time(now);
                existing.status = status_text.to_string();
            }
            existing.reason = reason.to_string();
            existing.message = message.to_string();
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status_text.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation,
            last_transition_time: time(now),
        }),
    }
}

/// Events for what changed between the observed status and the planned one.
pub(crate) fn events(
    o: &Observed,
    new: &VolumeStatus,
    validation: &Validation,
    disallowed: &[&ConsumerPod],
) -> Vec<PlannedEvent> {
    let mut out = Vec::new();
    let old = &o.status;
    let new_phase = new.phase();
    let message = new.message.clone().unwrap_or_default();
    if old.phase() != new_phase || (new_phase == Some(Phase::Failed) && old.message != new.message) {
        match new_phase {
            Some(Phase::Failed) => out.push(PlannedEvent::warning("Failed", message.clone())),
            Some(phase) => out.push(PlannedEvent::normal(phase.as_str(), message.clone())),
            None => {}
        }
    }
    if o.deleting && old.blocking_pods != new.blocking_pods && !new.blocking_pods.is_empty() {
        out.push(PlannedEvent::normal("DeletionBlocked", message.clone()));
    }
    let flipped = |type_: &str| {
        let before = old.condition(type_).map(|c| c.status.as_str());
        let after = new.condition(type_).map(|c| c.status.as_str());
        (before != after).then(|| new.condition(type_)).flatten()
    };
    if let Some(c) = flipped(condition::NFS_SERVER_READY) {
        if c.status == "True" {
            out.push(PlannedEvent::normal("NfsServerReady", c.message.clone()));
        } else if old.condition(condition::NFS_SERVER_READY).is_some_and(|c| c.status == "True") {
            out.push(PlannedEvent::warning("NfsServerNotReady", c.message.clone()));
        }
    }
    if o.spec.has_source() {
        if let Some(c) = flipped(condition::SYNCED) {
            if c.reason == "SyncFailed" {
                out.push(PlannedEvent::warning("SyncFailed", c.message.clone()));
            } else if c.status == "True" {
                out.push(PlannedEvent::normal("Synced", c.message.clone()));
            }
        } else if let Some(c) = new.condition(condition::SYNCED)
            && c.status == "True"
            // The syncer writes `status.sync` itself, so the old and new statuses both carry its
            // latest revision; what the operator last reported is its own condition's message,
            // which names the revision.
            && old.condition(condition::SYNCED).is_some_and(|before| before.message != c.message)
        {
            out.push(PlannedEvent::normal("Synced", c.message.clone()));
        }
    }
    if old.observed_generation != new.observed_generation {
        for warning in &validation.warnings {
            out.push(PlannedEvent::warning("SpecWarning", warning.clone()));
        }
    }
    // Once per newly excluded namespace, not on every reconcile.
    for pod in disallowed.iter().filter(|p| !old.excluded_namespaces.contains(&p.namespace)) {
        out.push(PlannedEvent::warning(
            "NamespaceNotAllowed",
            format!(
                "pod {}/{} asks for this volume, but namespace {} may not mount it (spec.namespaceSelector)",
                pod.namespace, pod.name, pod.namespace
            ),
        ));
    }
    out
}
