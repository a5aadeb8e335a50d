//! VAPID key rotation (`davpush vapid rotate`, `vapid list`), run with the Director stopped: it
//! works on the configuration's key files and store, which every node of a cluster shares (the
//! store) or gets a copy of (the files). See docs/operations.md, "Rotate the VAPID key".
//!
//! [`rotate`] binds the subscriptions that name no key yet to the advertised one, retires that
//! key (kept as `vapid-keys/<id>.pem`), writes a new one, and queues the spec's key-rotation
//! message in the outbox once per distinct Web Push endpoint of the retired key. The outbox is
//! what the delivery engine restores at start: the messages are paced, retried and counted like
//! any push, and signed with the key each subscription was made with, the retired one.

use std::collections::HashSet;
use std::path::Path;

use davpush_core::{KEY_ROTATION_TOPIC, PendingDelivery, StoreError, SubscriptionStore};
use davpush_delivery::webpush::keyring;
use davpush_delivery::webpush::vapid::VapidError;

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
}

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The retired key's id.
    pub retired_id: String,
    /// The new key's id.
    pub new_id: String,
    /// The new public key (what is advertised from the next start on).
    pub new_public_key: String,
    /// Key-rotation messages queued (one per distinct endpoint).
    pub queued: usize,
}

/// Rows read per page.
const PAGE: usize = 1000;

/// Retires the advertised key of `config` for a new one; see the module documentation.
pub async fn rotate(config: &Config, startup: &Startup, store: &dyn SubscriptionStore) -> Result<Rotated, RotateError> {
    let (Some(wp), Some(key)) = (config.web_push.as_ref(), startup.vapid_key.as_ref()) else {
        return Err(RotateError::Disabled);
    };
    let old_id = key.id();
    // Rows from before rotation existed were made with the key being retired.
    store.assign_vapid_key(&old_id).await?;
    let (_, new) = keyring::rotate(&wp.vapid_key_file)?;
    let now = davpush_core::unix_now();
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
    Ok(Rotated { retired_id: old_id, new_id: new.id(), new_public_key: new.public_key(), queued })
}

/// One line per key: id, state (`advertised`, `retired, in use`, `retired, unused`), public key.
pub async fn list(
    config: &Config,
    startup: &Startup,
    store: &dyn SubscriptionStore,
) -> Result<Vec<String>, RotateError> {
    let (Some(wp), Some(key)) = (config.web_push.as_ref(), startup.vapid_key.as_ref()) else {
        return Err(RotateError::Disabled);
    };
    store.assign_vapid_key(&key.id()).await?;
    let in_use = store.vapid_keys_in_use().await?;
    let mut lines = vec![format!("{} advertised {}", key.id(), key.public_key())];
    for k in keyring::load_retired(&wp.vapid_key_file)? {
        let state = if in_use.contains(&k.id()) { "retired, in use" } else { "retired, unused" };
        lines.push(format!("{} {state} {}", k.id(), k.public_key()));
    }
    Ok(lines)
}

/// Where the retired keys of `key_file` are kept.
pub fn retired_dir(key_file: &Path) -> std::path::PathBuf {
    keyring::retired_dir(key_file)
}
