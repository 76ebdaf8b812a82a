//! Sources on the simulated network. Host `sources` answers for every Git repository, S3 bucket,
//! SSH path and HTTP URL a volume names, from a catalog the harness controls ([`SourceCatalog`]);
//! the syncer program reaches it through [`SimSources`], its `SourceFactory` in the simulation.
//!
//! The real network sources (gix, object_store, russh, reqwest) open real sockets, which turmoil
//! cannot carry; they are tested against real servers in the syncer's own tests. Everything
//! around them (schedule, timeouts, back-off, staging, publishing, status) is the real syncer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use sv_operator::api::{SourceSpec, VolumeSpec};
use sv_syncer::credentials::Credentials;
use sv_syncer::error::SyncError;
use sv_syncer::paths::RelPath;
use sv_syncer::source::{BoxFuture, Fetched, Source, SourceFactory, SourceOptions, digest};
use sv_syncer::tree::Stage;

use crate::net::{SimListener, http_request};

/// The host that serves every source.
pub const SOURCES_HOST: &str = "sources";
pub const SOURCES_PORT: u16 = 80;

/// One file of a simulated source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimFile {
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub executable: bool,
}

impl SimFile {
    pub fn new(path: &str, content: &str) -> Self {
        Self { path: path.to_string(), content: content.to_string(), executable: false }
    }
}

/// What a source holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// A tree at a revision; with `credential`, a fetch must present that value (a password, key
    /// or secret key) or is refused as unauthenticated.
    Tree { revision: String, files: Vec<SimFile>, credential: Option<String> },
    /// Every fetch fails with this HTTP status and message (a lost repository, an outage).
    Failing { status: u16, message: String },
    /// Every fetch gets no answer for an hour (a host that accepts the connection and stalls):
    /// the syncer's `syncTimeout` ends it.
    Hanging,
}

/// The contents of every source, keyed by [`identity_of`]. A source nobody set holds one README at
/// revision `sim-1`, so any volume can sync without setup.
#[derive(Clone, Debug, Default)]
pub struct SourceCatalog {
    inner: Arc<Mutex<CatalogInner>>,
}

#[derive(Debug, Default)]
struct CatalogInner {
    sources: BTreeMap<String, SourceState>,
    fetches: BTreeMap<String, u64>,
    /// Sources whose last fetch presented credentials they refuse.
    refused: std::collections::BTreeSet<String>,
    /// How long each slow source takes to answer a fetch.
    latency: BTreeMap<String, Duration>,
}

impl SourceCatalog {
    fn lock(&self) -> MutexGuard<'_, CatalogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, identity: &str, state: SourceState) {
        self.lock().sources.insert(identity.to_string(), state);
    }

    /// What the source at `identity` holds now.
    pub fn get(&self, identity: &str) -> SourceState {
        self.lock().sources.get(identity).cloned().unwrap_or_else(|| SourceState::Tree {
            revision: "sim-1".to_string(),
            files: vec![SimFile::new("README.md", &format!("Simulated content of {identity}.\n"))],
            credential: None,
        })
    }

    /// Every fetch of the source at `identity` is answered `delay` later from now on (a busy
    /// or distant host; zero ends it). Past a volume's `syncTimeout`, every sync of it times out.
    pub fn set_latency(&self, identity: &str, delay: Duration) {
        let mut inner = self.lock();
        match delay.is_zero() {
            true => inner.latency.remove(identity),
            false => inner.latency.insert(identity.to_string(), delay),
        };
    }

    /// How long a fetch of the source at `identity` takes to be answered.
    pub fn latency(&self, identity: &str) -> Duration {
        self.lock().latency.get(identity).copied().unwrap_or_default()
    }

    /// How many fetches reached the source at `identity`.
    pub fn fetches(&self, identity: &str) -> u64 {
        self.lock().fetches.get(identity).copied().unwrap_or(0)
    }

    fn count_fetch(&self, identity: &str) {
        *self.lock().fetches.entry(identity.to_string()).or_default() += 1;
    }

    fn note_refusal(&self, identity: &str, refused: bool) {
        let mut inner = self.lock();
        match refused {
            true => inner.refused.insert(identity.to_string()),
            false => inner.refused.remove(identity),
        };
    }

    /// Whether the last fetch of the source at `identity` presented credentials it refuses (a
    /// volume given the wrong ones cannot sync until they change: not the system's fault).
    pub fn refused_last_fetch(&self, identity: &str) -> bool {
        self.lock().refused.contains(identity)
    }
}

/// Names a source without its credentials: the key of the catalog.
pub fn identity_of(source: &SourceSpec) -> Option<String> {
    if let Some(git) = &source.git {
        return Some(format!("git {} {}", without_userinfo(&git.url), git.branch.as_deref().unwrap_or("HEAD")));
    }
    if let Some(ssh) = &source.ssh {
        let user = ssh.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        let path = ssh.path.as_deref().unwrap_or("");
        return Some(format!("ssh {user}{}:{}{path}", ssh.host, ssh.port.unwrap_or(22)));
    }
    if let Some(http) = &source.http {
        return Some(format!("http {}", without_userinfo(&http.url)));
    }
    if let Some(s3) = &source.s3 {
        let endpoint = s3.endpoint_url.as_deref().map(without_userinfo).unwrap_or_else(|| "aws".to_string());
        let bucket = s3.bucket_name.as_deref().unwrap_or_default();
        return Some(format!("s3 {endpoint} {bucket} {}", s3.path.as_deref().unwrap_or("")));
    }
    None
}

