//! A subscription: a client wants the notifications of one topic through one push service.

use std::sync::Arc;

use crate::live::Connection;
use crate::{ClientId, ServiceKind, SubscriptionId, Topic};

/// Where a subscription's messages go. Live targets exist only in this process; durable ones are
/// kept in the store and survive restarts.
#[derive(Debug, Clone)]
pub enum Target {
    /// A WebSocket connection of this process.
    WebSocket(Arc<Connection>),
}

impl Target {
    /// The push service of this target.
    pub fn kind(&self) -> ServiceKind {
        match self {
            Target::WebSocket(_) => ServiceKind::WebSocket,
        }
    }

    /// Whether the target is kept in the store (and survives a restart).
    pub fn is_durable(&self) -> bool {
        match self {
            Target::WebSocket(_) => false,
        }
    }

    /// The parameters to keep in the store for a durable target, as the JSON the transport parses.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Target::WebSocket(c) => serde_json::json!({ "connection_id": c.id() }),
        }
    }

    /// The WebSocket connection, for a live target.
    pub fn connection(&self) -> Option<&Arc<Connection>> {
        match self {
            Target::WebSocket(c) => Some(c),
        }
    }

    /// `true` if both name the same destination (for a WebSocket: the same connection object).
    pub fn same_destination(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::WebSocket(a), Target::WebSocket(b)) => Arc::ptr_eq(a, b),
        }
    }
}

/// An active subscription. Immutable: an update replaces it (keeping the id).
#[derive(Debug)]
pub struct Subscription {
    /// Stable id, chosen by the Director.
    pub id: SubscriptionId,
    /// The subscribing client.
    pub client_id: ClientId,
    /// The topic.
    pub topic: Topic,
    /// The destination.
    pub target: Target,
    /// Expiry, unix seconds. Never notified at or after this time.
    pub expires: i64,
}

impl Subscription {
    /// The push service.
    pub fn kind(&self) -> ServiceKind {
        self.target.kind()
    }
}
