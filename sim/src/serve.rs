//! `sv-sim serve`: the main job's world, without its script, paced to the wall clock and opened
//! to this machine. kubectl reaches the simulated API server through a loopback port (with a
//! kubeconfig written for it), and each managed volume's NFS export gets a loopback port of its
//! own, so that `nfs-ls` or any NFSv3 client lists what the syncer published.
//!
//! Nothing is pre-installed but what any cluster has (nodes, a `standard` StorageClass): the
//! user installs SharedVolume with `kubectl apply -k deploy/`, and the kubelets then run the
//! operator and the webhook as the pods of those manifests, under their RBAC.
//!
//! The loopback ports are forwarded by the host `bridge`, the one host whose runtime drives real
//! sockets: each accepted connection is copied to a simulated connection to its target, so every
//! request still crosses the simulated network (and its latency) like a client in the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::examples::{self, EXTERNAL_NFS};
use crate::world::{API_HOST, API_PORT, World, WorldConfig};

/// The host that forwards this machine's loopback ports into the simulated network.
pub const BRIDGE_HOST: &str = "bridge";

/// How `sv-sim serve` runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub seed: u64,
    pub nodes: u32,
    /// Port on 127.0.0.1 for the API server (0 picks a free one).
    pub port: u16,
    /// Where the kubeconfig for kubectl is written.
    pub kubeconfig: PathBuf,
    /// Simulated seconds per wall-clock second (1 is real time; more is faster, when the machine
    /// keeps up).
    pub pace: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding 127.0.0.1:{port} for the API server: {source} (choose another with --port)")]
    Bind { port: u16, source: io::Error },
    #[error("writing the kubeconfig {path}: {source}")]
    Kubeconfig { path: PathBuf, source: io::Error },
    #[error("making the simulated cluster: {0}")]
    World(String),
    #[error("the simulation failed: {0}")]
    Simulation(String),
    #[error("making the API server's certificate: {0}")]
    Certificate(String),
    #[error("--pace must be a positive number of simulated seconds per second, not {0}")]
    Pace(f64),
}

/// What `serve` tells its user, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The API server answers at this address; kubectl finds it through `kubeconfig`.
    Serving { address: SocketAddr, kubeconfig: PathBuf },
    /// A volume's NFS export is reachable on this loopback port (`volume` is `Kind namespace/name`,
    /// or `Kind name` when cluster-scoped).
    Export { volume: String, port: u16 },
    /// The volume, or its NFS server, is gone; its port is closed.
    ExportClosed { volume: String, port: u16 },
    /// The simulation falls behind the wall clock (the machine cannot keep the pace).
    Behind { by: Duration },
}

impl Notice {
    /// An `nfs-ls` URL for an export on `port` (libnfs needs both ports named when there is no
    /// portmapper; the double slash makes `/` the export).
    pub fn nfs_url(port: u16) -> String {
        format!("nfs://127.0.0.1//?nfsport={port}&mountport={port}")
    }
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Serving { address, kubeconfig } => write!(
                f,
                "serving the simulated cluster's API at https://{address}\n\
                 kubeconfig: {path}\n\
                 \n  export KUBECONFIG={path}\n  kubectl apply -k deploy/\n  kubectl apply -f deploy/examples/13-http.yaml\n  kubectl get sv -A -w\n",
                path = kubeconfig.display()
            ),
            Notice::Export { volume, port } => {
                write!(f, "export of {volume}: nfs-ls '{}'", Notice::nfs_url(*port))
            }
            Notice::ExportClosed { volume, port } => write!(f, "export of {volume} closed (port {port})"),
            Notice::Behind { by } => {
                write!(
                    f,
                    "the simulation is {:.1} s behind the wall clock: this machine cannot keep the pace",
                    by.as_secs_f64()
                )
            }
        }
    }
}

/// A kubeconfig for the API server at `address`, as the cluster's administrator (the token
/// `system:masters` holds, [`crate::api::auth::ADMIN_TOKEN`]), trusting the certificate `ca_pem`.
/// A request without the token is `system:anonymous`, which RBAC refuses almost everything.
pub fn kubeconfig(address: SocketAddr, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sv-sim\n  cluster:\n    server: https://{address}\n    \
         certificate-authority-data: {ca}\n\
         users:\n- name: kubernetes-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: sv-sim\n  context:\n    cluster: sv-sim\n    user: kubernetes-admin\n    namespace: default\n\
         current-context: sv-sim\n",
        token = crate::api::auth::ADMIN_TOKEN
    )
}

