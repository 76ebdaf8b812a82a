//! The syncer against its peers on the same data from the same local servers: `rclone sync` for
//! S3 (`s3s-fs`), SFTP (OpenSSH) and HTTP (an indexed file tree for rclone, a tar of the same tree
//! for us), and `git clone --depth 1` / `git fetch --depth 1` + `reset --hard` for git
//! (`git http-backend`).
//!
//! Data: 2,000 files of 16 KiB in 20 directories plus one 256 MiB file (incompressible). For each
//! source: a full sync into an empty directory, then an incremental sync after 10 files changed.
//! Prints the median of `SV_BENCH_RUNS` runs (default 3) and the ratio ours/peer.
//!
//! `cargo bench -p sv-syncer --bench vs_peers` (needs root for the SSH user, and rclone, git and
//! openssh-server: `apt-get install rclone git openssh-server`).

#[path = "../tests/common/mod.rs"]
mod common;
mod dataset;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Repo, S3_ACCESS, S3_SECRET, SSH_USER, Sshd, git_http_server, have, http_server, s3_server, shared_tempdir, syncer,
};
use dataset::{CHANGED, DIRS, bytes, changed, median, write_tree};
use sv_syncer::publish::Volume;

/// s3s-fs and our test HTTP server answer ranged GETs with the whole object, which breaks
/// rclone's multi-stream download of large files: one stream per file there (OpenSSH serves
/// ranges, so rclone keeps them for SFTP).
const NO_RANGES: &str = "--multi-thread-cutoff=1G";

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

