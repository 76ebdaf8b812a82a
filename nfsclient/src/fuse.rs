//! An NFSv3 export as a FUSE file system: what the kernel NFS client would give a pod, on a
//! machine that has none. Every file system call becomes the NFS calls the kernel client makes
//! for it (LOOKUP, GETATTR, READ, WRITE, COMMIT, CREATE, LINK, RENAME, READDIRPLUS...).
//!
//! Behaviour that programs can observe, as on a kernel mount:
//! - writes are sent UNSTABLE and committed at `close` (FUSE flush) and `fsync`; an error of the
//!   server (ENOSPC, EIO) or a COMMIT whose verifier differs from the writes' (the server
//!   restarted and may have lost them) fails that `close` or `fsync`;
//! - attributes and names are cached for `attr_ttl` (the kernel client's `acregmin` is 3 s);
//! - `statfs` is the server's FSSTAT, so `df` and `statvfs` show the server's capacity.
//!
//! What it does not do: replay uncommitted writes after a server restart (the kernel client
//! does; here the `close` fails, which a careful program treats like any failed write), file
//! locks, and ACCESS checks (the server decides on every call).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nfs3_types::nfs3::{Nfs3Option, fattr3, ftype3, nfs_fh3, nfsstat3, sattr3, set_atime, set_mtime, stable_how};

use crate::client::{ClientConfig, DirEntry, NfsClient, TcpConnector};
use crate::error::{NfsError, libc_consts};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub client: ClientConfig,
    /// FUSE worker threads: file system calls answered at once (each waits for its NFS reply).
    pub threads: usize,
    /// How long the kernel may cache attributes and names.
    pub attr_ttl: Duration,
}

impl MountConfig {
    pub fn new(client: ClientConfig) -> Self {
        Self { client, threads: 16, attr_ttl: Duration::from_secs(1) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Nfs(#[from] NfsError),
    #[error("mounting FUSE at {path}: {source}")]
    Fuse { path: String, source: std::io::Error },
    #[error("starting the client runtime: {0}")]
    Runtime(std::io::Error),
}

/// A mounted export; dropping it unmounts.
pub struct Mounted {
    // Field order is drop order: the session (unmount) goes before the runtime its calls use.
    session: Option<fuser::BackgroundSession>,
    mountpoint: std::path::PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Mounted {
    /// Unmounts now and waits for the FUSE threads to finish. When the file system is busy
    /// (a file still open on it) it is detached instead, as `umount -l` does: it disappears from
    /// the namespace at once, and what still uses it fails once this process exits.
    pub fn unmount(mut self) -> std::io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        match session.umount_and_join() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "the mount is busy; detaching it");
                let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                // SAFETY: a NUL-terminated path. (The session was dropped with the failed
                // unmount: its threads end when the last user of the detached mount lets go.)
                if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
            other => other,
        }
    }
}

/// Mounts `config.client`'s export at `mountpoint`.
pub fn mount(config: MountConfig, mountpoint: &Path) -> Result<Mounted, MountError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sv-nfs-mount")
        .enable_all()
        .build()
        .map_err(MountError::Runtime)?;
    let mut client_config = config.client.clone();
    client_config.connections = client_config.connections.max(config.threads);
    let fsname = format!("nfs://{}{}", client_config.addr, client_config.path);
    let client = runtime.block_on(NfsClient::connect(TcpConnector, client_config))?;
    let root = client.root();
    let root_attributes = runtime.block_on(client.getattr(&root))?;
    let fs = NfsFs {
        rt: runtime.handle().clone(),
        client: Arc::new(client),
        root_fileid: root_attributes.fileid,
        inodes: Mutex::new(HashMap::from([(INodeNo::ROOT.0, root)])),
        files: Mutex::new(HashMap::new()),
        dirs: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
        ttl: config.attr_ttl,
    };
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options =
        vec![MountOption::FSName(fsname), MountOption::Subtype("sv-nfs-mount".to_string()), MountOption::NoDev];
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let session = fuser::spawn_mount(fs, mountpoint, &fuse_config)
        .map_err(|source| MountError::Fuse { path: mountpoint.display().to_string(), source })?;
    Ok(Mounted { session: Some(session), mountpoint: mountpoint.to_path_buf(), _runtime: runtime })
}

