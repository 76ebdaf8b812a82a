//! Building a revision: a staging directory filled by a source, with a manifest of what it holds.
//! Files whose version did not change since the previous revision are hard links to it, so an
//! incremental sync writes only what changed and two revisions cost little more space than one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::SyncError;
use crate::paths::{Node, RelPath, check_link_target, resolve_link};
use crate::volume_fs::{Kind, LocalFs, ReadFile, VolumeFs, WriteFile};

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
#[derive(Debug)]
pub struct Stage {
    fs: Arc<dyn VolumeFs>,
    dir: PathBuf,
    previous: Option<Previous>,
    entries: BTreeMap<RelPath, Entry>,
    bytes: u64,
    capacity: Option<u64>,
    /// Bytes written (not linked from the previous revision).
    transferred: u64,
    /// Free space on the volume when the stage began (what the NFS server will still accept),
    /// and the bytes this stage has written since (new files and copies; links cost nothing).
    free: Option<u64>,
    new_bytes: u64,
}

/// A finished revision, ready to publish.
#[derive(Debug)]
pub struct StagedTree {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub transferred: u64,
}

impl Default for Stage {
    fn default() -> Self {
        Self::new(PathBuf::new(), None, None)
    }
}

impl Stage {
    /// A stage in the directory `dir` of a mounted volume.
    pub fn new(dir: PathBuf, previous: Option<Previous>, capacity: Option<u64>) -> Self {
        Self::on(LocalFs::shared(), dir, previous, capacity)
    }

    /// A stage in the directory `dir` of the volume behind `fs`.
    pub fn on(fs: Arc<dyn VolumeFs>, dir: PathBuf, previous: Option<Previous>, capacity: Option<u64>) -> Self {
        Self {
            fs,
            dir,
            previous,
            entries: BTreeMap::new(),
            bytes: 0,
            capacity,
            transferred: 0,
            free: None,
            new_bytes: 0,
        }
    }

    /// Limits what the stage may write to `free` bytes.
    pub fn with_free_space(mut self, free: u64) -> Self {
        self.free = Some(free);
        self
    }

    /// Counts a download spooled into the volume for this stage against its free space.
    pub fn count_spooled(&mut self, bytes: u64) {
        self.new_bytes = self.new_bytes.saturating_add(bytes);
    }

