//! The syncer's own NFS client (`volume_fs::NfsFs`) against the real `sv-nfs` on loopback: what
//! it stages and publishes is what the server holds, and what the server refuses (a full volume,
//! a restart that may have lost writes, a link on the way) fails the sync where it would on a
//! kernel mount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sv_nfs::fs::{Export, ExportOptions, Identity};
use sv_nfs::server::ServerThread;
use sv_nfs_client::ClientConfig;
use sv_nfs_client::blocking::BlockingTcpConnector;
use sv_syncer::error::SyncError;
use sv_syncer::paths::RelPath;
use sv_syncer::publish::Volume;
use sv_syncer::tree::Stage;
use sv_syncer::volume_fs::{NfsFs, NfsFsConfig, VolumeFs};

const WRITER: &str = "/.sv-writer-0123456789abcdef0123456789abcdef";
/// Where the volume appears to the syncer; nothing exists there on this machine.
const MOUNT_POINT: &str = "/sv-test-volume";

/// `sv-nfs` on its own runtime, exporting `dir` as the operator asks for: consumers squashed, the
/// syncer's state protected.
fn start_server(dir: &Path, capacity: Option<u64>, port: u16) -> ServerThread {
    let identity = Identity {
        writer_path: Some(WRITER.to_string()),
        protected_dir: Some(".sharedvolume".to_string()),
        squash: sv_nfs::fs::Squash::Root,
        ..Identity::default()
    };
    let options = ExportOptions { capacity, identity, ..ExportOptions::default() };
    ServerThread::start(Export::open(dir, options).expect("export opens"), port).expect("server starts")
}

fn mount(server: &ServerThread, local: &Path, export: &str) -> std::io::Result<Arc<dyn VolumeFs>> {
    let mut client = ClientConfig::new(server.addr, export);
    client.retries = 2;
    client.retry_delay = Duration::ZERO;
    let config = NfsFsConfig {
        client,
        mount_point: PathBuf::from(MOUNT_POINT),
        local_dir: local.to_path_buf(),
        parallel_dirs: 4,
    };
    Ok(Arc::new(NfsFs::mount(BlockingTcpConnector, config)?))
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s).expect("path")
}

fn publish(volume: &Volume, revision: &str, files: &[(&str, &str)]) -> Result<(), SyncError> {
    let previous = volume.previous_for("test-source")?;
    let mut stage = volume.stage(previous, None)?;
    for (path, content) in files {
        let path = p(path);
        if !stage.reuse(&path, content)? {
            stage.write_file(&path, content.as_bytes(), false, content)?;
        }
    }
    volume.publish(stage.finish(revision, "test-source", BTreeMap::new())?)?;
    Ok(())
}

#[test]
fn what_the_syncer_publishes_through_nfs_is_what_the_server_holds() {
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let server = start_server(export.path(), None, 0);
    let fs = mount(&server, local.path(), WRITER).expect("mount");
    let volume = Volume::open_on(fs.clone(), Path::new(MOUNT_POINT)).expect("open");
    publish(&volume, "r1", &[("README.md", "one"), ("docs/a.txt", "a"), ("docs/b.txt", "b")]).expect("r1");
    publish(&volume, "r2", &[("README.md", "two"), ("docs/a.txt", "a"), ("docs/c.txt", "c")]).expect("r2");

    let read = |path: &str| std::fs::read_to_string(export.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(read("README.md"), "two");
    assert_eq!(read("docs/a.txt"), "a");
    assert_eq!(read("docs/c.txt"), "c");
    assert!(!export.path().join("docs/b.txt").exists());
    let (id, manifest) = volume.current().expect("current").expect("published");
    assert_eq!(manifest.revision, "r2");
    assert_eq!(
        std::fs::read_link(export.path().join(".sharedvolume/current")).expect("current"),
        Path::new("revisions").join(&id)
    );
    // The unchanged file was linked forward by the server (LINK), not written again.
    use std::os::unix::fs::MetadataExt;
    let revisions = export.path().join(".sharedvolume/revisions");
    let first = std::fs::read_dir(&revisions)
        .expect("revisions")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("1-") && !n.ends_with(".json"))
        .expect("revision 1 kept as the one before");
    let ino = |rev: &str| std::fs::metadata(revisions.join(rev).join("docs/a.txt")).expect("meta").ino();
    assert_eq!(ino(&first), ino(&id));
    // Nothing of the client's own went to the export or the local directory.
    assert_eq!(std::fs::read_dir(local.path()).expect("local").count(), 0);
    server.stop();
}

