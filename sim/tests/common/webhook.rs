//! A test webhook in a simulated pod: an axum router served over HTTPS on the pod's port 8443,
//! with a certificate for `<service>.<namespace>.svc` from a CA of its own.

use std::sync::Arc;

use sv_sim::programs::{PodContext, Program, ProgramFuture};
use tokio_util::sync::CancellationToken;

/// A self-signed CA and a server configuration for `dns_name`; returns the CA's PEM.
pub fn tls(dns_name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![dns_name.to_string()]).expect("params");
    let cert = params.signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key)).expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    (Arc::new(config), ca.pem())
}

/// A pod program serving `router` over TLS on port 8443 until the pod stops.
pub fn serving(tls: Arc<rustls::ServerConfig>, router: axum::Router) -> Program {
    Program::Custom(Arc::new(move |_pod: PodContext, stop: CancellationToken| -> ProgramFuture {
        let (tls, router) = (tls.clone(), router.clone());
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 8443)).await.map_err(|e| e.to_string())?;
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.map_err(|e| e.to_string())?,
                    _ = stop.cancelled() => return Ok(()),
                };
                let (tls, router) = (tls.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }))
}