fn run(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

#[derive(Default)]
struct Row {
    ours_full: Vec<Duration>,
    peer_full: Vec<Duration>,
    ours_incr: Vec<Duration>,
    peer_incr: Vec<Duration>,
}

/// Our sync of `spec_yaml` into `data`; returns its duration.
fn ours(
    rt: &tokio::runtime::Runtime,
    data: &Path,
    creds: Option<&Path>,
    spec_yaml: &str,
    annotations: &[(&str, &str)],
) -> Duration {
    let volume = Volume::open(data).expect("volume");
    let syncer = syncer(data, creds, None);
    let view = common::view_with(spec_yaml, annotations);
    let started = Instant::now();
    let outcome = rt.block_on(common::sync(&syncer, &volume, &view)).expect("our sync");
    let took = started.elapsed();
    assert!(outcome.published);
    took
}

/// Files and bytes under `dir` (following our top-level links), to check both sides copied it all.
fn census(dir: &Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").filter_map(Result::ok) {
            if entry.file_name() == ".sharedvolume" || entry.file_name() == ".git" {
                continue;
            }
            let meta = std::fs::metadata(entry.path()).expect("meta");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// Both sides hold the whole data set.
fn same(ours: &Path, peer: &Path, data: &[(String, u64, usize)]) {
    let expected = (data.len(), data.iter().map(|d| d.2 as u64).sum::<u64>());
    assert_eq!(census(ours), expected, "our copy is complete");
    assert_eq!(census(peer), expected, "the peer's copy is complete");
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
    if !have("rclone") || !have("git") {
        println!("skipped: the benchmark needs rclone and git (apt-get install rclone git openssh-server)");
        return;
    }
    let runs: usize = std::env::var("SV_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let files: usize = std::env::var("SV_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let big_mib: usize = std::env::var("SV_BENCH_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let only = std::env::var("SV_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let work = shared_tempdir();
    let base = dataset::dataset(files, big_mib);
    println!(
        "data: {files} files of 16 KiB in {DIRS} directories + one {big_mib} MiB file; {CHANGED} files change; median of {runs} runs"
    );
    let mut rows: Vec<(&str, &str, Row)> = Vec::new();

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
        let peer = |dest: &Path| {
            let mut c = rclone();
            // No --fast-list: s3s-fs reads its empty `delimiter=` as a delimiter and lists nothing.
            c.args([":s3:bench", dest.to_str().expect("utf8"), "--use-server-modtime", NO_RANGES])
                .env("RCLONE_S3_PROVIDER", "Other")
                .env("RCLONE_S3_ENDPOINT", &endpoint)
                .env("RCLONE_S3_ACCESS_KEY_ID", S3_ACCESS)
                .env("RCLONE_S3_SECRET_ACCESS_KEY", S3_SECRET)
                .env("RCLONE_S3_REGION", "us-east-1")
                .env("RCLONE_S3_FORCE_PATH_STYLE", "true");
            run(&mut c)
        };
        let mut row = Row::default();
        for r in 0..runs {
            let (o, p) = (fresh(work.path(), "ours"), fresh(work.path(), "peer"));
            row.ours_full.push(ours(&rt, &o, Some(&creds), &spec, &[]));
            row.peer_full.push(peer(&p));
            write_tree(&root.join("bench"), &changed(files, r));
            row.ours_incr.push(ours(&rt, &o, Some(&creds), &spec, &[]));
            row.peer_incr.push(peer(&p));
            same(&o, &p, &base);
        }
        rows.push(("S3", "rclone sync", row));
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
                let peer = |dest: &Path| {
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
                    run(&mut c)
                };
                let mut row = Row::default();
                for r in 0..runs {
                    let (o, p) = (fresh(work.path(), "ours"), fresh(work.path(), "peer"));
                    row.ours_full.push(ours(&rt, &o, Some(&creds), &spec, &insecure));
                    row.peer_full.push(peer(&p));
                    write_tree(&root, &changed(files, r));
                    row.ours_incr.push(ours(&rt, &o, Some(&creds), &spec, &insecure));
                    row.peer_incr.push(peer(&p));
                    same(&o, &p, &base);
                }
                rows.push(("SFTP", "rclone sync", row));
            }
        }
    }

    if wanted("http") {
        let (server, served) = rt.block_on(http_server(None));
        let mut current = base.clone();
        let publish = |entries: &[(String, u64, usize)]| {
            for (path, seed, len) in entries {
                served.put(&format!("/tree/{path}"), bytes(*seed, *len));
            }
        };
        publish(&current);
        served.put("/dataset.tar", tar_of(&current));
        let spec = format!(
            "source:\n  http:\n    url: http://{}/dataset.tar\nsyncInterval: 1h\nsyncTimeout: 1h\n",
            server.addr
        );
        let unpack = [(sv_api::HTTP_UNPACK_ANNOTATION, "true")];
        let url = format!("http://{}/tree/", server.addr);
        let peer = |dest: &Path| {
            run(rclone().args([":http:", dest.to_str().expect("utf8"), NO_RANGES]).env("RCLONE_HTTP_URL", &url))
        };
        let mut row = Row::default();
        for r in 0..runs {
            let (o, p) = (fresh(work.path(), "ours"), fresh(work.path(), "peer"));
            row.ours_full.push(ours(&rt, &o, None, &spec, &unpack));
            row.peer_full.push(peer(&p));
            let change = changed(files, r);
            dataset::apply(&mut current, &change);
            publish(&change);
            served.put("/dataset.tar", tar_of(&current));
            row.ours_incr.push(ours(&rt, &o, None, &spec, &unpack));
            row.peer_incr.push(peer(&p));
            same(&o, &p, &base);
        }
        rows.push(("HTTP", "rclone sync (http backend)", row));
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
        let mut row = Row::default();
        for r in 0..runs {
            let (o, p) = (fresh(work.path(), "ours"), fresh(work.path(), "peer"));
            row.ours_full.push(ours(&rt, &o, None, &spec, &[]));
            let clone_dir = p.join("clone");
            row.peer_full.push(run(Command::new("git")
                .args(["clone", "-q", "--depth", "1", "--branch", "main", &url])
                .arg(&clone_dir)));
            write_tree(&repo.work, &changed(files, r));
            repo.commit(&format!("change {r}"), "main");
            row.ours_incr.push(ours(&rt, &o, None, &spec, &[]));
            let started = Instant::now();
            run(Command::new("git").arg("-C").arg(&clone_dir).args(["fetch", "-q", "--depth", "1", "origin", "main"]));
            run(Command::new("git").arg("-C").arg(&clone_dir).args(["reset", "-q", "--hard", "FETCH_HEAD"]));
            row.peer_incr.push(started.elapsed());
            same(&o, &clone_dir, &base);
        }
        rows.push(("git", "git clone --depth 1 / fetch + reset", row));
        drop(server);
    }

    println!();
    println!("| source | peer | full: ours | full: peer | ratio | incremental: ours | incremental: peer | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for (source, peer, row) in rows {
        let (of, pf, oi, pi) =
            (median(row.ours_full), median(row.peer_full), median(row.ours_incr), median(row.peer_incr));
        println!(
            "| {source} | {peer} | {:.0} ms | {:.0} ms | {:.2} | {:.0} ms | {:.0} ms | {:.2} |",
            of.as_secs_f64() * 1e3,
            pf.as_secs_f64() * 1e3,
            of.as_secs_f64() / pf.as_secs_f64(),
            oi.as_secs_f64() * 1e3,
            pi.as_secs_f64() * 1e3,
            oi.as_secs_f64() / pi.as_secs_f64(),
        );
    }
}
