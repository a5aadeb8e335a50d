//! Frames of the WebSocket protocol (`GET /ws`), version 1. Every frame is a JSON text frame
//! with a `type`.

use serde::{Deserialize, Serialize};

use crate::Trigger;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The `Sec-WebSocket-Protocol` value that selects version 1.
pub const SUBPROTOCOL: &str = "davpush.v1";

/// Frames the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Subscribe this connection to a topic.
    Subscribe {
        /// Echoed in the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The topic.
        topic: String,
        /// Requested expiry (unix seconds), clamped by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires: Option<i64>,
        /// Proof that the subscriber may read the topic's collection ([`crate::grant`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
        /// The last position the client saw (from `hello`, `notify` or `resync`): what the topic
        /// got since is replayed, or a `resync` frame says it cannot be. Also turns `position`
        /// on in this connection's `notify` frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// End this connection's subscription to a topic.
    Unsubscribe {
        /// Echoed in the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The topic.
        topic: String,
    },
    /// Create a push subscription at this Director acting as an RFC 8030 push service, or
    /// re-attach an existing one (`push_id` and `secret` given) to this connection.
    #[serde(rename = "push_subscribe")]
    PushSubscribe {
        /// Echoed in the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Restrict the subscription to this application-server key (RFC 8292 §4): an
        /// uncompressed P-256 point, base64url. Pushes must then carry a VAPID signature by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vapid_key: Option<String>,
        /// Re-attach this existing push subscription (with `secret`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push_id: Option<String>,
        /// The secret the subscription was created with (`push_subscribed.secret`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// End a push subscription: later pushes to its endpoint get `410 Gone`.
    #[serde(rename = "push_unsubscribe")]
    PushUnsubscribe {
        /// Echoed in the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The push subscription.
        push_id: String,
        /// Its secret.
        secret: String,
    },
    /// Application-level keep-alive for clients that cannot send WebSocket pings (browsers).
    Ping {
        /// Echoed in the `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// First frame on every connection.
    Hello {
        /// Protocol version of this connection.
        version: u32,
        /// Unguessable id to name this connection in `push_services.websocket.connection_id`.
        connection_id: String,
        /// Seconds between the server's pings; a client silent for two intervals is dropped.
        ping_interval: u64,
        /// The newest position of the Director's notification history when the connection
        /// opened: what a first `subscribe` passes as `since`, so that nothing between this
        /// frame and the subscription is missed. Absent when the history is unavailable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<String>,
    },
    /// A change notification.
    Notify {
        /// The topic that changed.
        topic: String,
        /// New sync-token of the collection, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sync_token: Option<String>,
        /// What changed, when the Application Server said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<Trigger>,
        /// The notification's position in the history: only on connections that subscribed
        /// with `since`; the client passes the last one it saw as `since` when it subscribes again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<String>,
    },
    /// The history cannot say what these topics missed since the client's `since` (too old,
    /// or the Director lost its history): sync them fully.
    Resync {
        /// The topics to sync.
        topics: Vec<String>,
        /// The position to pass as `since` from now on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<String>,
    },
    /// Answer to a `subscribe` frame.
    Subscribed {
        /// The `id` of the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The topic.
        topic: String,
        /// Subscription id.
        subscription_id: String,
        /// Granted expiry, unix seconds.
        expires: i64,
    },
    /// Answer to an `unsubscribe` frame.
    Unsubscribed {
        /// The `id` of the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The topic.
        topic: String,
    },
    /// Answer to a `ping` frame.
    Pong {
        /// The `id` of the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A push subscription was created or re-attached.
    #[serde(rename = "push_subscribed")]
    PushSubscribed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The push subscription's id (the last segment of `endpoint`).
        push_id: String,
        /// Where application servers send pushes: `<push_service.public_url>/push/<push_id>`.
        endpoint: String,
        /// Re-attaches the subscription from a later connection, and deletes it.
        secret: String,
        /// Unix seconds when it ends unless re-attached before.
        expires: i64,
    },
    /// A push subscription was ended.
    #[serde(rename = "push_unsubscribed")]
    PushUnsubscribed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The push subscription.
        push_id: String,
    },
    /// A message an application server pushed to one of the connection's push subscriptions,
    /// as it arrived: still encrypted (`aes128gcm`), the Director never decrypts it.
    Push {
        /// The push subscription.
        push_id: String,
        /// The message's id (the last segment of the `Location` its sender got).
        message_id: String,
        /// The sender's `Topic` header, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// The sender's `Urgency` (`very-low`, `low`, `normal`, `high`).
        urgency: String,
        /// The body as sent (base64url without padding); empty for a push without payload.
        data: String,
    },
    /// A request frame could not be honoured; the connection stays open.
    Error {
        /// The `id` of the request, if it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Error code, same vocabulary as the HTTP APIs.
        error: String,
        /// Human-readable explanation.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_frame_is_small_and_omits_unknowns() {
        let f = ServerFrame::Notify { topic: "t1".into(), sync_token: None, trigger: None, position: None };
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"type":"notify","topic":"t1"}"#);
    }

    #[test]
    fn client_frames_reject_unknown_fields() {
        let r: Result<ClientFrame, _> = serde_json::from_str(r#"{"type":"subscribe","topic":"t","expire":5}"#);
        assert!(r.is_err());
        let ok: ClientFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(ok, ClientFrame::Ping { id: None });
    }
}
