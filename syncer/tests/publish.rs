//! Publishing revisions into a volume directory: layout, incremental links, user files, garbage
//! collection, capacity, and readers that never see a mixed or partial revision.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sv_syncer::error::SyncError;
use sv_syncer::paths::RelPath;
use sv_syncer::publish::Volume;

fn p(s: &str) -> RelPath {
    RelPath::parse(s).expect("path")
}

/// Publishes a tree of (path, content) with every file's version = its content.
fn publish(volume: &Volume, revision: &str, files: &[(&str, String)]) -> sv_syncer::publish::Published {
    let previous = volume.previous_for("test-source").expect("previous");
    let mut stage = volume.stage(previous, None).expect("stage");
    for (path, content) in files {
        let path = p(path);
        if !stage.reuse(&path, content).expect("reuse") {
            stage.write_file(&path, content.as_bytes(), false, content).expect("write");
        }
    }
    volume.publish(stage.finish(revision, "test-source", BTreeMap::new()).expect("finish")).expect("publish")
}

#[test]
fn files_appear_at_the_mount_path_and_follow_each_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    publish(&volume, "r1", &[("README.md", "v1".into()), ("docs/a.txt", "a1".into()), ("docs/b.txt", "b1".into())]);
    assert_eq!(std::fs::read_to_string(dir.path().join("README.md")).expect("read"), "v1");
    assert_eq!(std::fs::read_to_string(dir.path().join("docs/a.txt")).expect("read"), "a1");

    let published =
        publish(&volume, "r2", &[("docs/a.txt", "a1".into()), ("docs/c.txt", "c2".into()), ("NEW", "n".into())]);
    assert_eq!(published.files, 3);
    assert!(!dir.path().join("README.md").exists(), "removed at the source, removed here");
    assert!(std::fs::symlink_metadata(dir.path().join("README.md")).is_err(), "its link is gone too");
    assert!(!dir.path().join("docs/b.txt").exists());
    assert_eq!(std::fs::read_to_string(dir.path().join("docs/c.txt")).expect("read"), "c2");
    assert_eq!(std::fs::read_to_string(dir.path().join("NEW")).expect("read"), "n");
    let (id, manifest) = volume.current().expect("current").expect("published");
    assert_eq!(manifest.revision, "r2");
    assert_eq!(id, published.id);
}

#[test]
fn unchanged_files_are_linked_not_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    let first = publish(&volume, "r1", &[("same", "x".into()), ("changes", "1".into())]);
    let second = publish(&volume, "r2", &[("same", "x".into()), ("changes", "2".into())]);
    let revisions = dir.path().join(".sharedvolume/revisions");
    let ino = |rev: &str, f: &str| std::fs::metadata(revisions.join(rev).join(f)).expect("meta").ino();
    assert_eq!(ino(&first.id, "same"), ino(&second.id, "same"), "hard link to the previous revision");
    assert_ne!(ino(&first.id, "changes"), ino(&second.id, "changes"));
}

#[test]
fn user_files_are_kept_and_displaced_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    std::fs::write(dir.path().join("mine.txt"), "user data").expect("user file");
    std::fs::write(dir.path().join("clash"), "user clash").expect("user file");
    publish(&volume, "r1", &[("clash", "source wins".into()), ("a", "a".into())]);
    assert_eq!(std::fs::read_to_string(dir.path().join("mine.txt")).expect("kept"), "user data");
    assert_eq!(std::fs::read_to_string(dir.path().join("clash")).expect("source"), "source wins");
    let displaced = dir.path().join(".sharedvolume/displaced");
    let kept: Vec<_> = std::fs::read_dir(&displaced).expect("displaced").collect();
    assert_eq!(kept.len(), 1);
    let moved = kept[0].as_ref().expect("entry").path().join("clash");
    assert_eq!(std::fs::read_to_string(moved).expect("moved aside"), "user clash");
    publish(&volume, "r2", &[("a", "a".into())]);
    assert_eq!(std::fs::read_to_string(dir.path().join("mine.txt")).expect("still kept"), "user data");
}

