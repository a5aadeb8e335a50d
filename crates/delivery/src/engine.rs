//! The delivery engine shared by all network transports.
//!
//! Each subscription has at most one *slot*: the newest message waiting for it. A notification
//! for a subscription whose slot still waits (queued, or backing off after a failure) replaces
//! the slot's message instead of queuing another (the spec's "merge content updates"), so a
//! burst of changes becomes one push. A slot is delivered by one of `workers` concurrent tasks;
//! the transport classifies the answer as an [`Outcome`]:
//!
//! - `Delivered`: done (or, if a newer message arrived meanwhile, deliver that one next).
//! - `Gone`: the push service no longer knows the subscription: it is removed (via feedback).
//! - `Rejected`: the push service refused this message; logged and counted, not retried.
//! - `Retry`: backoff (exponential, with jitter, at least `Retry-After`) until the message's
//!   TTL or the attempt limit runs out. A slot waiting for a retry is written to the store's
//!   outbox, so it survives a restart; so is every slot still pending at shutdown.
//!
//! Bounded everywhere: at most `max_pending` slots (beyond, new deliveries are dropped and
//! counted as `overflow`), at most `workers` requests in flight.
//!
//! **Topic mode.** A push service with topics (FCM, HMS) reaches every device of a topic with
//! one request. Its transport enqueues with [`Engine::enqueue_topic`]: the slot is then keyed by
//! the topic instead of a subscription ([`SlotKey`]), delivered through [`Deliver::deliver_topic`],
//! and coalesces the same way. One of the topic's subscriptions stands for the slot in the
//! outbox (its row survives a restart, and goes when that subscription goes).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::feedback::Feedback;
use davpush_core::{
    Metrics, Notification, PendingDelivery, PushMessage, ServiceKind, Subscription, SubscriptionId, SubscriptionStore,
    Topic,
};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

/// How a push service answered one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the push service.
    Delivered,
    /// The subscription is gone (404/410, unregistered token): remove it.
    Gone(String),
    /// This message was refused (400/403/413…): do not retry it.
    Rejected(String),
    /// Temporary failure (429, 5xx, network): try again, not before `after` if given.
    Retry {
        /// The push service's `Retry-After`.
        after: Option<Duration>,
        /// What happened.
        reason: String,
    },
}

/// One transport's way of delivering one message to one subscription (or to one topic).
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `message` to `sub`; `ttl` is how long the push service may keep it.
    async fn deliver(&self, sub: &Subscription, message: &PushMessage, ttl: Duration) -> Outcome;
    /// Delivers `message` to every device that joined its topic at the push service (topic
    /// mode). `Gone` makes no sense for a topic and is counted as `Rejected`.
    async fn deliver_topic(&self, _message: &PushMessage, _ttl: Duration) -> Outcome {
        Outcome::Rejected("this push service has no topic mode".into())
    }
}

/// What a slot is for: one subscription, or (topic mode) one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKey {
    /// One subscription.
    Sub(SubscriptionId),
    /// Every device that joined the topic at the push service.
    Topic(Topic),
}

impl std::fmt::Display for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotKey::Sub(id) => write!(f, "subscription {id}"),
            SlotKey::Topic(t) => write!(f, "topic {t}"),
        }
    }
}

/// Engine limits.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Deliveries in flight at once.
    pub workers: usize,
    /// Subscriptions with a pending delivery at most.
    pub max_pending: usize,
    /// Attempts per message before giving up.
    pub max_attempts: u32,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How long a message stays worth delivering (also the `TTL` header).
    pub ttl: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            workers: 64,
            max_pending: 100_000,
            max_attempts: 8,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            ttl: Duration::from_secs(86_400),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    InFlight,
    Waiting,
}

struct Slot {
    /// The subscription; for a topic slot the one that stands for it in the outbox.
    sub: Arc<Subscription>,
    message: Arc<PushMessage>,
    attempt: u32,
    state: State,
    /// A newer message replaced `message` while it was in flight.
    dirty: bool,
    due: Instant,
    deadline: Instant,
    /// A row for this slot may exist in the outbox.
    persisted: bool,
}

