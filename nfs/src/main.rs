//! `sv-nfs`: serves one SharedVolume over NFSv3.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use sv_common::telemetry;
use sv_nfs::health::TcpConnector;
use sv_nfs::program::{self, Cli, Command, Host, ServeArgs};
use sv_nfs::server::{Execution, random_write_verifier};
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
    let write_verifier = random_write_verifier()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let nfs_addr = SocketAddr::new(args.bind, args.port);
        let http_addr = SocketAddr::new(args.bind, args.http_port);
        let http = tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
        let nfs = tokio::net::TcpListener::bind(nfs_addr).await.with_context(|| format!("binding {nfs_addr}"))?;
        let probe_addr =
            if args.bind.is_unspecified() { SocketAddr::from(([127, 0, 0, 1], args.port)) } else { nfs_addr };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            telemetry::shutdown_signal().await;
            tracing::info!("shutdown requested; finishing calls in progress");
            stop.cancel();
        });
        let host = Host {
            nfs,
            http,
            probe: TcpConnector(probe_addr),
            write_verifier,
            execution: Execution::BlockingPool,
            serving: None,
            shutdown,
        };
        program::serve(args, host).await?;
        Ok(())
    })
}
