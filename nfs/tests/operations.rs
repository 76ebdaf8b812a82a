//! The server through `nfs3_client`, one NFS behaviour per test.

use std::collections::BTreeSet;

use crate::common::*;
use nfs3_types::nfs3::{
    ACCESS3_MODIFY, ACCESS3_READ, ACCESS3args, COMMIT3args, CREATE3args, FSSTAT3args, LINK3args, Nfs3Option,
    Nfs3Result, READ3args, READDIR3args, READDIRPLUS3args, READLINK3args, REMOVE3args, RENAME3args, RMDIR3args,
    SETATTR3args, SYMLINK3args, cookieverf3, createhow3, createverf3, ftype3, nfs_fh3, nfspath3, nfsstat3, sattr3,
    sattrguard3, set_size3, stable_how, symlinkdata3,
};
use nfs3_types::xdr_codec::Opaque;
use sv_nfs::fs::ExportOptions;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[tokio::test]
async fn files_are_created_written_read_renamed_and_removed() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "a.txt").await.expect("create");
    write(&mut c, &fh, 0, b"hello ", stable_how::FILE_SYNC).await.expect("write");
    write(&mut c, &fh, 6, b"world", stable_how::UNSTABLE).await.expect("write");
    assert_eq!(read_all(&mut c, &fh).await, Ok(b"hello world".to_vec()));
    assert_eq!(std::fs::read(dir.path().join("a.txt")).expect("on disk"), b"hello world");
    assert_eq!(getattr(&mut c, &fh).await.expect("attr").size, 11);

    let truncate = SETATTR3args {
        object: fh.clone(),
        new_attributes: sattr3 { size: set_size3::Some(5), ..Default::default() },
        guard: sattrguard3::None,
    };
    assert_eq!(status(&c.setattr(&truncate).await.expect("rpc")), nfsstat3::NFS3_OK);
    assert_eq!(read_all(&mut c, &fh).await, Ok(b"hello".to_vec()));

    let rename = RENAME3args { from: dirop(&root, "a.txt"), to: dirop(&root, "b.txt") };
    assert_eq!(status(&c.rename(&rename).await.expect("rpc")), nfsstat3::NFS3_OK);
    assert_eq!(lookup(&mut c, &root, "a.txt").await, Err(nfsstat3::NFS3ERR_NOENT));
    // The handle names the file, not the path: it still works after the rename.
    assert_eq!(read_all(&mut c, &fh).await, Ok(b"hello".to_vec()));

    let remove = REMOVE3args { object: dirop(&root, "b.txt") };
    assert_eq!(status(&c.remove(&remove).await.expect("rpc")), nfsstat3::NFS3_OK);
    assert_eq!(getattr(&mut c, &fh).await.err(), Some(nfsstat3::NFS3ERR_STALE));
    assert_eq!(read_all(&mut c, &fh).await, Err(nfsstat3::NFS3ERR_STALE));
    server.stop().await;
}

#[tokio::test]
async fn hard_links_share_data() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "orig").await.expect("create");
    write(&mut c, &fh, 0, b"shared", stable_how::FILE_SYNC).await.expect("write");
    let link = LINK3args { file: fh.clone(), link: dirop(&root, "alias") };
    assert_eq!(status(&c.link(&link).await.expect("rpc")), nfsstat3::NFS3_OK);
    let alias = lookup(&mut c, &root, "alias").await.expect("alias");
    assert_eq!(read_all(&mut c, &alias).await, Ok(b"shared".to_vec()));
    assert_eq!(getattr(&mut c, &fh).await.expect("attr").nlink, 2);
    server.stop().await;
}

