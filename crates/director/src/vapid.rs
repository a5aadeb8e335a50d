//! VAPID keys and their rotation (`davpush vapid rotate`, `vapid list`), while the Director
//! runs, on one node or several. See docs/operations.md, "Rotate the VAPID key".
//!
//! The keys live in the store (table `vapid_keys`): every node of a cluster reads the same ones
//! without sharing a filesystem. The advertised key is the newest one not retired; the retired
//! ones sign for the subscriptions made with them. [`sync_keys`] seeds an empty store from the
//! key files (the advertised `vapid-key.pem` and `vapid-keys/<id>.pem`) and then makes the files
//! a copy of the store: they are what `davpush vapid` prints and what a backup holds.
//!
//! [`rotate`] binds the subscriptions that name no key yet to the advertised one, adds a new key,
//! retires the old one and queues the spec's key-rotation message in the outbox once per
//! distinct Web Push endpoint of the retired key, with no owner: the running nodes see the new
//! keys and claim the messages at their next outbox tick (`store.outbox_lease_secs` / 3), and
//! each message is sent by exactly one node, paced and retried like any push, signed with the
//! retired key. [`remove_unused`] deletes a retired key once no subscription names it; every
//! node then drops it from its ring and its files.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use davpush_core::{KEY_ROTATION_TOPIC, PendingDelivery, StoreError, StoredVapidKey, SubscriptionStore};
use davpush_delivery::webpush::keyring;
use davpush_delivery::webpush::vapid::{VapidError, VapidKey};

use crate::{Config, Startup};

/// Rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Web Push is off: there is no key.
    #[error("Web Push is disabled (web_push.enabled = false)")]
    Disabled,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key file could not be read or written.
    #[error(transparent)]
    Key(#[from] VapidError),
    /// A key in the store does not parse (the store was edited by hand?).
    #[error("the VAPID key {0} in the store is not a P-256 private key (PKCS#8 PEM)")]
    BadStoredKey(String),
}

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The retired key's id.
    pub retired_id: String,
    /// The new key's id.
    pub new_id: String,
    /// The new public key (what is advertised from now on).
    pub new_public_key: String,
    /// Key-rotation messages queued (one per distinct endpoint).
    pub queued: usize,
}

/// The keys a node signs with: the advertised one and the retired ones still kept.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The advertised key.
    pub current: Arc<VapidKey>,
    /// The retired keys.
    pub retired: Vec<Arc<VapidKey>>,
}

/// Rows read per page.
const PAGE: usize = 1000;

fn parse(k: &StoredVapidKey) -> Result<Arc<VapidKey>, RotateError> {
    VapidKey::from_pem(&k.pem).map(Arc::new).ok_or_else(|| RotateError::BadStoredKey(k.id.clone()))
}

/// Reads the keys from the store, first seeding an empty store from the files next to
/// `key_file` (the key file is created if missing), then makes the files a copy of the store:
/// `key_file` holds the advertised key, `vapid-keys/` the retired ones, and nothing else.
pub async fn sync_keys(store: &dyn SubscriptionStore, key_file: &Path) -> Result<Keys, RotateError> {
    let mut stored = store.vapid_keys().await?;
    if davpush_core::store::advertised(&stored).is_none() {
        let now = davpush_core::unix_now();
        let (file_key, _) = VapidKey::load_or_create(key_file)?;
        let pem = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| VapidError::Io { path: p.display().to_string(), source })
        };
        let mut seed = vec![StoredVapidKey { id: file_key.id(), pem: pem(key_file)?, created: now, retired: None }];
        for k in keyring::load_retired(key_file)? {
            let path = keyring::retired_dir(key_file).join(format!("{}.pem", k.id()));
            seed.push(StoredVapidKey { id: k.id(), pem: pem(&path)?, created: 0, retired: Some(now) });
        }
        // Nodes seeding at once agree: the newest unretired key wins, ties by id.
        store.add_vapid_keys(&seed).await?;
        stored = store.vapid_keys().await?;
        tracing::info!(vapid_key = %file_key.id(), "VAPID keys copied from the key files into the store");
    }
    let advertised = davpush_core::store::advertised(&stored).expect("seeded above").clone();
    let current = parse(&advertised)?;
    let on_disk = VapidKey::load(key_file).ok().map(|k| k.id());
    if on_disk.as_deref() != Some(advertised.id.as_str()) {
        if on_disk.as_ref().is_some_and(|id| !stored.iter().any(|k| &k.id == id)) {
            tracing::warn!(
                file = %key_file.display(),
                "the VAPID key file held a key the store does not know: replaced by the store's advertised key"
            );
        }
        keyring::write_current(key_file, &advertised.pem)?;
    }
    let mut retired = Vec::new();
    let mut kept = Vec::new();
    for k in stored.iter().filter(|k| k.id != advertised.id) {
        keyring::write_retired(key_file, &k.id, &k.pem)?;
        retired.push(parse(k)?);
        kept.push(k.id.clone());
    }
    for id in keyring::remove_unused(key_file, &kept)? {
        tracing::info!(vapid_key = %id, "retired VAPID key file deleted: the store no longer has the key");
    }
    Ok(Keys { current, retired })
}