/// What happened to an enqueued delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new pending delivery.
    Queued,
    /// Replaced the subscription's pending message.
    Coalesced,
    /// Dropped: the engine is full or shut down.
    Dropped,
}

struct Inner {
    kind: ServiceKind,
    deliver: Arc<dyn Deliver>,
    settings: EngineSettings,
    slots: Mutex<HashMap<SlotKey, Slot>>,
    ready: mpsc::Sender<SlotKey>,
    timers: Mutex<BinaryHeap<Reverse<(Instant, SlotKey)>>>,
    timer_wake: Notify,
    feedback: Feedback,
    metrics: Arc<Metrics>,
    store: Arc<dyn SubscriptionStore>,
    closed: AtomicBool,
}

/// See the module documentation. Cloning shares the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("kind", &self.inner.kind).field("pending", &self.pending()).finish()
    }
}

fn real_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A stored unix time back to an instant (never earlier than stored: the store keeps whole
/// seconds, rounded up).
fn unix_to_instant(unix: i64, now: Instant) -> Instant {
    now + Duration::from_secs_f64((unix as f64 - real_now()).max(0.0))
}

/// An instant as unix seconds, rounded up so that a `Retry-After` is never shortened.
fn instant_to_unix(t: Instant, now: Instant) -> i64 {
    (real_now() + t.saturating_duration_since(now).as_secs_f64()).ceil() as i64
}

impl Engine {
    /// Starts the engine's tasks (needs a Tokio runtime).
    pub fn start(
        kind: ServiceKind,
        deliver: Arc<dyn Deliver>,
        settings: EngineSettings,
        feedback: Feedback,
        metrics: Arc<Metrics>,
        store: Arc<dyn SubscriptionStore>,
    ) -> Engine {
        let (tx, rx) = mpsc::channel(settings.max_pending.max(1));
        let inner = Arc::new(Inner {
            kind,
            deliver,
            settings,
            slots: Mutex::default(),
            ready: tx,
            timers: Mutex::default(),
            timer_wake: Notify::new(),
            feedback,
            metrics,
            store,
            closed: AtomicBool::new(false),
        });
        let dispatcher = tokio::spawn(dispatch_loop(inner.clone(), rx));
        let timer = tokio::spawn(timer_loop(inner.clone()));
        Engine { inner, tasks: Arc::new(Mutex::new(vec![dispatcher, timer])) }
    }

    /// Number of subscriptions with a pending delivery.
    pub fn pending(&self) -> usize {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queues `message` for `sub`, replacing a message still pending for it. Never blocks.
    pub fn enqueue(&self, sub: &Arc<Subscription>, message: &Arc<PushMessage>) -> Enqueued {
        self.enqueue_key(SlotKey::Sub(sub.id.clone()), sub, message)
    }

    /// Topic mode: queues `message` once for its topic, replacing a message still pending for
    /// the topic. `representative` is one of the topic's subscriptions (for the outbox).
    pub fn enqueue_topic(&self, representative: &Arc<Subscription>, message: &Arc<PushMessage>) -> Enqueued {
        self.enqueue_key(SlotKey::Topic(message.notification.topic.clone()), representative, message)
    }

    fn enqueue_key(&self, key: SlotKey, sub: &Arc<Subscription>, message: &Arc<PushMessage>) -> Enqueued {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Enqueued::Dropped;
        }
        let now = Instant::now();
        let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&key) {
            slot.message = message.clone();
            if matches!(key, SlotKey::Sub(_)) {
                // A topic slot keeps its outbox row's subscription.
                slot.sub = sub.clone();
            }
            slot.deadline = now + inner.settings.ttl;
            if slot.state == State::InFlight {
                slot.dirty = true;
            }
            return Enqueued::Coalesced;
        }
        if slots.len() >= inner.settings.max_pending {
            drop(slots);
            inner.metrics.delivered(inner.kind, "overflow", 1);
            return Enqueued::Dropped;
        }
        slots.insert(
            key.clone(),
            Slot {
                sub: sub.clone(),
                message: message.clone(),
                attempt: 0,
                state: State::Ready,
                dirty: false,
                due: now,
                deadline: now + inner.settings.ttl,
                persisted: false,
            },
        );
        // Capacity equals max_pending and a slot is in the channel at most once: never full.
        if inner.ready.try_send(key.clone()).is_err() {
            slots.remove(&key);
            return Enqueued::Dropped;
        }
        Enqueued::Queued
    }

    /// Takes back deliveries that were pending at the last stop.
    pub fn restore(&self, pending: Vec<(Arc<Subscription>, PendingDelivery)>) {
        self.restore_keyed(pending, false);
    }

    /// Topic mode: takes back pending deliveries as topic slots (one per topic).
    pub fn restore_topics(&self, pending: Vec<(Arc<Subscription>, PendingDelivery)>) {
        self.restore_keyed(pending, true);
    }

    fn restore_keyed(&self, pending: Vec<(Arc<Subscription>, PendingDelivery)>, topics: bool) {
        let now = Instant::now();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
        for (sub, p) in pending {
            if slots.len() >= self.inner.settings.max_pending {
                break;
            }
            let Ok(topic) = davpush_core::Topic::parse(&p.topic, usize::MAX) else { continue };
            let notification = Notification {
                topic,
                sync_token: p.sync_token,
                trigger: p.trigger.as_deref().and_then(|t| serde_json::from_value(serde_json::json!(t)).ok()),
            };
            let due = unix_to_instant(p.due, now);
            let key = if topics { SlotKey::Topic(notification.topic.clone()) } else { SlotKey::Sub(sub.id.clone()) };
            if slots.contains_key(&key) {
                continue;
            }
            timers.push(Reverse((due, key.clone())));
            slots.insert(
                key,
                Slot {
                    sub: sub.clone(),
                    message: Arc::new(PushMessage::new(notification)),
                    attempt: p.attempt,
                    state: State::Waiting,
                    dirty: false,
                    due,
                    deadline: unix_to_instant(p.deadline, now),
                    persisted: true,
                },
            );
        }
        drop(timers);
        drop(slots);
        self.inner.timer_wake.notify_one();
    }

    /// Stops taking work and writes every pending delivery to the outbox.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        let now = Instant::now();
        let rows: Vec<PendingDelivery> = {
            let slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.values().map(|s| pending_row(s, now)).collect()
        };
        if rows.is_empty() {
            return;
        }
        match inner.store.save_pending(&rows).await {
            Ok(()) => {
                tracing::info!(service = %inner.kind, deliveries = rows.len(), "pending deliveries kept for the next start")
            }
            Err(e) => tracing::error!(service = %inner.kind, error = %e, "pending deliveries could not be saved"),
        }
    }
}

