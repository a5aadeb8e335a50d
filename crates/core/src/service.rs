//! [`PushService`]: subscribe, unsubscribe, notify, expire. The HTTP layer calls one method per
//! request and maps the result; the WebSocket protocol ([`crate::session`]) calls the same methods.
//!
//! # Layout
//! - `limits`: [`Limits`] and the checks of input against them.
//! - `error`: [`ServiceError`], its request field and its wire code.
//! - `subscribe`: grants, targets, subscribe, unsubscribe, closed connections, expiry.
//! - `notify`: a Notify API request validated and handed to the transports.
//! - `cluster`: publishing to and applying from the other nodes, resync.
//! - `startup`: the index rebuilt from the store at start, transports stopped at the end.
//! - `targets`: durable targets read from the store when a notification reaches them.

use std::sync::Arc;

use davpush_proto::GrantKeys;

use crate::fanout::Fanout;
use crate::history::{MemoryHistory, Position, Replayed, SharedHistory};
use crate::presence::Presence;
use crate::store::SubscriptionStore;
use crate::transport::Transports;
use crate::{Index, Metrics};

mod cluster;
mod error;
mod limits;
mod notify;
mod startup;
mod subscribe;
mod targets;
#[cfg(test)]
mod testing;

pub use error::ServiceError;
pub use limits::Limits;
pub use notify::{NotifyReport, Unheard};
pub use subscribe::{PURGE_BATCH, Subscribed};

/// Where positions come from ([`crate::history`]).
#[derive(Debug)]
enum History {
    /// This node's own, in memory.
    Local(MemoryHistory),
    /// The cluster's: notifications reach live connections (this node's too) through it.
    Shared(Arc<dyn SharedHistory>),
}

/// See the module documentation.
pub struct PushService {
    index: Arc<Index>,
    store: Arc<dyn SubscriptionStore>,
    transports: Transports,
    limits: Limits,
    metrics: Arc<Metrics>,
    fanout: Option<Arc<dyn Fanout>>,
    presence: Option<Arc<dyn Presence>>,
    grants: Option<GrantKeys>,
    history: History,
    push_endpoints: Option<Arc<crate::pushsvc::PushEndpoints>>,
    /// `true` once [`PushService::load`] has made every durable subscription routable.
    ready: tokio::sync::watch::Sender<bool>,
    /// Requests waiting in [`PushService::until_ready`].
    waiting: std::sync::atomic::AtomicUsize,
    /// `true` while [`PushService::load`] has indexed subscriptions of transports that keep a
    /// membership as routing only and not yet read their targets back.
    members_loading: tokio::sync::watch::Sender<bool>,
    /// Reads durable targets from the store when a notification reaches them.
    fetcher: targets::Fetcher,
}

impl std::fmt::Debug for PushService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushService").field("index", &self.index).field("transports", &self.transports).finish()
    }
}

impl PushService {
    /// A service with an empty index; call [`PushService::load`] to fill it from the store.
    pub fn new(
        store: Arc<dyn SubscriptionStore>,
        transports: Transports,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        PushService {
            index: Arc::new(Index::default()),
            store,
            transports,
            limits,
            metrics,
            fanout: None,
            presence: None,
            grants: None,
            history: History::Local(MemoryHistory::new(Default::default())),
            push_endpoints: None,
            ready: tokio::sync::watch::Sender::new(false),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            members_loading: tokio::sync::watch::Sender::new(false),
            fetcher: targets::Fetcher::default(),
        }
    }

    /// Whether the durable subscriptions are loaded ([`PushService::load`] finished): until
    /// then a notify could miss subscribers that are still in the store only.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Follows [`PushService::is_ready`].
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Waits until [`PushService::is_ready`], at most `bound`; returns whether it is.
    pub async fn until_ready(&self, bound: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        let mut rx = self.ready.subscribe();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let ready = matches!(tokio::time::timeout(bound, rx.wait_for(|r| *r)).await, Ok(Ok(_)));
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        ready
    }

    /// How many requests wait in [`PushService::until_ready`] now.
    pub fn waiting_for_ready(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requires a grant for every subscription (`subscription.grants = "required"`): a topic is
    /// public, so a subscriber must prove with a grant signed by one of `keys` that it may read
    /// the topic's collection ([`davpush_proto::grant`]).
    pub fn with_grants(mut self, keys: GrantKeys) -> Self {
        self.grants = Some(keys);
        self
    }

    /// Keeps this node's notification history in memory with `settings` (the default, with
    /// [`crate::history::HistorySettings::default`]).
    pub fn with_history(mut self, settings: crate::history::HistorySettings) -> Self {
        self.history = History::Local(MemoryHistory::new(settings));
        self
    }

    /// Uses the cluster's history: the positions of notifications are assigned where it lives,
    /// and notifications reach live connections (this node's too) only through the cluster,
    /// so that every node writes them in the same order with the same positions. Needs a
    /// [`Fanout`] that assigns positions ([`Fanout::publish_positioned`]).
    pub fn with_shared_history(mut self, history: Arc<dyn SharedHistory>) -> Self {
        self.history = History::Shared(history);
        self
    }

    /// The newest position of the history now: where a client that connects starts from.
    pub async fn history_head(&self) -> Option<Position> {
        match &self.history {
            History::Local(h) => h.head(),
            History::Shared(h) => h.head().await,
        }
    }

    /// What `topics` got after the position `since` (see [`Replayed`]).
    pub async fn replay(&self, topics: &[crate::Topic], since: &str, now_ms: u64) -> Replayed {
        match &self.history {
            History::Local(h) => h.replay(topics, since, now_ms),
            History::Shared(h) => h.replay(topics, since, now_ms).await,
        }
    }

    /// Makes this Director a push service (`push_subscribe` frames; see [`crate::pushsvc`]).
    pub fn with_push_endpoints(mut self, endpoints: Arc<crate::pushsvc::PushEndpoints>) -> Self {
        self.push_endpoints = Some(endpoints);
        self
    }

    /// The push subscriptions, when this Director is a push service.
    pub fn push_endpoints(&self) -> Option<&Arc<crate::pushsvc::PushEndpoints>> {
        self.push_endpoints.as_ref()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The routing index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The enabled transports.
    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SubscriptionStore> {
        &self.store
    }
}
