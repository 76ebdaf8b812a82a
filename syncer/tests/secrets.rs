//! Credentials never leave the syncer: every source is run through the real loop with wrong and
//! then right credentials (from Secret files, inline in the spec, and inside URLs), and every
//! output is searched for every secret value: logs of all crates at TRACE level, the status
//! patches sent to the API, the metrics, and every file the syncer wrote into the volume.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{
    Repo, S3_ACCESS, S3_SECRET, SSH_PASSWORD, SSH_USER, Sshd, git_server, http_server, s3_server, shared_tempdir,
    tls_config,
};
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use object_store::ObjectStoreExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sv_api::clock::SystemClock;
use sv_api::{SSH_INSECURE_ANNOTATION, SYNC_REQUESTED_ANNOTATION, VolumeKind};
use sv_common::telemetry::Health;
use sv_syncer::report::{StatusWriter, SyncMetrics};
use sv_syncer::run::{Syncer, SyncerConfig, VolumeView};
use sv_syncer::source::NetworkSources;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Everything every crate logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `kube::Client` that hands every request body to `bodies` and echoes it back.
fn recording_client(bodies: mpsc::UnboundedSender<Value>) -> kube::Client {
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let bodies = bodies.clone();
        async move {
            let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let _ = bodies.send(body.clone());
            body["metadata"] = serde_json::json!({"name": "vol", "namespace": "team"});
            let reply = http_body_util::Full::new(Bytes::from(serde_json::to_vec(&body).expect("json")));
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(reply)
                    .expect("response"),
            )
        }
    });
    kube::Client::new(service, "team")
}

struct Case {
    name: &'static str,
    /// The spec's YAML (source and schedule).
    spec: String,
    /// The spec for the failing attempt, when the wrong credential is in the spec itself.
    wrong_spec: Option<String>,
    /// Credential files for the failing attempt, then for the succeeding one.
    wrong: Vec<(&'static str, String)>,
    right: Vec<(&'static str, String)>,
    annotations: Vec<(&'static str, &'static str)>,
    ca: Option<Vec<u8>>,
}

/// Runs the syncer's loop on `case`: one sync with the wrong credentials, one with the right
/// ones; returns the status bodies and the metrics text.
async fn run_case(case: &Case, data: &Path) -> (Vec<Value>, String) {
    let creds = tempfile::tempdir().expect("tempdir");
    let write_creds = |files: &[(&str, String)]| {
        for entry in std::fs::read_dir(creds.path()).expect("creds").filter_map(Result::ok) {
            std::fs::remove_file(entry.path()).expect("remove");
        }
        for (name, value) in files {
            std::fs::write(creds.path().join(name), value).expect("write");
        }
    };
    write_creds(&case.wrong);
    let (tx, mut bodies) = mpsc::unbounded_channel();
    let mut registry = Registry::default();
    let metrics = SyncMetrics::register(&mut registry);
    let config = SyncerConfig {
        kind: VolumeKind::SharedVolume,
        name: "vol".to_string(),
        namespace: Some("team".to_string()),
        data_dir: data.to_path_buf(),
        credentials_dir: Some(creds.path().to_path_buf()),
        extra_ca_pem: case.ca.clone(),
    };
    let writer = StatusWriter::new(recording_client(tx), VolumeKind::SharedVolume, "vol", Some("team"));
    let syncer =
        Syncer::new(config, Arc::new(NetworkSources), Arc::new(SystemClock), metrics, Health::new(), Some(writer));
    let view = |yaml: &str, trigger: &str| {
        let spec = serde_saphyr::from_str(&format!("mountPath: /data\n{yaml}")).expect("spec");
        let mut v = VolumeView { spec, ..VolumeView::default() };
        v.annotations = case.annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.annotations.insert(SYNC_REQUESTED_ANNOTATION.to_string(), trigger.to_string());
        v
    };
    let (views, rx) = watch::channel(Some(view(case.wrong_spec.as_deref().unwrap_or(&case.spec), "1")));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(syncer.run(rx, shutdown.clone()));
    let failed = next_status(&mut bodies).await;
    assert_eq!(failed["status"]["sync"]["lastResult"], "Failed", "{}: {failed}", case.name);
    write_creds(&case.right);
    views.send_replace(Some(view(&case.spec, "2")));
    let succeeded = next_status(&mut bodies).await;
    assert_eq!(succeeded["status"]["sync"]["lastResult"], "Succeeded", "{}: {succeeded}", case.name);
    shutdown.cancel();
    task.await.expect("no panic").expect("clean stop");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics");
    (vec![failed, succeeded], text)
}

async fn next_status(bodies: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(120), bodies.recv())
        .await
        .expect("a status within two minutes")
        .expect("body")
}

/// Every file under `dir`, as bytes, with its path.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").filter_map(Result::ok) {
            let meta = std::fs::symlink_metadata(entry.path()).expect("meta");
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path().display().to_string(), std::fs::read(entry.path()).expect("read")));
            }
        }
    }
    out
}

