//! Subscriptions and messages for the adapters, and a clock the tests move.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use davpush_core::{ClientId, Notification, PushMessage, Subscription, SubscriptionId, Target, Topic, Triggers};
use davpush_delivery::Outcome;
use davpush_delivery::auth::Clock;
use tokio::time::Instant;

/// A subscription of `topic` with `target`.
pub(crate) fn sub(topic: &str, target: Target) -> Subscription {
    Subscription {
        id: SubscriptionId::random(),
        client_id: ClientId::parse("client-1", 64).unwrap(),
        topic: Topic::parse(topic, 256).unwrap(),
        target,
        expires: i64::MAX,
        triggers: Triggers::ALL,
    }
}

/// The message of a notification of `topic` with `sync_token`.
pub(crate) fn message(topic: &str, sync_token: Option<&str>) -> PushMessage {
    PushMessage::new(Notification {
        topic: Topic::parse(topic, 256).unwrap(),
        sync_token: sync_token.map(str::to_owned),
        trigger: None,
    })
}

pub(crate) const TTL: Duration = Duration::from_secs(3600);

/// The outcome's class, for tables of expectations.
pub(crate) fn class(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered => "delivered",
        Outcome::Gone(_) => "gone",
        Outcome::Rejected(_) => "rejected",
        Outcome::Retry { .. } => "retry",
    }
}

/// A clock that stands still until the test moves it (real sockets, so not tokio's paused
/// clock: that would also fire the HTTP client's timeouts while a request is on the wire).
#[derive(Clone)]
pub(crate) struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    pub(crate) fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    pub(crate) fn clock(&self) -> Clock {
        let at = self.0.clone();
        Clock::new(move || *at.lock().unwrap())
    }

    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}
