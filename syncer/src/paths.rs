//! Paths that come from a source (archive entries, S3 keys, remote listings, git trees) are
//! untrusted. Only plain relative paths inside the volume are accepted, and symlinks must point
//! inside the tree.
//!
//! A symlink is checked twice. [`check_link_target`] refuses at once a target that leaves the tree
//! by its text alone. That is not enough: a target names other links of the tree, which the kernel
//! follows (`a/b/c/up -> ../../..` is harmless, but `a/b/c/esc -> up/../../../..` then resolves
//! to `/`, although its text never climbs above the root). So once the whole tree is known,
//! [`resolve_link`] resolves every link as the kernel would, following the tree's own links, and
//! refuses any that leaves it.

use std::fmt;
use std::path::{Path, PathBuf};

/// The syncer's own state directory at the volume root.
pub const STATE_DIR: &str = ".sharedvolume";

/// Why a path from the source was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?} is an absolute path")]
    Absolute(String),
    #[error("{0:?} climbs out of the tree with '..'")]
    Escapes(String),
    #[error("{0:?} is not a valid file name (empty, '.', NUL, or too long)")]
    Invalid(String),
    #[error("{0:?} uses the name {STATE_DIR}, which the syncer reserves for its own state")]
    Reserved(String),
    #[error("symlink {link:?} points to {target:?}, outside the synced tree")]
    LinkEscapes { link: String, target: String },
}

/// A validated relative path: one or more normal components joined by `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Parses a path from a source. A leading `./` and a trailing `/` are tolerated; `..`, empty
    /// components, NUL, absolute paths and the reserved state directory are not.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.starts_with('/') {
            return Err(PathError::Absolute(raw.to_string()));
        }
        let trimmed = raw.strip_prefix("./").unwrap_or(raw).trim_end_matches('/');
        if trimmed.is_empty() || trimmed.len() > 4096 {
            return Err(PathError::Invalid(raw.to_string()));
        }
        for (i, part) in trimmed.split('/').enumerate() {
            match part {
                ".." => return Err(PathError::Escapes(raw.to_string())),
                "" | "." => return Err(PathError::Invalid(raw.to_string())),
                p if p.len() > 255 || p.contains('\0') => return Err(PathError::Invalid(raw.to_string())),
                STATE_DIR if i == 0 => return Err(PathError::Reserved(raw.to_string())),
                _ => {}
            }
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The first component (the name at the volume root).
    pub fn top(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The parent directory, if any.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_string()))
    }

    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::parse(&format!("{}/{}", self.0, name))
    }

    /// The path under `root` on disk.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        RelPath::parse(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

/// Checks that a symlink at `link` with `target` resolves inside the tree, lexically (the target is
/// resolved against the link's directory; `..` may not climb above the root, absolute targets
/// are refused).
pub fn check_link_target(link: &RelPath, target: &str) -> Result<(), PathError> {
    let escapes = || PathError::LinkEscapes { link: link.to_string(), target: target.to_string() };
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(escapes());
    }
    let parent = link.parent();
    let mut parts: Vec<&str> =
        parent.as_ref().map_or("", RelPath::as_str).split('/').filter(|s| !s.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(escapes)?;
            }
            p => parts.push(p),
        }
    }
    // A link to the root's state directory would expose the syncer's state.
    if parts.first() == Some(&STATE_DIR) {
        return Err(escapes());
    }
    Ok(())
}

/// What a path of the tree being built is, for [`resolve_link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node<'a> {
    Dir,
    File,
    Symlink(&'a str),
    /// Not in the tree: the rest of the path is resolved by its text (nothing below an absent
    /// name can be a link of the tree).
    Absent,
}

/// Links followed in one resolution before it counts as a loop (Linux's own limit is 40).
pub const MAX_LINK_HOPS: usize = 40;

