//! The volume's layout and atomic publication.
//!
//! ```text
//! <volume>/
//!   .sharedvolume/
//!     revisions/<seq>-<rev>/      complete trees (the current one and the one before)
//!     revisions/<seq>-<rev>.json  their manifests
//!     staging-<seq>/              a tree being built (discarded on failure or timeout)
//!     current -> revisions/<seq>-<rev>
//!   <name> -> .sharedvolume/current/<name>    one link per top-level entry of the source
//! ```
//!
//! Files appear directly at the mount path, as in the Go original, through the top-level links.
//! Publishing renames one symlink (`current`), which is atomic: a path resolved before the rename
//! reaches the old tree, one resolved after reaches the new tree, never a mix of both inside one
//! resolution. A reader that wants a consistent view of many files resolves `.sharedvolume/current`
//! once and reads below it; the previous revision stays on disk until the next publication, so
//! reads in progress finish. New top-level names get their links before the switch (they dangle,
//! which reads as "absent", until then); vanished names lose theirs after it.
//!
//! Top-level entries that are not links of ours (written by consumers of a ReadWrite volume) are
//! left alone, unless the source gains an entry of the same name: then the user's entry is moved to
//! `.sharedvolume/displaced/<seq>/`, never deleted.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::paths::STATE_DIR;
use crate::tree::{Manifest, Previous, Stage, StagedTree};
use crate::volume_fs::{Kind, LocalFs, VolumeFs};

const REVISIONS: &str = "revisions";
const CURRENT: &str = "current";
const DISPLACED: &str = "displaced";

/// The synced volume, mounted at `root`.
pub struct Volume {
    fs: Arc<dyn VolumeFs>,
    root: PathBuf,
    state: PathBuf,
}

/// What a publication produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Directory name under `.sharedvolume/revisions`.
    pub id: String,
    pub revision: String,
    pub files: u64,
    pub bytes: u64,
}

impl Volume {
    /// Opens the volume, creating the state directory. What an interrupted sync left is removed
    /// when the next one starts ([`Volume::stage`]), not here: a syncer that opens the volume may
    /// not hold its Lease yet, and the holder's sync in progress is not a leftover.
    pub fn open(root: &Path) -> io::Result<Self> {
        Self::open_on(LocalFs::shared(), root)
    }

    /// [`Volume::open`] on the volume behind `fs`, which shows it at `root`.
    pub fn open_on(fs: Arc<dyn VolumeFs>, root: &Path) -> io::Result<Self> {
        let state = root.join(STATE_DIR);
        fs.create_dir_all(&state.join(REVISIONS))?;
        Ok(Self { fs, root: root.to_path_buf(), state })
    }

