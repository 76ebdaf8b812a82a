//! The volume as a mounted directory: system calls.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{DirEntry, Kind, Meta, ReadFile, VolumeFs, WriteFile};
use crate::nofollow;
use crate::paths::RelPath;

/// Directories worked on at once: on a kernel NFS mount every call is a round trip to the
/// server, and the kernel makes the changes of one directory one at a time (it holds the
/// directory's lock), so changes in different directories are what can overlap.
const PARALLEL_DIRS: usize = 16;

/// A mounted directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFs;

impl LocalFs {
    pub fn shared() -> std::sync::Arc<dyn VolumeFs> {
        std::sync::Arc::new(LocalFs)
    }
}

fn kind_of(file_type: std::fs::FileType) -> Kind {
    if file_type.is_file() {
        Kind::File
    } else if file_type.is_dir() {
        Kind::Dir
    } else if file_type.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

impl VolumeFs for LocalFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn WriteFile>> {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
        Ok(Box::new(LocalWrite(file)))
    }

    fn open_regular(&self, root: &Path, rel: &RelPath) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(nofollow::open_regular(root, rel)?))
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<Meta> {
        std::fs::hard_link(original, link)?;
        self.metadata(link)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Meta { kind: kind_of(meta.file_type()), len: meta.len() })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind: kind_of(entry.file_type()?),
            });
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write_durably(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(data)?;
        file.sync_all()?;
        close_checked(file)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_all(&self, dir: &Path) -> io::Result<()> {
        // One syncfs for the whole revision instead of an fsync per file: it writes back and
        // commits every dirty page of the file system and reports any write error seen on it
        // since `dir` was opened, or earlier that nobody has reported yet (Linux 5.8+).
        let dir = File::open(dir)?;
        rustix::fs::syncfs(&dir).map_err(io::Error::from)
    }

    fn free_bytes(&self, root: &Path) -> io::Result<u64> {
        let vfs = rustix::fs::statvfs(root)?;
        Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
    }

    fn parallel_dirs(&self) -> usize {
        PARALLEL_DIRS
    }

    fn local_path(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

struct LocalWrite(File);

impl WriteFile for LocalWrite {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.0.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn close(self: Box<Self>) -> io::Result<()> {
        close_checked(self.0)
    }
}

impl ReadFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// Closes a file and reports the error a plain drop would swallow: on NFS a write that failed
/// on the server often surfaces only here.
fn close_checked(file: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken out of the `File` that owned it, so it is open and nothing else
    // will close it.
    if unsafe { libc::close(fd) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
