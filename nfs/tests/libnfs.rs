//! A real third-party client: Debian's libnfs tools (`nfs-ls`, `nfs-cp`, `nfs-cat`), installed by
//! `ci/install-test-deps.sh`. Without them each test says it skipped.

use crate::common::TestServer;
use sv_nfs::fs::ExportOptions;
use tokio::process::Command;

fn have_libnfs() -> bool {
    let found = ["nfs-ls", "nfs-cp", "nfs-cat"].iter().all(|tool| {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
    });
    if !found {
        let message = "libnfs-utils (nfs-ls, nfs-cp, nfs-cat) is not installed; run ci/install-test-deps.sh";
        // CI installs every tool; there a missing one is a failure, not a skip.
        assert!(std::env::var_os("SV_REQUIRE_TEST_TOOLS").is_none(), "{message}");
        eprintln!("skipped: {message}");
    }
    found
}

/// `nfs://127.0.0.1//<path>` with NFS and MOUNT on the server's port (no portmapper needed). The
/// double slash tells libnfs that the export is `/` and the rest is the path inside it.
fn url(server: &TestServer, path: &str) -> String {
    format!("nfs://127.0.0.1//{path}?nfsport={0}&mountport={0}", server.port)
}

async fn run(program: &str, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(program).args(args).output().await.expect("tool runs");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
}

#[tokio::test]
async fn libnfs_copies_files_in_and_out() {
    if !have_libnfs() {
        return;
    }
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(export.path(), ExportOptions::default()).await;
    let data = pattern(5 * 1024 * 1024 + 123);
    let src = local.path().join("in.bin");
    std::fs::write(&src, &data).expect("local file");
    let (ok, _, err) = run("nfs-cp", &[src.to_str().expect("utf8"), &url(&server, "in.bin")]).await;
    assert!(ok, "nfs-cp in: {err}");
    assert!(std::fs::read(export.path().join("in.bin")).expect("on the server") == data);

    std::fs::create_dir(export.path().join("sub")).expect("dir");
    std::fs::write(export.path().join("sub/out.bin"), &data[..777_777]).expect("server file");
    let dst = local.path().join("out.bin");
    let (ok, _, err) = run("nfs-cp", &[&url(&server, "sub/out.bin"), dst.to_str().expect("utf8")]).await;
    assert!(ok, "nfs-cp out: {err}");
    assert!(std::fs::read(&dst).expect("copied") == data[..777_777]);

    std::fs::write(export.path().join("note.txt"), b"hello from sv-nfs\n").expect("note");
    let (ok, out, err) = run("nfs-cat", &[&url(&server, "note.txt")]).await;
    assert!(ok, "nfs-cat: {err}");
    assert_eq!(out, b"hello from sv-nfs\n");
    server.stop().await;
}

#[tokio::test]
async fn libnfs_lists_large_and_nested_directories() {
    if !have_libnfs() {
        return;
    }
    let export = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(export.path().join("many")).expect("dir");
    for i in 0..3000 {
        std::fs::write(export.path().join(format!("many/entry-{i:04}")), b"").expect("file");
    }
    std::fs::create_dir_all(export.path().join("a/b/c")).expect("dirs");
    std::fs::write(export.path().join("a/b/c/deep.txt"), b"deep").expect("file");
    let server = TestServer::start(export.path(), ExportOptions::default()).await;
    let (ok, out, err) = run("nfs-ls", &[&url(&server, "many")]).await;
    assert!(ok, "nfs-ls: {err}");
    let listing = String::from_utf8_lossy(&out);
    let entries = listing.lines().filter(|l| l.contains("entry-")).count();
    assert_eq!(entries, 3000, "every entry listed once");
    let (ok, out, err) = run("nfs-ls", &["-R", &url(&server, "")]).await;
    assert!(ok, "nfs-ls -R: {err}");
    let listing = String::from_utf8_lossy(&out);
    assert!(listing.contains("a/b/c/deep.txt"), "{listing}");
    assert!(!listing.contains(".sv-nfs"), "the server's state stays hidden");
    server.stop().await;
}

#[tokio::test]
async fn libnfs_cannot_write_to_a_read_only_export() {
    if !have_libnfs() {
        return;
    }
    let export = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(export.path(), ExportOptions { read_only: true, ..Default::default() }).await;
    let src = local.path().join("x");
    std::fs::write(&src, b"x").expect("file");
    let (ok, _, _) = run("nfs-cp", &[src.to_str().expect("utf8"), &url(&server, "x")]).await;
    assert!(!ok, "the copy must fail");
    assert!(!export.path().join("x").exists());
    server.stop().await;
}
