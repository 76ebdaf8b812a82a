//! `sv-syncer run` on a simulated host: the program's own entry point ([`program::run`]) with the
//! simulation's clock, API client, sources and sockets, and the pod's paths mapped onto the host.
//!
//! The volume is written as in a cluster, through NFS: the syncer's own NFS client
//! ([`NfsFs`]) mounts the PersistentVolume's export (the writer's path, with its token) from the
//! server that kube-proxy routes the PV's address to, so the server's capacity, `NOSPC`, COMMIT
//! and write verifier, caches and identity policy meet the syncer. The calls go to that server
//! in-process ([`InProcessConnector`]) rather than over simulated sockets: the seam is
//! synchronous, as system calls are (in a cluster the syncer stages on blocking threads), and a
//! synchronous call cannot wait for the simulation's sockets; while it runs the simulated time
//! stands still, so the calls take no simulated time. Not modelled on this path:
//! partitions between the syncer and its server (a crashed or replaced server is: the calls fail
//! as on a reset connection, and the sync is tried again).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Weak};

use clap::Parser as _;
use sv_nfs::server::NfsServer;
use sv_nfs_client::blocking::{InProcessConnector, LiveServer, Route};
use sv_operator::clock::SharedClock;
use sv_syncer::program::{self, Cli, Command, Host, RunArgs};
use sv_syncer::volume_fs::{LocalFs, NfsFs, NfsFsConfig, VolumeFs};
use tokio_util::sync::CancellationToken;

use super::nfs::NfsServers;
use super::pod::PodContext;
use super::sources::SimSources;
use crate::api::proxy::ServiceProxy;
use crate::net::SimListener;
use crate::page_cache::SharedPageCache;

/// How a syncer reaches its volume's server.
#[derive(Clone)]
pub(super) struct Network {
    pub proxy: Option<ServiceProxy>,
    pub servers: NfsServers,
    /// What the servers did not sync: a call the syncer makes in-process reports it to the
    /// journal of the server's node, as one over the network would.
    pub page_cache: SharedPageCache,
}

/// `run`'s flags from the pod's arguments and environment, parsed by the program's own command
/// line, with every path but the NFS volume's moved onto the volume it is mounted from.
fn parse(context: &PodContext) -> Result<RunArgs, String> {
    let cli = Cli::try_parse_from(context.argv_with_env::<Cli>("sv-syncer")).map_err(|e| e.to_string())?;
    let Command::Run(mut args) = cli.command else {
        return Err(format!("the syncer pod runs `sv-syncer run`; got {:?}", context.args));
    };
    args.credentials_dir = args.credentials_dir.map(|d| context.host_path(d)).transpose()?;
    args.ca_bundle = args.ca_bundle.map(|f| context.host_path(f)).transpose()?;
    Ok(args)
}

/// Where `data_dir` is for the program and how it reaches it: the NFS volume through the
/// syncer's own client, anything else (a server outside the cluster, standing in as a
/// directory) by system calls on the directory behind the mount.
fn volume(context: &PodContext, data_dir: &Path, network: &Network) -> Result<(PathBuf, Arc<dyn VolumeFs>), String> {
    let mount = context.nfs_mount(&data_dir.to_string_lossy()).filter(|m| !m.external);
    let Some(mount) = mount else {
        return Ok((context.host_path(data_dir)?, LocalFs::shared()));
    };
    let proxy = network.proxy.clone().ok_or("the simulation gives pods no network to Services")?;
    let mut client = mount.client_config(context)?;
    client.connections = 1;
    // A call whose server is gone fails at once (after trying a new connection, which reaches a
    // replacement if one serves): the sync fails and is tried again on the syncer's schedule.
    client.retries = 3;
    client.retry_delay = std::time::Duration::ZERO;
    let route = ToServer {
        proxy,
        server: mount.server.clone(),
        servers: network.servers.clone(),
        page_cache: network.page_cache.clone(),
    };
    let config = NfsFsConfig {
        client,
        mount_point: data_dir.to_path_buf(),
        local_dir: context.scratch.join("sv-syncer"),
        // One directory at a time: the same order of calls in every run of a seed.
        parallel_dirs: 1,
    };
    let fs = NfsFs::mount(InProcessConnector(Arc::new(route)), config)
        // Not the path: the writer's holds its token.
        .map_err(|e| format!("mount.nfs: {}: {e}", mount.server))?;
    Ok((data_dir.to_path_buf(), Arc::new(fs)))
}

/// kube-proxy's route from the PV's address to the server that serves it now.
struct ToServer {
    proxy: ServiceProxy,
    server: String,
    servers: NfsServers,
    page_cache: SharedPageCache,
}

impl Route for ToServer {
    fn route(&self, addr: SocketAddr) -> std::io::Result<Arc<dyn LiveServer>> {
        let refused = |why: String| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why);
        let backend = self.proxy.route(&self.server, addr.port()).map_err(|e| refused(e.to_string()))?;
        let server =
            self.servers.on(&backend.host).ok_or_else(|| refused(format!("nothing serves on {}", backend.host)))?;
        Ok(Arc::new(Serving { server, page_cache: self.page_cache.clone() }))
    }
}

/// A connection's server: gone once its host crashed or its program stopped.
struct Serving {
    server: Weak<NfsServer>,
    page_cache: SharedPageCache,
}

impl LiveServer for Serving {
    fn answer_if_running(&self, record: &[u8]) -> Option<Option<Vec<u8>>> {
        let server = self.server.upgrade()?;
        // The server's writes are its node's, wherever the call came from.
        let journal = || -> Rc<dyn sv_common::durability::Journal> { Rc::new(self.page_cache.clone()) };
        Some(sv_common::durability::with_journal(journal, || server.answer_owned(record)))
    }
}

pub(super) async fn run(
    context: PodContext,
    clock: SharedClock,
    network: Network,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut args = parse(&context)?;
    let (data_dir, volume_fs) = volume(&context, &args.data_dir, &network)?;
    args.data_dir = data_dir;
    let http = SimListener::bind(args.http_port).await.map_err(|e| format!("binding the HTTP port: {e}"))?;
    let client = context.in_cluster_client()?;
    let host = Host { client, clock, sources: Arc::new(SimSources), http, volume_fs, shutdown: stop };
    program::run(&args, host).await.map_err(|e| e.to_string())
}
