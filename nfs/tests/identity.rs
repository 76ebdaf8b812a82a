//! The identity model over real TCP with `nfs3_client`: squashing of consumers' AUTH_UNIX
//! credentials, owners a CREATE may not give away, the protected state directory that only the
//! writer (who mounts the secret path) may change, and read-only consumers.

use crate::common::{TestServer, create, dirop, getattr, lookup, mkdir, read_all, status, write};
use nfs3_types::nfs3::{
    CREATE3args, LINK3args, MKDIR3args, REMOVE3args, RENAME3args, SETATTR3args, SYMLINK3args, createhow3, nfspath3,
    nfsstat3, sattr3, sattrguard3, set_gid3, set_uid3, stable_how, symlinkdata3,
};
use nfs3_types::xdr_codec::Opaque;
use sv_nfs::fs::{ExportOptions, Identity, Squash};

const WRITER_PATH: &str = "/.sv-writer-0123456789abcdef0123456789abcdef";

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn policy(squash: Squash, consumer_read_only: bool) -> ExportOptions {
    ExportOptions {
        identity: Identity {
            squash,
            consumer_read_only,
            protected_dir: Some(".sharedvolume".to_string()),
            writer_path: Some(WRITER_PATH.to_string()),
            ..Identity::default()
        },
        root_mode: Some(0o1777),
        ..ExportOptions::default()
    }
}

fn owner_attrs(uid: Option<u32>, gid: Option<u32>) -> sattr3 {
    sattr3 {
        uid: uid.map_or(set_uid3::None, set_uid3::Some),
        gid: gid.map_or(set_gid3::None, set_gid3::Some),
        ..Default::default()
    }
}

#[tokio::test]
async fn root_is_squashed_and_all_squash_maps_everyone() {
    if !running_as_root() {
        eprintln!("skipped: ownership needs the server to run as root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), policy(Squash::Root, false)).await;
    let mut root = server.client_as(0, 0).await;
    let top = root.root_nfs_fh3();
    let file = create(&mut root, &top, "by-root").await.expect("create in the 1777 root");
    let attrs = getattr(&mut root, &file).await.expect("attrs");
    assert_eq!((attrs.uid, attrs.gid), (65534, 65534), "uid 0 and gid 0 became nobody");
    let mut user = server.client_as(1000, 1000).await;
    let mine = create(&mut user, &top, "by-user").await.expect("create");
    let attrs = getattr(&mut user, &mine).await.expect("attrs");
    assert_eq!((attrs.uid, attrs.gid), (1000, 1000), "other ids are kept under root squash");
    // The squashed root is nobody: it may not touch a file of uid 1000's with mode 0644.
    assert_eq!(write(&mut root, &mine, 0, b"x", stable_how::FILE_SYNC).await, Err(nfsstat3::NFS3ERR_ACCES));
    server.stop().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), policy(Squash::All, false)).await;
    let mut user = server.client_as(1000, 1000).await;
    let top = user.root_nfs_fh3();
    let file = create(&mut user, &top, "f").await.expect("create");
    let attrs = getattr(&mut user, &file).await.expect("attrs");
    assert_eq!((attrs.uid, attrs.gid), (65534, 65534), "all squash maps every uid");
    // The writer is never squashed.
    let mut writer = server.client_mounting(WRITER_PATH, 0, 0).await.expect("writer mount");
    let wtop = writer.root_nfs_fh3();
    let file = create(&mut writer, &wtop, "w").await.expect("create");
    assert_eq!(getattr(&mut writer, &file).await.map(|a| a.uid), Ok(0));
    server.stop().await;
}

#[tokio::test]
async fn a_create_may_not_give_the_new_file_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), policy(Squash::Root, false)).await;
    let mut user = server.client_as(1000, 1000).await;
    let top = user.root_nfs_fh3();
    for (name, uid, gid) in [("to-root", Some(0), None), ("to-group-0", None, Some(0)), ("to-other", Some(1001), None)]
    {
        let args = CREATE3args { where_: dirop(&top, name), how: createhow3::GUARDED(owner_attrs(uid, gid)) };
        assert_eq!(status(&user.create(&args).await.expect("rpc")), nfsstat3::NFS3ERR_PERM, "{name}");
        assert_eq!(lookup(&mut user, &top, name).await, Err(nfsstat3::NFS3ERR_NOENT), "{name}: nothing was created");
        let args = MKDIR3args { where_: dirop(&top, name), attributes: owner_attrs(uid, gid) };
        assert_eq!(status(&user.mkdir(&args).await.expect("rpc")), nfsstat3::NFS3ERR_PERM, "{name} (mkdir)");
    }
    // Naming oneself is fine.
    let args =
        CREATE3args { where_: dirop(&top, "mine"), how: createhow3::GUARDED(owner_attrs(Some(1000), Some(1000))) };
    assert_eq!(status(&user.create(&args).await.expect("rpc")), nfsstat3::NFS3_OK);
    // A squashed root is not root either.
    let mut root = server.client_as(0, 0).await;
    let args = CREATE3args { where_: dirop(&top, "sneaky"), how: createhow3::GUARDED(owner_attrs(Some(0), Some(0))) };
    assert_eq!(status(&root.create(&args).await.expect("rpc")), nfsstat3::NFS3ERR_PERM);
    server.stop().await;
}

