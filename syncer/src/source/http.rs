//! One file over HTTP(S), or an archive unpacked into the volume. Conditional requests
//! (`If-None-Match`, `If-Modified-Since`) make an unchanged file cost one round trip and no
//! download.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sv_api::HttpSource as HttpSpec;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{BoxFuture, Fetched, Source, SourceOptions, on_blocking_thread, percent_decode, public_url};
use crate::archive::{self, Format};
use crate::error::SyncError;
use crate::paths::RelPath;
use crate::tree::Stage;

pub struct HttpSource {
    url: reqwest::Url,
    client: reqwest::Client,
    unpack: Option<Format>,
}

/// Builds the HTTP client every network source uses: rustls with the system roots plus the
/// configured extra CA, and a connect timeout (the sync timeout bounds the rest).
pub fn client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, SyncError> {
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("sharedvolume-syncer/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| SyncError::Config(format!("extra CA bundle: {e}")))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| SyncError::Config(format!("HTTP client: {e}")))
}

/// Classifies a request error without leaking the URL's query or credentials.
pub fn request_error(e: &reqwest::Error) -> SyncError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() || e.is_timeout() { SyncError::Unreachable(text) } else { SyncError::Source(text) }
}

impl HttpSource {
    pub fn new(spec: &HttpSpec, options: &SourceOptions) -> Result<Self, SyncError> {
        let url =
            reqwest::Url::parse(spec.url.trim()).map_err(|e| SyncError::Config(format!("source.http.url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SyncError::Config("source.http.url must be http:// or https://".to_string()));
        }
        let unpack = if options.unpack_archives { Format::from_name(url.path()) } else { None };
        Ok(Self { url, client: client(options.extra_ca_pem.as_deref())?, unpack })
    }

    /// Name of the downloaded file: the URL's last path segment.
    fn file_name(&self) -> Result<RelPath, SyncError> {
        let segment = self.url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
        let decoded = percent_decode(segment);
        let name = if decoded.is_empty() { "index.html".to_string() } else { decoded };
        RelPath::parse(&name).map_err(|_| SyncError::content(format!("the URL's file name {name:?} cannot be stored")))
    }

    async fn run(&self, stage: &mut Stage) -> Result<Fetched, SyncError> {
        let previous_meta = stage.previous().map(|p| p.manifest.meta.clone()).unwrap_or_default();
        let mut request = self.client.get(self.url.clone());
        if let Some(etag) = previous_meta.get("etag") {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = previous_meta.get("last-modified") {
            request = request.header(IF_MODIFIED_SINCE, modified);
        }
        let response = request.send().await.map_err(|e| request_error(&e))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && stage.previous().is_some() {
            return Ok(Fetched::Unchanged);
        }
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(SyncError::Auth(format!(
                    "{} answered {status}",
                    self.url.host_str().unwrap_or("the server")
                )));
            }
            StatusCode::NOT_FOUND => return Err(SyncError::Source(format!("{} was not found (404)", self.url.path()))),
            s => return Err(SyncError::Source(format!("the server answered {s}"))),
        }
        let mut meta = BTreeMap::new();
        for (header, key) in [(ETAG, "etag"), (LAST_MODIFIED, "last-modified")] {
            if let Some(v) = response.headers().get(header).and_then(|v| v.to_str().ok()) {
                meta.insert(key.to_string(), v.to_string());
            }
        }
        if let (Some(length), Some(capacity)) = (response.content_length(), stage.capacity())
            && self.unpack.is_none()
            && length > capacity
        {
            return Err(SyncError::Capacity { needed: length, capacity });
        }
        let mut body = response.bytes_stream();
        let mut hasher = blake3::Hasher::new();
        let revision_from_headers = meta.get("etag").or(meta.get("last-modified")).cloned();
        match self.unpack {
            None => {
                let name = self.file_name()?;
                let mut file = stage.create_file(&name, false)?;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| request_error(&e))?;
                    hasher.update(&chunk);
                    file.write(&chunk)?;
                }
                let revision = revision_from_headers.unwrap_or_else(|| hasher.finalize().to_hex()[..32].to_string());
                file.commit(&revision)?;
                Ok(Fetched::Tree { revision, meta })
            }
            Some(format) if format.streams() => {
                // Unpacked as it downloads, on a blocking thread: nothing is spooled, so the
                // volume never holds the archive and its contents at once.
                let digest = Arc::new(Mutex::new(blake3::Hasher::new()));
                let failed: Arc<Mutex<Option<SyncError>>> = Arc::default();
                let (hashing, failing) = (digest.clone(), failed.clone());
                let stream = body.map(move |chunk| match chunk {
                    Ok(bytes) => {
                        lock(&hashing).update(&bytes);
                        Ok(bytes)
                    }
                    Err(e) => {
                        *lock(&failing) = Some(request_error(&e));
                        Err(std::io::Error::other("the download failed"))
                    }
                });
                let runtime = tokio::runtime::Handle::current();
                let unpacked = on_blocking_thread(stage, move |stage, cancel| {
                    let stream = Box::pin(stream.take_until(cancel.clone().cancelled_owned()));
                    let reader = SyncIoBridge::new_with_handle(StreamReader::new(stream), runtime);
                    archive::unpack_stream(reader, format, stage, cancel)
                })
                .await;
                // A broken download reads as a broken archive; say what really happened.
                if let Some(error) = lock(&failed).take() {
                    return Err(error);
                }
                unpacked?;
                let revision =
                    revision_from_headers.unwrap_or_else(|| lock(&digest).finalize().to_hex()[..32].to_string());
                Ok(Fetched::Tree { revision, meta })
            }
            Some(_) => {
                // A zip is read from a spooled copy (its index is at the end); the copy counts
                // against the capacity like the unpacked tree does.
                let mut spool = Spool::create(stage.spool_path())?;
                let mut written = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| request_error(&e))?;
                    hasher.update(&chunk);
                    written += chunk.len() as u64;
                    if let Some(capacity) = stage.capacity()
                        && written.saturating_add(stage.bytes()) > capacity
                    {
                        return Err(SyncError::Capacity { needed: written, capacity });
                    }
                    // The spool lies on the volume: it takes free space as the unpacked tree does.
                    stage.check_space(written)?;
                    spool.file.write_all(&chunk)?;
                }
                stage.count_spooled(written);
                let revision = revision_from_headers.unwrap_or_else(|| hasher.finalize().to_hex()[..32].to_string());
                let file = spool.reopen()?;
                on_blocking_thread(stage, move |stage, cancel| archive::unpack_file(file, stage, cancel)).await?;
                drop(spool);
                Ok(Fetched::Tree { revision, meta })
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Source for HttpSource {
    fn identity(&self) -> String {
        format!("http {} unpack={}", public_url(&self.url), self.unpack.is_some())
    }

    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(self.run(stage))
    }
}

/// A temporary file next to the stage, removed when dropped.
struct Spool {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl Spool {
    fn create(path: std::path::PathBuf) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        Ok(Self { path, file })
    }

    fn reopen(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&self.path)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
