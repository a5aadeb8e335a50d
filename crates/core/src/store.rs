//! The persistence seam. Only durable subscriptions (those of push services that reach a device
//! while it is offline) are stored; WebSocket subscriptions live and die with their connection.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

pub mod outbox;
pub mod vapid;

pub use outbox::{DEFAULT_OUTBOX_LEASE_SECS, OutboxLease};
pub use vapid::{StoredVapidKey, advertised};

/// A durable subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// Subscription id.
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Topic.
    pub topic: String,
    /// Push service name ([`crate::ServiceKind::as_str`]).
    pub service: String,
    /// The target's parameters, JSON (what the transport's `parse_target` reads).
    pub target: String,
    /// Expiry, unix seconds.
    pub expires: i64,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Wanted kinds of change ([`crate::Triggers::bits`]).
    pub triggers: u8,
}

/// One page of [`SubscriptionStore::load_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The rows, in the store's order.
    pub rows: Vec<StoredSubscription>,
    /// Where the next page starts: pass it as `after` (opaque: the last id, or SQLite's rowid).
    pub next: String,
}

/// A delivery that waits for a retry (or was queued at shutdown): the outbox, so that it
/// survives a restart. One per subscription: a newer notification replaces the older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// The subscription.
    pub subscription_id: String,
    /// The notification's topic.
    pub topic: String,
    /// Its sync-token.
    pub sync_token: Option<String>,
    /// Its trigger (`content`/`property`).
    pub trigger: Option<String>,
    /// Attempts made so far.
    pub attempt: u32,
    /// When to try next, unix seconds.
    pub due: i64,
    /// When to give up, unix seconds (first attempt + TTL).
    pub deadline: i64,
}

