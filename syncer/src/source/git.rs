//! A git branch over HTTPS or SSH, with `gix`. The repository is cached bare in the volume's state
//! directory and fetched shallow (depth 1); before fetching, the remote's commit is compared with
//! the published one, so an unchanged branch costs one ref advertisement. The commit's tree is
//! written file by file: blobs already published at the same path are hard links, submodules are
//! refused, symlinks must stay inside the tree.
//!
//! SSH uses the `ssh` program (as git does), with the key written to a private temporary file, and
//! host keys from the volume's annotation or pinned on first use in `.sharedvolume/known_hosts`
//! (shared with the SFTP source).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gix::ObjectId;
use gix::objs::tree::EntryKind;
use gix::protocol::transport::client::blocking_io::http::Options as HttpOptions;
use gix::protocol::transport::client::blocking_io::http::reqwest::Options as ReqwestOptions;
use sv_api::GitSource as GitSpec;
use tokio_util::sync::CancellationToken;

use super::sftp::decode_private_key;
use super::{BoxFuture, Fetched, Source, SourceOptions, digest, on_blocking_thread, public_url};
use crate::credentials::{Credentials, Secret};
use crate::error::SyncError;
use crate::paths::RelPath;
use crate::tree::{NewFile, Stage, WriteBatch};

/// The local ref the fetched branch is stored at.
const FETCHED_REF: &str = "refs/sharedvolume/fetched";

pub struct GitSource {
    url: String,
    branch: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    private_key: Option<Secret>,
    state_dir: PathBuf,
    insecure_host_keys: bool,
    configured_known_hosts: Option<String>,
    extra_ca_pem: Option<Vec<u8>>,
}

impl GitSource {
    pub fn new(spec: &GitSpec, credentials: &Credentials, options: &SourceOptions) -> Result<Self, SyncError> {
        let url = spec.url.trim().to_string();
        if url.is_empty() {
            return Err(SyncError::Config("source.git.url is required".to_string()));
        }
        let password = credentials.password.clone().or_else(|| spec.password.clone().map(Secret::new));
        let private_key = credentials.private_key.clone().or_else(|| spec.private_key.clone().map(Secret::new));
        Ok(Self {
            url,
            branch: spec.branch.clone().filter(|b| !b.trim().is_empty()),
            user: spec.user.clone().filter(|u| !u.is_empty()),
            password,
            private_key,
            state_dir: options.state_dir.clone(),
            insecure_host_keys: options.insecure_host_keys,
            configured_known_hosts: options.known_hosts.clone(),
            extra_ca_pem: options.extra_ca_pem.clone(),
        })
    }

    fn repo_dir(&self) -> PathBuf {
        self.state_dir.join("git").join(format!("{}.git", digest([self.url.as_bytes()])))
    }

    /// The remote ref to follow: the branch, or the remote's HEAD.
    fn remote_ref(&self) -> String {
        match &self.branch {
            Some(b) if b.starts_with("refs/") => b.clone(),
            Some(b) => format!("refs/heads/{b}"),
            None => "HEAD".to_string(),
        }
    }

