//! The crate's integration tests as one test binary: one binary per file cost a link and tens of
//! MB of disk each in CI. Run one file's tests with `cargo test -p sv-nfs --test suite -- FILE::`.

mod common;

mod accounting;
mod identity;
mod libnfs;
mod model;
mod observability;
mod operations;
mod program;
mod rpc_robustness;
mod scratch;
mod simulated;
