//! A node's page cache, as far as losing it matters: what `sv-nfs` wrote without syncing is gone
//! when its node is lost (power cut, kernel panic), while a crashed process loses nothing it
//! wrote. The world installs a [`PageCache`] as its thread's `sv_common::durability` journal: it
//! copies a file before its first unsynced write since its last sync, forgets the copy when the
//! file is synced, and when a node is lost puts back the copies of the files under that node's
//! NFS exports. So an NFS server that acknowledged a FILE_SYNC write without syncing it, or a
//! client that trusted an UNSTABLE write without COMMIT, loses data in the simulation as it would
//! on a cluster. The journal is shared: threads that call an NFS server in-process (the syncer's
//! blocking threads) install it too ([`SharedPageCache`]).
//!
//! Only file contents are modelled: directory entries (creates, renames, removes) are taken as
//! durable when made.
//!
//! The same journal models full disks ([`PageCache::set_full`]): a file under a full directory
//! cannot grow (`sv-nfs`'s write fails with `ENOSPC` before `pwrite`, as on a full filesystem);
//! creating, renaming and removing files, and writing over what a file already holds, still work.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A file written since its last sync, and its contents as of that sync.
struct Dirty {
    file: std::fs::File,
    synced_contents: Vec<u8>,
}

/// See the module documentation.
#[derive(Default)]
pub struct PageCache {
    /// By device and inode.
    dirty: Mutex<BTreeMap<(u64, u64), Dirty>>,
    /// Directories whose disk is full.
    full: Mutex<std::collections::BTreeSet<PathBuf>>,
}

/// A [`PageCache`] to install on any thread (the journal of a thread is an `Rc`).
#[derive(Clone, Default)]
pub struct SharedPageCache(pub Arc<PageCache>);

impl sv_common::durability::Journal for SharedPageCache {
    fn before_unsynced_write(&self, fd: BorrowedFd<'_>) {
        self.0.before_unsynced_write(fd);
    }

    fn synced(&self, fd: BorrowedFd<'_>) {
        self.0.synced(fd);
    }

    fn has_room(&self, fd: BorrowedFd<'_>, bytes: u64) -> bool {
        self.0.has_room(fd, bytes)
    }
}

fn key(file: &std::fs::File) -> Option<(u64, u64)> {
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

impl sv_common::durability::Journal for PageCache {
    fn before_unsynced_write(&self, fd: BorrowedFd<'_>) {
        let Ok(file) = fd.try_clone_to_owned().map(std::fs::File::from) else { return };
        let Some(key) = key(&file) else { return };
        let mut dirty = self.dirty();
        if dirty.contains_key(&key) {
            return;
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut synced_contents = vec![0; usize::try_from(size).unwrap_or(0)];
        if file.read_exact_at(&mut synced_contents, 0).is_err() {
            return;
        }
        dirty.insert(key, Dirty { file, synced_contents });
    }

    fn synced(&self, fd: BorrowedFd<'_>) {
        let Ok(file) = fd.try_clone_to_owned().map(std::fs::File::from) else { return };
        if let Some(key) = key(&file) {
            self.dirty().remove(&key);
        }
    }

    fn has_room(&self, fd: BorrowedFd<'_>, _bytes: u64) -> bool {
        let full = self.full.lock().unwrap_or_else(|e| e.into_inner());
        if full.is_empty() {
            return true;
        }
        let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else { return true };
        !full.iter().any(|dir| path.starts_with(dir))
    }
}

impl PageCache {
    fn dirty(&self) -> MutexGuard<'_, BTreeMap<(u64, u64), Dirty>> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts every file under `dir` written since its last sync back as it was then; returns
    /// the paths put back.
    pub fn lose_unsynced_under(&self, dir: &Path) -> Vec<PathBuf> {
        let mut lost = Vec::new();
        self.dirty().retain(|_, dirty| {
            let link = PathBuf::from(format!("/proc/self/fd/{}", dirty.file.as_raw_fd()));
            let Ok(path) = std::fs::read_link(&link) else { return true };
            if !path.starts_with(dir) {
                return true;
            }
            // A file removed since is gone either way.
            if !path.to_string_lossy().ends_with(" (deleted)") {
                let restored = dirty.file.set_len(dirty.synced_contents.len() as u64).and_then(|()| {
                    dirty.file.write_all_at(&dirty.synced_contents, 0)?;
                    dirty.file.sync_all()
                });
                if restored.is_ok() {
                    lost.push(path);
                }
            }
            false
        });
        lost
    }

    /// Makes the disk under `dir` full (`true`) or gives it room again.
    pub fn set_full(&self, dir: &Path, full: bool) {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut disks = self.full.lock().unwrap_or_else(|e| e.into_inner());
        match full {
            true => disks.insert(dir),
            false => disks.remove(&dir),
        };
    }

    /// Files written and not synced since.
    pub fn dirty_files(&self) -> usize {
        self.dirty().len()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use sv_common::durability::Journal;

    use super::*;

    #[test]
    fn a_lost_node_takes_what_was_written_since_the_last_sync_and_nothing_synced() {
        let dir = tempfile::tempdir().expect("a directory");
        let cache = PageCache::default();
        let write = |name: &str, contents: &[u8]| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.path().join(name))
                .expect("open");
            cache.before_unsynced_write(file.as_fd());
            file.set_len(0).expect("truncate");
            file.write_all_at(contents, 0).expect("write");
            file
        };
        std::fs::write(dir.path().join("unsynced"), b"as synced").expect("seed");
        write("unsynced", b"later, not synced");
        let synced = write("synced", b"written, then synced");
        cache.synced(synced.as_fd());
        write("never-synced", b"x");
        assert_eq!(cache.dirty_files(), 2);

        let other = tempfile::tempdir().expect("another directory");
        assert!(cache.lose_unsynced_under(other.path()).is_empty(), "only files under the directory");
        let lost = cache.lose_unsynced_under(dir.path());
        assert_eq!(lost.len(), 2, "{lost:?}");
        let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read");
        assert_eq!(read("unsynced"), b"as synced");
        assert_eq!(read("synced"), b"written, then synced");
        assert_eq!(read("never-synced"), b"", "a new file never synced is empty again");
        assert_eq!(cache.dirty_files(), 0);
    }

    #[test]
    fn a_full_disk_has_no_room_for_its_files_to_grow_until_it_is_freed() {
        let (full, other) = (tempfile::tempdir().expect("a directory"), tempfile::tempdir().expect("another"));
        let cache = PageCache::default();
        let open = |dir: &Path| std::fs::File::create(dir.join("file")).expect("create");
        let (in_full, in_other) = (open(full.path()), open(other.path()));
        assert!(cache.has_room(in_full.as_fd(), 1), "no disk is full yet");
        cache.set_full(full.path(), true);
        assert!(!cache.has_room(in_full.as_fd(), 1));
        assert!(cache.has_room(in_other.as_fd(), 1), "only the full disk's files");
        cache.set_full(full.path(), false);
        assert!(cache.has_room(in_full.as_fd(), 1));
    }
}
