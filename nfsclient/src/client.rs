//! The NFSv3 client: a pool of connections to one export, each call retried on a new connection
//! when its connection is lost (as a `hard` mount of the kernel client keeps trying, but bounded).
//!
//! A retried call that changes the namespace (CREATE, REMOVE, RENAME, LINK...) may have been
//! carried out the first time; without the server's duplicate request cache (a new connection
//! gives a new transaction id) the retry can then answer EXIST or NOENT. Callers that must know
//! check the result, as programs on a kernel mount do.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_client::{MountClient, Nfs3Client, RpcError};
use nfs3_types::mount::{dirpath, mountstat3};
use nfs3_types::nfs3::{
    COMMIT3args, CREATE3args, FSSTAT3args, FSSTAT3resok, GETATTR3args, LINK3args, LOOKUP3args, MKDIR3args, Nfs3Option,
    Nfs3Result, READ3args, READDIRPLUS3args, READLINK3args, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args,
    SYMLINK3args, WRITE3args, cookieverf3, createhow3, diropargs3, fattr3, filename3, nfs_fh3, nfspath3, nfsstat3,
    sattr3, stable_how, symlinkdata3,
};
use nfs3_types::rpc::{auth_flavor, opaque_auth};
use nfs3_types::xdr_codec::Opaque;
use tokio::sync::Semaphore;

use crate::error::NfsError;

/// Where and how to reach an export.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's NFS port (sv-nfs serves MOUNT on the same port).
    pub addr: SocketAddr,
    /// The MOUNT port, when it is not the NFS port (nfs-ganesha's 20048, for example).
    pub mount_port: Option<u16>,
    /// The exported path to mount (`/` for sv-nfs; a writer mounts `/.sv-writer-<token>`).
    pub path: String,
    /// `AUTH_UNIX` identity the calls carry.
    pub uid: u32,
    pub gid: u32,
    /// Connections kept at most; calls beyond that wait for one.
    pub connections: usize,
    /// Connect from a port below 1024 (servers that insist on it, as ganesha can).
    pub privileged_port: bool,
    /// How often a call is tried again on a new connection after its connection failed, and how
    /// long to wait between tries (zero: at once, without a timer, so no async runtime is needed).
    pub retries: u32,
    pub retry_delay: Duration,
    /// The machine name the `AUTH_UNIX` credential carries.
    pub machine_name: String,
}

impl ClientConfig {
    pub fn new(addr: SocketAddr, path: impl Into<String>) -> Self {
        Self {
            addr,
            mount_port: None,
            path: path.into(),
            uid: 0,
            gid: 0,
            connections: 4,
            privileged_port: false,
            retries: 30,
            retry_delay: Duration::from_secs(1),
            machine_name: "sv-nfs-client".to_string(),
        }
    }

    fn credential(&self) -> opaque_auth<'static> {
        // AUTH_UNIX body (RFC 5531 appendix A): stamp, machine name, uid, gid, no extra groups.
        let mut body = Vec::new();
        body.extend_from_slice(&0u32.to_be_bytes());
        let name = self.machine_name.as_bytes();
        let name = &name[..name.len().min(255)];
        body.extend_from_slice(&(name.len() as u32).to_be_bytes());
        body.extend_from_slice(name);
        body.resize(body.len() + (4 - name.len() % 4) % 4, 0);
        for v in [self.uid, self.gid, 0] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        opaque_auth { flavor: auth_flavor::AUTH_UNIX, body: Opaque::owned(body) }
    }
}

/// Real TCP with `TCP_NODELAY` (an RPC is small and waits for its answer: Nagle's algorithm would
/// hold it back for the peer's delayed acknowledgement).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Connection = Stream<tokio::net::TcpStream>;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Stream(stream))
    }

    async fn connect_with_port(&self, addr: SocketAddr, local_port: u16) -> std::io::Result<Self::Connection> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), local_port))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Stream(stream))
    }
}

/// A tokio stream for `nfs3_client`, where a closed connection is an error. (`nfs3_client`
/// 0.9's own wrapper returns the 0 of a closed connection, and its read and write loops then
/// spin forever instead of failing the call.)
pub struct Stream<T>(pub T);

