//! Building a revision: a staging directory filled by a source, with a manifest of what it holds.
//! Files whose version did not change since the previous revision are hard links to it, so an
//! incremental sync writes only what changed and two revisions cost little more space than one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SyncError;
use crate::paths::{RelPath, check_link_target};

/// One object of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A regular file; `version` is what the source says identifies its content (ETag, blob id,
    /// size and mtime, or a digest).
    File {
        size: u64,
        executable: bool,
        version: String,
    },
    Symlink {
        target: String,
    },
    Dir,
}

/// What a published revision holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The source's revision (commit, ETag, listing digest).
    pub revision: String,
    /// Identity of the source configuration; a revision of another source is never reused.
    pub source: String,
    pub entries: BTreeMap<RelPath, Entry>,
    /// What the source wants to remember between syncs (HTTP validators, for example).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.entries.values().map(|e| if let Entry::File { size, .. } = e { *size } else { 0 }).sum()
    }

    pub fn files(&self) -> u64 {
        self.entries.values().filter(|e| matches!(e, Entry::File { .. })).count() as u64
    }
}

/// The previous revision, when it came from the same source: its directory and manifest.
#[derive(Clone, Debug)]
pub struct Previous {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// A revision being built. (`Default` is an empty placeholder, left behind while the stage is lent
/// to a blocking thread.)
#[derive(Debug, Default)]
pub struct Stage {
    dir: PathBuf,
    previous: Option<Previous>,
    entries: BTreeMap<RelPath, Entry>,
    bytes: u64,
    capacity: Option<u64>,
    /// Bytes written (not linked from the previous revision).
    transferred: u64,
}

/// A finished revision, ready to publish.
#[derive(Debug)]
pub struct StagedTree {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub transferred: u64,
}

impl Stage {
    pub fn new(dir: PathBuf, previous: Option<Previous>, capacity: Option<u64>) -> Self {
        Self { dir, previous, entries: BTreeMap::new(), bytes: 0, capacity, transferred: 0 }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn previous(&self) -> Option<&Previous> {
        self.previous.as_ref()
    }

    /// The previous revision's entry at `path`.
    pub fn previous_entry(&self, path: &RelPath) -> Option<&Entry> {
        self.previous.as_ref().and_then(|p| p.manifest.entries.get(path))
    }

    /// The previous revision's file at `path`: its location, size and mode.
    pub fn previous_file(&self, path: &RelPath) -> Option<(PathBuf, u64, bool)> {
        let previous = self.previous.as_ref()?;
        match previous.manifest.entries.get(path)? {
            Entry::File { size, executable, .. } => Some((path.under(&previous.dir), *size, *executable)),
            _ => None,
        }
    }

    /// Bytes of file data in the stage so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    fn check_capacity(&self, more: u64) -> Result<(), SyncError> {
        match self.capacity {
            Some(capacity) if self.bytes.saturating_add(more) > capacity => {
                Err(SyncError::Capacity { needed: self.bytes.saturating_add(more), capacity })
            }
            _ => Ok(()),
        }
    }

    /// Creates the parent directories of `path`, recording them; a parent that is a file in this
    /// tree is a conflict (S3 keys `a` and `a/b`, for example).
    fn ensure_parents(&mut self, path: &RelPath) -> Result<(), SyncError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        match self.entries.get(&parent) {
            Some(Entry::Dir) => return Ok(()),
            Some(_) => {
                return Err(SyncError::content(format!("{parent} is both a file and a directory in the source")));
            }
            None => {}
        }
        self.ensure_parents(&parent)?;
        std::fs::create_dir(parent.under(&self.dir))
            .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })?;
        self.entries.insert(parent, Entry::Dir);
        Ok(())
    }

    fn claim(&mut self, path: &RelPath) -> Result<(), SyncError> {
        if self.entries.contains_key(path) {
            return Err(SyncError::content(format!("{path} appears twice in the source")));
        }
        self.ensure_parents(path)
    }

    /// Records a directory (empty directories are mirrored too).
    pub fn mkdir(&mut self, path: &RelPath) -> Result<(), SyncError> {
        if let Some(Entry::Dir) = self.entries.get(path) {
            return Ok(());
        }
        self.claim(path)?;
        std::fs::create_dir(path.under(&self.dir))?;
        self.entries.insert(path.clone(), Entry::Dir);
        Ok(())
    }

    /// Links `path` from the previous revision when its version is unchanged; returns whether it
    /// did (false: the caller must fetch the file).
    pub fn reuse(&mut self, path: &RelPath, version: &str) -> Result<bool, SyncError> {
        let Some(Entry::File { size, executable, version: old }) = self.previous_entry(path).cloned() else {
            return Ok(false);
        };
        if old != version {
            return Ok(false);
        }
        let Some(previous_dir) = self.previous.as_ref().map(|p| p.dir.clone()) else {
            return Ok(false);
        };
        self.check_capacity(size)?;
        self.claim(path)?;
        let source = path.under(&previous_dir);
        let target = path.under(&self.dir);
        if std::fs::hard_link(&source, &target).is_err() {
            // Some file systems (and some NFS servers) refuse hard links: copy instead.
            match std::fs::copy(&source, &target) {
                Ok(_) => {}
                // The previous file is gone or damaged: fetch it again.
                Err(_) => return Ok(false),
            }
        }
        self.bytes += size;
        self.entries.insert(path.clone(), Entry::File { size, executable, version: old });
        Ok(true)
    }

    /// Starts writing a new file at `path`.
    pub fn create_file(&mut self, path: &RelPath, executable: bool) -> Result<StagedFile<'_>, SyncError> {
        self.claim(path)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path.under(&self.dir))?;
        Ok(StagedFile { stage: self, path: path.clone(), file, written: 0, executable })
    }

    /// Writes a whole file from memory.
    pub fn write_file(
        &mut self,
        path: &RelPath,
        data: &[u8],
        executable: bool,
        version: &str,
    ) -> Result<(), SyncError> {
        let mut f = self.create_file(path, executable)?;
        f.write(data)?;
        f.commit(version)
    }

    /// Records a symlink, which must point inside the tree.
    pub fn symlink(&mut self, path: &RelPath, target: &str) -> Result<(), SyncError> {
        check_link_target(path, target)?;
        self.claim(path)?;
        std::os::unix::fs::symlink(target, path.under(&self.dir))?;
        self.entries.insert(path.clone(), Entry::Symlink { target: target.to_string() });
        Ok(())
    }

    /// Finishes the tree.
    pub fn finish(self, revision: &str, source: &str, meta: BTreeMap<String, String>) -> StagedTree {
        StagedTree {
            dir: self.dir,
            manifest: Manifest {
                revision: revision.to_string(),
                source: source.to_string(),
                entries: self.entries,
                meta,
            },
            transferred: self.transferred,
        }
    }
}

/// A file being written into the stage; counts against the capacity as it grows.
pub struct StagedFile<'a> {
    stage: &'a mut Stage,
    path: RelPath,
    file: File,
    written: u64,
    executable: bool,
}

impl StagedFile<'_> {
    pub fn write(&mut self, data: &[u8]) -> Result<(), SyncError> {
        self.stage.check_capacity(self.written + data.len() as u64)?;
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Records the file with the source's `version` of it.
    pub fn commit(self, version: &str) -> Result<(), SyncError> {
        let mode = if self.executable { 0o755 } else { 0o644 };
        self.file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        drop(self.file);
        self.stage.bytes += self.written;
        self.stage.transferred += self.written;
        self.stage.entries.insert(
            self.path,
            Entry::File { size: self.written, executable: self.executable, version: version.to_string() },
        );
        Ok(())
    }
}
