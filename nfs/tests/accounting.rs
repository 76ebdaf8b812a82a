//! Capacity accounting under concurrency, over real TCP: many clients extending one file at
//! once, and writes racing truncates, must leave the counted bytes equal to what is on disk.

use crate::common::{TestServer, create, lookup, write};
use nfs3_types::nfs3::{SETATTR3args, sattr3, sattrguard3, set_size3, stable_how};
use sv_nfs::fs::ExportOptions;

const CHUNK: usize = 64 * 1024;
const CLIENTS: usize = 6;
const ROUNDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_extending_writes_and_truncates_are_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ExportOptions { capacity: Some(1 << 30), ..ExportOptions::default() };
    let server = TestServer::start(dir.path(), options).await;
    let mut setup = server.client().await;
    let root = setup.root_nfs_fh3();
    create(&mut setup, &root, "shared").await.expect("create");

    // Every client extends the same file: chunk k*CLIENTS+i from client i, all at once.
    let mut writers = Vec::new();
    for i in 0..CLIENTS {
        let mut client = server.client().await;
        let root = root.clone();
        writers.push(tokio::spawn(async move {
            let file = lookup(&mut client, &root, "shared").await.expect("lookup");
            for k in 0..ROUNDS {
                let offset = ((k * CLIENTS + i) * CHUNK) as u64;
                write(&mut client, &file, offset, &[i as u8; CHUNK], stable_how::UNSTABLE).await.expect("write");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let on_disk = std::fs::metadata(dir.path().join("shared")).expect("meta").len();
    assert_eq!(on_disk, (CLIENTS * ROUNDS * CHUNK) as u64);
    assert_eq!(server.server.export().used_bytes(), on_disk, "each byte of growth counted once");

    // Writers racing a client that truncates the file again and again.
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut client = server.client().await;
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            let file = lookup(&mut client, &root, "shared").await.expect("lookup");
            for k in 0..ROUNDS {
                if i == 0 {
                    let size = ((ROUNDS - k) * CHUNK) as u64;
                    let args = SETATTR3args {
                        object: file.clone(),
                        new_attributes: sattr3 { size: set_size3::Some(size), ..Default::default() },
                        guard: sattrguard3::None,
                    };
                    client.setattr(&args).await.expect("rpc");
                } else {
                    let offset = ((k * CLIENTS + i) * CHUNK) as u64;
                    write(&mut client, &file, offset, &[1; CHUNK], stable_how::UNSTABLE).await.expect("write");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let on_disk = std::fs::metadata(dir.path().join("shared")).expect("meta").len();
    assert_eq!(server.server.export().used_bytes(), on_disk, "truncates and writes settle to the size on disk");
    // The export's own recount agrees.
    assert_eq!(server.server.export().rescan_usage().expect("rescan"), on_disk);
    server.stop().await;
}
