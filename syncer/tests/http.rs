//! The HTTP(S) source against a real HTTP server on loopback: conditional re-fetches, archives
//! (and hostile ones), errors that name the cause and leave the published tree intact, a stalled
//! server cut off at `syncTimeout`, and HTTPS with the volume's own CA.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;

use crate::common::{http_server, sync, syncer, target, tls_config, tree, view, view_with};
use sv_api::HTTP_UNPACK_ANNOTATION;
use sv_syncer::publish::Volume;

fn file_spec(url: &str) -> String {
    format!("source:\n  http:\n    url: {url}\nsyncInterval: 1h\nsyncTimeout: 30s\n")
}

fn tar_gz(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, content.as_bytes()).expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

/// A tar whose one entry's raw name (and link target) bypass the tar crate's own checks, as a
/// hostile archive would.
fn raw_tar(name: &str, kind: tar::EntryType, link: Option<&str>, content: &[u8]) -> Vec<u8> {
    raw_tar_entries(&[(name, kind, link, content)])
}

/// A tar of several such entries, in order.
fn raw_tar_entries(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, content) in entries {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(*kind);
        header.set_size(content.len() as u64);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The chain a review found: each link alone stays inside the tree by its text, but `esc`
/// followed through `up` is `/`. `then` is appended (a hard link through the chain, say).
fn chained_escape(then: &[(&'static str, tar::EntryType, Option<&'static str>, &'static [u8])]) -> Vec<u8> {
    use tar::EntryType::{Directory, Symlink};
    let mut entries: Vec<(&str, tar::EntryType, Option<&str>, &[u8])> = vec![
        ("a/", Directory, None, b""),
        ("a/b/", Directory, None, b""),
        ("a/b/c/", Directory, None, b""),
        ("a/b/c/up", Symlink, Some("../../.."), b""),
        ("a/b/c/esc", Symlink, Some("up/../../../.."), b""),
    ];
    entries.extend_from_slice(then);
    raw_tar_entries(&entries)
}

/// A chain 30 links deep whose last link climbs out: `l0 -> l1 -> ... -> l29 -> d/..`, then
/// `d/out -> ../l0/..` (l0 is the root, so its parent is outside).
fn deep_chain() -> Vec<u8> {
    use tar::EntryType::{Directory, Symlink};
    let names: Vec<String> = (0..30).map(|i| format!("l{i}")).collect();
    let targets: Vec<String> =
        (0..30).map(|i| if i == 29 { "d/..".to_string() } else { format!("l{}", i + 1) }).collect();
    let mut entries: Vec<(&str, tar::EntryType, Option<&str>, &[u8])> = vec![("d/", Directory, None, b"")];
    for i in 0..30 {
        entries.push((names[i].as_str(), Symlink, Some(targets[i].as_str()), b""));
    }
    entries.push(("d/out", Symlink, Some("../l0/.."), b""));
    raw_tar_entries(&entries)
}

fn zip_with(build: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    build(&mut writer);
    writer.finish().expect("zip").into_inner()
}

fn zip_options() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

#[tokio::test]
async fn a_file_is_fetched_once_and_then_only_revalidated() {
    let (server, files) = http_server(None).await;
    files.put("/data/model.bin", "version one");
    let (data, volume, syncer) = target();
    let v = view(&file_spec(&format!("http://{}/data/model.bin", server.addr)));

    let first = sync(&syncer, &volume, &v).await.expect("first sync");
    assert!(first.published);
    assert_eq!((first.files, first.bytes), (1, 11));
    assert_eq!(std::fs::read_to_string(data.path().join("model.bin")).expect("at the mount path"), "version one");

    let again = sync(&syncer, &volume, &v).await.expect("second sync");
    assert!(!again.published, "304: nothing new to publish");
    assert_eq!(again.revision, first.revision);
    assert_eq!(again.transferred, 0);
    assert_eq!(files.full_responses.load(Ordering::SeqCst), 1);
    assert_eq!(files.not_modified.load(Ordering::SeqCst), 1, "the second request was conditional");

    files.put("/data/model.bin", "version two!");
    let changed = sync(&syncer, &volume, &v).await.expect("third sync");
    assert!(changed.published);
    assert_ne!(changed.revision, first.revision);
    assert_eq!(std::fs::read_to_string(data.path().join("model.bin")).expect("read"), "version two!");
}

#[tokio::test]
async fn an_archive_is_unpacked_and_files_removed_from_it_disappear() {
    let (server, files) = http_server(None).await;
    files.put("/bundle.tar.gz", tar_gz(&[("conf/app.yaml", "a: 1"), ("conf/old.yaml", "old"), ("README", "hi")]));
    let (data, volume, syncer) = target();
    let v =
        view_with(&file_spec(&format!("http://{}/bundle.tar.gz", server.addr)), &[(HTTP_UNPACK_ANNOTATION, "true")]);

    sync(&syncer, &volume, &v).await.expect("first sync");
    let expected: BTreeMap<String, String> =
        [("README", "hi"), ("conf", "<dir>"), ("conf/app.yaml", "a: 1"), ("conf/old.yaml", "old")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(tree(data.path()), expected);
    assert_eq!(std::fs::read_to_string(data.path().join("conf/app.yaml")).expect("read"), "a: 1");

    files.put("/bundle.tar.gz", tar_gz(&[("conf/app.yaml", "a: 2"), ("README", "hi")]));
    sync(&syncer, &volume, &v).await.expect("second sync");
    assert_eq!(std::fs::read_to_string(data.path().join("conf/app.yaml")).expect("read"), "a: 2");
    assert!(!data.path().join("conf/old.yaml").exists(), "removed from the archive, removed from the volume");

    // The same archive as a zip, with an executable and a symlink that stays inside.
    files.put(
        "/bundle.zip",
        zip_with(|w| {
            w.start_file("bin/run.sh", zip_options().unix_permissions(0o755)).expect("file");
            w.write_all(b"#!/bin/sh\n").expect("write");
            w.add_symlink("latest", "bin/run.sh", zip_options()).expect("symlink");
        }),
    );
    let z = view_with(&file_spec(&format!("http://{}/bundle.zip", server.addr)), &[(HTTP_UNPACK_ANNOTATION, "true")]);
    sync(&syncer, &volume, &z).await.expect("zip sync");
    let t = tree(data.path());
    assert_eq!(t.get("bin/run.sh").map(String::as_str), Some("#!/bin/sh\n"));
    assert_eq!(t.get("latest").map(String::as_str), Some("-> bin/run.sh"));
    assert!(!t.contains_key("README"), "a different source replaces the tree");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.path().join("bin/run.sh")).expect("meta").permissions().mode();
    assert_ne!(mode & 0o111, 0, "executable bit kept");
}

#[tokio::test]
async fn hostile_archives_are_refused_and_the_published_tree_stays() {
    let (server, files) = http_server(None).await;
    let outside = tempfile::tempdir().expect("tempdir");
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot.tar", raw_tar("../escaped", tar::EntryType::Regular, None, b"x"), "escaped"),
        ("nested-dotdot.tar", raw_tar("a/../../escaped", tar::EntryType::Regular, None, b"x"), ".."),
        (
            "absolute.tar",
            raw_tar(&format!("{}/abs", outside.path().display()), tar::EntryType::Regular, None, b"x"),
            "absolute",
        ),
        ("link-out.tar", raw_tar("etc", tar::EntryType::Symlink, Some("../../../../etc"), b""), "outside"),
        ("link-abs.tar", raw_tar("passwd", tar::EntryType::Symlink, Some("/etc/passwd"), b""), "outside"),
        ("hardlink-out.tar", raw_tar("shadow", tar::EntryType::Link, Some("/etc/shadow"), b""), "absolute"),
        ("device.tar", raw_tar("null", tar::EntryType::Char, None, b""), "not supported"),
        ("reserved.tar", raw_tar(".sharedvolume/current", tar::EntryType::Regular, None, b"x"), ".sharedvolume"),
        (
            "dotdot.zip",
            zip_with(|w| {
                w.start_file("../../escaped", zip_options()).expect("file");
                w.write_all(b"x").expect("write");
            }),
            "..",
        ),
        ("link-out.zip", zip_with(|w| w.add_symlink("up", "../../..", zip_options()).expect("symlink")), "outside"),
        ("chained-links.tar", chained_escape(&[]), "outside"),
        // A hard link through the chain to a file of the syncer's own machine: never opened.
        (
            "hardlink-through-chain.tar",
            chained_escape(&[("leak", tar::EntryType::Link, Some("a/b/c/esc/etc/hostname"), b"")]),
            "not an earlier entry",
        ),
        // A hard link to a link of the chain is that link again, and refused as it is.
        ("hardlink-to-link.tar", chained_escape(&[("again", tar::EntryType::Link, Some("a/b/c/esc"), b"")]), "outside"),
        ("deep-chain.tar", deep_chain(), "outside"),
        (
            "chained-links.zip",
            zip_with(|w| {
                w.add_directory("a/b/c/", zip_options()).expect("dir");
                w.add_symlink("a/b/c/up", "../../..", zip_options()).expect("symlink");
                w.add_symlink("a/b/c/esc", "up/../../../..", zip_options()).expect("symlink");
            }),
            "outside",
        ),
        ("garbage.tar.gz", b"this is not gzip at all, just text".to_vec(), "archive"),
        ("garbage.zip", vec![0x50, 0x4b, 0x03, 0x04, 1, 2, 3], "archive"),
    ];
    files.put("/good.tar.gz", tar_gz(&[("keep", "me")]));
    let (data, volume, syncer) = target();
    let unpack = [(HTTP_UNPACK_ANNOTATION, "true")];
    sync(&syncer, &volume, &view_with(&file_spec(&format!("http://{}/good.tar.gz", server.addr)), &unpack))
        .await
        .expect("good archive");
    let before = tree(data.path());

    for (name, body, says) in hostile {
        files.put(&format!("/{name}"), body);
        let v = view_with(&file_spec(&format!("http://{}/{name}", server.addr)), &unpack);
        let error = sync(&syncer, &volume, &v).await.expect_err(name);
        assert!(error.contains(says), "{name}: {error}");
        assert_eq!(tree(data.path()), before, "{name}: the published tree is untouched");
        assert_eq!(std::fs::read_to_string(data.path().join("keep")).expect("still served"), "me");
        assert!(!data.path().parent().expect("parent").join("escaped").exists(), "{name}: nothing escaped");
        assert_eq!(std::fs::read_dir(outside.path()).expect("outside").count(), 0, "{name}: nothing written outside");
        let leftovers: Vec<_> = std::fs::read_dir(data.path().join(".sharedvolume"))
            .expect("state")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("staging") || n.ends_with(".download"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: stage cleaned up: {leftovers:?}");
    }
}

#[tokio::test]
async fn server_errors_name_the_cause_and_keep_the_tree() {
    let (server, files) = http_server(None).await;
    files.put("/f", "content");
    let (data, volume, syncer) = target();
    sync(&syncer, &volume, &view(&file_spec(&format!("http://{}/f", server.addr)))).await.expect("first sync");
    let before = tree(data.path());

    let missing =
        sync(&syncer, &volume, &view(&file_spec(&format!("http://{}/missing", server.addr)))).await.expect_err("404");
    assert!(missing.contains("/missing was not found (404)"), "{missing}");

    *files.auth.lock().expect("lock") = Some(("reader".to_string(), "right-password-123".to_string()));
    let url = format!("http://reader:wrong-password-456@{}/f", server.addr);
    let refused = sync(&syncer, &volume, &view(&file_spec(&url))).await.expect_err("401");
    assert!(refused.starts_with("authentication failed"), "{refused}");
    assert!(!refused.contains("wrong-password-456"), "{refused}");
    let url = format!("http://reader:right-password-123@{}/f", server.addr);
    sync(&syncer, &volume, &view(&file_spec(&url))).await.expect("credentials in the URL are used");

    // Nothing listens here any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
    let unreachable =
        sync(&syncer, &volume, &view(&file_spec(&format!("http://{closed}/f")))).await.expect_err("refused");
    assert!(unreachable.starts_with("source unreachable"), "{unreachable}");
    assert_eq!(tree(data.path()), before);
}

#[tokio::test]
async fn a_file_larger_than_the_volume_is_refused() {
    let (server, files) = http_server(None).await;
    files.put("/small", "fits");
    files.put("/big", vec![7u8; 64 * 1024]);
    files.put("/bomb.tar.gz", tar_gz(&[("zeros", &"0".repeat(256 * 1024))]));
    let (data, volume, syncer) = target();
    let spec =
        |path: &str| format!("{}storage:\n  capacity: 32Ki\n", file_spec(&format!("http://{}{path}", server.addr)));
    sync(&syncer, &volume, &view(&spec("/small"))).await.expect("fits");

    let error = sync(&syncer, &volume, &view(&spec("/big"))).await.expect_err("too big");
    assert!(error.contains("more than the volume's capacity of 32768 bytes; raise spec.storage.capacity"), "{error}");
    // A small archive that unpacks to more than the capacity stops while unpacking.
    let unpack = [(HTTP_UNPACK_ANNOTATION, "true")];
    let error = sync(&syncer, &volume, &view_with(&spec("/bomb.tar.gz"), &unpack)).await.expect_err("bomb");
    assert!(error.contains("capacity"), "{error}");
    assert_eq!(std::fs::read_to_string(data.path().join("small")).expect("kept"), "fits");
}

#[tokio::test]
async fn a_stalled_server_is_cut_off_at_the_sync_timeout() {
    let (server, files) = http_server(None).await;
    files.put("/f", "content");
    let (data, volume, syncer) = target();
    let v = view(&file_spec(&format!("http://{}/f", server.addr)));
    let first = sync(&syncer, &volume, &v).await.expect("first sync");
    let before = tree(data.path());

    files.put("/f", "newer content");
    files.stall.store(true, Ordering::SeqCst);
    // From here on simulated time: the 30 s deadline passes as soon as everything waits.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let error = sync(&syncer, &volume, &v).await.expect_err("timeout");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(30) && waited < std::time::Duration::from_secs(31),
        "cut off at syncTimeout, after {waited:?}"
    );
    assert!(error.contains("did not finish within syncTimeout (30s); the published tree is unchanged"), "{error}");
    assert_eq!(tree(data.path()), before);
    assert_eq!(volume.current().expect("current").expect("published").1.revision, first.revision);
}

#[tokio::test]
async fn https_with_the_volumes_own_ca() {
    let (config, ca) = tls_config();
    let (server, files) = http_server(Some(config)).await;
    files.put("/secure.txt", "over TLS");
    let data = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(data.path()).expect("volume");
    let v = view(&file_spec(&format!("https://127.0.0.1:{}/secure.txt", server.addr.port())));

    let untrusted = syncer(data.path(), None, None);
    let error = sync(&untrusted, &volume, &v).await.expect_err("unknown CA");
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    let trusting = syncer(data.path(), None, Some(ca));
    sync(&trusting, &volume, &v).await.expect("trusted CA");
    assert_eq!(std::fs::read_to_string(data.path().join("secure.txt")).expect("read"), "over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_hammering_the_mount_path_never_sees_a_mixed_revision() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let (server, files) = http_server(None).await;
    let names: Vec<String> = (0..24).map(|i| format!("d{}/f{i}", i % 3)).collect();
    // Every file of revision N reads "rev-N:" and 2000 bytes of padding.
    let archive = |rev: usize| {
        let content = format!("rev-{rev}:{}", "x".repeat(2000));
        let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), content.as_str())).collect();
        tar_gz(&entries)
    };
    files.put("/tree.tar.gz", archive(0));
    let (data, volume, syncer) = target();
    let v = view_with(&file_spec(&format!("http://{}/tree.tar.gz", server.addr)), &[(HTTP_UNPACK_ANNOTATION, "true")]);
    sync(&syncer, &volume, &v).await.expect("first sync");

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let (stop, progress, root, names) = (stop.clone(), progress.clone(), data.path().to_path_buf(), names.clone());
        std::thread::spawn(move || {
            let revision_of = |path: &std::path::Path| -> Option<String> {
                let content = std::fs::read_to_string(path).ok()?;
                let (rev, padding) = content.split_once(':')?;
                assert_eq!(padding.len(), 2000, "a partial file at {}", path.display());
                Some(rev.to_string())
            };
            let (mut views, mut seen) = (0u64, std::collections::BTreeSet::new());
            while !stop.load(Ordering::SeqCst) {
                // What an application does: open its directory (resolving the mount path's link
                // once) and read the files in it.
                for dir in ["d0", "d1", "d2"] {
                    let Ok(resolved) = std::fs::canonicalize(root.join(dir)) else { continue };
                    let revs: std::collections::BTreeSet<String> = names
                        .iter()
                        .filter_map(|n| n.strip_prefix(&format!("{dir}/")))
                        .filter_map(|f| revision_of(&resolved.join(f)))
                        .collect();
                    assert!(revs.len() <= 1, "{dir} mixed revisions {revs:?}");
                    seen.extend(revs);
                }
                // Any single file read through the mount path is whole.
                for n in &names {
                    let _ = revision_of(&root.join(n));
                }
                views += 1;
                progress.store(views, Ordering::SeqCst);
            }
            (views, seen.len())
        })
    };
    for rev in 1..=15 {
        files.put("/tree.tar.gz", archive(rev));
        let outcome = sync(&syncer, &volume, &v).await.expect("sync");
        assert!(outcome.published);
        // The reader completes at least two full views of every revision (bounded wait).
        let seen = progress.load(Ordering::SeqCst);
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while progress.load(Ordering::SeqCst) < seen + 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the reader keeps reading");
    }
    stop.store(true, Ordering::SeqCst);
    let (views, revisions_seen) = reader.join().expect("the reader saw no mixed or partial revision");
    assert!(views >= 30, "the reader kept reading during the syncs ({views} views)");
    assert!(revisions_seen >= 15, "the reader saw the revisions change ({revisions_seen})");
}

