//! The S3 source against `s3s-fs` on loopback (a real S3 protocol server with signature checks),
//! and against a hostile listing served by hand.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{S3_ACCESS, S3_SECRET, s3_server, serve, sync, syncer, tree, view};
use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sv_syncer::publish::Volume;

fn spec(endpoint: &str, bucket: &str, path: &str) -> String {
    format!(
        "source:\n  s3:\n    endpointUrl: {endpoint}\n    bucketName: {bucket}\n    region: us-east-1\n    path: \"{path}\"\n\
         syncInterval: 1h\nsyncTimeout: 30s\n"
    )
}

/// The keys as the operator mounts them from the credentials Secret.
fn credentials(access: &str, secret: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("access-key"), access).expect("write");
    std::fs::write(dir.path().join("secret-key"), format!("{secret}\n")).expect("write");
    dir
}

/// A client to change the bucket with, through the S3 protocol.
fn client(endpoint: &str, bucket: &str) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(S3_ACCESS)
        .with_secret_access_key(S3_SECRET)
        .with_allow_http(true)
        .build()
        .expect("client")
}

async fn put(store: &impl ObjectStore, key: &str, data: &str) {
    store.put(&ObjectPath::from(key), data.to_string().into_bytes().into()).await.expect("put");
}

fn ino(root: &Path, path: &str) -> u64 {
    std::fs::metadata(root.join(path)).expect("meta").ino()
}

#[tokio::test]
async fn a_prefix_is_mirrored_incrementally_with_deletes() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("datasets")).expect("bucket");
    let server = s3_server(root.path()).await;
    let endpoint = format!("http://{}", server.addr);
    let store = client(&endpoint, "datasets");
    put(&store, "train/a.csv", "a,1").await;
    put(&store, "train/sub/b.csv", "b,2").await;
    put(&store, "train/gone.csv", "bye").await;
    put(&store, "other/not-mirrored.csv", "x").await;

    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials(S3_ACCESS, S3_SECRET);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let v = view(&spec(&endpoint, "datasets", "train/"));

    let first = sync(&syncer, &volume, &v).await.expect("first sync");
    assert_eq!((first.files, first.transferred), (3, 9));
    let listed: Vec<String> = tree(data.path()).into_keys().collect();
    assert_eq!(listed, ["a.csv", "gone.csv", "sub", "sub/b.csv"]);
    assert_eq!(std::fs::read_to_string(data.path().join("sub/b.csv")).expect("read"), "b,2");
    let a_before = ino(data.path(), "a.csv");

    let again = sync(&syncer, &volume, &v).await.expect("unchanged");
    assert!(!again.published, "the listing is unchanged, nothing is fetched");
    assert_eq!(again.revision, first.revision);

    put(&store, "train/sub/b.csv", "b,2,changed").await;
    put(&store, "train/new.csv", "new").await;
    store.delete(&ObjectPath::from("train/gone.csv")).await.expect("delete");
    let second = sync(&syncer, &volume, &v).await.expect("second sync");
    assert!(second.published);
    assert_eq!(second.transferred, ("b,2,changed".len() + "new".len()) as u64, "only changed objects are downloaded");
    assert!(!data.path().join("gone.csv").exists(), "deleted at the source, deleted here");
    assert_eq!(std::fs::read_to_string(data.path().join("sub/b.csv")).expect("read"), "b,2,changed");
    assert_eq!(std::fs::read_to_string(data.path().join("new.csv")).expect("read"), "new");
    assert_eq!(ino(data.path(), "a.csv"), a_before, "the unchanged object is the same file, not a copy");
}

#[tokio::test]
async fn a_large_object_streams_beside_small_ones_and_must_be_the_size_listed() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("bucket")).expect("bucket");
    let server = s3_server(root.path()).await;
    let endpoint = format!("http://{}", server.addr);
    let store = client(&endpoint, "bucket");
    // Above the 4 MiB at which an object stops being fetched into memory.
    let large: Vec<u8> = (0..5 * 1024 * 1024 + 7).map(|i: u32| (i % 251) as u8).collect();
    store.put(&ObjectPath::from("m/large.bin"), large.clone().into()).await.expect("put");
    for i in 0..20 {
        put(&store, &format!("{}/small-{i}.txt", ["a", "m", "z"][i % 3]), &format!("small {i}")).await;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials(S3_ACCESS, S3_SECRET);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let first = sync(&syncer, &volume, &view(&spec(&endpoint, "bucket", ""))).await.expect("sync");
    assert_eq!(first.files, 21);
    assert_eq!(std::fs::read(data.path().join("m/large.bin")).expect("read"), large);
    for i in 0..20 {
        let path = data.path().join(format!("{}/small-{i}.txt", ["a", "m", "z"][i % 3]));
        assert_eq!(std::fs::read_to_string(path).expect("read"), format!("small {i}"));
    }
    let before = tree(data.path());

    // A server that lists 5 MiB and sends 4 bytes (the object was replaced between the listing
    // and the GET, or the server is broken): nothing is published, the next sync tries again.
    let short = serve(sized_listing_server(&["m/large.bin"], 5 << 20, "data"), None).await;
    let error =
        sync(&syncer, &volume, &view(&spec(&format!("http://{}", short.addr), "b", ""))).await.expect_err("short");
    assert!(error.contains("m/large.bin: the source listed 5242880 bytes but sent 4"), "{error}");
    assert_eq!(tree(data.path()), before);
}

