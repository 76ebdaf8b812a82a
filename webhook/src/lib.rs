//! `sv-webhook`: the admission webhook of SharedVolume.
//!
//! - [`mutate`]: pods annotated `sharedvolume.sv` / `sharedvolume.csv` get their volumes, mounts
//!   and consumer labels, and their namespace's consumer PV/PVC.
//! - [`validate`]: volumes are checked with the operator's own validation before they are stored.
//! - [`certs`]: the webhook issues, stores and rotates its own certificates (or serves files).
//! - [`server`] and [`tls`]: HTTPS; [`review`]: AdmissionReview decoding; [`cluster`]: what the
//!   handlers read (watches in `serve`, files in `review`).
//! - [`program`]: the command line and the entry points `main.rs` and the simulation call.
//!
//! See `docs/webhook.md`.

pub mod certs;
pub mod cluster;
pub mod metrics;
pub mod mutate;
pub mod program;
pub mod review;
pub mod server;
pub mod tls;
pub mod validate;
