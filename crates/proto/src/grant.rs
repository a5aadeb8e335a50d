//! Subscription grants: proof that a subscriber may read the collection behind a topic.
//!
//! A topic is public (it appears in PROPFIND answers and in every push message), so knowing it
//! must not be enough to receive a collection's changes. Whoever checked that a user may read
//! a collection (the gateway, with the upstream WebDAV server; an application server, with its
//! own permissions) signs a short-lived *grant* naming the collection's topic, and the Director
//! subscribes only with a valid grant for the topic (`subscription.grants = "required"`).
//!
//! The format (docs/protocol.md §3.3), easy to produce in any language:
//!
//! ```text
//! grant   = base64url(payload) "." base64url(HMAC-SHA256(key, "davpush-grant-v1." base64url(payload)))
//! payload = {"v":1,"e":<expiry, unix seconds>,"t":["<topic>", …],"u":"<user>"}
//! ```
//!
//! `u` is optional: an opaque name of the user the signer checked (the gateway puts a hash of
//! the user), under which the Director counts subscriptions (`subscription.max_per_token`).
//!
//! base64url without padding. Keys are shared secrets of at least 32 bytes, one per line of a
//! key file (base64url); the first signs, every one verifies (so keys can be rotated).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// What the MAC covers besides the payload, so a grant is never mistaken for another signed value.
const LABEL: &[u8] = b"davpush-grant-v1.";
/// Longest grant accepted, bytes (a grant names one topic in practice; a page may name a few).
pub const MAX_GRANT_LEN: usize = 8 * 1024;
/// Shortest key, bytes.
pub const MIN_KEY_LEN: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    v: u8,
    e: i64,
    t: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
}

/// What a valid grant says besides its topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// The user the signer checked, if it named one (opaque).
    pub user: Option<String>,
}

/// The keys that sign and verify grants.
#[derive(Clone)]
pub struct GrantKeys {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for GrantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrantKeys({} keys, ***)", self.keys.len())
    }
}

/// A key file could not be read as keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantKeyError {
    /// No key in it.
    #[error("holds no key (one base64url key of at least {MIN_KEY_LEN} bytes per line)")]
    Empty,
    /// A line is not base64url, or too short. The line's content is never shown: it is a secret.
    #[error("line {0} is not a base64url key of at least {MIN_KEY_LEN} bytes")]
    BadLine(usize),
}

/// Why a grant was refused. Messages never repeat the grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// None was given, and one is required.
    #[error(
        "a grant for this topic is required: ask the server that publishes the topic for one (docs/protocol.md §3.3)"
    )]
    Missing,
    /// Not a grant at all (shape, size, encoding).
    #[error("the grant is malformed")]
    Malformed,
    /// The signature does not verify with any key.
    #[error("the grant's signature is not valid")]
    Signature,
    /// Valid, but expired.
    #[error("the grant has expired; ask for a new one")]
    Expired,
    /// Valid, but for other topics.
    #[error("the grant does not name this topic")]
    OtherTopic,
}

