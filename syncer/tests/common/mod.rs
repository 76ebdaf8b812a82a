//! Real source servers on loopback for the syncer's tests: an HTTP(S) file server, `git
//! http-backend` behind a small CGI bridge, an S3 server (`s3s-fs`), and OpenSSH `sshd` (SFTP
//! and git over SSH). Tools missing from the machine make the tests that need them skip with a
//! message; `ci/install-test-deps.sh` installs them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sv_api::VolumeSpec;
use sv_syncer::publish::Volume;
use sv_syncer::run::{SyncOutcome, Syncer, SyncerConfig, VolumeView};

pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        || Path::new(tool).is_file()
}

/// Says a test is skipped for want of a tool; under `SV_REQUIRE_TEST_TOOLS` (set by CI, which
/// installs every tool) it fails instead.
pub fn skip(what: &str) {
    let message = format!("{what} is not installed; run ci/install-test-deps.sh");
    assert!(std::env::var_os("SV_REQUIRE_TEST_TOOLS").is_none(), "{message}");
    eprintln!("skipped: {message}");
}

/// Serves an axum router on 127.0.0.1, optionally over TLS; stops when dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    fn new(addr: SocketAddr, task: tokio::task::JoinHandle<()>) -> Self {
        Self { addr, task: Some(task) }
    }

    /// Stops accepting and waits until the listening socket is closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub async fn serve(router: Router, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(config) => {
                        if let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    Served::new(addr, task)
}

// --- HTTP file server ---------------------------------------------------------------------------

#[derive(Default)]
pub struct Files {
    /// Path → (content, modification time, ETag).
    pub files: Mutex<BTreeMap<String, (Bytes, std::time::SystemTime, String)>>,
    /// (user, password) required, if set.
    pub auth: Mutex<Option<(String, String)>>,
    /// Never answer.
    pub stall: AtomicBool,
    /// Send this many bytes of a body, then nothing more.
    pub stall_after: Mutex<Option<usize>>,
    pub full_responses: AtomicU64,
    pub not_modified: AtomicU64,
}

impl Files {
    pub fn put(&self, path: &str, data: impl Into<Vec<u8>>) {
        let data = Bytes::from(data.into());
        let etag = etag_of(&data);
        self.files.lock().expect("lock").insert(path.to_string(), (data, std::time::SystemTime::now(), etag));
    }

    /// An HTML index of the direct children of `dir` (ending in `/`), as web servers generate
    /// and as `rclone`'s HTTP backend reads.
    fn index(&self, dir: &str) -> Option<String> {
        let files = self.files.lock().expect("lock");
        let mut children = std::collections::BTreeSet::new();
        for path in files.keys() {
            if let Some(rest) = path.strip_prefix(dir) {
                match rest.split_once('/') {
                    Some((sub, _)) => children.insert(format!("{sub}/")),
                    None => children.insert(rest.to_string()),
                };
            }
        }
        if children.is_empty() {
            return None;
        }
        let links: String = children.iter().map(|c| format!("<a href=\"{c}\">{c}</a>\n")).collect();
        Some(format!("<html><body>\n{links}</body></html>\n"))
    }
}

fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", sv_syncer::source::digest([data]))
}

fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let ts = k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

async fn serve_file(State(files): State<Arc<Files>>, uri: Uri, headers: HeaderMap) -> Response {
    if files.stall.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if let Some((user, password)) = files.auth.lock().expect("lock").clone() {
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"test\"")]).into_response();
        }
    }
    if uri.path().ends_with('/') {
        return match files.index(uri.path()) {
            Some(html) => ([(header::CONTENT_TYPE, "text/html")], html).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let Some((data, modified, etag)) = files.files.lock().expect("lock").get(uri.path()).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        files.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    files.full_responses.fetch_add(1, Ordering::SeqCst);
    let headers = [(header::ETAG, etag), (header::LAST_MODIFIED, http_date(modified))];
    if let Some(limit) = *files.stall_after.lock().expect("lock") {
        let first =
            futures::stream::once(std::future::ready(Ok::<_, std::io::Error>(data.slice(..limit.min(data.len())))));
        let body = axum::body::Body::from_stream(first.chain(futures::stream::pending()));
        return (StatusCode::OK, headers, body).into_response();
    }
    (StatusCode::OK, headers, data).into_response()
}

pub async fn http_server(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> (Served, Arc<Files>) {
    let files = Arc::new(Files::default());
    let router = Router::new().fallback(serve_file).with_state(files.clone());
    (serve(router, tls).await, files)
}

/// A self-signed CA and a server configuration for 127.0.0.1 signed by it; returns the CA's PEM.
pub fn tls_config() -> (Arc<tokio_rustls::rustls::ServerConfig>, Vec<u8>) {
    sv_syncer::install_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "sv test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&server_key, &issuer).expect("cert");
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("server config");
    (Arc::new(config), ca.pem().into_bytes())
}

// --- git over HTTP ------------------------------------------------------------------------------

pub struct GitHttp {
    pub root: PathBuf,
    pub auth: Mutex<Option<(String, String)>>,
    pub requests: AtomicU64,
}

/// Runs `git http-backend` as CGI for each request.
async fn git_cgi(
    State(git): State<Arc<GitHttp>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    git.requests.fetch_add(1, Ordering::SeqCst);
    if let Some((user, password)) = git.auth.lock().expect("lock").clone() {
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")]).into_response();
        }
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &git.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, var) in [(header::CONTENT_TYPE, "CONTENT_TYPE"), (header::CONTENT_ENCODING, "HTTP_CONTENT_ENCODING")] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            cmd.env(var, v);
        }
    }
    if let Some(v) = headers.get("git-protocol").and_then(|v| v.to_str().ok()) {
        cmd.env("GIT_PROTOCOL", v);
    }
    let Ok(mut child) = cmd.spawn() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    }
    let Some(stdout) = child.stdout.take() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // CGI headers, then the body streamed as git produces it (packs can be large).
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v
                    .trim()
                    .split(' ')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::OK);
            } else {
                response = response.header(k.trim(), v.trim());
            }
        }
    }
    // The child is reaped when its output ends (kill_on_drop covers an abandoned request).
    let body = futures::stream::unfold((reader, child), |(mut reader, child)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (reader, child)))
            }
        }
    });
    response
        .status(status)
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub async fn git_http_server(root: &Path) -> (Served, Arc<GitHttp>) {
    git_server(root, None).await
}