fn pending_row(s: &Slot, now: Instant) -> PendingDelivery {
    let n = &s.message.notification;
    PendingDelivery {
        subscription_id: s.sub.id.to_string(),
        topic: n.topic.to_string(),
        sync_token: n.sync_token.clone(),
        trigger: n.trigger.map(|t| t.as_str().to_owned()),
        attempt: s.attempt,
        due: instant_to_unix(s.due, now),
        deadline: instant_to_unix(s.deadline, now),
    }
}

/// Exponential backoff with jitter: a random delay in [d/2, d] with d = min·2^(attempt-1),
/// capped, and never shorter than the push service's `Retry-After`.
fn backoff(settings: &EngineSettings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = settings.min_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(settings.max_backoff);
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    let frac = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
    let jittered = d.mul_f64(0.5 + 0.5 * frac);
    retry_after.map_or(jittered, |ra| jittered.max(ra))
}

async fn dispatch_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<SlotKey>) {
    let permits = Arc::new(Semaphore::new(inner.settings.workers.max(1)));
    while let Some(id) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let taken = {
            let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get_mut(&id).filter(|s| s.state == State::Ready).map(|s| {
                s.state = State::InFlight;
                s.dirty = false;
                (s.sub.clone(), s.message.clone(), s.deadline)
            })
        };
        let Some((sub, message, deadline)) = taken else { continue };
        let inner = inner.clone();
        tokio::spawn(async move {
            let ttl = deadline.saturating_duration_since(Instant::now());
            let outcome = match &id {
                _ if ttl < Duration::from_secs(1) => Outcome::Rejected("expired before it could be delivered".into()),
                SlotKey::Sub(_) if sub.expires <= davpush_core::unix_now() => {
                    Outcome::Rejected("expired before it could be delivered".into())
                }
                SlotKey::Sub(_) => inner.deliver.deliver(&sub, &message, ttl).await,
                SlotKey::Topic(_) => match inner.deliver.deliver_topic(&message, ttl).await {
                    Outcome::Gone(reason) => Outcome::Rejected(reason),
                    o => o,
                },
            };
            complete(&inner, &id, outcome).await;
            drop(permit);
        });
    }
}

