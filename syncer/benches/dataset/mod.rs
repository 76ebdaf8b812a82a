//! The benchmarks' data set: files of deterministic incompressible bytes, the ones that change
//! between runs, and how a run is timed.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const DIRS: usize = 20;
pub const SMALL: usize = 16 * 1024;
pub const CHANGED: usize = 10;

/// Deterministic incompressible bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The data set as (relative path, content seed, length).
pub fn dataset(files: usize, big_mib: usize) -> Vec<(String, u64, usize)> {
    let mut out: Vec<(String, u64, usize)> =
        (0..files).map(|i| (format!("d{:02}/f{i:04}.bin", i % DIRS), i as u64 + 1, SMALL)).collect();
    out.push(("big.bin".to_string(), 999_999, big_mib * 1024 * 1024));
    out
}

/// The files changed in run `run`: spread over the directories.
pub fn changed(files: usize, run: usize) -> Vec<(String, u64, usize)> {
    (0..CHANGED)
        .map(|k| {
            let i = (k * files / CHANGED + run) % files;
            (format!("d{:02}/f{i:04}.bin", i % DIRS), 1_000_000 + (run * 100 + k) as u64, SMALL)
        })
        .collect()
}

/// `current` with `changes` applied.
pub fn apply(current: &mut [(String, u64, usize)], changes: &[(String, u64, usize)]) {
    for c in changes {
        if let Some(entry) = current.iter_mut().find(|e| e.0 == c.0) {
            *entry = c.clone();
        }
    }
}

pub fn write_tree(root: &Path, entries: &[(String, u64, usize)]) {
    for (path, seed, len) in entries {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, bytes(*seed, *len)).expect("write");
    }
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A finished command: how long it took and its peak resident memory (sampled).
pub struct Measured {
    pub took: Duration,
    pub peak_rss_kib: u64,
}

/// Runs `cmd` to completion; panics with its output when it fails.
pub fn measure(cmd: &mut Command) -> Measured {
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawns");
    let pid = child.id() as libc::pid_t;
    // Read the output on threads so that a chatty child never blocks on a full pipe.
    let mut child = child;
    let out = child.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut v);
            v
        })
    });
    let err = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut v);
            v
        })
    });
    // The peak RSS is read from /proc while the child runs (every 10 ms; the high-water mark only
    // grows). `wait4`'s ru_maxrss would not do: a child started with vfork (as Command starts
    // them) carries the parent's high-water mark into it at exec.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = done.clone();
    let peak = std::thread::spawn(move || {
        let mut peak = 0u64;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(kib) = high_water_kib(pid) {
                peak = peak.max(kib);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let mut status = 0;
    // SAFETY: `pid` is our child, not yet waited for; `status` is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_rss_kib = peak.join().unwrap_or(0);
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    let out = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let err = err.and_then(|t| t.join().ok()).unwrap_or_default();
    let status = std::process::ExitStatus::from_raw(status);
    assert!(
        status.success(),
        "{cmd:?} failed ({status}): {}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    Measured { took, peak_rss_kib }
}

/// `VmHWM` of a running process, in KiB.
fn high_water_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
