//! The simulation harness: a simulated Kubernetes API server ([`api`]) that the unmodified kube
//! client, kube-runtime controllers and `kubectl` talk to.

pub mod api;
pub mod cluster;
pub mod examples;
pub mod net;
pub mod programs;
pub mod scenario;
pub mod world;

/// Logs of a simulation test, filtered by `RUST_LOG` and shown only for failing tests; a second
/// call does nothing.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
