//! Admission latency over TLS on loopback at fixed request rates, against an empty handler on the
//! same server stack in the same run. Run with `cargo bench -p sv-webhook`.
//!
//! Open loop: requests are started on a fixed schedule whatever the answers do (the sender never
//! waits for an answer, so a slow answer cannot hold back the ones behind it), and each latency
//! runs from the moment its request is handed to the client. Tokio's timers have millisecond
//! resolution, so timing from the scheduled instant would add up to 1 ms of timer slack to every
//! sample; the achieved rate column shows that the sender kept to the schedule.
//! Keep-alive connections from a reqwest pool; the pod review is the recorded request 016 (one
//! SharedVolume, two containers), answered with a JSONPatch; its claim exists, so no API call.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use k8s_openapi::jiff::Timestamp;
use prometheus_client::registry::Registry;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use sv_common::telemetry::Health;
use sv_webhook::certs::{Lifetimes, next, service_dns_names};
use sv_webhook::cluster::{ClaimState, Snapshot};
use sv_webhook::metrics::WebhookMetrics;
use sv_webhook::mutate::MutateSettings;
use sv_webhook::server::{Creator, Webhook, router};
use sv_webhook::tls::{ReloadableCert, TlsListener, server_config};
use tokio_util::sync::CancellationToken;

const HOST: &str = "sv-webhook.bench.svc";
const RATES: [u32; 3] = [200, 500, 1000];
const SECONDS_PER_RATE: u64 = 5;

