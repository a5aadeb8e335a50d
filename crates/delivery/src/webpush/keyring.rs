//! VAPID key rotation: the advertised key (`web_push.vapid_key_file`) and the retired ones that
//! subscriptions made with them still need (`vapid-keys/<id>.pem` next to it, mode 0600).
//!
//! A restricted subscription (RFC 8292 §4) only accepts messages signed with the key it was
//! made with, so each Web Push subscription records its key's id and is signed with that key
//! until it registers again or expires. The keys themselves live in the store (shared by the
//! nodes of a cluster, `davpush_director::vapid`); the files are each node's copy of them:
//! [`write_current`] and [`write_retired`] write it, [`remove_unused`] deletes a retired key's
//! file once the store no longer has it. [`LiveRing`] is the ring a running Director signs
//! with, replaced when the store's keys change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::vapid::{Vapid, VapidError, VapidKey};

/// The directory of retired keys for the advertised key file `current`.
pub fn retired_dir(current: &Path) -> PathBuf {
    current.parent().unwrap_or(Path::new(".")).join("vapid-keys")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VapidError + '_ {
    move |source| VapidError::Io { path: path.display().to_string(), source }
}

/// The retired keys kept next to `current` (none if the directory does not exist).
pub fn load_retired(current: &Path) -> Result<Vec<VapidKey>, VapidError> {
    let dir = retired_dir(current);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(&dir))?.path();
        if path.extension().is_some_and(|e| e == "pem") {
            keys.push(VapidKey::load(&path)?);
        }
    }
    Ok(keys)
}

/// Keeps the retired key `id` as `vapid-keys/<id>.pem` (mode 0600, in a 0700 directory) if
/// it is not there yet.
pub fn write_retired(current: &Path, id: &str, pem: &str) -> Result<(), VapidError> {
    let dir = retired_dir(current);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
    }
    let kept = dir.join(format!("{id}.pem"));
    match davpush_core::secrets::write_private(&kept, pem) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io_err(&kept)(e)),
        _ => Ok(()),
    }
}

/// Replaces the advertised key file `current` with `pem` by a rename, so that a crash (or a
/// node reading it meanwhile) sees one of the two, never a torn file.
pub fn write_current(current: &Path, pem: &str) -> Result<(), VapidError> {
    let name = current.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = current.with_file_name(format!(".{name}.{}.new", davpush_core::ids::random_token(6)));
    davpush_core::secrets::write_private(&tmp, pem).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, current).map_err(io_err(current))
}

/// Deletes the retired keys next to `current` whose id is not in `in_use`; returns their ids.
pub fn remove_unused(current: &Path, in_use: &[String]) -> Result<Vec<String>, VapidError> {
    let mut removed = Vec::new();
    for key in load_retired(current)? {
        let id = key.id();
        if !in_use.contains(&id) {
            let path = retired_dir(current).join(format!("{id}.pem"));
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(id),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }
    Ok(removed)
}

/// The signers of the advertised key and of the retired ones, by key id.
#[derive(Debug)]
pub struct VapidRing {
    current: Arc<Vapid>,
    current_id: Arc<str>,
    retired: HashMap<String, Arc<Vapid>>,
}

impl VapidRing {
    /// `current` is advertised and binds new subscriptions; `retired` still sign for theirs.
    pub fn new(current: Arc<VapidKey>, retired: Vec<Arc<VapidKey>>, subject: &str) -> Self {
        let current_id: Arc<str> = current.id().into();
        let retired = retired
            .into_iter()
            .filter(|k| *k.id() != *current_id)
            .map(|k| (k.id(), Arc::new(Vapid::new(k, subject.to_owned()))))
            .collect();
        VapidRing { current: Arc::new(Vapid::new(current, subject.to_owned())), current_id, retired }
    }

    /// A ring of one key (no rotation yet).
    pub fn single(current: Arc<Vapid>) -> Self {
        VapidRing { current_id: current.key().id().into(), current, retired: HashMap::new() }
    }

    /// The id new subscriptions are bound to.
    pub fn current_id(&self) -> &Arc<str> {
        &self.current_id
    }

    /// The advertised public key (base64url).
    pub fn current_public_key(&self) -> String {
        self.current.key().public_key()
    }

    /// The ids of every key in the ring, the advertised one first.
    pub fn ids(&self) -> Vec<String> {
        let mut retired: Vec<String> = self.retired.keys().cloned().collect();
        retired.sort();
        std::iter::once(self.current_id.to_string()).chain(retired).collect()
    }

    /// The signer for a subscription bound to `id`; the advertised key for none or for an id
    /// whose file is gone (the push service will then refuse, and the client re-registers).
    pub fn signer(&self, id: Option<&str>) -> &Vapid {
        match id {
            Some(id) if id != &*self.current_id => self.retired.get(id).map_or(&self.current, |v| v),
            _ => &self.current,
        }
    }
}

/// The ring in use, replaced as a whole when the keys change (`davpush vapid rotate` while the
/// Director runs): readers take the current ring and never hold the lock across anything.
#[derive(Debug)]
pub struct LiveRing(RwLock<Arc<VapidRing>>);

impl LiveRing {
    /// Starts with `ring`.
    pub fn new(ring: VapidRing) -> Self {
        LiveRing(RwLock::new(Arc::new(ring)))
    }

    /// The ring in use.
    pub fn get(&self) -> Arc<VapidRing> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the ring.
    pub fn set(&self, ring: VapidRing) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }
}
