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
//! The outbox is written by one task of the engine's (`OUTBOX_QUEUE` writes waiting at most):
//! it takes every write waiting, keeps the last one of each subscription and writes them with
//! one call of each kind (a save, a delete). The first notify of a big topic fails dozens of
//! deliveries at once where a push service is down; written one transaction each, from the
//! workers, they took the store's connections that the same notify's target reads needed
//! (issue 11).
//!
//! Bounded everywhere: at most `max_pending` slots (beyond, new deliveries are dropped and
//! counted as `overflow`), at most `workers` requests in flight.
//!
//! **Per host** (`hosts`). Slots queue per push-service origin ([`Deliver::origin`]), so a
//! slow or failing host cannot take the shared workers: hosts with ready slots take turns
//! (round-robin), each host has at most `per_host_workers` requests in flight, and the last
//! quarter of the workers only go to hosts with nothing in flight. Each host has a circuit
//! breaker: after `breaker_failures` consecutive transient failures or timeouts its slots wait
//! without using workers; after `breaker_cool_down` one probe goes, and an answer closes the
//! breaker and makes the host's waiting slots ready at once (their own backoff is cut short,
//! never a `Retry-After`). Each host's timeout adapts to its latency (RFC 6298's `SRTT +
//! 4·RTTVAR`, doubled per timeout), between `min_timeout` and the transport's request timeout.
//!
//! **Topic mode.** A push service with topics (FCM, HMS) reaches every device of a topic with
//! one request. Its transport enqueues with [`Engine::enqueue_topic`]: the slot is then keyed by
//! the topic instead of a subscription ([`SlotKey`]), delivered through [`Deliver::deliver_topic`],
//! and coalesces the same way. One of the topic's subscriptions stands for the slot in the
//! outbox (its row survives a restart, and goes when that subscription goes).

mod hosts;

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
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

pub use hosts::HostKey;
use hosts::{Health, Hosts, Transition};

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
    /// The push-service origin `sub`'s deliveries go to: slots of one origin share a queue, a
    /// share of the workers, a circuit breaker and a timeout. Default: one origin for all
    /// (a transport that talks to one service). Topic slots always use the default.
    fn origin(&self, _sub: &Subscription) -> HostKey {
        HostKey::default()
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
    /// Requests in flight per push-service origin at most (capped at `workers`).
    pub per_host_workers: usize,
    /// The transport's request timeout: the ceiling of the adaptive per-host timeout.
    pub request_timeout: Duration,
    /// The floor of the adaptive per-host timeout.
    pub min_timeout: Duration,
    /// Consecutive transient failures or timeouts of one host that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps the host's slots waiting before one probe goes.
    pub breaker_cool_down: Duration,
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
            per_host_workers: 64,
            request_timeout: Duration::from_secs(30),
            min_timeout: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_cool_down: Duration::from_secs(10),
        }
    }
}

impl EngineSettings {
    /// These settings with the transport's request timeout as the adaptive timeout's ceiling.
    pub fn with_request_timeout(&self, timeout: Duration) -> EngineSettings {
        EngineSettings { request_timeout: timeout, ..self.clone() }
    }

