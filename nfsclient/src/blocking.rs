//! Connections whose calls finish without an async runtime, for callers that speak NFS from
//! plain threads (the syncer's file-system seam, which runs where a kernel mount's system calls
//! would): each read and write completes before its future is first polled, so
//! `futures::executor::block_on` drives an [`NfsClient`](crate::NfsClient) call to the end.
//!
//! - [`BlockingTcpConnector`]: real TCP through blocking sockets.
//! - [`InProcessConnector`]: a server in the same process, called directly with each record (the
//!   simulation's syncer reaches its simulated `sv-nfs` this way: its seam is synchronous, and a
//!   synchronous call cannot wait for the simulation's sockets).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;

/// Real TCP with blocking sockets and `TCP_NODELAY`. A read or write that waits longer than
/// [`SOCKET_TIMEOUT`] fails with `TimedOut` (the client then tries a new connection, and gives
/// up after its retries): a thread blocked on a server that stopped answering could not be
/// cancelled otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockingTcpConnector;

/// How long a blocking read or write may wait: the kernel client's default `timeo=600` (60 s).
pub const SOCKET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A TCP stream whose reads and writes block the calling thread.
pub struct BlockingStream(TcpStream);

impl Connector for BlockingTcpConnector {
    type Connection = BlockingStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Connection> {
        let stream = TcpStream::connect_timeout(&addr, SOCKET_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
        stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
        Ok(BlockingStream(stream))
    }

    async fn connect_with_port(&self, _addr: SocketAddr, _local_port: u16) -> io::Result<Self::Connection> {
        // The standard library cannot bind a client socket before it connects.
        Err(io::Error::new(io::ErrorKind::Unsupported, "a privileged source port needs the async TcpConnector"))
    }
}

impl AsyncRead for BlockingStream {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::UnexpectedEof.into()),
            n => Ok(n),
        }
    }
}

impl AsyncWrite for BlockingStream {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }
}

/// A server in this process: answers one RPC record (without its record marks) with a reply
/// (with them), or `None` when no reply is due.
pub trait AnswerRecord: Send + Sync + 'static {
    fn answer_record(&self, record: &[u8]) -> Option<Vec<u8>>;
}

/// Finds the in-process server a connection to `addr` reaches now, or fails as a refused
/// connection would.
pub trait Route: Send + Sync + 'static {
    fn route(&self, addr: SocketAddr) -> io::Result<Arc<dyn LiveServer>>;
}

/// A server that may stop while connections to it are open: once it has, calls on those
/// connections fail as a reset connection does.
pub trait LiveServer: Send + Sync {
    /// The answer, or `None` when the server is gone.
    fn answer_if_running(&self, record: &[u8]) -> Option<Option<Vec<u8>>>;
}

impl<T: AnswerRecord> LiveServer for std::sync::Weak<T> {
    fn answer_if_running(&self, record: &[u8]) -> Option<Option<Vec<u8>>> {
        self.upgrade().map(|server| server.answer_record(record))
    }
}

/// Connects to in-process servers found by a [`Route`].
#[derive(Clone)]
pub struct InProcessConnector(pub Arc<dyn Route>);

impl Connector for InProcessConnector {
    type Connection = InProcessStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Connection> {
        let server = self.0.route(addr)?;
        Ok(InProcessStream { server, incoming: Vec::new(), record: Vec::new(), replies: VecDeque::new() })
    }

    async fn connect_with_port(&self, addr: SocketAddr, _local_port: u16) -> io::Result<Self::Connection> {
        self.connect(addr).await
    }
}

/// The largest record a client sends (a 1 MiB WRITE and its header fit well below).
const MAX_RECORD: usize = 4 << 20;

/// One connection to an in-process server: calls are answered as soon as their last fragment
/// is written, and the reply waits to be read.
pub struct InProcessStream {
    server: Arc<dyn LiveServer>,
    /// Bytes written and not yet a whole fragment.
    incoming: Vec<u8>,
    /// The fragments of the record being assembled.
    record: Vec<u8>,
    replies: VecDeque<u8>,
}

impl InProcessStream {
    /// Takes every whole fragment out of `incoming`, answering each finished record.
    fn take_fragments(&mut self) -> io::Result<()> {
        loop {
            let Some(mark) = self.incoming.get(..4) else { return Ok(()) };
            let mark = u32::from_be_bytes([mark[0], mark[1], mark[2], mark[3]]);
            let (last, length) = (mark & 0x8000_0000 != 0, (mark & 0x7fff_ffff) as usize);
            if self.record.len() + length > MAX_RECORD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "RPC record too large"));
            }
            if self.incoming.len() < 4 + length {
                return Ok(());
            }
            self.record.extend_from_slice(&self.incoming[4..4 + length]);
            self.incoming.drain(..4 + length);
            if last {
                let record = std::mem::take(&mut self.record);
                match self.server.answer_if_running(&record) {
                    Some(Some(reply)) => self.replies.extend(reply),
                    Some(None) => {}
                    None => return Err(io::ErrorKind::ConnectionReset.into()),
                }
            }
        }
    }
}

impl AsyncWrite for InProcessStream {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.incoming.extend_from_slice(buf);
        self.take_fragments()?;
        Ok(buf.len())
    }
}

impl AsyncRead for InProcessStream {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.replies.is_empty() {
            // Nothing will ever come: every call is answered when it is written. A client
            // waiting here lost its server's answer (a record the server did not reply to).
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the server sent no reply"));
        }
        let n = buf.len().min(self.replies.len());
        for (slot, byte) in buf.iter_mut().zip(self.replies.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}
