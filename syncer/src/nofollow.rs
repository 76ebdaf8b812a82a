//! Opening files of the volume without following symlinks.
//!
//! The syncer reads files it did not write in this sync: the previous revision's files (to compare
//! or link them) and earlier entries of an archive (tar hard links). Any of them may be a symlink,
//! put there by a hostile source or, on a writable volume, by a consumer; following one would read
//! a file of the syncer's own container (its ServiceAccount token, the mounted source credentials)
//! into the published volume. Every such open goes through [`open_regular`]: no component of the
//! path may be a symlink, the path may not leave the directory it is resolved in, and what is
//! opened must be a regular file.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::paths::RelPath;

const FILE_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::CLOEXEC).union(OFlags::NOFOLLOW).union(OFlags::NONBLOCK);
const DIR_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::CLOEXEC).union(OFlags::NOFOLLOW).union(OFlags::DIRECTORY).union(OFlags::NONBLOCK);

/// Opens `path` below `root` for reading, refusing symlinks anywhere on the way and anything
/// that is not a regular file.
pub fn open_regular(root: &Path, path: &RelPath) -> io::Result<File> {
    let dir = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(io::Error::from)?;
    let fd = match rustix::fs::openat2(
        &dir,
        path.as_str(),
        FILE_FLAGS,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Kernels before 5.6, and seccomp profiles that do not know openat2: walk by hand.
        Err(Errno::NOSYS | Errno::PERM) => open_by_components(dir, path)?,
        Err(Errno::LOOP | Errno::XDEV) => return Err(refused(path, "a symlink is on its path")),
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(refused(path, "it is not a regular file"));
    }
    Ok(File::from(fd))
}

/// The same walk, one component at a time, each opened with `O_NOFOLLOW`.
fn open_by_components(mut dir: OwnedFd, path: &RelPath) -> io::Result<OwnedFd> {
    let parts: Vec<&str> = path.components().collect();
    let Some((last, parents)) = parts.split_last() else {
        return Err(refused(path, "it is empty"));
    };
    for part in parents {
        dir = rustix::fs::openat(&dir, *part, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => refused(path, "a symlink is on its path"),
            e => e.into(),
        })?;
    }
    rustix::fs::openat(&dir, *last, FILE_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::LOOP => refused(path, "it is a symlink"),
        e => e.into(),
    })
}

pub(crate) fn refused(path: &RelPath, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{path} was not opened: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(p: &str) -> RelPath {
        RelPath::parse(p).expect("path")
    }

    #[test]
    fn links_anywhere_on_the_path_are_refused_and_files_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "token").expect("write");
        let root = dir.path();
        std::fs::create_dir(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/f"), "data").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("d/f", root.join("rel")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join("dirlink")).expect("symlink");
        std::os::unix::fs::symlink("d", root.join("inner")).expect("symlink");

        let mut text = String::new();
        io::Read::read_to_string(&mut open_regular(root, &rel("d/f")).expect("a plain file opens"), &mut text)
            .expect("read");
        assert_eq!(text, "data");
        for bad in ["abs", "rel", "dirlink/secret", "inner/f", "d"] {
            assert!(open_regular(root, &rel(bad)).is_err(), "{bad} must not open");
        }
        // The hand walk refuses the same.
        for bad in ["abs", "rel", "dirlink/secret", "inner/f"] {
            let dir = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).expect("root");
            assert!(open_by_components(dir, &rel(bad)).is_err(), "{bad} must not open by hand either");
        }
        let dir = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).expect("root");
        assert!(open_by_components(dir, &rel("d/f")).is_ok());
    }
}
