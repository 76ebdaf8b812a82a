//! `sv-nfs`: serves one SharedVolume over NFSv3.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use prometheus_client::registry::Registry;
use sv_common::telemetry::{self, Health};
use sv_nfs::fs::Export;
use sv_nfs::health::{TcpConnector, run_probes};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::program::{Cli, Command, ServeArgs};
use sv_nfs::server::{NfsServer, ServerConfig};
use tokio_util::sync::CancellationToken;

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
    let token = match &args.writer_token_file {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let options = args.export_options(token.as_deref()).map_err(anyhow::Error::msg)?;
    let identity = options.identity.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut registry = Registry::default();
        let metrics = NfsMetrics::register(&mut registry);
        // Live at once, ready only once the self-probe passes: the HTTP port opens before the
        // export's usage is counted, which on a large volume takes a while, so the liveness probe
        // does not kill a server that is still counting.
        let health = Health::new();
        let shutdown = CancellationToken::new();
        let http_addr = SocketAddr::new(args.bind, args.http_port);
        let http_listener =
            tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
        let http_addr = http_listener.local_addr().unwrap_or(http_addr);
        let http = tokio::spawn(telemetry::serve(
            http_listener,
            telemetry::router(Arc::new(registry), health.clone()),
            shutdown.clone().cancelled_owned(),
        ));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            telemetry::shutdown_signal().await;
            tracing::info!("shutdown requested; finishing calls in progress");
            stop.cancel();
        });
        tracing::info!(export = %args.export.display(), %http_addr, "counting what the export holds");
        let counting = tokio::time::Instant::now();
        let dir = args.export.clone();
        let opened = tokio::select! {
            opened = tokio::task::spawn_blocking(move || Export::open(&dir, options)) => opened,
            _ = shutdown.cancelled() => {
                let _ = http.await;
                return Ok(());
            }
        };
        let export = opened
            .context("the export's usage count stopped")?
            .with_context(|| format!("opening export {}", args.export.display()))?;
        tracing::info!(
            export = %args.export.display(),
            used_bytes = export.used_bytes(),
            counted_in = ?counting.elapsed(),
            capacity_bytes = args.capacity_bytes,
            read_only = args.read_only,
            squash = ?identity.squash,
            consumer_read_only = identity.consumer_read_only,
            protected_dir = ?identity.protected_dir,
            writer = identity.writer_path.is_some(),
            "export opened"
        );
        let export = Arc::new(export);
        let root = export.root_fh().clone();
        let server = Arc::new(NfsServer::new(export, metrics, ServerConfig::new(args.port)?));

        let nfs_addr = SocketAddr::new(args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(nfs_addr).await.with_context(|| format!("binding {nfs_addr}"))?;
        tracing::info!(%nfs_addr, %http_addr, "serving NFSv3");

        let probe_addr =
            if args.bind.is_unspecified() { SocketAddr::from(([127, 0, 0, 1], args.port)) } else { nfs_addr };
        tokio::spawn(run_probes(TcpConnector(probe_addr), root, health, shutdown.clone()));
        server.serve(listener, shutdown.clone()).await?;
        shutdown.cancel();
        let _ = http.await;
        tracing::info!("stopped");
        Ok(())
    })
}
