//! The volume through the syncer's own NFSv3 client, mounted at a path as a kernel mount would be.
//!
//! Calls are made with `futures::executor::block_on` on the calling thread, over connections
//! that complete without an async runtime (`sv_nfs_client::blocking`). Directory handles are kept
//! by path; a handle the server calls stale (a restart that lost it, a directory replaced) is
//! forgotten and the path looked up again once.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_types::nfs3::{Nfs3Option, fattr3, ftype3, nfs_fh3, nfsstat3, sattr3, stable_how};
use sv_nfs_client::{ClientConfig, NfsClient, NfsError};

use super::{DirEntry, Kind, Meta, ReadFile, VolumeFs, WriteFile};
use crate::nofollow::refused;
use crate::paths::RelPath;

/// Runs one client call to its end on this thread. The client's connection pool is a tokio
/// semaphore, which counts against tokio's cooperative budget when called from a tokio task (the
/// syncer calls from its async tasks too, as it would make system calls): once the task's budget
/// is spent, every poll would answer "not yet" until the task yields, which a blocked thread never
/// does. So the budget is switched off for these calls.
fn wait<F: std::future::Future>(call: F) -> F::Output {
    futures::executor::block_on(tokio::task::unconstrained(call))
}

/// Bytes per WRITE and READ (sv-nfs's `wtmax` and `rtmax`).
const IO_SIZE: usize = 1 << 20;

/// Where and how the volume is mounted.
#[derive(Clone, Debug)]
pub struct NfsFsConfig {
    /// The server, the exported path (the writer's `/.sv-writer-<token>` for sv-nfs) and the
    /// credential the calls carry.
    pub client: ClientConfig,
    /// The path the volume appears at, as `--data-dir` names it.
    pub mount_point: PathBuf,
    /// A local directory for what must be on a local file system ([`VolumeFs::local_path`]).
    pub local_dir: PathBuf,
    /// Directories staged at once, each on a thread of its own, so that calls overlap (one
    /// makes every run replay the same order of calls).
    pub parallel_dirs: usize,
}

/// The volume through NFS.
pub struct NfsFs<C: Connector> {
    inner: Arc<Inner<C>>,
}

struct Inner<C: Connector> {
    client: NfsClient<C>,
    mount_point: PathBuf,
    local_dir: PathBuf,
    parallel_dirs: usize,
    /// Handles of directories by their path below the mount point.
    dirs: Mutex<HashMap<Vec<Vec<u8>>, nfs_fh3>>,
}

impl<C: Connector> std::fmt::Debug for NfsFs<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsFs")
            .field("server", &self.inner.client.config().addr)
            .field("mount_point", &self.inner.mount_point)
            .finish_non_exhaustive()
    }
}