async fn list(c: &mut Client, dir: &nfs_fh3, plus: bool, maxcount: u32) -> Vec<String> {
    let mut names = Vec::new();
    let mut cookie = 0;
    loop {
        let (entries, eof) = if plus {
            let args = READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf: cookieverf3([0; 8]),
                dircount: maxcount,
                maxcount,
            };
            match c.readdirplus(&args).await.expect("rpc") {
                Nfs3Result::Ok(ok) => {
                    let entries: Vec<(String, u64)> = ok
                        .reply
                        .entries
                        .0
                        .iter()
                        .map(|e| {
                            assert!(e.name_handle.is_some(), "READDIRPLUS gives handles");
                            (String::from_utf8_lossy(&e.name.0).into_owned(), e.cookie)
                        })
                        .collect();
                    (entries, ok.reply.eof)
                }
                Nfs3Result::Err((s, _)) => panic!("readdirplus: {s:?}"),
            }
        } else {
            let args = READDIR3args { dir: dir.clone(), cookie, cookieverf: cookieverf3([0; 8]), count: maxcount };
            match c.readdir(&args).await.expect("rpc") {
                Nfs3Result::Ok(ok) => (
                    ok.reply
                        .entries
                        .0
                        .iter()
                        .map(|e| (String::from_utf8_lossy(&e.name.0).into_owned(), e.cookie))
                        .collect(),
                    ok.reply.eof,
                ),
                Nfs3Result::Err((s, _)) => panic!("readdir: {s:?}"),
            }
        };
        assert!(!entries.is_empty() || eof, "a page without entries must be the last");
        for (name, next) in entries {
            names.push(name);
            cookie = next;
        }
        if eof {
            return names;
        }
    }
}

#[tokio::test]
async fn long_listings_page_without_losing_entries() {
    let dir = tmp();
    for i in 0..2500 {
        std::fs::write(dir.path().join(format!("file-{i:05}-with-a-longish-name")), b"x").expect("file");
    }
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let expected: BTreeSet<String> = (0..2500).map(|i| format!("file-{i:05}-with-a-longish-name")).collect();
    for (plus, maxcount) in [(false, 4096), (true, 4096), (true, 65536), (false, 1024)] {
        let names = list(&mut c, &root, plus, maxcount).await;
        let files: Vec<&String> = names.iter().filter(|n| n.starts_with("file-")).collect();
        assert_eq!(files.len(), 2500, "plus={plus} maxcount={maxcount}: every entry exactly once");
        assert_eq!(files.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
        assert!(!names.iter().any(|n| n == ".sv-nfs"), "the server's state stays hidden");
    }
    let tiny = READDIR3args { dir: root.clone(), cookie: 0, cookieverf: cookieverf3([0; 8]), count: 50 };
    assert_eq!(status(&c.readdir(&tiny).await.expect("rpc")), nfsstat3::NFS3ERR_TOOSMALL);
    server.stop().await;
}

#[tokio::test]
async fn directories_nest_and_must_be_empty_to_remove() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let a = mkdir(&mut c, &root, "a").await.expect("mkdir");
    let b = mkdir(&mut c, &a, "b").await.expect("mkdir");
    create(&mut c, &b, "f").await.expect("create");
    assert_eq!(mkdir(&mut c, &root, "a").await, Err(nfsstat3::NFS3ERR_EXIST));
    assert_eq!(lookup(&mut c, &b, "..").await, Ok(a.clone()));
    let rmdir = RMDIR3args { object: dirop(&a, "b") };
    assert_eq!(status(&c.rmdir(&rmdir).await.expect("rpc")), nfsstat3::NFS3ERR_NOTEMPTY);
    let remove_dir = REMOVE3args { object: dirop(&root, "a") };
    assert_eq!(status(&c.remove(&remove_dir).await.expect("rpc")), nfsstat3::NFS3ERR_ISDIR);
    let rm_file = REMOVE3args { object: dirop(&b, "f") };
    assert_eq!(status(&c.remove(&rm_file).await.expect("rpc")), nfsstat3::NFS3_OK);
    assert_eq!(status(&c.rmdir(&rmdir).await.expect("rpc")), nfsstat3::NFS3_OK);
    server.stop().await;
}