/// Runs until `stop` is set, telling `notify` what a user needs to know.
pub fn run(config: ServeConfig, stop: &AtomicBool, mut notify: impl FnMut(Notice)) -> Result<(), ServeError> {
    if !(config.pace.is_finite() && config.pace > 0.0) {
        return Err(ServeError::Pace(config.pace));
    }
    let listener = TcpListener::bind(("127.0.0.1", config.port))
        .map_err(|source| ServeError::Bind { port: config.port, source })?;
    let address = listener.local_addr().map_err(|source| ServeError::Bind { port: config.port, source })?;

    let world_config = WorldConfig {
        seed: config.seed,
        nodes: (1..=config.nodes.max(1)).map(|n| format!("node-{n}")).collect(),
        start: k8s_openapi::jiff::Timestamp::now(),
        // The operator is whatever `kubectl apply -k deploy/` installs, as on a cluster.
        operator: false,
        external_nfs: EXTERNAL_NFS.map(String::from).to_vec(),
        // Fast enough for an interactive client; a cluster network is quicker still.
        tick: Duration::from_millis(5),
        message_latency: (Duration::from_micros(200), Duration::from_millis(2)),
        real_io: true,
        limit: Duration::from_secs(365 * 24 * 3600),
        ..WorldConfig::default()
    };
    let mut world = World::new(world_config).map_err(|e| ServeError::World(e.to_string()))?;
    if let Err(e) = world.api.create_object(examples::storage_class(), "kubectl") {
        return Err(ServeError::World(format!("creating the StorageClass: {e:?}")));
    }
    let bridge = Bridge::default();
    let software = bridge.clone();
    world.add_host(BRIDGE_HOST, move || software.clone().run());
    let (certificate, tls) = serving_certificate().map_err(ServeError::Certificate)?;
    bridge.open(listener, (API_HOST.to_string(), API_PORT), Some(tls)).map_err(|e| ServeError::World(e.to_string()))?;

    if let Some(parent) = config.kubeconfig.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|source| ServeError::Kubeconfig { path: config.kubeconfig.clone(), source })?;
    }
    write_private(&config.kubeconfig, &kubeconfig(address, &certificate))
        .map_err(|source| ServeError::Kubeconfig { path: config.kubeconfig.clone(), source })?;
    notify(Notice::Serving { address, kubeconfig: config.kubeconfig.clone() });

    let mut exports = Exports::default();
    // The exports change only with the stored objects (volumes, Services, Endpoints, pods).
    let mut seen_version = None;
    let wall = Instant::now();
    let simulated_start = world.elapsed();
    let mut warned_behind = false;
    while !stop.load(Ordering::Relaxed) {
        world.run_for(Duration::from_millis(50)).map_err(|e| ServeError::Simulation(e.to_string()))?;
        let version = world.api.state().store.resource_version();
        if seen_version != Some(version) {
            seen_version = Some(version);
            for notice in exports.refresh(&world, &bridge) {
                notify(notice);
            }
        }
        let simulated = (world.elapsed() - simulated_start).as_secs_f64() / config.pace;
        let real = wall.elapsed().as_secs_f64();
        if simulated > real {
            // Pacing, not synchronisation: the simulation would otherwise run ahead of its users.
            std::thread::sleep(Duration::from_secs_f64(simulated - real));
        } else if real - simulated > 5.0 && !warned_behind {
            warned_behind = true;
            notify(Notice::Behind { by: Duration::from_secs_f64(real - simulated) });
        }
    }
    Ok(())
}

