//! Who holds the outbox's rows: each row names the node that will send it (`owner`, a token made
//! per store handle, so a restarted node is a new owner) and until when (`lease_until`). A node
//! renews its lease while it runs; the rows of a node whose lease ran out (it died) or that hold
//! none (queued by `davpush vapid rotate`, released at a graceful stop) are claimed by the next
//! node that looks (`SubscriptionStore::claim_pending`).

use std::sync::atomic::{AtomicI64, Ordering};

/// How long a claim lasts without renewal by default, in seconds.
pub const DEFAULT_OUTBOX_LEASE_SECS: i64 = 30;

/// This store handle's identity as an outbox owner, and its lease length.
#[derive(Debug)]
pub struct OutboxLease {
    owner: String,
    secs: AtomicI64,
}

impl Default for OutboxLease {
    fn default() -> Self {
        OutboxLease { owner: crate::ids::random_token(12), secs: AtomicI64::new(DEFAULT_OUTBOX_LEASE_SECS) }
    }
}

impl OutboxLease {
    /// The owner token (random, never logged as a secret: it opens nothing).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Sets the lease length (at least 1 s).
    pub fn set_secs(&self, secs: u64) {
        self.secs.store(i64::try_from(secs).unwrap_or(i64::MAX).max(1), Ordering::Relaxed);
    }

    /// The lease length in seconds.
    pub fn secs(&self) -> i64 {
        self.secs.load(Ordering::Relaxed)
    }

    /// When a claim or renewal made at `now` ends.
    pub fn until(&self, now: i64) -> i64 {
        now.saturating_add(self.secs())
    }
}
