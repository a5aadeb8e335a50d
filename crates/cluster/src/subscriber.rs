//! The subscriber task: listens to both channels, and to this node's push channel
//! (`<prefix>:push:<node>`, [`crate::RedisPushDirectory`]), on a connection of its own, hands
//! other nodes' messages on, and subscribes again (with backoff) when the connection is lost.

use std::sync::Arc;

use davpush_core::fanout::DecodeError;
use davpush_core::pushsvc::Forwarded;
use davpush_core::{Channel, ClusterEvent, ClusterMessage, Metrics};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{IO_TIMEOUT, MIN_BACKOFF, Received, next_backoff};

/// See the module documentation.
pub(crate) struct Subscriber {
    pub(crate) client: redis::Client,
    pub(crate) names: [String; 2],
    /// This node's push channel.
    pub(crate) push_channel: String,
    pub(crate) node_id: String,
    pub(crate) inbound: mpsc::Sender<Received>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Subscriber {
    /// Subscribes, forwards messages, and on a lost connection subscribes again with backoff.
    pub(crate) async fn run(mut self, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = MIN_BACKOFF;
        let mut joined_before = false;
        loop {
            let attempt = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.names[..]).await?;
                ps.subscribe(&self.push_channel).await?;
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
            if msg.get_channel_name() == self.push_channel {
                match serde_json::from_slice::<Forwarded>(msg.get_payload_bytes()) {
                    Ok(f) => {
                        if self.inbound.send(Received::Push(f)).await.is_err() {
                            return false;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignored a malformed push message from the cluster"),
                }
                continue;
            }
            let channel =
                if msg.get_channel_name() == self.names[0] { Channel::Notify } else { Channel::Subscriptions };
            match decode(msg.get_payload_bytes()) {
                // A positioned notify reaches this node's live connections through here too.
                Ok(m) if m.node == self.node_id && !positioned(&m) => {}
                Ok(m) => {
                    if m.node != self.node_id {
                        self.metrics.cluster(channel.as_str(), "received");
                    }
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

fn positioned(m: &ClusterMessage) -> bool {
    matches!(&m.event, ClusterEvent::Notify { positions, .. } if !positions.is_empty())
}

/// Reads a message: JSON, or `<epoch> <id>,<id>… <JSON>` from the history's script, whose ids
/// become the notifications' positions.
fn decode(payload: &[u8]) -> Result<ClusterMessage, DecodeError> {
    if payload.first() == Some(&b'{') {
        return ClusterMessage::decode(payload);
    }
    let text = std::str::from_utf8(payload).unwrap_or_default();
    let mut parts = text.splitn(3, ' ');
    let (epoch, ids, json) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next());
    let mut m = ClusterMessage::decode(json.unwrap_or_default().as_bytes())?;
    if let ClusterEvent::Notify { positions, .. } = &mut m.event {
        *positions = ids.split(',').filter(|id| !id.is_empty()).map(|id| format!("{epoch}-{id}")).collect();
    }
    Ok(m)
}
