//! Paths that come from a source (archive entries, S3 keys, remote listings, git trees) are
//! untrusted. Only plain relative paths inside the volume are accepted, and symlinks must point
//! inside the tree.

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

    proptest! {
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
