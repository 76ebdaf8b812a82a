//! The `sv-nfs` program, shared by the binary and the simulation: both parse the same flags with
//! [`Cli`] and run [`serve`], so the simulation runs the settings and the start-up a real pod gets.
//! The caller brings only what differs between the two: sockets, the write verifier and how
//! calls are executed.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use sv_common::telemetry::{self, Health, LogFormat};
use sv_common::writer::{is_valid_writer_token, nfs_writer_path};
use tokio_util::sync::CancellationToken;

use crate::fs::{Export, ExportOptions, Identity, Squash};
use crate::health::{Connector, run_probes};
use crate::metrics::NfsMetrics;
use crate::rpc::Credential;
use crate::server::{Execution, Listener, NfsServer, SHUTDOWN_GRACE, ServerConfig};

#[derive(Parser, Debug)]
#[command(name = "sv-nfs", version, about = "SharedVolume NFS server: NFSv3 and MOUNT v3 on one TCP port")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a directory.
    Serve(ServeArgs),
}

/// How consumers may use the export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumerAccess {
    ReadWrite,
    ReadOnly,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Directory to export.
    #[arg(long)]
    pub export: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// Port of NFS, MOUNT and portmap.
    #[arg(long, default_value_t = 2049)]
    pub port: u16,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Bytes of file data the export may hold (0: no limit beyond the disk).
    #[arg(long, default_value_t = 0)]
    pub capacity_bytes: u64,
    /// Refuse every change, the writer's too.
    #[arg(long)]
    pub read_only: bool,
    /// Do not sync directories after namespace changes (faster, less durable).
    #[arg(long)]
    pub no_sync_namespace: bool,
    /// Whose identity consumers' requests are made with: `root` maps uid and gid 0 to the
    /// anonymous ids (an NFS export's root_squash), `all` maps everyone (all_squash), `none`
    /// trusts the AUTH_UNIX credential as sent.
    #[arg(long, default_value = "root", value_parser = parse_squash)]
    pub squash: Squash,
    /// The anonymous uid of squashed requests.
    #[arg(long, default_value_t = Credential::NOBODY)]
    pub anon_uid: u32,
    /// The anonymous gid of squashed requests.
    #[arg(long, default_value_t = Credential::NOBODY)]
    pub anon_gid: u32,
    /// Whether consumers may change the export.
    #[arg(long, value_enum, default_value_t = ConsumerAccess::ReadWrite)]
    pub consumer_access: ConsumerAccess,
    /// A top-level directory that consumers may read but never change (the syncer's state);
    /// empty for none.
    #[arg(long, default_value = ".sharedvolume")]
    pub protected_dir: String,
    /// File holding the writer token: MOUNT of `/.sv-writer-<token>` gives the writer's rights
    /// (no squashing, the protected directory writable). Without it there is no writer.
    #[arg(long)]
    pub writer_token_file: Option<PathBuf>,
    /// Mode given to the export's root directory at start, in octal (1777 lets squashed
    /// consumers create entries but not remove the writer's or each other's).
    #[arg(long, value_parser = parse_mode)]
    pub root_mode: Option<u32>,
    /// Directories of the protected directory whose names start with this are the writer's
    /// scratch trees (revisions being built): their namespace changes are made durable together
    /// before the writer's next change elsewhere instead of one directory sync per change, and
    /// one made before a restart of this server is never renamed (published). Empty: none.
    #[arg(long, default_value = "staging-")]
    pub scratch_prefix: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SV_LOG_FORMAT")]
    pub log_format: LogFormat,
}

fn parse_squash(s: &str) -> Result<Squash, String> {
    s.parse()
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 1777 or 755"))
}

impl ServeArgs {
    /// The export's options; `writer_token` is the content of `--writer-token-file`, read by the
    /// caller (the simulation maps the path onto its pod's volumes).
    pub fn export_options(&self, writer_token: Option<&str>) -> Result<ExportOptions, String> {
        let writer_path = match writer_token.map(str::trim) {
            Some(token) if is_valid_writer_token(token) => Some(nfs_writer_path(token)),
            Some(_) => {
                return Err("--writer-token-file: the token must be 32 lowercase hexadecimal digits".to_string());
            }
            None => None,
        };
        Ok(ExportOptions {
            read_only: self.read_only,
            capacity: (self.capacity_bytes > 0).then_some(self.capacity_bytes),
            sync_namespace: !self.no_sync_namespace,
            identity: Identity {
                squash: self.squash,
                anon_uid: self.anon_uid,
                anon_gid: self.anon_gid,
                consumer_read_only: self.consumer_access == ConsumerAccess::ReadOnly,
                protected_dir: Some(self.protected_dir.clone()).filter(|d| !d.is_empty()),
                writer_path,
            },
            root_mode: self.root_mode,
            scratch_prefix: Some(self.scratch_prefix.clone()).filter(|p| !p.is_empty()),
        })
    }
}

/// Why `sv-nfs serve` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading {path}: {source}")]
    WriterToken { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Options(String),
    #[error("opening export {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("the export's usage count stopped: {0}")]
    Counting(String),
    #[error("serving NFS: {0}")]
    Serve(std::io::Error),
}

