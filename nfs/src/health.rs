//! Health from the client's side: the server calls itself (NFS NULL, then GETATTR of the export
//! root) every two seconds, over the same transport clients use. `/healthz` turns 503 once no
//! probe has succeeded for ten seconds, so a wedged server is restarted even while its process
//! and HTTP endpoint look fine.

use std::future::Future;
use std::io;
use std::time::Duration;

use sv_common::telemetry::Health;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::handle::Fh;
use crate::proto::NFS_PROGRAM;
use crate::rpc::{self, Record};
use crate::xdr::{Decoder, Encode};

pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections to the server itself.
pub trait Connector: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send;
    fn connect(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Connects over TCP to a fixed address.
pub struct TcpConnector(pub std::net::SocketAddr);

impl Connector for TcpConnector {
    type Io = tokio::net::TcpStream;
    async fn connect(&self) -> io::Result<Self::Io> {
        tokio::net::TcpStream::connect(self.0).await
    }
}

fn call(xid: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    for v in [xid, 0, 2, NFS_PROGRAM, 3, proc_, rpc::AUTH_NONE, 0, rpc::AUTH_NONE, 0] {
        b.put_u32(v);
    }
    b.extend_from_slice(args);
    let len = (b.len() - 4) as u32 | 0x8000_0000;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// Reads a reply and checks it is an accepted SUCCESS for `xid`, with NFS3_OK when `nfs_status`.
async fn expect_success<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    xid: u32,
    nfs_status: bool,
) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if rpc::read_record(reader, buf).await? != Record::Complete {
        return Err(bad("connection closed"));
    }
    let mut d = Decoder::new(buf);
    let ok = (|| {
        let same_xid = d.u32()? == xid;
        let reply = d.u32()? == 1;
        let accepted = d.u32()? == 0;
        let _flavor = d.u32()?;
        d.skip_opaque(400)?;
        let success = d.u32()? == 0;
        let nfs_ok = !nfs_status || d.u32()? == 0;
        Ok::<bool, crate::xdr::Malformed>(same_xid && reply && accepted && success && nfs_ok)
    })()
    .map_err(|_| bad("malformed reply"))?;
    if ok { Ok(()) } else { Err(bad("call failed")) }
}

/// One probe: NULL and GETATTR of the root over a fresh connection.
pub async fn probe<C: Connector>(connector: &C, root: &Fh) -> io::Result<()> {
    let io = connector.connect().await?;
    let (reader, mut writer) = tokio::io::split(io);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    writer.write_all(&call(1, 0, &[])).await?;
    expect_success(&mut reader, &mut buf, 1, false).await?;
    let mut args = Vec::new();
    args.put_opaque(root.as_bytes());
    writer.write_all(&call(2, 1, &args)).await?;
    expect_success(&mut reader, &mut buf, 2, true).await?;
    Ok(())
}

/// Probes until `shutdown`, keeping `health` live and ready while probes succeed.
pub async fn run_probes<C: Connector>(connector: C, root: Fh, health: Health, shutdown: CancellationToken) {
    let mut last_success: Option<tokio::time::Instant> = None;
    let started = tokio::time::Instant::now();
    loop {
        let result = tokio::time::timeout(PROBE_TIMEOUT, probe(&connector, &root)).await;
        let now = tokio::time::Instant::now();
        match result {
            Ok(Ok(())) => last_success = Some(now),
            Ok(Err(error)) => tracing::warn!(%error, "self-probe failed"),
            Err(_) => tracing::warn!("self-probe timed out"),
        }
        let since = now - last_success.unwrap_or(started);
        let healthy = since < UNHEALTHY_AFTER;
        health.set_live(healthy);
        let ready = last_success.is_some_and(|t| now - t < UNHEALTHY_AFTER);
        let changed = ready != health.is_ready();
        health.set_ready(ready);
        // Operators (and tests) read readiness changes from the log, so it follows the change.
        if changed && ready {
            tracing::info!("ready: the self-probe succeeded");
        } else if changed {
            tracing::warn!(since = ?since, "not ready: no successful self-probe");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}
