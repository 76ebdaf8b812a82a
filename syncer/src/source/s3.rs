//! A bucket (or a key prefix of it) on S3-compatible storage, path-style, through `object_store`.
//! Incremental by ETag, or by size and modification time where a server lists no ETags; objects
//! removed at the source disappear from the volume with the next revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, ObjectMeta, ObjectStore, RetryConfig};
use sv_api::S3Source as S3Spec;

use super::{BoxFuture, Fetched, Source, digest};
use crate::credentials::{Credentials, Secret};
use crate::error::SyncError;
use crate::paths::RelPath;
use crate::tree::{NewFile, Stage, WriteBatch};

/// Objects up to this size are fetched into memory, [`PARALLEL_GETS`] at a time.
const SMALL_OBJECT: u64 = 4 * 1024 * 1024;
const PARALLEL_GETS: usize = 8;
const PARALLEL_LISTINGS: usize = 8;

pub struct S3Source {
    store: Arc<dyn ObjectStore>,
    identity: String,
    prefix: Option<ObjectPath>,
}

fn required(value: &Option<String>, field: &str) -> Result<String, SyncError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| SyncError::Config(format!("source.s3.{field} is required")))
}

impl S3Source {
    pub fn new(spec: &S3Spec, credentials: &Credentials) -> Result<Self, SyncError> {
        crate::install_crypto_provider();
        let endpoint = required(&spec.endpoint_url, "endpointUrl")?;
        let bucket = required(&spec.bucket_name, "bucketName")?;
        let region = required(&spec.region, "region")?;
        // The operator puts both inline and Secret-referenced keys in the credentials files;
        // inline values are the fallback for running without it.
        let key = |file: &Option<Secret>, inline: &Option<String>, field: &str| {
            file.as_ref().map(|s| s.expose().trim().to_string()).or_else(|| inline.clone()).ok_or_else(|| {
                SyncError::Config(format!("no {field} credential: the credentials Secret has no file for it"))
            })
        };
        let access_key = key(&credentials.access_key, &spec.access_key, "access key")?;
        let secret_key = key(&credentials.secret_key, &spec.secret_key, "secret key")?;
        let options = ClientOptions::new()
            .with_allow_http(true)
            .with_connect_timeout(std::time::Duration::from_secs(15))
            .with_timeout_disabled();
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_region(&region)
            .with_bucket_name(&bucket)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .with_client_options(options)
            // The syncer's own schedule retries with backoff; within a sync a few quick retries
            // ride out a blip, and a longer outage is reported as one rather than as a timeout.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| SyncError::Config(format!("S3 client: {e}")))?;
        let prefix = spec.path.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()).map(ObjectPath::from);
        let identity = format!("s3 {endpoint} {bucket} {}", prefix.as_ref().map_or("", |p| p.as_ref()));
        Ok(Self { store: Arc::new(store), identity, prefix })
    }

    /// Lists every object under the prefix, one "directory" per request and several requests at
    /// a time (as rclone does by default): servers answer small delimited listings quickly, and a
    /// deep tree is walked in parallel.
    async fn list(&self) -> Result<Vec<ObjectMeta>, SyncError> {
        let mut objects = Vec::new();
        let mut pending = vec![self.prefix.clone()];
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < PARALLEL_LISTINGS
                && let Some(dir) = pending.pop()
            {
                let store = self.store.clone();
                running.push(async move { store.list_with_delimiter(dir.as_ref()).await });
            }
            let Some(listed) = running.next().await else { break };
            let listed = listed.map_err(classify)?;
            pending.extend(listed.common_prefixes.into_iter().map(Some));
            objects.extend(listed.objects);
        }
        Ok(objects)
    }

    async fn run(&self, stage: &mut Stage) -> Result<Fetched, SyncError> {
        let mut objects = self.list().await?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        let version = |o: &ObjectMeta| match &o.e_tag {
            Some(etag) => format!("etag:{etag}"),
            None => format!("size:{}:mtime:{}", o.size, o.last_modified.timestamp_nanos_opt().unwrap_or_default()),
        };
        let revision = digest(objects.iter().flat_map(|o| [o.location.as_ref().to_string(), version(o)]));
        if stage.previous().is_some_and(|p| p.manifest.revision == revision) {
            return Ok(Fetched::Unchanged);
        }
        if let Some(capacity) = stage.capacity() {
            let needed: u64 = objects.iter().map(|o| o.size).sum();
            if needed > capacity {
                return Err(SyncError::Capacity { needed, capacity });
            }
        }
        let prefix = self.prefix.as_ref().map(|p| format!("{}/", p.as_ref())).unwrap_or_default();
        let mut candidates = Vec::new();
        for object in objects {
            let key = object.location.as_ref();
            let relative = key.strip_prefix(&prefix).unwrap_or(key);
            if relative.is_empty() || relative.ends_with('/') {
                continue; // a "directory" marker
            }
            let path = RelPath::parse(relative).map_err(|e| SyncError::content(format!("S3 key {key:?}: {e}")))?;
            let v = version(&object);
            candidates.push((path, v, object));
        }
        let (small, large): (Vec<_>, Vec<_>) =
            stage.reuse_all(candidates)?.into_iter().partition(|(_, _, object)| object.size <= SMALL_OBJECT);
        // Large objects stream straight into their files while the small ones are fetched
        // several at a time into memory (latency, not bandwidth, bounds those): one long download
        // must not leave the other connections idle.
        let mut reserved = Vec::with_capacity(large.len());
        for (path, version, object) in large {
            reserved.push((stage.reserve_file(&path, false, object.size)?, object, version));
        }
        let store = &self.store;
        let download_large = async {
            for (file, object, _) in &mut reserved {
                let result = store.get_opts(&object.location, GetOptions::default()).await.map_err(classify)?;
                let mut stream = result.into_stream();
                while let Some(chunk) = stream.next().await {
                    file.write(&chunk.map_err(classify)?)?;
                }
            }
            Ok::<_, SyncError>(())
        };
        let fetches = futures::stream::iter(small.into_iter().map(|(path, version, object)| async move {
            let result = store.get_opts(&object.location, GetOptions::default()).await.map_err(classify)?;
            let data = result.bytes().await.map_err(classify)?;
            Ok::<_, SyncError>(NewFile { path, data, executable: false, version })
        }))
        .buffered(PARALLEL_GETS);
        let fetch_small = WriteBatch::write_stream(stage, fetches);
        futures::try_join!(download_large, fetch_small)?;
        for (file, _, version) in reserved {
            stage.commit_reserved(file, &version)?;
        }
        Ok(Fetched::Tree { revision, meta: BTreeMap::new() })
    }
}

