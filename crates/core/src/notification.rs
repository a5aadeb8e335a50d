//! A validated notification and the message built from it once per topic.

use bytes::Bytes;
use davpush_proto::{ServerFrame, Trigger};

use crate::{SubscriptionId, Topic};

/// One changed topic, validated.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The topic.
    pub topic: Topic,
    /// The collection's new sync-token, when known.
    pub sync_token: Option<String>,
    /// What changed, when known.
    pub trigger: Option<Trigger>,
}

/// The reserved topic of a VAPID key-rotation message (the spec's `push-message` with a
/// `property-update` of `transports` and no topic). `davpush vapid rotate` queues one per Web
/// Push subscription of the retired key in the outbox under this topic; the Web Push transport
/// renders it as the rotation message, and the engine never lets a later notification replace
/// it. It is no collection's topic: topics are hashes without `:`.
pub const KEY_ROTATION_TOPIC: &str = "davpush:vapid-key-rotation";

impl Notification {
    /// Whether this is a VAPID key-rotation message ([`KEY_ROTATION_TOPIC`]).
    pub fn is_key_rotation(&self) -> bool {
        self.topic.as_str() == KEY_ROTATION_TOPIC
    }
}

/// What transports deliver: the notification plus its wire forms, serialized once and shared
/// (cloning a [`Bytes`] only bumps a reference count).
#[derive(Debug, Clone)]
pub struct PushMessage {
    /// The notification.
    pub notification: Notification,
    /// The WebSocket `notify` frame (JSON text).
    pub ws_frame: Bytes,
}

impl PushMessage {
    /// Builds the message and serializes its frame.
    pub fn new(notification: Notification) -> Self {
        let frame = ServerFrame::Notify {
            topic: notification.topic.as_str().to_owned(),
            sync_token: notification.sync_token.clone(),
            trigger: notification.trigger,
        };
        let ws_frame = Bytes::from(serde_json::to_vec(&frame).expect("a frame always serializes"));
        PushMessage { notification, ws_frame }
    }
}

/// Subscriptions a notification must skip (`Push-Dont-Notify`). Usually empty or one id.
#[derive(Debug, Clone, Default)]
pub struct Exclusions(Vec<SubscriptionId>);

impl Exclusions {
    /// From the request's ids.
    pub fn new(ids: Vec<SubscriptionId>) -> Self {
        Exclusions(ids)
    }
    /// The excluded ids.
    pub fn ids(&self) -> &[SubscriptionId] {
        &self.0
    }
    /// Whether `id` is excluded.
    pub fn contains(&self, id: &SubscriptionId) -> bool {
        !self.0.is_empty() && self.0.iter().any(|x| x == id)
    }
}