/// `git http-backend` over HTTP or, with a TLS configuration, HTTPS.
pub async fn git_server(root: &Path, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> (Served, Arc<GitHttp>) {
    let git = Arc::new(GitHttp { root: root.to_path_buf(), auth: Mutex::new(None), requests: AtomicU64::new(0) });
    let router = Router::new().fallback(git_cgi).with_state(git.clone());
    (serve(router, tls).await, git)
}

/// Runs git in `dir`; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `<root>/<name>.git` and a work tree to commit from.
pub struct Repo {
    pub work: PathBuf,
    pub bare: PathBuf,
}

impl Repo {
    pub fn new(root: &Path, name: &str) -> Self {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(&work).expect("work dir");
        git(root, &["init", "-q", "--bare", "-b", "main", bare.to_str().expect("utf8")]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().expect("utf8")]);
        Self { work, bare }
    }

    pub fn write(&self, path: &str, content: &str) {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, content).expect("write");
    }

    /// Commits everything and pushes `branch`; returns the commit id.
    pub fn commit(&self, message: &str, branch: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.work, &["push", "-q", "-f", "origin", &format!("HEAD:refs/heads/{branch}")]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

// --- S3 -------------------------------------------------------------------------------------------

pub const S3_ACCESS: &str = "AKIATESTACCESSKEY01";
pub const S3_SECRET: &str = "s3-secret-Zq8v2Lk9-not-for-logs";

/// An S3 server (`s3s-fs`) over a directory: buckets are its subdirectories.
pub async fn s3_server(root: &Path) -> Served {
    s3_server_at(root, ("127.0.0.1", 0)).await.expect("bind")
}

/// An S3 server on a given address (to bring one back where a volume expects it).
pub async fn s3_server_at(root: &Path, addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<Served> {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS, S3_SECRET));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            // s3s-fs as released never sets TCP_NODELAY; every small response would stall ~40 ms.
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Served::new(addr, task))
}

// --- sshd -----------------------------------------------------------------------------------------

pub const SSH_USER: &str = "svtest";
pub const SSH_PASSWORD: &str = "ssh-Pw-7Hk2mQ-not-for-logs";

/// Ensures the local user the SSH tests log in as exists (needs root).
fn ensure_ssh_user() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if Command::new("id")
            .arg(SSH_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return set_password();
        }
        let created =
            Command::new("useradd").args(["-m", "-s", "/bin/sh", SSH_USER]).status().is_ok_and(|s| s.success());
        created && set_password()
    })
}

fn set_password() -> bool {
    let mut child = match Command::new("chpasswd").stdin(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(_) => return false,
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = writeln!(stdin, "{SSH_USER}:{SSH_PASSWORD}");
    }
    child.wait().is_ok_and(|s| s.success())
}

/// OpenSSH `sshd` on a loopback port with generated keys, SFTP enabled. The fixture owns the
/// listening socket and runs `sshd -i` (inetd mode) per connection, so the server is ready the
/// moment `start` returns, with no polling.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client_key: String,
    pub host_key_line: String,
    stopping: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
    sessions: Arc<Mutex<Vec<Child>>>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the acceptor so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for mut child in self.sessions.lock().expect("lock").drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

