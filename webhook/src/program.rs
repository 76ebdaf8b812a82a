//! The `sv-webhook` command line and its two entry points, shared by `main.rs` and the
//! simulation: [`serve`] (the admission server) and [`review`] (one AdmissionReview answered
//! offline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use sv_api::clock::SharedClock;
use sv_api::{ClusterSharedVolume, SharedVolume, components, labels};
use sv_common::telemetry::{self, Health, LogFormat};
use tokio_util::sync::CancellationToken;

use crate::certs::keeper::CertKeeper;
use crate::certs::{CertSource, Lifetimes, RELOAD_PERIOD, SelfIssued};
use crate::cluster::{ClaimState, ClusterView, LoadError, Snapshot};
use crate::metrics::WebhookMetrics;
use crate::mutate::MutateSettings;
use crate::server::{Creator, Webhook, answer, router};
use crate::tls::{ReloadableCert, TlsListener, server_config};

#[derive(Debug, Parser)]
#[command(
    name = "sv-webhook",
    version,
    about = "SharedVolume admission webhook: mounts shared volumes into annotated pods and validates volumes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /mutate and /validate over HTTPS.
    Serve(ServeArgs),
    /// Answer one AdmissionReview offline: the response on stdout, the objects it would create on
    /// stderr. Exit 0 for any answer, allowed or denied.
    Review(ReviewArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// HTTPS port of /mutate, /validate, /healthz and /readyz.
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Plain HTTP port of /metrics, /healthz and /readyz.
    #[arg(long, default_value_t = 8080)]
    pub metrics_port: u16,
    /// The webhook's namespace (its Service and certificate Secret live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "shared-volume-controller-system")]
    pub namespace: String,
    /// The webhook's Service: the serving certificate names it.
    #[arg(long, default_value = "sv-webhook")]
    pub service: String,
    /// Secret holding the self-issued CA and serving certificate.
    #[arg(long, default_value = "sv-webhook-tls")]
    pub secret: String,
    /// MutatingWebhookConfiguration whose caBundle the webhook keeps current.
    #[arg(long, default_value = "sharedvolume-webhook")]
    pub mutating_configuration: String,
    /// ValidatingWebhookConfiguration whose caBundle the webhook keeps current.
    #[arg(long, default_value = "sharedvolume-webhook")]
    pub validating_configuration: String,
    /// Serve this certificate (PEM) instead of issuing one, e.g. cert-manager's `tls.crt`;
    /// re-read when it changes. Needs --tls-key-file.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Mount options of PVs of external NFS servers; must equal the operator's
    /// --external-mount-options (both create consumer PVs, which cannot change afterwards).
    #[arg(long, value_delimiter = ',')]
    pub external_mount_options: Vec<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Lifetime of a self-issued CA (renewed with a third of it left).
    #[arg(long, default_value = "1095d", value_parser = parse_lifetime)]
    pub ca_lifetime: std::time::Duration,
    /// Lifetime of a self-issued serving certificate (renewed with a third of it left).
    #[arg(long, default_value = "90d", value_parser = parse_lifetime)]
    pub leaf_lifetime: std::time::Duration,
    /// How long a replaced CA stays in the caBundle after the new leaf is issued.
    #[arg(long, default_value = "1d", value_parser = parse_lifetime)]
    pub ca_overlap: std::time::Duration,
}

fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    sv_api::units::parse_duration(text).map_err(|e| e.to_string())
}

