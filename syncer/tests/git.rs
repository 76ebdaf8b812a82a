//! The git source against `git http-backend` (behind a small HTTP server) and `git` over OpenSSH,
//! both on loopback: shallow first fetch, no fetch when the branch has not moved, new commits
//! written incrementally, branch changes, basic auth, SSH keys with host key checks, and refused
//! content (submodules, symlinks out of the tree).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::common::{
    Repo, SSH_USER, Sshd, git, git_http_server, git_server, shared_tempdir, sync, syncer, target, tls_config, tree,
    view, view_with,
};
use sv_api::SSH_KNOWN_HOSTS_ANNOTATION;
use sv_syncer::publish::Volume;

fn spec(url: &str, extra: &str) -> String {
    format!("source:\n  git:\n    url: {url}\n{extra}syncInterval: 1h\nsyncTimeout: 60s\n")
}

fn ino(root: &Path, path: &str) -> u64 {
    std::fs::metadata(root.join(path)).expect("meta").ino()
}

fn syncer_with(data: &Path, credentials: &tempfile::TempDir) -> sv_syncer::run::Syncer {
    syncer(data, Some(credentials.path()), None)
}

fn credentials(file: &str, value: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(file), value).expect("write");
    dir
}

#[tokio::test]
async fn a_branch_is_fetched_shallow_then_only_when_it_moves() {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(repos.path(), "app");
    repo.write("README.md", "# app");
    repo.write("src/main.rs", "fn main() {}");
    repo.write("src/old.rs", "// old");
    repo.commit("one", "main");
    repo.write("README.md", "# app v2");
    let second_commit = repo.commit("two", "main");
    let (server, backend) = git_http_server(repos.path()).await;
    let url = format!("http://{}/app.git", server.addr);

    let (data, volume, syncer) = target();
    let v = view(&spec(&url, ""));
    let first = sync(&syncer, &volume, &v).await.expect("first sync");
    assert_eq!(first.revision, second_commit);
    assert_eq!(std::fs::read_to_string(data.path().join("README.md")).expect("read"), "# app v2");
    assert_eq!(std::fs::read_to_string(data.path().join("src/main.rs")).expect("read"), "fn main() {}");
    let cache: Vec<_> =
        std::fs::read_dir(data.path().join(".sharedvolume/git")).expect("cache").filter_map(Result::ok).collect();
    assert_eq!(cache.len(), 1);
    let shallow = std::fs::read_to_string(cache[0].path().join("shallow")).expect("a shallow clone");
    assert_eq!(shallow.trim(), second_commit, "only the tip was fetched");
    let main_ino = ino(data.path(), "src/main.rs");

    let requests = backend.requests.load(Ordering::SeqCst);
    let again = sync(&syncer, &volume, &v).await.expect("unchanged");
    assert!(!again.published);
    assert!(backend.requests.load(Ordering::SeqCst) - requests <= 2, "only the refs were asked for");

    repo.write("src/lib.rs", "pub fn f() {}");
    std::fs::remove_file(repo.work.join("src/old.rs")).expect("remove");
    let third = repo.commit("three", "main");
    let next = sync(&syncer, &volume, &v).await.expect("new commit");
    assert_eq!(next.revision, third);
    let t = tree(data.path());
    assert!(!t.contains_key("src/old.rs"), "removed in git, removed here");
    assert_eq!(t.get("src/lib.rs").map(String::as_str), Some("pub fn f() {}"));
    assert_eq!(ino(data.path(), "src/main.rs"), main_ino, "an unchanged blob is the same file");

    // Another branch, without restarting anything.
    repo.write("FEATURE", "on dev");
    let dev = repo.commit("dev", "dev");
    let on_dev = sync(&syncer, &volume, &view(&spec(&url, "    branch: dev\n"))).await.expect("branch change");
    assert_eq!(on_dev.revision, dev);
    assert_eq!(std::fs::read_to_string(data.path().join("FEATURE")).expect("read"), "on dev");

    let error =
        sync(&syncer, &volume, &view(&spec(&url, "    branch: no-such-branch\n"))).await.expect_err("missing branch");
    assert!(error.contains("refs/heads/no-such-branch"), "{error}");
    assert_eq!(std::fs::read_to_string(data.path().join("FEATURE")).expect("kept"), "on dev");
}

