//! `sv-nfs-client`: an NFSv3 client for the places where a pod would use the kernel's.
//!
//! - [`client::NfsClient`] speaks NFSv3 (and MOUNT, to find the export's root) over any
//!   [`nfs3_client::net::Connector`]: real TCP ([`client::TcpConnector`]) or the simulation's
//!   sockets. It keeps a small pool of connections, reconnects after a connection is lost, and
//!   answers with typed results and `errno`-like errors.
//! - [`blocking`]: connections that need no async runtime (blocking TCP, a server in the same
//!   process), for callers that speak NFS from plain threads.
//! - [`fuse`] (feature `fuse`) mounts an export as a FUSE file system: `sv-nfs-mount`. This
//!   machine has no kernel NFS client; the FUSE mount stands in for it so that unchanged programs
//!   (the syncer, rclone, a shell) read and write through NFS with real system calls. It behaves
//!   as the kernel client does where it matters here — writes are UNSTABLE and committed when
//!   the file is closed or synced, so a write the server lost or refused surfaces at `close` or
//!   `fsync` — and differs where the docs say (no replay of uncommitted writes after a server
//!   restart: the close fails instead).

pub mod blocking;
pub mod client;
pub mod error;
#[cfg(feature = "fuse")]
pub mod fuse;

pub use client::{ClientConfig, NfsClient, TcpConnector};
pub use error::NfsError;