#[tokio::test]
async fn symlinks_are_stored_but_never_followed_by_the_server() {
    let outside = tmp();
    std::fs::write(outside.path().join("secret"), b"outside the export").expect("secret");
    let dir = tmp();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("secret-link")).expect("symlink");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();

    let escape = lookup(&mut c, &root, "escape").await.expect("the link itself");
    assert_eq!(getattr(&mut c, &escape).await.expect("attr").type_, ftype3::NF3LNK);
    assert_eq!(lookup(&mut c, &escape, "secret").await, Err(nfsstat3::NFS3ERR_NOTDIR));
    let link = lookup(&mut c, &root, "secret-link").await.expect("link");
    assert_eq!(read_all(&mut c, &link).await, Err(nfsstat3::NFS3ERR_INVAL));
    let text = c.readlink(&READLINK3args { symlink: link.clone() }).await.expect("rpc");
    match text {
        Nfs3Result::Ok(ok) => {
            assert_eq!(ok.data.0.as_ref(), outside.path().join("secret").as_os_str().as_encoded_bytes())
        }
        Nfs3Result::Err((s, _)) => panic!("{s:?}"),
    }
    // A client may create any link text; it is resolved on the client, never here.
    let args = SYMLINK3args {
        where_: dirop(&root, "up"),
        symlink: symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::borrowed(b"../../../etc")),
        },
    };
    assert_eq!(status(&c.symlink(&args).await.expect("rpc")), nfsstat3::NFS3_OK);
    let up = lookup(&mut c, &root, "up").await.expect("up");
    assert_eq!(lookup(&mut c, &up, "passwd").await, Err(nfsstat3::NFS3ERR_NOTDIR));
    // `..` at the root stays at the root.
    assert_eq!(lookup(&mut c, &root, "..").await, Ok(root.clone()));
    server.stop().await;
}

#[tokio::test]
async fn hostile_names_are_refused() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    assert_eq!(create(&mut c, &root, "a/b").await, Err(nfsstat3::NFS3ERR_INVAL));
    assert_eq!(create(&mut c, &root, "a\0b").await, Err(nfsstat3::NFS3ERR_INVAL));
    assert_eq!(create(&mut c, &root, "").await, Err(nfsstat3::NFS3ERR_INVAL));
    assert_eq!(create(&mut c, &root, "..").await, Err(nfsstat3::NFS3ERR_INVAL));
    assert_eq!(create(&mut c, &root, &"n".repeat(300)).await, Err(nfsstat3::NFS3ERR_NAMETOOLONG));
    assert_eq!(lookup(&mut c, &root, "../etc").await, Err(nfsstat3::NFS3ERR_INVAL));
    assert_eq!(lookup(&mut c, &root, ".sv-nfs").await, Err(nfsstat3::NFS3ERR_NOENT));
    assert_eq!(create(&mut c, &root, ".sv-nfs").await, Err(nfsstat3::NFS3ERR_ACCES));
    let rename = RENAME3args { from: dirop(&root, ".sv-nfs"), to: dirop(&root, "stolen") };
    assert_eq!(status(&c.rename(&rename).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").all(|e| e.map(|e| e.file_name() == ".sv-nfs").unwrap_or(false))
    );
    server.stop().await;
}

