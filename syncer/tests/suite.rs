//! The crate's integration tests as one test binary: one binary per file cost a link and tens of
//! MB of disk each in CI. Run one file's tests with `cargo test -p sv-syncer --test suite -- FILE::`.

mod common;

mod capacity;
mod git;
mod http;
mod program;
mod publish;
mod run_loop;
mod s3;
mod secrets;
mod sftp;
mod through_nfs;
