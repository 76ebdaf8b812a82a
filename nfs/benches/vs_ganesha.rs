//! sv-nfs against nfs-ganesha (VFS FSAL), side by side, with the same libnfs-based client
//! (`benches/nfsbench.c`) on loopback inside a private network namespace (ganesha needs rpcbind).
//!
//! Run with `cargo bench -p sv-nfs --bench vs_ganesha` (root, Debian packages `nfs-ganesha`,
//! `nfs-ganesha-vfs`, `rpcbind`, `libnfs-dev`, `iproute2`, `gcc`). Prints one row per workload with
//! the median of `SV_BENCH_RUNS` runs (default 3) and the ratio ours/ganesha (above 1 = faster for
//! throughput rows, below 1 = faster for time rows). This is a benchmark, not a test: it asserts
//! nothing about speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NETNS: &str = "svbench";
const OUR_PORT: u16 = 12049;
const GIB: u64 = 1 << 30;

struct Cleanup {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("pkill").args(["-f", &format!("ganesha.nfsd -f {}", self.dir.display())]).status();
        let _ = Command::new("ip").args(["netns", "delete", NETNS]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn in_ns(program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", NETNS, program]);
    c
}

fn run_ok(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed");
}

/// Runs the client once; returns seconds.
fn client(bin: &Path, url: &str, test: &str, arg: &str) -> f64 {
    let out = in_ns(bin.to_str().expect("utf8")).args([url, test, arg]).output().expect("client runs");
    if !out.status.success() {
        panic!("nfsbench {test} against {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad output {text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if not_root() {
        println!("skipped: the benchmark needs root (network namespace, rpcbind)");
        return;
    }
    for tool in ["ganesha.nfsd", "rpcbind", "ip", "gcc"] {
        if !have(tool) {
            println!(
                "skipped: {tool} is not installed (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-dev iproute2 gcc)"
            );
            return;
        }
    }
    if !Path::new("/usr/include/nfsc/libnfs.h").exists() {
        println!("skipped: libnfs-dev is not installed");
        return;
    }
    let runs: usize = std::env::var("SV_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let bytes: u64 = std::env::var("SV_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(GIB);
    let dir = std::env::temp_dir().join(format!("sv-bench-{}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "delete", NETNS]).status();
    let mut cleanup = Cleanup { children: Vec::new(), dir: dir.clone() };
    let ganesha_dir = dir.join("ganesha");
    let our_dir = dir.join("ours");
    for d in [&ganesha_dir, &our_dir] {
        std::fs::create_dir_all(d.join("ten")).expect("dirs");
        for i in 0..10_000 {
            std::fs::write(d.join(format!("ten/entry-{i:05}")), b"").expect("entry");
        }
    }

    let bin = dir.join("nfsbench");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nfsbench.c");
    run_ok(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&source).arg("-lnfs"), "compiling the client");

    run_ok(Command::new("ip").args(["netns", "add", NETNS]), "ip netns add");
    run_ok(in_ns("ip").args(["link", "set", "lo", "up"]), "lo up");
    cleanup.children.push(in_ns("rpcbind").args(["-f", "-w"]).spawn().expect("rpcbind"));
    std::thread::sleep(Duration::from_millis(500));
    let conf = dir.join("ganesha.conf");
    std::fs::write(
        &conf,
        format!(
            "NFS_CORE_PARAM {{ Protocols = 3; NFS_Port = 2049; MNT_Port = 20048; Enable_NLM = false; Enable_RQUOTA = false; }}\n\
             NFS_KRB5 {{ Active_krb5 = false; }}\n\
             EXPORT {{ Export_Id = 1; Path = {}; Pseudo = /bench; Access_Type = RW; Squash = No_Root_Squash; \
             Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
             LOG {{ Default_Log_Level = WARN; }}\n",
            ganesha_dir.display()
        ),
    )
    .expect("config");
    cleanup.children.push(
        in_ns("ganesha.nfsd")
            .arg("-f")
            .arg(&conf)
            .args(["-F", "-N", "NIV_WARN", "-L"])
            .arg(dir.join("ganesha.log"))
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ganesha"),
    );
    cleanup.children.push(
        in_ns(env!("CARGO_BIN_EXE_sv-nfs"))
            .args(["serve", "--bind", "127.0.0.1", "--port", &OUR_PORT.to_string(), "--http-port", "18089", "--export"])
            .arg(&our_dir)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("sv-nfs"),
    );
    let ganesha_url = format!("nfs://127.0.0.1{}", ganesha_dir.display());
    let our_url = format!("nfs://127.0.0.1/?nfsport={OUR_PORT}&mountport={OUR_PORT}");
    // Wait until both answer (ganesha takes a few seconds to start).
    for url in [&ganesha_url, &our_url] {
        let mut ready = false;
        for _ in 0..60 {
            let ok = in_ns(bin.to_str().expect("utf8"))
                .args([url.as_str(), "list", "/"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(ready, "{url} did not come up");
    }

    let servers = [("ganesha", &ganesha_url), ("sv-nfs", &our_url)];
    let mut rows: Vec<(String, String, [f64; 2])> = Vec::new();
    // Listing first, while the servers' caches are cold.
    let cold = servers.map(|(_, url)| client(&bin, url, "list", "/ten"));
    rows.push(("10,000-entry listing, cold".into(), "ms".into(), cold.map(|s| s * 1000.0)));
    let warm = servers.map(|(_, url)| median((0..runs).map(|_| client(&bin, url, "list", "/ten")).collect()));
    rows.push(("10,000-entry listing, warm".into(), "ms".into(), warm.map(|s| s * 1000.0)));
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let write =
        servers.map(|(_, url)| median((0..runs).map(|_| client(&bin, url, "write", &bytes.to_string())).collect()));
    rows.push((format!("{} MiB sequential write", mib), "MiB/s".into(), write.map(|s| mib / s)));
    let read =
        servers.map(|(_, url)| median((0..runs).map(|_| client(&bin, url, "read", &bytes.to_string())).collect()));
    rows.push((format!("{} MiB sequential read", mib), "MiB/s".into(), read.map(|s| mib / s)));
    let create = servers.map(|(_, url)| client(&bin, url, "create", "2000"));
    rows.push(("2,000 x 4 KiB files created".into(), "files/s".into(), create.map(|s| 2000.0 / s)));
    let readback = servers.map(|(_, url)| median((0..runs).map(|_| client(&bin, url, "readback", "2000")).collect()));
    rows.push(("2,000 x 4 KiB files read back".into(), "files/s".into(), readback.map(|s| 2000.0 / s)));

    println!("\nsv-nfs vs nfs-ganesha (VFS), same libnfs client, loopback, median of {runs}\n");
    println!("| workload | unit | ganesha | sv-nfs | sv-nfs/ganesha | better |");
    println!("|---|---|---:|---:|---:|---|");
    for (name, unit, [g, o]) in rows {
        let ratio = o / g;
        let better = if unit == "ms" { ratio <= 1.0 } else { ratio >= 1.0 };
        println!("| {name} | {unit} | {g:.1} | {o:.1} | {ratio:.2} | {} |", if better { "sv-nfs" } else { "ganesha" });
    }
}

fn not_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}