#[tokio::test]
async fn forged_and_foreign_handles_are_refused() {
    let dir = tmp();
    let other = tmp();
    std::fs::write(other.path().join("theirs"), b"x").expect("file");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let foreign = TestServer::start(other.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let mut f = foreign.client().await;
    let their_root = f.root_nfs_fh3();
    let theirs = lookup(&mut f, &their_root, "theirs").await.expect("theirs");
    let root = c.root_nfs_fh3();
    let mut flipped = root.data.to_vec();
    flipped[4] ^= 0x40;
    for forged in [vec![], vec![0; 8], vec![1; 64], flipped, theirs.data.to_vec(), f.root_nfs_fh3().data.to_vec()] {
        let fh = nfs_fh3 { data: Opaque::owned(forged) };
        assert_eq!(getattr(&mut c, &fh).await.err(), Some(nfsstat3::NFS3ERR_BADHANDLE));
        assert_eq!(read_all(&mut c, &fh).await, Err(nfsstat3::NFS3ERR_BADHANDLE));
    }
    server.stop().await;
    foreign.stop().await;
}

#[tokio::test]
async fn handles_survive_restart_and_a_move_of_the_data() {
    let base = tmp();
    let first = base.path().join("node-a");
    std::fs::create_dir(&first).expect("dir");
    let server = TestServer::start(&first, ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let sub = mkdir(&mut c, &root, "sub").await.expect("mkdir");
    let mut files = Vec::new();
    for i in 0..50 {
        let fh = create(&mut c, &sub, &format!("f{i}")).await.expect("create");
        write(&mut c, &fh, 0, format!("content {i}").as_bytes(), stable_how::FILE_SYNC).await.expect("write");
        files.push(fh);
    }
    let doomed = create(&mut c, &root, "doomed").await.expect("create");
    let verifier_before = write(&mut c, &files[0], 0, b"content 0", stable_how::UNSTABLE).await.expect("write");
    drop(c);
    server.stop().await;

    // The same data on another node: moved elsewhere, served by a new process.
    let second = base.path().join("node-b");
    std::fs::rename(&first, &second).expect("move");
    std::fs::remove_file(second.join("doomed")).expect("delete while down");
    let server = TestServer::start(&second, ExportOptions::default()).await;
    let mut c = server.client().await;
    assert_eq!(c.root_nfs_fh3(), root, "the root handle is stable");
    let mut stale = 0;
    for (i, fh) in files.iter().enumerate() {
        match read_all(&mut c, fh).await {
            Ok(data) => assert_eq!(data, format!("content {i}").into_bytes()),
            Err(nfsstat3::NFS3ERR_STALE) => stale += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(stale, 0, "no held handle of an existing file goes stale");
    assert_eq!(getattr(&mut c, &sub).await.map(|a| a.type_), Ok(ftype3::NF3DIR));
    assert_eq!(
        getattr(&mut c, &doomed).await.err(),
        Some(nfsstat3::NFS3ERR_STALE),
        "a file deleted meanwhile is stale"
    );
    let verifier_after = write(&mut c, &files[0], 0, b"content 0", stable_how::UNSTABLE).await.expect("write");
    assert_ne!(verifier_before, verifier_after, "the write verifier changes on restart, so clients resend");
    server.stop().await;
}

#[tokio::test]
async fn capacity_is_enforced_without_losing_data() {
    let dir = tmp();
    std::fs::write(dir.path().join("existing"), vec![7u8; 100 * 1024]).expect("existing");
    let options = ExportOptions { capacity: Some(1024 * 1024), ..Default::default() };
    let server = TestServer::start(dir.path(), options).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "big").await.expect("create");
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0u64;
    let mut refused = None;
    for _ in 0..20 {
        match write(&mut c, &fh, written, &chunk, stable_how::FILE_SYNC).await {
            Ok(_) => written += chunk.len() as u64,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(nfsstat3::NFS3ERR_NOSPC));
    assert!(written + 100 * 1024 <= 1024 * 1024 && written + 100 * 1024 + 64 * 1024 > 1024 * 1024, "wrote {written}");
    assert_eq!(std::fs::read(dir.path().join("existing")).expect("kept"), vec![7u8; 100 * 1024]);
    assert_eq!(
        std::fs::metadata(dir.path().join("big")).expect("big").len(),
        written,
        "a refused write writes nothing"
    );
    // Overwriting in place needs no space.
    write(&mut c, &fh, 0, &chunk, stable_how::FILE_SYNC).await.expect("overwrite fits");
    let grow = SETATTR3args {
        object: fh.clone(),
        new_attributes: sattr3 { size: set_size3::Some(2 * 1024 * 1024), ..Default::default() },
        guard: sattrguard3::None,
    };
    assert_eq!(status(&c.setattr(&grow).await.expect("rpc")), nfsstat3::NFS3ERR_NOSPC);
    match c.fsstat(&FSSTAT3args { fsroot: root.clone() }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => {
            assert_eq!(ok.tbytes, 1024 * 1024);
            assert_eq!(ok.fbytes, 1024 * 1024 - written - 100 * 1024);
        }
        Nfs3Result::Err((s, _)) => panic!("{s:?}"),
    }
    // Removing a file frees its space.
    let remove = REMOVE3args { object: dirop(&root, "existing") };
    assert_eq!(status(&c.remove(&remove).await.expect("rpc")), nfsstat3::NFS3_OK);
    write(&mut c, &fh, written, &chunk, stable_how::FILE_SYNC).await.expect("fits again");
    server.stop().await;
}

#[tokio::test]
async fn read_only_exports_refuse_every_change() {
    let dir = tmp();
    std::fs::write(dir.path().join("data"), b"read me").expect("file");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    server.stop().await;
    let server = TestServer::start(dir.path(), ExportOptions { read_only: true, ..Default::default() }).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = lookup(&mut c, &root, "data").await.expect("lookup");
    assert_eq!(read_all(&mut c, &fh).await, Ok(b"read me".to_vec()));
    assert_eq!(create(&mut c, &root, "new").await, Err(nfsstat3::NFS3ERR_ROFS));
    assert_eq!(mkdir(&mut c, &root, "new").await, Err(nfsstat3::NFS3ERR_ROFS));
    assert_eq!(write(&mut c, &fh, 0, b"x", stable_how::FILE_SYNC).await, Err(nfsstat3::NFS3ERR_ROFS));
    let remove = REMOVE3args { object: dirop(&root, "data") };
    assert_eq!(status(&c.remove(&remove).await.expect("rpc")), nfsstat3::NFS3ERR_ROFS);
    match c.access(&ACCESS3args { object: fh.clone(), access: ACCESS3_READ | ACCESS3_MODIFY }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => assert_eq!(ok.access, ACCESS3_READ),
        Nfs3Result::Err((s, _)) => panic!("{s:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join("data")).expect("data"), b"read me");
    server.stop().await;
}

#[tokio::test]
async fn large_files_round_trip() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "large").await.expect("create");
    let data: Vec<u8> = (0..48 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for (i, chunk) in data.chunks(1024 * 1024).enumerate() {
        write(&mut c, &fh, (i * 1024 * 1024) as u64, chunk, stable_how::UNSTABLE).await.expect("write");
    }
    match c.commit(&COMMIT3args { file: fh.clone(), offset: 0, count: 0 }).await.expect("rpc") {
        Nfs3Result::Ok(_) => {}
        Nfs3Result::Err((s, _)) => panic!("commit: {s:?}"),
    }
    let back = read_all(&mut c, &fh).await.expect("read");
    assert!(back == data, "48 MiB read back equal");
    let past_end =
        c.read(&READ3args { file: fh.clone(), offset: data.len() as u64 + 10, count: 100 }).await.expect("rpc");
    match past_end {
        Nfs3Result::Ok(ok) => assert!(ok.eof && ok.count == 0),
        Nfs3Result::Err((s, _)) => panic!("{s:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn concurrent_clients_do_not_interfere() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut tasks = Vec::new();
    for worker in 0..8u8 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let root = c.root_nfs_fh3();
            for i in 0..40 {
                let name = format!("w{worker}-{i}");
                let fh = create(&mut c, &root, &name).await.expect("create");
                let body = vec![worker; 1000 + i];
                write(&mut c, &fh, 0, &body, stable_how::FILE_SYNC).await.expect("write");
                assert_eq!(read_all(&mut c, &fh).await.expect("read"), body);
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let count = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(count, 8 * 40 + 1, "every file plus the server's state directory");
    server.stop().await;
}

#[tokio::test]
async fn permissions_follow_mode_bits_and_new_files_belong_to_the_caller() {
    let dir = tmp();
    std::fs::write(dir.path().join("roots"), b"root's").expect("file");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut user = server.client_as(1000, 1000).await;
    let root = user.root_nfs_fh3();
    let theirs = lookup(&mut user, &root, "roots").await.expect("lookup");
    assert_eq!(read_all(&mut user, &theirs).await, Ok(b"root's".to_vec()), "0644 is world-readable");
    assert_eq!(write(&mut user, &theirs, 0, b"x", stable_how::FILE_SYNC).await, Err(nfsstat3::NFS3ERR_ACCES));
    // The root directory is 0700 from tempdir: a user may not create in it.
    assert_eq!(create(&mut user, &root, "mine").await, Err(nfsstat3::NFS3ERR_ACCES));
    let mut admin = server.client().await;
    let shared = mkdir(&mut admin, &root, "shared").await.expect("mkdir");
    let open = SETATTR3args {
        object: shared.clone(),
        new_attributes: sattr3 { mode: nfs3_types::nfs3::set_mode3::Some(0o1777), ..Default::default() },
        guard: sattrguard3::None,
    };
    assert_eq!(status(&admin.setattr(&open).await.expect("rpc")), nfsstat3::NFS3_OK);
    let mine = create(&mut user, &shared, "mine").await.expect("create");
    let attrs = getattr(&mut user, &mine).await.expect("attrs");
    assert_eq!((attrs.uid, attrs.gid), (1000, 1000));
    server.stop().await;
}

#[tokio::test]
async fn exclusive_create_is_idempotent_for_its_verifier() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let exclusive = |v: u8| CREATE3args {
        where_: dirop(&root, "x"),
        how: createhow3::EXCLUSIVE(createverf3([v, 1, 2, 3, 4, 5, 6, 7])),
    };
    assert_eq!(status(&c.create(&exclusive(9)).await.expect("rpc")), nfsstat3::NFS3_OK);
    assert_eq!(status(&c.create(&exclusive(9)).await.expect("rpc")), nfsstat3::NFS3_OK, "a retransmission succeeds");
    assert_eq!(status(&c.create(&exclusive(8)).await.expect("rpc")), nfsstat3::NFS3ERR_EXIST);
    let guarded = CREATE3args { where_: dirop(&root, "x"), how: createhow3::GUARDED(sattr3::default()) };
    assert_eq!(status(&c.create(&guarded).await.expect("rpc")), nfsstat3::NFS3ERR_EXIST);
    server.stop().await;
}

#[tokio::test]
async fn unstable_writes_commit_under_the_same_verifier() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "u").await.expect("create");
    let v1 = write(&mut c, &fh, 0, b"abc", stable_how::UNSTABLE).await.expect("write");
    match c.commit(&COMMIT3args { file: fh.clone(), offset: 0, count: 0 }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => assert_eq!(ok.verf.0, v1),
        Nfs3Result::Err((s, _)) => panic!("{s:?}"),
    }
    let sync = nfs3_types::nfs3::WRITE3args {
        file: fh.clone(),
        offset: 3,
        count: 1,
        stable: stable_how::FILE_SYNC,
        data: Opaque::borrowed(b"d"),
    };
    match c.write(&sync).await.expect("rpc") {
        Nfs3Result::Ok(ok) => assert_eq!(ok.committed, stable_how::FILE_SYNC),
        Nfs3Result::Err((s, _)) => panic!("{s:?}"),
    }
    let dir_commit = c.commit(&COMMIT3args { file: root.clone(), offset: 0, count: 0 }).await.expect("rpc");
    assert_eq!(status(&dir_commit), nfsstat3::NFS3ERR_ISDIR);
    server.stop().await;
}

#[tokio::test]
async fn guarded_setattr_checks_ctime() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "g").await.expect("create");
    let ctime = getattr(&mut c, &fh).await.expect("attr").ctime;
    let stale = nfs3_types::nfs3::nfstime3 { seconds: ctime.seconds.wrapping_sub(100), nseconds: 0 };
    let args = |guard| SETATTR3args {
        object: fh.clone(),
        new_attributes: sattr3 { size: set_size3::Some(3), ..Default::default() },
        guard,
    };
    assert_eq!(status(&c.setattr(&args(sattrguard3::Some(stale))).await.expect("rpc")), nfsstat3::NFS3ERR_NOT_SYNC);
    assert_eq!(status(&c.setattr(&args(sattrguard3::Some(ctime))).await.expect("rpc")), nfsstat3::NFS3_OK);
    server.stop().await;
}

#[tokio::test]
async fn the_self_probe_passes_against_a_live_server() {
    let dir = tmp();
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let connector = sv_nfs::health::TcpConnector(([127, 0, 0, 1], server.port).into());
    sv_nfs::health::probe(&connector, server.server.export().root_fh()).await.expect("probe");
    let _ = Nfs3Option::<u32>::None;
    server.stop().await;
}
