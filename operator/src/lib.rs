//! SharedVolume operator library: the public API types, validation, planning and the controller.
//!
//! Decisions are pure functions ([`validation`], [`plan`]) kept apart from I/O ([`controller`]), so
//! they can be tested exhaustively and replayed by the simulation.

pub mod controller;
pub mod offline;
pub mod plan;
pub mod program;
pub mod testing;

// The API, its validation and naming live in `sv-api` (shared with the webhook and the syncer);
// these re-exports keep `sv_operator::api::…` paths working for the operator's own modules.
pub use sv_api as api;
pub use sv_api::install_crypto_provider;
pub use sv_api::{clock, lease, manifests, names, redact, units, validation};
pub use sv_common::telemetry;