/// A reproducible archive: every entry has the same mtime, so only the content tells a change.
#[tokio::test]
async fn unchanged_archive_entries_are_linked_and_same_size_changes_are_seen() {
    let (server, files) = http_server(None).await;
    let big = "b".repeat(300_000);
    let (data, volume, syncer) = target();
    let v = view_with(&file_spec(&format!("http://{}/r.tar.gz", server.addr)), &[(HTTP_UNPACK_ANNOTATION, "true")]);
    files.put("/r.tar.gz", tar_gz(&[("same.txt", big.as_str()), ("edit.txt", "version 1"), ("gone.txt", "x")]));
    let first = sync(&syncer, &volume, &v).await.expect("first");
    assert_eq!(first.transferred, 300_000 + 9 + 1);
    use std::os::unix::fs::MetadataExt;
    let same_ino = std::fs::metadata(data.path().join("same.txt")).expect("meta").ino();

    // Same size, same (zero) mtime, different bytes: must be seen as changed.
    files.put("/r.tar.gz", tar_gz(&[("same.txt", big.as_str()), ("edit.txt", "version 2")]));
    let second = sync(&syncer, &volume, &v).await.expect("second");
    assert_eq!(second.transferred, 9, "only the edited entry is written");
    assert_eq!(std::fs::read_to_string(data.path().join("edit.txt")).expect("read"), "version 2");
    assert!(!data.path().join("gone.txt").exists());
    assert_eq!(std::fs::metadata(data.path().join("same.txt")).expect("meta").ino(), same_ino, "linked, not rewritten");

    // A change late in a large entry: the matching prefix is copied from the previous revision.
    let mut edited = big.clone();
    edited.replace_range(299_990.., "tail-edit!");
    files.put("/r.tar.gz", tar_gz(&[("same.txt", edited.as_str()), ("edit.txt", "version 2")]));
    sync(&syncer, &volume, &v).await.expect("third");
    assert_eq!(std::fs::read_to_string(data.path().join("same.txt")).expect("read"), edited);
    assert_eq!(std::fs::read_to_string(data.path().join("edit.txt")).expect("read"), "version 2");
}

