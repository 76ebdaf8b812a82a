//! Why a sync failed, worded for the volume's status: what went wrong and, where possible, what
//! to do. Messages never contain credentials (see [`crate::credentials::Redactor`]).

use std::time::Duration;

use crate::paths::PathError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The volume's configuration cannot be synced (missing credential file, unsupported option).
    #[error("configuration: {0}")]
    Config(String),
    /// The source could not be reached or refused the connection.
    #[error("source unreachable: {0}")]
    Unreachable(String),
    /// The source refused the credentials.
    #[error("authentication failed: {0}; check the credentials Secret")]
    Auth(String),
    /// The SSH server's host key is not the one the volume trusts.
    #[error("SSH host key rejected: {0}")]
    HostKey(String),
    /// The source answered, but not with what was asked for.
    #[error("source error: {0}")]
    Source(String),
    /// The content cannot be mirrored safely (hostile paths, symlinks out of the tree, submodules).
    #[error("refused content: {0}")]
    Content(String),
    #[error("refused content: {0}")]
    Path(#[from] PathError),
    #[error(
        "the source holds at least {needed} bytes, more than the volume's capacity of {capacity} bytes; raise spec.storage.capacity"
    )]
    Capacity { needed: u64, capacity: u64 },
    /// The volume has too little free space for the new revision beside the published one.
    #[error(
        "the volume is full: the new revision needs at least {needed} more bytes and {free} are free; the published revision stays while the next is built, so a source that changes entirely needs twice its size plus the syncer's caches; raise spec.storage.capacity"
    )]
    VolumeFull { needed: u64, free: u64 },
    /// The volume refused a write for want of space (`ENOSPC`, `EDQUOT`).
    #[error(
        "the volume is full: it refused a write of the new revision ({0}); the published revision stays while the next is built, so a source that changes entirely needs twice its size plus the syncer's caches; raise spec.storage.capacity"
    )]
    NoSpace(std::io::Error),
    #[error("the sync did not finish within syncTimeout ({0:?}); the published tree is unchanged")]
    Timeout(Duration),
    #[error("volume I/O: {0}")]
    Io(std::io::Error),
    /// Another syncer pod of the volume may hold its Lease now.
    #[error("this syncer could not renew the volume's Lease in time, so another may hold it; nothing was published")]
    Fenced,
}

impl SyncError {
    pub fn content(message: impl Into<String>) -> Self {
        SyncError::Content(message.into())
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Config(_) => "config",
            SyncError::Unreachable(_) => "unreachable",
            SyncError::Auth(_) => "auth",
            SyncError::HostKey(_) => "host-key",
            SyncError::Source(_) => "source",
            SyncError::Content(_) | SyncError::Path(_) => "content",
            SyncError::Capacity { .. } => "capacity",
            SyncError::VolumeFull { .. } | SyncError::NoSpace(_) => "volume-full",
            SyncError::Timeout(_) => "timeout",
            SyncError::Io(_) => "io",
            SyncError::Fenced => "fenced",
        }
    }
}

impl From<std::io::Error> for SyncError {
    /// A full volume is told as such, not as an I/O error: on the managed NFS server it is the
    /// capacity being reached (`NOSPC`), which the user fixes by raising it.
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => SyncError::NoSpace(e),
            _ => SyncError::Io(e),
        }
    }
}
