//! `POST /subscribe` and `POST /unsubscribe`: clients (un)subscribe to topics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /subscribe`, the draft's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Identifies the client installation; with `topic` and the push service it identifies a
    /// subscription, so subscribing again updates instead of duplicating.
    pub client_id: String,
    /// The topic to subscribe to.
    pub topic: String,
    /// Push service name → service-specific parameters. Parsed per service by the Director, so an
    /// unknown or disabled service can be named in the error.
    pub push_services: BTreeMap<String, serde_json::Value>,
    /// Requested expiry (unix seconds); the Director clamps it to its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The kinds of change wanted (`content`, `property`); absent means both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<crate::Trigger>>,
    /// Proof that the subscriber may read the topic's collection ([`crate::grant`]); required
    /// when the Director has `subscription.grants = "required"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// `push_services.websocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketTarget {
    /// The connection id from the server's `hello` frame.
    pub connection_id: String,
}

/// Answer to `POST /subscribe` (201 when a subscription was created, 200 when all were updated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResponse {
    /// Granted expiry, unix seconds.
    pub expires: i64,
    /// One entry per push service of the request.
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// One subscription in a [`SubscribeResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// Subscription id: stable across updates; what `exclude` (Push-Dont-Notify) names.
    pub id: String,
    /// Push service name.
    pub push_service: String,
    /// `true` if created by this request, `false` if an existing one was updated.
    pub created: bool,
}

/// Body of `POST /unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    /// The client whose subscriptions end.
    pub client_id: String,
    /// Only this topic; absent means every topic of the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Only these push services; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_services: Option<Vec<String>>,
}

/// Answer to `POST /unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeResponse {
    /// Number of subscriptions removed (at least 1; none is a 404).
    pub removed: u64,
}