    fn host_limits(&self) -> hosts::Limits {
        let workers = self.workers.max(1);
        let per_host = self.per_host_workers.clamp(1, workers);
        hosts::Limits {
            workers,
            per_host,
            // Only worth keeping when one host cannot take every worker anyway.
            reserve: if per_host < workers { workers / 4 } else { 0 },
            failures: self.breaker_failures.max(1),
            cool_down: self.breaker_cool_down,
            min_timeout: self.min_timeout.min(self.request_timeout),
            max_timeout: self.request_timeout,
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
    /// The push-service origin it goes to (fixed when the slot is created).
    host: HostKey,
    /// The last `Retry-After`: a released slot never goes before.
    not_before: Instant,
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

/// The slots and their hosts, under one lock.
struct Table {
    slots: HashMap<SlotKey, Slot>,
    hosts: Hosts,
}

impl Table {
    /// Makes a waiting slot ready now (unless a `Retry-After` still holds it back).
    fn release(&mut self, key: &SlotKey, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(key) else { return false };
        if slot.state != State::Waiting || slot.not_before > now {
            return false;
        }
        slot.state = State::Ready;
        slot.due = now;
        self.hosts.push_ready(&slot.host, key.clone());
        true
    }
}

/// What the timer wakes up for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A slot's retry is due.
    Slot(SlotKey),
    /// A host's breaker cool-down is over.
    Host(HostKey),
}

/// Outbox writes waiting for the engine's outbox task at most (beyond, a finishing worker
/// waits for room).
const OUTBOX_QUEUE: usize = 4_096;

/// A write for the engine's outbox task.
enum OutboxWrite {
    /// Save (or replace) a slot's row.
    Save(PendingDelivery),
    /// Delete a subscription's row.
    Delete(String),
    /// Answer once every write before this one is done.
    Flush(oneshot::Sender<()>),
}

struct Inner {
    kind: ServiceKind,
    deliver: Arc<dyn Deliver>,
    settings: EngineSettings,
    table: Mutex<Table>,
    /// Wakes the dispatcher: a slot got ready or a worker got free.
    wake: Notify,
    timers: Mutex<BinaryHeap<Reverse<(Instant, Timer)>>>,
    timer_wake: Notify,
    feedback: Feedback,
    metrics: Arc<Metrics>,
    store: Arc<dyn SubscriptionStore>,
    /// The outbox task's queue.
    outbox: mpsc::Sender<OutboxWrite>,
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
        let table = Table { slots: HashMap::new(), hosts: Hosts::new(settings.host_limits()) };
        let (outbox, writes) = mpsc::channel(OUTBOX_QUEUE);
        // Ends when the engine is dropped (the last sender with it).
        tokio::spawn(outbox_loop(kind, store.clone(), writes));
        let inner = Arc::new(Inner {
            kind,
            deliver,
            settings,
            table: Mutex::new(table),
            wake: Notify::new(),
            timers: Mutex::default(),
            timer_wake: Notify::new(),
            feedback,
            metrics,
            store,
            outbox,
            closed: AtomicBool::new(false),
        });
        let dispatcher = tokio::spawn(dispatch_loop(inner.clone()));
        let timer = tokio::spawn(timer_loop(inner.clone()));
        Engine { inner, tasks: Arc::new(Mutex::new(vec![dispatcher, timer])) }
    }

    /// Number of subscriptions with a pending delivery.
    pub fn pending(&self) -> usize {
        self.inner.table().slots.len()
    }

    /// Number of deliveries waiting for a retry (after a failure, or a host's open breaker).
    pub fn waiting(&self) -> usize {
        self.inner.table().slots.values().filter(|s| s.state == State::Waiting).count()
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
        let mut displaced = Vec::new();
        let mut table = inner.table();
        let e = enqueue_locked(inner, &mut table, key, sub, message, now, &mut displaced);
        drop(table);
        drop(displaced);
        after_enqueue(inner, e);
        e.outcome()
    }

    /// Queues `message` for each of `subs`, as [`Engine::enqueue`] does for one, under one lock
    /// of the table and with one wake-up of the dispatcher (a notification of a big topic hands
    /// 10,000 at once: one by one, each took the lock and woke the dispatcher, which took it
    /// back in turn; issue 11). Returns how many were queued, coalesced and dropped.
    pub fn enqueue_many(&self, subs: &[Arc<Subscription>], message: &Arc<PushMessage>) -> (u64, u64, u64) {
        let inner = &self.inner;
        let n = subs.len() as u64;
        if inner.closed.load(Ordering::Acquire) {
            return (0, 0, n);
        }
        let now = Instant::now();
        let (mut queued, mut coalesced, mut dropped, mut overflow) = (0, 0, 0, 0);
        let mut displaced = Vec::new();
        let mut table = inner.table();
        for sub in subs {
            match enqueue_locked(inner, &mut table, SlotKey::Sub(sub.id.clone()), sub, message, now, &mut displaced) {
                Locked::Queued => queued += 1,
                Locked::Coalesced => coalesced += 1,
                Locked::Overflow => overflow += 1,
            }
        }
        drop(table);
        // Freed with the table released: a coalesced slot's previous subscription is often
        // its last reference (a target parsed for one notification), and freeing 10,000 of
        // them under the lock held up the dispatcher (issue 11).
        drop(displaced);
        dropped += overflow;
        inner.metrics.delivered(inner.kind, "overflow", overflow);
        if queued > 0 {
            inner.wake.notify_one();
        }
        (queued, coalesced, dropped)
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
        let mut table = self.inner.table();
        let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
        for (sub, p) in pending {
            if table.slots.len() >= self.inner.settings.max_pending {
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
            if let Some(slot) = table.slots.get_mut(&key) {
                // A delivery for it is under way (this node held it, or a newer change came):
                // it settles the row. A key-rotation message is never replaced, and replaces
                // a content update (as in `enqueue_key`).
                slot.persisted = true;
                if notification.is_key_rotation() && !slot.message.notification.is_key_rotation() {
                    slot.message = Arc::new(PushMessage::new(notification));
                    if slot.state == State::InFlight {
                        slot.dirty = true;
                    }
                }
                continue;
            }
            let host = if topics { HostKey::default() } else { self.inner.deliver.origin(&sub) };
            timers.push(Reverse((due, Timer::Slot(key.clone()))));
            table.hosts.push_waiting(&host, key.clone());
            table.slots.insert(
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
                    host,
                    // The stored due time already honours the last Retry-After.
                    not_before: due,
                },
            );
        }
        drop(timers);
        drop(table);
        self.inner.timer_wake.notify_one();
    }

    /// Waits until every outbox write made so far is done.
    pub async fn flush_outbox(&self) {
        let (done, flushed) = oneshot::channel();
        if self.inner.outbox.send(OutboxWrite::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Stops taking work and writes every pending delivery to the outbox.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        // The outbox's earlier writes first: none of them lands after the rows written here.
        self.flush_outbox().await;
        let now = Instant::now();
        let rows: Vec<PendingDelivery> = { inner.table().slots.values().map(|s| pending_row(s, now)).collect() };
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

impl Inner {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_timer(&self, at: Instant, timer: Timer) {
        self.timers.lock().unwrap_or_else(|e| e.into_inner()).push(Reverse((at, timer)));
        self.timer_wake.notify_one();
    }
}

/// What [`enqueue_locked`] did.
/// A slot's subscription and message replaced by a newer notification (see [`enqueue_locked`]).
type Displaced = (Option<Arc<Subscription>>, Arc<PushMessage>);

#[derive(Debug, Clone, Copy)]
enum Locked {
    Queued,
    Coalesced,
    /// The table is full.
    Overflow,
}

impl Locked {
    fn outcome(self) -> Enqueued {
        match self {
            Locked::Queued => Enqueued::Queued,
            Locked::Coalesced => Enqueued::Coalesced,
            Locked::Overflow => Enqueued::Dropped,
        }
    }
}

/// Queues `message` under `key` in `table` (held), or merges it into the slot pending there;
/// what the slot held before goes to `displaced`, for the caller to drop once it has released
/// the table.
fn enqueue_locked(
    inner: &Inner,
    table: &mut Table,
    key: SlotKey,
    sub: &Arc<Subscription>,
    message: &Arc<PushMessage>,
    now: Instant,
    displaced: &mut Vec<Displaced>,
) -> Locked {
    if let Some(slot) = table.slots.get_mut(&key) {
        // A key-rotation message is a property update the client must get (the spec lets
        // content updates be merged, never property updates dropped): it stays.
        if slot.message.notification.is_key_rotation() {
            return Locked::Coalesced;
        }
        let old_message = std::mem::replace(&mut slot.message, message.clone());
        // A topic slot keeps its outbox row's subscription.
        let old_sub = matches!(key, SlotKey::Sub(_)).then(|| std::mem::replace(&mut slot.sub, sub.clone()));
        displaced.push((old_sub, old_message));
        slot.deadline = now + inner.settings.ttl;
        if slot.state == State::InFlight {
            slot.dirty = true;
        }
        return Locked::Coalesced;
    }
    if table.slots.len() >= inner.settings.max_pending {
        return Locked::Overflow;
    }
    // A subscription whose endpoint changes keeps the slot's origin until the slot is done.
    let host = match &key {
        SlotKey::Sub(_) => inner.deliver.origin(sub),
        SlotKey::Topic(_) => HostKey::default(),
    };
    table.hosts.push_ready(&host, key.clone());
    table.slots.insert(
        key,
        Slot {
            sub: sub.clone(),
            message: message.clone(),
            attempt: 0,
            state: State::Ready,
            dirty: false,
            due: now,
            deadline: now + inner.settings.ttl,
            persisted: false,
            host,
            not_before: now,
        },
    );
    Locked::Queued
}

/// After one enqueue, the table released: counts an overflow, wakes the dispatcher for a new
/// slot.
fn after_enqueue(inner: &Inner, e: Locked) {
    match e {
        Locked::Overflow => inner.metrics.delivered(inner.kind, "overflow", 1),
        Locked::Queued => inner.wake.notify_one(),
        Locked::Coalesced => {}
    }
}

/// A slot on its way: what one worker delivers.
struct Job {
    pick: hosts::Pick,
    sub: Arc<Subscription>,
    message: Arc<PushMessage>,
    deadline: Instant,
}

/// Starts whatever the hosts' turns and limits allow, then waits for a change.
async fn dispatch_loop(inner: Arc<Inner>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut table = inner.table();
            while let Some(pick) = table.hosts.pick() {
                let Table { slots, hosts } = &mut *table;
                match slots.get_mut(&pick.key).filter(|s| s.state == State::Ready) {
                    Some(s) => {
                        s.state = State::InFlight;
                        s.dirty = false;
                        let (sub, message, deadline) = (s.sub.clone(), s.message.clone(), s.deadline);
                        jobs.push(Job { pick, sub, message, deadline });
                    }
                    // Not expected (a ready queue holds ready slots only); give the worker back.
                    None => {
                        hosts.finish(&pick.host, pick.probe, Health::Skipped, Instant::now());
                    }
                }
            }
        }
        if jobs.is_empty() {
            inner.wake.notified().await;
            continue;
        }
        for job in jobs {
            tokio::spawn(run(inner.clone(), job));
        }
    }
}

/// One request, under the host's timeout.
async fn run(inner: Arc<Inner>, job: Job) {
    let Job { pick, sub, message, deadline } = job;
    let started = Instant::now();
    let ttl = deadline.saturating_duration_since(started);
    let request = async {
        match &pick.key {
            SlotKey::Sub(_) => inner.deliver.deliver(&sub, &message, ttl).await,
            SlotKey::Topic(_) => match inner.deliver.deliver_topic(&message, ttl).await {
                Outcome::Gone(reason) => Outcome::Rejected(reason),
                o => o,
            },
        }
    };
    let expired =
        ttl < Duration::from_secs(1) || matches!(pick.key, SlotKey::Sub(_)) && sub.expires <= davpush_core::unix_now();
    let (outcome, health) = if expired {
        (Outcome::Rejected("expired before it could be delivered".into()), Health::Skipped)
    } else {
        let answer = match pick.timeout {
            Some(limit) => tokio::time::timeout(limit, request).await.ok(),
            None => Some(request.await),
        };
        let took = started.elapsed();
        match answer {
            Some(o @ Outcome::Retry { .. }) => (o, Health::Failed(took)),
            Some(o) => (o, Health::Answered(took)),
            None => {
                let limit = pick.timeout.unwrap_or_default();
                (Outcome::Retry { after: None, reason: format!("no answer within {limit:?}") }, Health::TimedOut)
            }
        }
    };
    complete(&inner, &pick, outcome, health).await;
}

async fn complete(inner: &Arc<Inner>, pick: &hosts::Pick, outcome: Outcome, health: Health) {
    let kind = inner.kind;
    let id = &pick.key;
    let now = Instant::now();
    let mut save = None;
    let mut forget = None;
    {
        let mut table = inner.table();
        let transition = table.hosts.finish(&pick.host, pick.probe, health, now);
        match &transition {
            Transition::None => {}
            Transition::Opened(until) => {
                tracing::warn!(service = %kind, host = %pick.host, probe = pick.probe, cool_down = ?inner.settings.breaker_cool_down,
                    "push service host keeps failing: its deliveries wait");
                inner.metrics.delivered(kind, "host_open", 1);
                inner.add_timer(*until, Timer::Host(pick.host.clone()));
            }
            Transition::Closed => {
                let waiting = table.hosts.take_waiting(&pick.host);
                let mut released = 0usize;
                for key in waiting {
                    if table.release(&key, now) {
                        released += 1;
                    } else if table.slots.get(&key).is_some_and(|s| s.state == State::Waiting) {
                        table.hosts.push_waiting(&pick.host, key);
                    }
                }
                tracing::info!(service = %kind, host = %pick.host, released, "push service host answers again");
                inner.metrics.delivered(kind, "host_closed", 1);
            }
        }
        let Table { slots, hosts } = &mut *table;
        let Some(slot) = slots.get_mut(id) else {
            hosts.forget(&pick.host, id);
            drop(table);
            inner.wake.notify_one();
            return;
        };
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
                    slot.not_before = after.and_then(|a| now.checked_add(a)).unwrap_or(now);
                    slot.persisted = true;
                    save = Some(pending_row(slot, now));
                    hosts.push_waiting(&pick.host, id.clone());
                    inner.add_timer(due, Timer::Slot(id.clone()));
                    ("retry", false)
                } else {
                    tracing::warn!(service = %kind, slot = %id, reason, attempts = slot.attempt, "giving up on a delivery");
                    slot.dirty = false;
                    ("failed", true)
                }
            }
        };
        inner.metrics.delivered(kind, outcome_label, 1);
        match &outcome {
            Outcome::Delivered => {}
            Outcome::Gone(reason) | Outcome::Rejected(reason) | Outcome::Retry { reason, .. } => {
                let host = if pick.host.as_str().is_empty() { kind.as_str() } else { pick.host.as_str() };
                inner.metrics.recent.error(kind, outcome_label, host, reason);
            }
        }
        if finished {
            if slot.dirty {
                // A newer message arrived while this one was in flight: deliver it now.
                slot.dirty = false;
                slot.attempt = 0;
                slot.state = State::Ready;
                hosts.push_ready(&pick.host, id.clone());
            } else {
                forget = slot.persisted.then(|| slot.sub.id.to_string());
                slots.remove(id);
                hosts.forget(&pick.host, id);
            }
        }
    }
    // A worker is free (and slots may have been released).
    inner.wake.notify_one();
    if inner.closed.load(Ordering::Acquire) {
        return; // shutdown already wrote the outbox
    }
    for write in [save.map(OutboxWrite::Save), forget.map(OutboxWrite::Delete)].into_iter().flatten() {
        // Fails only when the engine is gone.
        let _ = inner.outbox.send(write).await;
    }
}

