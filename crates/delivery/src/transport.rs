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

    /// Parses stored parameters (JSON text) into a target (see `Transport::parse_stored`).
    fn parse_stored(&self, json: &str) -> Result<Target, TargetError> {
        self.parse_target(&davpush_core::transport::stored_params(json)?)
    }

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
    (d.queued, d.coalesced, d.dropped) = engine.enqueue_many(recipients, message);
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

    fn parse_stored(&self, json: &str) -> Result<Target, TargetError> {
        self.parser.parse_stored(json)
    }

    async fn check_target(&self, target: &Target) -> Result<(), TargetError> {
        self.parser.check_target(target).await
    }

    fn dispatch(&self, message: &Arc<PushMessage>, recipients: &[Arc<Subscription>]) -> Dispatched {
        dispatch_to(&self.engine, self.membership.is_some(), message, recipients)
    }

    fn pending_retries(&self) -> usize {
        self.engine.waiting()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use davpush_core::feedback::Feedback;
    use davpush_core::{ClientId, MemoryStore, Metrics, RemoteTarget, SubscriptionId, SubscriptionStore, Topic};
    use tokio::sync::mpsc;

    use super::*;
    use crate::engine::{Deliver, EngineSettings, Outcome};
    use crate::membership::{BatchError, MembershipApi, MembershipSettings, TokenResult};

    /// Reports every delivery (`None`: to a topic) and every membership change.
    struct Recorder(mpsc::Sender<(&'static str, Option<String>)>);

    #[async_trait]
    impl Deliver for Recorder {
        async fn deliver(&self, sub: &Subscription, _message: &PushMessage, _ttl: Duration) -> Outcome {
            let _ = self.0.send(("sent", Some(sub.client_id.to_string()))).await;
            Outcome::Delivered
        }

        async fn deliver_topic(&self, message: &PushMessage, _ttl: Duration) -> Outcome {
            let _ = self.0.send(("sent to topic", Some(message.notification.topic.to_string()))).await;
            Outcome::Delivered
        }
    }

    #[async_trait]
    impl MembershipApi for Recorder {
        async fn change(&self, op: Op, topic: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError> {
            let what = if op == Op::Add { "joined" } else { "left" };
            let _ = self.0.send((what, Some(format!("{topic}:{}", tokens.join(","))))).await;
            Ok(tokens.iter().map(|_| TokenResult::Ok).collect())
        }
    }

    /// Targets are `{"token": …}`.
    struct Tokens;

    struct Token(String);

    impl davpush_core::TargetData for Token {
        fn params(&self) -> String {
            serde_json::json!({ "token": self.0 }).to_string()
        }
    }

    impl TargetParser for Tokens {
        fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
            let token = params["token"].as_str().ok_or_else(|| TargetError::new(Some("token"), "missing".into()))?;
            Ok(Target::Remote(RemoteTarget::new(ServiceKind::Fcm, Token(token.to_owned()))))
        }

        fn token<'a>(&self, sub: &'a Subscription) -> Option<&'a str> {
            match &sub.target {
                Target::Remote(r) => r.data::<Token>().map(|t| t.0.as_str()),
                _ => None,
            }
        }
    }

    async fn transport(
        topic_mode: bool,
    ) -> (EngineTransport<Tokens>, mpsc::Receiver<(&'static str, Option<String>)>, Arc<MemoryStore>) {
        let (tx, rx) = mpsc::channel(64);
        let recorder = Arc::new(Recorder(tx));
        let store = Arc::new(MemoryStore::default());
        let metrics = Arc::new(Metrics::default());
        let (feedback, _gone) = Feedback::channel();
        let membership = topic_mode.then(|| {
            Membership::start(
                ServiceKind::Fcm,
                recorder.clone(),
                MembershipSettings::default(),
                feedback.clone(),
                metrics.clone(),
            )
        });
        let settings = EngineSettings { max_attempts: 1, ..EngineSettings::default() };
        let engine = Engine::start(ServiceKind::Fcm, recorder, settings, feedback, metrics, store.clone());
        (EngineTransport::new(ServiceKind::Fcm, Tokens, engine, membership), rx, store)
    }

    async fn subscription(t: &EngineTransport<Tokens>, store: &MemoryStore, client: &str) -> Arc<Subscription> {
        let params = serde_json::json!({"token": format!("tok-{client}")});
        let sub = Arc::new(Subscription {
            id: SubscriptionId::random(),
            client_id: ClientId::parse(client, 10).unwrap(),
            topic: Topic::parse("cal", 10).unwrap(),
            target: t.parse_target(&params).unwrap(),
            expires: davpush_core::unix_now() + 100_000,
            triggers: davpush_core::Triggers::ALL,
        });
        store
            .upsert(&davpush_core::StoredSubscription {
                id: sub.id.to_string(),
                client_id: client.into(),
                topic: "cal".into(),
                service: "fcm".into(),
                target: params.to_string(),
                expires: sub.expires,
                created: 0,
                triggers: 3,
            })
            .await
            .unwrap();
        t.added(&sub).await;
        sub
    }

    fn message() -> Arc<PushMessage> {
        Arc::new(PushMessage::new(Notification {
            topic: Topic::parse("cal", 10).unwrap(),
            sync_token: Some("s1".into()),
            trigger: None,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn without_membership_each_subscription_gets_its_message_and_no_topic_is_joined() {
        let (t, mut events, store) = transport(false).await;
        assert_eq!(t.kind(), ServiceKind::Fcm);
        assert!(!t.tracks_membership());
        assert_eq!(t.parse_target(&serde_json::json!({})).unwrap_err().field, Some("token"));
        let subs = [subscription(&t, &store, "a").await, subscription(&t, &store, "b").await];
        let d = t.dispatch(&message(), &subs);
        assert_eq!((d.queued, d.coalesced, d.dropped), (2, 0, 0));
        let mut got = vec![events.recv().await.unwrap(), events.recv().await.unwrap()];
        got.sort();
        assert_eq!(got, [("sent", Some("a".into())), ("sent", Some("b".into()))]);
        t.shutdown().await;
        assert!(events.try_recv().is_err(), "nothing else: no topic message, no membership change");
    }

    #[tokio::test(start_paused = true)]
    async fn with_membership_a_topic_gets_one_message_and_devices_join_and_leave_it() {
        let (t, mut events, store) = transport(true).await;
        assert!(t.tracks_membership());
        let subs = [subscription(&t, &store, "a").await, subscription(&t, &store, "b").await];
        let mut joined = Vec::new();
        while joined.len() < 2 {
            let (what, who) = events.recv().await.unwrap();
            assert_eq!(what, "joined");
            joined.extend(who.unwrap().trim_start_matches("cal:").split(',').map(str::to_owned));
        }
        joined.sort();
        assert_eq!(joined, ["tok-a", "tok-b"]);
        let d = t.dispatch(&message(), &subs);
        assert_eq!((d.queued, d.coalesced, d.dropped), (2, 0, 0), "counted per recipient");
        assert_eq!(events.recv().await.unwrap(), ("sent to topic", Some("cal".into())));
        t.removed(&subs[0]).await;
        assert_eq!(events.recv().await.unwrap(), ("left", Some("cal:tok-a".into())));
        t.shutdown().await;
    }
}
