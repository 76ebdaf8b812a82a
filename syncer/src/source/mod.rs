//! Sources: one implementation of [`Source`] per kind. The runner hands a source a [`Stage`] that
//! knows the previous revision; the source answers [`Fetched::Unchanged`] when nothing changed
//! (no new revision is published) or fills the stage, reusing unchanged files.
//!
//! The simulation provides its own [`SourceFactory`] to serve sources on simulated hosts.

pub mod git;
pub mod http;
pub mod s3;
pub mod sftp;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use sv_api::{SourceSpec, VolumeSpec};
use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;
use crate::error::SyncError;
use crate::tree::Stage;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a fetch produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The source is at the revision already published.
    Unchanged,
    /// The stage holds a complete tree at `revision`; `meta` is remembered for the next fetch.
    Tree { revision: String, meta: BTreeMap<String, String> },
}

/// One configured source.
pub trait Source: Send + Sync {
    /// What identifies this source's content, without credentials (URL, bucket and prefix, host
    /// and path, repository and branch). A revision is only reused by a source of equal identity.
    fn identity(&self) -> String;

    /// Fetches the source into `stage`.
    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>>;
}

/// Settings a source may need beyond the spec.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// Extra CA certificates (PEM) to trust for HTTPS sources.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Known SSH host keys (OpenSSH `known_hosts` lines) from the volume's annotation.
    pub known_hosts: Option<String>,
    /// Skip SSH host key checks (the volume's opt-out annotation).
    pub insecure_host_keys: bool,
    /// Unpack an HTTP archive instead of storing the file.
    pub unpack_archives: bool,
    /// Where the syncer keeps state between syncs (git cache, learned host keys).
    pub state_dir: PathBuf,
}

/// Builds the source a spec describes.
pub trait SourceFactory: Send + Sync {
    fn build(
        &self,
        spec: &VolumeSpec,
        credentials: &Credentials,
        options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SyncError>;
}

/// The real sources: HTTP(S), S3, SSH/SFTP and git.
#[derive(Clone, Debug, Default)]
pub struct NetworkSources;

impl SourceFactory for NetworkSources {
    fn build(
        &self,
        spec: &VolumeSpec,
        credentials: &Credentials,
        options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SyncError> {
        let Some(source) = &spec.source else {
            return Err(SyncError::Config("the volume has no source".to_string()));
        };
        let SourceSpec { git, ssh, http, s3 } = source;
        if let Some(http) = http {
            return Ok(Box::new(http::HttpSource::new(http, options)?));
        }
        if let Some(s3) = s3 {
            return Ok(Box::new(s3::S3Source::new(s3, credentials)?));
        }
        if let Some(ssh) = ssh {
            return Ok(Box::new(sftp::SftpSource::new(ssh, credentials, options)?));
        }
        if let Some(git) = git {
            return Ok(Box::new(git::GitSource::new(git, credentials, options)?));
        }
        Err(SyncError::Config("the source names no type".to_string()))
    }
}

/// Error text prepared for classifying it by what it says: lower case, without URLs (a port such
/// as `:46401` or a path must not read as a status or a keyword).
pub fn error_words(text: &str) -> String {
    text.to_ascii_lowercase().split_whitespace().filter(|word| !word.contains("://")).collect::<Vec<_>>().join(" ")
}

/// Whether `words` holds the HTTP status `code` as a word of its own (not inside a number or a
/// hash).
pub fn has_status(words: &str, code: &str) -> bool {
    words.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == code)
}

/// Runs `work` on the blocking thread pool with the stage lent to it, and puts the stage back.
/// Unpacking and writing trees is blocking file I/O that must not stall the runtime. If the
/// caller is dropped (the sync timed out), `cancel` is cancelled: `work` should check it between
/// files and stop; the stage directory it leaves is removed by the next sync.
pub async fn on_blocking_thread<T: Send + 'static>(
    stage: &mut Stage,
    work: impl FnOnce(&mut Stage, &CancellationToken) -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    let cancel = CancellationToken::new();
    let _cancel_if_abandoned = cancel.clone().drop_guard();
    let mut lent = std::mem::take(stage);
    let (lent, result) = tokio::task::spawn_blocking(move || {
        let result = work(&mut lent, &cancel);
        (lent, result)
    })
    .await
    .map_err(|e| SyncError::Source(format!("the unpacking task failed: {e}")))?;
    *stage = lent;
    result
}

/// A URL as it may appear in identities and messages: without its user name and password.
pub fn public_url(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Secrets carried in a URL's user info: the password, or a user name standing alone (the usual
/// place for an access token, `https://TOKEN@host/...`).
pub fn url_secrets(raw: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(raw.trim()) else {
        return Vec::new();
    };
    match url.password() {
        Some(password) => vec![percent_decode(password)],
        None if !url.username().is_empty() => vec![percent_decode(url.username())],
        None => Vec::new(),
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Short hex digest, for revisions made of listings.
pub fn digest(parts: impl IntoIterator<Item = impl AsRef<[u8]>>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_ref());
        h.update([0]);
    }
    h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect()
}
