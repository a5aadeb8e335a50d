//! One node of a cluster: changes and notifications published through the [`Fanout`], what
//! other nodes report applied to the index, and a resync after an outage.

use std::sync::Arc;

use crate::fanout::{ClusterEvent, ClusterMessage, Fanout};
use crate::history::Position;
use crate::notification::Exclusions;
use crate::presence::Presence;
use crate::service::notify::Reach;
use crate::store::{StoreError, StoredSubscription};
use crate::{Notification, PushService, SubscriptionId, Topic};

impl PushService {
    /// Makes this service one node of a cluster: notifications and changes of durable
    /// subscriptions are published through `fanout` (see [`crate::fanout`]).
    pub fn with_fanout(mut self, fanout: Arc<dyn Fanout>) -> Self {
        self.fanout = Some(fanout);
        self
    }

    /// Makes the WebSocket subscriptions of this node known to the other nodes of its cluster
    /// through `presence`, and asks it about theirs ([`PushService::unheard`]).
    pub fn with_presence(mut self, presence: Arc<dyn Presence>) -> Self {
        presence.attach(self.index.clone());
        self.presence = Some(presence);
        self
    }

    /// The presence registry, if this node is part of a cluster.
    pub fn presence(&self) -> Option<&Arc<dyn Presence>> {
        self.presence.as_ref()
    }

    /// Tells the presence registry that this node's WebSocket subscriptions of `topic` changed.
    pub(super) fn websocket_changed(&self, topic: &Topic) -> Option<u64> {
        self.presence.as_ref().map(|p| p.changed(topic))
    }

    /// The cluster seam, if this node is part of a cluster.
    pub fn fanout(&self) -> Option<&Arc<dyn Fanout>> {
        self.fanout.as_ref()
    }

    pub(super) fn publish(&self, event: ClusterEvent) {
        if let Some(f) = &self.fanout {
            let channel = event.channel();
            f.publish(channel, ClusterMessage { node: f.node_id().to_owned(), event }.encode());
        }
    }

    /// Applies what another node of the cluster reports. Messages this node sent are skipped.
    /// Only the index changes: the sending node has written the store and talked to the push
    /// service already.
    pub fn apply(&self, message: ClusterMessage, now: i64) {
        let positioned = matches!(&message.event, ClusterEvent::Notify { positions, .. } if !positions.is_empty());
        if !positioned && self.fanout.as_ref().is_some_and(|f| f.node_id() == message.node) {
            return;
        }
        self.apply_event(message.event, now);
    }

    /// Delivers to this node's live connections a notify message that could not be published
    /// to the cluster (so it has no positions): at least they get it.
    pub fn apply_unpublished(&self, message: ClusterMessage, now: i64) {
        if matches!(message.event, ClusterEvent::Notify { .. }) {
            self.apply_event(message.event, now);
        }
    }

    fn apply_event(&self, event: ClusterEvent, now: i64) {
        match event {
            ClusterEvent::Notify { notifications, exclude, positions } => {
                let notifications: Vec<Notification> = notifications
                    .into_iter()
                    .filter_map(|n| {
                        Some(Notification {
                            topic: Topic::parse(&n.topic, usize::MAX).ok()?,
                            sync_token: n.sync_token,
                            trigger: n.trigger,
                        })
                    })
                    .collect();
                let exclude =
                    Exclusions::new(exclude.iter().filter_map(|id| SubscriptionId::parse(id, 64).ok()).collect());
                let positions: Vec<_> = positions.iter().filter_map(|p| Position::parse(p)).collect();
                let positions = if positions.len() == notifications.len() { positions } else { Vec::new() };
                // Durable subscriptions were served by the node that received the notification.
                self.deliver(notifications, &exclude, now, Reach::Live, &positions);
            }
            ClusterEvent::Subscribed { subscription } => {
                let row = StoredSubscription::from(subscription);
                match self.restore(&row) {
                    Some(sub) if sub.target.is_durable() => {
                        let _ = self.index.insert(sub, usize::MAX);
                    }
                    _ => tracing::warn!(
                        subscription = %row.id, service = %row.service,
                        "subscription from another node not indexed: its push service is disabled here or its target invalid"
                    ),
                }
            }
            ClusterEvent::Removed { ids } => {
                for id in ids.iter().filter_map(|id| SubscriptionId::parse(id, 64).ok()) {
                    self.index.remove_if(&id, |s| s.target.is_durable());
                }
            }
        }
    }

