//! The one [`Transport`] every engine-backed push service uses: [`EngineTransport`] hands
//! messages to the delivery [`Engine`] (one per subscription, or one per topic in topic mode),
//! keeps topic membership through [`Membership`] when there is one, and asks its
//! [`TargetParser`] only what differs between services: how subscription parameters read, and
//! which device token a subscription holds.

use std::sync::Arc;

use async_trait::async_trait;
use davpush_core::transport::{Dispatched, TargetError, Transport};
use davpush_core::{Notification, PendingDelivery, PushMessage, ServiceKind, Subscription, Target};

use crate::auth::topic_hash;
use crate::engine::{Engine, Enqueued};
use crate::membership::{Membership, Op};

/// What a push service tells [`EngineTransport`] about its subscriptions.
#[async_trait]
pub trait TargetParser: Send + Sync + 'static {
    /// Parses `push_services.<kind>` parameters into a target.
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError>;

    /// Checks a parsed target before it is stored (e.g. the addresses its host resolves to).
    async fn check_target(&self, _target: &Target) -> Result<(), TargetError> {
        Ok(())
    }

    /// The device token of `sub`, for topic membership.
    fn token<'a>(&self, _sub: &'a Subscription) -> Option<&'a str> {
        None
    }
}

/// A push service delivered by the engine: `P` reads its subscriptions. With a [`Membership`]
/// (topic mode) a notification is one message per topic, else one per subscription.
pub struct EngineTransport<P> {
    kind: ServiceKind,
    parser: P,
    engine: Engine,
    membership: Option<Membership>,
}

impl<P> std::fmt::Debug for EngineTransport<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineTransport")
            .field("kind", &self.kind)
            .field("topic_mode", &self.membership.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: TargetParser> EngineTransport<P> {
    /// A transport of `kind` over a started `engine` (and, in topic mode, `membership`).
    pub fn new(kind: ServiceKind, parser: P, engine: Engine, membership: Option<Membership>) -> Self {
        EngineTransport { kind, parser, engine, membership }
    }

    /// The delivery engine (for inspection).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Hands a message to the engine: once per topic when `per_topic`, else once per subscription.
fn dispatch_to(
    engine: &Engine,
    per_topic: bool,
    message: &Arc<PushMessage>,
    recipients: &[Arc<Subscription>],
) -> Dispatched {
    let mut d = Dispatched::default();
    if per_topic {
        let Some(first) = recipients.first() else { return d };
        let n = recipients.len() as u64;
        match engine.enqueue_topic(first, message) {
            Enqueued::Queued => d.queued = n,
            Enqueued::Coalesced => d.coalesced = n,
            Enqueued::Dropped => d.dropped = n,
        }
        return d;
    }
    for s in recipients {
        match engine.enqueue(s, message) {
            Enqueued::Queued => d.queued += 1,
            Enqueued::Coalesced => d.coalesced += 1,
            Enqueued::Dropped => d.dropped += 1,
        }
    }
    d
}

#[async_trait]
impl<P: TargetParser> Transport for EngineTransport<P> {
    fn kind(&self) -> ServiceKind {
        self.kind
    }

    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        self.parser.parse_target(params)
    }

    async fn check_target(&self, target: &Target) -> Result<(), TargetError> {
        self.parser.check_target(target).await
    }

    fn dispatch(&self, message: &Arc<PushMessage>, recipients: &[Arc<Subscription>]) -> Dispatched {
        dispatch_to(&self.engine, self.membership.is_some(), message, recipients)
    }

    fn tracks_membership(&self) -> bool {
        self.membership.is_some()
    }

    async fn added(&self, sub: &Arc<Subscription>) {
        if let (Some(m), Some(token)) = (&self.membership, self.parser.token(sub)) {
            m.change(Op::Add, sub.topic.as_str(), token, &sub.id).await;
        }
    }

    async fn removed(&self, sub: &Arc<Subscription>) {
        if let (Some(m), Some(token)) = (&self.membership, self.parser.token(sub)) {
            m.change(Op::Remove, sub.topic.as_str(), token, &sub.id).await;
        }
    }

    async fn restore(&self, pending: Vec<(Arc<Subscription>, PendingDelivery)>) {
        if self.membership.is_some() {
            self.engine.restore_topics(pending);
        } else {
            self.engine.restore(pending);
        }
    }

    async fn shutdown(&self) {
        self.engine.shutdown().await;
    }
}

/// The service topic name of a davpush topic (FCM and HMS topics): `<prefix>.<hash>`.
pub fn topic_name(prefix: &str, topic: &str) -> String {
    format!("{prefix}.{}", topic_hash(topic))
}

/// The `data` of a mobile push message (FCM, HMS): only strings.
pub fn message_data(n: &Notification, full: bool) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("topic".into(), n.topic.as_str().into());
    if full {
        if let Some(s) = &n.sync_token {
            m.insert("sync_token".into(), s.as_str().into());
        }
        if let Some(t) = n.trigger {
            m.insert("trigger".into(), t.as_str().into());
        }
    }
    m
}
