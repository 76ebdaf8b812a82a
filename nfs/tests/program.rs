//! The `sv-nfs` program itself: `--help`, probes and metrics over HTTP, a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    for flag in ["--export", "--port", "--http-port", "--capacity-bytes", "--read-only"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn serves_probes_and_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nfs_port, http_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sv-nfs"))
        .args(["serve", "--bind", "127.0.0.1", "--export"])
        .arg(dir.path())
        .args(["--port", &nfs_port.to_string(), "--http-port", &http_port.to_string(), "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // Readiness comes from the first successful self-probe.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    while Instant::now() < deadline {
        if http_get(http_port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "the server became ready");
    let health = http_get(http_port, "/healthz").expect("healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(http_port, "/metrics").expect("metrics");
    assert!(metrics.contains("sv_nfs_operations_total"), "{metrics}");

    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM)
        .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut logs).expect("logs");
    child.stderr.take().expect("stderr").read_to_string(&mut logs).expect("logs");
    assert!(logs.contains("\"stopped\"") || logs.contains("stopped"), "{logs}");
    assert!(logs.lines().filter(|l| !l.is_empty()).all(|l| l.starts_with('{')), "JSON logs: {logs}");
}