impl GrantKeys {
    /// Reads a key file's text: one base64url key per line; empty lines and `#` comments skipped.
    pub fn parse(text: &str) -> Result<GrantKeys, GrantKeyError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let raw = B64.decode(line.trim_end_matches('=')).map_err(|_| GrantKeyError::BadLine(n + 1))?;
            if raw.len() < MIN_KEY_LEN {
                return Err(GrantKeyError::BadLine(n + 1));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &raw));
        }
        if keys.is_empty() {
            return Err(GrantKeyError::Empty);
        }
        Ok(GrantKeys { keys })
    }

    /// A new random key, as a key file's line (no newline).
    pub fn generate_line() -> String {
        let mut raw = [0u8; MIN_KEY_LEN];
        aws_lc_rs::rand::fill(&mut raw).expect("the system's random source works");
        B64.encode(raw)
    }

    /// A grant for `topics` valid until `expires` (unix seconds), signed with the first key.
    pub fn sign<'a>(&self, topics: impl IntoIterator<Item = &'a str>, expires: i64) -> String {
        self.sign_for(None, topics, expires)
    }

    /// Like [`GrantKeys::sign`], naming the `user` that was checked.
    pub fn sign_for<'a>(&self, user: Option<&str>, topics: impl IntoIterator<Item = &'a str>, expires: i64) -> String {
        let payload = Payload {
            v: 1,
            e: expires,
            t: topics.into_iter().map(str::to_owned).collect(),
            u: user.map(str::to_owned),
        };
        let encoded = B64.encode(serde_json::to_vec(&payload).expect("a grant serializes"));
        let tag = hmac::sign(&self.keys[0], &[LABEL, encoded.as_bytes()].concat());
        format!("{encoded}.{}", B64.encode(tag.as_ref()))
    }

    /// Checks that `grant` is valid at `now` and names `topic`.
    pub fn verify(&self, grant: Option<&str>, topic: &str, now: i64) -> Result<Grant, GrantError> {
        let grant = grant.ok_or(GrantError::Missing)?;
        if grant.len() > MAX_GRANT_LEN {
            return Err(GrantError::Malformed);
        }
        let (encoded, mac) = grant.split_once('.').ok_or(GrantError::Malformed)?;
        let mac = B64.decode(mac).map_err(|_| GrantError::Malformed)?;
        let signed = [LABEL, encoded.as_bytes()].concat();
        // Every key is tried (constant time each), so which key matched does not show either.
        let mut valid = false;
        for k in &self.keys {
            valid |= hmac::verify(k, &signed, &mac).is_ok();
        }
        if !valid {
            return Err(GrantError::Signature);
        }
        let payload: Payload = B64
            .decode(encoded)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .filter(|p: &Payload| p.v == 1)
            .ok_or(GrantError::Malformed)?;
        if payload.e < now {
            return Err(GrantError::Expired);
        }
        if !payload.t.iter().any(|t| t == topic) {
            return Err(GrantError::OtherTopic);
        }
        Ok(Grant { user: payload.u })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[&str]) -> GrantKeys {
        GrantKeys::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn a_grant_verifies_for_its_topics_until_it_expires() {
        let k = keys(&[&GrantKeys::generate_line()]);
        let g = k.sign(["cal-a", "cal-b"], 1000);
        assert_eq!(k.verify(Some(&g), "cal-a", 999), Ok(Grant::default()));
        assert_eq!(k.verify(Some(&g), "cal-b", 1000), Ok(Grant::default()));
        let g = k.sign_for(Some("u1"), ["cal-a"], 1000);
        assert_eq!(k.verify(Some(&g), "cal-a", 0), Ok(Grant { user: Some("u1".into()) }));
        assert_eq!(k.verify(Some(&g), "cal-c", 999), Err(GrantError::OtherTopic));
        assert_eq!(k.verify(Some(&g), "cal-a", 1001), Err(GrantError::Expired));
        assert_eq!(k.verify(None, "cal-a", 0), Err(GrantError::Missing));
    }

    #[test]
    fn forged_altered_and_foreign_grants_are_refused() {
        let k = keys(&[&GrantKeys::generate_line()]);
        let other = keys(&[&GrantKeys::generate_line()]);
        let g = k.sign(["cal-a"], 1000);
        assert_eq!(other.verify(Some(&g), "cal-a", 0), Err(GrantError::Signature));
        // The payload swapped for one naming another topic, the MAC kept.
        let (_, mac) = g.split_once('.').unwrap();
        let forged = format!("{}.{mac}", B64.encode(br#"{"v":1,"e":1000,"t":["cal-b"]}"#));
        assert_eq!(k.verify(Some(&forged), "cal-b", 0), Err(GrantError::Signature));
        for junk in ["", ".", "abc", "a.b.c", "!!!.???"] {
            assert!(k.verify(Some(junk), "cal-a", 0).is_err(), "{junk}");
        }
        assert_eq!(k.verify(Some(&"a".repeat(MAX_GRANT_LEN + 1)), "cal-a", 0), Err(GrantError::Malformed));
    }

    #[test]
    fn every_key_of_the_file_verifies_and_the_first_signs() {
        let (a, b) = (GrantKeys::generate_line(), GrantKeys::generate_line());
        let old = keys(&[&a]);
        let rotated = keys(&["# new key first", &b, "", &a]);
        assert!(rotated.verify(Some(&old.sign(["t"], 10)), "t", 0).is_ok());
        assert_eq!(old.verify(Some(&rotated.sign(["t"], 10)), "t", 0), Err(GrantError::Signature));
    }

    #[test]
    fn key_files_are_checked_without_showing_their_content() {
        assert_eq!(GrantKeys::parse("\n# only a comment\n").unwrap_err(), GrantKeyError::Empty);
        let short = B64.encode([7u8; 16]);
        let e = GrantKeys::parse(&format!("{}\n{short}\n", GrantKeys::generate_line())).unwrap_err();
        assert_eq!(e, GrantKeyError::BadLine(2));
        assert!(!e.to_string().contains(&short));
        assert!(!format!("{:?}", keys(&[&GrantKeys::generate_line()])).contains('='));
    }

    #[test]
    fn the_documented_format_is_what_is_produced() {
        // An independent computation of the documented construction (payload, label, HMAC).
        let line = B64.encode([1u8; 32]);
        let k = keys(&[&line]);
        let g = k.sign(["t1"], 42);
        let payload = B64.encode(br#"{"v":1,"e":42,"t":["t1"]}"#);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1u8; 32]);
        let mac = hmac::sign(&key, format!("davpush-grant-v1.{payload}").as_bytes());
        assert_eq!(g, format!("{payload}.{}", B64.encode(mac.as_ref())));
    }
}
