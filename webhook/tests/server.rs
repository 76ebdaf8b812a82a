//! The webhook server over real TLS on loopback, asked by a real HTTP client (reqwest): reviews
//! answered, bad bodies refused with 400, TLS 1.2 and 1.3, and a certificate swapped while the
//! server runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use prometheus_client::registry::Registry;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use sv_common::telemetry::Health;
use sv_webhook::certs::{CertSet, Lifetimes, next, service_dns_names};
use sv_webhook::cluster::Snapshot;
use sv_webhook::metrics::WebhookMetrics;
use sv_webhook::mutate::MutateSettings;
use sv_webhook::server::{Creator, Webhook, router};
use sv_webhook::tls::{ReloadableCert, TlsListener, server_config};
use tokio_util::sync::CancellationToken;

const HOST: &str = "sv-webhook.sv-system.svc";

fn issue(at: i64) -> CertSet {
    let names = service_dns_names("sv-webhook", "sv-system");
    next(None, false, &names, Timestamp::from_second(at).expect("time"), &Lifetimes::default())
        .expect("issue")
        .expect("set")
}

struct Running {
    addr: SocketAddr,
    cert: Arc<ReloadableCert>,
    stop: CancellationToken,
}

async fn start(set: &CertSet) -> Running {
    sv_api::install_crypto_provider();
    let mut snapshot = Snapshot::default();
    snapshot.load_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster.yaml")).expect("fixtures");
    let health = Health::new();
    health.set_ready(true);
    let webhook = Arc::new(Webhook {
        cluster: snapshot,
        settings: MutateSettings::default(),
        creator: Creator::Record(Arc::new(Mutex::new(Vec::new()))),
        metrics: WebhookMetrics::register(&mut Registry::default()),
        health,
    });
    let cert = Arc::new(ReloadableCert::default());
    cert.set_pem(set.leaf_pem.as_bytes(), set.leaf_key_pem.as_bytes()).expect("serves");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let listener = TlsListener::new(tcp, server_config(cert.clone()), stop.clone());
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move { axum::serve(listener, router(webhook)).with_graceful_shutdown(shutdown).await });
    Running { addr, cert, stop }
}

fn client(ca_pem: &str, addr: SocketAddr, versions: &[&'static rustls::SupportedProtocolVersion]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).resolve(HOST, addr).build().expect("client")
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{HOST}:{}{path}", addr.port())
}

fn recorded(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admission/requests").join(name)).expect("recorded")
}

#[tokio::test]
async fn reviews_over_tls_and_bad_bodies_get_400() {
    let set = issue(Timestamp::now().as_second());
    let server = start(&set).await;
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let http = client(&set.bundle(), server.addr, versions);
        let answer = http
            .post(url(server.addr, "/mutate?timeout=5s"))
            .header("content-type", "application/json")
            .body(recorded("016-pod-create-patched-pod.json"))
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status(), 200);
        let review: Value = answer.json().await.expect("json");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["allowed"], true);
        assert!(review["response"]["patch"].is_string(), "{review}");

        let validate = http.post(url(server.addr, "/validate")).body(recorded("011-sharedvolume-create-data.json"));
        assert_eq!(validate.send().await.expect("answered").status(), 200);

        for (body, needle) in [
            (b"not json".to_vec(), "not JSON"),
            (br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(), "admissionReviewVersions"),
            (recorded("016-pod-create-patched-pod.json")[..100].to_vec(), "not JSON"),
        ] {
            let answer = http.post(url(server.addr, "/mutate")).body(body).send().await.expect("answered");
            assert_eq!(answer.status(), 400);
            let text = answer.text().await.expect("text");
            assert!(text.contains(needle), "{text:?}");
        }
        let huge = vec![b' '; sv_webhook::review::MAX_BODY_BYTES + 10];
        let answer = http.post(url(server.addr, "/mutate")).body(huge).send().await.expect("answered");
        assert_eq!(answer.status(), 413);
        assert_eq!(http.get(url(server.addr, "/healthz")).send().await.expect("ok").status(), 200);
        assert_eq!(http.get(url(server.addr, "/readyz")).send().await.expect("ok").status(), 200);
    }
    server.stop.cancel();
}

#[tokio::test]
async fn a_new_certificate_is_served_without_a_restart() {
    let now = Timestamp::now().as_second();
    let (old, new) = (issue(now), issue(now + 1));
    let server = start(&old).await;
    let trusts_old = client(&old.ca_pem, server.addr, &[&rustls::version::TLS13]);
    let trusts_new = client(&new.ca_pem, server.addr, &[&rustls::version::TLS13]);
    let healthz = url(server.addr, "/healthz");
    assert!(trusts_old.get(&healthz).send().await.is_ok());
    assert!(trusts_new.get(&healthz).send().await.is_err(), "the new CA does not sign the old leaf");
    server.cert.set_pem(new.leaf_pem.as_bytes(), new.leaf_key_pem.as_bytes()).expect("swap");
    assert!(trusts_new.get(&healthz).send().await.is_ok(), "new handshakes get the new leaf");
    // A keep-alive connection made before the swap goes on with its session.
    assert!(trusts_old.get(&healthz).send().await.is_ok());
    server.stop.cancel();
}

#[test]
fn a_key_that_does_not_fit_is_refused() {
    let (a, b) = (issue(1_790_000_000), issue(1_790_000_001));
    let cert = ReloadableCert::default();
    let err = cert.set_pem(a.leaf_pem.as_bytes(), b.leaf_key_pem.as_bytes()).expect_err("mismatch");
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(cert.set_pem(b"", a.leaf_key_pem.as_bytes()).is_err());
    assert!(!cert.is_loaded());
}
