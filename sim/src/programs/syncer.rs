//! `sv-syncer run` on a simulated host: the same loop as the program's `main` (watch the volume,
//! sync on schedule, publish, report on status, serve probes and metrics), with the simulation's
//! clock, API client and sources.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use sv_operator::api::VolumeKind;
use sv_operator::clock::SharedClock;
use sv_operator::telemetry::{self, Health};
use sv_syncer::report::{StatusWriter, SyncMetrics};
use sv_syncer::run::{LeaseIdentity, Syncer, SyncerConfig, elect, watch_volume};
use tokio_util::sync::CancellationToken;

use super::pod::PodContext;
use super::sources::SimSources;
use crate::net::{SimListener, kube_client};
use crate::world::{API_HOST, API_PORT};

struct RunSettings {
    config: SyncerConfig,
    http_port: u16,
    lease: Option<LeaseIdentity>,
}

/// `run`'s settings from the pod's arguments and environment, as the program reads them.
fn settings(context: &PodContext) -> Result<RunSettings, String> {
    if context.args.first().map(String::as_str) != Some("run") || context.args.len() > 1 {
        return Err(format!("usage: sv-syncer run; got {:?}", context.args));
    }
    let env = |key: &str| context.env.get(key).filter(|v| !v.is_empty());
    let required = |key: &str| env(key).ok_or(format!("error: {key} is required"));
    let kind_name = required("SV_VOLUME_KIND")?;
    let kind = VolumeKind::parse(kind_name).ok_or(format!("unknown volume kind {kind_name:?}"))?;
    let name = required("SV_VOLUME_NAME")?.clone();
    let namespace = env("SV_VOLUME_NAMESPACE").cloned().filter(|_| kind == VolumeKind::SharedVolume);
    let data_dir = context.host_path(env("SV_DATA_DIR").map_or("/data", String::as_str))?;
    let credentials_dir = env("SV_CREDENTIALS_DIR").map(|d| context.host_path(d)).transpose()?;
    let extra_ca_pem = match env("SV_CA_BUNDLE") {
        Some(path) => Some(std::fs::read(context.host_path(path)?).map_err(|e| format!("reading {path}: {e}"))?),
        None => None,
    };
    let http_port = match env("SV_HTTP_PORT") {
        Some(port) => port.parse().map_err(|e| format!("SV_HTTP_PORT: {e}"))?,
        None => 8080,
    };
    let lease = match (env("SV_LEASE_NAME"), env("SV_POD_NAME"), env("SV_POD_NAMESPACE")) {
        (Some(lease_name), Some(pod_name), Some(pod_namespace)) => Some(LeaseIdentity {
            lease_name: lease_name.clone(),
            pod_name: pod_name.clone(),
            pod_namespace: pod_namespace.clone(),
        }),
        (Some(_), _, _) => return Err("error: SV_LEASE_NAME needs SV_POD_NAME and SV_POD_NAMESPACE".to_string()),
        _ => None,
    };
    Ok(RunSettings {
        config: SyncerConfig { kind, name, namespace, data_dir, credentials_dir, extra_ca_pem },
        http_port,
        lease,
    })
}

pub(super) async fn run(context: PodContext, clock: SharedClock, stop: CancellationToken) -> Result<(), String> {
    let RunSettings { config, http_port, lease } = settings(&context)?;
    let mut registry = Registry::default();
    let metrics = SyncMetrics::register(&mut registry);
    let health = Health::new();
    let http = SimListener::bind(http_port).await.map_err(|e| format!("binding the HTTP port: {e}"))?;
    tokio::spawn(telemetry::serve(
        http,
        telemetry::router(Arc::new(registry), health.clone()),
        stop.clone().cancelled_owned(),
    ));
    let client = kube_client(API_HOST, API_PORT).map_err(|e| e.to_string())?;
    let (kind, name, namespace) = (config.kind, config.name.clone(), config.namespace.clone());
    let (views, watch_task) = watch_volume(client.clone(), kind, &name, namespace.as_deref());
    let watching = tokio::spawn(watch_task);
    let status = StatusWriter::new(client.clone(), kind, &name, namespace.as_deref());
    let mut syncer = Syncer::new(config, Arc::new(SimSources), clock.clone(), metrics, health, Some(status));
    if let Some(identity) = &lease {
        syncer = syncer.with_fence(elect(client, identity, clock, stop.clone()));
    }
    let result = syncer.run(views, stop).await;
    watching.abort();
    result.map_err(|e| e.to_string())
}