/// Archives unpack on a blocking thread while they download; a download that stalls half-way is
/// abandoned at the deadline, and what the abandoned thread wrote never reaches a reader.
/// (Real time: tokio's paused clock does not advance while a blocking thread runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_stalls_half_way_is_abandoned_at_the_deadline() {
    let (server, files) = http_server(None).await;
    let big: Vec<(String, String)> =
        (0..40).map(|i| (format!("f{i}"), format!("{i}:{}", "z".repeat(20_000)))).collect();
    let entries: Vec<(&str, &str)> = big.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
    files.put("/a.tar", tar_plain(&[("first", "1")]));
    let (data, volume, syncer) = target();
    let spec = format!("source:\n  http:\n    url: http://{}/a.tar\nsyncInterval: 1m\nsyncTimeout: 1s\n", server.addr);
    let v = view_with(&spec, &[(HTTP_UNPACK_ANNOTATION, "true")]);
    sync(&syncer, &volume, &v).await.expect("first sync");
    let before = tree(data.path());

    files.put("/a.tar", tar_plain(&entries));
    *files.stall_after.lock().expect("lock") = Some(300_000);
    let error = sync(&syncer, &volume, &v).await.expect_err("stalls");
    assert!(error.contains("did not finish within syncTimeout (1s)"), "{error}");
    assert_eq!(tree(data.path()), before, "the published tree is untouched");

    *files.stall_after.lock().expect("lock") = None;
    let after = sync(&syncer, &volume, &v).await.expect("the next sync succeeds");
    assert_eq!(after.files, 40);
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join(".sharedvolume"))
        .expect("state")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("staging"))
        .collect();
    assert!(leftovers.is_empty(), "the abandoned stage is gone: {leftovers:?}");
}

fn tar_plain(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, content.as_bytes()).expect("append");
    }
    builder.into_inner().expect("tar")
}
