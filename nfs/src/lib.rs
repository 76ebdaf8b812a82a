//! `sv-nfs`: the NFS server that holds and serves one SharedVolume.
//!
//! NFSv3 and MOUNT v3 (plus portmap GETPORT) on one TCP port, exporting a local directory, with
//! handles that survive restarts and moves ([`handle`]), honest durability and a capacity limit
//! ([`fs`]), and a transport-generic server ([`server`]) so the simulation runs it on simulated
//! sockets.

pub mod fs;
pub mod handle;
#[cfg(feature = "program")]
pub mod health;
pub mod metrics;
#[cfg(feature = "program")]
pub mod program;
pub mod proto;
pub mod rpc;
pub mod server;
pub mod xdr;

/// Random bytes (handle keys, write verifiers): through `sv_common::entropy` in the program, so
/// that the simulation's seed decides them; the operating system's in a build without it (the
/// fuzz target).
pub(crate) fn random_bytes(out: &mut [u8]) -> std::io::Result<()> {
    #[cfg(feature = "program")]
    let filled = sv_common::entropy::fill(out);
    #[cfg(not(feature = "program"))]
    let filled = getrandom::fill(out);
    filled.map_err(|e| std::io::Error::other(e.to_string()))
}