#[tokio::test]
async fn basic_auth_over_https_with_the_password_from_the_secret() {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(repos.path(), "private");
    repo.write("secret-plans.txt", "plans");
    repo.commit("one", "main");
    let (tls, ca) = tls_config();
    let (server, backend) = git_server(repos.path(), Some(tls)).await;
    let password = "git-Token-4Jq8-not-for-logs";
    *backend.auth.lock().expect("lock") = Some(("deploy".to_string(), password.to_string()));
    let url = format!("https://127.0.0.1:{}/private.git", server.addr.port());
    let data = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(data.path()).expect("volume");
    let v = view(&spec(&url, "    user: deploy\n"));
    let right = credentials("password", password);

    let untrusted = sync(&syncer(data.path(), Some(right.path()), None), &volume, &v).await.expect_err("unknown CA");
    assert!(untrusted.to_lowercase().contains("certificate"), "{untrusted}");
    let wrong = credentials("password", "a-wrong-token-0000");
    let error = sync(&syncer(data.path(), Some(wrong.path()), Some(ca.clone())), &volume, &v)
        .await
        .expect_err("wrong password");
    assert!(error.starts_with("authentication failed"), "{error}");
    assert!(!error.contains("a-wrong-token-0000"), "{error}");
    let none = sync(&syncer(data.path(), None, Some(ca.clone())), &volume, &view(&spec(&url, "")))
        .await
        .expect_err("no credentials");
    assert!(none.starts_with("authentication failed"), "{none}");

    sync(&syncer(data.path(), Some(right.path()), Some(ca)), &volume, &v).await.expect("right password");
    assert_eq!(std::fs::read_to_string(data.path().join("secret-plans.txt")).expect("read"), "plans");

    // Credentials never travel over plain HTTP: refused before connecting.
    let (plain, plain_backend) = git_http_server(repos.path()).await;
    let clear = view(&spec(&format!("http://{}/private.git", plain.addr), "    user: deploy\n"));
    let error = sync(&syncer(data.path(), Some(right.path()), None), &volume, &clear).await.expect_err("plain http");
    assert!(error.contains("credentials are only sent over https:// or SSH"), "{error}");
    assert_eq!(plain_backend.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn submodules_and_symlinks_out_of_the_tree_are_refused() {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(repos.path(), "repo");
    repo.write("a", "a");
    std::os::unix::fs::symlink("a", repo.work.join("inside")).expect("symlink");
    repo.commit("one", "main");
    let (server, _backend) = git_http_server(repos.path()).await;
    let url = format!("http://{}/repo.git", server.addr);
    let (data, volume, syncer) = target();
    let v = view(&spec(&url, ""));
    sync(&syncer, &volume, &v).await.expect("first sync");
    assert_eq!(tree(data.path()).get("inside").map(String::as_str), Some("-> a"));
    let before = tree(data.path());

    std::os::unix::fs::symlink("../../../../etc/passwd", repo.work.join("escape")).expect("symlink");
    repo.commit("escape", "main");
    let error = sync(&syncer, &volume, &v).await.expect_err("symlink out");
    assert!(
        error.contains("symlink \"escape\" points to \"../../../../etc/passwd\", outside the synced tree"),
        "{error}"
    );
    assert_eq!(tree(data.path()), before);

    std::fs::remove_file(repo.work.join("escape")).expect("remove");
    // A chain: each link stays inside by its text, but `esc` followed through `up` is `/`, and
    // the deep chain's last step climbs out of the root that its first link names.
    std::fs::create_dir_all(repo.work.join("a1/b/c")).expect("mkdir");
    std::os::unix::fs::symlink("../../..", repo.work.join("a1/b/c/up")).expect("symlink");
    std::os::unix::fs::symlink("up/../../../..", repo.work.join("a1/b/c/esc")).expect("symlink");
    repo.commit("chain", "main");
    let error = sync(&syncer, &volume, &v).await.expect_err("chained symlink");
    assert!(error.contains("symlink \"a1/b/c/esc\" points to \"up/../../../..\", outside the synced tree"), "{error}");
    assert_eq!(tree(data.path()), before);
    std::fs::remove_file(repo.work.join("a1/b/c/esc")).expect("remove");
    std::fs::create_dir_all(repo.work.join("deep")).expect("mkdir");
    for i in 0..25 {
        let next = if i == 24 { "deep/..".to_string() } else { format!("l{}", i + 1) };
        std::os::unix::fs::symlink(next, repo.work.join(format!("l{i}"))).expect("symlink");
    }
    std::os::unix::fs::symlink("../l0/..", repo.work.join("deep/out")).expect("symlink");
    repo.commit("deep chain", "main");
    let error = sync(&syncer, &volume, &v).await.expect_err("deep chain");
    assert!(error.contains("symlink \"deep/out\""), "{error}");
    assert_eq!(tree(data.path()), before);
    std::fs::remove_file(repo.work.join("deep/out")).expect("remove");

    git(&repo.work, &["add", "-A"]);
    // A gitlink entry, as `git submodule add` records it.
    let other = Repo::new(repos.path(), "other");
    other.write("x", "x");
    let pinned = other.commit("x", "main");
    git(&repo.work, &["update-index", "--add", "--cacheinfo", &format!("160000,{pinned},vendor/lib")]);
    git(&repo.work, &["commit", "-q", "-m", "submodule"]);
    git(&repo.work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let error = sync(&syncer, &volume, &v).await.expect_err("submodule");
    assert!(error.contains("vendor/lib is a git submodule; submodules are not supported"), "{error}");
    assert_eq!(tree(data.path()), before);
}

#[tokio::test]
async fn an_unreachable_server_is_reported_and_the_tree_kept() {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(repos.path(), "repo");
    repo.write("a", "a");
    repo.commit("one", "main");
    let (server, _backend) = git_http_server(repos.path()).await;
    let url = format!("http://{}/repo.git", server.addr);
    let (data, volume, syncer) = target();
    sync(&syncer, &volume, &view(&spec(&url, ""))).await.expect("first sync");
    server.stop().await;
    let error = sync(&syncer, &volume, &view(&spec(&url, ""))).await.expect_err("down");
    assert!(error.starts_with("source unreachable"), "{error}");
    assert_eq!(std::fs::read_to_string(data.path().join("a")).expect("kept"), "a");
}

#[tokio::test]
async fn over_ssh_with_a_key_and_checked_host_keys() {
    let Some(sshd) = Sshd::start() else { return };
    let repos = shared_tempdir();
    let repo = Repo::new(repos.path(), "ops");
    repo.write("deploy.yaml", "replicas: 3");
    let commit = repo.commit("one", "main");
    // The SSH user reads the repository; git refuses repositories owned by someone else.
    let chown = std::process::Command::new("chown").args(["-R", SSH_USER]).arg(&repo.bare).status().expect("chown");
    assert!(chown.success());
    let url = format!("ssh://{SSH_USER}@127.0.0.1:{}{}", sshd.port, repo.bare.display());
    let data = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(data.path()).expect("volume");
    let key = credentials("private-key", &sshd.client_key);
    let syncer = syncer(data.path(), Some(key.path()), None);

    let wrong_host = Sshd::start().expect("sshd");
    let wrong_line = wrong_host.host_key_line.replace(&format!(":{}", wrong_host.port), &format!(":{}", sshd.port));
    let refused = view_with(&spec(&url, ""), &[(SSH_KNOWN_HOSTS_ANNOTATION, wrong_line.as_str())]);
    let error = sync(&syncer, &volume, &refused).await.expect_err("wrong host key");
    assert!(error.starts_with("SSH host key rejected: the server's key is not the one the volume trusts"), "{error}");

    let pinned = view_with(&spec(&url, ""), &[(SSH_KNOWN_HOSTS_ANNOTATION, sshd.host_key_line.as_str())]);
    let first = sync(&syncer, &volume, &pinned).await.expect("ssh sync");
    assert_eq!(first.revision, commit);
    assert_eq!(std::fs::read_to_string(data.path().join("deploy.yaml")).expect("read"), "replicas: 3");

    let other_key = credentials("private-key", &wrong_host.client_key);
    let error = sync(&syncer_with(data.path(), &other_key), &volume, &pinned).await.expect_err("unauthorized key");
    assert!(error.starts_with("authentication failed: ssh said:") && error.contains("Permission denied"), "{error}");

    // Trust on first use, as for SFTP: learned into the volume's known_hosts.
    let learned = sync(&syncer, &volume, &view(&spec(&url, ""))).await.expect("learned host key");
    assert!(!learned.published);
    let known = std::fs::read_to_string(data.path().join(".sharedvolume/known_hosts")).expect("pinned");
    assert!(known.contains("ssh-ed25519"), "{known}");
    let leftover_keys: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("sv-git-key-{}-", std::process::id())))
        .collect();
    assert!(leftover_keys.is_empty(), "the key file is removed after the fetch");
}
