//! A simulated API server on a loopback port, and a real `kube::Client` pointed at it.

#![allow(dead_code)]

pub mod served;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use sv_operator::clock::TokioClock;
use sv_sim::api::{ApiServer, Options, http};
use sv_sim::cluster::{AlwaysReady, Cluster};
use tokio_util::sync::CancellationToken;

pub struct Loopback {
    pub server: ApiServer,
    pub client: Client,
    pub address: SocketAddr,
    pub stop: CancellationToken,
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start_with(options: Options) -> Loopback {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let clock = Arc::new(TokioClock::starting_at(Timestamp::from_second(1_790_000_000).expect("time")));
    let server = ApiServer::new(Options { address: address.to_string(), ..options }, clock);
    let stop = CancellationToken::new();
    tokio::spawn(http::serve_tcp(server.clone(), listener, stop.clone()));
    let client = client_for(address);
    Loopback { server, client, address, stop }
}

/// A loopback API server with the built-in controllers and three nodes running in real time.
pub async fn start_cluster() -> Loopback {
    let loopback = start().await;
    let mut cluster = Cluster::new(loopback.server.clone(), Box::new(AlwaysReady));
    cluster.resync = Duration::from_millis(50);
    for node in ["node-1", "node-2", "node-3"] {
        cluster.add_node(node);
    }
    tokio::spawn(cluster.run(loopback.stop.clone()));
    loopback
}

pub async fn start() -> Loopback {
    start_with(Options::default()).await
}

pub fn client_for(address: SocketAddr) -> Client {
    sv_operator::install_crypto_provider();
    let mut config = kube::Config::new(format!("http://{address}").parse().expect("url"));
    config.read_timeout = Some(Duration::from_secs(60));
    Client::try_from(config).expect("client")
}

/// Runs a case against the simulated API server, then, where `SV_ENVTEST_ASSETS` is set, against
/// a real one started from those binaries.
pub async fn against_both<F, Fut>(case: F)
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sim = start().await;
    case(sim.client.clone()).await;
    match std::env::var_os("SV_ENVTEST_ASSETS") {
        Some(assets) => {
            let plane = sv_operator::testing::ControlPlane::start(std::path::Path::new(&assets));
            case(plane.ready_client().await).await;
        }
        None => eprintln!("SV_ENVTEST_ASSETS is not set: ran against the simulated API server only"),
    }
}

/// Fails when a tool is required (CI) and prints that the test skipped otherwise.
pub fn skip(message: &str) {
    assert!(std::env::var_os("SV_REQUIRE_TEST_TOOLS").is_none(), "{message}");
    eprintln!("skipped: {message}");
}
