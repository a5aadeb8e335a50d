//! A subscription: a client wants the notifications of one topic through one push service.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use davpush_proto::Trigger;

use crate::live::Connection;
use crate::{ClientId, ServiceKind, SubscriptionId, Topic};

/// Where a subscription's messages go. Live targets exist only in this process; remote ones
/// (a push service that reaches the device) are kept in the store and survive restarts.
#[derive(Debug, Clone)]
pub enum Target {
    /// A WebSocket connection of this process.
    WebSocket(Arc<Connection>),
    /// A destination at a push service.
    Remote(RemoteTarget),
    /// A destination at a push service that is kept in the store only (issue 11: only the
    /// routing of a durable subscription is held in memory). Its parameters are read from the
    /// store, in batches, when a notification is delivered ([`crate::PushService`]).
    Stored(ServiceKind),
}

/// What a transport keeps of a destination: the parsed form it delivers with. It gives back
/// the canonical parameters on demand (for the store, for comparing), so that a durable
/// subscription holds its target once, not also as JSON text (issue 11: a million of them).
pub trait TargetData: Any + Send + Sync {
    /// The canonical parameters, JSON: stored, compared, and parsed again by the transport
    /// after a restart.
    fn params(&self) -> String;
}

/// A target that is nothing but its canonical parameters' JSON (tests, simple transports).
impl TargetData for String {
    fn params(&self) -> String {
        self.clone()
    }
}

/// A destination at a push service, as its transport parsed it. The core keeps it opaque: only
/// the transport that made it reads its data, so adding a push service needs no change here.
#[derive(Clone)]
pub struct RemoteTarget {
    kind: ServiceKind,
    data: Arc<dyn TargetData>,
}

impl RemoteTarget {
    /// A target of `kind`; `data` is the transport's parsed form, which gives back the
    /// canonical parameters ([`TargetData::params`]).
    pub fn new<T: TargetData>(kind: ServiceKind, data: T) -> Self {
        RemoteTarget { kind, data: Arc::new(data) }
    }

    /// The push service.
    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// The canonical parameters, JSON.
    pub fn params(&self) -> String {
        self.data.params()
    }

    /// The transport's parsed form, if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.data;
        any.downcast_ref()
    }
}

impl fmt::Debug for RemoteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parameters may hold push tokens or endpoints: keep them out of logs.
        f.debug_struct("RemoteTarget").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Target {
    /// The push service of this target.
    pub fn kind(&self) -> ServiceKind {
        match self {
            Target::WebSocket(_) => ServiceKind::WebSocket,
            Target::Remote(r) => r.kind,
            Target::Stored(kind) => *kind,
        }
    }

    /// Whether the target is kept in the store (and survives a restart).
    pub fn is_durable(&self) -> bool {
        matches!(self, Target::Remote(_) | Target::Stored(_))
    }

    /// Whether only the store has the parameters ([`Target::Stored`]).
    pub fn is_stored_only(&self) -> bool {
        matches!(self, Target::Stored(_))
    }

    /// The parameters as the JSON the transport parses (what the store keeps); empty for a
    /// [`Target::Stored`], whose parameters only the store has.
    pub fn to_json(&self) -> String {
        match self {
            Target::WebSocket(c) => serde_json::json!({ "connection_id": c.id() }).to_string(),
            Target::Remote(r) => r.params(),
            Target::Stored(_) => String::new(),
        }
    }

    /// The WebSocket connection, for a live target.
    pub fn connection(&self) -> Option<&Arc<Connection>> {
        match self {
            Target::WebSocket(c) => Some(c),
            Target::Remote(_) | Target::Stored(_) => None,
        }
    }

    /// `true` if both name the same destination (for a WebSocket: the same connection object).
    /// A [`Target::Stored`] is not known to be the same as anything.
    pub fn same_destination(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::WebSocket(a), Target::WebSocket(b)) => Arc::ptr_eq(a, b),
            (Target::Remote(a), Target::Remote(b)) => {
                a.kind == b.kind && (Arc::ptr_eq(&a.data, &b.data) || a.params() == b.params())
            }
            _ => false,
        }
    }
}

/// Which kinds of change a subscription wants (the spec's triggers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triggers {
    /// Members added, changed or removed.
    pub content: bool,
    /// Properties of the collection changed.
    pub property: bool,
}

impl Triggers {
    /// Both kinds (the default).
    pub const ALL: Triggers = Triggers { content: true, property: true };

    /// From a list of triggers; `None` for an empty list.
    pub fn from_list(list: &[Trigger]) -> Option<Triggers> {
        let t = Triggers { content: list.contains(&Trigger::Content), property: list.contains(&Trigger::Property) };
        (t.content || t.property).then_some(t)
    }

    /// Whether a notification with `trigger` is wanted (no trigger counts as content).
    pub fn accepts(self, trigger: Option<Trigger>) -> bool {
        match trigger {
            None | Some(Trigger::Content) => self.content,
            Some(Trigger::Property) => self.property,
        }
    }

    /// As stored: bit 0 content, bit 1 property.
    pub fn bits(self) -> u8 {
        u8::from(self.content) | (u8::from(self.property) << 1)
    }

    /// From [`Triggers::bits`]; anything without a known bit means both.
    pub fn from_bits(b: u8) -> Triggers {
        let t = Triggers { content: b & 1 != 0, property: b & 2 != 0 };
        if t.content || t.property { t } else { Triggers::ALL }
    }
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers::ALL
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
    /// The kinds of change it wants.
    pub triggers: Triggers,
}

impl Subscription {
    /// The push service.
    pub fn kind(&self) -> ServiceKind {
        self.target.kind()
    }
}
