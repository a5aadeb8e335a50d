//! Topics: a keyed HMAC-SHA256 of a collection's canonical path with a per-installation secret
//! (the draft's *Terminology*), base64url. Stable across restarts (the secret is persisted) and
//! across URL aliases (percent-encoding, `.`/`..`, double and trailing slashes); not reversible
//! to the URL, so push services learn nothing from it.

use std::path::Path;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The topic key.
#[derive(Clone)]
pub struct TopicKey(hmac::Key);

impl std::fmt::Debug for TopicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicKey(***)")
    }
}

pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn percent_encode_segment(seg: &[u8], out: &mut String) {
    for &c in seg {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
}

/// Whether a request path is free of what could make the upstream resolve it differently from
/// the gateway: backslashes, encoded slashes or backslashes, and `.`/`..` segments (also
/// percent-encoded). The gateway refuses such paths, so that the path it checks permissions on,
/// the topic it computes and the path it forwards are one and the same.
pub fn path_is_safe(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%5c") || lower.contains("%2f") {
        return false;
    }
    path.split('/').all(|seg| {
        let d = percent_decode(seg);
        d != b"." && d != b".."
    })
}

/// The canonical form of a collection path: decoded, dot segments resolved, empty segments
/// dropped, re-encoded uniformly, with a trailing slash. `None` for a path that climbs above the
/// root.
pub fn canonical_path(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for raw in path.split('/') {
        let seg = percent_decode(raw);
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop()?;
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::from("/");
    for s in &segments {
        percent_encode_segment(s, &mut out);
        out.push('/');
    }
    Some(out)
}

/// The canonical path of the collection that contains `path` (`/a/b/c.ics` → `/a/b/`).
pub fn parent_path(path: &str) -> Option<String> {
    let c = canonical_path(path)?;
    let trimmed = c.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(c[..=cut].to_owned())
}

impl TopicKey {
    /// A key from secret bytes.
    pub fn new(secret: &[u8]) -> Self {
        TopicKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Reads the secret from `path` (an error of kind `NotFound` when there is none: only the
    /// gateway creates it, with [`TopicKey::load_or_create`]).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let s = std::fs::read_to_string(path)?;
        let bytes = B64
            .decode(s.trim())
            .map_err(|_| std::io::Error::other(format!("{} does not hold a base64url secret", path.display())))?;
        if bytes.len() < 16 {
            return Err(std::io::Error::other(format!("{} holds a secret shorter than 16 bytes", path.display())));
        }
        Ok(Self::new(&bytes))
    }

    /// Reads the secret from `path`, or creates it there (32 random bytes, base64url, mode 0600).
    pub fn load_or_create(path: &Path) -> std::io::Result<(Self, bool)> {
        match Self::load(path) {
            Ok(key) => Ok((key, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                aws_lc_rs::rand::fill(&mut secret).map_err(|_| std::io::Error::other("no randomness"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(path, &B64.encode(secret))?;
                Ok((Self::new(&secret), true))
            }
            Err(e) => Err(e),
        }
    }

    /// The topic of the collection at `path` (any alias of it), or `None` for an invalid path.
    pub fn topic(&self, path: &str) -> Option<String> {
        let canonical = canonical_path(path)?;
        Some(self.topic_of_canonical(&canonical))
    }

    /// The topic of an already canonical path.
    pub fn topic_of_canonical(&self, canonical: &str) -> String {
        let tag = hmac::sign(&self.0, format!("davpush-topic:{canonical}").as_bytes());
        B64.encode(&tag.as_ref()[..16])
    }

    /// A MAC for registration tokens (a different label than topics).
    pub fn mac(&self, label: &str, data: &[u8]) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(label.as_bytes());
        ctx.update(b"\0");
        ctx.update(data);
        let tag = ctx.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }

    /// Verifies a MAC made by [`TopicKey::mac`] in constant time.
    pub fn verify(&self, label: &str, data: &[u8], mac: &[u8]) -> bool {
        let expected = self.mac(label, data);
        mac.len() == expected.len() && aws_lc_rs::constant_time::verify_slices_are_equal(&expected, mac).is_ok()
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_have_one_canonical_path() {
        let c = canonical_path("/alice/cal%201/").unwrap();
        assert_eq!(c, "/alice/cal%201/");
        for alias in
            ["/alice/cal 1", "/alice//cal%201", "/alice/./cal%201/", "/alice/x/../cal%201", "/%61lice/cal%201/"]
        {
            assert_eq!(canonical_path(alias).unwrap(), c, "{alias}");
        }
        assert_eq!(canonical_path("/"), Some("/".into()));
        assert_eq!(canonical_path("/../etc"), None);
        assert_eq!(parent_path("/alice/cal/e1.ics"), Some("/alice/cal/".into()));
        assert_eq!(parent_path("/alice/cal/"), Some("/alice/".into()));
        assert_eq!(parent_path("/"), None);
    }

    #[test]
    fn unsafe_paths_are_recognised() {
        for p in ["/alice/cal/", "/alice/cal%201/e.ics", "/a/.hidden/", "/"] {
            assert!(path_is_safe(p), "{p}");
        }
        for p in
            ["/bob/cal/x\\..\\..\\alice", "/bob/%5c..", "/a/%2e%2e/etc", "/a/../b", "/a/./b", "/a/%2E/b", "/a%2fb/"]
        {
            assert!(!path_is_safe(p), "{p}");
        }
    }

    #[test]
    fn topics_are_keyed_and_stable() {
        let k = TopicKey::new(b"0123456789abcdef0123456789abcdef");
        let t = k.topic("/alice/cal/").unwrap();
        assert_eq!(t.len(), 22);
        assert_eq!(k.topic("/alice//cal").unwrap(), t);
        assert_ne!(k.topic("/alice/cal2/").unwrap(), t);
        assert_ne!(TopicKey::new(b"another-secret-another-secret-xx").topic("/alice/cal/").unwrap(), t);
        let mac = k.mac("reg", b"data");
        assert!(k.verify("reg", b"data", &mac));
        assert!(!k.verify("reg", b"datA", &mac));
        assert!(!k.verify("other", b"data", &mac));
    }
}
