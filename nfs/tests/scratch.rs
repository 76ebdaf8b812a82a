//! The writer's scratch trees (`.sharedvolume/staging-<n>`, revisions being built): their
//! namespace changes are made durable together before the writer's next change elsewhere, not
//! one directory sync each; a scratch tree made before a restart of the server is never renamed
//! (published), because changes to it may have been lost; everyone else's changes are synced at
//! once, as before.

use crate::common;

use crate::common::{TestServer, create, dirop, lookup, mkdir, status};
use nfs3_types::nfs3::{LINK3args, Nfs3Result, RENAME3args, nfs_fh3, nfsstat3};
use sv_nfs::fs::{ExportOptions, Identity};

const TOKEN_PATH: &str = "/.sv-writer-0123456789abcdef0123456789abcdef";
const FILES: usize = 40;

fn options(scratch: bool) -> ExportOptions {
    ExportOptions {
        identity: Identity {
            protected_dir: Some(".sharedvolume".to_string()),
            writer_path: Some(TOKEN_PATH.to_string()),
            ..Identity::default()
        },
        scratch_prefix: scratch.then(|| "staging-".to_string()),
        ..ExportOptions::default()
    }
}

async fn link(c: &mut common::Client, file: &nfs_fh3, dir: &nfs_fh3, name: &str) -> nfsstat3 {
    let r = c.link(&LINK3args { file: file.clone(), link: dirop(dir, name) }).await.expect("rpc");
    status(&r)
}

async fn rename(c: &mut common::Client, from: &nfs_fh3, a: &str, to: &nfs_fh3, b: &str) -> nfsstat3 {
    let r = c.rename(&RENAME3args { from: dirop(from, a), to: dirop(to, b) }).await.expect("rpc");
    match r {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((s, _)) => s,
    }
}

/// A published revision of `FILES` files, and a new stage: `(state, revisions, files, stage)`.
async fn published_and_stage(
    server: &TestServer,
    writer: &mut common::Client,
) -> (nfs_fh3, nfs_fh3, Vec<nfs_fh3>, nfs_fh3) {
    let root = writer.root_nfs_fh3();
    let state = mkdir(writer, &root, ".sharedvolume").await.expect("state dir");
    let revisions = mkdir(writer, &state, "revisions").await.expect("revisions");
    let r1 = mkdir(writer, &revisions, "1-a").await.expect("r1");
    let mut files = Vec::new();
    for i in 0..FILES {
        files.push(create(writer, &r1, &format!("f{i}")).await.expect("file"));
    }
    let stage = mkdir(writer, &state, "staging-2").await.expect("stage");
    let _ = server;
    (state, revisions, files, stage)
}

/// Links every file of the previous revision into `stage/d` (as an incremental sync does) and
/// publishes it; returns the directory syncs the links cost and those the publication cost.
async fn incremental_sync(scratch: bool) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), options(scratch)).await;
    let mut writer = server.client_mounting(TOKEN_PATH, 0, 0).await.expect("writer mounts");
    let (state, revisions, files, stage) = published_and_stage(&server, &mut writer).await;
    let d = mkdir(&mut writer, &stage, "d").await.expect("mkdir in the stage");
    let before = server.export.dir_syncs();
    for (i, file) in files.iter().enumerate() {
        assert_eq!(link(&mut writer, file, &d, &format!("f{i}")).await, nfsstat3::NFS3_OK);
    }
    let links = server.export.dir_syncs() - before;
    assert_eq!(rename(&mut writer, &state, "staging-2", &revisions, "2-b").await, nfsstat3::NFS3_OK);
    let publication = server.export.dir_syncs() - before - links;
    for i in 0..FILES {
        lookup(&mut writer, &d, &format!("f{i}")).await.expect("every link is there after the publication");
    }
    server.stop().await;
    (links, publication)
}