/// Outbox writes taken at once by [`outbox_loop`] at most.
const OUTBOX_BATCH: usize = 1_024;

/// The engine's outbox task (see the module documentation): takes the writes waiting, keeps the
/// last of each subscription (a save replaces the row, a delete removes it: the last one is
/// what all of them in order leave) and writes the saves and the deletes with a call each.
async fn outbox_loop(kind: ServiceKind, store: Arc<dyn SubscriptionStore>, mut writes: mpsc::Receiver<OutboxWrite>) {
    let mut batch = Vec::with_capacity(OUTBOX_BATCH);
    while writes.recv_many(&mut batch, OUTBOX_BATCH).await > 0 {
        let mut last: HashMap<String, Option<PendingDelivery>> = HashMap::with_capacity(batch.len());
        let mut flushed = Vec::new();
        for write in batch.drain(..) {
            match write {
                OutboxWrite::Save(row) => {
                    last.insert(row.subscription_id.clone(), Some(row));
                }
                OutboxWrite::Delete(id) => {
                    last.insert(id, None);
                }
                OutboxWrite::Flush(done) => flushed.push(done),
            }
        }
        let (mut saves, mut deletes) = (Vec::new(), Vec::new());
        for (id, row) in last {
            match row {
                Some(row) => saves.push(row),
                None => deletes.push(id),
            }
        }
        if !saves.is_empty()
            && let Err(e) = store.save_pending(&saves).await
        {
            tracing::error!(service = %kind, deliveries = saves.len(), error = %e, "could not write pending deliveries to the outbox");
        }
        if !deletes.is_empty()
            && let Err(e) = store.delete_pending(&deletes).await
        {
            tracing::error!(service = %kind, deliveries = deletes.len(), error = %e, "could not remove deliveries from the outbox");
        }
        for done in flushed {
            let _ = done.send(());
        }
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
        let mut woke = false;
        loop {
            let due = {
                let mut timers = inner.timers.lock().unwrap_or_else(|e| e.into_inner());
                match timers.peek() {
                    Some(Reverse((t, _))) if *t <= now => timers.pop().map(|Reverse((_, timer))| timer),
                    _ => None,
                }
            };
            let Some(timer) = due else { break };
            let mut table = inner.table();
            match timer {
                Timer::Slot(id) => {
                    if let Some(slot) = table.slots.get_mut(&id)
                        && slot.state == State::Waiting
                        && slot.due <= now
                    {
                        slot.state = State::Ready;
                        let host = slot.host.clone();
                        table.hosts.push_ready(&host, id);
                        woke = true;
                    }
                }
                Timer::Host(host) => {
                    if table.hosts.cool_down_over(&host, now) && !table.hosts.has_ready(&host) {
                        // Nothing ready to probe with: the first waiting slot that may go now.
                        let candidate = table
                            .hosts
                            .waiting(&host)
                            .find(|k| {
                                table.slots.get(*k).is_some_and(|s| s.state == State::Waiting && s.not_before <= now)
                            })
                            .cloned();
                        if let Some(key) = candidate {
                            table.release(&key, now);
                        }
                    }
                    woke = true;
                }
            }
        }
        if woke {
            inner.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
