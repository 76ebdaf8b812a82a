//! `sv-syncer`: keeps a SharedVolume equal to its external source.
//!
//! A sync fetches the source into a staging tree ([`tree`]) through one [`source::Source`] per
//! kind, and publishes it atomically ([`publish`]). The loop in [`run`] owns the schedule, honours
//! `syncTimeout`, backs off on failure, and reports every result on the volume's status.

pub mod archive;
pub mod credentials;
pub mod error;
pub mod paths;
pub mod publish;
pub mod report;
pub mod run;
pub mod schedule;
pub mod source;
pub mod tree;

/// Selects ring as the process's TLS crypto provider (rustls has more than one compiled in, via
/// different dependencies, and then needs to be told). Safe to call repeatedly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