/// What the host gives the program: its sockets, already bound, and what must differ between a
/// real process and a simulated one.
pub struct Host<N, H, C> {
    /// The NFS port's listener (`--port`).
    pub nfs: N,
    /// The HTTP port's listener (`--http-port`): probes and metrics.
    pub http: H,
    /// Connects to the NFS port of this same server, for the self-probe behind `/readyz`.
    pub probe: C,
    /// The write verifier; it must change with every restart. A real process draws a random one
    /// ([`random_write_verifier`](crate::server::random_write_verifier)); the simulation derives it from the pod's incarnation.
    pub write_verifier: [u8; 8],
    pub execution: Execution,
    /// Told the server once it serves (the simulation lets its syncer call it in-process).
    pub serving: Option<OnServing>,
    pub shutdown: CancellationToken,
}

/// Called once with the server when it starts serving.
pub type OnServing = Box<dyn FnOnce(&Arc<NfsServer>) + Send>;

/// `sv-nfs serve`: opens the export (counting what it holds), then serves NFSv3 and MOUNT on
/// `host.nfs` and `/healthz`, `/readyz`, `/metrics` on `host.http` until `host.shutdown`. The HTTP
/// port answers at once and `/readyz` turns true only once the self-probe passes, so the liveness
/// probe does not kill a server that is still counting a large volume.
pub async fn serve<N, H, C>(args: ServeArgs, host: Host<N, H, C>) -> Result<(), ServeError>
where
    N: Listener,
    H: telemetry::HttpListener,
    H::Addr: std::fmt::Debug,
    C: Connector,
{
    let token = match &args.writer_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| ServeError::WriterToken { path: path.clone(), source })?,
        ),
        None => None,
    };
    let options = args.export_options(token.as_deref()).map_err(ServeError::Options)?;
    let identity = options.identity.clone();
    let mut registry = Registry::default();
    let metrics = NfsMetrics::register(&mut registry);
    let health = Health::new();
    let shutdown = host.shutdown;
    let (http_addr, http) =
        telemetry::spawn_endpoints(host.http, registry, health.clone(), shutdown.clone().cancelled_owned());
    tracing::info!(export = %args.export.display(), %http_addr, "counting what the export holds");
    let counting = tokio::time::Instant::now();
    let dir = args.export.clone();
    let opened = match host.execution {
        // The simulation must stay on its own thread to stay deterministic.
        Execution::Inline => Export::open(&dir, options),
        Execution::BlockingPool => {
            tokio::select! {
                opened = tokio::task::spawn_blocking(move || Export::open(&dir, options)) => {
                    opened.map_err(|e| ServeError::Counting(e.to_string()))?
                }
                _ = shutdown.cancelled() => {
                    let _ = http.await;
                    return Ok(());
                }
            }
        }
    };
    let export = opened.map_err(|source| ServeError::Open { path: args.export.clone(), source })?;
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
    let config = ServerConfig {
        port: args.port,
        write_verifier: host.write_verifier,
        shutdown_grace: SHUTDOWN_GRACE,
        execution: host.execution,
    };
    let server = Arc::new(NfsServer::new(export, metrics, config));
    if let Some(serving) = host.serving {
        serving(&server);
    }
    tracing::info!(port = args.port, http_port = args.http_port, "serving NFSv3");
    tokio::spawn(run_probes(host.probe, root, health, shutdown.clone()));
    let served = server.serve(host.nfs, shutdown.clone()).await;
    shutdown.cancel();
    let _ = http.await;
    tracing::info!("stopped");
    served.map_err(ServeError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &str) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(format!("sv-nfs serve {args}").split(' ')).map(|c| match c.command {
            Command::Serve(a) => a,
        })
    }

    #[test]
    fn defaults_squash_root_and_protect_the_syncers_state() {
        let args = serve("--export=/e").expect("parses");
        let options = args.export_options(None).expect("options");
        assert_eq!(options.identity.squash, Squash::Root);
        assert_eq!(options.identity.protected_dir.as_deref(), Some(".sharedvolume"));
        assert_eq!(options.identity.writer_path, None);
        let token = "0123456789abcdef0123456789abcdef";
        let options = args.export_options(Some(&format!("{token}\n"))).expect("options");
        assert_eq!(options.identity.writer_path, Some(format!("/.sv-writer-{token}")));
    }

    #[test]
    fn mistakes_are_refused_with_the_flag_named() {
        assert!(serve("--export=/e --squash=some").unwrap_err().to_string().contains("not a squash mode"));
        assert!(serve("--export=/e --root-mode=999").unwrap_err().to_string().contains("octal"));
        assert!(serve("--export=/e --consumer-access=rw").is_err());
        assert!(serve("--port=1").is_err(), "--export is required");
        let args = serve("--export=/e --consumer-access=read-only --root-mode=1777 --squash=all").expect("parses");
        let options = args.export_options(None).expect("options");
        assert!(options.identity.consumer_read_only);
        assert_eq!(options.root_mode, Some(0o1777));
        assert!(args.export_options(Some("short")).unwrap_err().contains("--writer-token-file"));
    }
}
