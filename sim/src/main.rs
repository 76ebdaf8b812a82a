//! `sv-sim`: runs the simulated Kubernetes API server on loopback.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sv_operator::clock::SystemClock;
use sv_sim::api::{ApiServer, Options, http};
use sv_sim::cluster::{AlwaysReady, Cluster};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "sv-sim", version, about = "SharedVolume simulation harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: apply the bundled examples to a simulated three-node cluster running the real
    /// operator, wait until every volume settles, delete them all, check the cleanup, and print a
    /// summary with the run's trace hash.
    Run {
        /// Seed of the simulation (same seed, same trace hash).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Serve the simulated API server on a loopback port (plain HTTP), for kubectl and local runs.
    Serve {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Seed of generated names and uids.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated nodes (pods are scheduled on them and every pod "runs" and is Ready).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sv_operator::install_crypto_provider();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    match Cli::parse().command {
        Command::Run { seed } => {
            let report = tokio::task::spawn_blocking(move || sv_sim::examples::run(seed)).await??;
            print!("{report}");
            if !report.errors.is_empty() || !report.left_after_delete.is_empty() {
                anyhow::bail!("the run did not end clean");
            }
            Ok(())
        }
        Command::Serve { port, seed, nodes } => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.context("binding the API port")?;
            let address = listener.local_addr()?;
            let options = Options { seed, address: address.to_string(), ..Options::default() };
            let server = ApiServer::new(options, Arc::new(SystemClock));
            let stop = CancellationToken::new();
            tracing::info!(%address, "serving the simulated API server");
            println!("serving on http://{address}");
            let mut cluster = Cluster::new(server.clone(), Box::new(AlwaysReady));
            cluster.resync = std::time::Duration::from_millis(200);
            for n in 1..=nodes {
                cluster.add_node(&format!("node-{n}"));
            }
            let controllers = tokio::spawn(cluster.run(stop.clone()));
            let serving = tokio::spawn(http::serve_tcp(server, listener, stop.clone()));
            tokio::signal::ctrl_c().await.ok();
            stop.cancel();
            serving.await.ok();
            controllers.await.ok();
            Ok(())
        }
    }
}
