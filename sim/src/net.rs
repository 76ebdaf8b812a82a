//! The simulated network as seen by production code: a connector that gives the real
//! `kube::Client` (through hyper's pooled client) turmoil TCP streams, and a clock that reads
//! the simulation's time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A turmoil TCP stream as the simulation opens and accepts them: numbered in the order it was
/// opened, so that a crashed host's streams close in that order (see [`crate::teardown`]). Also
/// what hyper's client pools.
pub struct SimStream {
    stream: Option<turmoil::net::TcpStream>,
    number: u64,
}

impl SimStream {
    /// Connects to `addr` on the simulated network.
    pub async fn connect(addr: impl turmoil::ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::opened(turmoil::net::TcpStream::connect(addr).await?))
    }

    /// A stream a listener accepted or the caller connected.
    pub fn opened(stream: turmoil::net::TcpStream) -> Self {
        Self { stream: Some(stream), number: crate::teardown::next_stream_number() }
    }

    fn stream(&mut self) -> io::Result<&mut turmoil::net::TcpStream> {
        self.stream.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            drop(crate::teardown::keep_if_tearing_down(self.number, stream));
        }
    }
}

impl Connection for SimStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

/// Connects to `host:port` of a URI on the simulated network.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimConnector;

impl tower::Service<http::Uri> for SimConnector {
    type Response = TokioIo<SimStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let host =
                uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?.to_string();
            let port = uri.port_u16().unwrap_or(80);
            Ok(TokioIo::new(SimStream::connect((host.as_str(), port)).await?))
        })
    }
}

/// A `kube::Client` for the API server at `http://{host}:{port}` on the simulated network. Build
/// it inside the host that uses it: its request buffer runs on that host's runtime.
/// It authenticates as the cluster's administrator, as `kubectl` with an installer's kubeconfig
/// does (see [`crate::api::auth::ADMIN_TOKEN`]).
pub fn kube_client(host: &str, port: u16) -> Result<kube::Client, http::uri::InvalidUri> {
    kube_client_with_token(host, port, Some(crate::api::auth::ADMIN_TOKEN))
}

/// [`kube_client`] that presents a bearer token, as a program in a pod presents its
/// ServiceAccount's (see [`crate::api::ApiServer::issue_token`]).
pub fn kube_client_with_token(
    host: &str,
    port: u16,
    token: Option<&str>,
) -> Result<kube::Client, http::uri::InvalidUri> {
    let base: http::Uri = format!("http://{host}:{port}").parse()?;
    let authorization = token.and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok());
    // The pool's timer is tokio's, whose clock the simulation drives: without one, hyper-util
    // expires idle connections by the wall clock, so a slow machine opened new connections at
    // other points of a run and one seed did not replay the same run.
    let hyper_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(SimConnector);
    let service = tower::ServiceBuilder::new()
        .layer(kube::client::middleware::BaseUriLayer::new(base))
        .map_request(move |mut request: http::Request<kube::client::Body>| {
            if let Some(value) = &authorization {
                request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
            }
            request
        })
        .service(hyper_client);
    Ok(kube::Client::new(service, "default"))
}

/// Wall-clock time of the simulation: a fixed start plus turmoil's simulated elapsed time, the
/// same on every host. Outside a host (the harness itself) it reads the elapsed time the harness
/// last published.
#[derive(Clone, Debug)]
pub struct SimClock {
    pub start: Timestamp,
    pub harness_elapsed: Arc<AtomicU64>,
}

impl SimClock {
    pub fn new(start: Timestamp) -> Self {
        Self { start, harness_elapsed: Arc::new(AtomicU64::new(0)) }
    }

    /// Publishes the simulation's elapsed time for reads outside any host.
    pub fn publish(&self, elapsed: std::time::Duration) {
        self.harness_elapsed.store(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl SimClock {
    /// The simulation's elapsed time: one timeline for every host, across their restarts.
    pub fn elapsed(&self) -> std::time::Duration {
        turmoil::sim_elapsed()
            .unwrap_or_else(|| std::time::Duration::from_nanos(self.harness_elapsed.load(Ordering::Relaxed)))
    }
}

impl sv_operator::clock::Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.elapsed()).unwrap_or(SignedDuration::MAX);
        self.start.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

/// How far each host's clock is off (by host name; a host not named reads the true time).
pub type ClockSkews = Arc<std::sync::Mutex<std::collections::BTreeMap<String, SignedDuration>>>;

/// The wall clock of one host: the simulation's, off by the host's skew (an NTP-less node, a VM
/// resumed from a pause). Read at every `now()`, so a skew set mid-run takes effect at once.
pub struct SkewedClock {
    base: Arc<SimClock>,
    host: String,
    skews: ClockSkews,
}

impl SkewedClock {
    pub fn new(base: Arc<SimClock>, host: &str, skews: ClockSkews) -> Self {
        Self { base, host: host.to_string(), skews }
    }
}

impl sv_operator::clock::Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        let now = sv_operator::clock::Clock::now(self.base.as_ref());
        let skew = self.skews.lock().map(|s| s.get(&self.host).copied().unwrap_or_default()).unwrap_or_default();
        now.checked_add(skew).unwrap_or(now)
    }
}

/// A turmoil listener as the programs' servers take one: axum (probes, metrics, the simulated
/// sources) and the NFS server.
pub struct SimListener(pub turmoil::net::TcpListener);

impl SimListener {
    pub async fn bind(port: u16) -> io::Result<Self> {
        Ok(Self(turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?))
    }
}

impl axum::serve::Listener for SimListener {
    type Io = SimStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => return (SimStream::opened(stream), peer),
                // As axum's own TCP listener does: an accept error is the listener's, not the
                // server's; wait a little and go on.
                Err(error) => {
                    tracing::debug!(%error, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl sv_nfs::server::Listener for SimListener {
    type Io = SimStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, String)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((SimStream::opened(stream), peer.to_string()))
    }
}

/// One HTTP/1.1 request to `host:port` on the simulated network, bounded by `timeout`: the status
/// and the body, or why there is none.
pub async fn http_request(
    host: &str,
    port: u16,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
    timeout: std::time::Duration,
) -> Result<(http::StatusCode, bytes::Bytes), String> {
    let exchange = async {
        let stream = SimStream::connect((host, port)).await.map_err(|e| e.to_string())?;
        http_exchange(stream, request).await
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("timed out after {timeout:?}"))?
}

/// One HTTP/1.1 request on an open connection (plain or TLS): the status and the whole body.
pub async fn http_exchange<S>(
    stream: S,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(http::StatusCode, bytes::Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}
