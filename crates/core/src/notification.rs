//! A validated notification and the message built from it once per topic.

use std::sync::OnceLock;

use bytes::Bytes;
use davpush_proto::{ServerFrame, Trigger};

use crate::history::Position;
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
    /// The WebSocket `notify` frame (JSON text), without a position: also the `topic-json`
    /// payload of Web Push and the `data` of a Server-Sent Event.
    pub ws_frame: Bytes,
    /// Its position in the notification history, once it has one ([`crate::history`]).
    pub position: Option<Position>,
    /// The `notify` frame with `position`, made when a connection first needs it.
    positioned: OnceLock<Bytes>,
    /// The Server-Sent Event, made when a stream first needs it.
    sse: OnceLock<Bytes>,
}

/// How a live connection wants its notifications written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Framing {
    /// WebSocket `notify` frames as version 1 defined them.
    WebSocket = 0,
    /// WebSocket `notify` frames with their `position` (the client subscribed with `since`).
    WebSocketPositions = 1,
    /// Server-Sent Events (`GET /events`).
    Sse = 2,
}

impl PushMessage {
    /// Builds the message and serializes its frame.
    pub fn new(notification: Notification) -> Self {
        let frame = ServerFrame::Notify {
            topic: notification.topic.as_str().to_owned(),
            sync_token: notification.sync_token.clone(),
            trigger: notification.trigger,
            position: None,
        };
        let ws_frame = Bytes::from(serde_json::to_vec(&frame).expect("a frame always serializes"));
        PushMessage { notification, ws_frame, position: None, positioned: OnceLock::new(), sse: OnceLock::new() }
    }

    /// The message with a position.
    pub fn at(mut self, position: Position) -> Self {
        self.position = Some(position);
        self
    }

    /// The bytes a connection with `framing` gets.
    pub fn frame(&self, framing: Framing) -> &Bytes {
        match (framing, &self.position) {
            (Framing::WebSocket, _) | (Framing::WebSocketPositions, None) => &self.ws_frame,
            (Framing::WebSocketPositions, Some(p)) => self.positioned.get_or_init(|| {
                let frame = ServerFrame::Notify {
                    topic: self.notification.topic.as_str().to_owned(),
                    sync_token: self.notification.sync_token.clone(),
                    trigger: self.notification.trigger,
                    position: Some(p.to_string()),
                };
                Bytes::from(serde_json::to_vec(&frame).expect("a frame always serializes"))
            }),
            (Framing::Sse, p) => self.sse.get_or_init(|| {
                let mut out = Vec::with_capacity(self.ws_frame.len() + 64);
                if let Some(p) = p {
                    out.extend_from_slice(format!("id: {p}\n").as_bytes());
                }
                out.extend_from_slice(b"event: notify\ndata: ");
                out.extend_from_slice(&self.ws_frame);
                out.extend_from_slice(b"\n\n");
                Bytes::from(out)
            }),
        }
    }
}

/// A `resync` frame (WebSocket) or event (SSE) for `topics`, continuing from `head`.
pub fn resync_frame(framing: Framing, topics: &[Topic], head: Option<&Position>) -> Bytes {
    let frame = ServerFrame::Resync {
        topics: topics.iter().map(|t| t.as_str().to_owned()).collect(),
        position: head.map(ToString::to_string),
    };
    let json = serde_json::to_string(&frame).expect("a frame always serializes");
    match framing {
        Framing::WebSocket | Framing::WebSocketPositions => Bytes::from(json),
        Framing::Sse => {
            let id = head.map(|p| format!("id: {p}\n")).unwrap_or_default();
            Bytes::from(format!("{id}event: resync\ndata: {json}\n\n"))
        }
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
