//! The domain of the davpush Push Director, free of HTTP and SQL.
//!
//! A [`PushService`] receives subscriptions and notifications. It keeps every active subscription
//! in an in-memory [`Index`] (topic → subscribers per push service), so that a notification never
//! touches the store: the store ([`SubscriptionStore`]) is written on subscribe/unsubscribe/expiry
//! and read once at start to rebuild the index. Each push service is a [`Transport`]; the
//! WebSocket one ([`live::WebSocketTransport`]) hands frames to in-process connections.
//!
//! # Layout
//! - [`ids`]: `Topic`, `ClientId`, `SubscriptionId`, random ids.
//! - [`kind`]: `ServiceKind`, the closed set of push services.
//! - [`subscription`]: `Subscription` and its `Target`.
//! - [`notification`]: a validated notification and the `PushMessage` serialized once per topic.
//! - [`index`]: the routing index.
//! - [`live`]: WebSocket connections (bounded mailboxes), their hub and transport.
//! - [`fanout`]: the `Fanout` seam between the nodes of a cluster and the messages they exchange.
//! - [`presence`]: the `Presence` seam: which topics other nodes hold WebSocket subscriptions of.
//! - [`feedback`]: transports report subscriptions that are gone.
//! - [`history`]: positions of notifications, and what a resuming client missed.
//! - [`transport`]: the `Transport` trait and the `Transports` registry.
//! - [`store`]: the `SubscriptionStore` trait and an in-memory store.
//! - [`secrets`]: secret files, mode 0600.
//! - [`service`]: `PushService`, the one entry point the HTTP layer calls (a folder: limits, error,
//!   subscribe, notify, cluster, startup).
//! - [`session`]: the WebSocket protocol, client frame in, server frame out, without a socket.
//! - [`metrics`]: Prometheus metrics of the above.
//!
//! The design choice a reader may question: the notify path is synchronous. Lookup, filtering and
//! hand-off to transports never await; transports that talk to the network queue the work in
//! their own bounded engines. So a notify answers in microseconds however slow a push service is.

pub mod fanout;
pub mod feedback;
pub mod history;
pub mod ids;
pub mod index;
pub mod kind;
pub mod live;
pub mod metrics;
pub mod notification;
pub mod presence;
pub mod pushsvc;
pub mod secrets;
pub mod service;
pub mod session;
pub mod store;
pub mod subscription;
pub mod transport;

pub use fanout::{Channel, ClusterEvent, ClusterMessage, Fanout};
pub use ids::{ClientId, IdError, SubscriptionId, Topic};
pub use index::{Caps, Index, Principal};
pub use kind::ServiceKind;
pub use metrics::Metrics;
pub use notification::{Framing, KEY_ROTATION_TOPIC, Notification, PushMessage};
pub use presence::{LocalTopics, NodeStatus, Presence, RemotePage};
pub use service::{Limits, NotifyReport, PURGE_BATCH, PushService, ServiceError, Subscribed, Unheard};
pub use store::{
    MemoryStore, OutboxLease, Page, PendingDelivery, StoreError, StoredSubscription, StoredVapidKey, SubscriptionStore,
    TARGETS_BATCH,
};
pub use subscription::{RemoteTarget, Subscription, Target, TargetData, Triggers};
pub use transport::{Dispatched, TargetError, Transport, Transports};

pub use davpush_proto::unix_now;
