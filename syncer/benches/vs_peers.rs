//! The syncer against its peers on the same data from the same local servers: `rclone sync` for
//! S3 (`s3s-fs`), SFTP (OpenSSH) and HTTP (an indexed file tree for rclone, a tar of the same tree
//! for us; and curl piped to `tar -x`, the peer that does our work), and `git clone --depth
//! 1` / `git fetch --depth 1` + `reset --hard` for git (`git http-backend`).
//!
//! Measured the same way on both sides: each sync is a process (`sv-syncer once` for us), timed
//! from spawn to exit, with its peak resident memory read from `/proc`. The order alternates from
//! run to run. Every result is checked by content (every file against the source revision, and no
//! file more). Our syncer makes a revision durable (`syncfs`) before it publishes it; the peers do
//! not, so each peer is also reported with `sync -f` of its destination added.
//!
//! Data: 2,000 files of 16 KiB in 20 directories plus one 256 MiB file (incompressible). For each
//! source: a full sync into an empty directory, then an incremental sync after 10 files changed.
//! Prints the median and the spread of `SV_BENCH_RUNS` runs (default 5) and the ratios ours/peer.
//!
//! `cargo bench -p sv-syncer --bench vs_peers` (needs root for the SSH user, and rclone, git, curl
//! and openssh-server: `apt-get install rclone git curl openssh-server`).

#[path = "../tests/common/mod.rs"]
mod common;
mod dataset;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    Repo, S3_ACCESS, S3_SECRET, SSH_USER, Sshd, git_http_server, have, http_server, s3_server, shared_tempdir,
};
use dataset::{CHANGED, DIRS, Measured, bytes, changed, measure, median, write_tree};

/// s3s-fs and our test HTTP server answer ranged GETs with the whole object, which breaks
/// rclone's multi-stream download of large files: one stream per file there (OpenSSH serves
/// ranges, so rclone keeps them for SFTP). The cutoff is above any file here (a file at the
/// cutoff is split too).
const NO_RANGES: &str = "--multi-thread-cutoff=1P";

fn tar_of(entries: &[(String, u64, usize)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, seed, len) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(*len as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append_data(&mut header, path, bytes(*seed, *len).as_slice()).expect("append");
    }
    builder.into_inner().expect("tar")
}

/// One sync as measured: the command, and `sync -f` of its destination after it.
struct Sample {
    sync: Measured,
    flush: Measured,
}

#[derive(Default)]
struct Samples {
    full: Vec<Sample>,
    incremental: Vec<Sample>,
}

/// The measurements of one source.
struct Row {
    source: &'static str,
    peer: &'static str,
    ours: Samples,
    peers: Samples,
    /// Syncs after which the peer's copy was not the source revision.
    wrong: Vec<String>,
}

/// A manifest of one SharedVolume with `spec_yaml` (the spec's source and intervals) and
/// `annotations`, for `sv-syncer once`.
fn manifest(dir: &Path, spec_yaml: &str, annotations: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from(
        "apiVersion: sv.sharedvolume.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: bench\n  namespace: default\n",
    );
    if !annotations.is_empty() {
        text.push_str("  annotations:\n");
        for (key, value) in annotations {
            text.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    text.push_str("spec:\n  mountPath: /data\n  storageClassName: standard\n  storage:\n    capacity: 10Gi\n");
    for line in spec_yaml.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    let path = dir.join("volume.yaml");
    std::fs::write(&path, text).expect("manifest");
    path
}

/// Our sync of the volume in `manifest` into `data`, as a process.
fn ours(manifest: &Path, data: &Path, creds: Option<&Path>) -> Measured {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sv-syncer"));
    cmd.args(["once", "--spec"]).arg(manifest).arg("--data-dir").arg(data).env("RUST_LOG", "warn");
    if let Some(creds) = creds {
        cmd.arg("--credentials-dir").arg(creds);
    }
    measure(&mut cmd)
}

/// `sync -f dest`: what it costs to make the peer's copy as durable as ours.
fn flush(dest: &Path) -> Measured {
    measure(Command::new("sync").arg("-f").arg(dest))
}

/// Runs one sync of each side, ours first in even runs and the peer first in odd ones.
fn both(
    run: usize,
    ours_sync: &mut dyn FnMut() -> Measured,
    ours_dest: &Path,
    peer_sync: &mut dyn FnMut() -> Measured,
    peer_dest: &Path,
) -> (Sample, Sample) {
    let mut ours_side = || Sample { sync: ours_sync(), flush: flush(ours_dest) };
    let mut peer_side = || Sample { sync: peer_sync(), flush: flush(peer_dest) };
    if run.is_multiple_of(2) {
        let o = ours_side();
        (o, peer_side())
    } else {
        let p = peer_side();
        (ours_side(), p)
    }
}

/// Files under `dir` (following our top-level links), `.sharedvolume` and `.git` aside.
fn file_count(dir: &Path) -> usize {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").filter_map(Result::ok) {
            if entry.file_name() == ".sharedvolume" || entry.file_name() == ".git" {
                continue;
            }
            if std::fs::metadata(entry.path()).expect("meta").is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
            }
        }
    }
    files
}