impl Sshd {
    /// Starts sshd, or returns None (after saying so) when it cannot run here.
    pub fn start() -> Option<Self> {
        Self::start_on(0)
    }

    /// Starts sshd on `port` (0: any free port) with fresh host keys.
    pub fn start_on(port: u16) -> Option<Self> {
        if !have("/usr/sbin/sshd") || !have("ssh-keygen") {
            skip("openssh-server");
            return None;
        }
        if !ensure_ssh_user() {
            assert!(
                std::env::var_os("SV_REQUIRE_TEST_TOOLS").is_none(),
                "the SSH tests need root to create the user {SSH_USER}"
            );
            eprintln!("skipped: the SSH tests need root to create the user {SSH_USER}");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(dir.path().join("client_key.pub"), dir.path().join("authorized_keys")).expect("authorized keys");
        let config = format!(
            "HostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nPermitRootLogin no\n\
             AllowUsers {SSH_USER}\nLogLevel ERROR\n",
            d = dir.path().display()
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).expect("config");
        let _ = std::fs::create_dir_all("/run/sshd");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        let _ = std::fs::set_permissions(dir.path(), mode);

        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the SSH port");
        let port = listener.local_addr().expect("addr").port();
        let stopping = Arc::new(AtomicBool::new(false));
        let sessions = Arc::new(Mutex::new(Vec::<Child>::new()));
        let acceptor = {
            let (stopping, sessions) = (stopping.clone(), sessions.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let Ok(input) = stream.try_clone() else { continue };
                    let session = Command::new("/usr/sbin/sshd")
                        .args(["-i", "-e", "-f"])
                        .arg(&config_path)
                        .stdin(std::os::fd::OwnedFd::from(input))
                        .stdout(std::os::fd::OwnedFd::from(stream))
                        .stderr(Stdio::null())
                        .spawn();
                    if let Ok(child) = session {
                        let mut sessions = sessions.lock().expect("lock");
                        sessions.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
                        sessions.push(child);
                    }
                }
            })
        };
        let client_key = std::fs::read_to_string(dir.path().join("client_key")).expect("key");
        let host_pub = std::fs::read_to_string(dir.path().join("host_key.pub")).expect("host key");
        let host_key_line =
            format!("[127.0.0.1]:{port} {}", host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        Some(Self { port, dir, client_key, host_key_line, stopping, acceptor: Some(acceptor), sessions })
    }
}

/// A world-readable directory the SSH user can read (temp dirs are private by default).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(dir.path(), mode).expect("chmod");
    dir
}

// --- running syncs --------------------------------------------------------------------------------

/// A volume spec from YAML (the source and schedule; the mount path is added).
pub fn spec(yaml: &str) -> VolumeSpec {
    serde_saphyr::from_str(&format!("mountPath: /data\n{yaml}")).expect("spec parses")
}

pub fn view(yaml: &str) -> VolumeView {
    VolumeView { spec: spec(yaml), ..VolumeView::default() }
}

pub fn view_with(yaml: &str, annotations: &[(&str, &str)]) -> VolumeView {
    let mut v = view(yaml);
    v.annotations = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v
}

/// A syncer that syncs into `data` with credentials from `credentials` and the extra CA `ca`.
pub fn syncer(data: &Path, credentials: Option<&Path>, ca: Option<Vec<u8>>) -> Syncer {
    sv_syncer::install_crypto_provider();
    let config = SyncerConfig {
        kind: sv_api::VolumeKind::SharedVolume,
        name: "test".to_string(),
        namespace: Some("default".to_string()),
        data_dir: data.to_path_buf(),
        credentials_dir: credentials.map(Path::to_path_buf),
        extra_ca_pem: ca,
    };
    Syncer::standalone(config)
}

/// An empty volume in a temporary folder and a syncer that syncs into it.
pub fn target() -> (tempfile::TempDir, Volume, Syncer) {
    let data = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), None, None);
    (data, volume, syncer)
}

/// One sync; the error is returned redacted, as it would reach the status.
pub async fn sync(syncer: &Syncer, volume: &Volume, view: &VolumeView) -> Result<SyncOutcome, String> {
    syncer.sync_once(view, volume).await.map_err(|(e, r)| r.redact(&e.to_string()))
}

/// The published tree as (path, content or link target or "<dir>").
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let meta = std::fs::symlink_metadata(e.path()).expect("meta");
            if meta.file_type().is_symlink() {
                out.insert(path, format!("-> {}", std::fs::read_link(e.path()).expect("link").display()));
            } else if meta.is_dir() {
                out.insert(path.clone(), "<dir>".to_string());
                walk(&e.path(), &path, out);
            } else {
                out.insert(path, String::from_utf8_lossy(&std::fs::read(e.path()).expect("read")).into_owned());
            }
        }
    }
    let current = root.join(".sharedvolume/current");
    let mut out = BTreeMap::new();
    if current.exists() {
        walk(&current, "", &mut out);
    }
    out
}
