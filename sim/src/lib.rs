//! The simulation harness: a simulated Kubernetes API server ([`api`]) that the unmodified kube
//! client, kube-runtime controllers and `kubectl` talk to.

// One seed replays a run only if tokio's own randomness (the order `select!` polls its branches
// in) comes from turmoil's seed, which needs tokio's unstable `RngSeed`. `.cargo/config.toml`
// sets the flag, but a RUSTFLAGS in the environment replaces it silently: refuse to build rather
// than run unseeded.
#[cfg(not(tokio_unstable))]
compile_error!(
    "sv-sim must be built with `--cfg tokio_unstable` (set in .cargo/config.toml); a RUSTFLAGS in \
     the environment replaces that setting: add `--cfg tokio_unstable` to it"
);

pub mod api;
pub mod cluster;
pub mod determinism;
pub mod examples;
pub mod explore;
pub mod install;
pub mod invariants;
pub mod logtap;
pub mod net;
pub mod os_random;
pub mod page_cache;
pub mod programs;
pub mod scenario;
pub mod serve;
pub mod summary;
pub mod teardown;
pub mod world;

/// Logs of a simulation test, filtered by `RUST_LOG` and shown only for failing tests; a second
/// call does nothing.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
