//! Accepting connections and answering calls. Generic over the transport, so the same code serves
//! real TCP in production and simulated sockets in the simulation.
//!
//! A Linux client multiplexes every mount of a node over one TCP connection, so one connection
//! carries many calls at once. Each connection reads calls as they come, answers up to
//! [`MAX_IN_FLIGHT`] of them at the same time and writes each reply when it is ready (RPC replies
//! may come in any order; the xid pairs them). In production the file system work runs on the
//! blocking thread pool, so one slow `fsync` holds up neither other calls nor other clients; the
//! simulation answers on the connection's own task, in order, to stay deterministic.
//!
//! Bounds: calls in flight per connection, bytes of calls in flight over all connections
//! ([`MAX_BYTES_IN_FLIGHT`]; a connection past it stops reading until calls finish, which pushes
//! back on the client through TCP), connections ([`MAX_CONNECTIONS`]; more are closed at once),
//! and idle time ([`IDLE_TIMEOUT`]; clients reconnect transparently).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use nfs3_types::nfs3::nfsstat3;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fs::Export;
use crate::metrics::NfsMetrics;
use crate::proto::{self, CallContext, MOUNT_PROGRAM, NFS_PROCEDURES, NFS_PROGRAM, Outcome, PORTMAP_PROGRAM};
use crate::rpc::{self, BadCall, Record, Reply, accept};

/// A source of client connections.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and a name for its peer.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, String)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, String)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Replies are written whole; waiting for more data to coalesce only adds latency.
        stream.set_nodelay(true)?;
        Ok((stream, peer.to_string()))
    }
}

/// Calls one connection answers at the same time.
pub const MAX_IN_FLIGHT: usize = 32;
/// Bytes of calls being answered, over all connections.
pub const MAX_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// A connection with no call for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// What a call is charged against the byte budget beyond its own size: room for its reply.
const REPLY_ALLOWANCE: usize = 64 * 1024;

/// Where calls are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Execution {
    /// On the blocking thread pool, many at a time (production).
    BlockingPool,
    /// On the connection's task, one at a time (the simulation: deterministic).
    Inline,
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Port announced through portmap GETPORT.
    pub port: u16,
    /// Write verifier of this server instance; must differ after every restart.
    pub write_verifier: [u8; 8],
    /// How long connections may take to finish their current call after shutdown starts.
    pub shutdown_grace: Duration,
    pub execution: Execution,
}

/// How long open connections may take to finish their call after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A fresh write verifier: a real process draws one at every start, so clients see a restart.
pub fn random_write_verifier() -> io::Result<[u8; 8]> {
    let mut write_verifier = [0u8; 8];
    crate::random_bytes(&mut write_verifier)?;
    Ok(write_verifier)
}

impl ServerConfig {
    /// A production configuration with a fresh random write verifier.
    pub fn new(port: u16) -> io::Result<Self> {
        Ok(Self {
            port,
            write_verifier: random_write_verifier()?,
            shutdown_grace: SHUTDOWN_GRACE,
            execution: Execution::BlockingPool,
        })
    }
}

/// The NFS server of one export.
pub struct NfsServer {
    export: Arc<Export>,
    metrics: NfsMetrics,
    config: ServerConfig,
    /// The byte budget of calls in flight, in KiB.
    budget: Arc<Semaphore>,
}