#[test]
fn a_consumers_mount_is_refused_and_a_full_server_stops_the_sync() {
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let server = start_server(export.path(), Some(64 << 10), 0);
    // The consumers' export refuses the syncer's state (it is read-only to them).
    let consumer = mount(&server, local.path(), "/").expect("a consumer mounts /");
    let error = Volume::open_on(consumer, Path::new(MOUNT_POINT)).err().expect("refused");
    assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{error}");

    let fs = mount(&server, local.path(), WRITER).expect("mount");
    let volume = Volume::open_on(fs.clone(), Path::new(MOUNT_POINT)).expect("open");
    assert_eq!(volume.free_bytes().expect("FSSTAT"), 64 << 10, "the server's capacity is the budget");
    let big = "x".repeat(100 << 10);
    let error = publish(&volume, "r1", &[("big", &big)]).expect_err("does not fit");
    assert!(matches!(error, SyncError::VolumeFull { free, .. } if free == 64 << 10), "{error:?}");

    // Without the syncer's own check, the server refuses the write itself: no space, not I/O.
    let dir = Path::new(MOUNT_POINT).join(".sharedvolume/staging-unchecked");
    fs.create_dir(&dir).expect("mkdir");
    let mut stage = Stage::on(fs.clone(), dir, None, None);
    let error = stage.write_file(&p("big"), big.as_bytes(), false, "v").expect_err("NOSPC");
    assert!(matches!(error, SyncError::NoSpace(_)), "{error:?}");
    assert!(error.to_string().contains("the volume is full"), "{error}");
    server.stop();
}

#[test]
fn writes_a_restarted_server_may_have_lost_fail_the_close() {
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let server = start_server(export.path(), None, 0);
    let port = server.addr.port();
    let fs = mount(&server, local.path(), WRITER).expect("mount");
    fs.create_dir_all(&Path::new(MOUNT_POINT).join(".sharedvolume")).expect("mkdir");
    let mut file = fs.create_new(&Path::new(MOUNT_POINT).join(".sharedvolume/f"), 0o644).expect("create");
    // More than one WRITE's worth: the first goes out UNSTABLE before the restart.
    file.write_all(&vec![7u8; (1 << 20) + 10]).expect("write");
    server.stop();
    let server = start_server(export.path(), None, port);
    let error = file.close().expect_err("the write verifier changed");
    assert!(error.to_string().contains("restarted"), "{error}");
    server.stop();
}

#[test]
fn links_on_the_way_are_never_followed_through_nfs() {
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("token"), "SECR").expect("write");
    let root = export.path().join(".sharedvolume/rev");
    std::fs::create_dir_all(root.join("d")).expect("mkdir");
    std::fs::write(root.join("d/f"), "data").expect("write");
    std::os::unix::fs::symlink(outside.path().join("token"), root.join("abs")).expect("symlink");
    std::os::unix::fs::symlink("d/f", root.join("rel")).expect("symlink");
    std::os::unix::fs::symlink("d", root.join("inner")).expect("symlink");
    let server = start_server(export.path(), None, 0);
    let fs = mount(&server, local.path(), WRITER).expect("mount");
    let rev = Path::new(MOUNT_POINT).join(".sharedvolume/rev");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut fs.open_regular(&rev, &p("d/f")).expect("a plain file opens"), &mut text)
        .expect("read");
    assert_eq!(text, "data");
    for bad in ["abs", "rel", "inner/f", "d"] {
        assert!(fs.open_regular(&rev, &p(bad)).is_err(), "{bad} must not open");
    }
    assert!(fs.open_regular(&rev, &p("nothing")).is_err());
    // Paths outside the mount point are not the volume's.
    let error = fs.read(Path::new("/etc/hostname")).expect_err("not on the volume");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    server.stop();
}

#[test]
fn many_calls_from_an_async_task_finish() {
    // The syncer calls its volume from async tasks as well as from blocking threads (an S3
    // listing links every unchanged file from the task). Hundreds of calls in one poll of a
    // tokio task must not run into tokio's cooperative budget.
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let server = start_server(export.path(), None, 0);
    let fs = mount(&server, local.path(), WRITER).expect("mount");
    let (done, finished) = std::sync::mpsc::channel();
    // A thread of its own, so that a call that never finishes fails the test instead of hanging it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let published = runtime.block_on(async move {
            let volume = Volume::open_on(fs, Path::new(MOUNT_POINT))?;
            let files: Vec<(String, String)> = (0..300).map(|i| (format!("d{}/f{i}", i % 3), format!("{i}"))).collect();
            let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
            publish(&volume, "r1", &files)?;
            publish(&volume, "r2", &files)
        });
        let _ = done.send(published.map_err(|e| e.to_string()));
    });
    let published = finished.recv_timeout(Duration::from_secs(120)).expect("the calls finish");
    published.expect("published twice");
    assert_eq!(std::fs::read_to_string(export.path().join("d2/f299")).expect("read"), "299");
    server.stop();
}
