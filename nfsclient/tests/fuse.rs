//! `sv-nfs-mount` against the real `sv-nfs` on loopback: programs use the mount with ordinary
//! system calls, and what the server answers (a full volume, a restart that lost writes) reaches
//! them where it would on a kernel NFS mount: at `write`, `close` or `fsync`.
//!
//! FUSE needs `/dev/fuse` and the right to mount. Without them the tests say they were skipped;
//! with `SV_REQUIRE_FUSE` set (CI sets it where `/dev/fuse` exists) they fail instead.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use sv_nfs::fs::{Export, ExportOptions, Identity};
use sv_nfs::server::ServerThread;

const WRITER: &str = "/.sv-writer-0123456789abcdef0123456789abcdef";

/// `sv-nfs` on its own runtime, as its program runs it.
fn start_server(dir: &Path, options: ExportOptions, port: u16) -> ServerThread {
    ServerThread::start(Export::open(dir, options).expect("export opens"), port).expect("server starts")
}

fn writer_options(capacity: Option<u64>) -> ExportOptions {
    ExportOptions {
        capacity,
        identity: Identity { writer_path: Some(WRITER.to_string()), ..Identity::default() },
        ..ExportOptions::default()
    }
}

/// `sv-nfs-mount` as its own process, so that a test that goes wrong can kill it: the kernel
/// then fails the calls waiting on the mount instead of leaving the test hung in them. A
/// watchdog kills it after `DEADLINE` whatever happens.
struct MountProcess {
    child: std::process::Child,
    at: std::path::PathBuf,
    watchdog: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

const DEADLINE: Duration = Duration::from_secs(120);

impl MountProcess {
    /// Unmounts (SIGTERM) and waits for the program to finish.
    fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((cancel, dog)) = self.watchdog.take() {
            let _ = cancel.send(());
            let _ = dog.join();
        }
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(path) = std::ffi::CString::new(self.at.as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path; a lazy unmount of a mount this test made.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl Drop for MountProcess {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.stop();
        }
    }
}

fn is_mounted(at: &Path) -> bool {
    let wanted = at.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(wanted.as_ref())))
}