/// Deletes from the store the retired keys no subscription is bound to any more, then syncs the
/// files; returns the deleted ids. Any node may do it; the others follow at their next key check.
pub async fn remove_unused(store: &dyn SubscriptionStore, key_file: &Path) -> Result<Vec<String>, RotateError> {
    let in_use = store.vapid_keys_in_use().await?;
    let mut removed = Vec::new();
    for k in store.vapid_keys().await? {
        if k.retired.is_some() && !in_use.contains(&k.id) && store.delete_vapid_key(&k.id).await? {
            removed.push(k.id);
        }
    }
    sync_keys(store, key_file).await?;
    Ok(removed)
}

/// Retires the advertised key for a new one; see the module documentation.
pub async fn rotate(
    config: &Config,
    _startup: &Startup,
    store: &dyn SubscriptionStore,
) -> Result<Rotated, RotateError> {
    let wp = config.web_push.as_ref().ok_or(RotateError::Disabled)?;
    let keys = sync_keys(store, &wp.vapid_key_file).await?;
    let old_id = keys.current.id();
    // Rows from before rotation existed were made with the key being retired.
    store.assign_vapid_key(&old_id).await?;
    let now = davpush_core::unix_now();
    let newest = store.vapid_keys().await?.iter().map(|k| k.created).max().unwrap_or(0);
    let (new, pem) = VapidKey::generate_pem().map_err(|source| VapidError::Io { path: "(new key)".into(), source })?;
    // Strictly the newest, whatever the clocks: it is the advertised one.
    let created = now.max(newest.saturating_add(1));
    store.add_vapid_keys(&[StoredVapidKey { id: new.id(), pem, created, retired: None }]).await?;
    store.retire_vapid_key(&old_id, now).await?;
    sync_keys(store, &wp.vapid_key_file).await?;
    let deadline = now.saturating_add(i64::try_from(wp.settings.engine.ttl.as_secs()).unwrap_or(i64::MAX));
    let (mut after, mut endpoints, mut queued) = (String::new(), HashSet::new(), 0usize);
    loop {
        let davpush_core::Page { rows: page, next } = store.load_page(now, &after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        after = next;
        let mut rows = Vec::new();
        for r in &page {
            if r.service != "web_push" && r.service != "unified_push" {
                continue;
            }
            let Ok(t) = serde_json::from_str::<serde_json::Value>(&r.target) else { continue };
            let endpoint = t.get("endpoint").and_then(|e| e.as_str()).unwrap_or_default();
            if t.get("vapid_key").and_then(|k| k.as_str()) == Some(old_id.as_str())
                && endpoints.insert(endpoint.to_owned())
            {
                rows.push(PendingDelivery {
                    subscription_id: r.id.clone(),
                    topic: KEY_ROTATION_TOPIC.to_owned(),
                    sync_token: None,
                    trigger: Some("property".into()),
                    attempt: 0,
                    due: now,
                    deadline,
                });
            }
        }
        store.save_pending(&rows).await?;
        queued += rows.len();
        if page.len() < PAGE {
            break;
        }
    }
    // Queued for whichever node claims them first, now rather than when a lease ends.
    store.release_pending().await?;
    Ok(Rotated { retired_id: old_id, new_id: new.id(), new_public_key: new.public_key(), queued })
}

/// One line per key: id, state (`advertised`, `retired, in use`, `retired, unused`), public key.
pub async fn list(
    config: &Config,
    _startup: &Startup,
    store: &dyn SubscriptionStore,
) -> Result<Vec<String>, RotateError> {
    let wp = config.web_push.as_ref().ok_or(RotateError::Disabled)?;
    let keys = sync_keys(store, &wp.vapid_key_file).await?;
    store.assign_vapid_key(&keys.current.id()).await?;
    let in_use = store.vapid_keys_in_use().await?;
    let mut lines = vec![format!("{} advertised {}", keys.current.id(), keys.current.public_key())];
    let mut retired = keys.retired;
    retired.sort_by_key(|k| k.id());
    for k in retired {
        let state = if in_use.contains(&k.id()) { "retired, in use" } else { "retired, unused" };
        lines.push(format!("{} {state} {}", k.id(), k.public_key()));
    }
    Ok(lines)
}

/// Where the retired keys of `key_file` are kept.
pub fn retired_dir(key_file: &Path) -> std::path::PathBuf {
    keyring::retired_dir(key_file)
}
