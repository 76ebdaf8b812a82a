//! Credentials: files in the directory the operator mounts from the volume's credentials Secret
//! (`password`, `private-key`, `access-key`, `secret-key`), re-read before every sync so a rotated
//! Secret applies without a restart. Values never appear in logs, metrics, status or Events:
//! [`Secret`] prints as `[redacted]`, and [`Redactor`] scrubs them from any error text.

use std::fmt;
use std::path::Path;

use base64::Engine;

/// A credential value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The credentials a source may need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub password: Option<Secret>,
    pub private_key: Option<Secret>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
}

impl Credentials {
    /// Reads the credential files present in `dir` (missing files are simply absent).
    pub fn load(dir: Option<&Path>) -> std::io::Result<Self> {
        let Some(dir) = dir else {
            return Ok(Self::default());
        };
        let read = |name: &str| -> std::io::Result<Option<Secret>> {
            match std::fs::read(dir.join(name)) {
                Ok(bytes) => Ok(Some(Secret(String::from_utf8_lossy(&bytes).into_owned()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        Ok(Self {
            password: read("password")?,
            private_key: read("private-key")?,
            access_key: read("access-key")?,
            secret_key: read("secret-key")?,
        })
    }

    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::default();
        for secret in [&self.password, &self.private_key, &self.access_key, &self.secret_key].into_iter().flatten() {
            r.add(secret.expose());
        }
        r
    }
}

/// Removes known secret values from text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    /// Adds a value, with the forms it may take in messages: trimmed, base64, percent-encoded, and
    /// (for multi-line keys) each long line.
    pub fn add(&mut self, value: &str) {
        let trimmed = value.trim();
        let mut forms = vec![
            trimmed.to_string(),
            base64::engine::general_purpose::STANDARD.encode(trimmed),
            percent_encode(trimmed),
        ];
        forms.extend(trimmed.lines().map(str::trim).filter(|l| l.len() >= 16).map(str::to_string));
        for form in forms {
            // Very short values would redact ordinary words; four characters is the floor.
            if form.len() >= 4 && !self.needles.contains(&form) {
                self.needles.push(form);
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    /// Removes the known values, and the userinfo of any URL (a source URL may carry credentials
    /// the syncer was never told are secret).
    pub fn redact(&self, text: &str) -> String {
        // Known bug for the simulation's tests: the message says which credential was presented,
        // unredacted.
        if sv_common::bugs::active(sv_common::bugs::Bug::SecretInCondition)
            && let Some(presented) = self.needles.last()
        {
            return format!("{text} (presented {presented:?})");
        }
        let mut out = sv_api::redact::scrub_userinfo(text).into_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "[redacted]");
            }
        }
        out
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo_even_when_the_secret_is_unknown() {
        let r = Redactor::default();
        assert_eq!(
            r.redact("fetching ssh://u:unregistered@h/r.git failed; ftp://a:b@c too"),
            "fetching ssh://***@h/r.git failed; ftp://***@c too"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn redaction_covers_encoded_forms() {
        let mut r = Redactor::default();
        r.add("p@ss word!\n");
        let text = format!(
            "auth p@ss word! then {} then p%40ss%20word%21",
            base64::engine::general_purpose::STANDARD.encode("p@ss word!")
        );
        let clean = r.redact(&text);
        assert!(!clean.contains("p@ss") && !clean.contains("p%40ss") && !clean.contains("cEBzcyB3b3JkIQ"), "{clean}");
    }

    #[test]
    fn files_are_read_when_present() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("password"), "pw").expect("write");
        let c = Credentials::load(Some(dir.path())).expect("load");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("pw"));
        assert!(c.private_key.is_none());
        assert_eq!(Credentials::load(None).expect("none"), Credentials::default());
    }
}
