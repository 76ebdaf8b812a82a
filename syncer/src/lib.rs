//! `sv-syncer`: keeps a SharedVolume equal to its external source.
//!
//! A sync fetches the source into a staging tree ([`tree`]) through one [`source::Source`] per
//! kind, and publishes it atomically ([`publish`]); every change to the volume goes through
//! [`volume_fs`] (system calls on a mount, or the syncer's own NFS client). The loop in [`run`] owns the schedule, honours
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
pub mod volume_fs;

pub use sv_api::install_crypto_provider;
