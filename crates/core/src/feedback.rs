//! Outcomes that travel back from transports to the routing core: a push service said that a
//! subscription is gone, so the core removes it from the index and the store.

use tokio::sync::mpsc;

use crate::SubscriptionId;

/// How many reports may wait before new ones are dropped (a dropped report only delays the
/// removal: the next delivery reports again, and expiry ends the subscription in any case).
pub const CAPACITY: usize = 4096;

/// The sending half, held by transports.
#[derive(Debug, Clone)]
pub struct Feedback {
    tx: mpsc::Sender<SubscriptionId>,
}

/// The receiving half, drained by the Director (see `PushService::remove_gone`).
pub type FeedbackReceiver = mpsc::Receiver<SubscriptionId>;

impl Feedback {
    /// A new bounded feedback channel.
    pub fn channel() -> (Feedback, FeedbackReceiver) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Feedback { tx }, rx)
    }

    /// Reports that the push service no longer knows subscription `id`.
    pub fn gone(&self, id: SubscriptionId) {
        if self.tx.try_send(id).is_err() {
            tracing::warn!("feedback queue full: a gone subscription will be removed later");
        }
    }
}
