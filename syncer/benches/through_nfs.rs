//! The syncer writing through `sv-nfs`, against rclone writing through nfs-ganesha: what a sync
//! costs when the volume is an NFS mount, as it is in a cluster.
//!
//! Both sides sync the same S3 bucket (`s3s-fs` on loopback) into an NFS export mounted with the
//! same client, `sv-nfs-mount` (FUSE; this machine has no kernel NFS client): `sv-syncer once`
//! into `sv-nfs` through the writer's mount, and `rclone sync` into nfs-ganesha (VFS FSAL). A
//! third side runs the syncer into `sv-nfs` with `--scratch-prefix ""`, which syncs the
//! directory of every namespace change at once as NFSv3 asks (the behaviour before scratch
//! trees): the difference is what linking unchanged files forward costs. A fourth side runs
//! `sv-syncer once --nfs`: the syncer speaks NFSv3 itself (its file-system seam), without a mount.
//!
//! Each run starts every server on a fresh export, makes a full sync, changes 10 files in the
//! bucket and makes an incremental sync; the side that goes first rotates from run to run. Every
//! file on every mount is then compared byte for byte with the bucket. Prints the median and the
//! spread of `SV_BENCH_RUNS` runs (default 5), peak RSS of the syncing process, and the ratio to
//! rclone (below 1 is faster). Both sides commit each file when they close it (the FUSE client
//! sends COMMIT on close), so their durability is the same.
//!
//! `cargo bench -p sv-syncer --bench through_nfs` (root, /dev/fuse, and the Debian packages
//! `nfs-ganesha nfs-ganesha-vfs rpcbind rclone iproute2`). It runs itself again inside a private
//! network namespace, where ganesha's rpcbind does not meet the host's.

#[path = "../tests/common/mod.rs"]
mod common;
mod dataset;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{S3_ACCESS, S3_SECRET, have, s3_server};
use dataset::{Measured, bytes, changed, measure, median, write_tree};
use sv_nfs_client::ClientConfig;
use sv_nfs_client::fuse::{MountConfig, Mounted, mount};
use tokio_util::sync::CancellationToken;

const NETNS: &str = "svsyncnfs";
const INSIDE: &str = "SV_BENCH_INSIDE_NETNS";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const GANESHA_NFS_PORT: u16 = 2049;
const GANESHA_MOUNT_PORT: u16 = 20048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Rclone,
    Ours,
    OursPerChangeSync,
    OursOwnClient,
}

impl Side {
    const ALL: [Side; 4] = [Side::Rclone, Side::Ours, Side::OursPerChangeSync, Side::OursOwnClient];

    fn name(self) -> &'static str {
        match self {
            Side::Rclone => "rclone sync → nfs-ganesha",
            Side::Ours => "sv-syncer → sv-nfs",
            Side::OursPerChangeSync => "sv-syncer → sv-nfs, a directory sync per change",
            Side::OursOwnClient => "sv-syncer speaking NFS itself (`--nfs`) → sv-nfs",
        }
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the benchmark needs root (network namespace, rpcbind, FUSE)");
        return;
    }
    for tool in ["ganesha.nfsd", "rpcbind", "ip", "rclone"] {
        if !have(tool) {
            println!(
                "skipped: {tool} is not installed (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind rclone iproute2)"
            );
            return;
        }
    }
    if !Path::new("/dev/fuse").exists() {
        println!("skipped: /dev/fuse is missing (FUSE mounts stand in for the kernel NFS client)");
        return;
    }
    if std::env::var_os(INSIDE).is_none() {
        std::process::exit(in_namespace());
    }
    inside();
}