/// A self-signed certificate for 127.0.0.1 and localhost, and a TLS configuration serving it.
/// kubectl sends its credentials only over TLS (client-go drops a kubeconfig's user for an
/// `http://` server), so the API port is TLS, ended at the bridge.
fn serving_certificate() -> Result<(String, Arc<rustls::ServerConfig>), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| e.to_string())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "sv-sim API server");
    let certificate = params.self_signed(&key).map_err(|e| e.to_string())?;
    let chain = vec![CertificateDer::from(certificate.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok((certificate.pem(), Arc::new(config)))
}

/// Writes a file only its owner may read (it holds a credential).
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

/// The loopback ports of the volumes' NFS exports.
#[derive(Default)]
struct Exports {
    /// Volume → its port.
    open: BTreeMap<String, u16>,
}

impl Exports {
    /// Opens a port for each volume whose managed NFS server runs, points it at the server's
    /// current pod (a replaced server pod is another host), and closes the ports of volumes gone.
    fn refresh(&mut self, world: &World, bridge: &Bridge) -> Vec<Notice> {
        let mut notices = Vec::new();
        let servers = nfs_servers(world);
        for (volume, port) in std::mem::take(&mut self.open) {
            match servers.get(&volume) {
                Some(target) => {
                    bridge.retarget(port, target.clone());
                    self.open.insert(volume, port);
                }
                None => {
                    bridge.close(port);
                    notices.push(Notice::ExportClosed { volume, port });
                }
            }
        }
        for (volume, target) in servers {
            if self.open.contains_key(&volume) {
                continue;
            }
            let opened = TcpListener::bind(("127.0.0.1", 0)).and_then(|listener| bridge.open(listener, target, None));
            match opened {
                Ok(port) => {
                    self.open.insert(volume.clone(), port);
                    notices.push(Notice::Export { volume, port });
                }
                Err(error) => tracing::warn!(%volume, %error, "no loopback port for the export"),
            }
        }
        notices
    }
}

/// Each volume with a running managed NFS server, and that server's host and port on the
/// simulated network: the volume's `status.nfsServerAddress` is its Service's ClusterIP, which
/// kube-proxy leads to a ready server pod's host.
fn nfs_servers(world: &World) -> BTreeMap<String, (String, u16)> {
    let nfs_port = sv_operator::plan::NFS_PORT as u16;
    examples::volumes(&world.api)
        .iter()
        .filter_map(|volume| {
            let address = volume["status"]["nfsServerAddress"].as_str().filter(|a| !a.is_empty())?;
            let backend = world.api.service_route(address, nfs_port).ok()?;
            Some((volume_name(volume), (backend.host, backend.port)))
        })
        .collect()
}

fn volume_name(volume: &Value) -> String {
    let kind = volume["kind"].as_str().unwrap_or_default();
    let name = volume["metadata"]["name"].as_str().unwrap_or_default();
    match volume["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Loopback ports forwarded to hosts of the simulated network, by the host [`BRIDGE_HOST`].
#[derive(Clone, Default)]
pub struct Bridge {
    forwards: Arc<Mutex<BTreeMap<u16, Forward>>>,
}

struct Forward {
    listener: Arc<TcpListener>,
    target: (String, u16),
    /// TLS ended here, for ports whose clients want it (the target still gets plain bytes).
    tls: Option<Arc<rustls::ServerConfig>>,
    closed: CancellationToken,
}

impl Bridge {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u16, Forward>> {
        self.forwards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards what `listener` accepts to `target` (host, port), after a TLS handshake when
    /// `tls` is given; returns the listener's port.
    pub fn open(
        &self,
        listener: TcpListener,
        target: (String, u16),
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<u16> {
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let forward = Forward { listener: Arc::new(listener), target, tls, closed: CancellationToken::new() };
        self.lock().insert(port, forward);
        Ok(port)
    }

    /// New connections to `port` go to `target` from now on.
    pub fn retarget(&self, port: u16, target: (String, u16)) {
        if let Some(forward) = self.lock().get_mut(&port) {
            forward.target = target;
        }
    }

    /// Stops accepting on `port` (connections already made stay until either end closes).
    pub fn close(&self, port: u16) {
        if let Some(forward) = self.lock().remove(&port) {
            forward.closed.cancel();
        }
    }

    fn target(&self, port: u16) -> Option<(String, u16)> {
        self.lock().get(&port).map(|f| f.target.clone())
    }

    /// The bridge host's software: takes up each port opened, until the host stops.
    async fn run(self) -> turmoil::Result {
        let mut serving = BTreeSet::new();
        loop {
            let new: Vec<_> = self
                .lock()
                .iter()
                .filter(|(port, _)| !serving.contains(*port))
                .map(|(port, f)| (*port, f.listener.clone(), f.tls.clone(), f.closed.clone()))
                .collect();
            for (port, listener, tls, closed) in new {
                serving.insert(port);
                // A duplicate of the socket, so that a restart of this host can take it up again.
                let listener = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
                let tls = tls.map(tokio_rustls::TlsAcceptor::from);
                tokio::spawn(self.clone().accept(port, listener, tls, closed));
            }
            let open: BTreeSet<u16> = self.lock().keys().copied().collect();
            serving.retain(|port| open.contains(port));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn accept(
        self,
        port: u16,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        closed: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = closed.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let outside = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(port, %error, "accepting on a bridged port");
                    continue;
                }
            };
            let Some((host, target_port)) = self.target(port) else { return };
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut inside = match crate::net::SimStream::connect((host.as_str(), target_port)).await {
                    Ok(inside) => inside,
                    Err(error) => return tracing::debug!(%host, target_port, %error, "connecting a bridged port"),
                };
                let copied = match tls {
                    Some(tls) => match tls.accept(outside).await {
                        Ok(mut outside) => tokio::io::copy_bidirectional(&mut outside, &mut inside).await,
                        Err(error) => Err(error),
                    },
                    None => {
                        let mut outside = outside;
                        tokio::io::copy_bidirectional(&mut outside, &mut inside).await
                    }
                };
                if let Err(error) = copied {
                    tracing::debug!(port, %error, "a bridged connection ended");
                }
            });
        }
    }
}
