//! The SSH/SFTP source against OpenSSH `sshd` on loopback: password and key logins, incremental
//! syncs with deletes, host keys (pinned on first use, configured, changed, opted out), symlinks
//! out of the tree, and wrong credentials.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{SSH_PASSWORD, SSH_USER, Sshd, shared_tempdir, sync, syncer, tree, view, view_with};
use base64::Engine;
use sv_api::{SSH_INSECURE_ANNOTATION, SSH_KNOWN_HOSTS_ANNOTATION};
use sv_syncer::publish::Volume;

fn spec(port: u16, path: &Path) -> String {
    format!(
        "source:\n  ssh:\n    host: 127.0.0.1\n    port: {port}\n    user: {SSH_USER}\n    path: {}\nsyncInterval: 1h\nsyncTimeout: 30s\n",
        path.display()
    )
}

fn credentials(file: &str, value: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(file), value).expect("write");
    dir
}

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
    std::fs::write(p, content).expect("write");
}

#[tokio::test]
async fn a_directory_is_mirrored_incrementally_with_deletes() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = shared_tempdir();
    write(remote.path(), "a.txt", "alpha");
    write(remote.path(), "dir/b.txt", "bravo");
    write(remote.path(), "dir/gone.txt", "gone soon");
    std::os::unix::fs::symlink("dir/b.txt", remote.path().join("link-to-b")).expect("symlink");

    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials("password", SSH_PASSWORD);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let v = view(&spec(sshd.port, remote.path()));

    let first = sync(&syncer, &volume, &v).await.expect("first sync");
    assert_eq!(first.files, 3);
    let t = tree(data.path());
    assert_eq!(t.get("dir/b.txt").map(String::as_str), Some("bravo"));
    assert_eq!(t.get("link-to-b").map(String::as_str), Some("-> dir/b.txt"), "a symlink inside the tree is kept");
    assert_eq!(std::fs::read_to_string(data.path().join("link-to-b")).expect("through the link"), "bravo");
    let a_ino = std::fs::metadata(data.path().join("a.txt")).expect("meta").ino();

    let again = sync(&syncer, &volume, &v).await.expect("unchanged");
    assert!(!again.published);

    write(remote.path(), "dir/b.txt", "bravo, changed");
    write(remote.path(), "new/c.txt", "charlie");
    std::fs::remove_file(remote.path().join("dir/gone.txt")).expect("remove");
    let second = sync(&syncer, &volume, &v).await.expect("second sync");
    assert!(second.published);
    assert_eq!(second.transferred, ("bravo, changed".len() + "charlie".len()) as u64, "only changed files are read");
    assert!(!data.path().join("dir/gone.txt").exists(), "deleted at the source, deleted here");
    assert_eq!(std::fs::read_to_string(data.path().join("new/c.txt")).expect("read"), "charlie");
    assert_eq!(std::fs::metadata(data.path().join("a.txt")).expect("meta").ino(), a_ino, "unchanged file reused");
}

#[tokio::test]
async fn a_large_file_streams_beside_small_ones() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = shared_tempdir();
    // Above the 4 MiB at which a file stops being read into memory.
    let large: Vec<u8> = (0..5 * 1024 * 1024 + 7).map(|i: u32| (i % 251) as u8).collect();
    std::fs::create_dir_all(remote.path().join("m")).expect("mkdir");
    std::fs::write(remote.path().join("m/large.bin"), &large).expect("write");
    for i in 0..20 {
        write(remote.path(), &format!("{}/small-{i}.txt", ["a", "m", "z"][i % 3]), &format!("small {i}"));
    }
    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials("password", SSH_PASSWORD);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let first = sync(&syncer, &volume, &view(&spec(sshd.port, remote.path()))).await.expect("sync");
    // "small N": 7 bytes for N < 10, 8 for the ten others.
    assert_eq!((first.files, first.transferred), (21, large.len() as u64 + 10 * 7 + 10 * 8));
    assert_eq!(std::fs::read(data.path().join("m/large.bin")).expect("read"), large);
    for i in 0..20 {
        let path = data.path().join(format!("{}/small-{i}.txt", ["a", "m", "z"][i % 3]));
        assert_eq!(std::fs::read_to_string(path).expect("read"), format!("small {i}"));
    }
}

#[tokio::test]
async fn key_logins_in_both_encodings_and_wrong_credentials() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = shared_tempdir();
    write(remote.path(), "f", "x");
    let data = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(data.path()).expect("volume");
    let v = view(&spec(sshd.port, remote.path()));

    let pem = credentials("private-key", &sshd.client_key);
    sync(&syncer(data.path(), Some(pem.path()), None), &volume, &v).await.expect("OpenSSH key");
    // The Go examples carried keys as base64 of the PEM text.
    let b64 = credentials("private-key", &base64::engine::general_purpose::STANDARD.encode(&sshd.client_key));
    sync(&syncer(data.path(), Some(b64.path()), None), &volume, &v).await.expect("base64 key");

    let wrong = "not-the-Password-9f3k";
    let bad = credentials("password", wrong);
    let error = sync(&syncer(data.path(), Some(bad.path()), None), &volume, &v).await.expect_err("wrong password");
    assert_eq!(
        error,
        format!("authentication failed: {SSH_USER}@127.0.0.1 refused the credentials; check the credentials Secret")
    );
    let garbage = credentials(
        "private-key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnonsense\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    let error = sync(&syncer(data.path(), Some(garbage.path()), None), &volume, &v).await.expect_err("bad key");
    assert!(error.starts_with("configuration: the private key cannot be read"), "{error}");
    assert_eq!(std::fs::read_to_string(data.path().join("f")).expect("kept"), "x");

    let missing =
        sync(&syncer(data.path(), Some(pem.path()), None), &volume, &view(&spec(sshd.port, Path::new("/no/such/dir"))))
            .await;
    assert!(missing.expect_err("missing path").contains("/no/such/dir"));
}

