//! The simulation's integration tests, as one test binary: each links the whole system (about
//! 110 MB with line tables), so a binary per file cost CI 2 GB of disk and a link per file.
//! Run one file's tests with `cargo test -p sv-sim --test suite -- scenarios::`.

mod common;

mod admission;
mod api_semantics;
mod bad_input;
mod bad_install;
mod consumers;
mod explore;
mod install;
mod kubectl;
mod kubectl_versions;
mod leader;
mod operator_cost;
mod programs;
mod rbac;
mod recorded_reviews;
mod scenarios;
mod serve;
mod transcript;
mod webhook;
mod world;
