//! The push-service seam: one [`Transport`] per enabled service, found through [`Transports`].

use std::sync::Arc;

use crate::store::PendingDelivery;
use crate::{PushMessage, ServiceKind, Subscription, Target};

/// The client's service parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    /// The offending parameter inside the service object, if one.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl TargetError {
    /// New error about `field`.
    pub fn new(field: Option<&'static str>, message: String) -> Self {
        TargetError { field, message }
    }
}

/// What a transport did with a dispatch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    /// Handed over for delivery.
    pub queued: u64,
    /// Replaced a still-pending message of the same topic for the same recipient.
    pub coalesced: u64,
    /// Could not be handed over (closed or overflowing recipient).
    pub dropped: u64,
    /// Of `queued`, already written to the recipient (a WebSocket written from the fan-out).
    pub sent: u64,
}

/// A push service.
///
/// `dispatch` is called on the notify path and must not block: a transport that talks to the
/// network queues the work in its own bounded delivery engine and reports outcomes later
/// (through [`crate::feedback::Feedback`] for subscriptions that are gone).
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Which service this is.
    fn kind(&self) -> ServiceKind;
    /// Validates the client's `push_services.<name>` object into a target. Also used to restore
    /// stored targets at start, so it must not depend on anything but `params`.
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError>;
    /// [`Transport::parse_target`] for a stored target's JSON text (at start, a million times:
    /// a transport may read its parameters straight from the text).
    fn parse_stored(&self, json: &str) -> Result<Target, TargetError> {
        self.parse_target(&stored_params(json)?)
    }
    /// Checks that need I/O at subscribe time (e.g. where a push endpoint's host resolves to).
    async fn check_target(&self, _target: &Target) -> Result<(), TargetError> {
        Ok(())
    }
    /// Hands `message` over for every recipient (all of this transport's kind).
    fn dispatch(&self, message: &Arc<PushMessage>, recipients: &[Arc<Subscription>]) -> Dispatched;
    /// Whether this transport keeps a membership at the push service (topic mode: a device token
    /// joins a service-side topic). Only then does the core call [`Transport::added`] and
    /// [`Transport::removed`].
    fn tracks_membership(&self) -> bool {
        false
    }
    /// A subscription was created, or its destination changed (called after it is stored and
    /// indexed). Must not wait for the push service: queue the work and return.
    async fn added(&self, _sub: &Arc<Subscription>) {}
    /// A subscription ended (unsubscribe, expiry, gone, or replaced by one with another
    /// destination) and no other subscription of its topic uses the same destination.
    /// Must not wait for the push service: queue the work and return.
    async fn removed(&self, _sub: &Arc<Subscription>) {}
    /// Deliveries waiting for a retry (backing off after a failure), for the admin view.
    fn pending_retries(&self) -> usize {
        0
    }
    /// Takes back deliveries that were pending when the Director last stopped.
    async fn restore(&self, _pending: Vec<(Arc<Subscription>, PendingDelivery)>) {}
    /// Stops accepting work and keeps what is still pending in the store.
    async fn shutdown(&self) {}
}

/// The enabled transports, by kind.
#[derive(Default, Clone)]
pub struct Transports {
    by_kind: [Option<Arc<dyn Transport>>; ServiceKind::ALL.len()],
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.enabled()).finish()
    }
}

impl Transports {
    /// Enables `t` (replacing any transport of the same kind).
    pub fn with(mut self, t: Arc<dyn Transport>) -> Self {
        let k = t.kind().index();
        self.by_kind[k] = Some(t);
        self
    }

    /// The transport of `kind`, if enabled.
    pub fn get(&self, kind: ServiceKind) -> Option<&dyn Transport> {
        self.by_kind[kind.index()].as_deref()
    }

    /// The enabled kinds.
    pub fn enabled(&self) -> impl Iterator<Item = ServiceKind> + '_ {
        ServiceKind::ALL.into_iter().filter(|k| self.by_kind[k.index()].is_some())
    }
}

/// A stored target's JSON text as parameters, for `parse_stored` implementations that read the
/// JSON value rather than the text.
pub fn stored_params(json: &str) -> Result<serde_json::Value, TargetError> {
    serde_json::from_str(json).map_err(|e| TargetError::new(None, format!("not JSON: {e}")))
}