    /// Brings the durable part of the index in line with the store (after messages from other
    /// nodes may have been missed, e.g. while the connection between nodes was down). Returns
    /// how many subscriptions were added or removed.
    pub async fn resync(&self, now: i64) -> Result<usize, StoreError> {
        // Candidates for removal are taken before reading the store: a subscription made here
        // meanwhile is in the store before it is in the index, so it is never removed by mistake.
        let before: Vec<_> = self.index.expired(i64::MAX).into_iter().filter(|s| s.target.is_durable()).collect();
        let rows = self.store.load(now).await?;
        let mut changed = 0;
        let mut ids = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            ids.insert(row.id.clone());
            let Some(sub) = self.restore(row) else { continue };
            let fresh = self.index.get(&sub.id).is_none_or(|cur| {
                cur.expires != sub.expires
                    || cur.triggers != sub.triggers
                    || cur.target.to_json() != sub.target.to_json()
            });
            if fresh {
                let _ = self.index.insert(sub, usize::MAX);
                changed += 1;
            }
        }
        for s in before {
            if !ids.contains(s.id.as_str()) && self.index.remove_if(&s.id, |cur| std::ptr::eq(cur, &*s)).is_some() {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::fanout::{Channel, WireSubscription};
    use crate::transport::{Dispatched, TargetError, Transport, Transports};
    use crate::{ClientId, Limits, MemoryStore, Metrics, PushMessage, RemoteTarget, ServiceKind, Subscription, Target};

    #[derive(Debug)]
    struct Recorder(&'static str, Mutex<Vec<(Channel, ClusterMessage)>>);

    impl Fanout for Recorder {
        fn node_id(&self) -> &str {
            self.0
        }
        fn publish(&self, channel: Channel, payload: bytes::Bytes) -> bool {
            self.1.lock().unwrap().push((channel, ClusterMessage::decode(&payload).unwrap()));
            true
        }
    }

    /// A durable transport that counts deliveries.
    #[derive(Default)]
    struct Counting(Mutex<u64>);

    impl Transport for Counting {
        fn kind(&self) -> ServiceKind {
            ServiceKind::Fcm
        }
        fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
            Ok(Target::Remote(RemoteTarget::new(ServiceKind::Fcm, params.to_string())))
        }
        fn dispatch(&self, _m: &Arc<PushMessage>, r: &[Arc<Subscription>]) -> Dispatched {
            *self.0.lock().unwrap() += r.len() as u64;
            Dispatched::default()
        }
    }

    fn node(name: &'static str) -> (PushService, Arc<Recorder>, Arc<Counting>) {
        let rec = Arc::new(Recorder(name, Mutex::default()));
        let counting = Arc::new(Counting::default());
        let svc = PushService::new(
            Arc::new(MemoryStore::default()),
            Transports::default().with(counting.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        )
        .with_fanout(rec.clone());
        (svc, rec, counting)
    }

    #[tokio::test]
    async fn changes_and_notifications_are_published_and_applied_elsewhere() {
        let (a, rec_a, sent_a) = node("a");
        let (b, _, sent_b) = node("b");
        let target = a.transports().get(ServiceKind::Fcm).unwrap().parse_target(&serde_json::json!("tok")).unwrap();
        let (client, topic, now) = (ClientId::parse("c", 8).unwrap(), Topic::parse("t", 8).unwrap(), 1_000);
        a.subscribe(client.clone(), topic.clone(), vec![target], None, now).await.unwrap();
        let (exclude, n) =
            (Exclusions::default(), Notification { topic: topic.clone(), sync_token: None, trigger: None });
        a.notify(vec![n], &exclude, now);
        // Its target is read from the store before the engine gets it (`targets`).
        a.fetches_done(std::time::Duration::from_secs(10)).await;
        a.unsubscribe(&client, None, None).await.unwrap();
        let log = std::mem::take(&mut *rec_a.1.lock().unwrap());
        let channels: Vec<_> = log.iter().map(|(c, _)| *c).collect();
        assert_eq!(channels, [Channel::Subscriptions, Channel::Notify, Channel::Subscriptions]);
        assert_eq!(*sent_a.0.lock().unwrap(), 1, "the receiving node delivers to durable subscriptions");

        let mut log = log.into_iter().map(|(_, m)| m);
        b.apply(log.next().unwrap(), now);
        assert_eq!(b.index().counts()[ServiceKind::Fcm.index()], 1, "b indexes a's subscription");
        b.apply(log.next().unwrap(), now);
        assert_eq!(*sent_b.0.lock().unwrap(), 0, "other nodes never deliver to durable subscriptions");
        // A node ignores what it sent itself.
        let removal = log.next().unwrap();
        a.apply(ClusterMessage { node: "a".into(), ..removal.clone() }, now);
        b.apply(removal, now);
        assert!(b.index().is_empty(), "b forgets the removed subscription");
    }

    #[tokio::test]
    async fn resync_aligns_the_index_with_the_store() {
        let (b, _, _) = node("b");
        let row = |id: &str, client: &str| ClusterMessage {
            node: "a".into(),
            event: ClusterEvent::Subscribed {
                subscription: WireSubscription {
                    id: id.into(),
                    client_id: client.into(),
                    topic: "t".into(),
                    service: "fcm".into(),
                    target: "\"tok\"".into(),
                    expires: 5_000,
                    created: 0,
                    triggers: 3,
                },
            },
        };
        // A subscription whose removal was missed, and one that is stored but was never announced.
        b.apply(row("gone", "c1"), 1_000);
        let ClusterEvent::Subscribed { subscription } = row("kept", "c2").event else { unreachable!() };
        b.store().upsert(&subscription.into()).await.unwrap();
        assert_eq!(b.resync(1_000).await.unwrap(), 2);
        assert!(b.index().get(&SubscriptionId::parse("gone", 64).unwrap()).is_none());
        assert!(b.index().get(&SubscriptionId::parse("kept", 64).unwrap()).is_some());
        assert_eq!(b.resync(1_000).await.unwrap(), 0, "nothing changes twice");
    }
}