struct OpenFile {
    ino: u64,
    /// Written since the last COMMIT.
    dirty: bool,
    /// The verifier of the writes since the last COMMIT; a different one on a later write or on
    /// the COMMIT means the server restarted in between and may have lost them.
    verifier: Option<[u8; 8]>,
    lost: bool,
}

#[derive(Default)]
struct DirState {
    verifier: [u8; 8],
    /// The rest of the last page read, continuing at `offset`.
    rest: Option<(u64, Vec<DirEntry>, bool)>,
}

struct NfsFs {
    rt: tokio::runtime::Handle,
    client: Arc<NfsClient<TcpConnector>>,
    root_fileid: u64,
    inodes: Mutex<HashMap<u64, nfs_fh3>>,
    files: Mutex<HashMap<u64, OpenFile>>,
    dirs: Mutex<HashMap<u64, DirState>>,
    next_handle: AtomicU64,
    ttl: Duration,
}

fn errno(e: &NfsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn kind(t: ftype3) -> FileType {
    match t {
        ftype3::NF3REG => FileType::RegularFile,
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::NamedPipe,
    }
}

fn time(t: Option<TimeOrNow>) -> (set_atime, set_mtime) {
    match t {
        None => (set_atime::DONT_CHANGE, set_mtime::DONT_CHANGE),
        Some(TimeOrNow::Now) => (set_atime::SET_TO_SERVER_TIME, set_mtime::SET_TO_SERVER_TIME),
        Some(TimeOrNow::SpecificTime(at)) => match at.try_into() {
            Ok(t) => (set_atime::SET_TO_CLIENT_TIME(t), set_mtime::SET_TO_CLIENT_TIME(t)),
            Err(_) => (set_atime::DONT_CHANGE, set_mtime::DONT_CHANGE),
        },
    }
}

impl NfsFs {
    /// The FUSE inode number of an object: its file id, with the export's root as 1 (and an object
    /// whose file id is 1, if any, takes the root's file id in exchange).
    fn ino_of(&self, fileid: u64) -> u64 {
        if fileid == self.root_fileid {
            INodeNo::ROOT.0
        } else if fileid == INodeNo::ROOT.0 {
            self.root_fileid
        } else {
            fileid
        }
    }

    fn remember(&self, fh: &nfs_fh3, a: &fattr3) -> FileAttr {
        let ino = self.ino_of(a.fileid);
        if let Ok(mut inodes) = self.inodes.lock() {
            inodes.insert(ino, fh.clone());
        }
        self.attr(ino, a)
    }

    fn attr(&self, ino: u64, a: &fattr3) -> FileAttr {
        let ctime: SystemTime = (&a.ctime).into();
        FileAttr {
            ino: INodeNo(ino),
            size: a.size,
            blocks: a.used.div_ceil(512),
            atime: (&a.atime).into(),
            mtime: (&a.mtime).into(),
            ctime,
            crtime: ctime,
            kind: kind(a.type_),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn fh(&self, ino: INodeNo) -> Result<nfs_fh3, Errno> {
        self.inodes
            .lock()
            .ok()
            .and_then(|inodes| inodes.get(&ino.0).cloned())
            .ok_or(Errno::from_i32(libc_consts::ESTALE))
    }

    fn handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn open_file(&self, ino: u64) -> u64 {
        let handle = self.handle();
        if let Ok(mut files) = self.files.lock() {
            files.insert(handle, OpenFile { ino, dirty: false, verifier: None, lost: false });
        }
        handle
    }

    /// Commits a file's writes since the last commit; reports a lost or refused write.
    fn commit(&self, handle: u64) -> Result<(), Errno> {
        let (ino, verifier, lost) = {
            let Ok(files) = self.files.lock() else { return Err(Errno::from_i32(libc_consts::EIO)) };
            match files.get(&handle) {
                Some(f) if f.dirty => (f.ino, f.verifier, f.lost),
                _ => return Ok(()),
            }
        };
        let fh = self.fh(INodeNo(ino))?;
        let result = self.rt.block_on(self.client.commit(&fh));
        let outcome = match result {
            Ok(committed) if !lost && verifier.is_none_or(|v| v == committed) => Ok(()),
            Ok(_) => {
                tracing::warn!(ino, "the server restarted before the writes were committed; they may be lost");
                Err(Errno::from_i32(libc_consts::EIO))
            }
            Err(e) => Err(errno(&e)),
        };
        if let Ok(mut files) = self.files.lock()
            && let Some(f) = files.get_mut(&handle)
        {
            f.dirty = false;
            f.verifier = None;
            f.lost = false;
        }
        outcome
    }

    /// REMOVE, or RMDIR for a directory.
    fn remove_entry(&self, parent: INodeNo, name: &OsStr, directory: bool, reply: ReplyEmpty) {
        let dir = match self.fh(parent) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let removed = if directory {
            self.rt.block_on(self.client.rmdir(&dir, name.as_bytes()))
        } else {
            self.rt.block_on(self.client.remove(&dir, name.as_bytes()))
        };
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn entry(&self, reply: ReplyEntry, result: Result<(nfs_fh3, fattr3), NfsError>) {
        match result {
            Ok((fh, a)) => reply.entry(&self.ttl, &self.remember(&fh, &a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for NfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // 1 MiB writes where the kernel allows them (it clamps to what it supports).
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match self.fh(parent) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let result = self.rt.block_on(self.client.lookup(&dir, name.as_bytes()));
        self.entry(reply, result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fh = match self.fh(ino) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        match self.rt.block_on(self.client.getattr(&fh)) {
            Ok(a) => reply.attr(&self.ttl, &self.attr(ino.0, &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fh = match self.fh(ino) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let option = |v: Option<u32>| v.map_or(Nfs3Option::None, Nfs3Option::Some);
        let attributes = sattr3 {
            mode: option(mode.map(|m| m & 0o7777)),
            uid: option(uid),
            gid: option(gid),
            size: size.map_or(Nfs3Option::None, Nfs3Option::Some),
            atime: time(atime).0,
            mtime: time(mtime).1,
        };
        let result = self.rt.block_on(async {
            match self.client.setattr(&fh, attributes).await? {
                Some(a) => Ok(a),
                None => self.client.getattr(&fh).await,
            }
        });
        match result {
            Ok(a) => reply.attr(&self.ttl, &self.attr(ino.0, &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fh = match self.fh(ino) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        match self.rt.block_on(self.client.readlink(&fh)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Only regular files: devices, FIFOs and sockets are not something a shared volume holds.
        if mode & 0o170000 != 0o100000 {
            return reply.error(Errno::from_i32(libc_consts::EPERM));
        }
        let dir = match self.fh(parent) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let result = self.rt.block_on(self.client.create(&dir, name.as_bytes(), mode & !umask & 0o7777, true));
        self.entry(reply, result);
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let dir = match self.fh(parent) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let result = self.rt.block_on(self.client.mkdir(&dir, name.as_bytes(), mode & !umask & 0o7777));
        self.entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, true, reply);
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let dir = match self.fh(parent) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let result = self.rt.block_on(self.client.symlink(&dir, link_name.as_bytes(), target.as_os_str().as_bytes()));
        self.entry(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // NFSv3 has no RENAME_NOREPLACE or RENAME_EXCHANGE, as on a kernel NFSv3 mount.
        if !flags.is_empty() {
            return reply.error(Errno::from_i32(libc_consts::EINVAL));
        }
        let (from, to) = match (self.fh(parent), self.fh(newparent)) {
            (Ok(from), Ok(to)) => (from, to),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        match self.rt.block_on(self.client.rename(&from, name.as_bytes(), &to, newname.as_bytes())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let (fh, dir) = match (self.fh(ino), self.fh(newparent)) {
            (Ok(fh), Ok(dir)) => (fh, dir),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let result = self.rt.block_on(self.client.link(&fh, &dir, newname.as_bytes())).map(|a| (fh, a));
        self.entry(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.fh(ino) {
            return reply.error(e);
        }
        reply.opened(FileHandle(self.open_file(ino.0)), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fh = match self.fh(ino) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        match self.rt.block_on(self.client.read(&fh, offset, size)) {
            Ok((data, _)) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let file = match self.fh(ino) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match self.rt.block_on(self.client.write(&file, offset, data, stable_how::UNSTABLE)) {
            Ok(written) => {
                if written.committed == stable_how::UNSTABLE
                    && let Ok(mut files) = self.files.lock()
                    && let Some(f) = files.get_mut(&fh.0)
                {
                    f.dirty = true;
                    if f.verifier.is_some_and(|v| v != written.verifier) {
                        f.lost = true;
                    }
                    f.verifier = Some(written.verifier);
                }
                reply.written(written.count)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        match self.commit(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // `close` already committed (flush); what a failed commit left has been reported there.
        if let Ok(mut files) = self.files.lock() {
            files.remove(&fh.0);
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.commit(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.fh(ino) {
            return reply.error(e);
        }
        let handle = self.handle();
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.insert(handle, DirState::default());
        }
        reply.opened(FileHandle(handle), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dir = match self.fh(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let (verifier, rest) = match self.dirs.lock() {
            Ok(mut dirs) => {
                let state = dirs.entry(fh.0).or_default();
                (state.verifier, state.rest.take())
            }
            Err(_) => return reply.error(Errno::from_i32(libc_consts::EIO)),
        };
        // The rest of the last page when the kernel continues where it stopped; a new page
        // otherwise (the cookie of the last entry it took is the offset it asks for).
        let (mut entries, eof, verifier) = match rest {
            Some((at, entries, eof)) if at == offset => (entries, eof, verifier),
            _ => {
                let verifier = if offset == 0 { [0; 8] } else { verifier };
                match self.rt.block_on(self.client.readdirplus(&dir, offset, verifier)) {
                    Ok(page) => (page.entries, page.eof, page.verifier),
                    Err(NfsError::Status(nfsstat3::NFS3ERR_BAD_COOKIE)) if offset != 0 => {
                        return reply.error(Errno::from_i32(libc_consts::EIO));
                    }
                    Err(e) => return reply.error(errno(&e)),
                }
            }
        };
        let mut taken = 0;
        for entry in &entries {
            let (ino, kind) = match (&entry.attributes, &entry.handle) {
                (Some(a), Some(h)) => {
                    let attr = self.remember(h, a);
                    (attr.ino.0, attr.kind)
                }
                (Some(a), None) => (self.ino_of(a.fileid), kind(a.type_)),
                _ => (self.ino_of(entry.fileid), FileType::RegularFile),
            };
            if reply.add(INodeNo(ino), entry.cookie, kind, OsStr::from_bytes(&entry.name)) {
                break;
            }
            taken += 1;
        }
        let rest_at = entries[..taken].last().map_or(offset, |e| e.cookie);
        entries.drain(..taken);
        if let Ok(mut dirs) = self.dirs.lock() {
            let state = dirs.entry(fh.0).or_default();
            state.verifier = verifier;
            // Another page is read when the kernel asks past these (or they were all taken
            // and the directory goes on).
            state.rest = (!entries.is_empty() || eof).then_some((rest_at, entries, eof));
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.remove(&fh.0);
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // NFSv3 namespace calls are synchronous: the server made them durable before answering.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BLOCK: u64 = 4096;
        match self.rt.block_on(self.client.fsstat()) {
            Ok(s) => reply.statfs(
                s.tbytes / BLOCK,
                s.fbytes / BLOCK,
                s.abytes / BLOCK,
                s.tfiles,
                s.ffiles,
                BLOCK as u32,
                255,
                BLOCK as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        // NFSv3 has no extended attributes, as on a kernel NFSv3 mount.
        reply.error(Errno::from_i32(libc_consts::EOPNOTSUPP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::from_i32(libc_consts::EOPNOTSUPP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The server decides on every call (its squashing and protections apply there).
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let dir = match self.fh(parent) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        const O_EXCL: i32 = 0o200;
        let exclusive = flags & O_EXCL != 0;
        match self.rt.block_on(self.client.create(&dir, name.as_bytes(), mode & !umask & 0o7777, exclusive)) {
            Ok((fh, a)) => {
                let attr = self.remember(&fh, &a);
                let handle = self.open_file(attr.ino.0);
                reply.created(&self.ttl, &attr, Generation(0), FileHandle(handle), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}
