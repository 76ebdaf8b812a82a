//! A server on loopback for tests, and helpers around `nfs3_client`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_types::nfs3::{
    CREATE3args, GETATTR3args, LOOKUP3args, MKDIR3args, Nfs3Result, READ3args, WRITE3args, createhow3, diropargs3,
    fattr3, filename3, nfs_fh3, nfsstat3, sattr3, stable_how,
};
use nfs3_types::xdr_codec::Opaque;
use prometheus_client::registry::Registry;
use sv_nfs::fs::{Export, ExportOptions};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::server::{NfsServer, ServerConfig};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub type Client = nfs3_client::Nfs3Connection<TokioIo<TcpStream>>;

/// A running server on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub port: u16,
    pub dir: PathBuf,
    pub export: Arc<Export>,
    pub server: Arc<NfsServer>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with a fresh random write verifier, as a real restart has.
    pub async fn start(dir: &Path, options: ExportOptions) -> Self {
        let export = Arc::new(Export::open(dir, options).expect("export opens"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let config = ServerConfig::new(port).expect("config");
        let metrics = NfsMetrics::register(&mut Registry::default());
        let server = Arc::new(NfsServer::new(export.clone(), metrics, config));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.clone().serve(listener, shutdown.clone()));
        Self { port, dir: dir.to_path_buf(), export, server, shutdown, task }
    }

    /// A client authenticating as root (`AUTH_UNIX` uid 0).
    pub async fn client(&self) -> Client {
        self.client_as(0, 0).await
    }

    /// A client authenticating as `uid`/`gid`.
    pub async fn client_as(&self, uid: u32, gid: u32) -> Client {
        self.client_mounting("/", uid, gid).await.expect("mount")
    }

    /// A client that mounts `path`, authenticating as `uid`/`gid`.
    pub async fn client_mounting(&self, path: &str, uid: u32, gid: u32) -> Result<Client, nfs3_client::ConnectError> {
        Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", path)
            .mount_port(self.port)
            .nfs3_port(self.port)
            .connect_from_privileged_port(false)
            .credential(unix_cred(uid, gid))
            .mount()
            .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

pub fn unix_cred(uid: u32, gid: u32) -> nfs3_types::rpc::opaque_auth<'static> {
    let mut body = Vec::new();
    for v in [0u32, 4] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(b"test");
    for v in [uid, gid, 0] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    nfs3_types::rpc::opaque_auth { flavor: nfs3_types::rpc::auth_flavor::AUTH_UNIX, body: Opaque::owned(body) }
}

pub fn name(s: &str) -> filename3<'static> {
    filename3(Opaque::owned(s.as_bytes().to_vec()))
}

pub fn dirop(dir: &nfs_fh3, n: &str) -> diropargs3<'static> {
    diropargs3 { dir: dir.clone(), name: name(n) }
}

pub fn status<T, E>(r: &Nfs3Result<T, E>) -> nfsstat3 {
    match r {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((s, _)) => *s,
    }
}

pub async fn lookup(c: &mut Client, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    match c.lookup(&LOOKUP3args { what: dirop(dir, n) }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok.object),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn getattr(c: &mut Client, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    match c.getattr(&GETATTR3args { object: fh.clone() }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn create(c: &mut Client, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    let args = CREATE3args { where_: dirop(dir, n), how: createhow3::UNCHECKED(sattr3::default()) };
    match c.create(&args).await.expect("rpc") {
        Nfs3Result::Ok(ok) => match ok.obj {
            nfs3_types::nfs3::Nfs3Option::Some(fh) => Ok(fh),
            nfs3_types::nfs3::Nfs3Option::None => lookup(c, dir, n).await,
        },
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn mkdir(c: &mut Client, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    let args = MKDIR3args { where_: dirop(dir, n), attributes: sattr3::default() };
    match c.mkdir(&args).await.expect("rpc") {
        Nfs3Result::Ok(ok) => match ok.obj {
            nfs3_types::nfs3::Nfs3Option::Some(fh) => Ok(fh),
            nfs3_types::nfs3::Nfs3Option::None => lookup(c, dir, n).await,
        },
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn write(
    c: &mut Client,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<[u8; 8], nfsstat3> {
    let args = WRITE3args { file: fh.clone(), offset, count: data.len() as u32, stable, data: Opaque::borrowed(data) };
    match c.write(&args).await.expect("rpc") {
        Nfs3Result::Ok(ok) => {
            assert_eq!(ok.count as usize, data.len());
            Ok(ok.verf.0)
        }
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

/// Reads a whole file in chunks.
pub async fn read_all(c: &mut Client, fh: &nfs_fh3) -> Result<Vec<u8>, nfsstat3> {
    let mut out = Vec::new();
    loop {
        let args = READ3args { file: fh.clone(), offset: out.len() as u64, count: 256 * 1024 };
        match c.read(&args).await.expect("rpc") {
            Nfs3Result::Ok(ok) => {
                out.extend_from_slice(&ok.data);
                if ok.eof || ok.count == 0 {
                    return Ok(out);
                }
            }
            Nfs3Result::Err((s, _)) => return Err(s),
        }
    }
}