async fn complete(inner: &Arc<Inner>, id: &SlotKey, outcome: Outcome) {
    let kind = inner.kind;
    let now = Instant::now();
    let mut save = None;
    let mut forget = None;
    {
        let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get_mut(id) else { return };
        let (outcome_label, finished) = match &outcome {
            Outcome::Delivered => ("sent", true),
            Outcome::Gone(reason) => {
                tracing::info!(service = %kind, slot = %id, reason, "push service says the subscription is gone");
                inner.feedback.gone(slot.sub.id.clone());
                slot.dirty = false;
                ("gone", true)
            }
            Outcome::Rejected(reason) => {
                tracing::warn!(service = %kind, slot = %id, reason, "push service rejected a message");
                ("rejected", true)
            }
            Outcome::Retry { after, reason } => {
                slot.attempt += 1;
                let delay = backoff(&inner.settings, slot.attempt, *after);
                let due = now
                    .checked_add(delay)
                    .filter(|due| *due <= slot.deadline && slot.attempt < inner.settings.max_attempts);
                if let Some(due) = due {
                    tracing::debug!(service = %kind, slot = %id, reason, ?delay, "delivery will be retried");
                    slot.state = State::Waiting;
                    slot.due = due;
                    slot.persisted = true;
                    save = Some(pending_row(slot, now));
                    inner.timers.lock().unwrap_or_else(|e| e.into_inner()).push(Reverse((slot.due, id.clone())));
                    inner.timer_wake.notify_one();
                    ("retry", false)
                } else {
                    tracing::warn!(service = %kind, slot = %id, reason, attempts = slot.attempt, "giving up on a delivery");
                    slot.dirty = false;
                    ("failed", true)
                }
            }
        };
        inner.metrics.delivered(kind, outcome_label, 1);
        if finished {
            if slot.dirty {
                // A newer message arrived while this one was in flight: deliver it now.
                slot.dirty = false;
                slot.attempt = 0;
                slot.state = State::Ready;
                let _ = inner.ready.try_send(id.clone());
            } else {
                forget = slot.persisted.then(|| slot.sub.id.to_string());
                slots.remove(id);
            }
        }
    }
    if inner.closed.load(Ordering::Acquire) {
        return; // shutdown already wrote the outbox
    }
    if let Some(row) = save
        && let Err(e) = inner.store.save_pending(&[row]).await
    {
        tracing::error!(error = %e, "could not write a pending delivery to the outbox");
    }
    if let Some(row) = forget
        && let Err(e) = inner.store.delete_pending(&[row]).await
    {
        tracing::error!(error = %e, "could not remove a delivery from the outbox");
    }
}

async fn timer_loop(inner: Arc<Inner>) {
    loop {
        let next = inner.timers.lock().unwrap_or_else(|e| e.into_inner()).peek().map(|Reverse((t, _))| *t);
        match next {
            None => inner.timer_wake.notified().await,
            Some(t) if t > Instant::now() => {
                tokio::select! {
                    () = tokio::time::sleep_until(t) => {}
                    () = inner.timer_wake.notified() => {}
                }
            }
            Some(_) => {}
        }
        let now = Instant::now();
        loop {
            let due = {
                let mut timers = inner.timers.lock().unwrap_or_else(|e| e.into_inner());
                match timers.peek() {
                    Some(Reverse((t, _))) if *t <= now => timers.pop().map(|Reverse((_, id))| id),
                    _ => None,
                }
            };
            let Some(id) = due else { break };
            let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get_mut(&id)
                && slot.state == State::Waiting
                && slot.due <= now
            {
                slot.state = State::Ready;
                let _ = inner.ready.try_send(id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