#[tokio::test]
async fn the_protected_directory_is_read_only_to_consumers_and_writable_by_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), policy(Squash::None, false)).await;
    assert!(server.client_mounting("/.sv-writer-ffffffffffffffffffffffffffffffff", 0, 0).await.is_err(), "wrong token");
    let mut writer = server.client_mounting(WRITER_PATH, 0, 0).await.expect("writer mount");
    let wtop = writer.root_nfs_fh3();
    let state = mkdir(&mut writer, &wtop, ".sharedvolume").await.expect("the writer makes the state directory");
    let manifest = create(&mut writer, &state, "manifest").await.expect("the writer writes in it");
    write(&mut writer, &manifest, 0, b"revision 1", stable_how::FILE_SYNC).await.expect("write");

    // A consumer, even one claiming root with no squashing, reads but changes nothing.
    let mut consumer = server.client_as(0, 0).await;
    let top = consumer.root_nfs_fh3();
    let cstate = lookup(&mut consumer, &top, ".sharedvolume").await.expect("visible");
    let cmanifest = lookup(&mut consumer, &cstate, "manifest").await.expect("visible");
    assert_eq!(read_all(&mut consumer, &cmanifest).await, Ok(b"revision 1".to_vec()));
    assert_eq!(
        write(&mut consumer, &cmanifest, 0, b"forged", stable_how::FILE_SYNC).await,
        Err(nfsstat3::NFS3ERR_ACCES)
    );
    assert_eq!(create(&mut consumer, &cstate, "planted").await, Err(nfsstat3::NFS3ERR_ACCES));
    assert_eq!(mkdir(&mut consumer, &cstate, "planted").await, Err(nfsstat3::NFS3ERR_ACCES));
    let truncate = SETATTR3args {
        object: cmanifest.clone(),
        new_attributes: sattr3 { size: nfs3_types::nfs3::set_size3::Some(0), ..Default::default() },
        guard: sattrguard3::None,
    };
    assert_eq!(status(&consumer.setattr(&truncate).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    let remove = REMOVE3args { object: dirop(&cstate, "manifest") };
    assert_eq!(status(&consumer.remove(&remove).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    let symlink = SYMLINK3args {
        where_: dirop(&cstate, "link"),
        symlink: symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::borrowed(b"/etc")),
        },
    };
    assert_eq!(status(&consumer.symlink(&symlink).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    // Moving it out, or the whole directory aside, or a new name for a protected file: refused.
    let out = RENAME3args { from: dirop(&cstate, "manifest"), to: dirop(&top, "stolen") };
    assert_eq!(status(&consumer.rename(&out).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    let aside = RENAME3args { from: dirop(&top, ".sharedvolume"), to: dirop(&top, "aside") };
    assert_eq!(status(&consumer.rename(&aside).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    let link = LINK3args { file: cmanifest.clone(), link: dirop(&top, "second-name") };
    assert_eq!(status(&consumer.link(&link).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    let rmdir = nfs3_types::nfs3::RMDIR3args { object: dirop(&top, ".sharedvolume") };
    assert_eq!(status(&consumer.rmdir(&rmdir).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    // Climbing out with `..` gives back the ordinary, writable root.
    let up = lookup(&mut consumer, &cstate, "..").await.expect("..");
    create(&mut consumer, &up, "beside").await.expect("the root is writable for consumers");

    // The writer still changes everything.
    write(&mut writer, &manifest, 0, b"revision 2", stable_how::FILE_SYNC).await.expect("write");
    let rename = RENAME3args { from: dirop(&state, "manifest"), to: dirop(&state, "manifest.old") };
    assert_eq!(status(&writer.rename(&rename).await.expect("rpc")), nfsstat3::NFS3_OK);
    server.stop().await;

    // A consumer that makes the directory first cannot then use it.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), policy(Squash::None, false)).await;
    let mut consumer = server.client_as(0, 0).await;
    let top = consumer.root_nfs_fh3();
    let args = MKDIR3args { where_: dirop(&top, ".sharedvolume"), attributes: sattr3::default() };
    assert_eq!(status(&consumer.mkdir(&args).await.expect("rpc")), nfsstat3::NFS3ERR_ACCES);
    server.stop().await;
}

#[tokio::test]
async fn read_only_consumers_change_nothing_and_the_writer_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("data"), "published").expect("write");
    let server = TestServer::start(dir.path(), policy(Squash::Root, true)).await;
    let mut consumer = server.client_as(1000, 1000).await;
    let top = consumer.root_nfs_fh3();
    let data = lookup(&mut consumer, &top, "data").await.expect("lookup");
    assert_eq!(read_all(&mut consumer, &data).await, Ok(b"published".to_vec()));
    assert_eq!(create(&mut consumer, &top, "new").await, Err(nfsstat3::NFS3ERR_ROFS));
    assert_eq!(write(&mut consumer, &data, 0, b"x", stable_how::UNSTABLE).await, Err(nfsstat3::NFS3ERR_ROFS));
    let mut writer = server.client_mounting(WRITER_PATH, 0, 0).await.expect("writer mount");
    let wtop = writer.root_nfs_fh3();
    let wdata = lookup(&mut writer, &wtop, "data").await.expect("lookup");
    write(&mut writer, &wdata, 0, b"P", stable_how::FILE_SYNC).await.expect("the writer writes");
    // Handles do not cross: a consumer's handle used by the writer's client is still a
    // consumer's, and the writer's root handle is not the consumer's.
    assert_ne!(wtop.data.as_ref(), top.data.as_ref());
    let create_args = CREATE3args { where_: dirop(&top, "x"), how: createhow3::UNCHECKED(sattr3::default()) };
    let reply = writer.create(&create_args).await.expect("rpc");
    assert_eq!(status(&reply), nfsstat3::NFS3ERR_ROFS, "the class is in the handle, not the connection");
    server.stop().await;
}