/// The forms a secret could leak in.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string(), base64::engine::general_purpose::STANDARD.encode(secret)];
    // Keys: each base64 body line long enough to be unmistakable.
    forms
        .extend(secret.lines().map(str::trim).filter(|l| l.len() >= 20 && !l.starts_with("-----")).map(str::to_string));
    forms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_status_metrics_or_the_volume() {
    let Some(sshd) = Sshd::start() else { return };
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this test binary");

    // HTTP with the password in the URL.
    let (http, files) = http_server(None).await;
    files.put("/f", "content");
    let http_password = "http-Url-Pw-3xR7-not-for-logs";
    let wrong_http_password = "http-Wrong-Pw-8kQ2-not-for-logs";
    *files.auth.lock().expect("lock") = Some(("reader".to_string(), http_password.to_string()));

    // S3 with keys in files.
    let s3_root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(s3_root.path().join("bucket")).expect("bucket");
    let s3 = s3_server(s3_root.path()).await;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://{}", s3.addr))
        .with_region("us-east-1")
        .with_bucket_name("bucket")
        .with_access_key_id(S3_ACCESS)
        .with_secret_access_key(S3_SECRET)
        .with_allow_http(true)
        .build()
        .expect("client");
    store.put(&object_store::path::Path::from("o.txt"), b"object".to_vec().into()).await.expect("put");
    let wrong_s3_secret = "s3-Wrong-Secret-5tY9-not-for-logs";

    // SFTP with a password, and with a key.
    let remote = shared_tempdir();
    std::fs::write(remote.path().join("r.txt"), "remote").expect("write");
    let wrong_ssh_password = "ssh-Wrong-Pw-2mN6-not-for-logs";
    let other_sshd = Sshd::start().expect("sshd");

    // git over HTTPS with a token.
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(repos.path(), "r");
    repo.write("g.txt", "git");
    repo.commit("one", "main");
    let (tls, ca) = tls_config();
    let (git, backend) = git_server(repos.path(), Some(tls)).await;
    let git_token = "git-Token-6pL4-not-for-logs";
    let wrong_git_token = "git-Wrong-Token-1zV8-not-for-logs";
    *backend.auth.lock().expect("lock") = Some(("deploy".to_string(), git_token.to_string()));

    let schedule = "syncInterval: 1h\nsyncTimeout: 60s\n";
    let ssh_spec = |inline: &str| {
        format!(
            "source:\n  ssh:\n    host: 127.0.0.1\n    port: {}\n    user: {SSH_USER}\n    path: {}\n{inline}{schedule}",
            sshd.port,
            remote.path().display()
        )
    };
    let cases = vec![
        Case {
            name: "http",
            spec: format!("source:\n  http:\n    url: http://reader:{http_password}@{}/f\n{schedule}", http.addr),
            wrong_spec: Some(format!(
                "source:\n  http:\n    url: http://reader:{wrong_http_password}@{}/f\n{schedule}",
                http.addr
            )),
            wrong: vec![],
            right: vec![],
            annotations: vec![],
            ca: None,
        },
        Case {
            name: "s3",
            wrong_spec: None,
            spec: format!(
                "source:\n  s3:\n    endpointUrl: http://{}\n    bucketName: bucket\n    region: us-east-1\n{schedule}",
                s3.addr
            ),
            wrong: vec![("access-key", S3_ACCESS.to_string()), ("secret-key", wrong_s3_secret.to_string())],
            right: vec![("access-key", S3_ACCESS.to_string()), ("secret-key", S3_SECRET.to_string())],
            annotations: vec![],
            ca: None,
        },
        Case {
            name: "sftp-password",
            wrong_spec: None,
            spec: ssh_spec(""),
            wrong: vec![("password", wrong_ssh_password.to_string())],
            right: vec![("password", SSH_PASSWORD.to_string())],
            annotations: vec![(SSH_INSECURE_ANNOTATION, "true")],
            ca: None,
        },
        Case {
            name: "sftp-inline-password",
            spec: ssh_spec(&format!("    password: {SSH_PASSWORD}\n")),
            wrong_spec: Some(ssh_spec(&format!("    password: {wrong_ssh_password}\n"))),
            wrong: vec![],
            right: vec![],
            annotations: vec![(SSH_INSECURE_ANNOTATION, "true")],
            ca: None,
        },
        Case {
            name: "sftp-key",
            wrong_spec: None,
            spec: ssh_spec(""),
            wrong: vec![("private-key", other_sshd.client_key.clone())],
            right: vec![("private-key", sshd.client_key.clone())],
            annotations: vec![(SSH_INSECURE_ANNOTATION, "true")],
            ca: None,
        },
        Case {
            name: "git-token",
            wrong_spec: None,
            spec: format!(
                "source:\n  git:\n    url: https://127.0.0.1:{}/r.git\n    user: deploy\n{schedule}",
                git.addr.port()
            ),
            wrong: vec![("password", wrong_git_token.to_string())],
            right: vec![("password", git_token.to_string())],
            annotations: vec![],
            ca: Some(ca),
        },
    ];
    let secrets: Vec<String> = [
        http_password,
        wrong_http_password,
        S3_SECRET,
        wrong_s3_secret,
        SSH_PASSWORD,
        wrong_ssh_password,
        git_token,
        wrong_git_token,
        sshd.client_key.as_str(),
        other_sshd.client_key.as_str(),
    ]
    .iter()
    .flat_map(|s| forms(s))
    .collect();

    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    for case in &cases {
        let data = tempfile::tempdir().expect("tempdir");
        let (statuses, metrics) = run_case(case, data.path()).await;
        outputs.extend(statuses.into_iter().map(|s| (format!("{} status", case.name), s.to_string().into_bytes())));
        outputs.push((format!("{} metrics", case.name), metrics.into_bytes()));
        outputs
            .extend(files_under(data.path()).into_iter().map(|(p, b)| (format!("{} volume file {p}", case.name), b)));
    }
    let log = logs.0.lock().expect("lock").clone();
    assert!(log.len() > 10_000, "the logs were captured ({} bytes)", log.len());
    assert!(String::from_utf8_lossy(&log).contains("sync failed"), "failures were logged");
    outputs.push(("logs".to_string(), log));

    for (what, bytes) in &outputs {
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({}…) leaked into {what}",
                &secret[..6.min(secret.len())]
            );
        }
    }
}
