//! Relay keys. **Installation keys** are issued to one Director each (`davpush relay
//! issue-key`), can be revoked (`revoke-key`), and are stored only as SHA-256 hashes in the
//! keys file. An installation key has the form `dpr1.<id>.<secret>`: the id names it in logs,
//! metrics and FCM topic names; the secret (256 random bits) is never stored. **App keys** are
//! the draft's pseudo-public keys built into a client app: anyone who unpacks the app has
//! them, so they allow only per-token pushes, at tighter limits.
//!
//! The running relay re-reads the keys file when it changes, so revocation needs no restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// One issued key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    /// Public id.
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub sha256: String,
    /// Who it was issued to (free text).
    #[serde(default)]
    pub label: String,
    /// Issued at, unix seconds.
    pub created: i64,
    /// Revoked at, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

/// The keys file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Issued keys.
    pub keys: Vec<StoredKey>,
}

/// A keys file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing failed.
    #[error("keys file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a keys file.
    #[error("keys file {path} is malformed: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No key has this id.
    #[error("no key with id `{0}`")]
    Unknown(String),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash(secret: &str) -> String {
    hex(digest(&SHA256, secret.as_bytes()).as_ref())
}

impl KeysFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<KeysFile, KeysError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| KeysError::Malformed { path: path.display().to_string(), message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(source) => Err(KeysError::Io { path: path.display().to_string(), source }),
        }
    }

    /// Writes `path` atomically (temporary file, then rename), mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), KeysError> {
        use std::io::Write;
        let io = |source| KeysError::Io { path: path.display().to_string(), source };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(serde_json::to_string_pretty(self).expect("serializes").as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Issues a new key in `path`; returns its id and the full key (shown once, never stored).
pub fn issue(path: &Path, label: &str, now: i64) -> Result<(String, String), KeysError> {
    let mut file = KeysFile::read(path)?;
    let mut id_bytes = [0u8; 5];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id_bytes).and_then(|()| getrandom::fill(&mut secret)).expect("the OS has randomness");
    let id = hex(&id_bytes);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    file.keys.push(StoredKey {
        id: id.clone(),
        sha256: hash(&secret),
        label: label.to_owned(),
        created: now,
        revoked: None,
    });
    file.write(path)?;
    Ok((id.clone(), format!("dpr1.{id}.{secret}")))
}

/// Revokes key `id` in `path`.
pub fn revoke(path: &Path, id: &str, now: i64) -> Result<(), KeysError> {
    let mut file = KeysFile::read(path)?;
    let k = file.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| KeysError::Unknown(id.to_owned()))?;
    k.revoked.get_or_insert(now);
    file.write(path)
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An installation key (its id).
    Installation(String),
    /// A pseudo-public app key.
    App,
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a key we know.
    Unknown,
    /// Issued, then revoked.
    Revoked,
}

/// Issued keys by id, and the keys file's (mtime, length) when read.
type Issued = (HashMap<String, StoredKey>, Option<(SystemTime, u64)>);

/// The keys a running relay accepts.
#[derive(Debug)]
pub struct Keys {
    path: Option<PathBuf>,
    app_keys: Vec<String>,
    issued: RwLock<Issued>,
}

impl Keys {
    /// Loads the keys file at `path` (if any) and the app keys.
    pub fn load(path: Option<PathBuf>, app_keys: Vec<String>) -> Result<Keys, KeysError> {
        let keys = Keys { path, app_keys, issued: RwLock::new((HashMap::new(), None)) };
        keys.reload()?;
        Ok(keys)
    }

    /// Re-reads the keys file if it changed; returns whether it did.
    pub fn reload(&self) -> Result<bool, KeysError> {
        let Some(path) = &self.path else { return Ok(false) };
        let mtime = std::fs::metadata(path).and_then(|m| Ok((m.modified()?, m.len()))).ok();
        if mtime.is_some() && self.issued.read().unwrap_or_else(|e| e.into_inner()).1 == mtime {
            return Ok(false);
        }
        let file = KeysFile::read(path)?;
        let map = file.keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        *self.issued.write().unwrap_or_else(|e| e.into_inner()) = (map, mtime);
        Ok(true)
    }

    /// Checks a presented key.
    pub fn check(&self, presented: &str) -> Result<Caller, Refusal> {
        if let Some(rest) = presented.strip_prefix("dpr1.") {
            let (id, secret) = rest.split_once('.').ok_or(Refusal::Unknown)?;
            let issued = self.issued.read().unwrap_or_else(|e| e.into_inner());
            let k = issued.0.get(id).ok_or(Refusal::Unknown)?;
            if !bool::from(hash(secret).as_bytes().ct_eq(k.sha256.as_bytes())) {
                return Err(Refusal::Unknown);
            }
            if k.revoked.is_some() {
                return Err(Refusal::Revoked);
            }
            return Ok(Caller::Installation(id.to_owned()));
        }
        // Compare with every app key, in constant time each.
        let mut ok = false;
        for k in &self.app_keys {
            ok |= bool::from(presented.as_bytes().ct_eq(k.as_bytes()));
        }
        if ok { Ok(Caller::App) } else { Err(Refusal::Unknown) }
    }

    /// (active, revoked) installation keys.
    pub fn counts(&self) -> (usize, usize) {
        let issued = self.issued.read().unwrap_or_else(|e| e.into_inner());
        let revoked = issued.0.values().filter(|k| k.revoked.is_some()).count();
        (issued.0.len() - revoked, revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_check_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (id, key) = issue(&path, "dav.example.org", 1).unwrap();
        assert!(key.starts_with(&format!("dpr1.{id}.")));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(key.rsplit('.').next().unwrap()), "the secret is not stored");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let keys = Keys::load(Some(path.clone()), vec!["app-key-0123456789".into()]).unwrap();
        assert_eq!(keys.check(&key), Ok(Caller::Installation(id.clone())));
        assert_eq!(keys.check("app-key-0123456789"), Ok(Caller::App));
        assert_eq!(keys.check(&format!("{key}x")), Err(Refusal::Unknown));
        assert_eq!(keys.check("dpr1.nope.x"), Err(Refusal::Unknown));
        assert_eq!(keys.check("app-key"), Err(Refusal::Unknown));
        let read_at = std::fs::metadata(&path).unwrap().modified().unwrap();
        revoke(&path, &id, 2).unwrap();
        // A reload notices a change by (mtime, length); on a filesystem with coarse timestamps
        // the rewrite may keep the mtime, so the test sets one that differs (no waiting).
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(read_at + std::time::Duration::from_secs(2)).unwrap();
        assert!(matches!(revoke(&path, "zzz", 2), Err(KeysError::Unknown(_))));
        keys.reload().unwrap();
        assert_eq!(keys.check(&key), Err(Refusal::Revoked));
        assert_eq!(keys.counts(), (0, 1));
    }
}
