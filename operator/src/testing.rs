//! Support for tests that run one of our programs as a process. Readiness is explicit: the test
//! waits for a log line the program prints once it is in a given state (bounded by a deadline),
//! never for a fixed time. Also a throwaway real control plane (`SV_ENVTEST_ASSETS`) for tests that
//! run against a real API server.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// A running program whose stdout and stderr lines are collected.
pub struct Program {
    pid: u32,
    lines: Receiver<String>,
    exit: Receiver<std::io::Result<ExitStatus>>,
    exited: bool,
    /// Every line printed so far.
    pub log: Vec<String>,
}

impl Program {
    /// Starts `command` with its output captured.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        let mut child: Child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (line_tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            let tx = line_tx.clone();
            std::thread::spawn(move || {
                BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
            });
        }
        if let Some(err) = child.stderr.take() {
            let tx = line_tx;
            std::thread::spawn(move || {
                BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
            });
        }
        let pid = child.id();
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || drop(exit_tx.send(child.wait())));
        Ok(Self { pid, lines, exit, exited: false, log: Vec::new() })
    }

    /// Waits until a line contains `needle` and returns it; panics with the log after `within`.
    pub fn wait_for_log(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?} within {within:?}:\n{}", self.log.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the program exited before logging {needle:?}:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// Sends `signal` (e.g. "TERM") to the program.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.pid.to_string()).status();
    }

    /// Sends SIGTERM and waits for the exit (killing the program after `within`); returns the
    /// exit status and the whole log.
    pub fn terminate(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        let status = match self.exit.recv_timeout(within) {
            Ok(Ok(status)) => {
                self.exited = true;
                status
            }
            Ok(Err(e)) => panic!("waiting for the program: {e}"),
            Err(_) => {
                self.signal("KILL");
                panic!("the program did not stop within {within:?} of SIGTERM:\n{}", self.log.join("\n"));
            }
        };
        // The pipes close with the process: the rest of the output is already there or on its way.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            self.signal("KILL");
        }
    }
}

/// A throwaway etcd + kube-apiserver on loopback, stopped on drop.
pub struct ControlPlane {
    processes: Vec<Child>,
    dir: PathBuf,
    url: String,
    token: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver from `assets` (the folder `SV_ENVTEST_ASSETS` names).
    pub fn start(assets: &Path) -> Self {
        // A folder per control plane: tests of one process run in parallel, each with its own.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sv-envtest-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).expect("temp dir");
        let token = "sv-envtest-admin-token".to_string();
        std::fs::write(dir.join("tokens.csv"), format!("{token},admin,admin,system:masters\n")).expect("tokens");
        let key = dir.join("sa.pem");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl genrsa failed");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = Command::new(assets.join("etcd"))
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!("--service-account-signing-key-file={}", key.display()))
            .arg("--service-cluster-ip-range=10.96.0.0/12")
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kube-apiserver starts");
        ControlPlane { processes: vec![etcd, apiserver], dir, url: format!("https://127.0.0.1:{api_port}"), token }
    }

    pub fn client(&self) -> Client {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        crate::install_crypto_provider();
        Client::try_from(config).expect("client")
    }

    /// A client, once the API server is ready (within 60 s): `/readyz` answers `ok` and the
    /// `default` namespace exists. `/version` answers 0.2–1.6 s before the namespace exists and
    /// about 3 s before `/readyz` does, and requests in between fail.
    pub async fn ready_client(&self) -> Client {
        let client = self.client();
        eventually("the API server to be ready", Duration::from_secs(60), || {
            let client = client.clone();
            async move {
                let Ok(readyz) = http::Request::get("/readyz").body(Vec::new()) else { return false };
                let ready = client.request_text(readyz).await.is_ok_and(|body| body.trim() == "ok");
                let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
                ready && namespaces.get_opt("default").await.is_ok_and(|n| n.is_some())
            }
        })
        .await;
        client
    }
}

/// Polls `check` every 250 ms until it holds or `limit` passes (then panics naming `what`).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Creates the project's CRDs and waits until both are Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        api.create(&PostParams::default(), &crd).await.expect("CRD created");
    }
    for crd in crate::api::crds() {
        let name = crd.name_any();
        eventually("the CRDs to be established", Duration::from_secs(30), || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            }
        })
        .await;
    }
}
