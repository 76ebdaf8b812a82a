//! SharedVolume operator library: the public API types, validation, planning and the controller.
//!
//! Decisions are pure functions ([`validation`], [`plan`]) kept apart from I/O ([`controller`]), so
//! they can be tested exhaustively and replayed by the simulation.

pub mod api;
pub mod clock;
pub mod controller;
pub mod lease;
pub mod manifests;
pub mod names;
pub mod offline;
pub mod plan;
pub mod redact;
pub mod telemetry;
pub mod testing;
pub mod units;
pub mod validation;

/// Selects ring as the process's TLS crypto provider. A workspace build compiles rustls with more
/// than one provider (different dependencies ask for different ones), and rustls then refuses to
/// guess: every program and test that builds a `kube::Client` calls this first. Safe to repeat.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