/// Ids per [`SubscriptionStore::load_targets`] call.
pub const TARGETS_BATCH: usize = 1_000;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[error("subscription store: {op} failed: {source}")]
pub struct StoreError {
    /// What was attempted.
    pub op: &'static str,
    /// The backend's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where durable subscriptions are kept.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Inserts `s`, or updates target and expiry of the subscription with the same client, topic
    /// and service. Returns the id that is kept: the existing one on update.
    async fn upsert(&self, s: &StoredSubscription) -> Result<String, StoreError>;
    /// Deletes by id; returns how many existed.
    async fn delete(&self, ids: &[String]) -> Result<u64, StoreError>;
    /// All subscriptions that have not expired at `now`.
    async fn load(&self, now: i64) -> Result<Vec<StoredSubscription>, StoreError>;
    /// At most `limit` subscriptions unexpired at `now` after the cursor `after` (`""`: from
    /// the first), and the cursor of the next page. The order is the store's cheapest one
    /// (SQLite: table order, by rowid; otherwise by id): start-up reads the store page by page,
    /// so that no read holds a snapshot (and with it the SQLite write-ahead log) for the whole
    /// load, and rows become routable as they arrive. Fewer than `limit` rows: the last page.
    async fn load_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError>;
    /// [`SubscriptionStore::load_page`] without the targets (each row's `target` is empty):
    /// what start-up reads, since only the routing of a durable subscription is held in
    /// memory (issue 11). The default reads whole rows and drops the targets.
    async fn load_routes_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        let mut page = self.load_page(now, after, limit).await?;
        for r in &mut page.rows {
            r.target = String::new();
        }
        Ok(page)
    }
    /// The targets of those of the subscriptions `ids` that exist and are unexpired at `now`,
    /// as `(id, target)`, in any order: one statement (callers pass batches of at most
    /// [`TARGETS_BATCH`] ids). A notification's durable subscribers are read here when it is
    /// delivered.
    async fn load_targets(&self, ids: &[String], now: i64) -> Result<Vec<(String, String)>, StoreError>;
    /// At most `limit` targets of the subscriptions of `topic` with push service `service`
    /// unexpired at `now`, whose ids sort after `after` (`""`: from the first), as `(id,
    /// target)`, in id order: one statement through the index on `(topic, service, id)`, so a
    /// big topic's targets are read as a range of one index instead of an index search per id.
    /// Ids compare byte by byte (Rust's `str` order, not a language's collation): the fetcher
    /// cuts a big topic into ranges at routed ids and reads them side by side.
    /// Fewer than `limit`: the last page. A notification to one topic reads its durable
    /// subscribers here.
    async fn load_topic_targets(
        &self,
        topic: &str,
        service: &str,
        after: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Deletes at most `limit` of the subscriptions expired at `now` (through the index on
    /// `expires`: one short statement however many expired); returns how many. Callers repeat
    /// until fewer than `limit` come back.
    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError>;
    /// How many subscriptions the store holds, expired ones included, if it can tell at little
    /// cost (one statement): start-up sizes the routing index with it, so that the index does
    /// not grow step by step while a million rows are inserted (issue 11). `None`: unknown
    /// (the default).
    async fn count(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Checks that the store answers (for `/healthz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Saves pending deliveries (replacing those of the same subscriptions), held by this
    /// store handle's owner ([`OutboxLease`]) for a lease.
    async fn save_pending(&self, rows: &[PendingDelivery]) -> Result<(), StoreError>;
    /// Forgets the pending deliveries of these subscriptions.
    async fn delete_pending(&self, subscription_ids: &[String]) -> Result<(), StoreError>;
    /// All pending deliveries, whoever holds them (for inspection; nodes claim theirs).
    async fn load_pending(&self) -> Result<Vec<PendingDelivery>, StoreError>;
    /// Claims at most `limit` pending deliveries that nobody holds at `now` (no owner, or
    /// another owner whose lease ended before `now`) for this handle's owner, for a lease from
    /// the real clock, and returns them. Two nodes claiming at once never get the same row.
    async fn claim_pending(&self, now: i64, limit: usize) -> Result<Vec<PendingDelivery>, StoreError>;
    /// Extends the lease of every row this handle's owner holds; returns how many.
    async fn renew_pending(&self, now: i64) -> Result<u64, StoreError>;
    /// Gives up every row this handle's owner holds (at a graceful stop, after the last
    /// `save_pending`; and by `davpush vapid rotate` for the messages it queues), so that any
    /// node claims them at once; returns how many.
    async fn release_pending(&self) -> Result<u64, StoreError>;
    /// Sets how long a claim lasts without renewal (default [`DEFAULT_OUTBOX_LEASE_SECS`]).
    fn set_outbox_lease(&self, _secs: u64) {}
    /// The VAPID keys kept in the store (see [`vapid`]).
    async fn vapid_keys(&self) -> Result<Vec<StoredVapidKey>, StoreError>;
    /// Adds the keys the store does not have yet (an id already there is left as it is).
    async fn add_vapid_keys(&self, keys: &[StoredVapidKey]) -> Result<(), StoreError>;
    /// Marks the key `id` retired at `at` (if it is not already).
    async fn retire_vapid_key(&self, id: &str, at: i64) -> Result<(), StoreError>;
    /// Deletes the retired key `id`; returns whether it existed. The advertised key stays.
    async fn delete_vapid_key(&self, id: &str) -> Result<bool, StoreError>;
    /// The distinct VAPID key ids that Web Push and UnifiedPush subscriptions are bound to (the
    /// `vapid_key` of their target): a retired key's file is deleted when its id is no longer
    /// here. The default reads every row; the databases answer from one query.
    async fn vapid_keys_in_use(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = std::collections::BTreeSet::new();
        for r in self.load(i64::MIN).await? {
            if let Some(k) =
                web_push_key(&r).and_then(|t| t.get("vapid_key").and_then(|k| k.as_str()).map(str::to_owned))
            {
                keys.insert(k);
            }
        }
        Ok(keys.into_iter().collect())
    }
    /// Binds the Web Push and UnifiedPush subscriptions that name no VAPID key (rows written
    /// before key rotation existed) to `key`, the key they were made with; returns how many.
    async fn assign_vapid_key(&self, key: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for mut r in self.load(i64::MIN).await? {
            let Some(mut t) = web_push_key(&r) else { continue };
            if t.get("vapid_key").is_some() {
                continue;
            }
            t.insert("vapid_key".into(), key.into());
            r.target = serde_json::Value::Object(t).to_string();
            self.upsert(&r).await?;
            n += 1;
        }
        Ok(n)
    }
    /// Size of the write-ahead log in bytes, for stores that keep one in a file (SQLite).
    fn wal_bytes(&self) -> Option<u64> {
        None
    }
    /// Called once at a graceful stop, after the last write: flushes what the store keeps
    /// aside (SQLite: checkpoints the write-ahead log and truncates it to 0 bytes).
    async fn close(&self) {}
}

/// The target of a Web Push or UnifiedPush row, as a JSON object.
fn web_push_key(r: &StoredSubscription) -> Option<serde_json::Map<String, serde_json::Value>> {
    if r.service != "web_push" && r.service != "unified_push" {
        return None;
    }
    match serde_json::from_str(&r.target) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// A store in memory: for tests and for a Director that needs no persistence.
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<HashMap<String, StoredSubscription>>,
    /// Each pending delivery, and whether this process holds it.
    pending: Mutex<HashMap<String, (PendingDelivery, bool)>>,
    keys: Mutex<Vec<StoredVapidKey>>,
    /// Calls of `save_pending` and `delete_pending` so far.
    outbox_writes: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// How many times the outbox was written (`save_pending` and `delete_pending` calls): a
    /// test's view of how writers batch.
    pub fn outbox_writes(&self) -> u64 {
        self.outbox_writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl SubscriptionStore for MemoryStore {
    async fn upsert(&self, s: &StoredSubscription) -> Result<String, StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let existing =
            rows.values_mut().find(|r| r.client_id == s.client_id && r.topic == s.topic && r.service == s.service);
        if let Some(r) = existing {
            r.target = s.target.clone();
            r.expires = s.expires;
            r.triggers = s.triggers;
            return Ok(r.id.clone());
        }
        rows.insert(s.id.clone(), s.clone());
        Ok(s.id.clone())
    }

    async fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            pending.remove(id);
        }
        Ok(ids.iter().filter(|id| rows.remove(*id).is_some()).count() as u64)
    }

    async fn load(&self, now: i64) -> Result<Vec<StoredSubscription>, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(rows.values().filter(|r| r.expires > now).cloned().collect())
    }

    async fn load_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut page: Vec<_> = rows.values().filter(|r| r.expires > now && r.id.as_str() > after).collect();
        page.sort_by(|a, b| a.id.cmp(&b.id));
        let rows: Vec<StoredSubscription> = page.into_iter().take(limit).cloned().collect();
        let next = rows.last().map_or_else(|| after.to_owned(), |r| r.id.clone());
        Ok(Page { rows, next })
    }

    async fn load_targets(&self, ids: &[String], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ids
            .iter()
            .filter_map(|id| rows.get(id).filter(|r| r.expires > now).map(|r| (r.id.clone(), r.target.clone())))
            .collect())
    }

    async fn load_topic_targets(
        &self,
        topic: &str,
        service: &str,
        after: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut page: Vec<(String, String)> = rows
            .values()
            .filter(|r| r.topic == topic && r.service == service && r.id.as_str() > after && r.expires > now)
            .map(|r| (r.id.clone(), r.target.clone()))
            .collect();
        page.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        page.truncate(limit);
        Ok(page)
    }

    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<String> =
            rows.values().filter(|r| r.expires <= now).take(limit).map(|r| r.id.clone()).collect();
        for id in &expired {
            rows.remove(id);
        }
        Ok(expired.len() as u64)
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.rows.lock().unwrap_or_else(|e| e.into_inner()).len() as u64))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn save_pending(&self, rows: &[PendingDelivery]) -> Result<(), StoreError> {
        self.outbox_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            pending.insert(r.subscription_id.clone(), (r.clone(), true));
        }
        Ok(())
    }

    async fn delete_pending(&self, subscription_ids: &[String]) -> Result<(), StoreError> {
        self.outbox_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for id in subscription_ids {
            pending.remove(id);
        }
        Ok(())
    }

    async fn load_pending(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        Ok(self.pending.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(p, _)| p.clone()).collect())
    }

    async fn claim_pending(&self, _now: i64, limit: usize) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = Vec::new();
        for (p, held) in pending.values_mut().filter(|(_, held)| !*held).take(limit) {
            *held = true;
            claimed.push(p.clone());
        }
        Ok(claimed)
    }

    async fn renew_pending(&self, _now: i64) -> Result<u64, StoreError> {
        Ok(self.pending.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|(_, held)| *held).count() as u64)
    }

    async fn release_pending(&self) -> Result<u64, StoreError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for (_, held) in pending.values_mut().filter(|(_, held)| *held) {
            *held = false;
            n += 1;
        }
        Ok(n)
    }

    async fn vapid_keys(&self) -> Result<Vec<StoredVapidKey>, StoreError> {
        Ok(self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    async fn add_vapid_keys(&self, keys: &[StoredVapidKey]) -> Result<(), StoreError> {
        let mut have = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if !have.iter().any(|h| h.id == k.id) {
                have.push(k.clone());
            }
        }
        Ok(())
    }

    async fn retire_vapid_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let mut have = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for k in have.iter_mut().filter(|k| k.id == id) {
            k.retired.get_or_insert(at);
        }
        Ok(())
    }

    async fn delete_vapid_key(&self, id: &str) -> Result<bool, StoreError> {
        let mut have = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let before = have.len();
        have.retain(|k| k.id != id || k.retired.is_none());
        Ok(have.len() < before)
    }
}
