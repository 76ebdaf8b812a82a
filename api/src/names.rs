//! Names of everything the operator creates, all derived from the volume's `referenceValue`.
//!
//! The Go operator drew `referenceValue` at random; deriving it from the object's UID keeps it stable
//! across operator restarts and makes a simulation replay byte for byte.

use sha2::{Digest, Sha256};

/// Prefix of derived reference values.
pub const REFERENCE_PREFIX: &str = "sv-";
/// Characters after the prefix.
pub const REFERENCE_SUFFIX_LEN: usize = 12;
/// Longest `referenceValue` accepted from a user, so that every derived name stays within 63
/// characters (the longest suffix added is `-credentials`, 12 characters, plus `nfs-`).
pub const MAX_REFERENCE_LEN: usize = 40;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `sv-` followed by 12 lowercase alphanumerics, a pure function of the UID.
pub fn reference_value_from_uid(uid: &str) -> String {
    let digest = Sha256::digest(uid.as_bytes());
    let mut out = String::with_capacity(REFERENCE_PREFIX.len() + REFERENCE_SUFFIX_LEN);
    out.push_str(REFERENCE_PREFIX);
    // 12 base-36 digits carry ~62 bits; the first 8 digest bytes hold 64, so take them as one number.
    let mut n =
        u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    for _ in 0..REFERENCE_SUFFIX_LEN {
        out.push(BASE36[(n % 36) as usize] as char);
        n /= 36;
    }
    out
}

/// Whether `value` may serve as a `referenceValue`: a DNS-1123 label short enough that every derived
/// name is a valid name too. Values the Go operator generated (`sv-` + 12 characters) qualify.
pub fn is_valid_reference_value(value: &str) -> bool {
    value.len() <= MAX_REFERENCE_LEN && is_dns1123_label(value)
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or `-`, starting and ending alphanumeric.
pub fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// RFC 1123 subdomain: at most 253 characters of dot-separated labels.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

/// The writer path is a contract between the operator and `sv-nfs`, which does not link kube.
pub use sv_common::writer::{NFS_WRITER_TOKEN_KEY, is_valid_writer_token, nfs_writer_path};

/// Names of the objects that belong to one volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildNames {
    reference: String,
}

impl ChildNames {
    pub fn new(reference: impl Into<String>) -> Self {
        Self { reference: reference.into() }
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// StatefulSet, Service and NetworkPolicy of the managed NFS server (`nfs-<ref>`, as in the Go
    /// operator, so its DNS name stays `nfs-<ref>.<ns>.svc`).
    pub fn nfs_server(&self) -> String {
        format!("nfs-{}", self.reference)
    }

    /// PVC holding the managed NFS server's data.
    pub fn nfs_data_claim(&self) -> String {
        format!("nfs-{}-data", self.reference)
    }

    /// ReplicaSet, ServiceAccount, Role and RoleBinding of the syncer.
    pub fn syncer(&self) -> String {
        format!("{}-syncer", self.reference)
    }

    /// The syncer's ReplicaSet for the pod template whose hash is `template_hash`.
    pub fn syncer_replicaset(&self, template_hash: &str) -> String {
        format!("{}-syncer-{template_hash}", self.reference)
    }

    /// Secret holding the credentials the syncer mounts.
    pub fn credentials(&self) -> String {
        format!("{}-credentials", self.reference)
    }

    /// Secret holding the token of the NFS server's writer mount path (see [`nfs_writer_path`]).
    pub fn nfs_writer(&self) -> String {
        format!("nfs-{}-writer", self.reference)
    }

    /// PV and PVC through which the syncer mounts the volume.
    pub fn syncer_storage(&self) -> String {
        self.reference.clone()
    }

    /// PV and PVC through which pods of `namespace` mount the volume: `<ref>-<namespace>`, shortened
    /// with a hash when that would exceed 63 characters.
    pub fn consumer_storage(&self, namespace: &str) -> String {
        let full = format!("{}-{}", self.reference, namespace);
        if full.len() <= 63 {
            return full;
        }
        let digest = Sha256::digest(namespace.as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        // reference + '-' + prefix + '-' + 8 hex = 63. A reference too long to leave room (one
        // that validation refuses) gets no prefix rather than an arithmetic underflow.
        let room = 63usize.saturating_sub(self.reference.len() + 1 + 1 + hash.len());
        let prefix: String = namespace.chars().take(room).collect();
        let prefix = prefix.trim_end_matches('-');
        if prefix.is_empty() {
            format!("{}-{}", self.reference, hash)
        } else {
            format!("{}-{}-{}", self.reference, prefix, hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_value_shape() {
        let r = reference_value_from_uid("0b0f5d8c-3f5e-4c39-9a65-3a6f8d2f7b10");
        assert_eq!(r.len(), 15);
        assert!(r.starts_with("sv-"));
        assert!(r[3..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(r, reference_value_from_uid("0b0f5d8c-3f5e-4c39-9a65-3a6f8d2f7b11"));
    }

    #[test]
    fn consumer_storage_keeps_short_names_readable() {
        let names = ChildNames::new("sv-abcdefghijkl");
        assert_eq!(names.consumer_storage("team-a"), "sv-abcdefghijkl-team-a");
        let long = "n".repeat(63);
        let name = names.consumer_storage(&long);
        assert_eq!(name.len(), 63);
        assert!(is_dns1123_label(&name));
        assert_ne!(name, names.consumer_storage(&format!("{}m", "n".repeat(62))));
    }

    proptest::proptest! {
        #[test]
        fn consumer_names_never_panic_and_valid_references_give_valid_names(
            reference in "[a-z0-9-]{0,80}|\\PC{0,80}",
            namespace in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?|\\PC{0,70}",
        ) {
            let name = ChildNames::new(reference.clone()).consumer_storage(&namespace);
            if is_valid_reference_value(&reference) && is_dns1123_label(&namespace) {
                proptest::prop_assert!(is_dns1123_label(&name), "{name}");
            }
        }
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("a"));
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
    }
}