impl NfsServer {
    pub fn new(export: Arc<Export>, metrics: NfsMetrics, config: ServerConfig) -> Self {
        metrics.capacity_bytes.set(export.options().capacity.map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX)));
        metrics.used_bytes.set(i64::try_from(export.used_bytes()).unwrap_or(i64::MAX));
        let budget = Arc::new(Semaphore::new(MAX_BYTES_IN_FLIGHT / 1024));
        Self { export, metrics, config, budget }
    }

    pub fn export(&self) -> &Arc<Export> {
        &self.export
    }

    /// Accepts connections until `shutdown` is cancelled, then lets open connections finish the
    /// call they are answering (up to the grace period) and returns.
    pub async fn serve<L: Listener>(self: Arc<Self>, mut listener: L, shutdown: CancellationToken) -> io::Result<()> {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => {
                    let (io, peer) = match accepted {
                        Ok(c) => c,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            continue;
                        }
                    };
                    if connections.len() >= MAX_CONNECTIONS {
                        self.metrics.rpc_error("too_many_connections");
                        tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many connections; closing the new one");
                        drop(io);
                        continue;
                    }
                    tracing::debug!(%peer, "client connected");
                    let server = self.clone();
                    let stop = shutdown.clone();
                    connections.spawn(async move { server.handle_connection(io, &peer, stop).await });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let grace = self.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(?grace, "connections still open after the grace period; closing them");
            connections.shutdown().await;
        }
        Ok(())
    }

    /// Answers calls on one connection until the peer closes it, it sends something we refuse to
    /// read, it stays idle for [`IDLE_TIMEOUT`], or shutdown starts; calls in progress are then
    /// answered before the connection closes.
    pub async fn handle_connection<IO>(self: &Arc<Self>, io: IO, peer: &str, shutdown: CancellationToken)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.metrics.clients.inc();
        let (reader, mut writer) = tokio::io::split(io);
        let (replies, mut outbox) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
        let reading = self.read_calls(reader, peer, replies, shutdown);
        let writing = async {
            while let Some(reply) = outbox.recv().await {
                if let Err(error) = writer.write_all(&reply).await {
                    tracing::debug!(%peer, %error, "connection write failed");
                    break;
                }
            }
            // Calls still being answered find the outbox closed and drop their replies.
            outbox.close();
            let _ = writer.shutdown().await;
        };
        tokio::join!(reading, writing);
        self.metrics.clients.dec();
        tracing::debug!(%peer, "client disconnected");
    }

    /// The reading half of a connection: reads calls and has them answered, each reply sent to
    /// `replies`. Returns once no call is left in progress.
    async fn read_calls<R>(
        self: &Arc<Self>,
        reader: R,
        peer: &str,
        replies: mpsc::Sender<Vec<u8>>,
        shutdown: CancellationToken,
    ) where
        R: AsyncRead + Unpin + Send,
    {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut in_flight = JoinSet::new();
        let mut record = Vec::with_capacity(64 * 1024);
        loop {
            // Finished calls are reaped as we go, so the set stays small.
            while in_flight.try_join_next().is_some() {}
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                read = tokio::time::timeout(IDLE_TIMEOUT, rpc::read_record(&mut reader, &mut record)) => read,
            };
            let read = match read {
                Ok(read) => read,
                Err(_) if in_flight.is_empty() => {
                    tracing::debug!(%peer, "connection idle; closing it");
                    break;
                }
                Err(_) => continue,
            };
            match read {
                Ok(Record::Complete) => {}
                Ok(Record::Closed) => break,
                Ok(Record::TooLarge { xid }) => {
                    self.metrics.rpc_error("record_too_large");
                    tracing::warn!(%peer, "record larger than {} bytes; closing the connection", rpc::MAX_RECORD);
                    if let Some(xid) = xid {
                        let mut reply = Vec::new();
                        Reply::new(&mut reply).accepted(xid, accept::GARBAGE_ARGS);
                        rpc::seal(&mut reply);
                        let _ = replies.send(reply).await;
                    }
                    break;
                }
                Err(error) => {
                    tracing::debug!(%peer, %error, "connection read failed");
                    break;
                }
            }
            let call = std::mem::replace(&mut record, Vec::with_capacity(64 * 1024));
            // Quick reads are answered here, on the connection's task: the hand-offs to the
            // blocking pool and back cost more than the call itself. A large READ only when
            // nothing else is in flight on the connection; otherwise the pool answers it beside
            // the others.
            let inline = match self.config.execution {
                Execution::Inline => true,
                Execution::BlockingPool => match quickness(&call) {
                    Quickness::Small => true,
                    Quickness::LargeRead => in_flight.is_empty(),
                    Quickness::Slow => false,
                },
            };
            match if inline { Execution::Inline } else { self.config.execution } {
                Execution::Inline => {
                    if let Some(reply) = self.answer_owned(&call)
                        && replies.send(reply).await.is_err()
                    {
                        break;
                    }
                }
                Execution::BlockingPool => {
                    // Waiting here stops reading: the client's further calls wait in TCP.
                    let Ok(slot) = slots.clone().acquire_owned().await else { break };
                    let kib = u32::try_from((call.len() + REPLY_ALLOWANCE).div_ceil(1024)).unwrap_or(u32::MAX);
                    let Ok(bytes) = self.budget.clone().acquire_many_owned(kib).await else { break };
                    let server = self.clone();
                    let replies = replies.clone();
                    in_flight.spawn(async move {
                        let answered = tokio::task::spawn_blocking(move || server.answer_owned(&call)).await;
                        drop(bytes);
                        if let Ok(Some(reply)) = answered {
                            let _ = replies.send(reply).await;
                        }
                        drop(slot);
                    });
                }
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Answers one record into a reply of its own (see [`NfsServer::answer`]).
    pub fn answer_owned(&self, record: &[u8]) -> Option<Vec<u8>> {
        let mut reply = Vec::with_capacity(1024);
        self.answer(record, &mut reply)?;
        Some(reply)
    }

    /// Answers one record; None when no reply is due (a reply message, or an unreadable record).
    /// `reply_buf` is reused between calls; the returned bytes include the record mark.
    pub fn answer<'r>(&self, record: &[u8], reply_buf: &'r mut Vec<u8>) -> Option<&'r [u8]> {
        let started = tokio::time::Instant::now();
        let call = match rpc::parse_call(record) {
            Ok(call) => call,
            Err(BadCall::Unreadable | BadCall::NotACall) => {
                self.metrics.rpc_error("not_a_call");
                return None;
            }
            Err(BadCall::RpcVersion { xid }) => {
                self.metrics.rpc_error("rpc_version");
                Reply::new(reply_buf).rpc_mismatch(xid);
                return Some(rpc::seal(reply_buf));
            }
            Err(BadCall::Garbage { xid }) => {
                self.metrics.rpc_error("garbage_args");
                Reply::new(reply_buf).accepted(xid, accept::GARBAGE_ARGS);
                return Some(rpc::seal(reply_buf));
            }
        };
        let cred = match &call.cred {
            Ok(cred) => cred.clone(),
            // NULL needs no identity, whatever the flavor.
            Err(_) if call.proc_ == 0 => rpc::Credential::nobody(),
            Err(stat) => {
                self.metrics.rpc_error("auth");
                Reply::new(reply_buf).auth_error(call.xid, *stat);
                return Some(rpc::seal(reply_buf));
            }
        };
        let (program, versions) = match call.prog {
            NFS_PROGRAM => ("nfs", 3..=3),
            MOUNT_PROGRAM => ("mount", 3..=3),
            PORTMAP_PROGRAM => ("portmap", 2..=2),
            _ => {
                self.metrics.rpc_error("prog_unavail");
                Reply::new(reply_buf).accepted(call.xid, accept::PROG_UNAVAIL);
                return Some(rpc::seal(reply_buf));
            }
        };
        if !versions.contains(&call.vers) {
            self.metrics.rpc_error("prog_mismatch");
            Reply::new(reply_buf).prog_mismatch(call.xid, *versions.start(), *versions.end());
            return Some(rpc::seal(reply_buf));
        }
        Reply::new(reply_buf).success(call.xid);
        let header_len = reply_buf.len();
        let mut ctx = CallContext {
            export: &self.export,
            cred: &cred,
            write_verifier: self.config.write_verifier,
            port: self.config.port,
            bytes_read: 0,
            bytes_written: 0,
        };
        let outcome = match call.prog {
            NFS_PROGRAM => proto::nfs(&mut ctx, call.proc_, call.args, reply_buf),
            MOUNT_PROGRAM => proto::mount(&ctx, call.proc_, call.args, reply_buf),
            _ => proto::portmap(&ctx, call.proc_, call.args, reply_buf),
        };
        self.metrics.bytes_read.inc_by(ctx.bytes_read);
        self.metrics.bytes_written.inc_by(ctx.bytes_written);
        // Current after every call: Linux clients keep their connection for as long as they are
        // mounted, so a gauge updated at disconnect would stand still.
        self.metrics.used_bytes.set(i64::try_from(self.export.used_bytes()).unwrap_or(i64::MAX));
        self.metrics.dir_syncs_seen(self.export.dir_syncs());
        let procedure = procedure_name(call.prog, call.proc_);
        match outcome {
            Outcome::Done(status) => {
                let status = if status == nfsstat3::NFS3_OK { "OK".to_string() } else { format!("{status:?}") };
                self.metrics.operation(program, procedure, &status, started.elapsed());
            }
            Outcome::Garbage | Outcome::NoProcedure => {
                let (stat, kind) = if outcome == Outcome::Garbage {
                    (accept::GARBAGE_ARGS, "garbage_args")
                } else {
                    (accept::PROC_UNAVAIL, "proc_unavail")
                };
                self.metrics.rpc_error(kind);
                // The header ends with accept_stat SUCCESS; replace it and drop any results.
                reply_buf.truncate(header_len);
                reply_buf[header_len - 4..].copy_from_slice(&stat.to_be_bytes());
            }
        }
        Some(rpc::seal(reply_buf))
    }
}