impl ServeArgs {
    pub fn cert_source(&self) -> CertSource {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => CertSource::Files { cert: cert.clone(), key: key.clone() },
            _ => CertSource::SelfIssued(SelfIssued {
                namespace: self.namespace.clone(),
                secret: self.secret.clone(),
                service: self.service.clone(),
                mutating_configuration: self.mutating_configuration.clone(),
                validating_configuration: self.validating_configuration.clone(),
                lifetimes: Lifetimes { ca: self.ca_lifetime, leaf: self.leaf_lifetime, overlap: self.ca_overlap },
            }),
        }
    }

    pub fn mutate_settings(&self) -> MutateSettings {
        MutateSettings {
            external_mount_options: self
                .external_mount_options
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReviewArgs {
    /// YAML or JSON files with the cluster state: SharedVolumes, ClusterSharedVolumes (with their
    /// status), Namespaces (with labels), existing PersistentVolumeClaims. Repeatable.
    #[arg(long = "cluster", value_name = "FILE")]
    pub cluster: Vec<PathBuf>,
    /// The AdmissionReview (JSON) as the API server sends it.
    pub review: PathBuf,
    /// The endpoint to ask; by default /mutate for pods and /validate for volumes.
    #[arg(long, value_parser = ["mutate", "validate"])]
    pub endpoint: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pub external_mount_options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Review(#[from] crate::review::BadReview),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// What `review` printed: the AdmissionReview answer and the objects it would create.
pub struct ReviewOutput {
    pub response: serde_json::Value,
    pub created: Vec<serde_json::Value>,
}

/// Answers one AdmissionReview against cluster state read from files.
pub async fn review(args: &ReviewArgs) -> Result<ReviewOutput, ProgramError> {
    let mut snapshot = Snapshot::default();
    for file in &args.cluster {
        snapshot.load_file(file)?;
    }
    let body = std::fs::read(&args.review)
        .map_err(|source| ProgramError::Read { path: args.review.display().to_string(), source })?;
    let request = crate::review::decode(&body)?;
    let endpoint = match args.endpoint.as_deref() {
        Some(e) => e.to_string(),
        None if request.kind.kind == "Pod" => "mutate".to_string(),
        None => "validate".to_string(),
    };
    let created = Arc::new(Mutex::new(Vec::new()));
    let webhook = Webhook {
        cluster: snapshot,
        settings: MutateSettings { external_mount_options: args.external_mount_options.clone() },
        creator: Creator::Record(created.clone()),
        metrics: WebhookMetrics::register(&mut Registry::default()),
        health: Health::new(),
    };
    let (response, _) = answer(&webhook, &endpoint, &request).await;
    let created = created
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flat_map(|s| {
            let mut pv = serde_json::to_value(&s.volume).unwrap_or_default();
            pv["apiVersion"] = "v1".into();
            pv["kind"] = "PersistentVolume".into();
            let mut pvc = serde_json::to_value(&s.claim).unwrap_or_default();
            pvc["apiVersion"] = "v1".into();
            pvc["kind"] = "PersistentVolumeClaim".into();
            [pv, pvc]
        })
        .collect();
    Ok(ReviewOutput { response: crate::review::encode(response), created })
}

/// The cluster as the watches show it.
#[derive(Clone)]
pub struct WatchedCluster {
    pub shared_volumes: Store<SharedVolume>,
    pub cluster_shared_volumes: Store<ClusterSharedVolume>,
    pub namespaces: Store<Namespace>,
    pub claims: Store<PersistentVolumeClaim>,
}

impl ClusterView for WatchedCluster {
    fn shared_volume(&self, namespace: &str, name: &str) -> Option<SharedVolume> {
        self.shared_volumes.get(&ObjectRef::new(name).within(namespace)).map(|v| (*v).clone())
    }
    fn cluster_shared_volume(&self, name: &str) -> Option<ClusterSharedVolume> {
        self.cluster_shared_volumes.get(&ObjectRef::new(name)).map(|v| (*v).clone())
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(&ObjectRef::new(namespace)).map(|n| n.labels().clone())
    }
    fn claim_state(&self, namespace: &str, name: &str) -> ClaimState {
        self.claims.get(&ObjectRef::new(name).within(namespace)).map_or(ClaimState::Absent, |c| ClaimState::of(&c))
    }
}

/// Starts a watch of `api` into a store; the task ends with `stop`.
fn watched<K>(api: Api<K>, config: watcher::Config, stop: &CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    use futures::StreamExt as _;
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff()).applied_objects();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => tracing::debug!(%error, "watch"),
                    None => return,
                },
            }
        }
    });
    reader
}