impl<T: tokio::io::AsyncRead + Unpin + Send> AsyncRead for Stream<T> {
    async fn async_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match tokio::io::AsyncReadExt::read(&mut self.0, buf).await? {
            0 if !buf.is_empty() => Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => Ok(n),
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin + Send> AsyncWrite for Stream<T> {
    async fn async_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match tokio::io::AsyncWriteExt::write(&mut self.0, buf).await? {
            0 if !buf.is_empty() => Err(std::io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }
}

/// One directory entry with what READDIRPLUS tells of it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub fileid: u64,
    pub cookie: u64,
    pub attributes: Option<fattr3>,
    pub handle: Option<nfs_fh3>,
}

/// One page of a directory.
#[derive(Clone, Debug)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    pub eof: bool,
    pub verifier: [u8; 8],
}

/// What a WRITE did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub count: u32,
    pub committed: stable_how,
    /// The server's write verifier: it changes when the server restarts, and then uncommitted
    /// writes may be lost.
    pub verifier: [u8; 8],
}

/// A client of one export.
pub struct NfsClient<C: Connector> {
    connector: C,
    config: ClientConfig,
    root: nfs_fh3,
    idle: Mutex<Vec<Nfs3Client<C::Connection>>>,
    permits: Semaphore,
}