#[tokio::test]
async fn wrong_keys_a_missing_bucket_and_an_outage_are_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("bucket")).expect("bucket");
    let server = s3_server(root.path()).await;
    let endpoint = format!("http://{}", server.addr);
    put(&client(&endpoint, "bucket"), "f.txt", "data").await;
    let data = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(data.path()).expect("volume");
    let good = credentials(S3_ACCESS, S3_SECRET);
    let ok = syncer(data.path(), Some(good.path()), None);
    sync(&ok, &volume, &view(&spec(&endpoint, "bucket", ""))).await.expect("first sync");
    let before = tree(data.path());

    let bad = credentials(S3_ACCESS, "a-wrong-secret-key-0000");
    let refused = sync(&syncer(data.path(), Some(bad.path()), None), &volume, &view(&spec(&endpoint, "bucket", "")))
        .await
        .expect_err("auth");
    assert!(refused.starts_with("authentication failed"), "{refused}");
    assert!(refused.ends_with("check the credentials Secret"), "{refused}");
    assert!(!refused.contains("a-wrong-secret-key-0000"), "{refused}");

    let missing = sync(&ok, &volume, &view(&spec(&endpoint, "no-such-bucket", ""))).await.expect_err("no bucket");
    assert!(missing.to_lowercase().contains("bucket"), "{missing}");

    let addr = server.addr;
    server.stop().await;
    let down = sync(&ok, &volume, &view(&spec(&endpoint, "bucket", ""))).await.expect_err("down");
    assert!(down.starts_with("source unreachable"), "{down}");
    assert_eq!(tree(data.path()), before, "failures leave the published tree");

    // Back at the same address: the next sync succeeds.
    let back = common::s3_server_at(root.path(), addr).await.expect("rebind");
    let recovered = sync(&ok, &volume, &view(&spec(&endpoint, "bucket", ""))).await.expect("back");
    assert!(!recovered.published, "nothing changed meanwhile");
    drop(back);
}

#[tokio::test]
async fn hostile_keys_are_refused_and_the_published_tree_stays() {
    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials(S3_ACCESS, S3_SECRET);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let good = serve(listing_server(&["fine.txt"]), None).await;
    sync(&syncer, &volume, &view(&spec(&format!("http://{}", good.addr), "b", ""))).await.expect("good listing");
    let before = tree(data.path());

    for (keys, says) in [
        (&["../escaped"][..], "cannot be stored safely"),
        (&["a/../../escaped"][..], "cannot be stored safely"),
        (&["a//b"][..], "cannot be stored safely"),
        (&[".sharedvolume/current"][..], ".sharedvolume"),
        (&["x", "x/y"][..], "x"),
    ] {
        let hostile = serve(listing_server(keys), None).await;
        let error = sync(&syncer, &volume, &view(&spec(&format!("http://{}", hostile.addr), "b", "")))
            .await
            .expect_err("hostile");
        assert!(error.contains(says), "{keys:?}: {error}");
        assert_eq!(tree(data.path()), before, "{keys:?}");
        assert!(!data.path().parent().expect("parent").join("escaped").exists());
    }

    let garbage = serve(Router::new().fallback(|| async { (StatusCode::OK, "<<<not xml") }), None).await;
    let error =
        sync(&syncer, &volume, &view(&spec(&format!("http://{}", garbage.addr), "b", ""))).await.expect_err("garbage");
    assert!(error.starts_with("source error"), "{error}");
    assert_eq!(tree(data.path()), before);
}

/// Answers ListObjectsV2 with `keys` and GETs with a fixed body, ignoring signatures: a server
/// that is compromised or simply broken.
fn listing_server(keys: &[&str]) -> Router {
    sized_listing_server(keys, 4, "data")
}

/// [`listing_server`] listing every key with `size` bytes and answering every GET with `body`.
fn sized_listing_server(keys: &[&str], size: u64, body: &'static str) -> Router {
    let contents: String = keys
        .iter()
        .map(|k| {
            format!(
                "<Contents><Key>{k}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e-{k}\"</ETag>\
                 <Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        })
        .collect();
    let listing = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>b</Name><Prefix></Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
        keys.len()
    );
    Router::new().fallback(move |uri: Uri| {
        let listing = listing.clone();
        async move {
            if uri.query().is_some_and(|q| q.contains("list-type")) {
                ([("content-type", "application/xml")], listing).into_response()
            } else {
                ([("etag", "\"e\"")], body).into_response()
            }
        }
    })
}
