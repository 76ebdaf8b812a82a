//! `sv-nfs serve` on a simulated host: the same export, server, self-probe and HTTP endpoints as
//! the program's `main`, on turmoil sockets.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use prometheus_client::registry::Registry;
use sv_nfs::fs::Export;
use sv_nfs::health::{Connector, run_probes};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::program::{Cli, Command, ServeArgs};
use sv_nfs::server::{Execution, NfsServer, ServerConfig};
use sv_operator::telemetry::{self, Health};
use tokio_util::sync::CancellationToken;

use super::pod::PodContext;
use crate::net::SimListener;

/// `serve`'s flags, parsed by the program's own command line.
fn parse(args: &[String]) -> Result<ServeArgs, String> {
    let cli = Cli::try_parse_from(std::iter::once("sv-nfs").chain(args.iter().map(String::as_str)))
        .map_err(|e| e.to_string())?;
    let Command::Serve(args) = cli.command;
    Ok(args)
}

/// The directory the pod's server exports, if its arguments name one on a volume.
pub(super) fn export_dir(context: &PodContext) -> Result<PathBuf, String> {
    let args = parse(&context.args)?;
    context.host_path(&args.export.to_string_lossy())
}

/// Connects to the server on its own host, as the program's self-probe does over loopback.
struct Loopback(u16);

impl Connector for Loopback {
    type Io = turmoil::net::TcpStream;
    async fn connect(&self) -> std::io::Result<Self::Io> {
        turmoil::net::TcpStream::connect(("127.0.0.1", self.0)).await
    }
}

/// Runs the server until `stop`; `incarnation` tells restarts apart (the write verifier must
/// change with every restart, and in a simulation it must not come from the OS).
pub(super) async fn run(context: PodContext, incarnation: u32, stop: CancellationToken) -> Result<(), String> {
    let args = parse(&context.args)?;
    let export_path = args.export.to_string_lossy().into_owned();
    let dir = context.host_path(&export_path)?;
    let token = match &args.writer_token_file {
        Some(file) => {
            let path = context.host_path(&file.to_string_lossy())?;
            Some(std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", file.display()))?)
        }
        None => None,
    };
    let options = args.export_options(token.as_deref())?;
    let export = Export::open(&dir, options).map_err(|e| format!("opening export {export_path}: {e}"))?;
    let mut registry = Registry::default();
    let metrics = NfsMetrics::register(&mut registry);
    let health = Health::new();
    let export = Arc::new(export);
    let root = export.root_fh().clone();
    let mut verifier = [0u8; 8];
    verifier[..4].copy_from_slice(&incarnation.to_be_bytes());
    verifier[4..].copy_from_slice(&(context.name.len() as u32).to_be_bytes());
    // Calls are answered in order on each connection's task: the simulation stays deterministic.
    let config = ServerConfig {
        port: args.port,
        write_verifier: verifier,
        shutdown_grace: Duration::from_secs(10),
        execution: Execution::Inline,
    };
    let server = Arc::new(NfsServer::new(export, metrics, config));
    let listener = SimListener::bind(args.port).await.map_err(|e| format!("binding port {}: {e}", args.port))?;
    let http = SimListener::bind(args.http_port).await.map_err(|e| format!("binding port {}: {e}", args.http_port))?;
    tracing::info!(export = %export_path, port = args.port, "serving NFSv3");
    tokio::spawn(run_probes(Loopback(args.port), root, health.clone(), stop.clone()));
    tokio::spawn(telemetry::serve(http, telemetry::router(Arc::new(registry), health), stop.clone().cancelled_owned()));
    server.serve(listener, stop).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn the_operators_arguments_parse_and_mistakes_are_refused() {
        let args = parse(&words("serve --export=/export --port=2049 --http-port=8080 --capacity-bytes=1024")).unwrap();
        assert_eq!(args.export, PathBuf::from("/export"));
        assert_eq!(args.capacity_bytes, 1024);
        assert_eq!(parse(&words("serve --export /e --read-only")).map(|a| a.read_only), Ok(true));
        assert!(parse(&words("serve --port=2049")).unwrap_err().contains("--export"));
        assert!(parse(&words("serve --export=/e --bogus")).unwrap_err().contains("--bogus"));
        assert!(parse(&words("serve --export=/e --squash=maybe")).unwrap_err().contains("squash"));
        assert!(parse(&words("run")).is_err());
        assert!(parse(&words("serve --export=/e --port=99999")).is_err());
    }
}
