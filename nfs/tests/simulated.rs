//! The unchanged server on turmoil's simulated network: a client mounts it, writes with FILE_SYNC,
//! the server host crashes and restarts, and the handle the client held still reads the data.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::tokio::TokioIo;
use nfs3_types::nfs3::{
    CREATE3args, GETATTR3args, Nfs3Option, Nfs3Result, READ3args, WRITE3args, createhow3, diropargs3, filename3,
    nfs_fh3, sattr3, stable_how,
};
use nfs3_types::xdr_codec::Opaque;
use prometheus_client::registry::Registry;
use sv_nfs::fs::{Export, ExportOptions};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::server::{Execution, Listener, NfsServer, ServerConfig};
use tokio_util::sync::CancellationToken;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Io, String)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((stream, peer.to_string()))
    }
}

struct SimConnector;

impl nfs3_client::net::Connector for SimConnector {
    type Connection = TokioIo<turmoil::net::TcpStream>;
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Connection> {
        Ok(TokioIo::new(turmoil::net::TcpStream::connect(addr).await?))
    }
    async fn connect_with_port(&self, addr: SocketAddr, _local_port: u16) -> std::io::Result<Self::Connection> {
        self.connect(addr).await
    }
}

async fn mount() -> nfs3_client::Nfs3Connection<TokioIo<turmoil::net::TcpStream>> {
    let host = turmoil::lookup("nfs").to_string();
    Nfs3ConnectionBuilder::new(SimConnector, host, "/")
        .mount_port(2049)
        .nfs3_port(2049)
        .connect_from_privileged_port(false)
        .credential(unix_root())
        .mount()
        .await
        .expect("mount")
}

fn unix_root() -> nfs3_types::rpc::opaque_auth<'static> {
    let mut body = Vec::new();
    for v in [0u32, 1] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(b"s\0\0\0");
    for v in [0u32, 0, 0] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    nfs3_types::rpc::opaque_auth { flavor: nfs3_types::rpc::auth_flavor::AUTH_UNIX, body: Opaque::owned(body) }
}

#[test]
fn the_server_runs_on_simulated_sockets_and_survives_a_crash() -> turmoil::Result {
    let dir = tempfile::tempdir().expect("tempdir");
    let export_dir = dir.path().to_path_buf();
    let mut sim = turmoil::Builder::new().simulation_duration(Duration::from_secs(120)).build();
    sim.host("nfs", move || {
        let export_dir = export_dir.clone();
        async move {
            let export = Arc::new(Export::open(&export_dir, ExportOptions::default())?);
            let metrics = NfsMetrics::register(&mut Registry::default());
            let config = ServerConfig { execution: Execution::Inline, ..ServerConfig::new(2049)? };
            let server = Arc::new(NfsServer::new(export, metrics, config));
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 2049)).await?;
            server.serve(SimListener(listener), CancellationToken::new()).await?;
            Ok(())
        }
    });

    let written = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let held: Arc<Mutex<Option<nfs_fh3>>> = Arc::new(Mutex::new(None));
    let (w, r, h) = (written.clone(), restarted.clone(), held.clone());
    sim.client("client", async move {
        let mut c = mount().await;
        let root = c.root_nfs_fh3();
        let create = CREATE3args {
            where_: diropargs3 { dir: root, name: filename3(Opaque::borrowed(b"kept")) },
            how: createhow3::UNCHECKED(sattr3::default()),
        };
        let fh = match c.create(&create).await? {
            Nfs3Result::Ok(ok) => match ok.obj {
                Nfs3Option::Some(fh) => fh,
                Nfs3Option::None => panic!("no handle"),
            },
            Nfs3Result::Err((s, _)) => panic!("create {s:?}"),
        };
        let data = b"acknowledged before the crash";
        let write = WRITE3args {
            file: fh.clone(),
            offset: 0,
            count: data.len() as u32,
            stable: stable_how::FILE_SYNC,
            data: Opaque::borrowed(data),
        };
        assert!(matches!(c.write(&write).await?, Nfs3Result::Ok(_)));
        *h.lock().expect("lock") = Some(fh.clone());
        w.store(true, Ordering::SeqCst);
        while !r.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The old connection died with the server; a new mount sees the same handle valid.
        let mut c = mount().await;
        assert!(
            matches!(c.getattr(&GETATTR3args { object: fh.clone() }).await?, Nfs3Result::Ok(_)),
            "no STALE after restart"
        );
        match c.read(&READ3args { file: fh, offset: 0, count: 100 }).await? {
            Nfs3Result::Ok(ok) => assert_eq!(ok.data.as_ref(), data),
            Nfs3Result::Err((s, _)) => panic!("read {s:?}"),
        }
        Ok(())
    });

    while !written.load(Ordering::SeqCst) {
        sim.step()?;
    }
    sim.crash("nfs");
    for _ in 0..10 {
        sim.step()?;
    }
    sim.bounce("nfs");
    restarted.store(true, Ordering::SeqCst);
    sim.run()?;
    assert!(held.lock().expect("lock").is_some());
    Ok(())
}
