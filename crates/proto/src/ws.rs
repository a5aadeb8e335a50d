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