/// Resolves the symlink at `link` (with `target`) the way the kernel would, following the links of
/// the tree that `lookup` describes, and fails if any step leaves the tree, reaches the syncer's
/// state, or loops. Returns the path it resolves to (which may not exist: dangling links are
/// allowed, as git allows them).
pub fn resolve_link<'a>(
    link: &RelPath,
    target: &'a str,
    lookup: impl Fn(&str) -> Node<'a>,
) -> Result<Vec<String>, PathError> {
    let escapes = || PathError::LinkEscapes { link: link.to_string(), target: target.to_string() };
    // Only real directories are ever in `resolved`: links are replaced by their targets, so `..`
    // pops to the directory the kernel would reach.
    let mut resolved: Vec<String> =
        link.parent().map(|p| p.components().map(str::to_string).collect()).unwrap_or_default();
    let mut pending: std::collections::VecDeque<&'a str> = target.split('/').collect();
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(escapes());
    }
    let mut hops = 0usize;
    while let Some(part) = pending.pop_front() {
        match part {
            "" | "." => {}
            ".." => {
                resolved.pop().ok_or_else(escapes)?;
            }
            name => {
                resolved.push(name.to_string());
                if resolved.len() == 1 && name == STATE_DIR {
                    return Err(escapes());
                }
                match lookup(&resolved.join("/")) {
                    Node::Dir | Node::Absent => {}
                    // A file in the middle of a path is ENOTDIR to the kernel: nothing is reached.
                    Node::File => {
                        if pending.iter().any(|p| !p.is_empty() && *p != ".") {
                            return Ok(resolved);
                        }
                    }
                    Node::Symlink(next) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS || next.is_empty() || next.starts_with('/') {
                            return Err(escapes());
                        }
                        resolved.pop();
                        for p in next.split('/').rev() {
                            pending.push_front(p);
                        }
                    }
                }
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_relative_paths() {
        assert_eq!(RelPath::parse("a/b.txt").map(|p| p.0), Ok("a/b.txt".to_string()));
        assert_eq!(RelPath::parse("./a/").map(|p| p.0), Ok("a".to_string()));
        assert_eq!(RelPath::parse("a/b").expect("ok").top(), "a");
    }

    #[test]
    fn refuses_hostile_paths() {
        for bad in
            ["/etc/passwd", "../x", "a/../../x", "a//b", "", ".", "a/./b", "a\0b", ".sharedvolume/x", ".sharedvolume"]
        {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(RelPath::parse("a/.sharedvolume").is_ok(), "only the root name is reserved");
    }

    #[test]
    fn symlinks_must_stay_inside() {
        let link = RelPath::parse("a/b/link").expect("ok");
        assert!(check_link_target(&link, "../c").is_ok());
        assert!(check_link_target(&link, "../../top").is_ok());
        assert!(check_link_target(&link, "../../../out").is_err());
        assert!(check_link_target(&link, "/etc/passwd").is_err());
        assert!(check_link_target(&link, "../../.sharedvolume/current").is_err());
        let top = RelPath::parse("link").expect("ok");
        assert!(check_link_target(&top, "..").is_err());
        assert!(check_link_target(&top, "a/../..").is_err());
    }

    fn tree_of<'a>(entries: &'a [(&'a str, Node<'a>)]) -> impl Fn(&str) -> Node<'a> + 'a {
        move |path| entries.iter().find(|(p, _)| *p == path).map_or(Node::Absent, |(_, n)| *n)
    }

    #[test]
    fn a_chain_of_links_that_leaves_the_tree_is_refused() {
        let entries = [
            ("a", Node::Dir),
            ("a/b", Node::Dir),
            ("a/b/c", Node::Dir),
            ("a/b/c/up", Node::Symlink("../../..")),
            ("a/b/c/esc", Node::Symlink("up/../../../..")),
        ];
        let up = RelPath::parse("a/b/c/up").expect("ok");
        assert_eq!(resolve_link(&up, "../../..", tree_of(&entries)), Ok(vec![]), "up is the root itself");
        let esc = RelPath::parse("a/b/c/esc").expect("ok");
        assert!(check_link_target(&esc, "up/../../../..").is_ok(), "the text alone stays inside");
        assert!(resolve_link(&esc, "up/../../../..", tree_of(&entries)).is_err(), "followed, it is /");
    }

    #[test]
    fn deep_chains_loops_and_links_through_links() {
        // l0 -> l1 -> ... -> l9 -> d, all inside: allowed.
        let names: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        let mut entries: Vec<(&str, Node)> = vec![("d", Node::Dir)];
        for i in 0..10 {
            let next = if i == 9 { "d" } else { names[i + 1].as_str() };
            entries.push((names[i].as_str(), Node::Symlink(next)));
        }
        let l0 = RelPath::parse("l0").expect("ok");
        assert_eq!(resolve_link(&l0, "l1", tree_of(&entries)), Ok(vec!["d".to_string()]));
        // A link through a directory link that climbs: d2/x -> ../l/.. where l -> d2/deeper/.. -> root.
        let entries = [("d2", Node::Dir), ("l", Node::Symlink(".")), ("d2/x", Node::Symlink("../l/.."))];
        let x = RelPath::parse("d2/x").expect("ok");
        assert!(resolve_link(&x, "../l/..", tree_of(&entries)).is_err(), "l is the root; its parent is outside");
        // A loop.
        let entries = [("p", Node::Symlink("q")), ("q", Node::Symlink("p"))];
        let p = RelPath::parse("p").expect("ok");
        assert!(resolve_link(&p, "q", tree_of(&entries)).is_err());
        // A link through a file stops there (ENOTDIR), and a dangling link is allowed.
        let entries = [("f", Node::File)];
        let via = RelPath::parse("via").expect("ok");
        assert!(resolve_link(&via, "f/../..", tree_of(&entries)).is_ok());
        assert!(resolve_link(&via, "missing/file", tree_of(&entries)).is_ok());
        assert!(resolve_link(&via, "missing/../..", tree_of(&entries)).is_err());
        // A link in the tree whose own target is absolute poisons every link through it.
        let entries = [("abs", Node::Symlink("/etc"))];
        assert!(resolve_link(&via, "abs/passwd", tree_of(&entries)).is_err());
        // The syncer's state is never reachable.
        let entries = [("s", Node::Symlink("."))];
        assert!(resolve_link(&via, "s/.sharedvolume/current", tree_of(&entries)).is_err());
    }

    proptest! {
        /// Whatever links a tree of a few names holds, a link that resolve_link accepts, resolved
        /// by the real kernel on disk, stays inside the tree.
        #[test]
        fn accepted_links_stay_inside_on_a_real_disk(
            links in proptest::collection::vec(("[abc]{1,2}", "(\\.\\.|[abc]{1,2}|\\.)(/(\\.\\.|[abc]{1,2})){0,4}"), 1..6),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("root");
            std::fs::create_dir_all(root.join("d")).expect("mkdir");
            let mut entries: Vec<(String, String)> = Vec::new();
            for (name, target) in &links {
                let name = format!("d/{name}");
                if entries.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                std::os::unix::fs::symlink(target, root.join(&name)).expect("symlink");
                entries.push((name, target.clone()));
            }
            let lookup = |path: &str| -> Node<'_> {
                if path == "d" {
                    return Node::Dir;
                }
                entries.iter().find(|(n, _)| n == path).map_or(Node::Absent, |(_, t)| Node::Symlink(t.as_str()))
            };
            let canonical_root = root.canonicalize().expect("root");
            for (name, target) in &entries {
                let link = RelPath::parse(name).expect("name");
                if resolve_link(&link, target, lookup).is_ok() {
                    // Where the kernel lands: the deepest existing ancestor must be inside.
                    let mut probe = root.join(name);
                    let landed = loop {
                        match probe.canonicalize() {
                            Ok(p) => break Some(p),
                            Err(_) => match probe.parent() {
                                Some(parent) if parent.starts_with(&root) => probe = parent.to_path_buf(),
                                _ => break None,
                            },
                        }
                    };
                    if let Some(landed) = landed {
                        prop_assert!(landed.starts_with(&canonical_root), "{name} -> {target} reached {landed:?}");
                    }
                }
            }
        }

        #[test]
        fn parsed_paths_never_escape(raw in "[a-z./]{0,24}") {
            if let Ok(p) = RelPath::parse(&raw) {
                prop_assert!(!p.as_str().starts_with('/'));
                prop_assert!(p.components().all(|c| !c.is_empty() && c != "." && c != ".."));
                let root = Path::new("/root-of-tree");
                prop_assert!(p.under(root).starts_with(root));
            }
        }
    }
}