    /// `ssh` command line for SSH URLs: the key, the known hosts, and no prompts.
    fn ssh_command(&self, key_file: Option<&Path>, log: &Path) -> Result<String, SyncError> {
        // ssh's own diagnostics go to `log`, to be read into the error (and not onto our stderr).
        let mut cmd = format!("ssh -o BatchMode=yes -o ConnectTimeout=15 -o LogLevel=ERROR -E {}", shell_quote(log));
        if let Some(key) = key_file {
            cmd.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(key)));
        }
        if self.insecure_host_keys {
            cmd.push_str(" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null");
        } else {
            std::fs::create_dir_all(&self.state_dir)?;
            let (file, policy) = match &self.configured_known_hosts {
                Some(lines) => {
                    let file = self.state_dir.join("known_hosts.configured");
                    std::fs::write(&file, lines)?;
                    (file, "yes")
                }
                None => (self.state_dir.join("known_hosts"), "accept-new"),
            };
            cmd.push_str(&format!(" -o UserKnownHostsFile={} -o StrictHostKeyChecking={policy}", shell_quote(&file)));
        }
        Ok(cmd)
    }

    async fn run(&self, stage: &mut Stage) -> Result<Fetched, SyncError> {
        let previous = stage.previous().map(|p| p.manifest.revision.clone());
        let account = match (&self.user, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        if account.is_some() && self.url.to_ascii_lowercase().starts_with("http://") {
            // The Go project sent passwords in clear text; we refuse before connecting.
            return Err(SyncError::Config(
                "source.git.url is plain http://, and credentials are only sent over https:// or SSH; use an https:// URL".to_string(),
            ));
        }
        let extra_ca = match &self.extra_ca_pem {
            Some(pem) => Some(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| SyncError::Config(format!("extra CA bundle: {e}")))?,
            ),
            None => None,
        };
        let mut job = FetchJob {
            repo_dir: self.repo_dir(),
            url: self.url.clone(),
            remote_ref: self.remote_ref(),
            account,
            ssh_command: None,
            ssh_log: None,
            extra_ca,
            previous,
        };
        // Keeps the key on disk until the fetch is over.
        let mut key_file = None;
        if sv_api::validation::git_url_is_ssh(&self.url) {
            if let Some(key) = &self.private_key {
                let key = decode_private_key(key)?;
                let text = key
                    .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                    .map_err(|e| SyncError::Config(format!("private key: {e}")))?;
                key_file = Some(PrivateFile::write(text.as_bytes())?);
            }
            std::fs::create_dir_all(&self.state_dir)?;
            let log = self.state_dir.join("ssh.log");
            std::fs::write(&log, b"")?;
            job.ssh_command = Some(self.ssh_command(key_file.as_ref().map(|f| f.path.as_path()), &log)?);
            job.ssh_log = Some(log);
        }
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = InterruptOnDrop(interrupt.clone());
        let outcome = tokio::task::spawn_blocking(move || job.fetch(&interrupt))
            .await
            .map_err(|e| SyncError::Source(format!("git fetch task: {e}")))??;
        drop(flag);
        drop(key_file);
        let commit = match outcome {
            FetchOutcome::Unchanged => return Ok(Fetched::Unchanged),
            FetchOutcome::Fetched(commit) => commit,
        };
        let repo_dir = self.repo_dir();
        on_blocking_thread(stage, move |stage, cancel| {
            let repo = gix::open(repo_dir).map_err(|e| SyncError::Source(format!("opening the git cache: {e}")))?;
            let tree = repo
                .find_commit(commit)
                .map_err(|e| SyncError::Source(format!("fetched commit {commit}: {e}")))?
                .tree_id()
                .map_err(|e| SyncError::Source(e.to_string()))?
                .detach();
            write_tree(&repo, tree, stage, cancel)
        })
        .await?;
        Ok(Fetched::Tree { revision: commit.to_string(), meta: BTreeMap::new() })
    }
}

/// Writes the tree `id` into the stage: the blobs the previous revision has at the same path are
/// linked forward together, the others written in batches (several directories at a time).
fn write_tree(
    repo: &gix::Repository,
    id: ObjectId,
    stage: &mut Stage,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    let mut blobs = Vec::new();
    walk_tree(repo, id, None, stage, cancel, &mut blobs)?;
    let mut batch = WriteBatch::default();
    for (path, version, (oid, executable)) in stage.reuse_all(blobs)? {
        if cancel.is_cancelled() {
            return Err(SyncError::Source("the sync was abandoned".to_string()));
        }
        let blob = repo.find_object(oid).map_err(|e| SyncError::Source(format!("{path}: {e}")))?.detach();
        batch.push(stage, NewFile { path, data: blob.data.into(), executable, version })?;
    }
    batch.flush(stage)
}

