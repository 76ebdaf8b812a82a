//! What a call can fail with.

use nfs3_types::nfs3::nfsstat3;

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// The server answered with an error status.
    #[error("the NFS server answered {0}")]
    Status(nfsstat3),
    /// The call did not get an answer (connection lost, refused, garbled reply), after the
    /// configured retries.
    #[error("NFS call failed: {0}")]
    Rpc(String),
    /// Mounting the export failed.
    #[error("mounting {path:?} failed: {reason}")]
    Mount { path: String, reason: String },
}

impl NfsError {
    /// The `errno` a file system call gets for this error, as the Linux NFS client maps it.
    pub fn errno(&self) -> i32 {
        match self {
            Self::Status(status) => status_errno(*status),
            Self::Rpc(_) | Self::Mount { .. } => libc_consts::EIO,
        }
    }

    pub fn status(&self) -> Option<nfsstat3> {
        match self {
            Self::Status(s) => Some(*s),
            _ => None,
        }
    }
}

/// `errno` values (Linux), kept here so that the client does not need libc.
pub mod libc_consts {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENODEV: i32 = 19;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const EDQUOT: i32 = 122;
    pub const ESTALE: i32 = 116;
    pub const EREMOTE: i32 = 66;
    pub const EBADHANDLE: i32 = 521;
    pub const ETOOSMALL: i32 = 525;
    pub const ESERVERFAULT: i32 = 526;
    pub const EBADTYPE: i32 = 527;
    pub const EJUKEBOX: i32 = 528;
    pub const EOPNOTSUPP: i32 = 95;
}

/// The Linux NFS client's mapping (`nfs_stat_to_errno`), where the status has an errno of its own.
pub fn status_errno(status: nfsstat3) -> i32 {
    use libc_consts::*;
    match status {
        nfsstat3::NFS3_OK => 0,
        nfsstat3::NFS3ERR_PERM => EPERM,
        nfsstat3::NFS3ERR_NOENT => ENOENT,
        nfsstat3::NFS3ERR_IO => EIO,
        nfsstat3::NFS3ERR_NXIO => ENXIO,
        nfsstat3::NFS3ERR_ACCES => EACCES,
        nfsstat3::NFS3ERR_EXIST => EEXIST,
        nfsstat3::NFS3ERR_XDEV => EXDEV,
        nfsstat3::NFS3ERR_NODEV => ENODEV,
        nfsstat3::NFS3ERR_NOTDIR => ENOTDIR,
        nfsstat3::NFS3ERR_ISDIR => EISDIR,
        nfsstat3::NFS3ERR_INVAL => EINVAL,
        nfsstat3::NFS3ERR_FBIG => EFBIG,
        nfsstat3::NFS3ERR_NOSPC => ENOSPC,
        nfsstat3::NFS3ERR_ROFS => EROFS,
        nfsstat3::NFS3ERR_MLINK => EMLINK,
        nfsstat3::NFS3ERR_NAMETOOLONG => ENAMETOOLONG,
        nfsstat3::NFS3ERR_NOTEMPTY => ENOTEMPTY,
        nfsstat3::NFS3ERR_DQUOT => EDQUOT,
        nfsstat3::NFS3ERR_STALE => ESTALE,
        nfsstat3::NFS3ERR_REMOTE => EREMOTE,
        nfsstat3::NFS3ERR_BADHANDLE => EBADHANDLE,
        nfsstat3::NFS3ERR_NOT_SYNC => EIO,
        nfsstat3::NFS3ERR_BAD_COOKIE => EIO,
        nfsstat3::NFS3ERR_NOTSUPP => EOPNOTSUPP,
        nfsstat3::NFS3ERR_TOOSMALL => ETOOSMALL,
        nfsstat3::NFS3ERR_SERVERFAULT => ESERVERFAULT,
        nfsstat3::NFS3ERR_BADTYPE => EBADTYPE,
        nfsstat3::NFS3ERR_JUKEBOX => EJUKEBOX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_volume_is_enospc_and_a_stale_handle_estale() {
        assert_eq!(NfsError::Status(nfsstat3::NFS3ERR_NOSPC).errno(), 28);
        assert_eq!(NfsError::Status(nfsstat3::NFS3ERR_STALE).errno(), 116);
        assert_eq!(NfsError::Rpc("reset".into()).errno(), 5);
    }
}