/// Starts `app` over TLS on the server runtime.
fn serve(
    servers: &tokio::runtime::Handle,
    app: Router,
    cert: Arc<ReloadableCert>,
    stop: CancellationToken,
) -> SocketAddr {
    let _entered = servers.enter();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    tcp.set_nonblocking(true).expect("nonblocking");
    let addr = tcp.local_addr().expect("addr");
    let tcp = tokio::net::TcpListener::from_std(tcp).expect("listener");
    let listener = TlsListener::new(tcp, server_config(cert), stop.clone());
    servers.spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Row {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    achieved: f64,
    errors: usize,
}

async fn run(client: &reqwest::Client, url: &str, body: &'static [u8], rate: u32) -> Row {
    let total = rate as u64 * SECONDS_PER_RATE;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(Mutex::new(0usize));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, latencies, errors) = (client.clone(), url.to_string(), latencies.clone(), errors.clone());
        let sent = Instant::now();
        tasks.push(tokio::spawn(async move {
            let ok = match client.post(&url).header("content-type", "application/json").body(body).send().await {
                Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                latencies.lock().expect("lock").push(sent.elapsed());
            } else {
                *errors.lock().expect("lock") += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed();
    let mut sorted = latencies.lock().expect("lock").clone();
    sorted.sort();
    let errors = *errors.lock().expect("lock");
    Row {
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        p999: percentile(&sorted, 0.999),
        achieved: sorted.len() as f64 / elapsed.as_secs_f64(),
        errors,
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    // The servers get a runtime of their own with one worker thread, and the load generator a
    // single-threaded one on the main thread: each has one of this machine's two cores, so the
    // client's timers and the servers' calls never wait behind each other in one scheduler (as
    // they do when both share a runtime, which is what a real API server and webhook never do).
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("servers")
        .enable_all()
        .build()
        .expect("server runtime");
    let load = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("load runtime");
    load.block_on(bench(servers.handle().clone()));
}

async fn bench(servers: tokio::runtime::Handle) {
    sv_api::install_crypto_provider();
    let set = next(None, false, &service_dns_names("sv-webhook", "bench"), Timestamp::now(), &Lifetimes::default())
        .expect("issue")
        .expect("set");
    let cert = Arc::new(ReloadableCert::default());
    cert.set_pem(set.leaf_pem.as_bytes(), set.leaf_key_pem.as_bytes()).expect("cert");
    let stop = CancellationToken::new();

    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut snapshot = Snapshot::default();
    snapshot.load_file(&dir.join("tests/fixtures/cluster.yaml")).expect("fixtures");
    snapshot.claims.insert(("team-a".to_string(), "sv-0123456789ab-team-a".to_string()), ClaimState::Present);
    let health = Health::new();
    health.set_ready(true);
    let webhook = Arc::new(Webhook {
        cluster: snapshot,
        settings: MutateSettings::default(),
        creator: Creator::Record(Arc::new(Mutex::new(Vec::new()))),
        metrics: WebhookMetrics::register(&mut Registry::default()),
        health,
    });
    let alone = Webhook {
        cluster: webhook.cluster.clone(),
        settings: MutateSettings::default(),
        creator: Creator::Record(Arc::new(Mutex::new(Vec::new()))),
        metrics: WebhookMetrics::register(&mut Registry::default()),
        health: Health::new(),
    };
    let ours = serve(&servers, router(webhook), cert.clone(), stop.clone());
    let fixed =
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}"#;
    // Reads the whole body, as any handler must, and answers a fixed review.
    let empty =
        Router::new().route("/mutate", post(move |body: axum::body::Bytes| async move { (body.len(), fixed).1 }));
    let baseline = serve(&servers, empty, cert, stop.clone());

    let body: &'static [u8] = Box::leak(
        std::fs::read(dir.join("tests/admission/requests/016-pod-create-patched-pod.json"))
            .expect("recorded request")
            .into_boxed_slice(),
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(set.ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = |addr: SocketAddr| {
        reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .resolve(HOST, addr)
            .pool_max_idle_per_host(64)
            .build()
            .expect("client")
    };
    let (ours_client, base_client) = (client(ours), client(baseline));
    let url = |addr: SocketAddr| format!("https://{HOST}:{}/mutate?timeout=5s", addr.port());
    // Warm the code paths, and open the pools' connections at the highest rate, so that no TLS
    // handshake lands in a measured row.
    for rate in [200, RATES[RATES.len() - 1]] {
        run(&ours_client, &url(ours), body, rate).await;
        run(&base_client, &url(baseline), body, rate).await;
    }

    // The handler alone, in process: decode, decide, the whole answer, encode, each timed.
    let request_count = 20_000u32;
    let mut spent = [Duration::ZERO; 4];
    for _ in 0..request_count {
        let t0 = Instant::now();
        let request = sv_webhook::review::decode_as::<k8s_openapi::api::core::v1::Pod>(body).expect("decodes");
        let t1 = Instant::now();
        std::hint::black_box(sv_webhook::mutate::mutate_pod(&request, &alone.cluster, &alone.settings));
        let t2 = Instant::now();
        let answered = sv_webhook::server::answer_body(&alone, "mutate", body).await.expect("answers");
        let t3 = Instant::now();
        std::hint::black_box(serde_json::to_vec(&sv_webhook::review::encode(answered.response)).expect("encodes"));
        let t4 = Instant::now();
        for (slot, took) in spent.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
            *slot += took;
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(request_count);
    println!(
        "handler alone, no network, per review: decode {:.1} µs, decide {:.1} µs, whole answer (decode, decide, patch) {:.1} µs, encode {:.1} µs\n",
        us(spent[0]),
        us(spent[1]),
        us(spent[2]),
        us(spent[3])
    );

    println!(
        "sv-webhook admission latency over TLS on loopback, open loop, {SECONDS_PER_RATE} s per row, keep-alive; servers on one worker thread, load generator on another"
    );
    println!("(peer: an empty handler on the same axum + rustls stack, same run; ratio = ours / empty at p99)\n");
    println!(
        "| rate/s | ours p50 | ours p99 | ours p999 | ours achieved/s | empty p50 | empty p99 | empty p999 | p99 ratio | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for rate in RATES {
        // Alternate which server goes first, so neither always gets the warmer machine.
        let (a, b) = if rate % 400 == 0 {
            let b = run(&base_client, &url(baseline), body, rate).await;
            (run(&ours_client, &url(ours), body, rate).await, b)
        } else {
            let a = run(&ours_client, &url(ours), body, rate).await;
            (a, run(&base_client, &url(baseline), body, rate).await)
        };
        println!(
            "| {rate} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {} |",
            micros(a.p50),
            micros(a.p99),
            micros(a.p999),
            a.achieved,
            micros(b.p50),
            micros(b.p99),
            micros(b.p999),
            a.p99.as_secs_f64() / b.p99.as_secs_f64().max(1e-9),
            a.errors + b.errors
        );
    }
    stop.cancel();
}
