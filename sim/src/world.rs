//! A whole simulated cluster on turmoil: the API server and the built-in controllers on host
//! `api`, the real operator on host `operator` talking to it over the simulated network, nodes,
//! fault controls, and the trace hash that makes a run replayable.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiServer, Faults, Options, http};
use crate::cluster::{AlwaysReady, Cluster};
use crate::net::{SimClock, kube_client};

/// Port of the API server on host `api`.
pub const API_PORT: u16 = 6443;

#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub seed: u64,
    pub nodes: Vec<String>,
    /// Wall-clock time at the start of the run.
    pub start: Timestamp,
    /// Run the operator (`sv-operator run`, leader election on) as host `operator`.
    pub operator: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
            start: Timestamp::from_second(1_790_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
            operator: true,
        }
    }
}

/// A simulated cluster. Drive it with [`World::run_for`] / [`World::run_until`].
pub struct World {
    pub sim: turmoil::Sim<'static>,
    pub api: ApiServer,
    clock: Arc<SimClock>,
}

impl World {
    pub fn new(config: WorldConfig) -> Self {
        let sim = turmoil::Builder::new()
            .rng_seed(config.seed)
            .simulation_duration(Duration::from_secs(10 * 24 * 3600))
            .tick_duration(Duration::from_millis(10))
            .build();
        let clock = Arc::new(SimClock::new(config.start));
        let options = Options { seed: config.seed, address: format!("api:{API_PORT}"), ..Options::default() };
        let api = ApiServer::new(options, clock.clone());
        let mut world = Self { sim, api: api.clone(), clock: clock.clone() };

        let nodes = config.nodes.clone();
        world.sim.host("api", move || {
            let (api, nodes) = (api.clone(), nodes.clone());
            async move {
                // A restarted API server keeps its storage; its clients lost their connections and
                // watches and must recover.
                api.drop_watches();
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", API_PORT)).await?;
                let mut cluster = Cluster::new(api.clone(), Box::new(AlwaysReady));
                for node in &nodes {
                    cluster.add_node(node);
                }
                tokio::spawn(cluster.run(CancellationToken::new()));
                http::serve_turmoil(api, listener).await;
                Ok(())
            }
        });
        if config.operator {
            world.sim.host("operator", move || {
                let clock = clock.clone();
                async move {
                    // The kubelet restarts the container whenever the program exits (lost lease,
                    // fatal error), with the usual doubling back-off.
                    let mut backoff = Duration::from_secs(10);
                    loop {
                        match run_operator(clock.clone()).await {
                            Ok(()) => tracing::info!("operator exited"),
                            Err(e) => tracing::warn!(error = %e, "operator exited with an error"),
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(300));
                    }
                }
            });
        }
        world
    }

    /// Creates objects in-process, as `kubectl create -f` would (errors are returned per object).
    pub fn create_all(&self, objects: impl IntoIterator<Item = Value>) -> Vec<Result<Value, crate::api::ApiError>> {
        objects.into_iter().map(|o| self.api.create_object(o, "kubectl")).collect()
    }

    /// Advances simulated time by `duration`.
    pub fn run_for(&mut self, duration: Duration) -> turmoil::Result {
        let until = self.sim.elapsed() + duration;
        while self.sim.elapsed() < until {
            self.sim.step()?;
        }
        self.clock.publish(self.sim.elapsed());
        Ok(())
    }

    /// Steps until `done` holds (checked every simulated 100 ms) or `limit` passes; returns
    /// whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&ApiServer) -> bool) -> turmoil::Result<bool> {
        let until = self.sim.elapsed() + limit;
        while self.sim.elapsed() < until {
            if done(&self.api) {
                return Ok(true);
            }
            self.run_for(Duration::from_millis(100))?;
        }
        Ok(done(&self.api))
    }

    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// The hash of every write the API server committed, in order: equal for equal runs.
    pub fn trace_hash(&self) -> String {
        self.api.state().store.trace_hash()
    }

    pub fn set_api_faults(&self, faults: Faults) {
        self.api.set_faults(faults);
    }

    /// Marks a node Ready or lost, as its kubelet's heartbeats would.
    pub fn set_node_ready(&self, node: &str, ready: bool) {
        crate::cluster::set_node_ready(&self.api, node, ready);
    }

    pub fn partition(&mut self, a: &str, b: &str) {
        self.sim.partition(a, b);
    }

    pub fn repair(&mut self, a: &str, b: &str) {
        self.sim.repair(a, b);
    }

    pub fn crash(&mut self, host: &str) {
        self.sim.crash(host);
    }

    pub fn bounce(&mut self, host: &str) {
        self.sim.bounce(host);
    }
}

/// The operator program as `sv-operator run` wires it, on the simulated network.
async fn run_operator(clock: Arc<SimClock>) -> turmoil::Result {
    use sv_operator::controller::leader::LeaderConfig;
    use sv_operator::controller::{self, RunOptions, metrics::Metrics};
    use sv_operator::plan::Settings;
    use sv_operator::telemetry::Health;

    let client = kube_client("api", API_PORT)?;
    let settings = Settings::default();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let options = RunOptions {
        leader: Some(LeaderConfig::new(&settings.operator_namespace, "operator-0")),
        settings,
        instance: "operator-0".into(),
    };
    let result = controller::run(client, options, clock, metrics, Health::new(), CancellationToken::new()).await;
    result.map_err(|e| e.to_string().into())
}
