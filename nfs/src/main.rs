//! `sv-nfs`: serves one SharedVolume over NFSv3.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use sv_nfs::fs::{Export, ExportOptions};
use sv_nfs::health::{TcpConnector, run_probes};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::server::{NfsServer, ServerConfig};
use sv_operator::telemetry::{self, Health, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "sv-nfs", version, about = "SharedVolume NFS server: NFSv3 and MOUNT v3 on one TCP port")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a directory.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Directory to export.
    #[arg(long)]
    export: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Port of NFS, MOUNT and portmap.
    #[arg(long, default_value_t = 2049)]
    port: u16,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Bytes of file data the export may hold (0: no limit beyond the disk).
    #[arg(long, default_value_t = 0)]
    capacity_bytes: u64,
    /// Refuse every change.
    #[arg(long)]
    read_only: bool,
    /// Do not sync directories after namespace changes (faster, less durable).
    #[arg(long)]
    no_sync_namespace: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SV_LOG_FORMAT")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let Command::Serve(args) = Cli::parse().command;
    telemetry::init_logging(args.log_format);
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Allows as many open descriptors as the hard limit does; the handle cache keeps many open.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let options = ExportOptions {
        read_only: args.read_only,
        capacity: (args.capacity_bytes > 0).then_some(args.capacity_bytes),
        sync_namespace: !args.no_sync_namespace,
    };
    let export =
        Export::open(&args.export, options).with_context(|| format!("opening export {}", args.export.display()))?;
    tracing::info!(export = %args.export.display(), used_bytes = export.used_bytes(), capacity_bytes = args.capacity_bytes, read_only = args.read_only, "export opened");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut registry = Registry::default();
        let metrics = NfsMetrics::register(&mut registry);
        let health = Health::new();
        let shutdown = CancellationToken::new();
        let export = Arc::new(export);
        let root = export.root_fh().clone();
        let server = Arc::new(NfsServer::new(export, metrics, ServerConfig::new(args.port)?));

        let nfs_addr = SocketAddr::new(args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(nfs_addr).await.with_context(|| format!("binding {nfs_addr}"))?;
        let http_addr = SocketAddr::new(args.bind, args.http_port);
        let http_listener =
            tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
        let http_addr = http_listener.local_addr().unwrap_or(http_addr);
        tracing::info!(%nfs_addr, %http_addr, "serving NFSv3");

        let probe_addr =
            if args.bind.is_unspecified() { SocketAddr::from(([127, 0, 0, 1], args.port)) } else { nfs_addr };
        tokio::spawn(run_probes(TcpConnector(probe_addr), root, health.clone(), shutdown.clone()));
        let http = tokio::spawn(telemetry::serve(
            http_listener,
            telemetry::router(Arc::new(registry), health),
            shutdown.clone().cancelled_owned(),
        ));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            telemetry::shutdown_signal().await;
            tracing::info!("shutdown requested; finishing calls in progress");
            stop.cancel();
        });
        server.serve(listener, shutdown.clone()).await?;
        shutdown.cancel();
        let _ = http.await;
        tracing::info!("stopped");
        Ok(())
    })
}
