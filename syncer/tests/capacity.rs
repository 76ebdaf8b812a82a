//! The space budget against a real full file system: a 4 MiB tmpfs stands in for a volume whose
//! NFS server enforces its capacity (both answer `statvfs` with what is still accepted and refuse
//! writes past it with `ENOSPC`). The documented rule: the published revision stays while the next
//! is built, so a sync needs the new revision's new bytes free beside the published one; the
//! revision before the published one is removed when that makes the difference.

use std::path::{Path, PathBuf};

use crate::common::{http_server, sync, syncer, view};
use sv_syncer::publish::Volume;

const MIB: usize = 1024 * 1024;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct SmallVolume {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl SmallVolume {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir, mounted: true }),
            _ => None,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// Content that does not compress or repeat: every revision's file is new bytes.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[seed]);
    let mut reader = hasher.finalize_xof();
    out.resize(len, 0);
    reader.fill(&mut out);
    out
}

fn spec(url: &str) -> String {
    format!("source:\n  http:\n    url: {url}\nsyncInterval: 1h\nsyncTimeout: 60s\nstorage:\n  capacity: 4Mi\n")
}

fn published(root: &Path) -> Vec<u8> {
    std::fs::read(root.join("data.bin")).unwrap_or_default()
}

#[tokio::test]
async fn a_source_that_changes_entirely_syncs_while_it_fits_beside_the_published_one() {
    let Some(small) = SmallVolume::mount("4m") else {
        assert!(std::env::var_os("SV_REQUIRE_TEST_TOOLS").is_none(), "mounting a tmpfs needs root");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let root = small.path();
    let volume = Volume::open(&root).expect("volume");
    let syncer = syncer(&root, None, None);
    let (server, files) = http_server(None).await;
    let v = view(&spec(&format!("http://{}/data.bin", server.addr)));

    // 1.5 MiB, changing entirely each time. The second revision fits beside the first; the third
    // fits only once the first (the revision before the published one) is removed: without that,
    // a source over a third of the capacity could never update again.
    for seed in 1..=4u8 {
        let body = noise(3 * MIB / 2, seed);
        files.put("/data.bin", body.clone());
        sync(&syncer, &volume, &v).await.unwrap_or_else(|e| panic!("revision {seed}: {e}"));
        assert_eq!(published(&root), body, "revision {seed} is published");
    }

    // At the boundary: with 1.5 MiB published, 2.25 MiB of new content fits in 4 MiB ...
    let fits = noise(9 * MIB / 4, 10);
    files.put("/data.bin", fits.clone());
    sync(&syncer, &volume, &v).await.expect("2.25 MiB beside 1.5 MiB");
    assert_eq!(published(&root), fits);

    // ... and now 2.25 MiB is published, so 2 MiB of new content does not fit: a clear message,
    // the published revision intact, no stage left behind.
    let too_big = noise(2 * MIB, 11);
    files.put("/data.bin", too_big);
    let error = sync(&syncer, &volume, &v).await.expect_err("2 MiB beside 2.25 MiB");
    assert!(error.contains("the volume is full"), "{error}");
    assert!(error.contains("raise spec.storage.capacity"), "{error}");
    assert_eq!(published(&root), fits, "the published revision is intact");
    let stages: Vec<_> = std::fs::read_dir(root.join(".sharedvolume"))
        .expect("state")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("staging"))
        .filter(|e| std::fs::read_dir(e.path()).map(|mut d| d.next().is_some()).unwrap_or(false))
        .collect();
    assert!(stages.is_empty(), "nothing of the refused revision is left");
    drop(volume);
    drop(small);
}
