//! `sv-syncer`: keeps a SharedVolume equal to its external source.
//!
//! A sync fetches the source into a staging tree ([`tree`]) through one [`source::Source`] per
//! kind, and publishes it atomically ([`publish`]). The loop in [`run`] owns the schedule, honours
//! `syncTimeout`, backs off on failure, and reports every result on the volume's status.

pub mod archive;
pub mod credentials;
pub mod error;
pub mod nofollow;
pub mod paths;
pub mod program;
pub mod publish;
pub mod report;
pub mod run;
pub mod schedule;
pub mod source;
pub mod tree;

pub use sv_api::install_crypto_provider;