    /// Removes staging directories, downloads and switch links of syncs that did not finish
    /// (only the Lease holder syncs, one sync at a time, so any found here are abandoned).
    fn remove_leftovers(&self) -> io::Result<()> {
        for entry in self.fs.read_dir(&self.state)? {
            let path = self.state.join(&entry.name);
            if entry.name.starts_with("staging-") && entry.kind == Kind::Dir {
                self.remove_all(&path)?;
            } else if entry.name.starts_with("staging-") || entry.name.starts_with("current.tmp") {
                match self.fs.remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The syncer's state directory on the volume.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Where sources keep what must be on a local file system (the git cache, pinned host keys):
    /// the state directory when the volume is mounted.
    pub fn local_state_dir(&self) -> PathBuf {
        self.fs.local_path(&self.state)
    }

    /// The published revision: its directory name and manifest.
    pub fn current(&self) -> io::Result<Option<(String, Manifest)>> {
        let link = match self.fs.read_link(&self.state.join(CURRENT)) {
            Ok(link) => link,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(id) = link.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(None);
        };
        let manifest = self.fs.read(&self.state.join(REVISIONS).join(format!("{id}.json")))?;
        let manifest: Manifest = serde_json::from_slice(&manifest).map_err(io::Error::other)?;
        Ok(Some((id, manifest)))
    }

    /// The current revision as the base of an incremental sync, if it came from `source`.
    pub fn previous_for(&self, source: &str) -> io::Result<Option<Previous>> {
        Ok(self
            .current()?
            .filter(|(_, m)| m.source == source)
            .map(|(id, manifest)| Previous { dir: self.state.join(REVISIONS).join(id), manifest }))
    }

    fn next_seq(&self) -> io::Result<u64> {
        let mut max = 0u64;
        for dir in [self.state.join(REVISIONS), self.state.clone()] {
            for entry in self.fs.read_dir(&dir)? {
                let name = entry.name;
                let digits = name.strip_prefix("staging-").unwrap_or(&name);
                if let Some(n) = digits.split(['-', '.']).next().and_then(|d| d.parse::<u64>().ok()) {
                    max = max.max(n);
                }
            }
        }
        Ok(max + 1)
    }

    /// Starts a new revision, incremental on `previous`, limited to the volume's free space.
    pub fn stage(&self, previous: Option<Previous>, capacity: Option<u64>) -> io::Result<Stage> {
        self.remove_leftovers()?;
        let free = self.free_bytes()?;
        let dir = self.state.join(format!("staging-{}", self.next_seq()?));
        self.fs.create_dir(&dir)?;
        Ok(Stage::on(self.fs.clone(), dir, previous, capacity).with_free_space(free))
    }

    /// Bytes the volume still accepts. On the managed NFS server this is its capacity less what
    /// it counts (FSSTAT), so the syncer's budget is the server's own.
    pub fn free_bytes(&self) -> io::Result<u64> {
        self.fs.free_bytes(&self.root)
    }

    /// Removes published revisions other than the current one (kept only so that reads in
    /// progress at the last switch finish); returns whether there was one.
    pub fn free_previous(&self) -> io::Result<bool> {
        let Some((current, _)) = self.current()? else {
            return Ok(false);
        };
        let revisions = self.state.join(REVISIONS);
        let mut freed = false;
        for entry in self.fs.read_dir(&revisions)? {
            let name = entry.name;
            if entry.kind == Kind::Dir && name != current {
                self.remove_all(&revisions.join(&name))?;
                let _ = self.fs.remove_file(&revisions.join(format!("{name}.json")));
                freed = true;
            }
        }
        Ok(freed)
    }

    /// Throws a stage away; the published tree is untouched. (A blocking thread of an abandoned
    /// sync may still be writing into it; what it leaves is removed before the next sync.)
    pub fn discard(&self, stage_dir: &Path) -> io::Result<()> {
        let _ = std::fs::remove_file(self.fs.local_path(&stage_dir.with_extension("download")));
        self.remove_all(stage_dir)
    }

    /// Publishes a finished tree atomically and removes revisions older than the one it replaces.
    pub fn publish(&self, staged: StagedTree) -> io::Result<Published> {
        let seq = staged
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("staging-"))
            .unwrap_or("0")
            .to_string();
        let id = format!("{seq}-{}", short(&staged.manifest.revision));
        let revisions = self.state.join(REVISIONS);
        let manifest_bytes = serde_json::to_vec(&staged.manifest).map_err(io::Error::other)?;
        self.fs.write_durably(&revisions.join(format!("{id}.json")), &manifest_bytes)?;
        if sv_common::bugs::active(sv_common::bugs::Bug::PublishIncompleteTree)
            && let Some(last) = staged.manifest.entries.keys().next_back()
        {
            // Known bug for the simulation's tests: the revision goes out before its last file
            // is in place.
            let _ = self.fs.remove_file(&last.under(&staged.dir));
        }
        self.fs.rename(&staged.dir, &revisions.join(&id))?;
        self.fs.sync_dir(&revisions)?;

        let new_names: std::collections::BTreeSet<String> =
            staged.manifest.entries.keys().filter(|p| p.parent().is_none()).map(|p| p.top().to_string()).collect();
        for name in &new_names {
            self.link_top_level(name, &seq)?;
        }
        self.fs.sync_dir(&self.root)?;
        // The switch: one rename. The link's name is this sync's own, so a second syncer that
        // overlapped (a replacement pod during a partition) never renames a link of another's.
        let tmp = self.state.join(format!("current.tmp-{seq}"));
        let _ = self.fs.remove_file(&tmp);
        self.fs.symlink(&Path::new(REVISIONS).join(&id), &tmp)?;
        self.fs.rename(&tmp, &self.state.join(CURRENT))?;
        self.fs.sync_dir(&self.state)?;
        for name in self.our_top_level_links()? {
            if !new_names.contains(&name) {
                self.fs.remove_file(&self.root.join(&name))?;
            }
        }
        self.collect_garbage(&id)?;
        Ok(Published {
            id,
            revision: staged.manifest.revision.clone(),
            files: staged.manifest.files(),
            bytes: staged.manifest.bytes(),
        })
    }

    fn link_target(name: &str) -> PathBuf {
        Path::new(STATE_DIR).join(CURRENT).join(name)
    }

    /// Makes `<root>/<name>` our link, moving a user's entry of that name aside.
    fn link_top_level(&self, name: &str, seq: &str) -> io::Result<()> {
        let path = self.root.join(name);
        let target = Self::link_target(name);
        match self.fs.metadata(&path) {
            Ok(meta) if meta.kind == Kind::Symlink && self.fs.read_link(&path)? == target => return Ok(()),
            Ok(_) => {
                let aside = self.state.join(DISPLACED).join(seq);
                self.fs.create_dir_all(&aside)?;
                self.fs.rename(&path, &aside.join(name))?;
                tracing::warn!(name, displaced_to = %aside.display(), "the source now has an entry that a user created; moved the user's entry aside");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.fs.symlink(&target, &path)
    }

    /// Top-level names that are links of ours.
    fn our_top_level_links(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.fs.read_dir(&self.root)? {
            let name = entry.name;
            if name == STATE_DIR || entry.kind != Kind::Symlink {
                continue;
            }
            if self.fs.read_link(&self.root.join(&name))? == Self::link_target(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Keeps the current revision and the one before it (reads in progress finish there).
    fn collect_garbage(&self, current: &str) -> io::Result<()> {
        let revisions = self.state.join(REVISIONS);
        let mut ids: Vec<(u64, String)> = Vec::new();
        for entry in self.fs.read_dir(&revisions)? {
            if entry.kind != Kind::Dir {
                continue;
            }
            let name = entry.name;
            let seq = name.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            ids.push((seq, name));
        }
        ids.sort();
        let keep_from = ids.iter().position(|(_, n)| n == current).map_or(0, |i| i.saturating_sub(1));
        for (i, (_, name)) in ids.iter().enumerate() {
            if i < keep_from {
                self.remove_all(&revisions.join(name))?;
                let _ = self.fs.remove_file(&revisions.join(format!("{name}.json")));
            }
        }
        Ok(())
    }

    fn remove_all(&self, path: &Path) -> io::Result<()> {
        match self.fs.remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// A revision shortened for a directory name: alphanumerics only, at most 12.
fn short(revision: &str) -> String {
    let s: String = revision.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    if s.is_empty() { "rev".to_string() } else { s }
}
