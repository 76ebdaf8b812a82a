//! A directory on an SSH server, over SFTP (`russh` + `russh-sftp`). Password or key
//! authentication; host keys checked against the volume's `known_hosts` annotation, or learned on
//! first use and pinned in the volume (`.sharedvolume/known_hosts`), unless the opt-out annotation
//! is set. Incremental by size and modification time; deletions follow the source.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use sv_api::SshSource as SshSpec;
use tokio::io::AsyncReadExt;

use super::{BoxFuture, Fetched, Source, SourceOptions, digest};
use crate::credentials::{Credentials, Secret};
use crate::error::SyncError;
use crate::paths::RelPath;
use crate::tree::{NewFile, Stage, WriteBatch};

/// How server host keys are checked.
#[derive(Clone, Debug)]
pub enum HostKeys {
    /// Accept any key (the volume opted out).
    Insecure,
    /// Check against this `known_hosts` file; when `learn` is set, a host not in it is recorded on
    /// first contact (trust on first use) and checked from then on.
    File { path: PathBuf, learn: bool },
}

impl HostKeys {
    /// The policy for a volume: its annotation's known hosts, else trust on first use pinned in
    /// the volume, unless it opted out.
    pub fn from_options(options: &SourceOptions) -> Result<Self, SyncError> {
        if options.insecure_host_keys {
            return Ok(HostKeys::Insecure);
        }
        match &options.known_hosts {
            Some(lines) => {
                let path = options.state_dir.join("known_hosts.configured");
                std::fs::create_dir_all(&options.state_dir)?;
                std::fs::write(&path, lines)?;
                Ok(HostKeys::File { path, learn: false })
            }
            None => Ok(HostKeys::File { path: options.state_dir.join("known_hosts"), learn: true }),
        }
    }

    /// Checks `key` of `host:port`; the error says what to do.
    pub fn check(&self, host: &str, port: u16, key: &russh::keys::PublicKey) -> Result<(), String> {
        let HostKeys::File { path, learn } = self else {
            return Ok(());
        };
        match russh::keys::check_known_hosts_path(host, port, key, path) {
            Ok(true) => Ok(()),
            Ok(false) if *learn => {
                russh::keys::known_hosts::learn_known_hosts_path(host, port, key, path)
                    .map_err(|e| format!("recording the host key: {e}"))?;
                tracing::info!(host, port, "learned the SSH host key on first contact; it is checked from now on");
                Ok(())
            }
            Ok(false) => Err(format!(
                "the host key of {host}:{port} is not in the volume's known hosts (sv.sharedvolume.io/ssh-known-hosts)"
            )),
            Err(russh::keys::Error::KeyChanged { .. }) => Err(format!(
                "the host key of {host}:{port} changed since it was recorded; if that is expected, remove it from .sharedvolume/known_hosts"
            )),
            Err(e) => Err(format!("checking the host key: {e}")),
        }
    }
}

/// Authentication method.
#[derive(Clone)]
pub enum SshAuth {
    Password(Secret),
    Key(Secret),
}

pub struct SftpSource {
    host: String,
    port: u16,
    user: String,
    path: String,
    auth: SshAuth,
    host_keys: HostKeys,
}

struct Client {
    host: String,
    port: u16,
    host_keys: HostKeys,
    refusal: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        match self.host_keys.check(&self.host, self.port, &key) {
            Ok(()) => Ok(true),
            Err(reason) => {
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                Ok(false)
            }
        }
    }
}

/// Decodes a private key: PEM/OpenSSH text, or base64 of it (as the Go examples wrote them).
pub fn decode_private_key(secret: &Secret) -> Result<russh::keys::PrivateKey, SyncError> {
    use base64::Engine;
    let text = secret.expose().trim();
    let decoded;
    let pem = if text.contains("-----BEGIN") {
        text
    } else {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        decoded = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| SyncError::Config("the private key is neither PEM nor base64 of PEM".to_string()))?;
        decoded.trim()
    };
    russh::keys::decode_secret_key(pem, None)
        .map_err(|e| SyncError::Config(format!("the private key cannot be read: {e}")))
}

/// Files up to this size are read into memory, [`PARALLEL_READS`] at a time.
const SMALL_FILE: u64 = 4 * 1024 * 1024;
const PARALLEL_READS: usize = 16;

