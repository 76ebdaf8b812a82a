//! `sv-syncer`: keeps a SharedVolume equal to its source.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use sv_api::VolumeKind;
use sv_api::clock::SystemClock;
use sv_api::manifests::{self, Manifest};
use sv_common::telemetry::{self, Health, LogFormat};
use sv_syncer::publish::Volume;
use sv_syncer::report::{StatusWriter, SyncMetrics};
use sv_syncer::run::{LeaseIdentity, Syncer, SyncerConfig, VolumeView, elect, watch_volume};
use sv_syncer::source::NetworkSources;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "sv-syncer",
    version,
    about = "SharedVolume syncer: mirrors a Git, S3, SSH/SFTP or HTTP source into the volume"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SV_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Follow the volume and keep it in sync (the syncer pod's command).
    Run(RunArgs),
    /// Sync once from a volume manifest, without Kubernetes (for debugging and benchmarks).
    Once(OnceArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[arg(long, env = "SV_VOLUME_KIND")]
    kind: String,
    #[arg(long, env = "SV_VOLUME_NAME")]
    name: String,
    #[arg(long, env = "SV_VOLUME_NAMESPACE")]
    namespace: Option<String>,
    /// Where the volume is mounted.
    #[arg(long, env = "SV_DATA_DIR", default_value = "/data")]
    data_dir: PathBuf,
    /// Where the credentials Secret is mounted.
    #[arg(long, env = "SV_CREDENTIALS_DIR")]
    credentials_dir: Option<PathBuf>,
    /// PEM file of extra CA certificates to trust.
    #[arg(long, env = "SV_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, env = "SV_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// The volume's Lease: only the syncer pod holding it publishes. Without it this syncer
    /// assumes it is the only one.
    #[arg(long, env = "SV_LEASE_NAME", requires_all = ["pod_name", "pod_namespace"])]
    lease_name: Option<String>,
    /// This pod's name, its identity for the Lease.
    #[arg(long, env = "SV_POD_NAME")]
    pod_name: Option<String>,
    /// This pod's namespace, where the Lease is.
    #[arg(long, env = "SV_POD_NAMESPACE")]
    pod_namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
struct OnceArgs {
    /// A manifest holding one SharedVolume or ClusterSharedVolume.
    #[arg(long)]
    spec: PathBuf,
    /// The directory to sync into.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    credentials_dir: Option<PathBuf>,
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    sv_syncer::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Once(args) => once(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_ca(path: Option<&PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).transpose()
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let kind = VolumeKind::parse(&args.kind).with_context(|| format!("unknown volume kind {:?}", args.kind))?;
    let namespace = args.namespace.filter(|n| !n.is_empty() && kind == VolumeKind::SharedVolume);
    let config = SyncerConfig {
        kind,
        name: args.name.clone(),
        namespace: namespace.clone(),
        data_dir: args.data_dir,
        credentials_dir: args.credentials_dir,
        extra_ca_pem: read_ca(args.ca_bundle.as_ref())?,
    };
    let mut registry = Registry::default();
    let metrics = SyncMetrics::register(&mut registry);
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.http_port)).await.context("binding the HTTP port")?;
    let http_addr = listener.local_addr().context("the HTTP port")?;
    tracing::info!(%http_addr, volume = %args.name, "serving probes and metrics");
    let http = tokio::spawn(telemetry::serve(
        listener,
        telemetry::router(Arc::new(registry), health.clone()),
        shutdown.clone().cancelled_owned(),
    ));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let (views, watch_task) = watch_volume(client.clone(), kind, &args.name, namespace.as_deref());
    tokio::spawn(watch_task);
    let status = StatusWriter::new(client.clone(), kind, &args.name, namespace.as_deref());
    let mut syncer =
        Syncer::new(config, Arc::new(NetworkSources), Arc::new(SystemClock), metrics, health, Some(status));
    if let (Some(lease_name), Some(pod_name), Some(pod_namespace)) =
        (args.lease_name, args.pod_name, args.pod_namespace)
    {
        let identity = LeaseIdentity { lease_name, pod_name, pod_namespace };
        tracing::info!(lease = %identity.lease_name, "publishing only while holding the volume's Lease");
        syncer = syncer.with_fence(elect(client, &identity, Arc::new(SystemClock), shutdown.clone()));
    }
    syncer.run(views, shutdown.clone()).await?;
    shutdown.cancel();
    let _ = http.await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn once(args: OnceArgs) -> anyhow::Result<ExitCode> {
    let manifests = manifests::load(&args.spec)?;
    let (kind, view) = manifests
        .into_iter()
        .find_map(|(_, m)| match m {
            Manifest::SharedVolume(v) => Some((VolumeKind::SharedVolume, view_of(v.as_ref()))),
            Manifest::ClusterSharedVolume(v) => Some((VolumeKind::ClusterSharedVolume, view_of(v.as_ref()))),
            _ => None,
        })
        .context("the manifest holds no volume")?;
    let config = SyncerConfig {
        kind,
        name: "once".to_string(),
        namespace: None,
        data_dir: args.data_dir.clone(),
        credentials_dir: args.credentials_dir,
        extra_ca_pem: read_ca(args.ca_bundle.as_ref())?,
    };
    let syncer = Syncer::standalone(config);
    let volume = Volume::open(&args.data_dir)?;
    match syncer.sync_once(&view, &volume).await {
        Ok(outcome) => {
            println!(
                "revision {} published={} files={} bytes={} transferred={}",
                outcome.revision, outcome.published, outcome.files, outcome.bytes, outcome.transferred
            );
            Ok(ExitCode::SUCCESS)
        }
        Err((error, redactor)) => {
            eprintln!("sync failed: {}", redactor.redact(&error.to_string()));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn view_of<V: sv_api::Volume>(volume: &V) -> VolumeView {
    VolumeView {
        spec: volume.volume_spec().clone(),
        annotations: kube::ResourceExt::annotations(volume).clone(),
        generation: volume.meta().generation,
        sync: None,
    }
}