/// Mounts `addr`'s writer path at `at`, or says why FUSE cannot be used here (None).
fn try_mount(addr: SocketAddr, at: &Path) -> Option<MountProcess> {
    let required = std::env::var_os("SV_REQUIRE_FUSE").is_some();
    if !Path::new("/dev/fuse").exists() {
        assert!(!required, "SV_REQUIRE_FUSE is set but /dev/fuse is missing");
        eprintln!("skipped: /dev/fuse is missing");
        return None;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sv-nfs-mount"))
        .arg(format!("nfs://{addr}{WRITER}"))
        .arg(at)
        .args(["--threads", "4"])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("sv-nfs-mount starts");
    for _ in 0..200 {
        if is_mounted(at) {
            let pid = child.id() as libc::pid_t;
            let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
            let dog = std::thread::spawn(move || {
                if cancelled.recv_timeout(DEADLINE).is_err() {
                    eprintln!("watchdog: the test ran past {DEADLINE:?}; killing the mount");
                    // SAFETY: signalling the child this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            });
            return Some(MountProcess { child, at: at.to_path_buf(), watchdog: Some((cancel, dog)) });
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!required, "SV_REQUIRE_FUSE is set but sv-nfs-mount failed ({status})");
            eprintln!("skipped: FUSE cannot mount here (sv-nfs-mount exited with {status})");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("sv-nfs-mount did not mount within 10 s");
}

struct Fixture {
    _dirs: tempfile::TempDir,
    export: std::path::PathBuf,
    mnt: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dirs = tempfile::tempdir().expect("tempdir");
    let export = dirs.path().join("export");
    let mnt = dirs.path().join("mnt");
    std::fs::create_dir_all(&export).expect("export");
    std::fs::create_dir_all(&mnt).expect("mnt");
    Fixture { _dirs: dirs, export, mnt }
}

#[test]
fn files_links_renames_and_long_listings_work_through_the_mount() {
    let f = fixture();
    let server = start_server(&f.export, writer_options(Some(64 << 20)), 0);
    let Some(mounted) = try_mount(server.addr, &f.mnt) else { return server.stop() };
    let m = &f.mnt;

    std::fs::write(m.join("a.txt"), b"hello").expect("write");
    assert_eq!(std::fs::read(m.join("a.txt")).expect("read"), b"hello");
    assert_eq!(std::fs::read(f.export.join("a.txt")).expect("on the server"), b"hello");
    let mut file = std::fs::OpenOptions::new().append(true).open(m.join("a.txt")).expect("open");
    file.write_all(b", world").expect("append");
    drop(file);
    let file = std::fs::OpenOptions::new().write(true).open(m.join("a.txt")).expect("open");
    file.set_len(5).expect("truncate");
    drop(file);
    assert_eq!(std::fs::read_to_string(m.join("a.txt")).expect("read"), "hello");

    std::fs::create_dir(m.join("d")).expect("mkdir");
    std::fs::hard_link(m.join("a.txt"), m.join("d/b.txt")).expect("link");
    assert_eq!(std::fs::metadata(m.join("a.txt")).expect("stat").nlink(), 2);
    std::os::unix::fs::symlink("../a.txt", m.join("d/c")).expect("symlink");
    assert_eq!(std::fs::read_link(m.join("d/c")).expect("readlink"), Path::new("../a.txt"));
    assert_eq!(std::fs::read_to_string(m.join("d/c")).expect("through the link"), "hello");
    std::fs::rename(m.join("d/b.txt"), m.join("d/b2.txt")).expect("rename");
    assert!(f.export.join("d/b2.txt").exists() && !f.export.join("d/b.txt").exists());

    // More entries than one READDIRPLUS reply and one FUSE buffer hold.
    std::fs::create_dir(m.join("many")).expect("mkdir");
    for i in 0..1500 {
        std::fs::write(m.join(format!("many/entry-{i:05}")), b"").expect("create");
    }
    let mut names: Vec<String> = std::fs::read_dir(m.join("many"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 1500, "every entry listed once");
    assert_eq!(names.first().map(String::as_str), Some("entry-00000"));

    // Large data, read back at an offset.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(m.join("big"), &big).expect("write big");
    let mut file = std::fs::File::open(m.join("big")).expect("open");
    file.seek(SeekFrom::Start(4_000_000)).expect("seek");
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).expect("read");
    assert_eq!(tail, big[4_000_000..]);

    // statfs is the server's capacity.
    let vfs = rustix::fs::statvfs(m.as_path()).expect("statvfs");
    assert_eq!(vfs.f_blocks * vfs.f_frsize, 64 << 20);

    std::fs::remove_file(m.join("d/c")).expect("unlink");
    std::fs::remove_file(m.join("d/b2.txt")).expect("unlink");
    std::fs::remove_dir(m.join("d")).expect("rmdir");
    assert!(!f.export.join("d").exists());
    mounted.unmount();
    server.stop();
}

#[test]
fn a_full_volume_fails_the_write_or_the_close_and_nothing_passes_the_capacity() {
    let f = fixture();
    let server = start_server(&f.export, writer_options(Some(1 << 20)), 0);
    let Some(mounted) = try_mount(server.addr, &f.mnt) else { return server.stop() };
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(f.mnt.join("too-big"))?;
        file.write_all(&vec![1u8; 2 << 20])?;
        file.sync_all()
    })();
    let error = result.expect_err("2 MiB do not fit in 1 MiB");
    assert_eq!(error.raw_os_error(), Some(libc_enospc()), "ENOSPC, as a kernel NFS mount reports it: {error}");
    let on_server = std::fs::metadata(f.export.join("too-big")).map(|m| m.len()).unwrap_or(0);
    assert!(on_server <= 1 << 20, "the server holds {on_server} bytes");
    mounted.unmount();
    server.stop();
}

#[test]
fn writes_a_server_restart_may_have_lost_fail_the_close() {
    let f = fixture();
    let server = start_server(&f.export, writer_options(None), 0);
    let addr = server.addr;
    let Some(mounted) = try_mount(addr, &f.mnt) else { return server.stop() };
    let mut file = std::fs::File::create(f.mnt.join("unsynced")).expect("create");
    file.write_all(b"acknowledged but not committed").expect("write (UNSTABLE)");
    // The server restarts (a new write verifier) before the file is closed.
    server.stop();
    let server = start_server(&f.export, writer_options(None), addr.port());
    let closed = file.sync_all();
    let error = closed.expect_err("the COMMIT's verifier is not the write's: the data may be lost");
    assert_eq!(error.raw_os_error(), Some(5), "EIO: {error}");
    drop(file);
    // A file written after the restart is committed normally.
    std::fs::write(f.mnt.join("after"), b"fine").expect("write after the restart");
    mounted.unmount();
    server.stop();
}

fn libc_enospc() -> i32 {
    28
}
