//! The writer path of a managed NFS server: a contract between the operator, which issues the
//! token and writes it into the syncer's PersistentVolume, and `sv-nfs`, which serves the writer's
//! rights only through it.

/// Key of the writer token in its Secret.
pub const NFS_WRITER_TOKEN_KEY: &str = "token";

/// The MOUNT path of a managed NFS server that gives the writer's rights (the syncer's): the
/// export itself, reached through a path only the holder of the token knows. Consumers mount `/`.
pub fn nfs_writer_path(token: &str) -> String {
    format!("/.sv-writer-{token}")
}

/// Whether `token` has the shape the operator issues: 32 lowercase hex digits (128 bits).
pub fn is_valid_writer_token(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