/// Runs the webhook until `stop`: watches, certificate, HTTPS on `https`, metrics on `http`.
pub async fn serve<L, M>(
    args: ServeArgs,
    client: Client,
    clock: SharedClock,
    https: L,
    http: M,
    stop: CancellationToken,
) -> Result<(), ProgramError>
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + std::fmt::Debug + 'static,
    M: axum::serve::Listener,
    M::Addr: std::fmt::Debug,
{
    let mut registry = Registry::default();
    let metrics = WebhookMetrics::register(&mut registry);
    let health = Health::new();
    telemetry::spawn_endpoints(http, registry, health.clone(), stop.clone().cancelled_owned());

    let claims = watcher::Config::default().labels(&format!("{}={}", labels::COMPONENT, components::CONSUMER_STORAGE));
    let cluster = WatchedCluster {
        shared_volumes: watched(Api::all(client.clone()), watcher::Config::default(), &stop),
        cluster_shared_volumes: watched(Api::all(client.clone()), watcher::Config::default(), &stop),
        namespaces: watched(Api::all(client.clone()), watcher::Config::default(), &stop),
        claims: watched(Api::all(client.clone()), claims, &stop),
    };

    let cert = Arc::new(ReloadableCert::default());
    match args.cert_source() {
        CertSource::SelfIssued(settings) => {
            let keeper =
                CertKeeper { client: client.clone(), settings, clock, cert: cert.clone(), metrics: metrics.clone() };
            tokio::spawn(keeper.run(stop.clone()));
        }
        CertSource::Files { cert: cert_file, key: key_file } => {
            tokio::spawn(reload_files(cert_file, key_file, cert.clone(), stop.clone()));
        }
    }

    let webhook = Arc::new(Webhook {
        cluster: cluster.clone(),
        settings: args.mutate_settings(),
        creator: Creator::Api(client),
        metrics,
        health: health.clone(),
    });
    // Ready once the first certificate is served and every watch has listed.
    let ready = {
        let (cluster, cert, health, stop) = (cluster, cert.clone(), health.clone(), stop.clone());
        async move {
            let lists = async {
                let _ = tokio::join!(
                    cluster.shared_volumes.wait_until_ready(),
                    cluster.cluster_shared_volumes.wait_until_ready(),
                    cluster.namespaces.wait_until_ready(),
                    cluster.claims.wait_until_ready(),
                );
                while !cert.is_loaded() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = lists => {
                    health.set_ready(true);
                    tracing::info!("ready: watches listed, certificate loaded");
                }
            }
        }
    };
    tokio::spawn(ready);
    let listener = TlsListener::new(https, server_config(cert), stop.clone());
    tracing::info!(port = args.port, "serving admission reviews over HTTPS");
    let drain = {
        let (health, stop) = (health.clone(), stop.clone());
        async move {
            stop.cancelled().await;
            // Not ready first, so endpoints drop the pod while in-flight reviews finish.
            health.set_ready(false);
        }
    };
    axum::serve(listener, router(webhook)).with_graceful_shutdown(drain).await.map_err(ProgramError::Serve)
}

/// Re-reads certificate files (for example a cert-manager Secret mounted in the pod) and serves
/// them from the next handshake on.
async fn reload_files(cert_file: PathBuf, key_file: PathBuf, cert: Arc<ReloadableCert>, stop: CancellationToken) {
    let mut loaded: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        match (std::fs::read(&cert_file), std::fs::read(&key_file)) {
            (Ok(c), Ok(k)) if loaded.as_ref() != Some(&(c.clone(), k.clone())) => match cert.set_pem(&c, &k) {
                Ok(()) => {
                    tracing::info!(file = %cert_file.display(), "loaded the serving certificate");
                    loaded = Some((c, k));
                }
                Err(error) => {
                    tracing::warn!(%error, file = %cert_file.display(), "the certificate files cannot be served")
                }
            },
            (Ok(_), Ok(_)) => {}
            (Err(error), _) | (_, Err(error)) => tracing::warn!(%error, "reading the certificate files"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_PERIOD) => {}
        }
    }
}