fn procedure_name(prog: u32, proc_: u32) -> &'static str {
    let names: &[&'static str] = match prog {
        NFS_PROGRAM => &NFS_PROCEDURES,
        MOUNT_PROGRAM => &["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"],
        _ => &["NULL", "SET", "UNSET", "GETPORT"],
    };
    names.get(proc_ as usize).copied().unwrap_or("UNKNOWN")
}

/// How long a call takes to answer, judged from the call alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quickness {
    /// Reads what the kernel nearly always has in memory: NULL, GETATTR, LOOKUP, ACCESS,
    /// READLINK, FSSTAT, FSINFO, PATHCONF, and READs of up to 64 KiB.
    Small,
    /// A READ of more than 64 KiB (up to the 1 MiB limit): a copy worth doing beside others.
    LargeRead,
    /// Writes, syncs, namespace changes and listings: the blocking pool.
    Slow,
}

fn quickness(record: &[u8]) -> Quickness {
    const SMALL_READ: u32 = 64 * 1024;
    let Ok(mut call) = rpc::parse_call(record) else { return Quickness::Slow };
    if call.prog != NFS_PROGRAM || call.vers != 3 {
        return Quickness::Slow;
    }
    match call.proc_ {
        // NULL, GETATTR, LOOKUP, ACCESS, READLINK, FSSTAT, FSINFO, PATHCONF
        0 | 1 | 3 | 4 | 5 | 18 | 19 | 20 => Quickness::Small,
        // READ: file handle, offset, count
        6 => {
            let args = &mut call.args;
            match (args.opaque(64), args.u64(), args.u32()) {
                (Ok(_), Ok(_), Ok(count)) if count <= SMALL_READ => Quickness::Small,
                (Ok(_), Ok(_), Ok(_)) => Quickness::LargeRead,
                _ => Quickness::Slow,
            }
        }
        _ => Quickness::Slow,
    }
}

