//! The exported directory: every NFS operation as direct `*at` system calls on descriptors, never
//! on paths, and never following a symlink, so no request can reach outside the export.
//!
//! - Objects are named by persistent handles (see [`crate::handle`]) and resolved through an
//!   open-descriptor cache; a cached object whose link count fell to zero answers `STALE`.
//! - Acknowledged writes are durable: `FILE_SYNC` and `DATA_SYNC` writes are synced before the
//!   reply, `UNSTABLE` ones on `COMMIT`, and the write verifier changes on every start so clients
//!   resend what was not committed. Namespace changes sync their directories, except inside the
//!   writer's scratch trees (revisions being built), which are made durable as a whole before the
//!   writer's next change anywhere else, and cannot be renamed after a restart of the server (see
//!   [`ExportOptions::scratch_prefix`]).
//! - Capacity: the logical size of all regular files is kept against `capacity`; a write or
//!   truncate that would pass it fails with `NOSPC` before any byte is written.
//! - Identity: `AUTH_UNIX` credentials are only claims, so consumers' credentials are squashed
//!   as [`Identity`] says (root to the anonymous ids by default in the program), consumers may be
//!   limited to reading, and a protected top-level directory (the syncer's state) is read-only to
//!   them. Only the writer, who mounts the export through a secret path, is exempt; the
//!   [`Class`] sealed into every handle says which a request comes through.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nfs3_types::nfs3::{
    FSF3_CANSETTIME, FSF3_HOMOGENEOUS, FSF3_LINK, FSF3_SYMLINK, fattr3, ftype3, nfsstat3, nfstime3, specdata3, wcc_attr,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom, Stat, Timestamps};

use crate::handle::{
    Class, Fh, HandleCodec, HandleError, KernelHandle, constant_time_eq, name_to_handle, open_by_handle,
};
use crate::rpc::Credential;

/// Name of the server's own state directory at the export root, invisible to clients.
pub const STATE_DIR: &str = ".sv-nfs";
const KEY_FILE: &str = "handle-key";
/// Descriptors kept open for recently used objects.
const CACHE_CAPACITY: usize = 1024;
/// Largest READ or WRITE payload (also announced in FSINFO).
pub const MAX_IO: u32 = 1024 * 1024;
/// Stripes of the per-file size locks.
const SIZE_LOCK_STRIPES: usize = 64;

pub type NfsResult<T> = Result<T, nfsstat3>;

/// How the export is served.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub read_only: bool,
    /// Bytes of file data the export may hold; None for no limit beyond the disk.
    pub capacity: Option<u64>,
    /// Sync directories after namespace changes (create, remove, rename, ...).
    pub sync_namespace: bool,
    /// How consumers are identified and what they may change.
    pub identity: Identity,
    /// The mode the export's root directory is given when the export opens (`0o1777` lets
    /// squashed consumers create entries without removing the writer's or each other's).
    pub root_mode: Option<u32>,
    /// Directories of the protected directory whose names start with this, reached by the
    /// writer, are scratch trees (the syncer's `staging-<n>`). NFSv3 asks that every namespace
    /// change be durable before it is answered: a directory sync per file, which made an
    /// incremental sync cost one sync per unchanged file it links forward. Inside a scratch tree
    /// the changes are synced together instead, directory by directory, before the writer's next
    /// change outside scratch (the revision's manifest, the rename that publishes it). A server
    /// that restarts has forgotten what it had not synced, so it refuses to rename a scratch tree
    /// made before it started: a tree that may have lost entries is never published, and the
    /// writer builds it again.
    pub scratch_prefix: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            capacity: None,
            sync_namespace: true,
            identity: Identity::default(),
            root_mode: None,
            scratch_prefix: None,
        }
    }
}

/// Namespace changes inside the writer's scratch trees not yet made durable.
#[derive(Default)]
struct Deferred {
    /// Directories changed, by (device, inode), with a descriptor to sync them by.
    dirs: HashMap<(u64, u64), Arc<OwnedFd>>,
    /// Scratch trees made by the writer since this server started: the only ones it publishes.
    roots: HashSet<(u64, u64)>,
}

/// More changed directories than this are synced at once rather than held.
const MAX_DEFERRED_DIRS: usize = 4096;

/// Whose credentials a consumer's request is mapped to, as an NFS export's `root_squash` and
/// `all_squash` with `anonuid`/`anongid` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Squash {
    /// Credentials are taken as sent.
    #[default]
    None,
    /// uid 0 and gid 0 (also among the supplementary groups) become the anonymous ids.
    Root,
    /// Every request is made as the anonymous ids.
    All,
}

impl std::str::FromStr for Squash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Squash::None),
            "root" => Ok(Squash::Root),
            "all" => Ok(Squash::All),
            other => Err(format!("{other:?} is not a squash mode; use none, root or all")),
        }
    }
}

/// The identity policy of an export. Everything here applies to consumers only: requests through
/// the writer's mount (see `writer_path`) are taken as sent and may change everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub squash: Squash,
    pub anon_uid: u32,
    pub anon_gid: u32,
    /// Consumers may only read.
    pub consumer_read_only: bool,
    /// A top-level directory consumers may read but not change.
    pub protected_dir: Option<String>,
    /// The MOUNT path that gives the writer's class; without one there is no writer, and every
    /// client is a consumer.
    pub writer_path: Option<String>,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            squash: Squash::None,
            anon_uid: Credential::NOBODY,
            anon_gid: Credential::NOBODY,
            consumer_read_only: false,
            protected_dir: None,
            writer_path: None,
        }
    }
}

impl Identity {
    /// The credential a request of `class` is served as.
    pub fn map(&self, cred: &Credential, class: Class) -> Credential {
        if class.is_writer() {
            return cred.clone();
        }
        match self.squash {
            Squash::None => cred.clone(),
            Squash::All => Credential { uid: self.anon_uid, gid: self.anon_gid, gids: Vec::new() },
            Squash::Root => {
                let squash_gid = |g: u32| if g == 0 { self.anon_gid } else { g };
                Credential {
                    uid: if cred.uid == 0 { self.anon_uid } else { cred.uid },
                    gid: squash_gid(cred.gid),
                    gids: cred.gids.iter().map(|g| squash_gid(*g)).collect(),
                }
            }
        }
    }
}

/// Permission bits asked for.
pub mod want {
    pub const READ: u32 = 4;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 1;
}

/// A resolved object: its handle, kernel handle, and a descriptor (a directory opened for reading,
/// anything else `O_PATH`).
#[derive(Clone)]
pub struct Node {
    pub fh: Fh,
    kernel: KernelHandle,
    fd: Arc<OwnedFd>,
}

impl Node {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

struct CacheEntry {
    node: Node,
    data: Option<Arc<OwnedFd>>,
    data_writable: bool,
    last_used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Fh, CacheEntry>,
    tick: u64,
}

impl Cache {
    fn touch(&mut self, fh: &Fh) -> Option<&mut CacheEntry> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(fh)?;
        entry.last_used = tick;
        Some(entry)
    }

    fn insert(&mut self, node: Node) {
        if self.entries.len() >= CACHE_CAPACITY {
            // Drop the oldest eighth in one pass rather than one entry per insert.
            let mut ages: Vec<u64> = self.entries.values().map(|e| e.last_used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 8];
            self.entries.retain(|_, e| e.last_used > cutoff);
        }
        self.tick += 1;
        let fh = node.fh.clone();
        self.entries.insert(fh, CacheEntry { node, data: None, data_writable: false, last_used: self.tick });
    }
}

/// One entry of a directory listing.
pub struct DirEntry {
    pub name: Vec<u8>,
    pub fileid: u64,
    pub cookie: u64,
    /// Handle and attributes, for READDIRPLUS.
    pub plus: Option<(Fh, fattr3)>,
}

/// Listings kept open between pages.
const MAX_DIR_STREAMS: usize = 64;
/// Entries of the (inode, ctime) → handle cache.
const MAX_KNOWN_HANDLES: usize = 65_536;
/// How long a directory entry's handle and attributes may be answered from memory. Any change
/// made through the server clears them at once; the limit bounds staleness for changes made to
/// the disk behind the server's back. Linux clients cache attributes at least this long anyway
/// (`acregmin=3`).
pub const ENTRY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3);
const MAX_CACHED_ENTRIES: usize = 200_000;

struct CachedEntry {
    fh: Fh,
    attr: fattr3,
    at: known::Instant,
}

struct RawEntry {
    name: CString,
    ino: u64,
    cookie: u64,
}

/// A directory being listed: its descriptor, and entries already read from the kernel but not yet
/// sent (a page ends wherever the client's byte limit falls, a kernel read does not).
struct DirStream {
    fd: OwnedFd,
    pending: std::collections::VecDeque<RawEntry>,
    /// Cookie of the last entry sent: where the client continues.
    position: u64,
    exhausted: bool,
}