/// Runs this benchmark again inside a fresh network namespace; returns its exit code.
fn in_namespace() -> i32 {
    let _ = Command::new("ip").args(["netns", "delete", NETNS]).stderr(Stdio::null()).status();
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !ok(Command::new("ip").args(["netns", "add", NETNS]))
        || !ok(Command::new("ip").args(["netns", "exec", NETNS, "ip", "link", "set", "lo", "up"]))
    {
        println!("skipped: cannot make a network namespace here");
        return 0;
    }
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("ip")
        .args(["netns", "exec", NETNS])
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .status();
    let _ = Command::new("ip").args(["netns", "delete", NETNS]).status();
    status.ok().and_then(|s| s.code()).unwrap_or(1)
}

/// A server and its mount.
struct Running {
    mountpoint: PathBuf,
    mounted: Option<Mounted>,
    server: Server,
    /// The server's NFS address (for a syncer that speaks NFS itself).
    addr: std::net::SocketAddr,
}

enum Server {
    Ganesha(Child),
    SvNfs { shutdown: CancellationToken, thread: Option<std::thread::JoinHandle<()>> },
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount();
        }
        match &mut self.server {
            Server::Ganesha(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Server::SvNfs { shutdown, thread } => {
                shutdown.cancel();
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Mounts an export, trying for a while (a server that just started may not answer yet).
fn mount_when_up(client: ClientConfig, mountpoint: &Path) -> Mounted {
    std::fs::create_dir_all(mountpoint).expect("mountpoint");
    let mut last = String::new();
    for _ in 0..120 {
        let mut config = MountConfig::new(client.clone());
        config.client.retries = 0;
        match mount(config, mountpoint) {
            Ok(m) => return m,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("mounting {} failed: {last}", client.path);
}

fn start_ganesha(dir: &Path) -> Running {
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export");
    let conf = dir.join("ganesha.conf");
    std::fs::write(
        &conf,
        format!(
            "NFS_CORE_PARAM {{ Protocols = 3; NFS_Port = {GANESHA_NFS_PORT}; MNT_Port = {GANESHA_MOUNT_PORT}; \
             Enable_NLM = false; Enable_RQUOTA = false; }}\n\
             NFS_KRB5 {{ Active_krb5 = false; }}\n\
             EXPORT {{ Export_Id = 1; Path = {}; Pseudo = /bench; Access_Type = RW; Squash = No_Root_Squash; \
             Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
             LOG {{ Default_Log_Level = WARN; }}\n",
            export.display()
        ),
    )
    .expect("config");
    let child = Command::new("ganesha.nfsd")
        .arg("-f")
        .arg(&conf)
        .args(["-F", "-N", "NIV_WARN", "-L"])
        .arg(dir.join("ganesha.log"))
        .arg("-p")
        .arg(dir.join("ganesha.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ganesha starts");
    let addr = ([127, 0, 0, 1], GANESHA_NFS_PORT).into();
    let mut running = Running { mountpoint: dir.join("mnt"), mounted: None, server: Server::Ganesha(child), addr };
    let mut client = ClientConfig::new(([127, 0, 0, 1], GANESHA_NFS_PORT).into(), export.display().to_string());
    client.mount_port = Some(GANESHA_MOUNT_PORT);
    running.mounted = Some(mount_when_up(client, &running.mountpoint));
    running
}

/// `sv-nfs serve` through its own entry point, on its own runtime as its `main` runs it.
fn start_sv_nfs(dir: &Path, scratch_prefix: &str) -> Running {
    use sv_nfs::program::{Cli, Command as NfsCommand, Host};
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export");
    let token_file = dir.join("writer-token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let nfs = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = nfs.local_addr().expect("addr").port();
    let args = [
        "sv-nfs".to_string(),
        "serve".to_string(),
        format!("--export={}", export.display()),
        format!("--port={port}"),
        format!("--writer-token-file={}", token_file.display()),
        format!("--scratch-prefix={scratch_prefix}"),
    ];
    let NfsCommand::Serve(args) = <Cli as clap::Parser>::try_parse_from(args).expect("sv-nfs arguments").command;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            nfs.set_nonblocking(true).expect("nonblocking");
            http.set_nonblocking(true).expect("nonblocking");
            let host = Host {
                nfs: tokio::net::TcpListener::from_std(nfs).expect("listener"),
                http: tokio::net::TcpListener::from_std(http).expect("listener"),
                probe: sv_nfs::health::TcpConnector(([127, 0, 0, 1], port).into()),
                write_verifier: sv_nfs::server::random_write_verifier().expect("verifier"),
                execution: sv_nfs::server::Execution::BlockingPool,
                serving: None,
                shutdown: stop,
            };
            if let Err(e) = sv_nfs::program::serve(args, host).await {
                eprintln!("sv-nfs stopped: {e}");
            }
        });
    });
    let mut running = Running {
        mountpoint: dir.join("mnt"),
        mounted: None,
        server: Server::SvNfs { shutdown, thread: Some(thread) },
        addr: ([127, 0, 0, 1], port).into(),
    };
    let client = ClientConfig::new(([127, 0, 0, 1], port).into(), format!("/.sv-writer-{TOKEN}"));
    running.mounted = Some(mount_when_up(client, &running.mountpoint));
    running
}

fn start(side: Side, dir: &Path) -> Running {
    match side {
        Side::Rclone => start_ganesha(dir),
        Side::Ours | Side::OursOwnClient => start_sv_nfs(dir, "staging-"),
        Side::OursPerChangeSync => start_sv_nfs(dir, ""),
    }
}

/// Every file of `expected` is on the mount with the right bytes.
fn check(mountpoint: &Path, expected: &[(String, u64, usize)], side: Side) {
    for (path, seed, len) in expected {
        let found = std::fs::read(mountpoint.join(path)).unwrap_or_else(|e| panic!("{side:?}: {path}: {e}"));
        assert!(found == bytes(*seed, *len), "{side:?}: {path} differs from the source");
    }
}

#[derive(Default)]
struct Samples {
    full: Vec<Measured>,
    incremental: Vec<Measured>,
}

fn inside() {
    let runs: usize = std::env::var("SV_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let files: usize = std::env::var("SV_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let big_mib: usize = std::env::var("SV_BENCH_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let work = tempfile::tempdir().expect("tempdir");
    let mut rpcbind = Command::new("rpcbind").args(["-f", "-w"]).spawn().expect("rpcbind");
    let up = (0..100).any(|_| {
        let ok = std::net::TcpStream::connect(("127.0.0.1", 111)).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(up, "rpcbind did not come up");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut current = dataset::dataset(files, big_mib);
    let bucket = work.path().join("s3");
    write_tree(&bucket.join("bench"), &current);
    let server = rt.block_on(s3_server(&bucket));
    let endpoint = format!("http://{}", server.addr);
    let creds = work.path().join("creds");
    std::fs::create_dir_all(&creds).expect("creds");
    std::fs::write(creds.join("access-key"), S3_ACCESS).expect("creds");
    std::fs::write(creds.join("secret-key"), S3_SECRET).expect("creds");
    let spec = work.path().join("volume.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: sv.sharedvolume.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: bench\n  namespace: default\n\
             spec:\n  mountPath: /data\n  storageClassName: standard\n  storage:\n    capacity: 10Gi\n\
             \x20 syncInterval: 1h\n  syncTimeout: 1h\n  source:\n    s3:\n      endpointUrl: {endpoint}\n\
             \x20     bucketName: bench\n      region: us-east-1\n"
        ),
    )
    .expect("spec");
    let sync = |side: Side, running: &Running| -> Measured {
        let mountpoint = running.mountpoint.as_path();
        match side {
            Side::Rclone => measure(
                Command::new("rclone")
                    .args(["sync", "--config", "/dev/null", "-q", ":s3:bench"])
                    .arg(mountpoint)
                    // s3s-fs answers a ranged GET with the whole object: one stream per file.
                    .args(["--use-server-modtime", "--multi-thread-cutoff=1G"])
                    .env_remove("AWS_CA_BUNDLE")
                    .env("RCLONE_S3_PROVIDER", "Other")
                    .env("RCLONE_S3_ENDPOINT", &endpoint)
                    .env("RCLONE_S3_ACCESS_KEY_ID", S3_ACCESS)
                    .env("RCLONE_S3_SECRET_ACCESS_KEY", S3_SECRET)
                    .env("RCLONE_S3_REGION", "us-east-1")
                    .env("RCLONE_S3_FORCE_PATH_STYLE", "true"),
            ),
            Side::Ours | Side::OursPerChangeSync => measure(
                Command::new(env!("CARGO_BIN_EXE_sv-syncer"))
                    .args(["once", "--spec"])
                    .arg(&spec)
                    .arg("--data-dir")
                    .arg(mountpoint)
                    .arg("--credentials-dir")
                    .arg(&creds)
                    .env("RUST_LOG", "warn"),
            ),
            Side::OursOwnClient => measure(
                Command::new(env!("CARGO_BIN_EXE_sv-syncer"))
                    .args(["once", "--spec"])
                    .arg(&spec)
                    .args(["--data-dir", "/volume", "--nfs"])
                    .arg(running.addr.to_string())
                    .arg(format!("--nfs-export=/.sv-writer-{TOKEN}"))
                    .arg("--nfs-local-dir")
                    .arg(work.path().join("syncer-local"))
                    .arg("--credentials-dir")
                    .arg(&creds)
                    .env("RUST_LOG", "warn"),
            ),
        }
    };

    println!(
        "data: {files} files of 16 KiB in {} directories + one {big_mib} MiB file from S3; {} files change; {runs} runs",
        dataset::DIRS,
        dataset::CHANGED
    );
    let mut samples: Vec<Samples> = Side::ALL.iter().map(|_| Samples::default()).collect();
    for run in 0..runs {
        let mut order = Side::ALL.to_vec();
        order.rotate_left(run % Side::ALL.len());
        let run_dir = work.path().join(format!("run-{run}"));
        let running: Vec<(Side, Running)> =
            order.iter().map(|&side| (side, start(side, &run_dir.join(format!("{side:?}"))))).collect();
        for (side, r) in &running {
            samples[Side::ALL.iter().position(|s| s == side).unwrap_or(0)].full.push(sync(*side, r));
        }
        let change = changed(files, run);
        write_tree(&bucket.join("bench"), &change);
        dataset::apply(&mut current, &change);
        for (side, r) in &running {
            samples[Side::ALL.iter().position(|s| s == side).unwrap_or(0)].incremental.push(sync(*side, r));
        }
        for (side, r) in &running {
            check(&r.mountpoint, &current, *side);
        }
        drop(running);
        println!("run {} of {runs} done", run + 1);
    }
    drop(server);
    let _ = rpcbind.kill();
    let _ = rpcbind.wait();

    let seconds = |m: &[Measured]| median(m.iter().map(|m| m.took).collect()).as_secs_f64();
    let spread = |m: &[Measured]| {
        let mut v: Vec<f64> = m.iter().map(|m| m.took.as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        format!("{:.2}–{:.2}", v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0))
    };
    let rss = |m: &[Measured]| {
        let mut v: Vec<u64> = m.iter().map(|m| m.peak_rss_kib).collect();
        v.sort_unstable();
        v[v.len() / 2] / 1024
    };
    let peer_full = seconds(&samples[0].full);
    let peer_incremental = seconds(&samples[0].incremental);
    println!();
    println!(
        "| side | full sync (s) | spread | ratio to rclone | incremental (s) | spread | ratio to rclone | peak RSS (MiB) |"
    );
    println!("|---|---:|---|---:|---:|---|---:|---:|");
    for (side, s) in Side::ALL.iter().zip(&samples) {
        println!(
            "| {} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} | {} |",
            side.name(),
            seconds(&s.full),
            spread(&s.full),
            seconds(&s.full) / peer_full,
            seconds(&s.incremental),
            spread(&s.incremental),
            seconds(&s.incremental) / peer_incremental,
            rss(&s.full).max(rss(&s.incremental)),
        );
    }
}