/// Whether `dir` holds exactly the source revision `expected`: every file with its content, and
/// no other; the first difference otherwise.
fn check(dir: &Path, expected: &[(String, u64, usize)]) -> Result<(), String> {
    for (path, seed, len) in expected {
        let found = std::fs::read(dir.join(path)).map_err(|e| format!("{path}: {e}"))?;
        if found != bytes(*seed, *len) {
            return Err(format!("{path} differs from the source"));
        }
    }
    match file_count(dir) {
        n if n == expected.len() => Ok(()),
        n => Err(format!("{n} files where the source has {}", expected.len())),
    }
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("dir");
    p
}

fn rclone() -> Command {
    let mut c = Command::new("rclone");
    c.args(["sync", "--config", "/dev/null", "-q"]);
    // The AWS SDK inside rclone rejects a custom CA bundle on its HTTP transport; plain HTTP here.
    c.env_remove("AWS_CA_BUNDLE");
    c
}

fn main() {
    if !have("rclone") || !have("git") || !have("curl") {
        println!("skipped: the benchmark needs rclone, git and curl (apt-get install rclone git curl openssh-server)");
        return;
    }
    let runs: usize = std::env::var("SV_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let files: usize = std::env::var("SV_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let big_mib: usize = std::env::var("SV_BENCH_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let only = std::env::var("SV_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let work = shared_tempdir();
    let base = dataset::dataset(files, big_mib);
    println!(
        "data: {files} files of 16 KiB in {DIRS} directories + one {big_mib} MiB file; {CHANGED} files change; {runs} runs"
    );
    let mut rows: Vec<Row> = Vec::new();
    // One row: `peer_sync(dest, full)` against our sync of `manifest`; `change(run)` changes the
    // source between the full and the incremental sync and returns the new revision.
    let mut row = |source: &'static str,
                   peer: &'static str,
                   manifest: &Path,
                   creds: Option<&Path>,
                   peer_dest: &dyn Fn(&Path) -> PathBuf,
                   peer_sync: &mut dyn FnMut(&Path, bool) -> Measured,
                   change: &mut dyn FnMut(usize) -> Vec<(String, u64, usize)>| {
        let mut r = Row { source, peer, ours: Samples::default(), peers: Samples::default(), wrong: Vec::new() };
        // The source as a full sync finds it (changes stay from one run to the next).
        let mut expected = base.clone();
        for run in 0..runs {
            let (o, p) = (fresh(work.path(), "ours"), fresh(work.path(), "peer"));
            let dest = peer_dest(&p);
            let (ours_full, peer_full) =
                both(run, &mut || ours(manifest, &o, creds), &o, &mut || peer_sync(&dest, true), &p);
            // Ours must be right; a peer that is wrong is reported (its time is not comparable).
            let wrong = |side: &str, result: Result<(), String>| result.err().map(|e| format!("{side}: {e}"));
            check(&o, &expected).unwrap_or_else(|e| panic!("our full sync, run {run}: {e}"));
            r.wrong.extend(wrong("full", check(&dest, &expected)));
            expected = change(run);
            let (ours_incremental, peer_incremental) =
                both(run, &mut || ours(manifest, &o, creds), &o, &mut || peer_sync(&dest, false), &p);
            check(&o, &expected).unwrap_or_else(|e| panic!("our incremental sync, run {run}: {e}"));
            r.wrong.extend(wrong("incremental", check(&dest, &expected)));
            r.ours.full.push(ours_full);
            r.peers.full.push(peer_full);
            r.ours.incremental.push(ours_incremental);
            r.peers.incremental.push(peer_incremental);
        }
        rows.push(r);
    };

    if wanted("s3") {
        let root = work.path().join("s3");
        write_tree(&root.join("bench"), &base);
        let server = rt.block_on(s3_server(&root));
        let endpoint = format!("http://{}", server.addr);
        let creds = fresh(work.path(), "s3-creds");
        std::fs::write(creds.join("access-key"), S3_ACCESS).expect("creds");
        std::fs::write(creds.join("secret-key"), S3_SECRET).expect("creds");
        let spec = format!(
            "source:\n  s3:\n    endpointUrl: {endpoint}\n    bucketName: bench\n    region: us-east-1\nsyncInterval: 1h\nsyncTimeout: 1h\n"
        );
        let manifest = manifest(&fresh(work.path(), "s3-manifest"), &spec, &[]);
        // --checksum compares ETags from the listing, as ours does (and hashes the local copy
        // to compare). rclone's default, size and modification time, can skip a file rewritten
        // with the same size within the second of its last sync (S3 times have one-second
        // resolution): that row is here for its speed, and its wrong copies are reported.
        for (peer_name, checksum) in [("rclone sync --checksum", true), ("rclone sync (size, time)", false)] {
            let mut peer = |dest: &Path, _full: bool| {
                let mut c = rclone();
                // No --fast-list: s3s-fs reads its empty `delimiter=` as a delimiter and lists
                // nothing.
                c.args([":s3:bench", dest.to_str().expect("utf8"), "--use-server-modtime", NO_RANGES])
                    .env("RCLONE_S3_PROVIDER", "Other")
                    .env("RCLONE_S3_ENDPOINT", &endpoint)
                    .env("RCLONE_S3_ACCESS_KEY_ID", S3_ACCESS)
                    .env("RCLONE_S3_SECRET_ACCESS_KEY", S3_SECRET)
                    .env("RCLONE_S3_REGION", "us-east-1")
                    .env("RCLONE_S3_FORCE_PATH_STYLE", "true");
                if checksum {
                    c.arg("--checksum");
                }
                measure(&mut c)
            };
            write_tree(&root.join("bench"), &base);
            let mut current = base.clone();
            let mut change = |run: usize| {
                let change = changed(files, run);
                write_tree(&root.join("bench"), &change);
                dataset::apply(&mut current, &change);
                current.clone()
            };
            row("S3", peer_name, &manifest, Some(&creds), &|p| p.to_path_buf(), &mut peer, &mut change);
        }
        drop(server);
    }

    if wanted("sftp") {
        match Sshd::start() {
            None => println!("skipped SFTP: sshd cannot run here"),
            Some(sshd) => {
                let root = work.path().join("sftp");
                write_tree(&root, &base);
                let key = work.path().join("ssh-key");
                std::fs::write(&key, &sshd.client_key).expect("key");
                let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
                std::fs::set_permissions(&key, mode).expect("chmod");
                let creds = fresh(work.path(), "ssh-creds");
                std::fs::write(creds.join("private-key"), &sshd.client_key).expect("creds");
                let spec = format!(
                    "source:\n  ssh:\n    host: 127.0.0.1\n    port: {}\n    user: {SSH_USER}\n    path: {}\nsyncInterval: 1h\nsyncTimeout: 1h\n",
                    sshd.port,
                    root.display()
                );
                let insecure = [(sv_api::SSH_INSECURE_ANNOTATION, "true")];
                let manifest = manifest(&fresh(work.path(), "sftp-manifest"), &spec, &insecure);
                let mut peer = |dest: &Path, _full: bool| {
                    let mut c = rclone();
                    c.args([
                        &format!(":sftp:{}", root.display()),
                        dest.to_str().expect("utf8"),
                        "--sftp-disable-hashcheck",
                    ])
                    .env("RCLONE_SFTP_HOST", "127.0.0.1")
                    .env("RCLONE_SFTP_PORT", sshd.port.to_string())
                    .env("RCLONE_SFTP_USER", SSH_USER)
                    .env("RCLONE_SFTP_KEY_FILE", &key);
                    measure(&mut c)
                };
                let mut current = base.clone();
                let mut change = |run: usize| {
                    let change = changed(files, run);
                    write_tree(&root, &change);
                    dataset::apply(&mut current, &change);
                    current.clone()
                };
                row("SFTP", "rclone sync", &manifest, Some(&creds), &|p| p.to_path_buf(), &mut peer, &mut change);
                write_tree(&root, &base);
            }
        }
    }

    if wanted("http") {
        let (server, served) = rt.block_on(http_server(None));
        let publish = |entries: &[(String, u64, usize)]| {
            for (path, seed, len) in entries {
                served.put(&format!("/tree/{path}"), bytes(*seed, *len));
            }
            served.put("/dataset.tar", tar_of(entries));
        };
        let spec = format!(
            "source:\n  http:\n    url: http://{}/dataset.tar\nsyncInterval: 1h\nsyncTimeout: 1h\n",
            server.addr
        );
        let unpack = [(sv_api::HTTP_UNPACK_ANNOTATION, "true")];
        let manifest = manifest(&fresh(work.path(), "http-manifest"), &spec, &unpack);
        let tree = format!("http://{}/tree/", server.addr);
        let archive = format!("http://{}/dataset.tar", server.addr);
        let mut change = |run: usize| {
            let mut current = base.clone();
            let change = changed(files, run);
            dataset::apply(&mut current, &change);
            publish(&current);
            current
        };
        publish(&base);
        let mut crawl = |dest: &Path, _full: bool| {
            measure(rclone().args([":http:", dest.to_str().expect("utf8"), NO_RANGES]).env("RCLONE_HTTP_URL", &tree))
        };
        row("HTTP", "rclone sync (http backend)", &manifest, None, &|p| p.to_path_buf(), &mut crawl, &mut change);
        publish(&base);
        // The same work as ours: the whole archive, downloaded and unpacked, every time.
        let mut unpack_archive =
            |dest: &Path, _full: bool| {
                measure(Command::new("bash").arg("-c").arg(format!(
                    "set -e -o pipefail; curl -sSf {archive} | tar -x -C {}",
                    dest.to_str().expect("utf8")
                )))
            };
        row("HTTP", "curl, piped to tar -x", &manifest, None, &|p| p.to_path_buf(), &mut unpack_archive, &mut change);
        drop(server);
    }

    if wanted("git") {
        let root = work.path().join("git");
        std::fs::create_dir_all(&root).expect("dir");
        let repo = Repo::new(&root, "bench");
        write_tree(&repo.work, &base);
        repo.commit("data", "main");
        let (server, _backend) = rt.block_on(git_http_server(&root));
        let url = format!("http://{}/bench.git", server.addr);
        let spec = format!("source:\n  git:\n    url: {url}\n    branch: main\nsyncInterval: 1h\nsyncTimeout: 1h\n");
        let manifest = manifest(&fresh(work.path(), "git-manifest"), &spec, &[]);
        let mut peer = |clone: &Path, full: bool| {
            if full {
                return measure(
                    Command::new("git").args(["clone", "-q", "--depth", "1", "--branch", "main", &url]).arg(clone),
                );
            }
            let fetch = measure(
                Command::new("git").arg("-C").arg(clone).args(["fetch", "-q", "--depth", "1", "origin", "main"]),
            );
            let reset = measure(Command::new("git").arg("-C").arg(clone).args(["reset", "-q", "--hard", "FETCH_HEAD"]));
            Measured { took: fetch.took + reset.took, peak_rss_kib: fetch.peak_rss_kib.max(reset.peak_rss_kib) }
        };
        let mut current = base.clone();
        let mut change = |run: usize| {
            let change = changed(files, run);
            write_tree(&repo.work, &change);
            repo.commit(&format!("change {run}"), "main");
            dataset::apply(&mut current, &change);
            current.clone()
        };
        row(
            "git",
            "git clone --depth 1 / fetch + reset",
            &manifest,
            None,
            &|p| p.join("clone"),
            &mut peer,
            &mut change,
        );
        drop(server);
    }

    report(&rows);
}

/// Median and spread of some durations, in seconds: `1.23 (1.10–1.40)`.
fn seconds(samples: &[Duration]) -> (f64, String) {
    let mut sorted: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(f64::total_cmp);
    let middle = median(samples.to_vec()).as_secs_f64();
    let spread = format!(
        "{middle:.2} ({:.2}–{:.2})",
        sorted.first().copied().unwrap_or(0.0),
        sorted.last().copied().unwrap_or(0.0)
    );
    (middle, spread)
}

fn report(rows: &[Row]) {
    println!();
    println!(
        "| source | peer | sync | ours (s) | peer (s) | peer + `sync -f` (s) | ours / peer | ours / (peer + sync) | peak RSS ours / peer (MiB) |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        for (which, ours, peers) in
            [("full", &row.ours.full, &row.peers.full), ("incremental", &row.ours.incremental, &row.peers.incremental)]
        {
            // Ours makes its revision durable itself; the `sync -f` after it finds nothing to do
            // and is left out.
            let (ours_s, ours_text) = seconds(&ours.iter().map(|s| s.sync.took).collect::<Vec<_>>());
            let (peer_s, peer_text) = seconds(&peers.iter().map(|s| s.sync.took).collect::<Vec<_>>());
            let (durable_s, durable_text) =
                seconds(&peers.iter().map(|s| s.sync.took + s.flush.took).collect::<Vec<_>>());
            let rss = |samples: &[Sample]| samples.iter().map(|s| s.sync.peak_rss_kib).max().unwrap_or(0) / 1024;
            println!(
                "| {} | {} | {which} | {ours_text} | {peer_text} | {durable_text} | {:.2} | {:.2} | {} / {} |",
                row.source,
                row.peer,
                ours_s / peer_s,
                ours_s / durable_s,
                rss(ours),
                rss(peers),
            );
        }
    }
    for row in rows.iter().filter(|r| !r.wrong.is_empty()) {
        println!();
        println!("{} / {}: the peer's copy was wrong after {} syncs:", row.source, row.peer, row.wrong.len());
        row.wrong.iter().for_each(|w| println!("  {w}"));
    }
}
