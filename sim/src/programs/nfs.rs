//! `sv-nfs serve` on a simulated host: the same export, server, self-probe and HTTP endpoints as
//! the program's `main`, on turmoil sockets.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sv_nfs::fs::{Export, ExportOptions};
use sv_nfs::health::{Connector, run_probes};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::server::{NfsServer, ServerConfig};
use sv_operator::telemetry::{self, Health};
use tokio_util::sync::CancellationToken;

use super::pod::PodContext;
use crate::net::SimListener;

/// `serve`'s flags, as the program's command line takes them.
#[derive(Debug, PartialEq, Eq)]
struct ServeArgs {
    export: String,
    port: u16,
    http_port: u16,
    capacity_bytes: u64,
    read_only: bool,
    no_sync_namespace: bool,
}

fn parse(args: &[String]) -> Result<ServeArgs, String> {
    let mut words = args.iter();
    if words.next().map(String::as_str) != Some("serve") {
        return Err(format!("usage: sv-nfs serve [OPTIONS]; got {args:?}"));
    }
    let mut parsed = ServeArgs {
        export: String::new(),
        port: 2049,
        http_port: 8080,
        capacity_bytes: 0,
        read_only: false,
        no_sync_namespace: false,
    };
    let mut words = words.peekable();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (word.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| words.next().cloned()).ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag {
            "--export" => parsed.export = value()?,
            "--port" => parsed.port = u16::try_from(number(value()?)?).map_err(|e| e.to_string())?,
            "--http-port" => parsed.http_port = u16::try_from(number(value()?)?).map_err(|e| e.to_string())?,
            "--capacity-bytes" => parsed.capacity_bytes = number(value()?)?,
            "--bind" | "--log-format" => {
                value()?;
            }
            "--read-only" => parsed.read_only = true,
            "--no-sync-namespace" => parsed.no_sync_namespace = true,
            other => return Err(format!("error: unexpected argument '{other}'")),
        }
    }
    if parsed.export.is_empty() {
        return Err("error: the argument '--export <EXPORT>' is required".to_string());
    }
    Ok(parsed)
}

/// The directory the pod's server exports, if its arguments name one on a volume.
pub(super) fn export_dir(context: &PodContext) -> Result<PathBuf, String> {
    let args = parse(&context.args)?;
    context.host_path(&args.export)
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
    let dir = context.host_path(&args.export)?;
    let options = ExportOptions {
        read_only: args.read_only,
        capacity: (args.capacity_bytes > 0).then_some(args.capacity_bytes),
        sync_namespace: !args.no_sync_namespace,
    };
    let export = Export::open(&dir, options).map_err(|e| format!("opening export {}: {e}", args.export))?;
    let mut registry = Registry::default();
    let metrics = NfsMetrics::register(&mut registry);
    let health = Health::new();
    let export = Arc::new(export);
    let root = export.root_fh().clone();
    let mut verifier = [0u8; 8];
    verifier[..4].copy_from_slice(&incarnation.to_be_bytes());
    verifier[4..].copy_from_slice(&(context.name.len() as u32).to_be_bytes());
    let config = ServerConfig { port: args.port, write_verifier: verifier, shutdown_grace: Duration::from_secs(10) };
    let server = Arc::new(NfsServer::new(export, metrics, config));
    let listener = SimListener::bind(args.port).await.map_err(|e| format!("binding port {}: {e}", args.port))?;
    let http = SimListener::bind(args.http_port).await.map_err(|e| format!("binding port {}: {e}", args.http_port))?;
    tracing::info!(export = %args.export, port = args.port, "serving NFSv3");
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
        assert_eq!(args.export, "/export");
        assert_eq!(args.capacity_bytes, 1024);
        assert_eq!(parse(&words("serve --export /e --read-only")).map(|a| a.read_only), Ok(true));
        assert!(parse(&words("serve --port=2049")).unwrap_err().contains("--export"));
        assert!(parse(&words("serve --export=/e --bogus")).unwrap_err().contains("--bogus"));
        assert!(parse(&words("run")).is_err());
        assert!(parse(&words("serve --export=/e --port=99999")).is_err());
    }
}
