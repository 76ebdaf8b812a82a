//! The `sv-syncer` program, shared by the binary and the simulation: both parse the same flags
//! (and environment variables) with [`Cli`] and run [`run`], so the simulation runs the settings
//! and the loop a real syncer pod gets. The caller brings what differs between the two: the API
//! client, the clock, the sources' network, the HTTP socket.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use sv_api::VolumeKind;
use sv_api::clock::SharedClock;
use sv_common::telemetry::{self, Health, HttpListener, LogFormat};
use tokio_util::sync::CancellationToken;

use crate::error::SyncError;
use crate::report::{StatusWriter, SyncMetrics};
use crate::run::{LeaseIdentity, Syncer, SyncerConfig, elect, watch_volume};
use crate::source::SourceFactory;
use crate::volume_fs::{LocalFs, NfsFs, NfsFsConfig, VolumeFs};

#[derive(Parser, Debug)]
#[command(
    name = "sv-syncer",
    version,
    about = "SharedVolume syncer: mirrors a Git, S3, SSH/SFTP or HTTP source into the volume"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SV_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Follow the volume and keep it in sync (the syncer pod's command).
    Run(RunArgs),
    /// Sync once from a volume manifest, without Kubernetes (for debugging and benchmarks).
    Once(OnceArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[arg(long, env = "SV_VOLUME_KIND", value_parser = parse_kind)]
    pub kind: VolumeKind,
    #[arg(long, env = "SV_VOLUME_NAME")]
    pub name: String,
    /// The SharedVolume's namespace (ignored for a ClusterSharedVolume).
    #[arg(long, env = "SV_VOLUME_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where the volume is mounted.
    #[arg(long, env = "SV_DATA_DIR", default_value = "/data")]
    pub data_dir: PathBuf,
    /// Where the credentials Secret is mounted.
    #[arg(long, env = "SV_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// PEM file of extra CA certificates to trust.
    #[arg(long, env = "SV_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, env = "SV_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// The volume's Lease: only the syncer pod holding it publishes. Without it this syncer
    /// assumes it is the only one.
    #[arg(long, env = "SV_LEASE_NAME", requires_all = ["pod_name", "pod_namespace"])]
    pub lease_name: Option<String>,
    /// This pod's name, its identity for the Lease.
    #[arg(long, env = "SV_POD_NAME")]
    pub pod_name: Option<String>,
    /// This pod's namespace, where the Lease is.
    #[arg(long, env = "SV_POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct OnceArgs {
    /// A manifest holding one SharedVolume or ClusterSharedVolume.
    #[arg(long)]
    pub spec: PathBuf,
    /// The directory to sync into (with `--nfs`: the path the volume is shown at, any absolute
    /// path).
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub credentials_dir: Option<PathBuf>,
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    /// Write through the syncer's own NFSv3 client to this server (`host:port`) instead of
    /// system calls on a mounted `--data-dir`.
    #[arg(long)]
    pub nfs: Option<std::net::SocketAddr>,
    /// With `--nfs`: the exported path to mount (sv-nfs's writer mounts `/.sv-writer-<token>`).
    #[arg(long, default_value = "/", requires = "nfs")]
    pub nfs_export: String,
    /// With `--nfs`: directories staged at once (each on a thread, so that calls overlap).
    #[arg(long, default_value_t = 16, requires = "nfs")]
    pub nfs_parallel_dirs: usize,
    /// With `--nfs`: a local directory for what must be on a local file system (archives being
    /// unpacked, the git cache, pinned host keys).
    #[arg(long, default_value = "/tmp/sv-syncer", requires = "nfs")]
    pub nfs_local_dir: PathBuf,
}

impl OnceArgs {
    /// How `once` reaches the volume: `--nfs`, or system calls on `--data-dir`.
    pub fn volume_fs(&self) -> std::io::Result<Arc<dyn VolumeFs>> {
        let Some(server) = self.nfs else {
            return Ok(LocalFs::shared());
        };
        let mut client = sv_nfs_client::ClientConfig::new(server, self.nfs_export.clone());
        client.connections = self.nfs_parallel_dirs.max(1);
        client.retry_delay = std::time::Duration::ZERO;
        client.retries = 3;
        let config = NfsFsConfig {
            client,
            mount_point: self.data_dir.clone(),
            local_dir: self.nfs_local_dir.clone(),
            parallel_dirs: self.nfs_parallel_dirs,
        };
        Ok(Arc::new(NfsFs::mount(sv_nfs_client::blocking::BlockingTcpConnector, config)?))
    }
}

fn parse_kind(s: &str) -> Result<VolumeKind, String> {
    VolumeKind::parse(s).ok_or_else(|| format!("{s:?} is not SharedVolume or ClusterSharedVolume"))
}

/// Why `sv-syncer run` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading --ca-bundle {path}: {source}")]
    CaBundle { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Reads `--ca-bundle`.
pub fn read_ca_bundle(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, RunError> {
    path.map(|p| std::fs::read(p).map_err(|source| RunError::CaBundle { path: p.clone(), source })).transpose()
}

/// What the host gives the program.
pub struct Host<H> {
    pub client: kube::Client,
    pub clock: SharedClock,
    /// How sources are reached: the network in a real pod, simulated servers in the simulation.
    pub sources: Arc<dyn SourceFactory>,
    /// The HTTP port's listener (`--http-port`), already bound.
    pub http: H,
    /// How the volume at `--data-dir` is reached: system calls on the kernel's mount in a real
    /// pod ([`LocalFs`](crate::volume_fs::LocalFs)), the syncer's own NFS client in the simulation.
    pub volume_fs: Arc<dyn VolumeFs>,
    pub shutdown: CancellationToken,
}

impl RunArgs {
    /// The loop's settings; the namespace is dropped for a ClusterSharedVolume.
    pub fn config(&self) -> Result<SyncerConfig, RunError> {
        Ok(SyncerConfig {
            kind: self.kind,
            name: self.name.clone(),
            namespace: self.volume_namespace(),
            data_dir: self.data_dir.clone(),
            credentials_dir: self.credentials_dir.clone(),
            extra_ca_pem: read_ca_bundle(self.ca_bundle.as_ref())?,
        })
    }

    fn volume_namespace(&self) -> Option<String> {
        self.namespace.clone().filter(|n| !n.is_empty() && self.kind == VolumeKind::SharedVolume)
    }

    fn lease(&self) -> Option<LeaseIdentity> {
        match (&self.lease_name, &self.pod_name, &self.pod_namespace) {
            (Some(lease_name), Some(pod_name), Some(pod_namespace)) => Some(LeaseIdentity {
                lease_name: lease_name.clone(),
                pod_name: pod_name.clone(),
                pod_namespace: pod_namespace.clone(),
            }),
            _ => None,
        }
    }
}

/// `sv-syncer run`: serves `/healthz`, `/readyz` and `/metrics` on `host.http`, watches the
/// volume, and keeps it in sync (publishing only while holding the Lease when one is named)
/// until `host.shutdown`.
pub async fn run<H>(args: &RunArgs, host: Host<H>) -> Result<(), RunError>
where
    H: HttpListener,
    H::Addr: std::fmt::Debug,
{
    let config = args.config()?;
    let mut registry = Registry::default();
    let metrics = SyncMetrics::register(&mut registry);
    let health = Health::new();
    let shutdown = host.shutdown;
    let (http_addr, http) =
        telemetry::spawn_endpoints(host.http, registry, health.clone(), shutdown.clone().cancelled_owned());
    tracing::info!(volume = %args.name, %http_addr, "serving probes and metrics");
    let namespace = config.namespace.clone();
    let (views, watch_task) = watch_volume(host.client.clone(), args.kind, &args.name, namespace.as_deref());
    let watching = tokio::spawn(watch_task);
    let status = StatusWriter::new(host.client.clone(), args.kind, &args.name, namespace.as_deref());
    let mut syncer = Syncer::new(config, host.sources, host.clock.clone(), metrics, health, Some(status))
        .with_volume_fs(host.volume_fs);
    if let Some(identity) = args.lease() {
        tracing::info!(lease = %identity.lease_name, "publishing only while holding the volume's Lease");
        syncer = syncer.with_fence(elect(host.client, &identity, host.clock, shutdown.clone()));
    }
    let result = syncer.run(views, shutdown.clone()).await;
    shutdown.cancel();
    watching.abort();
    let _ = http.await;
    tracing::info!("stopped");
    Ok(result?)
}