    /// Fails when writing `more` new bytes (beyond those already written) would not fit in the
    /// volume's free space. Downloads spooled into the volume are checked here too.
    pub fn check_space(&self, more: u64) -> Result<(), SyncError> {
        match self.free {
            Some(free) if self.new_bytes.saturating_add(more) > free => {
                Err(SyncError::VolumeFull { needed: self.new_bytes.saturating_add(more), free })
            }
            _ => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a download for this stage is kept while it is read back (an archive to unpack): on
    /// the volume when it is mounted, so that it counts against its space.
    pub fn spool_path(&self) -> PathBuf {
        self.fs.local_path(&self.dir.with_extension("download"))
    }

    pub fn previous(&self) -> Option<&Previous> {
        self.previous.as_ref()
    }

    /// The previous revision's entry at `path`.
    pub fn previous_entry(&self, path: &RelPath) -> Option<&Entry> {
        self.previous.as_ref().and_then(|p| p.manifest.entries.get(path))
    }

    /// The previous revision's file at `path`, opened without following links: the file, its
    /// recorded size and mode. `None` when the previous revision has no such file, or what is on
    /// disk there is not a regular file of the recorded size any more.
    pub fn previous_file(&self, path: &RelPath) -> Option<(Box<dyn ReadFile>, u64, bool)> {
        let previous = self.previous.as_ref()?;
        let Entry::File { size, executable, .. } = previous.manifest.entries.get(path)? else {
            return None;
        };
        let file = self.fs.open_regular(&previous.dir, path).ok()?;
        (file.size().ok()? == *size).then_some((file, *size, *executable))
    }

    /// What this stage already holds at `path`.
    pub fn entry(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// A file this stage already holds, opened without following links.
    pub fn open_staged(&self, path: &RelPath) -> Result<Box<dyn ReadFile>, SyncError> {
        match self.entries.get(path) {
            Some(Entry::File { .. }) => Ok(self.fs.open_regular(&self.dir, path)?),
            _ => Err(SyncError::content(format!("{path} is not a file of this tree"))),
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
        self.fs
            .create_dir(&parent.under(&self.dir))
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
        self.fs.create_dir(&path.under(&self.dir))?;
        self.entries.insert(path.clone(), Entry::Dir);
        Ok(())
    }

    /// Links `path` from the previous revision when its version is unchanged; returns whether it
    /// did (false: the caller must fetch the file).
    pub fn reuse(&mut self, path: &RelPath, version: &str) -> Result<bool, SyncError> {
        let fetch = self.reuse_all(vec![(path.clone(), version.to_string(), ())])?;
        Ok(fetch.is_empty())
    }

    /// [`Stage::reuse`] for many files at once: links every file whose version is unchanged from
    /// the previous revision, several directories at a time, and returns the candidates that
    /// must be fetched. On an NFS mount each link is a round trip to the server, and the kernel
    /// makes the links of one directory one at a time: links into different directories are
    /// what can overlap.
    pub fn reuse_all<T>(
        &mut self,
        candidates: Vec<(RelPath, String, T)>,
    ) -> Result<Vec<(RelPath, String, T)>, SyncError> {
        let Some(previous_dir) = self.previous.as_ref().map(|p| p.dir.clone()) else {
            return Ok(candidates);
        };
        let mut fetch = Vec::new();
        let mut links: Vec<Reused<T>> = Vec::new();
        let mut planned = 0u64;
        for (path, version, extra) in candidates {
            match self.previous_entry(&path).cloned() {
                Some(Entry::File { size, executable, version: old }) if old == version => {
                    planned = planned.saturating_add(size);
                    self.check_capacity(planned)?;
                    self.claim(&path)?;
                    links.push(Reused { path, size, executable, version, extra });
                }
                _ => fetch.push((path, version, extra)),
            }
        }
        let plan: Vec<(&RelPath, u64)> = links.iter().map(|l| (&l.path, l.size)).collect();
        let linked = link_forward(self.fs.as_ref(), &previous_dir, &self.dir, &plan);
        for (link, linked) in links.into_iter().zip(linked) {
            let Reused { path, size, executable, version, extra } = link;
            if linked? {
                self.bytes += size;
                self.entries.insert(path, Entry::File { size, executable, version });
            } else if !self.copy_previous(&previous_dir, &path, size, executable, &version)? {
                fetch.push((path, version, extra));
            }
        }
        Ok(fetch)
    }

    /// Copies a previous file that could not be linked (some file systems and NFS servers refuse
    /// hard links), reading it without following links; false when it is not a regular file of
    /// the recorded size any more (then it is fetched again).
    fn copy_previous(
        &mut self,
        previous_dir: &Path,
        path: &RelPath,
        size: u64,
        executable: bool,
        version: &str,
    ) -> Result<bool, SyncError> {
        let Ok(from) = self.fs.open_regular(previous_dir, path) else {
            return Ok(false);
        };
        let mut to = self.create_file_claimed(path, executable)?;
        to.write_from(from)?;
        if to.written != size {
            drop(to);
            self.fs.remove_file(&path.under(&self.dir))?;
            return Ok(false);
        }
        to.commit_reused(version)?;
        Ok(true)
    }

    /// Starts writing a new file at `path`.
    pub fn create_file(&mut self, path: &RelPath, executable: bool) -> Result<StagedFile<'_>, SyncError> {
        self.claim(path)?;
        self.create_file_claimed(path, executable)
    }

    /// Starts a file of a known `size` that is written while the stage goes on with other files
    /// (a large download beside many small ones). Its size counts against the capacity and the
    /// free space at once, so the files written meanwhile are checked against it; it is recorded
    /// by [`Stage::commit_reserved`] and must then hold exactly `size` bytes.
    pub fn reserve_file(&mut self, path: &RelPath, executable: bool, size: u64) -> Result<ReservedFile, SyncError> {
        self.check_capacity(size)?;
        self.check_space(size)?;
        self.claim(path)?;
        let file = self.fs.create_new(&path.under(&self.dir), file_mode(executable))?;
        self.bytes += size;
        self.new_bytes += size;
        Ok(ReservedFile { path: path.clone(), file, written: 0, size, executable })
    }

    /// Records a file begun with [`Stage::reserve_file`], with the source's `version` of it.
    pub fn commit_reserved(&mut self, reserved: ReservedFile, version: &str) -> Result<(), SyncError> {
        let ReservedFile { path, file, size, written, executable } = reserved;
        if written != size {
            return Err(SyncError::Source(format!(
                "{path}: the source listed {size} bytes but sent {written}; it changed during the sync, the next one will fetch it again"
            )));
        }
        close_checked(&path, file, written, executable)?;
        self.transferred += size;
        self.entries.insert(path, Entry::File { size, executable, version: version.to_string() });
        Ok(())
    }

    /// Starts writing a file whose path this stage has already claimed.
    fn create_file_claimed(&mut self, path: &RelPath, executable: bool) -> Result<StagedFile<'_>, SyncError> {
        let file = self.fs.create_new(&path.under(&self.dir), file_mode(executable))?;
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

    /// [`Stage::write_file`] for many files at once, several directories at a time (see
    /// [`by_directory`]); fails as a whole when any file fails.
    pub fn write_files(&mut self, files: Vec<NewFile>) -> Result<(), SyncError> {
        let mut total = 0u64;
        for file in &files {
            total = total.saturating_add(file.data.len() as u64);
            self.check_capacity(total)?;
            self.check_space(total)?;
            self.claim(&file.path)?;
        }
        let paths: Vec<&RelPath> = files.iter().map(|f| &f.path).collect();
        let fs = self.fs.as_ref();
        let written = by_directory(&paths, fs.parallel_dirs(), |i| {
            let file = &files[i];
            write_whole(fs, &file.path.under(&self.dir), &file.data, file.executable)
                .map_err(|e| SyncError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", file.path))))
        });
        for (file, written) in files.into_iter().zip(written) {
            written?;
            let size = file.data.len() as u64;
            self.bytes += size;
            self.new_bytes += size;
            self.transferred += size;
            self.entries.insert(file.path, Entry::File { size, executable: file.executable, version: file.version });
        }
        Ok(())
    }

    /// Records a symlink, which must point inside the tree.
    pub fn symlink(&mut self, path: &RelPath, target: &str) -> Result<(), SyncError> {
        check_link_target(path, target)?;
        self.claim(path)?;
        self.fs.symlink(Path::new(target), &path.under(&self.dir))?;
        self.entries.insert(path.clone(), Entry::Symlink { target: target.to_string() });
        Ok(())
    }

    /// Finishes the tree: refuses it if any of its symlinks, followed through the tree's other
    /// links, leaves it; then makes everything written durable, so that a write that failed late
    /// (on NFS, often only at COMMIT) fails the sync instead of publishing a short file.
    pub fn finish(self, revision: &str, source: &str, meta: BTreeMap<String, String>) -> Result<StagedTree, SyncError> {
        check_links(&self.entries)?;
        self.fs.sync_all(&self.dir).map_err(|e| {
            SyncError::Io(std::io::Error::new(
                e.kind(),
                format!("writing the new revision to the volume failed ({e}); nothing was published"),
            ))
        })?;
        Ok(StagedTree {
            dir: self.dir,
            manifest: Manifest {
                revision: revision.to_string(),
                source: source.to_string(),
                entries: self.entries,
                meta,
            },
            transferred: self.transferred,
        })
    }
}

/// A whole file to write, with the source's version of it.
pub struct NewFile {
    pub path: RelPath,
    pub data: bytes::Bytes,
    pub executable: bool,
    pub version: String,
}

/// Whole small files on their way into a stage: written together ([`Stage::write_files`]) once
/// enough have come, and at the end ([`WriteBatch::flush`]).
#[derive(Default)]
pub struct WriteBatch {
    files: Vec<NewFile>,
    bytes: usize,
}

impl WriteBatch {
    const FILES: usize = 256;
    const BYTES: usize = 32 << 20;

    pub fn push(&mut self, stage: &mut Stage, file: NewFile) -> Result<(), SyncError> {
        self.bytes += file.data.len();
        self.files.push(file);
        if self.files.len() >= Self::FILES || self.bytes >= Self::BYTES { self.flush(stage) } else { Ok(()) }
    }

    pub fn flush(&mut self, stage: &mut Stage) -> Result<(), SyncError> {
        self.bytes = 0;
        let files = std::mem::take(&mut self.files);
        if files.is_empty() { Ok(()) } else { stage.write_files(files) }
    }

    /// Writes every file `files` yields into `stage`, in batches; stops at the first error.
    pub async fn write_stream(
        stage: &mut Stage,
        files: impl futures::Stream<Item = Result<NewFile, SyncError>>,
    ) -> Result<(), SyncError> {
        use futures::StreamExt as _;
        let mut files = std::pin::pin!(files);
        let mut batch = WriteBatch::default();
        while let Some(file) = files.next().await {
            batch.push(stage, file?)?;
        }
        batch.flush(stage)
    }
}

/// A file linked forward from the previous revision.
struct Reused<T> {
    path: RelPath,
    size: u64,
    executable: bool,
    version: String,
    extra: T,
}

/// The mode of a staged file.
fn file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

/// Runs `work(i)` for every index of `paths`, the paths of one directory in order and up to
/// `parallel` directories at a time ([`VolumeFs::parallel_dirs`]); returns the results in the
/// order of `paths`. On NFS every call is a round trip to the server, and a kernel mount makes
/// the changes of one directory one at a time (it holds the directory's lock): changes in
/// different directories are what can overlap.
fn by_directory<R: Send>(paths: &[&RelPath], parallel: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut by_dir: BTreeMap<Option<RelPath>, Vec<usize>> = BTreeMap::new();
    for (i, path) in paths.iter().enumerate() {
        by_dir.entry(path.parent()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_dir.into_values().collect();
    let mut results: Vec<(usize, R)> = Vec::with_capacity(paths.len());
    if groups.len() <= 1 || parallel <= 1 {
        results.extend(groups.iter().flatten().map(|&i| (i, work(i))));
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::with_capacity(paths.len()));
        std::thread::scope(|scope| {
            for _ in 0..groups.len().min(parallel) {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(group) = groups.get(g) else { break };
                        mine.extend(group.iter().map(|&i| (i, work(i))));
                    }
                    done.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
                });
            }
        });
        results = done.into_inner().unwrap_or_else(|e| e.into_inner());
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Hard-links each file from `previous` into `stage` ([`by_directory`]); says for each whether
/// what was linked is a regular file of the recorded size. `linkat(2)` does not follow a symlink
/// at the source, so what is linked is whatever inode is there; checking the new name afterwards
/// cannot race, because that inode cannot change its type or leave. A link that is not what the
/// manifest says is removed again.
fn link_forward(
    fs: &dyn VolumeFs,
    previous: &Path,
    stage: &Path,
    links: &[(&RelPath, u64)],
) -> Vec<std::io::Result<bool>> {
    let paths: Vec<&RelPath> = links.iter().map(|(p, _)| *p).collect();
    by_directory(&paths, fs.parallel_dirs(), |i| {
        let (path, size) = links[i];
        let target = path.under(stage);
        match fs.hard_link(&path.under(previous), &target) {
            Err(_) => {
                // Whatever the link left (one made whose check then failed) goes: the name is
                // this stage's own, claimed for this file.
                let _ = fs.remove_file(&target);
                Ok(false)
            }
            Ok(meta) if meta.kind == Kind::File && meta.len == size => Ok(true),
            Ok(_) => fs.remove_file(&target).map(|()| false),
        }
    })
}

/// Writes a whole new file and checks every step: the write, the size on disk, the close.
fn write_whole(fs: &dyn VolumeFs, target: &Path, data: &[u8], executable: bool) -> std::io::Result<()> {
    let mode = file_mode(executable);
    let mut file = fs.create_new(target, mode)?;
    file.write_all(data)?;
    // The mode asked for, whatever the umask made of it.
    file.set_mode(mode)?;
    let on_disk = file.size()?;
    if on_disk != data.len() as u64 {
        return Err(std::io::Error::other(format!("wrote {} bytes but the volume holds {on_disk}", data.len())));
    }
    file.close()
}

/// Resolves every symlink of a finished tree through the tree's own links.
fn check_links(entries: &BTreeMap<RelPath, Entry>) -> Result<(), SyncError> {
    let lookup = |path: &str| match RelPath::parse(path).ok().and_then(|p| entries.get(&p)) {
        Some(Entry::Dir) => Node::Dir,
        Some(Entry::File { .. }) => Node::File,
        Some(Entry::Symlink { target }) => Node::Symlink(target.as_str()),
        None => Node::Absent,
    };
    for (path, entry) in entries {
        if let Entry::Symlink { target } = entry {
            resolve_link(path, target, lookup)?;
        }
    }
    Ok(())
}

/// Gives a finished file its mode and closes it, checking that it holds the `written` bytes: the
/// manifest records the size, and later syncs link the file forward on its word.
fn close_checked(
    path: &RelPath,
    mut file: Box<dyn WriteFile>,
    written: u64,
    executable: bool,
) -> Result<(), SyncError> {
    file.set_mode(file_mode(executable))?;
    let on_disk = file.size()?;
    if on_disk != written {
        return Err(SyncError::Io(std::io::Error::other(format!(
            "{path}: wrote {written} bytes but the volume holds {on_disk}"
        ))));
    }
    file.close().map_err(|e| SyncError::Io(std::io::Error::new(e.kind(), format!("{path}: closing failed: {e}"))))
}

/// A file of a known size written beside the stage ([`Stage::reserve_file`]); it holds no borrow
/// of the stage, so other files can be staged while it is written.
pub struct ReservedFile {
    path: RelPath,
    file: Box<dyn WriteFile>,
    written: u64,
    size: u64,
    executable: bool,
}

impl ReservedFile {
    /// Appends `data`; more than the reserved size is refused (the source changed under the sync,
    /// and the capacity was checked for the size it listed).
    pub fn write(&mut self, data: &[u8]) -> Result<(), SyncError> {
        let total = self.written.saturating_add(data.len() as u64);
        if total > self.size {
            return Err(SyncError::Source(format!(
                "{}: the source listed {} bytes but sent more; it changed during the sync, the next one will fetch it again",
                self.path, self.size
            )));
        }
        self.file.write_all(data)?;
        self.written = total;
        Ok(())
    }
}

/// A file being written into the stage; counts against the capacity as it grows.
pub struct StagedFile<'a> {
    stage: &'a mut Stage,
    path: RelPath,
    file: Box<dyn WriteFile>,
    written: u64,
    executable: bool,
}

impl StagedFile<'_> {
    pub fn write(&mut self, data: &[u8]) -> Result<(), SyncError> {
        self.stage.check_capacity(self.written + data.len() as u64)?;
        self.stage.check_space(self.written + data.len() as u64)?;
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Writes everything `reader` gives.
    pub fn write_from(&mut self, mut reader: impl std::io::Read) -> Result<(), SyncError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n])?;
        }
    }

    /// Records the file with the source's `version` of it.
    pub fn commit(self, version: &str) -> Result<(), SyncError> {
        self.commit_counted(version, true)
    }

    /// Records a file copied from the previous revision (not transferred from the source).
    fn commit_reused(self, version: &str) -> Result<(), SyncError> {
        self.commit_counted(version, false)
    }

    fn commit_counted(self, version: &str, transferred: bool) -> Result<(), SyncError> {
        close_checked(&self.path, self.file, self.written, self.executable)?;
        self.stage.bytes += self.written;
        self.stage.new_bytes += self.written;
        if transferred {
            self.stage.transferred += self.written;
        }
        self.stage.entries.insert(
            self.path,
            Entry::File { size: self.written, executable: self.executable, version: version.to_string() },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A previous revision holding `f` (4 bytes, version v1), whose file on disk a consumer of a
    /// writable volume replaced with a link to a file of the syncer's own machine.
    fn swapped_previous() -> (tempfile::TempDir, tempfile::TempDir, Previous) {
        let volume = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("token"), "SECR").expect("write");
        let previous = volume.path().join("rev1");
        std::fs::create_dir(&previous).expect("mkdir");
        std::os::unix::fs::symlink(outside.path().join("token"), previous.join("f")).expect("symlink");
        let path = RelPath::parse("f").expect("path");
        let manifest = Manifest {
            entries: BTreeMap::from([(path, Entry::File { size: 4, executable: false, version: "v1".into() })]),
            ..Manifest::default()
        };
        (volume, outside, Previous { dir: previous, manifest })
    }

    #[test]
    fn a_previous_file_swapped_for_a_link_is_neither_read_nor_linked() {
        let (volume, _outside, previous) = swapped_previous();
        let stage_dir = volume.path().join("staging");
        std::fs::create_dir(&stage_dir).expect("mkdir");
        let mut stage = Stage::new(stage_dir.clone(), Some(previous), None);
        let f = RelPath::parse("f").expect("path");
        assert!(stage.previous_file(&f).is_none(), "the link is not opened as the previous file");
        assert!(!stage.reuse(&f, "v1").expect("reuse"), "the link is not reused: the file is fetched again");
        assert!(std::fs::symlink_metadata(stage_dir.join("f")).is_err(), "nothing was left in the stage");
        stage.write_file(&f, b"real", false, "v1").expect("fetched again");
        let staged = stage.finish("r2", "s", BTreeMap::new()).expect("finish");
        assert_eq!(std::fs::read_to_string(staged.dir.join("f")).expect("read"), "real");
    }

    #[test]
    fn a_finished_tree_with_a_chained_escape_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stage = Stage::new(dir.path().to_path_buf(), None, None);
        let p = |s: &str| RelPath::parse(s).expect("path");
        stage.mkdir(&p("a/b/c")).expect("mkdir");
        // Created before the link it goes through: only the whole tree shows the escape.
        stage.symlink(&p("a/b/c/esc"), "up/../../../..").expect("the text alone stays inside");
        stage.symlink(&p("a/b/c/up"), "../../..").expect("inside");
        let error = stage.finish("r", "s", BTreeMap::new()).expect_err("refused");
        assert!(error.to_string().contains("a/b/c/esc"), "{error}");
    }

    #[test]
    fn a_reserved_file_counts_at_once_and_holds_exactly_the_size_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stage = Stage::new(dir.path().to_path_buf(), None, Some(10));
        let p = |s: &str| RelPath::parse(s).expect("path");
        let mut big = stage.reserve_file(&p("big"), false, 8).expect("8 of 10 bytes");
        // Written while the big file is still arriving: checked against its whole size.
        let error = stage.write_file(&p("small"), b"1234", false, "v").expect_err("8 + 4 > 10");
        assert!(matches!(error, SyncError::Capacity { needed: 12, capacity: 10 }), "{error}");
        stage.write_file(&p("two"), b"12", false, "v").expect("8 + 2 fits");
        let error = big.write(b"123456789").expect_err("more than listed");
        assert!(error.to_string().contains("listed 8 bytes but sent more"), "{error}");
        big.write(b"12345").expect("within the size");
        let error = stage.commit_reserved(big, "v").expect_err("short");
        assert!(error.to_string().contains("listed 8 bytes but sent 5"), "{error}");
        assert!(stage.entry(&p("big")).is_none(), "a short file is not recorded");

        let mut whole = Stage::new(dir.path().join("b"), None, Some(10));
        std::fs::create_dir(dir.path().join("b")).expect("mkdir");
        let mut file = whole.reserve_file(&p("x/big"), true, 8).expect("reserve");
        file.write(b"1234").expect("write");
        file.write(b"5678").expect("write");
        whole.commit_reserved(file, "v8").expect("commit");
        let staged = whole.finish("r", "s", BTreeMap::new()).expect("finish");
        assert_eq!(std::fs::read(staged.dir.join("x/big")).expect("read"), b"12345678");
        assert_eq!(staged.transferred, 8);
        assert!(matches!(
            staged.manifest.entries.get(&p("x/big")),
            Some(Entry::File { size: 8, executable: true, version }) if version == "v8"
        ));
    }
}
