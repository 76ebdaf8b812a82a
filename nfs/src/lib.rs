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