/// A server on loopback with a runtime and thread of its own, as its program runs it: for tests
/// and benchmarks whose client blocks (a FUSE mount, the syncer's blocking client), which could
/// not share a runtime with it. Dropping it (or [`ServerThread::stop`]) shuts the server down.
pub struct ServerThread {
    pub addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Serves `export` on `127.0.0.1:port` (0: any free port) from a two-worker runtime.
    pub fn start(export: Export, port: u16) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let mut config = ServerConfig::new(addr.port())?;
        config.shutdown_grace = Duration::from_millis(100);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let export = Arc::new(export);
        let thread = std::thread::Builder::new().name("sv-nfs-server".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let metrics = NfsMetrics::register(&mut prometheus_client::registry::Registry::default());
                let server = Arc::new(NfsServer::new(export, metrics, config));
                if let Err(error) = server.serve(listener, stop).await {
                    tracing::error!(%error, "the NFS server stopped");
                }
            });
        })?;
        Ok(Self { addr, shutdown, thread: Some(thread) })
    }

    /// Shuts the server down and waits until its thread has ended.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NFSv3 call record (without the record mark) with AUTH_NONE.
    fn call(proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [7u32, 0, 2, NFS_PROGRAM, 3, proc_, 0, 0, 0, 0] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        r.extend_from_slice(args);
        r
    }

    fn read_args(count: u32) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&8u32.to_be_bytes());
        a.extend_from_slice(&[1; 8]);
        a.extend_from_slice(&0u64.to_be_bytes());
        a.extend_from_slice(&count.to_be_bytes());
        a
    }

    #[test]
    fn metadata_reads_and_small_reads_are_quick_everything_else_is_not() {
        for proc_ in [0, 1, 3, 4, 5, 18, 19, 20] {
            assert_eq!(quickness(&call(proc_, &[])), Quickness::Small, "procedure {proc_}");
        }
        assert_eq!(quickness(&call(6, &read_args(4096))), Quickness::Small);
        assert_eq!(quickness(&call(6, &read_args(1 << 20))), Quickness::LargeRead);
        assert_eq!(quickness(&call(6, &[0, 0])), Quickness::Slow, "a READ that cannot be read is not judged quick");
        // WRITE, CREATE, REMOVE, RENAME, LINK, READDIR, READDIRPLUS, COMMIT
        for proc_ in [7, 8, 12, 14, 15, 16, 17, 21] {
            assert_eq!(quickness(&call(proc_, &[])), Quickness::Slow, "procedure {proc_}");
        }
        let mut mount = call(1, &[]);
        mount[12..16].copy_from_slice(&MOUNT_PROGRAM.to_be_bytes());
        assert_eq!(quickness(&mount), Quickness::Slow);
    }
}