/// Reads a whole (small) remote file.
async fn read_whole(sftp: &SftpSession, remote: &str) -> Result<Vec<u8>, SyncError> {
    let mut file = sftp.open(remote).await.map_err(|e| SyncError::Source(format!("{remote}: {e}")))?;
    let mut body = Vec::new();
    file.read_to_end(&mut body).await.map_err(|e| SyncError::Source(format!("{remote}: {e}")))?;
    Ok(body)
}

/// One remote object found by the walk.
struct Remote {
    path: RelPath,
    kind: RemoteKind,
}

enum RemoteKind {
    Dir,
    File { remote: String, size: u64, mtime: u32, executable: bool },
    Symlink { target: String },
}

impl SftpSource {
    pub fn new(spec: &SshSpec, credentials: &Credentials, options: &SourceOptions) -> Result<Self, SyncError> {
        let port = u16::try_from(spec.port.unwrap_or(22))
            .map_err(|_| SyncError::Config("source.ssh.port is out of range".to_string()))?;
        let path = spec
            .path
            .clone()
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| SyncError::Config("source.ssh.path is required".to_string()))?;
        let auth = match (&credentials.private_key, &credentials.password, &spec.private_key, &spec.password) {
            (Some(key), _, _, _) => SshAuth::Key(key.clone()),
            (None, Some(pw), _, _) => SshAuth::Password(pw.clone()),
            (None, None, Some(key), _) => SshAuth::Key(Secret::new(key.clone())),
            (None, None, None, Some(pw)) => SshAuth::Password(Secret::new(pw.clone())),
            _ => return Err(SyncError::Config("no SSH credential: set a password or a private key".to_string())),
        };
        Ok(Self {
            host: spec.host.trim().to_string(),
            port,
            user: spec.user.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| "root".to_string()),
            path,
            auth,
            host_keys: HostKeys::from_options(options)?,
        })
    }

    async fn session(&self) -> Result<SftpSession, SyncError> {
        let refusal = Arc::new(Mutex::new(None));
        let client = Client {
            host: self.host.clone(),
            port: self.port,
            host_keys: self.host_keys.clone(),
            refusal: refusal.clone(),
        };
        let config = russh::client::Config {
            inactivity_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| SyncError::Unreachable(format!("{}:{}: {e}", self.host, self.port)))?;
        let mut handle = russh::client::connect_stream(Arc::new(config), stream, client).await.map_err(|e| {
            match refusal.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(reason) => SyncError::HostKey(reason),
                None => SyncError::Unreachable(format!("SSH handshake with {}:{}: {e}", self.host, self.port)),
            }
        })?;
        let auth = match &self.auth {
            SshAuth::Password(pw) => handle.authenticate_password(&self.user, pw.expose()).await,
            SshAuth::Key(key) => {
                let key = Arc::new(decode_private_key(key)?);
                let hash =
                    handle.best_supported_rsa_hash().await.map_err(|e| SyncError::Source(e.to_string()))?.flatten();
                handle.authenticate_publickey(&self.user, PrivateKeyWithHashAlg::new(key, hash)).await
            }
        }
        .map_err(|e| SyncError::Source(format!("SSH authentication: {e}")))?;
        if !auth.success() {
            return Err(SyncError::Auth(format!("{}@{} refused the credentials", self.user, self.host)));
        }
        let channel = handle.channel_open_session().await.map_err(|e| SyncError::Source(e.to_string()))?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| SyncError::Source(format!("SFTP subsystem: {e}")))?;
        SftpSession::new(channel.into_stream()).await.map_err(|e| SyncError::Source(format!("SFTP: {e}")))
    }

    /// Lists the remote tree, sorted by path.
    async fn walk(&self, sftp: &SftpSession) -> Result<Vec<Remote>, SyncError> {
        let root = self.path.trim_end_matches('/').to_string();
        let root = if root.is_empty() { "/".to_string() } else { root };
        let root_meta = sftp.metadata(root.clone()).await.map_err(|e| SyncError::Source(format!("{root}: {e}")))?;
        if !root_meta.is_dir() {
            return Err(SyncError::Source(format!("{root} is not a directory")));
        }
        let mut out = Vec::new();
        let mut queue: Vec<(String, Option<RelPath>)> = vec![(root, None)];
        while let Some((dir, rel)) = queue.pop() {
            let entries =
                sftp.read_dir(dir.clone()).await.map_err(|e| SyncError::Source(format!("listing {dir}: {e}")))?;
            for entry in entries {
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = match &rel {
                    Some(r) => r.join(&name)?,
                    None => RelPath::parse(&name)?,
                };
                let remote = format!("{}/{name}", dir.trim_end_matches('/'));
                let meta = entry.metadata();
                let kind = if meta.is_dir() {
                    queue.push((remote, Some(path.clone())));
                    RemoteKind::Dir
                } else if meta.is_symlink() {
                    let target = sftp
                        .read_link(remote.clone())
                        .await
                        .map_err(|e| SyncError::Source(format!("{remote}: {e}")))?;
                    RemoteKind::Symlink { target }
                } else if meta.is_regular() {
                    let executable = meta.permissions.is_some_and(|p| p & 0o111 != 0);
                    RemoteKind::File { remote, size: meta.len(), mtime: meta.mtime.unwrap_or(0), executable }
                } else {
                    return Err(SyncError::content(format!(
                        "{remote}: only files, directories and symlinks can be mirrored"
                    )));
                };
                out.push(Remote { path, kind });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn run(&self, stage: &mut Stage) -> Result<Fetched, SyncError> {
        let sftp = self.session().await?;
        let remote = self.walk(&sftp).await?;
        let version = |size: u64, mtime: u32| format!("size:{size}:mtime:{mtime}");
        let revision = digest(remote.iter().map(|r| match &r.kind {
            RemoteKind::Dir => format!("d {}", r.path),
            RemoteKind::File { size, mtime, executable, .. } => {
                format!("f {} {} {executable}", r.path, version(*size, *mtime))
            }
            RemoteKind::Symlink { target } => format!("l {} {target}", r.path),
        }));
        if stage.previous().is_some_and(|p| p.manifest.revision == revision) {
            let _ = sftp.close().await;
            return Ok(Fetched::Unchanged);
        }
        let mut candidates = Vec::new();
        for r in &remote {
            match &r.kind {
                RemoteKind::Dir => stage.mkdir(&r.path)?,
                RemoteKind::Symlink { target } => stage.symlink(&r.path, target)?,
                RemoteKind::File { remote, size, mtime, executable } => {
                    candidates.push((r.path.clone(), version(*size, *mtime), (remote.clone(), *size, *executable)));
                }
            }
        }
        let (small, large): (Vec<_>, Vec<_>) =
            stage.reuse_all(candidates)?.into_iter().partition(|(_, _, (_, size, _))| *size <= SMALL_FILE);
        // Large files stream into their files, read ahead by russh-sftp, while the small ones are
        // read several at a time into memory (each costs a few round trips, so latency bounds
        // them): one long transfer must not hold up the rest.
        let mut reserved = Vec::with_capacity(large.len());
        for (path, version, (remote, size, executable)) in large {
            reserved.push((stage.reserve_file(&path, executable, size)?, remote, size, version));
        }
        let sftp = &sftp;
        let read_large = async {
            if reserved.is_empty() {
                return Ok(());
            }
            // On a connection of their own: an SSH connection is one encrypted stream, which one
            // core on each side must keep up with (rclone spreads a large file over several).
            let own = self.session().await?;
            let mut buf = vec![0u8; 256 * 1024];
            for (out, remote, size, _) in &mut reserved {
                let mut file =
                    own.open(remote.as_str()).await.map_err(|e| SyncError::Source(format!("{remote}: {e}")))?;
                // The size listed, no more: a file appended to meanwhile is taken as it was listed
                // (its version names that size, so the next sync fetches the rest).
                let mut left = *size;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n =
                        file.read(&mut buf[..want]).await.map_err(|e| SyncError::Source(format!("{remote}: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    out.write(&buf[..n])?;
                    left -= n as u64;
                }
            }
            let _ = own.close().await;
            Ok::<_, SyncError>(())
        };
        let reads =
            futures::stream::iter(small.into_iter().map(|(path, version, (remote, _, executable))| async move {
                let data = read_whole(sftp, &remote).await?.into();
                Ok::<_, SyncError>(NewFile { path, data, executable, version })
            }))
            .buffered(PARALLEL_READS);
        futures::try_join!(read_large, WriteBatch::write_stream(stage, reads))?;
        for (file, _, _, version) in reserved {
            stage.commit_reserved(file, &version)?;
        }
        let _ = sftp.close().await;
        Ok(Fetched::Tree { revision, meta: BTreeMap::new() })
    }
}

impl Source for SftpSource {
    fn identity(&self) -> String {
        format!("ssh {}@{}:{}{}", self.user, self.host, self.port, self.path)
    }

    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(self.run(stage))
    }
}