/// A URL without `user:password@`.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.rsplit_once('@').map_or(url, |(_, h)| h).to_string();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match path {
        Some(path) => format!("{scheme}://{host}/{path}"),
        None => format!("{scheme}://{host}"),
    }
}

#[derive(Serialize, Deserialize)]
struct FetchRequest {
    identity: String,
    /// The revision the syncer has published from this source.
    have: Option<String>,
    credentials: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct FetchReply {
    revision: String,
    files: Vec<SimFile>,
}

/// Serves the catalog on host [`SOURCES_HOST`] until the host stops.
pub async fn serve(catalog: SourceCatalog) -> turmoil::Result {
    let listener = SimListener::bind(SOURCES_PORT).await?;
    let router = Router::new().route("/fetch", post(fetch)).with_state(catalog);
    axum::serve(listener, router).await?;
    Ok(())
}

async fn fetch(State(catalog): State<SourceCatalog>, Json(request): Json<FetchRequest>) -> axum::response::Response {
    catalog.count_fetch(&request.identity);
    let state = catalog.get(&request.identity);
    let refused =
        matches!(&state, SourceState::Tree { credential: Some(wanted), .. } if !request.credentials.contains(wanted));
    catalog.note_refusal(&request.identity, refused);
    let latency = catalog.latency(&request.identity);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match state {
        SourceState::Hanging => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::GATEWAY_TIMEOUT, "the source did not answer").into_response()
        }
        SourceState::Failing { status, message } => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), message).into_response()
        }
        SourceState::Tree { .. } if refused => {
            (StatusCode::UNAUTHORIZED, "the credentials were refused").into_response()
        }
        SourceState::Tree { revision, .. } if request.have.as_deref() == Some(revision.as_str()) => {
            StatusCode::NOT_MODIFIED.into_response()
        }
        SourceState::Tree { revision, files, .. } => Json(FetchReply { revision, files }).into_response(),
    }
}

/// The syncer's sources in the simulation: every kind is fetched from host [`SOURCES_HOST`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SimSources;

impl SourceFactory for SimSources {
    fn build(
        &self,
        spec: &VolumeSpec,
        credentials: &Credentials,
        _options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SyncError> {
        let identity = spec
            .source
            .as_ref()
            .and_then(identity_of)
            .ok_or_else(|| SyncError::Config("the volume has no source".to_string()))?;
        let inline = spec.inline_credentials().into_iter().map(|(_, value)| value.to_string());
        let mounted =
            [&credentials.password, &credentials.private_key, &credentials.access_key, &credentials.secret_key]
                .into_iter()
                .flatten()
                .map(|s| s.expose().to_string());
        Ok(Box::new(SimSource { identity, credentials: inline.chain(mounted).collect() }))
    }
}

struct SimSource {
    identity: String,
    credentials: Vec<String>,
}

impl Source for SimSource {
    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(async move {
            let have = stage.previous().map(|p| p.manifest.revision.clone());
            let body = FetchRequest { identity: self.identity.clone(), have, credentials: self.credentials.clone() };
            let body = serde_json::to_vec(&body).map_err(|e| SyncError::Source(e.to_string()))?;
            let request = http::Request::post("/fetch")
                .header(http::header::HOST, SOURCES_HOST)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| SyncError::Source(e.to_string()))?;
            // The runner bounds the whole fetch by syncTimeout.
            let (status, body) = http_request(SOURCES_HOST, SOURCES_PORT, request, Duration::from_secs(24 * 3600))
                .await
                .map_err(|e| SyncError::Unreachable(format!("{}: {e}", self.identity)))?;
            let text = || String::from_utf8_lossy(&body).into_owned();
            match status {
                StatusCode::NOT_MODIFIED => return Ok(Fetched::Unchanged),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(SyncError::Auth(text())),
                s if !s.is_success() => return Err(SyncError::Source(format!("{}: {s}: {}", self.identity, text()))),
                _ => {}
            }
            let reply: FetchReply = serde_json::from_slice(&body)
                .map_err(|e| SyncError::Source(format!("{}: unreadable answer: {e}", self.identity)))?;
            for file in &reply.files {
                let path = RelPath::parse(&file.path)?;
                let version = digest([file.content.as_bytes()]);
                if !stage.reuse(&path, &version)? {
                    stage.write_file(&path, file.content.as_bytes(), file.executable, &version)?;
                }
            }
            Ok(Fetched::Tree { revision: reply.revision, meta: BTreeMap::new() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_name_the_source_without_its_credentials() {
        let source = |yaml: &str| -> SourceSpec { serde_saphyr::from_str(yaml).expect("source") };
        let git = source("git: {url: 'https://user:s3cret@git.example.com/team/docs.git', branch: main}");
        assert_eq!(identity_of(&git).as_deref(), Some("git https://git.example.com/team/docs.git main"));
        let ssh = source("ssh: {host: files.example.com, user: deploy, path: /srv, password: pw}");
        assert_eq!(identity_of(&ssh).as_deref(), Some("ssh deploy@files.example.com:22/srv"));
        let s3 = source("s3: {endpointUrl: 'https://s3.example.com', bucketName: b, path: p/}");
        assert_eq!(identity_of(&s3).as_deref(), Some("s3 https://s3.example.com b p/"));
        assert_eq!(without_userinfo("https://a:b@h"), "https://h");
        assert_eq!(without_userinfo("user@host:repo.git"), "host:repo.git");
        assert_eq!(identity_of(&SourceSpec::default()), None);
    }
}