#[tokio::test]
async fn links_into_a_stage_are_synced_together_at_the_publication() {
    let (links, publication) = incremental_sync(true).await;
    assert_eq!(links, 0, "no directory sync per link inside the scratch tree");
    // The two stage directories, then the rename's source and target directories.
    assert_eq!(publication, 4, "the stage is synced before it is renamed");

    // Without scratch trees every link costs its directory's sync, as NFSv3 asks.
    let (links, _) = incremental_sync(false).await;
    assert_eq!(links, FILES as u64);
}

#[tokio::test]
async fn any_change_outside_the_stage_first_makes_the_stage_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), options(true)).await;
    let mut writer = server.client_mounting(TOKEN_PATH, 0, 0).await.expect("writer mounts");
    let (state, _revisions, files, stage) = published_and_stage(&server, &mut writer).await;
    // Reached again by LOOKUP, as a client that did not create it does: still scratch.
    let stage_again = lookup(&mut writer, &state, "staging-2").await.expect("lookup");
    assert_eq!(stage_again.data.as_ref(), stage.data.as_ref());
    let before = server.export.dir_syncs();
    assert_eq!(link(&mut writer, &files[0], &stage_again, "f0").await, nfsstat3::NFS3_OK);
    assert_eq!(server.export.dir_syncs(), before, "deferred");
    // `..` of the stage is the state directory, outside scratch: a change there flushes first.
    let parent = lookup(&mut writer, &stage_again, "..").await.expect("..");
    create(&mut writer, &parent, "manifest.json").await.expect("create");
    assert_eq!(server.export.dir_syncs(), before + 2, "the stage's directory, then the state directory");
    server.stop().await;
}

#[tokio::test]
async fn a_stage_made_before_a_restart_is_never_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), options(true)).await;
    let mut writer = server.client_mounting(TOKEN_PATH, 0, 0).await.expect("writer mounts");
    let (_, _, files, stage) = published_and_stage(&server, &mut writer).await;
    assert_eq!(link(&mut writer, &files[0], &stage, "f0").await, nfsstat3::NFS3_OK);
    server.stop().await;

    // The server restarts: what it had not synced may be gone, so the stage may be short.
    let server = TestServer::start(dir.path(), options(true)).await;
    let mut writer = server.client_mounting(TOKEN_PATH, 0, 0).await.expect("writer mounts again");
    let root = writer.root_nfs_fh3();
    let state = lookup(&mut writer, &root, ".sharedvolume").await.expect("state");
    let revisions = lookup(&mut writer, &state, "revisions").await.expect("revisions");
    assert_eq!(
        rename(&mut writer, &state, "staging-2", &revisions, "2-b").await,
        nfsstat3::NFS3ERR_IO,
        "a stage from before the restart is refused"
    );
    // A stage built after the restart is published.
    mkdir(&mut writer, &state, "staging-3").await.expect("new stage");
    assert_eq!(rename(&mut writer, &state, "staging-3", &revisions, "3-c").await, nfsstat3::NFS3_OK);
    server.stop().await;
}

#[tokio::test]
async fn consumers_and_names_outside_the_state_directory_are_synced_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), options(true)).await;
    let mut writer = server.client_mounting(TOKEN_PATH, 0, 0).await.expect("writer mounts");
    let root = writer.root_nfs_fh3();
    // A writer's directory named like a stage, but not in the state directory: not scratch.
    let lookalike = mkdir(&mut writer, &root, "staging-9").await.expect("mkdir");
    let before = server.export.dir_syncs();
    create(&mut writer, &lookalike, "f").await.expect("create");
    assert_eq!(server.export.dir_syncs(), before + 1);
    // A consumer's change anywhere is synced at once.
    let mut consumer = server.client().await;
    let croot = consumer.root_nfs_fh3();
    let stage_name = lookup(&mut consumer, &croot, "staging-9").await.expect("lookup");
    create(&mut consumer, &stage_name, "g").await.expect("create");
    assert_eq!(server.export.dir_syncs(), before + 2);
    server.stop().await;
}