impl<C> NfsClient<C>
where
    C: Connector,
    C::Connection: AsyncRead + AsyncWrite + Send,
{
    /// Mounts the export (MOUNT protocol) to learn its root handle, then keeps one connection.
    pub async fn connect(connector: C, config: ClientConfig) -> Result<Self, NfsError> {
        let mount_addr = SocketAddr::new(config.addr.ip(), config.mount_port.unwrap_or(config.addr.port()));
        let io = open(&connector, &config, mount_addr).await.map_err(|e| NfsError::Mount {
            path: config.path.clone(),
            reason: format!("connecting to {mount_addr}: {e}"),
        })?;
        let mut mount = MountClient::new_with_auth(io, config.credential(), opaque_auth::default());
        let path = dirpath(Opaque::owned(config.path.as_bytes().to_vec()));
        let root = match mount.mnt(path).await {
            Ok(ok) => nfs_fh3 { data: ok.fhandle.0 },
            Err(e) => {
                return Err(NfsError::Mount { path: config.path.clone(), reason: mount_reason(&e) });
            }
        };
        let first = open(&connector, &config, config.addr).await.map_err(|e| NfsError::Rpc(e.to_string()))?;
        let first = Nfs3Client::new_with_auth(first, config.credential(), opaque_auth::default());
        let permits = Semaphore::new(config.connections.max(1));
        Ok(Self { connector, config, root, idle: Mutex::new(vec![first]), permits })
    }

    /// The export's root directory.
    pub fn root(&self) -> nfs_fh3 {
        self.root.clone()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Runs one call on a pooled connection; a connection that fails is dropped and the call is
    /// tried again on a new one, up to the configured retries.
    async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, NfsError>
    where
        F: FnMut(Nfs3Client<C::Connection>) -> Fut,
        Fut: Future<Output = (Nfs3Client<C::Connection>, Result<T, RpcError>)>,
    {
        let _permit = self.permits.acquire().await.map_err(|e| NfsError::Rpc(e.to_string()))?;
        let mut last = String::new();
        for try_number in 0..=self.config.retries {
            // No delay asked for, no timer: callers without an async runtime (the blocking
            // connections) retry at once.
            if try_number > 0 && !self.config.retry_delay.is_zero() {
                tokio::time::sleep(self.config.retry_delay).await;
            }
            let pooled = self.idle.lock().map_or(None, |mut idle| idle.pop());
            let client = match pooled {
                Some(client) => client,
                None => match open(&self.connector, &self.config, self.config.addr).await {
                    Ok(io) => Nfs3Client::new_with_auth(io, self.config.credential(), opaque_auth::default()),
                    Err(e) => {
                        last = format!("connecting to {}: {e}", self.config.addr);
                        continue;
                    }
                },
            };
            let (client, result) = attempt(client).await;
            match result {
                Ok(value) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(client);
                    }
                    return Ok(value);
                }
                // The connection failed: drop it, try on a new one.
                Err(RpcError::Io(e)) => {
                    tracing::debug!(error = %e, try_number, "NFS call failed; retrying on a new connection");
                    last = e.to_string();
                }
                // The server answered, but not with a reply we can use (refused credentials, a
                // garbled reply): trying again would get the same. The connection is dropped.
                Err(e) => return Err(NfsError::Rpc(e.to_string())),
            }
        }
        Err(NfsError::Rpc(last))
    }

    pub async fn getattr(&self, fh: &nfs_fh3) -> Result<fattr3, NfsError> {
        let r = self
            .call(|mut c| {
                let args = GETATTR3args { object: fh.clone() };
                async move {
                    let r = c.getattr(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|ok| ok.obj_attributes)
    }

    pub async fn setattr(&self, fh: &nfs_fh3, attributes: sattr3) -> Result<Option<fattr3>, NfsError> {
        let r = self
            .call(|mut c| {
                let args =
                    SETATTR3args { object: fh.clone(), new_attributes: attributes.clone(), guard: Nfs3Option::None };
                async move {
                    let r = c.setattr(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|ok| option(ok.obj_wcc.after))
    }

    /// The object `name` in `dir`: its handle and attributes.
    pub async fn lookup(&self, dir: &nfs_fh3, name: &[u8]) -> Result<(nfs_fh3, fattr3), NfsError> {
        let r = self
            .call(|mut c| {
                let args = LOOKUP3args { what: dirop(dir, name) };
                async move {
                    let r = c.lookup(&args).await;
                    (c, r)
                }
            })
            .await?;
        let ok = ok(r)?;
        let attributes = match option(ok.obj_attributes) {
            Some(a) => a,
            None => self.getattr(&ok.object).await?,
        };
        Ok((ok.object, attributes))
    }

    /// Follows a `/`-separated path from the root, one LOOKUP per component (links are not
    /// followed: a link is an object like any other).
    pub async fn lookup_path(&self, path: &str) -> Result<(nfs_fh3, fattr3), NfsError> {
        let mut fh = self.root.clone();
        let mut attributes = self.getattr(&fh).await?;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            (fh, attributes) = self.lookup(&fh, part.as_bytes()).await?;
        }
        Ok((fh, attributes))
    }

    pub async fn readlink(&self, fh: &nfs_fh3) -> Result<Vec<u8>, NfsError> {
        let r = self
            .call(|mut c| {
                let args = READLINK3args { symlink: fh.clone() };
                async move {
                    let r = c.readlink(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|ok| ok.data.0.to_vec())
    }

    pub async fn read(&self, fh: &nfs_fh3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), NfsError> {
        let r = self
            .call(|mut c| {
                let args = READ3args { file: fh.clone(), offset, count };
                async move {
                    let r = c.read(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|ok| (ok.data.to_vec(), ok.eof))
    }

    pub async fn write(&self, fh: &nfs_fh3, offset: u64, data: &[u8], stable: stable_how) -> Result<Written, NfsError> {
        let r = self
            .call(|mut c| {
                let args = WRITE3args {
                    file: fh.clone(),
                    offset,
                    count: data.len() as u32,
                    stable,
                    data: Opaque::borrowed(data),
                };
                async move {
                    let r = c.write(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|ok| Written { count: ok.count, committed: ok.committed, verifier: ok.verf.0 })
    }

    /// Commits a file's unstable writes; returns the server's write verifier.
    pub async fn commit(&self, fh: &nfs_fh3) -> Result<[u8; 8], NfsError> {
        let r = self
            .call(|mut c| {
                let args = COMMIT3args { file: fh.clone(), offset: 0, count: 0 };
                async move {
                    let r = c.commit(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|ok| ok.verf.0)
    }

    /// Creates a regular file; `exclusive` fails with EXIST when `name` exists (GUARDED).
    pub async fn create(
        &self,
        dir: &nfs_fh3,
        name: &[u8],
        mode: u32,
        exclusive: bool,
    ) -> Result<(nfs_fh3, fattr3), NfsError> {
        let r = self
            .call(|mut c| {
                let attributes = sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() };
                let how = if exclusive { createhow3::GUARDED(attributes) } else { createhow3::UNCHECKED(attributes) };
                let args = CREATE3args { where_: dirop(dir, name), how };
                async move {
                    let r = c.create(&args).await;
                    (c, r)
                }
            })
            .await?;
        let ok = ok(r)?;
        self.created(dir, name, option(ok.obj), option(ok.obj_attributes)).await
    }

    pub async fn mkdir(&self, dir: &nfs_fh3, name: &[u8], mode: u32) -> Result<(nfs_fh3, fattr3), NfsError> {
        let r = self
            .call(|mut c| {
                let args = MKDIR3args {
                    where_: dirop(dir, name),
                    attributes: sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() },
                };
                async move {
                    let r = c.mkdir(&args).await;
                    (c, r)
                }
            })
            .await?;
        let ok = ok(r)?;
        self.created(dir, name, option(ok.obj), option(ok.obj_attributes)).await
    }

    pub async fn symlink(&self, dir: &nfs_fh3, name: &[u8], target: &[u8]) -> Result<(nfs_fh3, fattr3), NfsError> {
        let r = self
            .call(|mut c| {
                let args = SYMLINK3args {
                    where_: dirop(dir, name),
                    symlink: symlinkdata3 {
                        symlink_attributes: sattr3::default(),
                        symlink_data: nfspath3(Opaque::borrowed(target)),
                    },
                };
                async move {
                    let r = c.symlink(&args).await;
                    (c, r)
                }
            })
            .await?;
        let ok = ok(r)?;
        self.created(dir, name, option(ok.obj), option(ok.obj_attributes)).await
    }

    /// The handle and attributes of an object just created (LOOKUP when the reply left them out).
    async fn created(
        &self,
        dir: &nfs_fh3,
        name: &[u8],
        fh: Option<nfs_fh3>,
        attributes: Option<fattr3>,
    ) -> Result<(nfs_fh3, fattr3), NfsError> {
        match (fh, attributes) {
            (Some(fh), Some(a)) => Ok((fh, a)),
            (Some(fh), None) => {
                let a = self.getattr(&fh).await?;
                Ok((fh, a))
            }
            (None, _) => self.lookup(dir, name).await,
        }
    }

    pub async fn remove(&self, dir: &nfs_fh3, name: &[u8]) -> Result<(), NfsError> {
        let r = self
            .call(|mut c| {
                let args = REMOVE3args { object: dirop(dir, name) };
                async move {
                    let r = c.remove(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|_| ())
    }

    pub async fn rmdir(&self, dir: &nfs_fh3, name: &[u8]) -> Result<(), NfsError> {
        let r = self
            .call(|mut c| {
                let args = RMDIR3args { object: dirop(dir, name) };
                async move {
                    let r = c.rmdir(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|_| ())
    }

    pub async fn rename(&self, from_dir: &nfs_fh3, from: &[u8], to_dir: &nfs_fh3, to: &[u8]) -> Result<(), NfsError> {
        let r = self
            .call(|mut c| {
                let args = RENAME3args { from: dirop(from_dir, from), to: dirop(to_dir, to) };
                async move {
                    let r = c.rename(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r).map(|_| ())
    }

    /// A new name `name` in `dir` for the file `fh`; returns the file's attributes after.
    pub async fn link(&self, fh: &nfs_fh3, dir: &nfs_fh3, name: &[u8]) -> Result<fattr3, NfsError> {
        let r = self
            .call(|mut c| {
                let args = LINK3args { file: fh.clone(), link: dirop(dir, name) };
                async move {
                    let r = c.link(&args).await;
                    (c, r)
                }
            })
            .await?;
        match option(ok(r)?.file_attributes) {
            Some(a) => Ok(a),
            None => self.getattr(fh).await,
        }
    }

    /// One page of `dir` from `cookie` (0: the start), with attributes and handles.
    pub async fn readdirplus(&self, dir: &nfs_fh3, cookie: u64, verifier: [u8; 8]) -> Result<DirPage, NfsError> {
        let r = self
            .call(|mut c| {
                let args = READDIRPLUS3args {
                    dir: dir.clone(),
                    cookie,
                    cookieverf: cookieverf3(verifier),
                    dircount: 16 * 1024,
                    maxcount: 64 * 1024,
                };
                async move {
                    let r = c.readdirplus(&args).await;
                    (c, r)
                }
            })
            .await?;
        let ok = ok(r)?;
        let entries = ok
            .reply
            .entries
            .0
            .into_iter()
            .map(|e| DirEntry {
                name: e.name.0.to_vec(),
                fileid: e.fileid,
                cookie: e.cookie,
                attributes: option(e.name_attributes),
                handle: option(e.name_handle),
            })
            .collect();
        Ok(DirPage { entries, eof: ok.reply.eof, verifier: ok.cookieverf.0 })
    }

    /// Every entry of `dir` (without `.` and `..`).
    pub async fn read_dir(&self, dir: &nfs_fh3) -> Result<Vec<DirEntry>, NfsError> {
        let mut out = Vec::new();
        let (mut cookie, mut verifier) = (0u64, [0u8; 8]);
        // A directory of more than a million pages is not a directory this client will list.
        for _ in 0..1_000_000 {
            let page = self.readdirplus(dir, cookie, verifier).await?;
            verifier = page.verifier;
            if let Some(last) = page.entries.last() {
                cookie = last.cookie;
            }
            let eof = page.eof || page.entries.is_empty();
            out.extend(page.entries.into_iter().filter(|e| e.name != b"." && e.name != b".."));
            if eof {
                return Ok(out);
            }
        }
        Err(NfsError::Rpc("the directory listing never ended".to_string()))
    }

    pub async fn fsstat(&self) -> Result<FSSTAT3resok, NfsError> {
        let r = self
            .call(|mut c| {
                let args = FSSTAT3args { fsroot: self.root.clone() };
                async move {
                    let r = c.fsstat(&args).await;
                    (c, r)
                }
            })
            .await?;
        ok(r)
    }

    /// Reads a whole file (in 1 MiB requests).
    pub async fn read_all(&self, fh: &nfs_fh3) -> Result<Vec<u8>, NfsError> {
        let mut out = Vec::new();
        loop {
            let (data, eof) = self.read(fh, out.len() as u64, 1 << 20).await?;
            let done = eof || data.is_empty();
            out.extend_from_slice(&data);
            if done {
                return Ok(out);
            }
        }
    }
}

/// Opens a connection to `addr` as the configuration says (from a privileged port or not).
async fn open<C: Connector>(connector: &C, config: &ClientConfig, addr: SocketAddr) -> std::io::Result<C::Connection> {
    if !config.privileged_port {
        return connector.connect(addr).await;
    }
    // Ports 665..1023 (below, many are taken by well-known services); the first free one.
    let mut last = std::io::Error::other("no privileged port was free");
    for port in (665..1024).rev() {
        match connector.connect_with_port(addr, port).await {
            Ok(io) => return Ok(io),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn mount_reason(e: &nfs3_client::MountError) -> String {
    use nfs3_client::MountError;
    match e {
        MountError::Denied(mountstat3::MNT3ERR_ACCES) => {
            "the server refused access (a wrong writer path, or the export does not allow this client)".to_string()
        }
        MountError::Denied(mountstat3::MNT3ERR_NOENT) => "the server exports no such path".to_string(),
        other => other.to_string(),
    }
}

fn dirop<'a>(dir: &nfs_fh3, name: &'a [u8]) -> diropargs3<'a> {
    diropargs3 { dir: dir.clone(), name: filename3(Opaque::borrowed(name)) }
}

fn ok<T, E>(r: Nfs3Result<T, E>) -> Result<T, NfsError> {
    match r {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((status, _)) => Err(NfsError::Status(status)),
    }
}

fn option<T: nfs3_types::xdr_codec::Pack + nfs3_types::xdr_codec::Unpack>(o: Nfs3Option<T>) -> Option<T> {
    match o {
        Nfs3Option::Some(v) => Some(v),
        Nfs3Option::None => None,
    }
}

impl From<nfsstat3> for NfsError {
    fn from(s: nfsstat3) -> Self {
        Self::Status(s)
    }
}
