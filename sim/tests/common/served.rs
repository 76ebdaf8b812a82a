//! `sv-sim serve` started as its own process, with the kubeconfig it writes and the lines it
//! prints, for tests that drive it from outside.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running `sv-sim serve` and the lines it has printed.
pub struct Served {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Served {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sv-sim"))
            .args(["serve", "--port", "0", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sv-sim serve");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new(), kubeconfig, dir }
    }

    /// The first line printed containing `text`, waiting for it at most `within`.
    pub fn line(&mut self, text: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "sv-sim serve did not print {text:?} within {within:?} ({e}); it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_named("kubectl", args)
    }

    /// `program` (a kubectl of another version) with the served kubeconfig, in the repository.
    pub fn kubectl_named(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo())
            .args(args)
            .output()
            .expect("run kubectl")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        if !output.status.success() {
            // What a user would look at next: the volumes' conditions, the pods, the events.
            let state = self.kubectl(&["get", "sv,csv,pods", "-A", "-o", "wide"]);
            let volumes = self.kubectl(&[
                "get",
                "sv,csv",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}{\"\\n\"}{end}",
            ]);
            let events = self.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.regarding.name} {.reason}: {.note}{\"\\n\"}{end}",
            ]);
            panic!(
                "kubectl {args:?} failed:\n{}\n--- the cluster then:\n{}\n{}\n--- events:\n{}",
                text(&output),
                text(&state),
                text(&volumes),
                text(&events)
            );
        }
        text(&output)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}