/// Classifies an `object_store` error by what the server or the network said. URLs are left out
/// of the match: a port such as `:46401` must not read as a 401.
fn classify(e: object_store::Error) -> SyncError {
    let text = e.to_string();
    let lower = super::error_words(&text);
    let says = |signs: &[&str]| signs.iter().any(|s| lower.contains(s));
    if matches!(e, object_store::Error::InvalidPath { .. }) {
        SyncError::content(format!("the bucket lists a key that cannot be stored safely: {text}"))
    } else if matches!(e, object_store::Error::NotFound { .. }) || lower.contains("nosuchbucket") {
        SyncError::Source(text)
    } else if super::has_status(&lower, "401")
        || super::has_status(&lower, "403")
        || says(&["accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch"])
    {
        SyncError::Auth(text)
    } else if says(&["error sending request", "connection refused", "dns error", "timed out", "connect"]) {
        SyncError::Unreachable(text)
    } else {
        SyncError::Source(text)
    }
}

impl Source for S3Source {
    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn fetch<'a>(&'a self, stage: &'a mut Stage) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(self.run(stage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: message.to_string().into() }
    }

    #[test]
    fn a_port_in_a_url_is_not_a_status() {
        let down = "Error performing GET http://127.0.0.1:46401/bucket?list-type=2 in 280ms, after 2 retries - HTTP error: error sending request";
        assert!(matches!(classify(generic(down)), SyncError::Unreachable(_)));
        let refused = "Error performing GET http://127.0.0.1:9000/b in 3ms - Client error with status 403 Forbidden: SignatureDoesNotMatch";
        assert!(matches!(classify(generic(refused)), SyncError::Auth(_)));
        assert!(matches!(classify(generic("status 500 Internal Server Error")), SyncError::Source(_)));
    }
}