#[tokio::test]
async fn host_keys_are_pinned_on_first_use_and_a_changed_key_is_refused() {
    let Some(first_server) = Sshd::start() else { return };
    let port = first_server.port;
    let remote = shared_tempdir();
    write(remote.path(), "f", "x");
    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials("password", SSH_PASSWORD);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let v = view(&spec(port, remote.path()));
    sync(&syncer, &volume, &v).await.expect("first contact");
    let pinned = std::fs::read_to_string(data.path().join(".sharedvolume/known_hosts")).expect("pinned");
    assert!(pinned.contains(&format!("[127.0.0.1]:{port}")), "{pinned}");

    // Another server (another host key) takes over the address.
    drop(first_server);
    let Some(impostor) = Sshd::start_on(port) else { return };
    write(remote.path(), "f", "tampered");
    let error = sync(&syncer, &volume, &v).await.expect_err("changed key");
    assert!(error.contains("changed since it was recorded"), "{error}");
    assert_eq!(std::fs::read_to_string(data.path().join("f")).expect("kept"), "x");

    // A configured known_hosts entry overrides what was learned; a wrong one is refused.
    let configured =
        view_with(&spec(port, remote.path()), &[(SSH_KNOWN_HOSTS_ANNOTATION, impostor.host_key_line.as_str())]);
    sync(&syncer, &volume, &configured).await.expect("configured key");
    assert_eq!(std::fs::read_to_string(data.path().join("f")).expect("read"), "tampered");
    let other = Sshd::start().expect("sshd");
    let wrong_line = other.host_key_line.replace(&format!(":{}", other.port), &format!(":{port}"));
    let wrong = view_with(&spec(port, remote.path()), &[(SSH_KNOWN_HOSTS_ANNOTATION, wrong_line.as_str())]);
    let error = sync(&syncer, &volume, &wrong).await.expect_err("wrong configured key");
    assert!(error.contains("host key"), "{error}");

    // The opt-out skips the check.
    let insecure = view_with(&spec(port, remote.path()), &[(SSH_INSECURE_ANNOTATION, "true")]);
    write(remote.path(), "f", "tampered again");
    sync(&syncer, &volume, &insecure).await.expect("opted out");
}

#[tokio::test]
async fn symlinks_out_of_the_tree_and_unreachable_hosts_are_refused() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = shared_tempdir();
    write(remote.path(), "ok", "fine");
    let data = tempfile::tempdir().expect("tempdir");
    let creds = credentials("password", SSH_PASSWORD);
    let volume = Volume::open(data.path()).expect("volume");
    let syncer = syncer(data.path(), Some(creds.path()), None);
    let v = view(&spec(sshd.port, remote.path()));
    sync(&syncer, &volume, &v).await.expect("first sync");
    let before = tree(data.path());

    for target in ["/etc/passwd", "../../../etc", "sub/../../outside"] {
        let link = remote.path().join("evil");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink");
        let error = sync(&syncer, &volume, &v).await.expect_err(target);
        assert!(error.contains("outside the synced tree"), "{target}: {error}");
        assert_eq!(tree(data.path()), before);
    }
    let _ = std::fs::remove_file(remote.path().join("evil"));
    // A chain whose links each stay inside by their text, and a deep one.
    std::fs::create_dir_all(remote.path().join("a/b/c")).expect("mkdir");
    std::os::unix::fs::symlink("../../..", remote.path().join("a/b/c/up")).expect("symlink");
    std::os::unix::fs::symlink("up/../../../..", remote.path().join("a/b/c/esc")).expect("symlink");
    let error = sync(&syncer, &volume, &v).await.expect_err("chain");
    assert!(error.contains("symlink \"a/b/c/esc\" points to \"up/../../../..\", outside the synced tree"), "{error}");
    assert_eq!(tree(data.path()), before);
    std::fs::remove_file(remote.path().join("a/b/c/esc")).expect("remove");
    for i in 0..25 {
        let next = if i == 24 { "a/..".to_string() } else { format!("l{}", i + 1) };
        std::os::unix::fs::symlink(next, remote.path().join(format!("l{i}"))).expect("symlink");
    }
    std::os::unix::fs::symlink("../l0/..", remote.path().join("a/out")).expect("symlink");
    let error = sync(&syncer, &volume, &v).await.expect_err("deep chain");
    assert!(error.contains("symlink \"a/out\""), "{error}");
    assert_eq!(tree(data.path()), before);

    let port = sshd.port;
    drop(sshd);
    let error = sync(&syncer, &volume, &view(&spec(port, remote.path()))).await.expect_err("down");
    assert!(error.starts_with("source unreachable"), "{error}");
    assert_eq!(tree(data.path()), before);
}