impl<C> NfsFs<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    /// Mounts the export (MOUNT, then one connection).
    pub fn mount(connector: C, config: NfsFsConfig) -> io::Result<Self> {
        let client = wait(NfsClient::connect(connector, config.client)).map_err(io_error)?;
        std::fs::create_dir_all(&config.local_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                mount_point: config.mount_point,
                local_dir: config.local_dir,
                parallel_dirs: config.parallel_dirs.max(1),
                dirs: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// An NFS error as the system call on a kernel mount would have failed: the `errno` of the
/// status (so `NOSPC` stays "no space", `EXIST` "already exists"), or an I/O error that says what
/// happened to the call. A failed MOUNT does not name the exported path: the writer's path holds
/// its token, a secret.
fn io_error(e: NfsError) -> io::Error {
    match e {
        NfsError::Status(status) => io::Error::from_raw_os_error(sv_nfs_client::error::status_errno(status)),
        NfsError::Mount { reason, .. } => io::Error::other(format!("MOUNT of the export failed: {reason}")),
        other => io::Error::other(other.to_string()),
    }
}

fn kind_of(attributes: &fattr3) -> Kind {
    match attributes.type_ {
        ftype3::NF3REG => Kind::File,
        ftype3::NF3DIR => Kind::Dir,
        ftype3::NF3LNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

fn is_stale(e: &NfsError) -> bool {
    matches!(e.status(), Some(nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE))
}

fn not_a_directory() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOTDIR)
}

impl<C> Inner<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    /// `path`'s components below the mount point.
    fn components(&self, path: &Path) -> io::Result<Vec<Vec<u8>>> {
        let rest = path.strip_prefix(&self.mount_point).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not on the NFS volume mounted at {}", path.display(), self.mount_point.display()),
            )
        })?;
        let mut out = Vec::new();
        for component in rest.components() {
            match component {
                Component::Normal(name) => out.push(name.as_bytes().to_vec()),
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} does not name a place on the volume", path.display()),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The parent directory's components and the last name.
    fn split(&self, path: &Path) -> io::Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let mut parts = self.components(path)?;
        let name = parts.pop().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the volume's root cannot be created, moved or removed")
        })?;
        Ok((parts, name))
    }

    fn forget_dirs(&self) {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The handle of the directory at `parts`, looked up one component at a time (a symlink on
    /// the way is not a directory: links are never followed).
    fn dir(&self, parts: &[Vec<u8>]) -> Result<nfs_fh3, NfsError> {
        if let Some(fh) = self.dirs.lock().unwrap_or_else(|e| e.into_inner()).get(parts) {
            return Ok(fh.clone());
        }
        let mut fh = self.client.root();
        for (i, part) in parts.iter().enumerate() {
            if let Some(known) = self.dirs.lock().unwrap_or_else(|e| e.into_inner()).get(&parts[..=i]) {
                fh = known.clone();
                continue;
            }
            let (next, attributes) = wait(self.client.lookup(&fh, part))?;
            if attributes.type_ != ftype3::NF3DIR {
                return Err(NfsError::Status(nfsstat3::NFS3ERR_NOTDIR));
            }
            self.dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(parts[..=i].to_vec(), next.clone());
            fh = next;
        }
        Ok(fh)
    }

    /// Runs `call` on the handle of directory `parts`; a stale handle is forgotten and the call
    /// made once more on a fresh one.
    fn in_dir<T>(&self, parts: &[Vec<u8>], call: impl Fn(&nfs_fh3) -> Result<T, NfsError>) -> io::Result<T> {
        let first = self.dir(parts).and_then(|fh| call(&fh));
        match first {
            Err(e) if is_stale(&e) => {
                self.forget_dirs();
                self.dir(parts).and_then(|fh| call(&fh)).map_err(io_error)
            }
            other => other.map_err(io_error),
        }
    }

    /// The handle and attributes of what `path` names (the root for the mount point itself).
    fn lookup(&self, path: &Path) -> io::Result<(nfs_fh3, fattr3)> {
        let mut parts = self.components(path)?;
        let Some(name) = parts.pop() else {
            let root = self.client.root();
            let attributes = wait(self.client.getattr(&root)).map_err(io_error)?;
            return Ok((root, attributes));
        };
        self.in_dir(&parts, |dir| wait(self.client.lookup(dir, &name)))
    }

    fn write_chunk(&self, fh: &nfs_fh3, mut offset: u64, mut data: &[u8], stable: stable_how) -> io::Result<[u8; 8]> {
        let mut verifier = None;
        while !data.is_empty() {
            let written = wait(self.client.write(fh, offset, data, stable)).map_err(io_error)?;
            if written.count == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "the NFS server wrote nothing"));
            }
            same_verifier(&mut verifier, written.verifier)?;
            let count = (written.count as usize).min(data.len());
            data = &data[count..];
            offset += count as u64;
        }
        Ok(verifier.unwrap_or_default())
    }
}

/// Keeps the first write verifier seen and fails when a later one differs: the server restarted
/// in between and may have lost what it had not committed.
fn same_verifier(seen: &mut Option<[u8; 8]>, now: [u8; 8]) -> io::Result<()> {
    match seen {
        Some(first) if *first != now => Err(io::Error::other(
            "the NFS server restarted while the file was written (its write verifier changed), so writes it had not committed may be lost",
        )),
        Some(_) => Ok(()),
        None => {
            *seen = Some(now);
            Ok(())
        }
    }
}

