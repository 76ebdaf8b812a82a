//! HTTPS for the webhook: TLS 1.2 and 1.3 (rustls), a serving certificate that can be replaced
//! while the server runs (rotation without a restart: new handshakes get the new certificate,
//! open connections keep theirs), and handshakes done off the accept loop so one slow client
//! does not hold up the others.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate PEM holds no certificate")]
    NoCertificate,
    #[error("the certificate PEM cannot be read: {0}")]
    Certificate(String),
    #[error("the private key PEM cannot be read: {0}")]
    Key(String),
    #[error("the key does not fit the certificate: {0}")]
    Mismatch(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key from PEM.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(certified)
}

/// The serving certificate, replaceable at any time.
#[derive(Debug, Default)]
pub struct ReloadableCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadableCert {
    /// Serves `cert_pem` (leaf first) and `key_pem` from the next handshake on.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = certified_key(cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
        Ok(())
    }

    /// Whether a certificate is loaded (readiness waits for it).
    pub fn is_loaded(&self) -> bool {
        self.current.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The leaf being served (DER), for checks and tests.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|k| k.cert.first().cloned())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A server configuration over `cert`: TLS 1.2 and 1.3, HTTP/1.1.
pub fn server_config(cert: Arc<ReloadableCert>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap_or_else(|_| {
            // ring supports both versions; keep serving with the provider's defaults otherwise.
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports its default protocol versions")
        });
    let mut config = builder.with_no_client_auth().with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Accepts TCP connections from `inner` and hands out those whose TLS handshake completed.
pub struct TlsListener<L: axum::serve::Listener> {
    accepted: mpsc::Receiver<(tokio_rustls::server::TlsStream<L::Io>, L::Addr)>,
    local: std::io::Result<L::Addr>,
}

impl<L> TlsListener<L>
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + 'static,
{
    /// Starts accepting; stops when `stop` is cancelled.
    pub fn new(mut inner: L, config: Arc<rustls::ServerConfig>, stop: CancellationToken) -> Self {
        let local = inner.local_addr();
        let (tx, accepted) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (io, addr) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = inner.accept() => accepted,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        Self { accepted, local }
    }
}

impl<L> axum::serve::Listener for TlsListener<L>
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + 'static,
{
    type Io = tokio_rustls::server::TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped (shutdown): never hand out another connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(addr) => Ok(addr.clone()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