#[test]
fn a_discarded_stage_leaves_the_published_tree_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    publish(&volume, "r1", &[("f", "one".into())]);
    let mut stage = volume.stage(volume.previous_for("test-source").expect("prev"), None).expect("stage");
    stage.write_file(&p("f"), b"half", false, "half").expect("write");
    let stage_dir = stage.dir().to_path_buf();
    volume.discard(&stage_dir).expect("discard");
    assert!(!stage_dir.exists());
    assert_eq!(std::fs::read_to_string(dir.path().join("f")).expect("read"), "one");
    // A stage left by a crash is cleaned up when the next sync starts, not when a syncer opens
    // the volume (it may not hold the volume's Lease yet, and the holder may be mid-sync).
    let mut crashed = volume.stage(None, None).expect("stage");
    crashed.write_file(&p("half-written"), b"x", false, "x").expect("write");
    let leftover = crashed.dir().join("half-written");
    drop(crashed);
    let reopened = Volume::open(dir.path()).expect("reopen");
    assert!(leftover.exists(), "opening removes nothing");
    let next = reopened.stage(None, None).expect("the next sync");
    assert!(!leftover.exists(), "the next sync starts from an empty stage");
    assert!(next.dir().exists());
}

#[test]
fn only_the_current_and_previous_revisions_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    for i in 0..5 {
        publish(&volume, &format!("r{i}"), &[("f", format!("{i}"))]);
    }
    let dirs = std::fs::read_dir(dir.path().join(".sharedvolume/revisions"))
        .expect("revisions")
        .filter(|e| e.as_ref().map(|e| e.path().is_dir()).unwrap_or(false))
        .count();
    assert_eq!(dirs, 2);
}

#[test]
fn capacity_is_checked_while_staging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    let mut stage = volume.stage(None, Some(10)).expect("stage");
    stage.write_file(&p("a"), b"123456", false, "a").expect("fits");
    let err = stage.write_file(&p("b"), b"123456", false, "b").expect_err("too big");
    assert!(matches!(err, SyncError::Capacity { needed: 12, capacity: 10 }), "{err}");
    assert!(err.to_string().contains("raise spec.storage.capacity"));
}

#[test]
fn conflicting_source_paths_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    let mut stage = volume.stage(None, None).expect("stage");
    stage.write_file(&p("a"), b"file", false, "1").expect("file");
    let err = stage.write_file(&p("a/b"), b"under a file", false, "2").expect_err("conflict");
    assert!(err.to_string().contains("both a file and a directory"), "{err}");
    assert!(stage.write_file(&p("a"), b"again", false, "3").is_err(), "duplicates refused");
    assert!(stage.symlink(&p("link"), "../outside").is_err());
    assert!(stage.symlink(&p("inside"), "a").is_ok());
}

fn read_revision_of(file: &Path) -> Option<String> {
    let content = std::fs::read_to_string(file).ok()?;
    // Every file of revision N is "rev-N:" followed by padding; a partial file breaks this shape.
    let (rev, rest) = content.split_once(':')?;
    assert_eq!(rest.len(), 4000, "a reader saw a partial file: {content:.40}");
    Some(rev.to_string())
}

#[test]
fn readers_never_see_a_mixed_or_partial_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = Volume::open(dir.path()).expect("open");
    let files: Vec<String> = (0..20).map(|i| format!("d{}/f{i}", i % 4)).collect();
    let tree = |rev: usize| -> Vec<(&str, String)> {
        files.iter().map(|f| (f.as_str(), format!("rev-{rev}:{}", "x".repeat(4000)))).collect()
    };
    publish(&volume, "r0", &tree(0));
    let stop = Arc::new(AtomicBool::new(false));
    let root = dir.path().to_path_buf();
    let names = files.clone();
    let reader_stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut snapshots = 0u64;
        let mut seen = std::collections::BTreeSet::new();
        while !reader_stop.load(Ordering::SeqCst) {
            // A consistent view: resolve `current` once, read everything below it.
            let Ok(current) = std::fs::read_link(root.join(".sharedvolume/current")) else { continue };
            let base = root.join(".sharedvolume").join(current);
            let revs: std::collections::BTreeSet<String> =
                names.iter().filter_map(|f| read_revision_of(&base.join(f))).collect();
            assert!(revs.len() <= 1, "one snapshot mixed revisions {revs:?}");
            seen.extend(revs);
            // Through the mount path each file is whole, from some revision.
            for f in &names {
                let _ = read_revision_of(&root.join(f));
            }
            snapshots += 1;
        }
        (snapshots, seen.len())
    });
    for rev in 1..=40 {
        publish(&volume, &format!("r{rev}"), &tree(rev));
    }
    stop.store(true, Ordering::SeqCst);
    let (snapshots, revisions_seen) = reader.join().expect("reader");
    assert!(snapshots > 0);
    assert!(revisions_seen >= 1);
}