impl<C> VolumeFs for NfsFs<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let inner = &self.inner;
        let (parent, name) = inner.split(path)?;
        inner.in_dir(&parent, |dir| wait(inner.client.mkdir(dir, &name, 0o755))).map(|_| ())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let inner = &self.inner;
        let parts = inner.components(path)?;
        for i in 0..parts.len() {
            let (parent, name) = (&parts[..i], &parts[i]);
            let made = inner.in_dir(parent, |dir| wait(inner.client.mkdir(dir, name, 0o755)));
            match made {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => {
                    other?;
                }
            }
        }
        // What was there already must be a directory.
        inner.in_dir(&parts, |_| Ok(()))
    }

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn WriteFile>> {
        let inner = &self.inner;
        let (parent, name) = inner.split(path)?;
        let (fh, _) = inner.in_dir(&parent, |dir| wait(inner.client.create(dir, &name, mode, true)))?;
        Ok(Box::new(NfsWrite { inner: self.inner.clone(), fh, pending: Vec::new(), offset: 0, verifier: None }))
    }

    fn open_regular(&self, root: &Path, rel: &RelPath) -> io::Result<Box<dyn ReadFile>> {
        let inner = &self.inner;
        let mut parts = inner.components(root)?;
        let names: Vec<&str> = rel.components().collect();
        let Some((last, parents)) = names.split_last() else {
            return Err(refused(rel, "it is empty"));
        };
        parts.extend(parents.iter().map(|p| p.as_bytes().to_vec()));
        let (fh, attributes) = match inner.in_dir(&parts, |dir| wait(inner.client.lookup(dir, last.as_bytes()))) {
            Ok(found) => found,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(refused(rel, "a symlink is on its path")),
            Err(e) => return Err(e),
        };
        match attributes.type_ {
            ftype3::NF3REG => {
                Ok(Box::new(NfsRead { inner: self.inner.clone(), fh, position: 0, size: attributes.size }))
            }
            ftype3::NF3LNK => Err(refused(rel, "it is a symlink")),
            _ => Err(refused(rel, "it is not a regular file")),
        }
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<Meta> {
        let inner = &self.inner;
        let (fh, _) = inner.lookup(original)?;
        let (parent, name) = inner.split(link)?;
        // LINK's reply carries the file's attributes after the link: no second call to check it.
        let attributes = inner.in_dir(&parent, |dir| wait(inner.client.link(&fh, dir, &name)))?;
        Ok(Meta { kind: kind_of(&attributes), len: attributes.size })
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let inner = &self.inner;
        let (parent, name) = inner.split(link)?;
        let target = target.as_os_str().as_bytes();
        inner.in_dir(&parent, |dir| wait(inner.client.symlink(dir, &name, target))).map(|_| ())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let (fh, attributes) = self.inner.lookup(path)?;
        if attributes.type_ != ftype3::NF3LNK {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let target = wait(self.inner.client.readlink(&fh)).map_err(io_error)?;
        Ok(PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&target))))
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        let (_, attributes) = self.inner.lookup(path)?;
        Ok(Meta { kind: kind_of(&attributes), len: attributes.size })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let inner = &self.inner;
        let (from_parent, from_name) = inner.split(from)?;
        let (to_parent, to_name) = inner.split(to)?;
        let to_dir = inner.in_dir(&to_parent, |dir| Ok(dir.clone()))?;
        let renamed = inner.in_dir(&from_parent, |dir| wait(inner.client.rename(dir, &from_name, &to_dir, &to_name)));
        // A directory moved takes the paths below it along.
        inner.forget_dirs();
        renamed
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let inner = &self.inner;
        let (parent, name) = inner.split(path)?;
        inner.in_dir(&parent, |dir| wait(inner.client.remove(dir, &name)))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let inner = &self.inner;
        let (parent, name) = inner.split(path)?;
        let (fh, attributes) = inner.lookup(path)?;
        if attributes.type_ != ftype3::NF3DIR {
            return Err(not_a_directory());
        }
        let emptied = empty_dir(inner, &fh);
        inner.forget_dirs();
        emptied?;
        inner.in_dir(&parent, |dir| wait(inner.client.rmdir(dir, &name)))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let inner = &self.inner;
        let parts = inner.components(path)?;
        let entries = inner.in_dir(&parts, |dir| wait(inner.client.read_dir(dir)))?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let kind = match &entry.attributes {
                Some(attributes) => kind_of(attributes),
                None => {
                    let (_, attributes) = inner.in_dir(&parts, |dir| wait(inner.client.lookup(dir, &entry.name)))?;
                    kind_of(&attributes)
                }
            };
            out.push(DirEntry { name: String::from_utf8_lossy(&entry.name).into_owned(), kind });
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let (fh, attributes) = self.inner.lookup(path)?;
        if attributes.type_ != ftype3::NF3REG {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a file", path.display())));
        }
        wait(self.inner.client.read_all(&fh)).map_err(io_error)
    }

    fn write_durably(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let inner = &self.inner;
        let (parent, name) = inner.split(path)?;
        let (fh, attributes) = inner.in_dir(&parent, |dir| wait(inner.client.create(dir, &name, 0o644, false)))?;
        if attributes.size != 0 {
            let truncate = sattr3 { size: Nfs3Option::Some(0), ..sattr3::default() };
            wait(inner.client.setattr(&fh, truncate)).map_err(io_error)?;
        }
        for (i, chunk) in data.chunks(IO_SIZE).enumerate() {
            inner.write_chunk(&fh, (i * IO_SIZE) as u64, chunk, stable_how::FILE_SYNC)?;
        }
        Ok(())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        // The server made the directory's changes durable before it answered them.
        Ok(())
    }

    fn sync_all(&self, _dir: &Path) -> io::Result<()> {
        // Every file was committed, and its errors reported, when it was closed.
        Ok(())
    }

    fn free_bytes(&self, _root: &Path) -> io::Result<u64> {
        Ok(wait(self.inner.client.fsstat()).map_err(io_error)?.abytes)
    }

    fn parallel_dirs(&self) -> usize {
        self.inner.parallel_dirs
    }

    fn local_path(&self, path: &Path) -> PathBuf {
        let inner = &self.inner;
        let rest = path.strip_prefix(&inner.mount_point).unwrap_or(path);
        let rest = rest.strip_prefix("/").unwrap_or(rest);
        let local = inner.local_dir.join(rest);
        if let Some(parent) = local.parent() {
            // Best effort: whoever uses the path reports what is missing.
            let _ = std::fs::create_dir_all(parent);
        }
        local
    }
}