/// Records the directories and links of the tree `id` (at `prefix`) in the stage, and collects
/// its blobs in `blobs`: path, version (the blob's id), and the id and whether it is executable.
fn walk_tree(
    repo: &gix::Repository,
    id: ObjectId,
    prefix: Option<&RelPath>,
    stage: &mut Stage,
    cancel: &CancellationToken,
    blobs: &mut Vec<(RelPath, String, (ObjectId, bool))>,
) -> Result<(), SyncError> {
    let object = repo.find_object(id).map_err(|e| SyncError::Source(format!("tree {id}: {e}")))?;
    let tree = object.try_into_tree().map_err(|e| SyncError::Source(e.to_string()))?;
    let mut entries: Vec<(String, EntryKind, ObjectId)> = Vec::new();
    for entry in tree.iter() {
        let entry = entry.map_err(|e| SyncError::Source(format!("tree {id}: {e}")))?;
        let name = std::str::from_utf8(entry.filename())
            .map_err(|_| SyncError::content("a file name in the repository is not UTF-8"))?;
        entries.push((name.to_string(), entry.mode().kind(), entry.oid().to_owned()));
    }
    for (name, kind, oid) in entries {
        if cancel.is_cancelled() {
            return Err(SyncError::Source("the sync was abandoned".to_string()));
        }
        let path = match prefix {
            Some(p) => p.join(&name)?,
            None => RelPath::parse(&name)?,
        };
        match kind {
            EntryKind::Tree => {
                stage.mkdir(&path)?;
                walk_tree(repo, oid, Some(&path), stage, cancel, blobs)?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                blobs.push((path, oid.to_string(), (oid, kind == EntryKind::BlobExecutable)));
            }
            EntryKind::Link => {
                let blob = repo.find_object(oid).map_err(|e| SyncError::Source(format!("{path}: {e}")))?;
                let target = std::str::from_utf8(&blob.data)
                    .map_err(|_| SyncError::content(format!("{path}: link target is not UTF-8")))?;
                stage.symlink(&path, target)?;
            }
            EntryKind::Commit => {
                return Err(SyncError::content(format!("{path} is a git submodule; submodules are not supported")));
            }
        }
    }
    Ok(())
}

enum FetchOutcome {
    Unchanged,
    Fetched(ObjectId),
}

/// Everything the blocking fetch needs, owned, so it can run on its own thread.
struct FetchJob {
    repo_dir: PathBuf,
    url: String,
    remote_ref: String,
    account: Option<(String, Secret)>,
    ssh_command: Option<String>,
    /// Where `ssh` writes its diagnostics.
    ssh_log: Option<PathBuf>,
    /// Extra CA certificates for HTTPS remotes.
    extra_ca: Option<Vec<reqwest::Certificate>>,
    previous: Option<String>,
}

impl FetchJob {
    fn fetch(self, interrupt: &AtomicBool) -> Result<FetchOutcome, SyncError> {
        let log = self.ssh_log.clone();
        self.fetch_inner(interrupt).map_err(|e| match log.as_deref().map(std::fs::read_to_string) {
            Some(Ok(text)) if !text.trim().is_empty() => classify_ssh(&text).unwrap_or(e),
            _ => e,
        })
    }

    fn fetch_inner(self, interrupt: &AtomicBool) -> Result<FetchOutcome, SyncError> {
        let source_err = |e: &dyn std::error::Error| classify(&chain(e));
        let mut repo = if self.repo_dir.join("HEAD").exists() {
            gix::open(&self.repo_dir).map_err(|e| SyncError::Source(format!("opening the git cache: {e}")))?
        } else {
            std::fs::create_dir_all(&self.repo_dir)?;
            gix::init_bare(&self.repo_dir).map_err(|e| SyncError::Source(format!("creating the git cache: {e}")))?
        };
        if let Some(cmd) = &self.ssh_command {
            let mut config = repo.config_snapshot_mut();
            config
                .set_raw_value(gix::config::tree::Core::SSH_COMMAND, cmd.as_str())
                .map_err(|e| SyncError::Config(format!("ssh command: {e}")))?;
        }
        let spec = format!("+{}:{FETCHED_REF}", self.remote_ref);
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| SyncError::Config(format!("source.git.url: {e}")))?
            .with_refspecs([spec.as_str()], gix::remote::Direction::Fetch)
            .map_err(|e| SyncError::Config(format!("branch: {e}")))?;
        let mut connection = remote.connect(gix::remote::Direction::Fetch).map_err(|e| source_err(&e))?;
        if let Some(certs) = self.extra_ca.clone() {
            connection = connection.with_transport_options(Box::new(http_options_with_ca(&repo, &self.url, certs)?));
        }
        let account = self.account.clone();
        let connection = connection.with_credentials(move |action| match (action, &account) {
            (gix::credentials::helper::Action::Get(ctx), Some((user, password))) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: user.clone(),
                        password: password.expose().to_string(),
                        oauth_refresh_token: None,
                    },
                    next: ctx.into(),
                }))
            }
            _ => Ok(None),
        });
        let prepare =
            connection.prepare_fetch(gix::progress::Discard, Default::default()).map_err(|e| source_err(&e))?;
        let advertised = prepare.ref_map().mappings.iter().find_map(|m| m.remote.as_id().map(ToOwned::to_owned));
        let Some(commit) = advertised else {
            return Err(SyncError::Source(format!("the remote has no {}", self.remote_ref)));
        };
        if self.previous.as_deref() == Some(commit.to_string().as_str()) {
            return Ok(FetchOutcome::Unchanged);
        }
        if repo.find_object(commit).is_err() {
            let depth = std::num::NonZeroU32::MIN;
            prepare
                .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
                .receive(gix::progress::Discard, interrupt)
                .map_err(|e| {
                    if interrupt.load(Ordering::SeqCst) {
                        SyncError::Source("interrupted".to_string())
                    } else {
                        source_err(&e)
                    }
                })?;
        }
        Ok(FetchOutcome::Fetched(commit))
    }
}