impl DirStream {
    fn open(dir: &Node, cookie: u64) -> NfsResult<Self> {
        let fd =
            rustix::fs::openat(dir.fd(), c".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(nfs_err)?;
        if cookie != 0 {
            rustix::fs::seek(&fd, SeekFrom::Start(cookie)).map_err(|_| nfsstat3::NFS3ERR_BAD_COOKIE)?;
        }
        Ok(Self { fd, pending: std::collections::VecDeque::new(), position: cookie, exhausted: false })
    }

    /// The next entry, reading one batch from the kernel when none is pending.
    fn next(&mut self) -> NfsResult<Option<RawEntry>> {
        if self.pending.is_empty() && !self.exhausted {
            let mut buf = Vec::with_capacity(32 * 1024);
            let mut raw = RawDir::new(&self.fd, buf.spare_capacity_mut());
            loop {
                match raw.next() {
                    Some(entry) => {
                        let entry = entry.map_err(nfs_err)?;
                        self.pending.push_back(RawEntry {
                            name: entry.file_name().to_owned(),
                            ino: entry.ino(),
                            cookie: entry.next_entry_cookie(),
                        });
                    }
                    None => {
                        self.exhausted = true;
                        break;
                    }
                }
                if raw.is_buffer_empty() {
                    break;
                }
            }
        }
        Ok(self.pending.pop_front())
    }
}

/// Attributes before an operation, for weak cache consistency.
pub fn wcc(st: &Stat) -> wcc_attr {
    let [_, mtime, ctime] = times(st);
    wcc_attr { size: st.st_size as u64, mtime, ctime }
}

/// Access, modification and change times of a stat result.
// The stat field types differ between architectures; on some the casts are no-ops.
#[allow(clippy::unnecessary_cast)]
fn times(st: &Stat) -> [nfstime3; 3] {
    [
        time(st.st_atime as i64, st.st_atime_nsec as i64),
        time(st.st_mtime as i64, st.st_mtime_nsec as i64),
        time(st.st_ctime as i64, st.st_ctime_nsec as i64),
    ]
}

/// (inode, ctime seconds, ctime nanoseconds): identifies one incarnation of an inode (a reused
/// inode number has a new ctime).
type Incarnation = (u64, i64, i64);

#[allow(clippy::unnecessary_cast)]
fn incarnation(st: &Stat) -> Incarnation {
    (st.st_ino, st.st_ctime as i64, st.st_ctime_nsec as i64)
}

fn time(secs: i64, nsecs: i64) -> nfstime3 {
    nfstime3 { seconds: secs.clamp(0, i64::from(u32::MAX)) as u32, nseconds: nsecs.clamp(0, 999_999_999) as u32 }
}

/// Maps an OS error to the NFS status that describes it.
pub fn status(e: &io::Error) -> nfsstat3 {
    match e.raw_os_error() {
        Some(libc::ENOENT) => nfsstat3::NFS3ERR_NOENT,
        Some(libc::EPERM) => nfsstat3::NFS3ERR_PERM,
        Some(libc::EACCES) => nfsstat3::NFS3ERR_ACCES,
        Some(libc::EEXIST) => nfsstat3::NFS3ERR_EXIST,
        Some(libc::EXDEV) => nfsstat3::NFS3ERR_XDEV,
        Some(libc::ENODEV | libc::ENXIO) => nfsstat3::NFS3ERR_NXIO,
        Some(libc::ENOTDIR) => nfsstat3::NFS3ERR_NOTDIR,
        Some(libc::EISDIR) => nfsstat3::NFS3ERR_ISDIR,
        Some(libc::EINVAL) => nfsstat3::NFS3ERR_INVAL,
        Some(libc::EFBIG) => nfsstat3::NFS3ERR_FBIG,
        Some(libc::ENOSPC | libc::EDQUOT) => nfsstat3::NFS3ERR_NOSPC,
        Some(libc::EROFS) => nfsstat3::NFS3ERR_ROFS,
        Some(libc::EMLINK) => nfsstat3::NFS3ERR_MLINK,
        Some(libc::ENAMETOOLONG) => nfsstat3::NFS3ERR_NAMETOOLONG,
        Some(libc::ENOTEMPTY) => nfsstat3::NFS3ERR_NOTEMPTY,
        Some(libc::ESTALE) => nfsstat3::NFS3ERR_STALE,
        Some(libc::ELOOP) => nfsstat3::NFS3ERR_NOTSUPP,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

/// The status of a handle the kernel would not open. As knfsd does (`nfsd_set_fh_dentry`), a
/// handle that cannot be decoded names nothing that still exists, whatever the file system gives
/// as the reason: ext4 has answered `EIO` for the freed inode of a deleted file while other files
/// were created around it, where a client must see `STALE` (and look the name up again). A lack
/// of resources or of the right to open by handle is not the handle's fault.
fn undecodable(e: &io::Error) -> nfsstat3 {
    match e.raw_os_error() {
        Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::ETIMEDOUT | libc::EPERM | libc::EACCES) => status(e),
        _ => nfsstat3::NFS3ERR_STALE,
    }
}

fn nfs_err(e: rustix::io::Errno) -> nfsstat3 {
    status(&io::Error::from(e))
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn is_reg(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// The export.
pub struct Export {
    dir: PathBuf,
    root: Node,
    /// The root as the writer reaches it.
    writer_root: Fh,
    root_dev: u64,
    root_ino: u64,
    codec: HandleCodec,
    fsid: u64,
    options: ExportOptions,
    /// Logical bytes of regular files.
    used: Mutex<u64>,
    /// Size changes of one file are made one at a time (by inode, striped), so that the growth
    /// a write or truncate settles is measured against the size it really started from.
    size_locks: Vec<Mutex<()>>,
    cache: Mutex<Cache>,
    /// Listings in progress, to continue without seeking.
    streams: Mutex<Vec<(Fh, DirStream)>>,
    /// Handles by (inode, ctime), so repeated listings skip `name_to_handle_at`.
    handles: Mutex<HashMap<(Incarnation, Class), Fh>>,
    /// Recent LOOKUP and READDIRPLUS answers by (directory, name).
    entries: Mutex<HashMap<(Fh, Vec<u8>), CachedEntry>>,
    running_as_root: bool,
    deferred: Mutex<Deferred>,
    /// Directory syncs made (at once, and deferred ones when flushed): what namespace changes
    /// cost, for `/metrics` and tests.
    dir_syncs: std::sync::atomic::AtomicU64,
}

impl Export {
    /// Opens `dir` for serving, creating the server's state (the handle key) on first use and
    /// counting what the export already holds.
    pub fn open(dir: &Path, options: ExportOptions) -> io::Result<Self> {
        let root_fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        if let Some(mode) = options.root_mode {
            rustix::fs::fchmod(&root_fd, Mode::from_raw_mode(mode & 0o7777))?;
        }
        let root_stat = rustix::fs::fstat(&root_fd)?;
        let key = load_or_create_key(&root_fd)?;
        let codec = HandleCodec::new(key);
        let kernel = name_to_handle(root_fd.as_fd(), c"", true)?;
        let fh = codec.seal(&kernel, Class::CONSUMER)?;
        let writer_root = codec.seal(&kernel, Class::WRITER)?;
        let fsid = u64::from_be_bytes(blake3::hash(&key).as_bytes()[..8].try_into().unwrap_or([0; 8]));
        let root = Node { fh, kernel, fd: Arc::new(root_fd) };
        let export = Self {
            dir: dir.to_path_buf(),
            root_dev: root_stat.st_dev,
            root_ino: root_stat.st_ino,
            root,
            writer_root,
            codec,
            fsid,
            options,
            used: Mutex::new(0),
            size_locks: (0..SIZE_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            cache: Mutex::new(Cache::default()),
            streams: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
            entries: Mutex::new(HashMap::new()),
            running_as_root: rustix::process::geteuid().is_root(),
            deferred: Mutex::new(Deferred::default()),
            dir_syncs: std::sync::atomic::AtomicU64::new(0),
        };
        let used = export.measure_usage()?;
        *export.used.lock().unwrap_or_else(|e| e.into_inner()) = used;
        Ok(export)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn root_fh(&self) -> &Fh {
        &self.root.fh
    }

    pub fn options(&self) -> &ExportOptions {
        &self.options
    }

    /// Logical bytes stored.
    pub fn used_bytes(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recounts the export, for data written to it behind the server's back.
    pub fn rescan_usage(&self) -> io::Result<u64> {
        let used = self.measure_usage()?;
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = used;
        Ok(used)
    }

    fn measure_usage(&self) -> io::Result<u64> {
        let mut total = 0u64;
        let mut linked: HashSet<(u64, u64)> = HashSet::new();
        let mut stack = vec![rustix::fs::openat(
            self.root.fd(),
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?];
        let mut buf = Vec::with_capacity(32 * 1024);
        let mut first = true;
        while let Some(dir) = stack.pop() {
            let at_root = std::mem::take(&mut first);
            let mut names = Vec::new();
            let mut raw = RawDir::new(&dir, buf.spare_capacity_mut());
            while let Some(entry) = raw.next() {
                let entry = entry?;
                let name = entry.file_name();
                if name == c"." || name == c".." || (at_root && name.to_bytes() == STATE_DIR.as_bytes()) {
                    continue;
                }
                names.push(name.to_owned());
            }
            for name in names {
                let st = match rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                if is_reg(&st) {
                    if st.st_nlink > 1 && !linked.insert((st.st_dev, st.st_ino)) {
                        continue;
                    }
                    total = total.saturating_add(st.st_size as u64);
                } else if is_dir(&st) {
                    match rustix::fs::openat(
                        &dir,
                        name.as_c_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => stack.push(fd),
                        Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(total)
    }

    // --- resolving handles ----------------------------------------------------------------------

    /// Resolves a handle from the wire, with the object's current attributes.
    pub fn resolve(&self, wire: &[u8]) -> NfsResult<(Node, Stat)> {
        let (fh, kernel) = self.codec.open(wire).map_err(|HandleError::Bad| nfsstat3::NFS3ERR_BADHANDLE)?;
        let cached = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.touch(&fh).map(|e| e.node.clone())
        };
        if let Some(node) = cached {
            let st = rustix::fs::fstat(node.fd()).map_err(nfs_err)?;
            if st.st_nlink == 0 {
                self.forget(&fh);
                return Err(nfsstat3::NFS3ERR_STALE);
            }
            return Ok((node, st));
        }
        let path_fd =
            open_by_handle(self.root.fd(), &kernel, libc::O_PATH | libc::O_CLOEXEC).map_err(|e| undecodable(&e))?;
        let st = rustix::fs::fstat(&path_fd).map_err(nfs_err)?;
        if st.st_nlink == 0 {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let fd = if is_dir(&st) {
            rustix::fs::openat(&path_fd, c".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(nfs_err)?
        } else {
            path_fd
        };
        let node = Node { fh, kernel, fd: Arc::new(fd) };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(node.clone());
        Ok((node, st))
    }

    fn forget(&self, fh: &Fh) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).entries.remove(fh);
    }

    /// A descriptor for reading or writing a regular file's data.
    fn data_fd(&self, node: &Node, writable: bool) -> NfsResult<Arc<OwnedFd>> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = cache.touch(&node.fh)
                && let Some(fd) = &entry.data
                && (entry.data_writable || !writable)
            {
                return Ok(fd.clone());
            }
        }
        let rw = writable || !self.options.read_only;
        let flags = if rw { libc::O_RDWR } else { libc::O_RDONLY };
        let fd = match open_by_handle(self.root.fd(), &node.kernel, flags | libc::O_CLOEXEC) {
            Ok(fd) => (Arc::new(fd), rw),
            Err(e) if !writable && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::ETXTBSY)) => {
                let fd = open_by_handle(self.root.fd(), &node.kernel, libc::O_RDONLY | libc::O_CLOEXEC)
                    .map_err(|e| status(&e))?;
                (Arc::new(fd), false)
            }
            Err(e) => return Err(status(&e)),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = cache.touch(&node.fh) {
            entry.data = Some(fd.0.clone());
            entry.data_writable = fd.1;
        }
        Ok(fd.0)
    }

    /// The handle of `name` in `dir` (which must already be resolved), of `class`.
    fn child_handle(&self, dir: BorrowedFd<'_>, name: &CStr, class: Class) -> NfsResult<Fh> {
        let kernel = name_to_handle(dir, name, false).map_err(|e| status(&e))?;
        self.codec.seal(&kernel, class).map_err(|_| nfsstat3::NFS3ERR_NOTSUPP)
    }

    /// The class of an entry of `dir`: the directory's own, and protected when a consumer enters
    /// the protected directory. (`..` is handled where it is looked up: climbing out of the
    /// protected directory reaches the root, which is not protected.)
    fn child_class(&self, dir: &Node, dir_st: &Stat, name: &[u8]) -> Class {
        let class = dir.fh.class();
        if self.is_protected_name(dir, dir_st, name) {
            class.protected()
        } else if self.is_scratch_root_name(dir, dir_st, name) {
            class.scratch()
        } else {
            class
        }
    }

    /// The class of an entry found by LOOKUP or READDIRPLUS, whose attributes are `st`: `..`
    /// that reaches the root leaves the protected directory, and `..` of a scratch tree's root
    /// leaves the scratch tree.
    fn found_class(&self, dir: &Node, dir_st: &Stat, name: &[u8], st: &Stat) -> Class {
        if name == b".." && self.is_root(st) {
            dir.fh.class().unprotected().unscratched()
        } else if name == b".." && dir.fh.class().is_scratch() && self.is_protected_dir(st) {
            dir.fh.class().unscratched()
        } else {
            self.child_class(dir, dir_st, name)
        }
    }

    /// Whether `name` in `dir` is (or would be) the root of one of the writer's scratch trees: a
    /// child of the protected directory named with the scratch prefix, reached by the writer.
    fn is_scratch_root_name(&self, dir: &Node, dir_st: &Stat, name: &[u8]) -> bool {
        let Some(prefix) = self.options.scratch_prefix.as_deref().filter(|p| !p.is_empty()) else {
            return false;
        };
        dir.fh.class().is_writer()
            && !dir.fh.class().is_scratch()
            && name.starts_with(prefix.as_bytes())
            && self.is_protected_dir(dir_st)
    }

    /// Whether `st` is the protected directory at the export's root.
    fn is_protected_dir(&self, st: &Stat) -> bool {
        let Some(name) = self.options.identity.protected_dir.as_deref().and_then(|p| CString::new(p).ok()) else {
            return false;
        };
        rustix::fs::statat(self.root.fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|p| p.st_dev == st.st_dev && p.st_ino == st.st_ino)
    }

    /// Whether `name` in `dir`, as a consumer reaches it, is the protected directory itself.
    fn is_protected_name(&self, dir: &Node, dir_st: &Stat, name: &[u8]) -> bool {
        let protected = self.options.identity.protected_dir.as_deref().is_some_and(|p| p.as_bytes() == name);
        protected && !dir.fh.class().is_writer() && self.is_root(dir_st)
    }

    /// A consumer may not create, remove or rename the protected directory's own name: removing
    /// or renaming it would take the writer's state out from under the protection.
    fn check_protected_name(&self, dir: &Node, dir_st: &Stat, name: &[u8]) -> NfsResult<()> {
        if self.is_protected_name(dir, dir_st, name) { Err(nfsstat3::NFS3ERR_ACCES) } else { Ok(()) }
    }

    /// The credential a request through `node` is served as.
    fn caller(&self, cred: &Credential, node: &Node) -> Credential {
        self.options.identity.map(cred, node.fh.class())
    }

    fn is_root(&self, st: &Stat) -> bool {
        st.st_dev == self.root_dev && st.st_ino == self.root_ino
    }

    // --- attributes and permissions ---------------------------------------------------------------

    /// NFS attributes of a stat result.
    pub fn attr(&self, st: &Stat) -> fattr3 {
        let type_ = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => ftype3::NF3REG,
            FileType::Directory => ftype3::NF3DIR,
            FileType::Symlink => ftype3::NF3LNK,
            FileType::BlockDevice => ftype3::NF3BLK,
            FileType::CharacterDevice => ftype3::NF3CHR,
            FileType::Socket => ftype3::NF3SOCK,
            FileType::Fifo => ftype3::NF3FIFO,
            FileType::Unknown => ftype3::NF3REG,
        };
        let rdev = st.st_rdev;
        let [atime, mtime, ctime] = times(st);
        fattr3 {
            type_,
            mode: st.st_mode & 0o7777,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            used: (st.st_blocks as u64).saturating_mul(512),
            rdev: specdata3 { specdata1: rustix::fs::major(rdev), specdata2: rustix::fs::minor(rdev) },
            fsid: self.fsid,
            fileid: st.st_ino,
            atime,
            mtime,
            ctime,
        }
    }

    /// Whether `cred` has the `bits` (`want::*`) on an object, by its mode bits. Root may do
    /// anything except execute a file without any execute bit.
    pub fn permits(&self, cred: &Credential, st: &Stat, bits: u32) -> bool {
        let mode = st.st_mode;
        if cred.is_root() {
            return bits & want::EXEC == 0 || is_dir(st) || mode & 0o111 != 0;
        }
        let granted = if cred.uid == st.st_uid {
            (mode >> 6) & 7
        } else if cred.in_group(st.st_gid) {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        granted & bits == bits
    }

    /// Whether an object reached through `class` may be changed at all.
    fn check_writable(&self, class: Class) -> NfsResult<()> {
        if self.options.read_only || (!class.is_writer() && self.options.identity.consumer_read_only) {
            return Err(nfsstat3::NFS3ERR_ROFS);
        }
        if class.is_protected() {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        Ok(())
    }

    /// A new object may only be given away to another owner by root, and only to a group its
    /// creator is in, as SETATTR has it.
    fn check_new_owner(&self, cred: &Credential, attrs: &SetAttrs) -> NfsResult<()> {
        if cred.is_root() {
            return Ok(());
        }
        if attrs.uid.is_some_and(|u| u != cred.uid) || attrs.gid.is_some_and(|g| !cred.in_group(g)) {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        Ok(())
    }

    /// Write and search permission on a directory, for changing its entries.
    fn check_dir_change(&self, cred: &Credential, dir: &Node, dir_st: &Stat) -> NfsResult<()> {
        self.check_writable(dir.fh.class())?;
        if !is_dir(dir_st) {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if self.permits(cred, dir_st, want::WRITE | want::EXEC) { Ok(()) } else { Err(nfsstat3::NFS3ERR_ACCES) }
    }

    /// A name a client may create, remove or rename to.
    fn entry_name(&self, dir: &Stat, name: &[u8]) -> NfsResult<CString> {
        let name = checked_name(name)?;
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        if self.is_root(dir) && name.as_bytes() == STATE_DIR.as_bytes() {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        Ok(name)
    }

    /// Makes a namespace change in `dir` durable: at once, or, inside a scratch tree, with the
    /// rest of the tree before the writer's next change elsewhere ([`Export::flush_deferred`]).
    fn sync_dir(&self, dir: &Node) -> NfsResult<()> {
        if !self.options.sync_namespace {
            return Ok(());
        }
        if !dir.fh.class().is_scratch() {
            return self.sync_now(dir);
        }
        let st = rustix::fs::fstat(dir.fd()).map_err(nfs_err)?;
        let full = {
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            deferred.dirs.entry((st.st_dev, st.st_ino)).or_insert_with(|| dir.fd.clone());
            deferred.dirs.len() >= MAX_DEFERRED_DIRS
        };
        if full { self.flush_deferred() } else { Ok(()) }
    }

    /// Syncs `dir` now. A change the disk did not take is an I/O error for the call that made it.
    fn sync_now(&self, dir: &Node) -> NfsResult<()> {
        if !self.options.sync_namespace {
            return Ok(());
        }
        self.dir_syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rustix::fs::fsync(dir.fd()).map_err(|error| {
            tracing::warn!(%error, "directory sync failed");
            nfsstat3::NFS3ERR_IO
        })
    }

    /// Syncs every directory the scratch trees changed since the last flush. Called before any
    /// namespace change outside them, so that what the writer did before a change is durable
    /// before the change is made. A failed sync forgets every scratch tree: none of them will be
    /// published.
    fn flush_deferred(&self) -> NfsResult<()> {
        let dirs = std::mem::take(&mut self.deferred.lock().unwrap_or_else(|e| e.into_inner()).dirs);
        for fd in dirs.values() {
            self.dir_syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(error) = rustix::fs::fsync(fd) {
                tracing::warn!(%error, "syncing a scratch directory failed; its tree will not be published");
                self.deferred.lock().unwrap_or_else(|e| e.into_inner()).roots.clear();
                return Err(nfsstat3::NFS3ERR_IO);
            }
        }
        Ok(())
    }

    /// Before a namespace change in `dir`: what the scratch trees changed is made durable first,
    /// unless `dir` is in a scratch tree itself.
    fn before_change(&self, dir: &Node) -> NfsResult<()> {
        if dir.fh.class().is_scratch() { Ok(()) } else { self.flush_deferred() }
    }

    /// Directory syncs made so far.
    pub fn dir_syncs(&self) -> u64 {
        self.dir_syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    // --- operations -------------------------------------------------------------------------------

    pub fn getattr(&self, fh: &[u8]) -> NfsResult<fattr3> {
        let (_, st) = self.resolve(fh)?;
        Ok(self.attr(&st))
    }

    /// LOOKUP: the child's handle and attributes, and the directory's attributes. `..` of the root
    /// is the root: a client cannot climb out of the export.
    pub fn lookup(&self, dir_fh: &[u8], name: &[u8], cred: &Credential) -> NfsResult<(Fh, fattr3, fattr3)> {
        let (dir, dir_st) = self.resolve(dir_fh)?;
        let cred = &self.caller(cred, &dir);
        if !is_dir(&dir_st) {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if !self.permits(cred, &dir_st, want::EXEC) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let name = checked_name(name)?;
        let dir_attr = self.attr(&dir_st);
        let bytes = name.as_bytes();
        if bytes == b"." || (bytes == b".." && self.is_root(&dir_st)) {
            return Ok((dir.fh.clone(), dir_attr.clone(), dir_attr));
        }
        if self.is_root(&dir_st) && bytes == STATE_DIR.as_bytes() {
            return Err(nfsstat3::NFS3ERR_NOENT);
        }
        if let Some((fh, attr)) = self.cached_entry(&dir.fh, bytes) {
            return Ok((fh, attr, dir_attr));
        }
        let st = rustix::fs::statat(dir.fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(nfs_err)?;
        let class = self.found_class(&dir, &dir_st, bytes, &st);
        let fh = self.known_handle(dir.fd(), &name, &st, class)?;
        let attr = self.attr(&st);
        self.remember_entry(&dir.fh, bytes, &fh, &attr);
        Ok((fh, attr, dir_attr))
    }

    pub fn access(&self, fh: &[u8], asked: u32, cred: &Credential) -> NfsResult<(fattr3, u32)> {
        use nfs3_types::nfs3::{
            ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND, ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ,
        };
        let (node, st) = self.resolve(fh)?;
        let cred = &self.caller(cred, &node);
        let mut granted = 0;
        if self.permits(cred, &st, want::READ) {
            granted |= ACCESS3_READ;
        }
        if self.check_writable(node.fh.class()).is_ok() && self.permits(cred, &st, want::WRITE) {
            granted |= ACCESS3_MODIFY | ACCESS3_EXTEND;
            if is_dir(&st) {
                granted |= ACCESS3_DELETE;
            }
        }
        if self.permits(cred, &st, want::EXEC) {
            granted |= if is_dir(&st) { ACCESS3_LOOKUP } else { ACCESS3_EXECUTE };
        }
        Ok((self.attr(&st), granted & asked))
    }

    pub fn readlink(&self, fh: &[u8]) -> NfsResult<(fattr3, Vec<u8>)> {
        let (node, st) = self.resolve(fh)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let target = rustix::fs::readlinkat(node.fd(), c"", Vec::new()).map_err(nfs_err)?;
        Ok((self.attr(&st), target.into_bytes()))
    }

    /// READ: appends up to `count` bytes at `offset` to `out`; returns the attributes, the byte
    /// count and whether the end of the file was reached.
    pub fn read(
        &self,
        fh: &[u8],
        offset: u64,
        count: u32,
        cred: &Credential,
        out: &mut Vec<u8>,
    ) -> NfsResult<(fattr3, u32, bool)> {
        let (node, st) = self.resolve(fh)?;
        let cred = &self.caller(cred, &node);
        if is_dir(&st) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        if !is_reg(&st) {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        if cred.uid != st.st_uid && !self.permits(cred, &st, want::READ) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let fd = self.data_fd(&node, false)?;
        let size = st.st_size as u64;
        let count = count.min(MAX_IO) as usize;
        let start = out.len();
        out.reserve(count);
        let mut done = 0usize;
        while done < count {
            let pos = offset.saturating_add(done as u64);
            if pos >= size {
                break;
            }
            let spare = &mut out.spare_capacity_mut()[..count - done];
            let (read, _) = rustix::io::pread(&*fd, spare, pos).map_err(nfs_err)?;
            let n = read.len();
            if n == 0 {
                break;
            }
            // SAFETY: `pread` initialized the first `n` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + n) };
            done += n;
        }
        debug_assert_eq!(out.len() - start, done);
        let eof = offset.saturating_add(done as u64) >= size;
        Ok((self.attr(&st), done as u32, eof))
    }

    /// WRITE: returns the attributes before (for wcc) and after, and the stability achieved.
    pub fn write(
        &self,
        fh: &[u8],
        offset: u64,
        data: &[u8],
        stable: u32,
        cred: &Credential,
    ) -> NfsResult<(wcc_attr, fattr3, u32)> {
        let (node, st) = self.resolve(fh)?;
        let cred = &self.caller(cred, &node);
        self.changed();
        if is_dir(&st) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        if !is_reg(&st) {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        self.check_writable(node.fh.class())?;
        // The owner may write a file whose mode lacks the write bit, as local `open(O_CREAT, 0444)`
        // followed by writes allows.
        if cred.uid != st.st_uid && !self.permits(cred, &st, want::WRITE) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(nfsstat3::NFS3ERR_FBIG)?;
        let fd = self.data_fd(&node, true)?;
        // Known bug for the simulation's tests: a stable write acknowledged without its sync.
        let skip_sync = known::ack_unsynced_write();
        if stable == 0 || skip_sync {
            known::before_unsynced_write(fd.as_fd());
        }
        let size_lock = self.size_lock(&st);
        // The size this write grows the file from, read under the lock: another write or a
        // truncate of the same file may have changed it since `resolve`.
        let size = rustix::fs::fstat(&*fd).map_err(nfs_err)?.st_size as u64;
        let reserved = self.reserve(end.saturating_sub(size))?;
        let mut written = 0usize;
        // A full disk refuses the growth (only a simulated one answers here before `pwrite`).
        let disk_full = reserved > 0 && !known::has_room(fd.as_fd(), reserved);
        let result = loop {
            if disk_full {
                break Err(nfs_err(rustix::io::Errno::NOSPC));
            }
            if written == data.len() {
                break Ok(());
            }
            match rustix::io::pwrite(&*fd, &data[written..], offset + written as u64) {
                Ok(0) => break Err(nfsstat3::NFS3ERR_IO),
                Ok(n) => written += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => break Err(nfs_err(e)),
            }
        };
        let after = rustix::fs::fstat(&*fd).map_err(nfs_err);
        let grown = after.as_ref().map_or(0, |a| (a.st_size as u64).saturating_sub(size));
        self.settle(reserved, i128::from(grown));
        drop(size_lock);
        result?;
        let synced = match stable {
            1 | 2 if skip_sync => Ok(stable),
            2 => rustix::fs::fsync(&*fd).map(|_| 2),
            1 => rustix::fs::fdatasync(&*fd).map(|_| 1),
            _ => Ok(0),
        }
        .map_err(nfs_err)?;
        if synced > 0 && !skip_sync {
            known::synced(fd.as_fd());
        }
        let after = if synced > 0 { rustix::fs::fstat(&*fd).map_err(nfs_err)? } else { after? };
        Ok((wcc(&st), self.attr(&after), synced))
    }

    fn size_lock(&self, st: &Stat) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (st.st_ino as usize) % self.size_locks.len();
        self.size_locks[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `growth` bytes against the capacity.
    fn reserve(&self, growth: u64) -> NfsResult<u64> {
        if growth == 0 {
            return Ok(0);
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(capacity) = self.options.capacity
            && used.saturating_add(growth) > capacity
        {
            return Err(nfsstat3::NFS3ERR_NOSPC);
        }
        *used = used.saturating_add(growth);
        Ok(growth)
    }

    /// Replaces a reservation with what really changed (`actual` may be negative).
    fn settle(&self, reserved: u64, actual: i128) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let value = i128::from(*used) - i128::from(reserved) + actual;
        *used = value.clamp(0, i128::from(u64::MAX)) as u64;
    }

    /// COMMIT: syncs the file.
    pub fn commit(&self, fh: &[u8]) -> NfsResult<fattr3> {
        let (node, st) = self.resolve(fh)?;
        if !is_reg(&st) {
            return Err(if is_dir(&st) { nfsstat3::NFS3ERR_ISDIR } else { nfsstat3::NFS3ERR_INVAL });
        }
        let fd = self.data_fd(&node, false)?;
        rustix::fs::fsync(&*fd).map_err(nfs_err)?;
        known::synced(fd.as_fd());
        Ok(self.attr(&rustix::fs::fstat(&*fd).map_err(nfs_err)?))
    }

    /// SETATTR. `guard` is the ctime the client expects (NFS3ERR_NOT_SYNC if it differs).
    pub fn setattr(
        &self,
        fh: &[u8],
        attrs: &SetAttrs,
        guard: Option<nfstime3>,
        cred: &Credential,
    ) -> NfsResult<(wcc_attr, fattr3)> {
        let (node, st) = self.resolve(fh)?;
        let cred = &self.caller(cred, &node);
        self.changed();
        let pre = wcc(&st);
        if let Some(expected) = guard
            && (expected.seconds != pre.ctime.seconds || expected.nseconds != pre.ctime.nseconds)
        {
            return Err(nfsstat3::NFS3ERR_NOT_SYNC);
        }
        self.check_writable(node.fh.class())?;
        let owner = cred.is_root() || cred.uid == st.st_uid;
        if (attrs.mode.is_some() || attrs.uid.is_some() || attrs.gid.is_some()) && !owner {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        if (attrs.uid.is_some_and(|u| u != st.st_uid) || attrs.gid.is_some_and(|g| !cred.in_group(g) && g != st.st_gid))
            && !cred.is_root()
        {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        let kind = FileType::from_raw_mode(st.st_mode);
        if let Some(size) = attrs.size {
            if kind == FileType::Directory {
                return Err(nfsstat3::NFS3ERR_ISDIR);
            }
            if kind != FileType::RegularFile {
                return Err(nfsstat3::NFS3ERR_INVAL);
            }
            if !owner && !self.permits(cred, &st, want::WRITE) {
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            let fd = self.data_fd(&node, true)?;
            let size_lock = self.size_lock(&st);
            let old = rustix::fs::fstat(&*fd).map_err(nfs_err)?.st_size as u64;
            let reserved = self.reserve(size.saturating_sub(old))?;
            let result = rustix::fs::ftruncate(&*fd, size).map_err(nfs_err);
            let actual = if result.is_ok() { i128::from(size) - i128::from(old) } else { 0 };
            self.settle(reserved, actual);
            drop(size_lock);
            result?;
            // SETATTR is stable before its reply, as a FILE_SYNC write is (RFC 1813 §3.3.2).
            rustix::fs::fsync(&*fd).map_err(nfs_err)?;
            known::synced(fd.as_fd());
        }
        if kind == FileType::Symlink {
            // Symlinks have no mode on Linux, and their times cannot be set through a descriptor.
            if attrs.uid.is_some() || attrs.gid.is_some() {
                rustix::fs::chownat(
                    node.fd(),
                    c"",
                    attrs.uid.map(rustix::fs::Uid::from_raw),
                    attrs.gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(nfs_err)?;
            }
        } else {
            let fd: Arc<OwnedFd> =
                if kind == FileType::Directory { node.fd.clone() } else { self.data_fd(&node, false)? };
            if let Some(mode) = attrs.mode {
                rustix::fs::fchmod(&*fd, Mode::from_raw_mode(mode & 0o7777)).map_err(nfs_err)?;
            }
            if attrs.uid.is_some() || attrs.gid.is_some() {
                rustix::fs::fchown(
                    &*fd,
                    attrs.uid.map(rustix::fs::Uid::from_raw),
                    attrs.gid.map(rustix::fs::Gid::from_raw),
                )
                .map_err(nfs_err)?;
            }
            if attrs.atime != SetTime::Keep || attrs.mtime != SetTime::Keep {
                rustix::fs::futimens(
                    &*fd,
                    &Timestamps { last_access: attrs.atime.timespec(), last_modification: attrs.mtime.timespec() },
                )
                .map_err(nfs_err)?;
            }
        }
        let after = rustix::fs::fstat(node.fd()).map_err(nfs_err)?;
        Ok((pre, self.attr(&after)))
    }

    /// Gives a new object the caller's identity and the requested attributes.
    fn own_new(&self, dir: &Node, name: &CStr, cred: &Credential, attrs: &SetAttrs) -> NfsResult<()> {
        if !self.running_as_root {
            return Ok(());
        }
        let uid = attrs.uid.unwrap_or(cred.uid);
        let gid = attrs.gid.unwrap_or(cred.gid);
        rustix::fs::chownat(
            dir.fd(),
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(nfs_err)
    }

    /// CREATE. Returns the new handle and attributes and the directory's wcc.
    pub fn create(
        &self,
        dir_fh: &[u8],
        name: &[u8],
        how: CreateHow,
        cred: &Credential,
    ) -> NfsResult<(Fh, fattr3, wcc_attr, fattr3)> {
        let (dir, dir_st) = self.resolve(dir_fh)?;
        let cred = &self.caller(cred, &dir);
        self.changed();
        self.check_dir_change(cred, &dir, &dir_st)?;
        let name = self.entry_name(&dir_st, name)?;
        self.check_protected_name(&dir, &dir_st, name.as_bytes())?;
        self.before_change(&dir)?;
        let class = self.child_class(&dir, &dir_st, name.as_bytes());
        let pre = wcc(&dir_st);
        let (attrs, flags) = match &how {
            CreateHow::Unchecked(a) => (a.clone(), OFlags::CREATE),
            CreateHow::Guarded(a) => (a.clone(), OFlags::CREATE | OFlags::EXCL),
            CreateHow::Exclusive(_) => (SetAttrs::default(), OFlags::CREATE | OFlags::EXCL),
        };
        self.check_new_owner(cred, &attrs)?;
        let mode = Mode::from_raw_mode(attrs.mode.unwrap_or(0o644) & 0o7777);
        let existing = rustix::fs::statat(dir.fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        if let (CreateHow::Exclusive(verifier), Some(st)) = (&how, &existing) {
            // A retransmitted exclusive create finds its own file: the verifier is kept in the
            // times, as the Linux server does.
            let [atime, mtime, _] = times(st);
            if is_reg(st) && exclusive_stamp(verifier) == (i64::from(atime.seconds), i64::from(mtime.seconds)) {
                let fh = self.child_handle(dir.fd(), &name, class)?;
                return Ok((fh, self.attr(st), pre, self.attr(&dir_st)));
            }
            return Err(nfsstat3::NFS3ERR_EXIST);
        }
        let fd = rustix::fs::openat(
            dir.fd(),
            name.as_c_str(),
            flags | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        )
        .map_err(nfs_err)?;
        if existing.is_none() {
            self.own_new(&dir, &name, cred, &attrs)?;
        }
        if let CreateHow::Exclusive(verifier) = &how {
            let (a, m) = exclusive_stamp(verifier);
            let stamp = |s: i64| rustix::fs::Timespec { tv_sec: s, tv_nsec: 0 };
            rustix::fs::futimens(&fd, &Timestamps { last_access: stamp(a), last_modification: stamp(m) })
                .map_err(nfs_err)?;
        }
        if let Some(size) = attrs.size {
            // The inode first, for its lock; then the size under the lock.
            let size_lock = self.size_lock(&rustix::fs::fstat(&fd).map_err(nfs_err)?);
            let old = rustix::fs::fstat(&fd).map_err(nfs_err)?.st_size as u64;
            let reserved = self.reserve(size.saturating_sub(old))?;
            let result = rustix::fs::ftruncate(&fd, size).map_err(nfs_err);
            self.settle(reserved, if result.is_ok() { i128::from(size) - i128::from(old) } else { 0 });
            drop(size_lock);
            result?;
            rustix::fs::fsync(&fd).map_err(nfs_err)?;
        }
        if attrs.atime != SetTime::Keep || attrs.mtime != SetTime::Keep {
            rustix::fs::futimens(
                &fd,
                &Timestamps { last_access: attrs.atime.timespec(), last_modification: attrs.mtime.timespec() },
            )
            .map_err(nfs_err)?;
        }
        self.sync_dir(&dir)?;
        let st = rustix::fs::fstat(&fd).map_err(nfs_err)?;
        let fh = self.child_handle(dir.fd(), &name, class)?;
        let dir_after = rustix::fs::fstat(dir.fd()).map_err(nfs_err)?;
        Ok((fh, self.attr(&st), pre, self.attr(&dir_after)))
    }

    pub fn mkdir(
        &self,
        dir_fh: &[u8],
        name: &[u8],
        attrs: &SetAttrs,
        cred: &Credential,
    ) -> NfsResult<(Fh, fattr3, wcc_attr, fattr3)> {
        let (dir, dir_st) = self.resolve(dir_fh)?;
        let cred = &self.caller(cred, &dir);
        self.changed();
        self.check_dir_change(cred, &dir, &dir_st)?;
        let name = self.entry_name(&dir_st, name)?;
        self.check_protected_name(&dir, &dir_st, name.as_bytes())?;
        self.check_new_owner(cred, attrs)?;
        self.before_change(&dir)?;
        let class = self.child_class(&dir, &dir_st, name.as_bytes());
        let pre = wcc(&dir_st);
        rustix::fs::mkdirat(dir.fd(), name.as_c_str(), Mode::from_raw_mode(attrs.mode.unwrap_or(0o755) & 0o7777))
            .map_err(nfs_err)?;
        self.own_new(&dir, &name, cred, attrs)?;
        self.sync_dir(&dir)?;
        let st = rustix::fs::statat(dir.fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(nfs_err)?;
        if class.is_scratch() && !dir.fh.class().is_scratch() {
            // A new scratch tree, made since this server started: it may be published.
            self.deferred.lock().unwrap_or_else(|e| e.into_inner()).roots.insert((st.st_dev, st.st_ino));
        }
        let fh = self.child_handle(dir.fd(), &name, class)?;
        let dir_after = rustix::fs::fstat(dir.fd()).map_err(nfs_err)?;
        Ok((fh, self.attr(&st), pre, self.attr(&dir_after)))
    }

    pub fn symlink(
        &self,
        dir_fh: &[u8],
        name: &[u8],
        target: &[u8],
        attrs: &SetAttrs,
        cred: &Credential,
    ) -> NfsResult<(Fh, fattr3, wcc_attr, fattr3)> {
        let (dir, dir_st) = self.resolve(dir_fh)?;
        let cred = &self.caller(cred, &dir);
        self.changed();
        self.check_dir_change(cred, &dir, &dir_st)?;
        let name = self.entry_name(&dir_st, name)?;
        self.check_protected_name(&dir, &dir_st, name.as_bytes())?;
        self.check_new_owner(cred, attrs)?;
        self.before_change(&dir)?;
        let class = self.child_class(&dir, &dir_st, name.as_bytes());
        if target.is_empty() || target.len() > 4096 || target.contains(&0) {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        // The link text is stored as given; the server itself never follows links, and clients
        // resolve them in their own namespace.
        let target = CString::new(target).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
        let pre = wcc(&dir_st);
        rustix::fs::symlinkat(target.as_c_str(), dir.fd(), name.as_c_str()).map_err(nfs_err)?;
        self.own_new(&dir, &name, cred, attrs)?;
        self.sync_dir(&dir)?;
        let st = rustix::fs::statat(dir.fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(nfs_err)?;
        let fh = self.child_handle(dir.fd(), &name, class)?;
        let dir_after = rustix::fs::fstat(dir.fd()).map_err(nfs_err)?;
        Ok((fh, self.attr(&st), pre, self.attr(&dir_after)))
    }

    /// REMOVE (`dir == false`) or RMDIR (`dir == true`).
    pub fn remove(&self, dir_fh: &[u8], name: &[u8], rmdir: bool, cred: &Credential) -> NfsResult<(wcc_attr, fattr3)> {
        let (dir, dir_st) = self.resolve(dir_fh)?;
        let cred = &self.caller(cred, &dir);
        self.changed();
        self.check_dir_change(cred, &dir, &dir_st)?;
        let name = checked_name(name)?;
        match name.as_bytes() {
            b"." => return Err(nfsstat3::NFS3ERR_INVAL),
            b".." => return Err(nfsstat3::NFS3ERR_EXIST),
            n if self.is_root(&dir_st) && n == STATE_DIR.as_bytes() => return Err(nfsstat3::NFS3ERR_NOENT),
            n => self.check_protected_name(&dir, &dir_st, n)?,
        }
        let pre = wcc(&dir_st);
        let victim = rustix::fs::statat(dir.fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(nfs_err)?;
        if rmdir && !is_dir(&victim) {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if !rmdir && is_dir(&victim) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        let sticky_denied =
            dir_st.st_mode & 0o1000 != 0 && !cred.is_root() && cred.uid != victim.st_uid && cred.uid != dir_st.st_uid;
        if sticky_denied {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        self.before_change(&dir)?;
        let victim_fh = self.child_handle(dir.fd(), &name, self.child_class(&dir, &dir_st, name.as_bytes())).ok();
        let flags = if rmdir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rustix::fs::unlinkat(dir.fd(), name.as_c_str(), flags).map_err(nfs_err)?;
        if rmdir {
            self.deferred.lock().unwrap_or_else(|e| e.into_inner()).roots.remove(&(victim.st_dev, victim.st_ino));
        }
        if is_reg(&victim) && victim.st_nlink == 1 {
            self.settle(0, -i128::from(victim.st_size as u64));
        }
        if let Some(fh) = victim_fh {
            self.forget(&fh);
        }
        self.sync_dir(&dir)?;
        let dir_after = rustix::fs::fstat(dir.fd()).map_err(nfs_err)?;
        Ok((pre, self.attr(&dir_after)))
    }

    /// RENAME: returns wcc of the source and target directories.
    pub fn rename(
        &self,
        from_fh: &[u8],
        from_name: &[u8],
        to_fh: &[u8],
        to_name: &[u8],
        cred: &Credential,
    ) -> NfsResult<(wcc_attr, fattr3, wcc_attr, fattr3)> {
        let (from, from_st) = self.resolve(from_fh)?;
        self.changed();
        let (to, to_st) = self.resolve(to_fh)?;
        if from.fh.class().is_writer() != to.fh.class().is_writer() {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let cred = &self.caller(cred, &from);
        self.check_dir_change(cred, &from, &from_st)?;
        self.check_dir_change(cred, &to, &to_st)?;
        let from_name = self.entry_name(&from_st, from_name)?;
        let to_name = self.entry_name(&to_st, to_name)?;
        self.check_protected_name(&from, &from_st, from_name.as_bytes())?;
        self.check_protected_name(&to, &to_st, to_name.as_bytes())?;
        let (from_pre, to_pre) = (wcc(&from_st), wcc(&to_st));
        let moving = rustix::fs::statat(from.fd(), from_name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(nfs_err)?;
        // A rename is never deferred: it is how a scratch tree is published, so what the scratch
        // trees hold is made durable first.
        self.flush_deferred()?;
        if is_dir(&moving) && self.is_scratch_root_name(&from, &from_st, from_name.as_bytes()) {
            let key = (moving.st_dev, moving.st_ino);
            let known = self.deferred.lock().unwrap_or_else(|e| e.into_inner()).roots.remove(&key);
            if !known {
                tracing::warn!(
                    name = %from_name.to_string_lossy(),
                    "refused to move a scratch tree made before this server started: changes to it may have been lost"
                );
                return Err(nfsstat3::NFS3ERR_IO);
            }
        }
        let replaced = rustix::fs::statat(to.fd(), to_name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        if let Some(target) = &replaced
            && target.st_ino == moving.st_ino
            && target.st_dev == moving.st_dev
        {
            // Renaming onto a hard link of itself is a successful no-op, as rename(2) has it.
            return Ok((from_pre, self.attr(&from_st), to_pre, self.attr(&to_st)));
        }
        let replaced_class = self.child_class(&to, &to_st, to_name.as_bytes());
        let replaced_fh = replaced.as_ref().and_then(|_| self.child_handle(to.fd(), &to_name, replaced_class).ok());
        rustix::fs::renameat(from.fd(), from_name.as_c_str(), to.fd(), to_name.as_c_str()).map_err(|e| match e {
            rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST => nfsstat3::NFS3ERR_EXIST,
            other => nfs_err(other),
        })?;
        if let Some(target) = &replaced {
            if is_reg(target) && target.st_nlink == 1 {
                self.settle(0, -i128::from(target.st_size as u64));
            }
            if let Some(fh) = replaced_fh {
                self.forget(&fh);
            }
        }
        // At once, even inside a scratch tree (the flush above made the rest durable).
        self.sync_now(&from)?;
        if from.fh != to.fh {
            self.sync_now(&to)?;
        }
        let from_after = rustix::fs::fstat(from.fd()).map_err(nfs_err)?;
        let to_after = rustix::fs::fstat(to.fd()).map_err(nfs_err)?;
        Ok((from_pre, self.attr(&from_after), to_pre, self.attr(&to_after)))
    }

    /// LINK: returns the file's attributes and the directory's wcc.
    pub fn link(
        &self,
        file_fh: &[u8],
        dir_fh: &[u8],
        name: &[u8],
        cred: &Credential,
    ) -> NfsResult<(fattr3, wcc_attr, fattr3)> {
        let (file, file_st) = self.resolve(file_fh)?;
        self.changed();
        let (dir, dir_st) = self.resolve(dir_fh)?;
        if file.fh.class().is_writer() != dir.fh.class().is_writer() {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        // A new name for a protected file would be a way to change it.
        self.check_writable(file.fh.class())?;
        let cred = &self.caller(cred, &dir);
        self.check_dir_change(cred, &dir, &dir_st)?;
        if is_dir(&file_st) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        let name = self.entry_name(&dir_st, name)?;
        self.check_protected_name(&dir, &dir_st, name.as_bytes())?;
        self.before_change(&dir)?;
        let pre = wcc(&dir_st);
        rustix::fs::linkat(file.fd(), c"", dir.fd(), name.as_c_str(), AtFlags::EMPTY_PATH).map_err(nfs_err)?;
        self.sync_dir(&dir)?;
        let file_after = rustix::fs::fstat(file.fd()).map_err(nfs_err)?;
        let dir_after = rustix::fs::fstat(dir.fd()).map_err(nfs_err)?;
        Ok((self.attr(&file_after), pre, self.attr(&dir_after)))
    }

    /// READDIR / READDIRPLUS from `cookie` (0 = start). Entries are added while `fits` accepts
    /// them; returns the directory's attributes and whether the listing is complete.
    pub fn readdir(
        &self,
        dir_fh: &[u8],
        cookie: u64,
        plus: bool,
        cred: &Credential,
        mut fits: impl FnMut(&DirEntry) -> bool,
    ) -> NfsResult<(fattr3, Vec<DirEntry>, bool)> {
        let (dir, dir_st) = self.resolve(dir_fh)?;
        let cred = &self.caller(cred, &dir);
        if !is_dir(&dir_st) {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if !self.permits(cred, &dir_st, want::READ) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let at_root = self.is_root(&dir_st);
        let mut stream = self.take_stream(&dir, cookie)?;
        let mut entries = Vec::new();
        let mut eof = true;
        while let Some(raw) = stream.next()? {
            if at_root && raw.name.as_bytes() == STATE_DIR.as_bytes() {
                stream.position = raw.cookie;
                continue;
            }
            let bytes = raw.name.as_bytes();
            let fileid = if bytes == b".." && at_root { dir_st.st_ino } else { raw.ino };
            let mut item = DirEntry { name: bytes.to_vec(), fileid, cookie: raw.cookie, plus: None };
            if plus {
                item.plus = self.entry_plus(&dir, &dir_st, &raw.name, at_root);
            }
            if !fits(&item) {
                stream.pending.push_front(raw);
                eof = false;
                break;
            }
            stream.position = raw.cookie;
            entries.push(item);
        }
        if !eof {
            self.put_stream(dir.fh.clone(), stream);
        }
        Ok((self.attr(&dir_st), entries, eof))
    }

    /// A listing of `dir` positioned at `cookie`: the one a previous page left off, or a new one.
    /// Reusing it matters: on ext4 every seek to a cookie rebuilds the kernel's hash-order
    /// cache of the directory, which made paging through 10,000 entries five times slower.
    fn take_stream(&self, dir: &Node, cookie: u64) -> NfsResult<DirStream> {
        if cookie != 0 {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = streams.iter().position(|(fh, s)| *fh == dir.fh && s.position == cookie) {
                return Ok(streams.swap_remove(i).1);
            }
        }
        DirStream::open(dir, cookie)
    }

    fn put_stream(&self, fh: Fh, stream: DirStream) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.len() >= MAX_DIR_STREAMS {
            streams.remove(0);
        }
        streams.push((fh, stream));
    }

    fn entry_plus(&self, dir: &Node, dir_st: &Stat, name: &CStr, at_root: bool) -> Option<(Fh, fattr3)> {
        let bytes = name.to_bytes();
        if bytes == b"." || (bytes == b".." && at_root) {
            return Some((dir.fh.clone(), self.attr(dir_st)));
        }
        if let Some(hit) = self.cached_entry(&dir.fh, bytes) {
            return Some(hit);
        }
        let st = rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let class = self.found_class(dir, dir_st, bytes, &st);
        let fh = self.known_handle(dir.fd(), name, &st, class).ok()?;
        let attr = self.attr(&st);
        self.remember_entry(&dir.fh, bytes, &fh, &attr);
        Some((fh, attr))
    }

    fn cached_entry(&self, dir: &Fh, name: &[u8]) -> Option<(Fh, fattr3)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let hit = entries.get(&(dir.clone(), name.to_vec()))?;
        (hit.at.elapsed() < ENTRY_CACHE_TTL).then(|| (hit.fh.clone(), hit.attr.clone()))
    }

    fn remember_entry(&self, dir: &Fh, name: &[u8], fh: &Fh, attr: &fattr3) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_ENTRIES {
            entries.clear();
        }
        let entry = CachedEntry { fh: fh.clone(), attr: attr.clone(), at: known::Instant::now() };
        entries.insert((dir.clone(), name.to_vec()), entry);
    }

    /// Forgets every cached directory entry; called by every change made through the server.
    fn changed(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.is_empty() {
            entries.clear();
        }
    }

    /// The handle of `name`, whose attributes are `st`, from the cache when the same inode was
    /// seen with the same ctime. A reused inode number has a new ctime, so it never gets the old
    /// object's handle; a miss costs one `name_to_handle_at`.
    fn known_handle(&self, dir: BorrowedFd<'_>, name: &CStr, st: &Stat, class: Class) -> NfsResult<Fh> {
        let key = (incarnation(st), class);
        if let Some(fh) = self.handles.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(fh.clone());
        }
        let fh = self.child_handle(dir, name, class)?;
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if handles.len() >= MAX_KNOWN_HANDLES {
            handles.clear();
        }
        handles.insert(key, fh.clone());
        Ok(fh)
    }

    /// FSSTAT: sizes (the capacity, when set, instead of the disk's) and file counts.
    pub fn fsstat(&self, fh: &[u8]) -> NfsResult<(fattr3, FsStat)> {
        let (_, st) = self.resolve(fh)?;
        let vfs = rustix::fs::fstatvfs(self.root.fd()).map_err(nfs_err)?;
        let block = vfs.f_frsize.max(1);
        let disk_total = vfs.f_blocks.saturating_mul(block);
        let disk_free = vfs.f_bfree.saturating_mul(block);
        let disk_avail = vfs.f_bavail.saturating_mul(block);
        let (total, free, avail) = match self.options.capacity {
            Some(capacity) => {
                let left = capacity.saturating_sub(self.used_bytes());
                (capacity, left.min(disk_free), left.min(disk_avail))
            }
            None => (disk_total, disk_free, disk_avail),
        };
        Ok((
            self.attr(&st),
            FsStat {
                total_bytes: total,
                free_bytes: free,
                avail_bytes: avail,
                total_files: vfs.f_files,
                free_files: vfs.f_ffree,
                avail_files: vfs.f_favail,
            },
        ))
    }

    pub fn fsinfo_properties() -> u32 {
        FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME
    }

    /// Resolves a MOUNT path: `/` is the export; the writer's secret path is the export as the
    /// writer reaches it; a deeper path is walked one directory at a time, refusing `..`,
    /// symlinks and anything that is not a directory.
    pub fn mount_path(&self, path: &[u8]) -> NfsResult<Fh> {
        if let Some(writer) = &self.options.identity.writer_path
            && constant_time_eq(path, writer.as_bytes())
        {
            return Ok(self.writer_root.clone());
        }
        let mut node = self.root.clone();
        for component in path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".") {
            if component == b".." || component.contains(&0) {
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            let name = checked_name(component)?;
            let st = rustix::fs::fstat(node.fd()).map_err(nfs_err)?;
            if self.is_root(&st) && component == STATE_DIR.as_bytes() {
                return Err(nfsstat3::NFS3ERR_NOENT);
            }
            let fd = rustix::fs::openat(
                node.fd(),
                name.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| if e == rustix::io::Errno::LOOP { nfsstat3::NFS3ERR_NOTDIR } else { nfs_err(e) })?;
            let class = self.child_class(&node, &st, component);
            let fh = self.child_handle(node.fd(), &name, class)?;
            let kernel = name_to_handle(fd.as_fd(), c"", true).map_err(|e| status(&e))?;
            node = Node { fh, kernel, fd: Arc::new(fd) };
        }
        Ok(node.fh)
    }
}

/// FSSTAT figures.
pub struct FsStat {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub total_files: u64,
    pub free_files: u64,
    pub avail_files: u64,
}

/// A time to set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetTime {
    #[default]
    Keep,
    ServerNow,
    Client(nfstime3),
}

impl SetTime {
    fn timespec(self) -> rustix::fs::Timespec {
        match self {
            SetTime::Keep => rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
            SetTime::ServerNow => rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
            SetTime::Client(t) => rustix::fs::Timespec { tv_sec: i64::from(t.seconds), tv_nsec: i64::from(t.nseconds) },
        }
    }
}

/// Attributes to set (`sattr3`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

/// How CREATE treats an existing name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateHow {
    Unchecked(SetAttrs),
    Guarded(SetAttrs),
    Exclusive([u8; 8]),
}

/// The verifier of an exclusive create, stored as (atime, mtime) seconds.
fn exclusive_stamp(verifier: &[u8; 8]) -> (i64, i64) {
    let a = u32::from_be_bytes([verifier[0], verifier[1], verifier[2], verifier[3]]);
    let m = u32::from_be_bytes([verifier[4], verifier[5], verifier[6], verifier[7]]);
    (i64::from(a & 0x7fff_ffff), i64::from(m & 0x7fff_ffff))
}

/// A single path component: 1 to 255 bytes, no `/` and no NUL.
pub fn checked_name(name: &[u8]) -> NfsResult<CString> {
    if name.is_empty() {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    if name.len() > 255 {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    if name.contains(&b'/') {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    CString::new(name).map_err(|_| nfsstat3::NFS3ERR_INVAL)
}

/// Loads the handle key from the export's state directory, creating it (durably) on first start.
/// On a disk the server cannot write, the key lives in memory only: handles then last until the
/// server restarts.
fn load_or_create_key(root: &OwnedFd) -> io::Result<[u8; 32]> {
    match load_or_create_stored_key(root) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES | libc::EPERM)) => {
            tracing::warn!(error = %e, "cannot store the handle key in the export; handles will not survive a restart");
            let mut key = [0u8; 32];
            crate::random_bytes(&mut key)?;
            Ok(key)
        }
        other => other,
    }
}

fn load_or_create_stored_key(root: &OwnedFd) -> io::Result<[u8; 32]> {
    let state_name = CString::new(STATE_DIR).map_err(io::Error::other)?;
    let key_name = CString::new(KEY_FILE).map_err(io::Error::other)?;
    let open_state = || {
        rustix::fs::openat(
            root,
            state_name.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let state = match open_state() {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            rustix::fs::mkdirat(root, state_name.as_c_str(), Mode::from_raw_mode(0o700))?;
            rustix::fs::fsync(root)?;
            open_state()?
        }
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::openat(
        &state,
        key_name.as_c_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let mut key = [0u8; 32];
            let mut done = 0;
            while done < key.len() {
                let n = rustix::io::read(&fd, &mut key[done..])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the export's handle key is truncated"));
                }
                done += n;
            }
            Ok(key)
        }
        Err(rustix::io::Errno::NOENT) => {
            let mut key = [0u8; 32];
            crate::random_bytes(&mut key)?;
            let tmp = CString::new(format!("{KEY_FILE}.tmp")).map_err(io::Error::other)?;
            let fd = rustix::fs::openat(
                &state,
                tmp.as_c_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut done = 0;
            while done < key.len() {
                done += rustix::io::write(&fd, &key[done..])?;
            }
            rustix::fs::fsync(&fd)?;
            rustix::fs::renameat(&state, tmp.as_c_str(), &state, key_name.as_c_str())?;
            rustix::fs::fsync(&state)?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

/// What the simulation watches (`sv_common::durability`, `sv_common::bugs`) or drives (the clock
/// of the entry cache, `sv_common::monotonic`: the simulation's syncer calls the server from
/// another host's runtime); nothing in a build without the programs' common crate (the fuzz
/// targets).
mod known {
    #[cfg(not(feature = "program"))]
    use std::os::fd::BorrowedFd;

    #[cfg(not(feature = "program"))]
    pub(super) use std::time::Instant;
    #[cfg(feature = "program")]
    pub(super) use sv_common::monotonic::MonotonicInstant as Instant;

    #[cfg(feature = "program")]
    pub(super) use sv_common::durability::{before_unsynced_write, has_room, synced};

    #[cfg(not(feature = "program"))]
    pub(super) fn has_room(_: BorrowedFd<'_>, _: u64) -> bool {
        true
    }

    #[cfg(not(feature = "program"))]
    pub(super) fn before_unsynced_write(_: BorrowedFd<'_>) {}

    #[cfg(not(feature = "program"))]
    pub(super) fn synced(_: BorrowedFd<'_>) {}

    pub(super) fn ack_unsynced_write() -> bool {
        #[cfg(feature = "program")]
        {
            sv_common::bugs::active(sv_common::bugs::Bug::AckUnsyncedWrite)
        }
        #[cfg(not(feature = "program"))]
        {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_the_kernel_cannot_decode_is_stale_unless_resources_or_rights_are_lacking() {
        let of = |errno: i32| undecodable(&io::Error::from_raw_os_error(errno));
        for errno in [libc::ESTALE, libc::ENOENT, libc::EIO, libc::EUCLEAN, libc::EBADMSG, libc::EINVAL] {
            assert_eq!(of(errno), nfsstat3::NFS3ERR_STALE, "errno {errno}");
        }
        assert_eq!(of(libc::EPERM), nfsstat3::NFS3ERR_PERM, "no CAP_DAC_READ_SEARCH: every handle would fail");
        assert_eq!(of(libc::EACCES), nfsstat3::NFS3ERR_ACCES);
        assert_eq!(of(libc::ENOMEM), nfsstat3::NFS3ERR_IO);
        assert_eq!(of(libc::EMFILE), nfsstat3::NFS3ERR_IO);
    }
}