/// Removes everything in the directory `fh`.
fn empty_dir<C>(inner: &Inner<C>, fh: &nfs_fh3) -> io::Result<()>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    for entry in wait(inner.client.read_dir(fh)).map_err(io_error)? {
        let (handle, attributes) = match (entry.handle, entry.attributes) {
            (Some(handle), Some(attributes)) => (handle, attributes),
            _ => wait(inner.client.lookup(fh, &entry.name)).map_err(io_error)?,
        };
        if attributes.type_ == ftype3::NF3DIR {
            empty_dir(inner, &handle)?;
            wait(inner.client.rmdir(fh, &entry.name)).map_err(io_error)?;
        } else {
            wait(inner.client.remove(fh, &entry.name)).map_err(io_error)?;
        }
    }
    Ok(())
}

/// A new file: UNSTABLE writes of up to [`IO_SIZE`], committed at close.
struct NfsWrite<C: Connector> {
    inner: Arc<Inner<C>>,
    fh: nfs_fh3,
    pending: Vec<u8>,
    /// Where `pending` goes in the file.
    offset: u64,
    verifier: Option<[u8; 8]>,
}

impl<C> NfsWrite<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    fn send(&mut self, all: bool) -> io::Result<()> {
        while self.pending.len() >= IO_SIZE || (all && !self.pending.is_empty()) {
            let n = self.pending.len().min(IO_SIZE);
            let verifier = self.inner.write_chunk(&self.fh, self.offset, &self.pending[..n], stable_how::UNSTABLE)?;
            same_verifier(&mut self.verifier, verifier)?;
            self.pending.drain(..n);
            self.offset += n as u64;
        }
        Ok(())
    }
}

impl<C> WriteFile for NfsWrite<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(data);
        self.send(false)
    }

    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        let attributes = sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() };
        wait(self.inner.client.setattr(&self.fh, attributes)).map_err(io_error).map(|_| ())
    }

    fn size(&mut self) -> io::Result<u64> {
        self.send(true)?;
        Ok(wait(self.inner.client.getattr(&self.fh)).map_err(io_error)?.size)
    }

    fn close(mut self: Box<Self>) -> io::Result<()> {
        self.send(true)?;
        let verifier = wait(self.inner.client.commit(&self.fh)).map_err(io_error)?;
        same_verifier(&mut self.verifier, verifier)
    }
}

/// A regular file read with READs of up to [`IO_SIZE`].
struct NfsRead<C: Connector> {
    inner: Arc<Inner<C>>,
    fh: nfs_fh3,
    position: u64,
    /// The size when it was opened (for seeking from the end).
    size: u64,
}

impl<C> Read for NfsRead<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let count = buf.len().min(IO_SIZE) as u32;
        let (data, _) = wait(self.inner.client.read(&self.fh, self.position, count)).map_err(io_error)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl<C> Seek for NfsRead<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let position = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = position.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(self.position)
    }
}

impl<C> ReadFile for NfsRead<C>
where
    C: Connector + 'static,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    fn size(&self) -> io::Result<u64> {
        Ok(wait(self.inner.client.getattr(&self.fh)).map_err(io_error)?.size)
    }
}
