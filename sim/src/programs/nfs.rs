//! `sv-nfs serve` on a simulated host: the program's own entry point ([`program::serve`]) on
//! turmoil sockets, with the pod's paths mapped onto the host.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use clap::Parser as _;
use sv_nfs::health::Connector;
use sv_nfs::program::{self, Cli, Command, Host, ServeArgs};
use sv_nfs::server::{Execution, NfsServer};
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
    context.host_path(args.export)
}

/// Connects to the server on its own host, as the program's self-probe does over loopback.
struct Loopback(u16);

impl Connector for Loopback {
    type Io = crate::net::SimStream;
    async fn connect(&self) -> std::io::Result<Self::Io> {
        crate::net::SimStream::connect(("127.0.0.1", self.0)).await
    }
}

/// The NFS write verifier of one run of the server. A client resends the writes it has not seen
/// committed when the verifier changes, so it must change with every start: a container restart
/// (`incarnation`) and a new pod of the same name (`pod_uid`; the StatefulSet replaces `nfs-0`
/// with another `nfs-0` after a node loss). The real program draws it from the OS; here it comes
/// from the pod's uid, which the seeded API server drew.
fn write_verifier(pod_uid: &str, incarnation: u32) -> [u8; 8] {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    pod_uid.hash(&mut hasher);
    let mut verifier = [0u8; 8];
    verifier[..4].copy_from_slice(&incarnation.to_be_bytes());
    verifier[4..].copy_from_slice(&(hasher.finish() as u32).to_be_bytes());
    verifier
}

/// The NFS servers that serve now, by host: the syncer calls its volume's server in-process
/// ([`super::syncer`]). An entry outlives its server only as a dead reference (a crash drops the
/// server with its host's tasks).
#[derive(Clone, Default)]
pub struct NfsServers(Arc<Mutex<BTreeMap<String, Weak<NfsServer>>>>);

impl NfsServers {
    fn serving(&self, host: &str, server: &Arc<NfsServer>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), Arc::downgrade(server));
    }

    /// The server on `host`, while one serves there.
    pub fn on(&self, host: &str) -> Option<Weak<NfsServer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(host).cloned()
    }
}

/// Runs the program until `stop`; `incarnation` tells restarts apart (the write verifier must
/// change with every restart, and in a simulation it must not come from the OS). The server is
/// entered in `servers` under `host` once it serves.
pub(super) async fn run(
    context: PodContext,
    host: String,
    servers: NfsServers,
    incarnation: u32,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut args = parse(&context.args)?;
    args.export = context.host_path(args.export)?;
    if let Some(file) = &args.writer_token_file {
        args.writer_token_file = Some(context.host_path(file)?);
    }
    let write_verifier = write_verifier(&context.uid, incarnation);
    let nfs = SimListener::bind(args.port).await.map_err(|e| format!("binding port {}: {e}", args.port))?;
    let http = SimListener::bind(args.http_port).await.map_err(|e| format!("binding port {}: {e}", args.http_port))?;
    let serving = Box::new(move |server: &Arc<NfsServer>| servers.serving(&host, server));
    let host = Host {
        nfs,
        http,
        probe: Loopback(args.port),
        write_verifier,
        // Calls are answered in order on each connection's task: the simulation stays deterministic.
        execution: Execution::Inline,
        serving: Some(serving),
        shutdown: stop,
    };
    program::serve(args, host).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_verifier_changes_with_every_start_of_the_server() {
        let first = write_verifier("9b1c0d6e-uid-of-nfs-0", 0);
        assert_eq!(first, write_verifier("9b1c0d6e-uid-of-nfs-0", 0), "the same run");
        assert_ne!(first, write_verifier("9b1c0d6e-uid-of-nfs-0", 1), "a container restart");
        assert_ne!(first, write_verifier("4f7a2e10-uid-of-the-new-nfs-0", 0), "a new pod of the same name");
    }

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
