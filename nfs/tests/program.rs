//! The `sv-nfs` program itself: `--help`, probes and metrics over HTTP, a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use sv_operator::testing::Program;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn help_describes_the_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_sv-nfs")).args(["serve", "--help"]).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--export",
        "--port",
        "--http-port",
        "--capacity-bytes",
        "--read-only",
        "--squash",
        "--anon-uid",
        "--consumer-access",
        "--protected-dir",
        "--writer-token-file",
        "--root-mode",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn serves_probes_and_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nfs_port = free_port();
    let mut program = Program::spawn(
        Command::new(env!("CARGO_BIN_EXE_sv-nfs"))
            .args(["serve", "--bind", "127.0.0.1", "--export"])
            .arg(dir.path())
            .args(["--port", &nfs_port.to_string(), "--http-port", "0", "--log-format", "json"]),
    )
    .expect("starts");
    // The HTTP port is open before the export is counted (a large volume takes a while, and the
    // liveness probe must not kill it meanwhile).
    let counting = program.wait_for_log("counting what the export holds", Duration::from_secs(20));
    let http_port =
        json_field(&counting, "http_addr").rsplit(':').next().and_then(|p| p.parse().ok()).expect("http port");
    let live = http_get(http_port, "/healthz").expect("healthz while counting");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    program.wait_for_log("serving NFSv3", Duration::from_secs(20));
    // Readiness comes from the first successful self-probe, which the program logs.
    program.wait_for_log("ready: the self-probe succeeded", Duration::from_secs(20));
    let ready = http_get(http_port, "/readyz").expect("readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let health = http_get(http_port, "/healthz").expect("healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(http_port, "/metrics").expect("metrics");
    assert!(metrics.contains("sv_nfs_operations_total"), "{metrics}");

    let (status, logs) = program.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
    assert!(logs.iter().filter(|l| !l.is_empty()).all(|l| l.starts_with('{')), "JSON logs: {logs:?}");
}

/// A string field of a JSON log line (the formatter puts fields at the top level).
fn json_field(line: &str, name: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    value.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}
