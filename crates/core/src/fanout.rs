//! The seam between Director nodes of one cluster (scale-out mode).
//!
//! Nodes share one store and tell each other two things through a [`Fanout`]: the notifications
//! they received (so that every node delivers them to its own WebSocket connections), and the
//! changes of durable subscriptions (so that every node's [`crate::Index`] knows all of them).
//! Only the node that received a notification delivers to durable subscriptions: each
//! notification reaches a Web Push/FCM/APNs/HMS subscription once however many nodes run.
//!
//! A [`ClusterMessage`] is serialized once ([`ClusterMessage::encode`]) and handed to
//! [`Fanout::publish`], which only queues. A node skips the messages it sent itself.

use bytes::Bytes;
use davpush_proto::Trigger;
use serde::{Deserialize, Serialize};

use crate::store::StoredSubscription;

/// Which stream of the cluster a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Notifications.
    Notify,
    /// Changes of durable subscriptions.
    Subscriptions,
}

impl Channel {
    /// Both channels.
    pub const ALL: [Channel; 2] = [Channel::Notify, Channel::Subscriptions];

    /// Suffix of the channel's name (after the configured prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Notify => "notify",
            Channel::Subscriptions => "subscriptions",
        }
    }
}

/// Sends messages to the other nodes of a cluster.
pub trait Fanout: Send + Sync + std::fmt::Debug + 'static {
    /// This node's id (messages carrying it are skipped on receipt).
    fn node_id(&self) -> &str;
    /// Queues `payload` for every node; never blocks or waits. Returns `false` if it was
    /// dropped (queue full or closed); the implementation counts and logs that.
    fn publish(&self, channel: Channel, payload: Bytes) -> bool;
    /// Queues a notify message to be given positions in the cluster's history and then sent
    /// to every node, this one included, with them ([`ClusterEvent::Notify::positions`]). A
    /// fanout without a history publishes it as it is.
    fn publish_positioned(&self, message: ClusterMessage) -> bool {
        self.publish(Channel::Notify, message.encode())
    }
    /// Stops talking to the other nodes (at shutdown).
    fn close(&self) {}
}

/// One notified topic, as sent between nodes (already validated by the sending node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireNotification {
    /// The topic.
    pub topic: String,
    /// Its sync-token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// Its trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// A durable subscription, as sent between nodes (the store's row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSubscription {
    /// Subscription id.
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Topic.
    pub topic: String,
    /// Push service name.
    pub service: String,
    /// The target's parameters, JSON.
    pub target: String,
    /// Expiry, unix seconds.
    pub expires: i64,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Wanted kinds of change.
    pub triggers: u8,
}

impl From<&StoredSubscription> for WireSubscription {
    fn from(s: &StoredSubscription) -> Self {
        WireSubscription {
            id: s.id.clone(),
            client_id: s.client_id.clone(),
            topic: s.topic.clone(),
            service: s.service.clone(),
            target: s.target.clone(),
            expires: s.expires,
            created: s.created,
            triggers: s.triggers,
        }
    }
}

impl From<WireSubscription> for StoredSubscription {
    fn from(s: WireSubscription) -> Self {
        StoredSubscription {
            id: s.id,
            client_id: s.client_id,
            topic: s.topic,
            service: s.service,
            target: s.target,
            expires: s.expires,
            created: s.created,
            triggers: s.triggers,
        }
    }
}

/// What happened on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// Topics were notified (deliver to local WebSocket subscribers).
    Notify {
        /// The notifications.
        notifications: Vec<WireNotification>,
        /// Subscription ids to skip.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// The notifications' positions in the cluster's history, one each, when they have
        /// them ([`crate::history`]). Such a message is applied by its sender too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        positions: Vec<String>,
    },
    /// A durable subscription was created or updated.
    Subscribed {
        /// The subscription as stored.
        subscription: WireSubscription,
    },
    /// Durable subscriptions ended (unsubscribed, gone, expired).
    Removed {
        /// Their ids.
        ids: Vec<String>,
    },
}

impl ClusterEvent {
    /// The channel the event travels on.
    pub fn channel(&self) -> Channel {
        match self {
            ClusterEvent::Notify { .. } => Channel::Notify,
            ClusterEvent::Subscribed { .. } | ClusterEvent::Removed { .. } => Channel::Subscriptions,
        }
    }
}

/// An event and the node it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMessage {
    /// The sending node.
    pub node: String,
    /// What happened.
    pub event: ClusterEvent,
}

/// A message from another node could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed cluster message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl ClusterMessage {
    /// Serializes the message (JSON).
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a cluster message always serializes"))
    }

    /// Reads a message.
    pub fn decode(bytes: &[u8]) -> Result<ClusterMessage, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_keep_their_channel() {
        let m = ClusterMessage {
            node: "n1".into(),
            event: ClusterEvent::Notify {
                notifications: vec![WireNotification {
                    topic: "t".into(),
                    sync_token: Some("s1".into()),
                    trigger: Some(Trigger::Content),
                }],
                exclude: vec!["x".into()],
                positions: vec![],
            },
        };
        let back = ClusterMessage::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.event.channel(), Channel::Notify);
        let r = ClusterEvent::Removed { ids: vec!["a".into()] };
        assert_eq!(r.channel(), Channel::Subscriptions);
        assert!(ClusterMessage::decode(b"{\"node\":1}").is_err());
    }
}
