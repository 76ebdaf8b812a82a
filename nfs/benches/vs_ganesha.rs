//! sv-nfs against nfs-ganesha (VFS FSAL), side by side, with the same libnfs-based client
//! (`benches/nfsbench.c`) on loopback inside a private network namespace (ganesha needs rpcbind).
//!
//! Run with `cargo bench -p sv-nfs --bench vs_ganesha` (root, Debian packages `nfs-ganesha`,
//! `nfs-ganesha-vfs`, `rpcbind`, `libnfs-dev`, `iproute2`, `gcc`). Large reads and writes and
//! 4 KiB file reads are measured with one request in flight, 16 in flight on one connection and
//! 4 connections of 4. Every row is the median of `SV_BENCH_RUNS` runs (default 3), with the
//! lowest and highest sample; the server that goes first alternates from run to run. The ratio
//! is ours/ganesha (above 1 = faster for throughput rows, below 1 = faster for time rows). This is
//! a benchmark, not a test: it asserts nothing about speed.

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
fn client(bin: &Path, url: &str, args: &[&str]) -> f64 {
    let out = in_ns(bin.to_str().expect("utf8")).arg(url).args(args).output().expect("client runs");
    if !out.status.success() {
        panic!("nfsbench {args:?} against {url}: {}", String::from_utf8_lossy(&out.stderr));
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
        for run in 0..runs {
            let ten = d.join(format!("ten-{run}"));
            std::fs::create_dir_all(&ten).expect("dirs");
            for i in 0..10_000 {
                std::fs::write(ten.join(format!("entry-{i:05}")), b"").expect("entry");
            }
        }
        // The files the pipelined small reads open.
        std::fs::create_dir_all(d.join("small")).expect("dirs");
        for i in 0..SMALL_FILES {
            std::fs::write(d.join(format!("small/f{i:06}")), [7u8; 4096]).expect("small file");
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
            // As ganesha's export: no squashing (the client is root).
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                &OUR_PORT.to_string(),
                "--http-port",
                "18089",
                "--squash",
                "none",
                "--export",
            ])
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

    let servers = [&ganesha_url, &our_url];
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let mut rows: Vec<Row> = Vec::new();
    // Each run lists a directory neither server has listed yet, so every cold sample is cold.
    rows.push(Row::time_ms(
        "10,000-entry listing, cold",
        alternating(runs, |run, server| client(&bin, servers[server], &["list", &format!("/ten-{run}")])),
    ));
    rows.push(Row::time_ms(
        "10,000-entry listing, warm",
        alternating(runs, |_, server| client(&bin, servers[server], &["list", "/ten-0"])),
    ));
    let bytes_arg = bytes.to_string();
    for (test, what) in [("pwrite", "write (1 MiB requests, then COMMIT)"), ("pread", "read (1 MiB requests)")] {
        for (conns, depth) in SHAPES {
            let name = format!("{mib} MiB {what}, {}", shape(conns, depth));
            let seconds = alternating(runs, |_, server| {
                client(&bin, servers[server], &[test, &conns.to_string(), &depth.to_string(), &bytes_arg])
            });
            rows.push(Row::rate(&name, "MiB/s", mib, seconds));
        }
    }
    // Every run creates into a directory of its own, so each sample creates new files.
    rows.push(Row::rate(
        &format!("{SMALL_FILES} x 4 KiB files created, one at a time"),
        "files/s",
        SMALL_FILES as f64,
        alternating(runs, |run, server| {
            client(&bin, servers[server], &["create", &SMALL_FILES.to_string(), &format!("/small-{run}")])
        }),
    ));
    for (conns, depth) in SHAPES {
        let seconds = alternating(runs, |_, server| {
            client(
                &bin,
                servers[server],
                &["preadback", &conns.to_string(), &depth.to_string(), &SMALL_FILES.to_string()],
            )
        });
        rows.push(Row::rate(
            &format!("{SMALL_FILES} x 4 KiB files read (open, read, close), {}", shape(conns, depth)),
            "files/s",
            SMALL_FILES as f64,
            seconds,
        ));
    }

    println!(
        "\nsv-nfs vs nfs-ganesha (VFS), same libnfs client, loopback; median of {runs} runs, the servers alternating\n"
    );
    println!("| workload | unit | ganesha | sv-nfs | sv-nfs/ganesha | spread (ganesha, sv-nfs) | better |");
    println!("|---|---|---:|---:|---:|---|---|");
    for row in rows {
        let [g, o] = row.values;
        let ratio = o / g;
        let better = if row.lower_is_better { ratio <= 1.0 } else { ratio >= 1.0 };
        println!(
            "| {} | {} | {g:.1} | {o:.1} | {ratio:.2} | {}, {} | {} |",
            row.name,
            row.unit,
            row.spreads[0],
            row.spreads[1],
            if better { "sv-nfs" } else { "ganesha" }
        );
    }
}

/// Connections and requests in flight on each: one at a time, 16 on one connection (as the Linux
/// client multiplexes the pods of a node over one TCP connection), and 4 connections of 4.
const SHAPES: [(u32, u32); 3] = [(1, 1), (1, 16), (4, 4)];
const SMALL_FILES: u64 = 2000;

fn shape(conns: u32, depth: u32) -> String {
    match (conns, depth) {
        (1, 1) => "1 in flight".to_string(),
        (1, d) => format!("{d} in flight on 1 connection"),
        (c, d) => format!("{c} connections x {d} in flight"),
    }
}

/// Runs `sample(run, server)` `runs` times for each server (0 = ganesha, 1 = sv-nfs), the one
/// that goes first alternating from run to run; returns each server's seconds.
fn alternating(runs: usize, mut sample: impl FnMut(usize, usize) -> f64) -> [Vec<f64>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for run in 0..runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for server in order {
            out[server].push(sample(run, server));
        }
    }
    out
}

struct Row {
    name: String,
    unit: &'static str,
    values: [f64; 2],
    /// Lowest to highest sample, in the row's unit.
    spreads: [String; 2],
    lower_is_better: bool,
}

impl Row {
    fn time_ms(name: &str, seconds: [Vec<f64>; 2]) -> Self {
        Self::from_samples(name, "ms", seconds.map(|v| v.into_iter().map(|s| s * 1000.0).collect()), true)
    }

    fn rate(name: &str, unit: &'static str, amount: f64, seconds: [Vec<f64>; 2]) -> Self {
        Self::from_samples(name, unit, seconds.map(|v| v.into_iter().map(|s| amount / s).collect()), false)
    }

    fn from_samples(name: &str, unit: &'static str, samples: [Vec<f64>; 2], lower_is_better: bool) -> Self {
        let spreads = samples.clone().map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            format!("{:.1}–{:.1}", v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0))
        });
        Self { name: name.to_string(), unit, values: samples.map(median), spreads, lower_is_better }
    }
}

fn not_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}
