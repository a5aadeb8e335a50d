//! Scale-out for the davpush Push Director: [`RedisFanout`], the [`Fanout`] that links Director
//! nodes through Redis pub/sub.
//!
//! Two channels, `<prefix>:notify` and `<prefix>:subscriptions` ([`Channel`]), carry
//! [`ClusterMessage`]s that [`davpush_core::PushService`] serialized once. [`Fanout::publish`]
//! only queues (bounded); a publisher task sends each message with one `PUBLISH`. A subscriber
//! task reads both channels, skips this node's own messages and hands the others to the caller's
//! [`Inbound`] receiver; after it had to reconnect it also hands [`Received::Resubscribed`],
//! since messages may have been missed meanwhile (the caller then re-reads the store).
//!
//! While Redis is unreachable, nothing blocks: this node still delivers what it receives. The
//! design choice a reader may question: the publisher does not trust its connection until a
//! `PUBLISH` fails. It `PING`s it when idle, and a message whose `PUBLISH` fails is sent again on
//! a new connection for up to [`ClusterSettings::publish_retry`]; only then is it logged and
//! counted (`davpush_cluster_messages_total{outcome="failed"}`). So a Redis restart loses no
//! message sent once Redis is back (issue 9), at the price of a possible duplicate.
//!
//! # Layout
//! - here: [`ClusterSettings`], [`RedisFanout::start`] and its [`Fanout`] side (the bounded queue);
//! - `publisher`: the publisher task (ping, reconnect, retry);
//! - `subscriber`: the subscriber task;
//! - `presence`: [`RedisPresence`], which topics each node holds WebSocket subscriptions of;
//! - `pushdir`: [`RedisPushDirectory`], the push-service subscriptions of every node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use davpush_core::{Channel, ClusterMessage, Fanout, Metrics};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use publisher::{Outgoing, Publisher};
use subscriber::Subscriber;

pub use history::RedisHistory;

mod history;
mod presence;
mod publisher;
mod pushdir;
mod subscriber;

pub use presence::{PresenceSettings, RedisPresence};
pub use pushdir::RedisPushDirectory;

/// Shortest wait before reconnecting to Redis.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting to Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Deadline of one connection attempt or command.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// How a node joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://host:port[/db]`.
    pub redis_url: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Prefix of the channel names (clusters sharing one Redis need different prefixes).
    pub channel_prefix: String,
    /// Messages queued for publishing, and received ones waiting to be applied.
    pub queue: usize,
    /// How long [`RedisFanout::start`] waits for the first subscription before going on
    /// (it keeps trying in the background).
    pub ready_timeout: Duration,
    /// How often the idle publishing connection is checked with a `PING`.
    pub ping_interval: Duration,
    /// How long a message that could not be published is tried again (on new connections)
    /// before it is given up and counted `failed`.
    pub publish_retry: Duration,
    /// The cluster's notification history ([`RedisHistory`]): notify messages published with
    /// [`Fanout::publish_positioned`] are added to it and get their positions there.
    pub history: Option<davpush_core::history::HistorySettings>,
}

/// Joining the cluster failed.
#[derive(Debug, thiserror::Error)]
#[error("cluster.redis_url: {0}")]
pub struct ClusterError(#[from] redis::RedisError);

/// What the subscriber hands on.
#[derive(Debug)]
pub enum Received {
    /// A message from another node.
    Message(ClusterMessage),
    /// The subscription was renewed after a lost connection: messages may have been missed.
    Resubscribed,
    /// A positioned notify message of this node that could not be published: for this node's
    /// own live connections ([`davpush_core::PushService::apply_unpublished`]).
    Unpublished(ClusterMessage),
    /// What another node tells this one about a push subscription it holds
    /// ([`davpush_core::pushsvc::PushEndpoints::receive`]).
    Push(davpush_core::pushsvc::Forwarded),
}

/// Messages from the other nodes.
pub type Inbound = mpsc::Receiver<Received>;

/// See the crate documentation.
#[derive(Debug)]
pub struct RedisFanout {
    node_id: String,
    positioned: bool,
    queue: mpsc::Sender<Outgoing>,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

impl RedisFanout {
    /// Starts the publisher and subscriber tasks and waits (up to `settings.ready_timeout`) until
    /// this node listens to the cluster's channels. Fails only on a malformed URL; an unreachable
    /// Redis is retried in the background.
    pub async fn start(settings: ClusterSettings, metrics: Arc<Metrics>) -> Result<(Arc<Self>, Inbound), ClusterError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let names = Channel::ALL.map(|c| format!("{}:{}", settings.channel_prefix, c.as_str()));
        let (queue, outgoing) = mpsc::channel(settings.queue.max(1));
        let (inbound_tx, inbound) = mpsc::channel(settings.queue.max(1));
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready) = oneshot::channel();
        let publisher = Publisher {
            history: settings.history.map(|h| history::HistoryKeys::new(&settings.channel_prefix, h)),
            unpublished: inbound_tx.clone(),
            client: client.clone(),
            names: names.clone(),
            client_name: format!("{}:{}:publisher", settings.channel_prefix, settings.node_id),
            outgoing,
            metrics: metrics.clone(),
            stop: stopped.clone(),
            ping_interval: settings.ping_interval,
            publish_retry: settings.publish_retry,
        };
        tokio::spawn(publisher.run());
        let sub = Subscriber {
            client,
            names,
            push_channel: pushdir::push_channel(&settings.channel_prefix, &settings.node_id),
            node_id: settings.node_id.clone(),
            inbound: inbound_tx,
            metrics: metrics.clone(),
            stop: stopped,
        };
        tokio::spawn(sub.run(ready_tx));
        match tokio::time::timeout(settings.ready_timeout, ready).await {
            Ok(Ok(())) => {
                tracing::info!(node = %settings.node_id, prefix = %settings.channel_prefix, "joined the cluster")
            }
            _ => tracing::warn!(
                node = %settings.node_id,
                "Redis is not reachable yet; this node delivers locally and keeps trying to join the cluster"
            ),
        }
        let positioned = settings.history.is_some();
        Ok((Arc::new(RedisFanout { node_id: settings.node_id, positioned, queue, metrics, stop }), inbound))
    }
}

impl Fanout for RedisFanout {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> bool {
        self.queue(Outgoing { channel, payload, positioned: None, queued: Instant::now() })
    }

    fn publish_positioned(&self, message: ClusterMessage) -> bool {
        if !self.positioned {
            return self.publish(Channel::Notify, message.encode());
        }
        let payload = message.encode();
        self.queue(Outgoing { channel: Channel::Notify, payload, positioned: Some(message), queued: Instant::now() })
    }

    fn close(&self) {
        let _ = self.stop.send(true);
    }
}

impl RedisFanout {
    fn queue(&self, m: Outgoing) -> bool {
        let channel = m.channel;
        match self.queue.try_send(m) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.cluster(channel.as_str(), "dropped");
                tracing::warn!(channel = channel.as_str(), error = %e, "cluster message dropped: the publish queue is full");
                false
            }
        }
    }
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests;
