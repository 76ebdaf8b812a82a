//! Scrubbing credentials out of text that is logged or stored.
//!
//! A URL may carry credentials in its userinfo (`scheme://user:password@host/…`), whatever its
//! scheme: `https`, `ssh`, `ftp`, `s3`, anything a user types. Every message that can echo a URL
//! (validation messages, the syncer's last error, Events, log lines) goes through
//! [`scrub_userinfo`] before it leaves the process, so a credential typed into a spec never reaches
//! a status, an Event or a log, even where the spec is refused for another reason.

use std::borrow::Cow;

/// What stands in for removed userinfo.
pub const REDACTED: &str = "***";

/// Replaces the userinfo of every `scheme://userinfo@host` in `text` with [`REDACTED`]. The
/// scp-like git form `user@host:path` names only a user and is left alone.
pub fn scrub_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The URL ends at anything that cannot be part of one in prose (white space, quotes,
        // brackets of a message); its authority at the first path, query or fragment delimiter.
        let token_end = after.find([' ', '\t', '\n', '"', '\'', '`', '<', '>', ')', ']', ',']).unwrap_or(after.len());
        let token = &after[..token_end];
        let authority_end = token.find(['/', '?', '#']).unwrap_or(token.len());
        let userinfo_end = match token[..authority_end].rfind('@') {
            Some(i) => Some(i),
            // `user:pa/ss@host`: a password typed with a delimiter in it, not percent-encoded.
            // Scrubbing a little too much of a URL is better than leaking the rest of a password.
            None => token.find('@').filter(|&i| token[..i].contains(':')),
        };
        match userinfo_end {
            Some(i) => {
                out.push_str(REDACTED);
                rest = &after[i..];
            }
            None => rest = after,
        }
        // Copy up to the end of this URL and look for the next.
        let copy = rest.find([' ', '\t', '\n', '"', '\'', '`', '<', '>', ')', ']', ',']).unwrap_or(rest.len());
        out.push_str(&rest[..copy]);
        rest = &rest[copy..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The userinfo of `url` (`scheme://userinfo@host…`), if it carries any.
pub fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].rsplit_once('@').map(|(userinfo, _)| userinfo)
}

/// Whether `url` (`scheme://…`) carries userinfo.
pub fn has_userinfo(url: &str) -> bool {
    userinfo(url).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_of_every_scheme_is_removed() {
        for (text, want) in [
            ("https://u:pw@h/x", "https://***@h/x"),
            ("ssh://user:pw@host/repo.git", "ssh://***@host/repo.git"),
            ("\"ftp://u:pw@h\": scheme \"ftp\" is not supported", "\"ftp://***@h\": scheme \"ftp\" is not supported"),
            ("s3://AKIA:SECRET@bucket", "s3://***@bucket"),
            (
                "x: https://tok@github.com/o/r.git and git://a:b@c/d",
                "x: https://***@github.com/o/r.git and git://***@c/d",
            ),
            ("pw with @ inside: https://u:p@ss@h/x", "pw with @ inside: https://***@h/x"),
            ("pw with / inside: https://u:p/ss@h/x", "pw with / inside: https://***@h/x"),
            ("(https://u:p@h), [ssh://a:b@c]", "(https://***@h), [ssh://***@c]"),
            ("no credentials: https://h/x?a=b@c", "no credentials: https://h/x?a=b@c"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("plain text", "plain text"),
        ] {
            assert_eq!(scrub_userinfo(text), want, "{text}");
        }
        assert!(has_userinfo("ssh://u@h/r") && has_userinfo("ftp://u:p@h"));
        assert!(!has_userinfo("https://h/a@b") && !has_userinfo("git@h:r"));
    }
}
