//! Wire types of davpush: the bodies of the Notify API and the Subscription API, the frames of the
//! WebSocket protocol, the JSON error body and subscription grants. No I/O, so that the Director, the client
//! library and the load tool share one definition (`docs/protocol.md` is the prose of this crate).
//!
//! # Layout
//! - [`notify`]: `POST /notify` request and response.
//! - [`subscription`]: `POST /subscribe` and `POST /unsubscribe`.
//! - [`ws`]: WebSocket frames in both directions, protocol version.
//! - [`error`]: the JSON error body every API answers with.
//! - [`info`]: `GET /info`, what a Director offers.
//! - [`grant`]: signed proof that a subscriber may read a topic's collection.
//! - [`xml`]: the WebDAV-Push `push-message` payload.
//!
//! Requests are parsed with `deny_unknown_fields`: a misspelt `exclude` or `expires` would silently
//! change what is delivered, so it is rejected with a 400 that names the field instead.

pub mod error;
pub mod grant;
pub mod info;
pub mod notify;
pub mod subscription;
pub mod ws;
pub mod xml;

pub use error::ErrorBody;

/// Seconds since the unix epoch: the clock of every timestamp on the wire (`expires`, grants).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
pub use grant::{Grant, GrantError, GrantKeyError, GrantKeys};
pub use info::DirectorInfo;
pub use notify::{ActiveTopic, ActiveTopics, NotifyRequest, NotifyResponse, NotifyTopic, Trigger};
pub use subscription::{
    SubscribeRequest, SubscribeResponse, SubscriptionInfo, UnsubscribeRequest, UnsubscribeResponse, WebSocketTarget,
};
pub use ws::{ClientFrame, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame};
