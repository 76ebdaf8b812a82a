//! SharedVolume operator library: the public API types, validation, planning and the controller.
//!
//! Decisions are pure functions ([`validation`], [`plan`]) kept apart from I/O ([`controller`]), so
//! they can be tested exhaustively and replayed by the simulation.

pub mod api;
pub mod clock;
pub mod controller;
pub mod manifests;
pub mod names;
pub mod offline;
pub mod plan;
pub mod telemetry;
pub mod testing;
pub mod units;
pub mod validation;
