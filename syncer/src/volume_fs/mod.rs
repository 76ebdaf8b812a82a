//! The file-system seam: every change the syncer makes to its volume goes through [`VolumeFs`].
//!
//! - [`LocalFs`] makes system calls on a mounted directory: the volume as a real pod has it (the
//!   kernel's NFS mount of the volume's `sv-nfs`), and any local directory in tests.
//! - [`NfsFs`] speaks NFSv3 itself with `sv-nfs-client`, mounted at a path as a kernel mount
//!   would be: the paths the rest of the syncer uses stay the same. The simulation runs the syncer
//!   this way against its simulated `sv-nfs` (so capacity, `NOSPC`, `COMMIT` errors and the
//!   server's caches meet the syncer as they do in a cluster), and `sv-syncer once --nfs` uses it
//!   to write to an `sv-nfs` over TCP without a mount.
//!
//! The seam is synchronous, as system calls are: staging runs on blocking threads. What each
//! implementation does where the two differ:
//!
//! | call | `LocalFs` | `NfsFs` |
//! |---|---|---|
//! | a new file's writes | `write(2)`, checked again at `close(2)` | `UNSTABLE` WRITEs, then COMMIT at close; a write verifier that changed in between (the server restarted and may have lost them) fails the close |
//! | [`VolumeFs::sync_all`] | `syncfs(2)`: reports write-back errors of the whole file system | nothing left to do: every file was committed when it was closed |
//! | [`VolumeFs::sync_dir`] | `fsync(2)` of the directory | nothing: the server makes namespace changes durable before it answers (RFC 1813 §4.8) |
//! | [`VolumeFs::free_bytes`] | `statvfs(2)` | FSSTAT |
//! | [`VolumeFs::local_path`] | the path itself | the same path under a local directory (downloads, the git cache and pinned host keys need a local file system) |

mod local;
mod nfs;

use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

pub use local::LocalFs;
pub use nfs::{NfsFs, NfsFsConfig};

use crate::paths::RelPath;

/// What a name on the volume is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Devices, sockets, FIFOs: never written by the syncer, never read by it either.
    Other,
}

/// A name's type and, for a regular file, its size (links are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub len: u64,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: Kind,
}

/// A file being written: what is written is on the volume (and any error of it reported) once
/// [`WriteFile::close`] returns.
pub trait WriteFile: Send {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Gives the file `mode`, whatever the umask made of the mode it was created with.
    fn set_mode(&mut self, mode: u32) -> io::Result<()>;
    /// The file's size on the volume.
    fn size(&mut self) -> io::Result<u64>;
    /// Finishes the file and reports what a plain drop would swallow: on NFS a write that failed
    /// on the server often surfaces only here.
    fn close(self: Box<Self>) -> io::Result<()>;
}

/// A regular file opened for reading.
pub trait ReadFile: Read + Seek + Send {
    fn size(&self) -> io::Result<u64>;
}

/// The operations the syncer makes on its volume. Paths are absolute paths under the volume's
/// mount path, as with system calls; none of the calls follows a symlink in the last component
/// (and [`VolumeFs::open_regular`] in none).
pub trait VolumeFs: Send + Sync + std::fmt::Debug {
    /// A new directory; `AlreadyExists` when the name is taken.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// A new regular file with `mode`; `AlreadyExists` when the name is taken.
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn WriteFile>>;
    /// The regular file `rel` below `root`, refusing a symlink anywhere on the way and anything
    /// that is not a regular file (see [`crate::nofollow`]).
    fn open_regular(&self, root: &Path, rel: &RelPath) -> io::Result<Box<dyn ReadFile>>;
    /// A new name `link` for what `original` names (not following a link there); returns what
    /// was linked, as the new name shows it.
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<Meta>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// What `path` is, without following a link there.
    fn metadata(&self, path: &Path) -> io::Result<Meta>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it (`NotFound` when there is none).
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// A whole (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Writes a whole file, replacing one of the name, and makes it durable.
    fn write_durably(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes the entries of a directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes every write to the volume durable and reports any that failed; `dir` is any
    /// directory of the volume.
    fn sync_all(&self, dir: &Path) -> io::Result<()>;
    /// Bytes the volume still accepts.
    fn free_bytes(&self, root: &Path) -> io::Result<u64>;
    /// How many directories staging works on at once (each on a thread of its own).
    fn parallel_dirs(&self) -> usize;
    /// Where a file the syncer keeps for `path` of the volume goes when it must be on a local
    /// file system (an archive being downloaded and read back, the git object cache, pinned SSH
    /// host keys).
    fn local_path(&self, path: &Path) -> PathBuf;
}
