//! Scale-out for the davpush Push Director: [`RedisFanout`], the [`Fanout`] that links Director
//! nodes through Redis pub/sub.
//!
//! Two channels, `<prefix>:notify` and `<prefix>:subscriptions` ([`Channel`]), carry
//! [`ClusterMessage`]s that [`davpush_core::PushService`] serialized once. [`Fanout::publish`]
//! only queues (bounded); a publisher task sends each message with one `PUBLISH` over a
//! reconnecting connection. A subscriber task reads both channels, skips this node's own
//! messages and hands the others to the caller's [`Inbound`] receiver; after it had to
//! reconnect it also hands [`Received::Resubscribed`], since messages may have been missed
//! meanwhile (the caller then re-reads the store).
//!
//! While Redis is unreachable, nothing blocks: this node still delivers what it receives, and
//! each message it could not publish is logged and counted
//! (`davpush_cluster_messages_total{outcome="failed"}`).
//!
//! # Layout
//! Everything is here: [`ClusterSettings`], [`RedisFanout::start`], the publisher and the
//! subscriber tasks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use davpush_core::{Channel, ClusterMessage, Fanout, Metrics};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

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
}

/// Messages from the other nodes.
pub type Inbound = mpsc::Receiver<Received>;

/// See the crate documentation.
#[derive(Debug)]
pub struct RedisFanout {
    node_id: String,
    queue: mpsc::Sender<(Channel, Bytes)>,
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
        tokio::spawn(publish_loop(client.clone(), names.clone(), outgoing, metrics.clone(), stopped.clone()));
        let sub = Subscriber {
            client,
            names,
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
        Ok((Arc::new(RedisFanout { node_id: settings.node_id, queue, metrics, stop }), inbound))
    }
}

impl Fanout for RedisFanout {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> bool {
        match self.queue.try_send((channel, payload)) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.cluster(channel.as_str(), "dropped");
                tracing::warn!(channel = channel.as_str(), error = %e, "cluster message dropped: the publish queue is full");
                false
            }
        }
    }

    fn close(&self) {
        let _ = self.stop.send(true);
    }
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(MAX_BACKOFF)
}

/// Sends queued messages, one `PUBLISH` each, reconnecting with backoff.
async fn publish_loop(
    client: redis::Client,
    names: [String; 2],
    mut outgoing: mpsc::Receiver<(Channel, Bytes)>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut failing = false;
    loop {
        let (channel, payload) = tokio::select! {
            m = outgoing.recv() => match m { Some(m) => m, None => return },
            _ = stop.changed() => return,
        };
        if conn.is_none() && Instant::now() >= retry_at {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(IO_TIMEOUT))
                .set_response_timeout(Some(IO_TIMEOUT))
                .set_number_of_retries(1);
            match tokio::time::timeout(IO_TIMEOUT, client.get_connection_manager_with_config(config)).await {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    backoff = MIN_BACKOFF;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot connect to Redis to publish"),
                Err(_) => tracing::debug!("connecting to Redis to publish timed out"),
            }
            if conn.is_none() {
                retry_at = Instant::now() + backoff;
                backoff = next_backoff(backoff);
            }
        }
        let name = &names[channel as usize];
        let result = match conn.as_mut() {
            // The connection manager reconnects by itself after an error.
            Some(c) => redis::cmd("PUBLISH").arg(name).arg(payload.as_ref()).query_async::<i64>(c).await,
            None => Err(redis::RedisError::from(std::io::Error::other("not connected"))),
        };
        match result {
            Ok(_) => {
                metrics.cluster(channel.as_str(), "published");
                if std::mem::take(&mut failing) {
                    tracing::info!("publishing to the cluster works again");
                }
            }
            Err(e) => {
                metrics.cluster(channel.as_str(), "failed");
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        error = %e, channel = %name,
                        "cannot publish to the cluster; other nodes miss messages until Redis is back"
                    );
                }
            }
        }
    }
}

struct Subscriber {
    client: redis::Client,
    names: [String; 2],
    node_id: String,
    inbound: mpsc::Sender<Received>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Subscriber {
    /// Subscribes, forwards messages, and on a lost connection subscribes again with backoff.
    async fn run(mut self, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = MIN_BACKOFF;
        let mut joined_before = false;
        loop {
            let attempt = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.names[..]).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let attempt = tokio::select! {
                r = tokio::time::timeout(IO_TIMEOUT, attempt) => r,
                _ = self.stop.changed() => return,
            };
            match attempt {
                Ok(Ok(ps)) => {
                    backoff = MIN_BACKOFF;
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    if joined_before {
                        tracing::info!("subscribed to the cluster again");
                        if self.inbound.send(Received::Resubscribed).await.is_err() {
                            return;
                        }
                    }
                    joined_before = true;
                    if !self.forward(ps).await {
                        return;
                    }
                    tracing::warn!("lost the connection to the cluster's Redis; reconnecting");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to the cluster's channels"),
                Err(_) => tracing::warn!("subscribing to the cluster's channels timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.changed() => return,
            }
            backoff = next_backoff(backoff);
        }
    }

    /// Forwards messages until the connection ends (`true`) or this node stops (`false`).
    async fn forward(&mut self, ps: redis::aio::PubSub) -> bool {
        let mut stream = ps.into_on_message();
        loop {
            let msg = tokio::select! {
                m = stream.next() => match m { Some(m) => m, None => return true },
                _ = self.stop.changed() => return false,
                _ = self.inbound.closed() => return false,
            };
            let channel =
                if msg.get_channel_name() == self.names[0] { Channel::Notify } else { Channel::Subscriptions };
            match ClusterMessage::decode(msg.get_payload_bytes()) {
                Ok(m) if m.node == self.node_id => {}
                Ok(m) => {
                    self.metrics.cluster(channel.as_str(), "received");
                    if self.inbound.send(Received::Message(m)).await.is_err() {
                        return false;
                    }
                }
                Err(e) => {
                    self.metrics.cluster(channel.as_str(), "malformed");
                    tracing::warn!(error = %e, "ignored a malformed message from the cluster");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
