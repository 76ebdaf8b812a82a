//! The `sv-syncer` program itself: `--help`, `once`, and `run` against a minimal API server that
//! serves one SharedVolume (list and an open watch) and records status patches: the first sync,
//! the status patch, probes and metrics, and a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{http_server, serve};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use sv_operator::testing::Program;

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

fn json_field(line: &str, name: &str) -> String {
    let value: Value = serde_json::from_str(line).expect("a JSON log line");
    value.get(name).and_then(Value::as_str).unwrap_or_default().to_string()
}

#[test]
fn help_lists_the_commands_and_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_sv-syncer")).args(["run", "--help"]).output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kind",
        "--name",
        "--namespace",
        "--data-dir",
        "--credentials-dir",
        "--ca-bundle",
        "--http-port",
        "SV_VOLUME_NAME",
    ] {
        assert!(text.contains(flag), "{flag} missing from run --help:\n{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sv-syncer")).arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run") && text.contains("once"), "{text}");
}

struct Api {
    volume: Value,
    patches: std::sync::Mutex<mpsc::Sender<Value>>,
}

/// Lists and watches answer with the one volume; a watch stays open; PATCHes are recorded.
async fn api(
    State(api): State<std::sync::Arc<Api>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> axum::response::Response {
    let query = uri.query().unwrap_or("");
    if method == Method::PATCH {
        let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let _ = api.patches.lock().expect("lock").send(patch.clone());
        let mut reply = api.volume.clone();
        reply["status"] = patch["status"].clone();
        return json_response(&reply);
    }
    if query.contains("watch=true") {
        // An open watch with nothing new: the stream never ends while the test runs.
        let pending = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        return Body::from_stream(pending).into_response();
    }
    json_response(&json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1",
        "kind": "SharedVolumeList",
        "metadata": {"resourceVersion": "7"},
        "items": [api.volume.clone()],
    }))
}

fn json_response(value: &Value) -> axum::response::Response {
    ([("content-type", "application/json")], value.to_string()).into_response()
}

#[test]
fn run_syncs_reports_serves_probes_and_stops_on_sigterm() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (source, files) = runtime.block_on(http_server(None));
    files.put("/config.yaml", "replicas: 2\n");
    let volume = json!({
        "apiVersion": "sv.sharedvolume.io/v1alpha1",
        "kind": "SharedVolume",
        "metadata": {"name": "vol", "namespace": "team", "uid": "4a1c0d5e-0000-4000-8000-000000000001", "resourceVersion": "7", "generation": 2},
        "spec": {
            "mountPath": "/data",
            "syncInterval": "1h",
            "syncTimeout": "30s",
            "source": {"http": {"url": format!("http://{}/config.yaml", source.addr)}},
        },
    });
    let (tx, patches) = mpsc::channel();
    let state = std::sync::Arc::new(Api { volume, patches: std::sync::Mutex::new(tx) });
    let api_server = runtime.block_on(serve(Router::new().fallback(api).with_state(state), None));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            api_server.addr
        ),
    )
    .expect("kubeconfig");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");

    let mut program = Program::spawn(
        Command::new(env!("CARGO_BIN_EXE_sv-syncer"))
            .args([
                "run",
                "--kind",
                "SharedVolume",
                "--name",
                "vol",
                "--namespace",
                "team",
                "--http-port",
                "0",
                "--log-format",
                "json",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST"),
    )
    .expect("starts");
    let serving = program.wait_for_log("serving probes and metrics", Duration::from_secs(20));
    let port: u16 = json_field(&serving, "http_addr").rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    program.wait_for_log("sync succeeded", Duration::from_secs(30));

    let patch = patches.recv_timeout(Duration::from_secs(30)).expect("a status patch");
    assert_eq!(patch["status"]["sync"]["lastResult"], "Succeeded", "{patch}");
    assert_eq!(patch["status"]["sync"]["observedGeneration"], 2);
    assert_eq!(std::fs::read_to_string(data.join("config.yaml")).expect("synced"), "replicas: 2\n");
    assert!(http_get(port, "/readyz").starts_with("HTTP/1.1 200"), "ready after the first sync");
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(port, "/metrics");
    assert!(metrics.contains("sv_syncer_syncs_total{result=\"succeeded\",reason=\"\"} 1"), "{metrics}");

    let (status, logs) = program.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}: {logs:?}");
    assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
    assert!(logs.iter().filter(|l| !l.is_empty()).all(|l| l.starts_with('{')), "JSON logs: {logs:?}");
    drop(api_server);
    drop(source);
}

#[test]
fn once_syncs_a_manifest_without_kubernetes() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (source, files) = runtime.block_on(http_server(None));
    files.put("/model.bin", "weights");
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("volume.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: sv.sharedvolume.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: m\n  namespace: default\n\
             spec:\n  mountPath: /models\n  source:\n    http:\n      url: http://{}/model.bin\n",
            source.addr
        ),
    )
    .expect("manifest");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data");
    let once = || {
        Command::new(env!("CARGO_BIN_EXE_sv-syncer"))
            .args(["once", "--spec"])
            .arg(&manifest)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("runs")
    };
    let out = once();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("published=true files=1 bytes=7"), "{stdout}");
    assert_eq!(std::fs::read_to_string(data.join("model.bin")).expect("synced"), "weights");

    files.put("/model.bin", "weights v2 — bigger");
    drop(files);
    drop(source);
    // The source is gone now: a clear error and a failing exit code.
    let out = once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sync failed: source unreachable"), "{stderr}");
    assert_eq!(std::fs::read_to_string(data.join("model.bin")).expect("kept"), "weights");
}