/// The HTTP transport options git configuration gives for `url`, with `certs` trusted too.
fn http_options_with_ca(
    repo: &gix::Repository,
    url: &str,
    certs: Vec<reqwest::Certificate>,
) -> Result<HttpOptions, SyncError> {
    let mut options = repo
        .transport_options(url, None)
        .map_err(|e| SyncError::Config(format!("git transport options: {e}")))?
        .and_then(|o| o.downcast::<HttpOptions>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    let backend = ReqwestOptions {
        configure_client: Some(Box::new(move |builder| Ok(builder.tls_certs_merge(certs.clone())))),
        configure_request: None,
    };
    options.backend = Some(Arc::new(std::sync::Mutex::new(backend)));
    Ok(options)
}

/// An error with its causes: gix's top-level messages ("Transport handshake failed") say little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Reads what `ssh` said about a failed connection into an error, if it said something telling.
fn classify_ssh(log: &str) -> Option<SyncError> {
    let said: Vec<&str> =
        log.lines().map(str::trim).filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@')).collect();
    let lower = log.to_ascii_lowercase();
    let last = said.last().copied().unwrap_or("").to_string();
    if lower.contains("host key verification failed") || lower.contains("remote host identification has changed") {
        Some(SyncError::HostKey(format!(
            "the server's key is not the one the volume trusts (the sv.sharedvolume.io/ssh-known-hosts annotation, or the key pinned on first use in .sharedvolume/known_hosts); ssh said: {last}"
        )))
    } else if lower.contains("permission denied") {
        Some(SyncError::Auth(format!("ssh said: {last}")))
    } else if ["connection refused", "could not resolve", "timed out", "no route to host"]
        .iter()
        .any(|s| lower.contains(s))
    {
        Some(SyncError::Unreachable(format!("ssh said: {last}")))
    } else {
        None
    }
}

/// Classifies a git error message (URLs left out: a port such as `:40312` is not a 403).
fn classify(text: &str) -> SyncError {
    let lower = super::error_words(text);
    let status = |code| super::has_status(&lower, code);
    if status("401")
        || status("403")
        || ["authentication", "permission denied", "credentials"].iter().any(|s| lower.contains(s))
    {
        SyncError::Auth(text.to_string())
    } else if ["connection refused", "could not resolve", "timed out", "connect", "unreachable"]
        .iter()
        .any(|s| lower.contains(s))
    {
        SyncError::Unreachable(text.to_string())
    } else {
        SyncError::Source(text.to_string())
    }
}

/// Sets the flag when dropped: a sync abandoned at its deadline interrupts the blocking fetch.
struct InterruptOnDrop(Arc<AtomicBool>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A file readable only by this process, removed when dropped.
struct PrivateFile {
    path: PathBuf,
}

impl PrivateFile {
    fn write(content: &[u8]) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sv-git-key-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(content)?;
        Ok(Self { path })
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Source for GitSource {
    fn identity(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => format!("git {} {}", public_url(&url), self.remote_ref()),
            Err(_) => format!("git {} {}", self.url, self.remote_ref()),
        }
    }

    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(self.run(stage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_words_and_ports_are_not_statuses() {
        let down = "An IO error occurred when talking to the server: connect to http://127.0.0.1:40312/repo.git: Connection refused";
        assert!(matches!(classify(down), SyncError::Unreachable(_)));
        assert!(matches!(classify("Received HTTP status 401"), SyncError::Auth(_)));
        assert!(matches!(classify("object 3a403f1 is missing"), SyncError::Source(_)));
    }
}
