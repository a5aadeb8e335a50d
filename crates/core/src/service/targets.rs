//! Durable targets read from the store when they are needed (issue 11: only the routing of a
//! durable subscription is held in memory). The index holds a durable subscription with a
//! [`Target::Stored`] (its id, client, topic, expiry, triggers and push service); when a
//! notification reaches such subscribers, [`PushService::deliver`] hands them to the fetcher:
//! a task of its own that reads the targets of the notification's topic and service from the
//! store (a range of the store's index on topic, service and id, cut into chunks of
//! [`TARGETS_BATCH`] at routed ids and read side by side, at most [`READERS`] at once), matches
//! them by id to the routed subscribers, parses them with their transport and hands them to
//! the delivery engine. The notify path neither waits for the store nor parses anything, so a
//! big durable topic never delays the WebSocket fan-out of the same or another notify.
//!
//! A notification to a small topic (fewer than [`BY_TOPIC_MIN`] durable subscribers of one
//! service) is not read alone: the notifications waiting at that moment are taken together,
//! in the order they were routed, and the targets of all their small topics' subscribers are
//! read by id in statements of up to [`TARGETS_BATCH`] ids, each target parsed once however
//! many of them name its subscriber. A notify of 1,000 topics thus costs a few statements, not
//! 3,000 (one per topic and service).
//!
//! Bounds: at most [`QUEUE`] notifications (per topic and service) wait for the fetcher
//! (beyond, their durable deliveries are counted `dropped`, as an overflowing delivery engine
//! does); notifications reach the delivery engine in the order they were routed. A subscriber
//! removed or expired between routing and fetch is not delivered (the store no longer has it,
//! or the index no longer does). Transports that keep a membership at the push service (topic
//! mode) need their targets for joining and leaving, so their subscriptions keep their targets
//! in memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc};

use crate::store::{StoreError, SubscriptionStore, TARGETS_BATCH};
use crate::transport::Transports;
use crate::{Index, Metrics, PushMessage, PushService, ServiceKind, Subscription, SubscriptionId, Target};

/// Notifications (each of one topic and push service) waiting for the fetcher at most: eight
/// notify requests of 1,000 topics with subscribers of every durable service.
pub(super) const QUEUE: usize = 24_576;
/// Durable subscribers of one service from which a notification's targets are read as a range
/// of its topic (below, by id together with other notifications').
pub(super) const BY_TOPIC_MIN: usize = 256;
/// Notifications taken from the queue in one round at most.
const ROUND: usize = 4_096;
/// Chunks of big topics' targets read (and parsed) at once: store connections the fetcher
/// takes at most (SQLite's pool has four, one left for the group-commit writer), and work for
/// both cores of a small machine.
const READERS: usize = 3;

/// One notification's durable subscribers of one service, waiting for their targets.
struct Job {
    message: Arc<PushMessage>,
    kind: ServiceKind,
    subs: Vec<Arc<Subscription>>,
    /// The notify's time (unix seconds): subscribers unexpired then are delivered.
    now: i64,
    routed: Instant,
}

/// What the fetcher's task works with (no reference to the service itself: the task ends when
/// the service, holding the sending half, is dropped).
#[derive(Clone)]
struct Ctx {
    store: Arc<dyn SubscriptionStore>,
    transports: Transports,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    busy: Arc<Busy>,
    /// Chunks of big topics read at once ([`READERS`]).
    readers: Arc<Semaphore>,
}

/// Notifications accepted by the fetcher and not yet handed to the engine.
#[derive(Default)]
struct Busy {
    n: AtomicUsize,
    idle: Notify,
}

impl Busy {
    fn done(&self) {
        if self.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The fetcher of a [`PushService`]: started on first use, on the runtime of the notify.
#[derive(Default)]
pub(super) struct Fetcher {
    tx: OnceLock<mpsc::Sender<Job>>,
    busy: Arc<Busy>,
}

impl PushService {
    /// Queues the delivery of `message` to `subs` (of `kind`, all [`Target::Stored`]) once their
    /// targets are read; never waits (a full queue counts them `dropped`).
    pub(super) fn fetch_and_dispatch(
        &self,
        message: &Arc<PushMessage>,
        kind: ServiceKind,
        subs: Vec<Arc<Subscription>>,
        now: i64,
    ) {
        let n = subs.len() as u64;
        let job = Job { message: message.clone(), kind, subs, now, routed: Instant::now() };
        let tx = match self.fetcher.tx.get() {
            Some(tx) => Some(tx),
            None => tokio::runtime::Handle::try_current().ok().map(|rt| {
                self.fetcher.tx.get_or_init(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    let ctx = Ctx {
                        store: self.store.clone(),
                        transports: self.transports.clone(),
                        index: self.index.clone(),
                        metrics: self.metrics.clone(),
                        busy: self.fetcher.busy.clone(),
                        readers: Arc::new(Semaphore::new(READERS)),
                    };
                    rt.spawn(run(ctx, rx));
                    tx
                })
            }),
        };
        self.fetcher.busy.n.fetch_add(1, Ordering::AcqRel);
        if tx.is_none_or(|tx| tx.try_send(job).is_err()) {
            self.fetcher.busy.done();
            tracing::warn!(service = %kind, subscriptions = n, "target fetch queue full (or stopped): durable deliveries dropped");
            self.metrics.delivered(kind, "dropped", n);
        }
    }

    /// Waits (at most `bound`) until every notification the fetcher accepted is handed to the
    /// delivery engine: at a graceful stop, before the transports keep what is pending.
    pub(super) async fn fetches_done(&self, bound: Duration) {
        let busy = &self.fetcher.busy;
        let _ = tokio::time::timeout(bound, async {
            loop {
                let idle = busy.idle.notified();
                if busy.n.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }

    /// `subs` with the targets of those held as [`Target::Stored`] read from the store (the
    /// index keeps them as they are); those the store or the index no longer has at `now` are
    /// left out.
    pub(super) async fn with_targets(
        &self,
        subs: Vec<Arc<Subscription>>,
        now: i64,
    ) -> Result<Vec<Arc<Subscription>>, StoreError> {
        let (stored, mut out): (Vec<_>, Vec<_>) = subs.into_iter().partition(|s| s.target.is_stored_only());
        for batch in stored.chunks(TARGETS_BATCH) {
            out.extend(fetch(&*self.store, &self.transports, &self.index, batch, now).await?);
        }
        Ok(out)
    }
}

/// Reads the targets of `batch` (at most [`TARGETS_BATCH`]) and returns the subscriptions with
/// them, as the index holds them now: those removed, expired or of a disabled service are left
/// out.
async fn fetch(
    store: &dyn SubscriptionStore,
    transports: &Transports,
    index: &Index,
    batch: &[Arc<Subscription>],
    now: i64,
) -> Result<Vec<Arc<Subscription>>, StoreError> {
    let ids: Vec<String> = batch.iter().map(|s| s.id.to_string()).collect();
    let rows = store.load_targets(&ids, now).await?;
    Ok(assemble(transports, index, batch.iter(), rows.into_iter().collect(), now))
}

/// The subscriptions `subs` with their targets from `targets` (by id), as the index holds
/// them now: those without a target there, removed, expired or of a disabled service are left
/// out. A target is only ever taken for the subscription whose id it was read with.
fn assemble<'a>(
    transports: &Transports,
    index: &Index,
    subs: impl Iterator<Item = &'a Arc<Subscription>>,
    mut targets: HashMap<String, String>,
    now: i64,
) -> Vec<Arc<Subscription>> {
    let current = index.get_all(subs.map(|s| &s.id));
    let mut out = Vec::with_capacity(current.len());
    for cur in current.into_iter().flatten() {
        let Some(json) = targets.remove(cur.id.as_str()) else { continue };
        if cur.expires <= now {
            continue;
        }
        let Some(t) = transports.get(cur.kind()) else { continue };
        let target = match &cur.target {
            Target::Stored(_) => match t.parse_stored(&json) {
                Ok(target) => target,
                Err(e) => {
                    tracing::warn!(subscription = %cur.id, service = %cur.kind(), error = %e, "stored target invalid: not delivered");
                    continue;
                }
            },
            // Replaced meanwhile by a subscription that holds its target.
            _ => {
                out.push(cur);
                continue;
            }
        };
        out.push(Arc::new(Subscription {
            id: cur.id.clone(),
            client_id: cur.client_id.clone(),
            topic: cur.topic.clone(),
            target,
            expires: cur.expires,
            triggers: cur.triggers,
        }));
    }
    out
}

/// The fetcher's task: takes the waiting notifications in the order they were routed and
/// hands each to the delivery engine before the next (the engine keeps a subscriber's newest
/// change: two handed over out of order could lose a burst's last sync-token,
/// `webpush::the_newest_change_is_what_arrives_after_a_burst`); only the parts of one
/// notification for different push services, which reach different subscribers, are read side
/// by side.
/// `sub` (routed, held as [`Target::Stored`]) with its target parsed from `json`, the row read
/// for it; `None` if expired at `now` or the row is invalid. The row is what the store holds
/// now (a subscription removed meanwhile has none, one updated meanwhile its new target), so
/// the index is not asked again: a big topic's 10,000 subscribers are not looked up twice.
fn with_target(
    t: &dyn crate::transport::Transport,
    sub: &Arc<Subscription>,
    json: &str,
    now: i64,
) -> Option<Arc<Subscription>> {
    if sub.expires <= now {
        return None;
    }
    let target = match &sub.target {
        Target::Stored(_) => match t.parse_stored(json) {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(subscription = %sub.id, service = %sub.kind(), error = %e, "stored target invalid: not delivered");
                return None;
            }
        },
        _ => return Some(sub.clone()),
    };
    Some(Arc::new(Subscription {
        id: sub.id.clone(),
        client_id: sub.client_id.clone(),
        topic: sub.topic.clone(),
        target,
        expires: sub.expires,
        triggers: sub.triggers,
    }))
}

async fn run(ctx: Ctx, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(ROUND);
    while rx.recv_many(&mut jobs, ROUND).await > 0 {
        let mut rest = &jobs[..];
        while !rest.is_empty() {
            // A run of small ones is read together by id; big ones by topic, those of one
            // notification (one per push service: other subscribers) side by side.
            let small = rest.iter().take_while(|j| j.subs.len() < BY_TOPIC_MIN).count();
            let big = if small > 0 {
                0
            } else {
                rest.iter()
                    .take_while(|j| j.subs.len() >= BY_TOPIC_MIN && Arc::ptr_eq(&j.message, &rest[0].message))
                    .count()
            };
            let (now, next) = rest.split_at(small.max(big));
            if small > 0 {
                deliver_by_id(&ctx, now).await;
            } else {
                futures_util::future::join_all(now.iter().map(|job| deliver(&ctx, job))).await;
            }
            for _ in now {
                ctx.busy.done();
            }
            rest = next;
        }
        jobs.clear();
    }
}

/// Fetches a job's targets and hands them to the engine batch by batch, as they come; records
/// how long it took.
async fn deliver(ctx: &Ctx, job: &Job) {
    deliver_by_topic(ctx, job).await;
    ctx.metrics.target_fetch_last_us.set(i64::try_from(job.routed.elapsed().as_micros()).unwrap_or(i64::MAX));
}

/// Reads the targets of every subscriber of `jobs` by id (each once, in statements of up to
/// [`TARGETS_BATCH`] ids) and hands each job's to the engine, in the jobs' order.
async fn deliver_by_id(ctx: &Ctx, jobs: &[Job]) {
    let mut seen = HashSet::new();
    let unique: Vec<&Arc<Subscription>> =
        jobs.iter().flat_map(|j| &j.subs).filter(|s| seen.insert(s.id.as_str())).collect();
    let now = jobs.iter().map(|j| j.now).min().unwrap_or(0);
    let mut found: HashMap<SubscriptionId, Arc<Subscription>> = HashMap::with_capacity(unique.len());
    let mut failed: HashSet<&str> = HashSet::new();
    for batch in unique.chunks(TARGETS_BATCH) {
        let ids: Vec<String> = batch.iter().map(|s| s.id.to_string()).collect();
        match ctx.store.load_targets(&ids, now).await {
            Ok(rows) => {
                let subs =
                    assemble(&ctx.transports, &ctx.index, batch.iter().copied(), rows.into_iter().collect(), now);
                found.extend(subs.into_iter().map(|s| (s.id.clone(), s)));
            }
            Err(e) => {
                tracing::error!(subscriptions = batch.len(), error = %e, "could not read targets: durable deliveries dropped");
                failed.extend(batch.iter().map(|s| s.id.as_str()));
            }
        }
    }
    for job in jobs {
        let Some(t) = ctx.transports.get(job.kind) else { continue };
        let subs: Vec<Arc<Subscription>> = job.subs.iter().filter_map(|s| found.get(&s.id).cloned()).collect();
        let lost = job.subs.iter().filter(|s| failed.contains(s.id.as_str())).count() as u64;
        if lost > 0 {
            ctx.metrics.delivered(job.kind, "dropped", lost);
        }
        dispatch(ctx, &job.message, job.kind, t, subs);
        ctx.metrics.target_fetch_last_us.set(i64::try_from(job.routed.elapsed().as_micros()).unwrap_or(i64::MAX));
    }
}

/// Hands `subs` (with their targets) to the engine and counts the outcome.
fn dispatch(
    ctx: &Ctx,
    message: &Arc<PushMessage>,
    kind: ServiceKind,
    t: &dyn crate::transport::Transport,
    mut subs: Vec<Arc<Subscription>>,
) {
    let trigger = message.notification.trigger;
    // Replaced meanwhile by a subscription that no longer wants this kind of change.
    subs.retain(|s| s.kind() == kind && s.triggers.accepts(trigger));
    let d = t.dispatch(message, &subs);
    ctx.metrics.delivered(kind, "queued", d.queued);
    ctx.metrics.delivered(kind, "coalesced", d.coalesced);
    ctx.metrics.delivered(kind, "dropped", d.dropped);
}

/// Reads the targets of the job's topic and service and hands them to the engine as they come.
/// The routed subscribers are cut into chunks of at most [`TARGETS_BATCH`] by id ([`chunks`]);
/// each chunk is read as a range of the store's index on `(topic, service, id)` starting after
/// the previous chunk's greatest id, parsed and handed to the engine by a task of its own, at
/// most [`READERS`] at once across the fetcher (on as many store connections, and on all the
/// runtime's threads: a topic of 10,000 is not ten reads and parses one after the other). The
/// chunks of one notification reach different subscribers, so their order does not matter;
/// the next notification waits for all of them. A row is delivered only to the routed
/// subscriber of its chunk with its id (rows of others, e.g. subscribed after the routing, are
/// skipped). A chunk that cannot be read counts its subscribers `dropped`; the others are
/// delivered.
async fn deliver_by_topic(ctx: &Ctx, job: &Job) {
    use futures_util::StreamExt;
    let topic: Arc<str> = job.message.notification.topic.as_str().into();
    let mut tasks = futures_util::stream::iter(chunks(job.subs.clone()))
        .map(|(from, chunk)| {
            let n = chunk.len();
            let (ctx, topic, message, kind, now) = (ctx.clone(), topic.clone(), job.message.clone(), job.kind, job.now);
            let task = tokio::spawn(async move { deliver_chunk(&ctx, &topic, &message, kind, from, chunk, now).await });
            async move { (n, task.await) }
        })
        .buffer_unordered(READERS);
    while let Some((n, done)) = tasks.next().await {
        if let Err(e) = done.unwrap_or_else(|e| Err(StoreError { op: "read targets", source: Box::new(e) })) {
            tracing::error!(service = %job.kind, subscriptions = n, error = %e, "could not read targets: durable deliveries dropped");
            ctx.metrics.delivered(job.kind, "dropped", n as u64);
        }
    }
}

/// `subs` cut into chunks of at most [`TARGETS_BATCH`] that follow each other in id order, each
/// with the greatest id of the chunks before it (`""` for the first). Within a chunk the order
/// is left as it comes: the chunks are found by selection (`select_nth_unstable`, halving),
/// cheaper than sorting 10,000 ids.
fn chunks(mut subs: Vec<Arc<Subscription>>) -> Vec<(String, Vec<Arc<Subscription>>)> {
    fn cut(s: &mut [Arc<Subscription>], at: usize, ends: &mut Vec<usize>) {
        if s.len() <= TARGETS_BATCH {
            ends.push(at + s.len());
            return;
        }
        // A boundary at a multiple of the batch near the middle: full chunks but the last.
        let mid = (s.len() / TARGETS_BATCH).div_ceil(2) * TARGETS_BATCH;
        s.select_nth_unstable_by(mid, |a, b| a.id.as_str().cmp(b.id.as_str()));
        let (low, high) = s.split_at_mut(mid);
        cut(low, at, ends);
        cut(high, at + mid, ends);
    }
    if subs.is_empty() {
        return Vec::new();
    }
    let mut ends = Vec::with_capacity(subs.len().div_ceil(TARGETS_BATCH));
    cut(&mut subs, 0, &mut ends);
    let mut out = Vec::with_capacity(ends.len());
    let mut from = String::new();
    let mut rest = subs.into_iter();
    let mut start = 0;
    for end in ends {
        let chunk: Vec<Arc<Subscription>> = rest.by_ref().take(end - start).collect();
        let last = chunk.iter().map(|s| s.id.as_str()).max().unwrap_or_default().to_owned();
        out.push((std::mem::replace(&mut from, last), chunk));
        start = end;
    }
    out
}

/// One chunk of [`deliver_by_topic`]: the targets of `chunk` (routed subscribers of `topic` and
/// `kind`, each with an id after `from`, those of the next chunk after all of them), read from
/// `from` on in pages until each is found or the topic ends, parsed and handed to the engine.
async fn deliver_chunk(
    ctx: &Ctx,
    topic: &str,
    message: &Arc<PushMessage>,
    kind: ServiceKind,
    mut from: String,
    chunk: Vec<Arc<Subscription>>,
    now: i64,
) -> Result<(), StoreError> {
    let Some(t) = ctx.transports.get(kind) else { return Ok(()) };
    let _reader = ctx.readers.acquire().await.map_err(|e| StoreError { op: "read targets", source: Box::new(e) })?;
    let mut routed: HashMap<&str, &Arc<Subscription>> = chunk.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut out = Vec::with_capacity(chunk.len());
    loop {
        let rows = ctx.store.load_topic_targets(topic, kind.as_str(), &from, now, TARGETS_BATCH).await?;
        let more = rows.len() >= TARGETS_BATCH;
        if let Some((last, _)) = rows.last() {
            from.clone_from(last);
        }
        for (id, target) in &rows {
            if let Some(s) = routed.remove(id.as_str())
                && let Some(full) = with_target(t, s, target, now)
            {
                out.push(full);
            }
        }
        // Every subscriber of the chunk found (the usual end: a chunk's range holds its
        // subscribers and at most a few who came after the routing), or the topic read to its
        // end: the rest is not read.
        if routed.is_empty() || !more {
            break;
        }
    }
    if !out.is_empty() {
        dispatch(ctx, message, kind, t, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::Recording;
    use crate::notification::Exclusions;
    use crate::store::{StoredSubscription, SubscriptionStore};
    use crate::transport::Transports;
    use crate::{ClientId, Limits, MemoryStore, Metrics, Notification, PushService, ServiceKind, Topic};

    fn row(id: &str, client: &str, service: ServiceKind, target: &str, expires: i64) -> StoredSubscription {
        StoredSubscription {
            id: id.into(),
            client_id: client.into(),
            topic: "t".into(),
            service: service.as_str().into(),
            target: target.into(),
            expires,
            created: 0,
            triggers: 3,
        }
    }

    fn notification() -> Vec<Notification> {
        vec![Notification { topic: Topic::parse("t", 8).unwrap(), sync_token: None, trigger: None }]
    }

    /// Runs on one thread: the fetcher's task runs only when the test awaits, so that changes
    /// made right after a notify land between its routing and its fetch.
    #[tokio::test(flavor = "current_thread")]
    async fn issue_11_loaded_routing_only_a_notify_reads_each_target_and_skips_those_gone_meanwhile() {
        let store = Arc::new(MemoryStore::default());
        let far = crate::unix_now() + 100_000;
        let rows = [
            row("s-web-push-0000000001", "a", ServiceKind::WebPush, r#"{"endpoint":"https://push.example/a"}"#, far),
            row("s-fcm-000000000000002", "b", ServiceKind::Fcm, r#"{"registration_token":"tok-b"}"#, far),
            row("s-apns-00000000000003", "c", ServiceKind::Apns, r#"{"device_token":"abcd"}"#, far),
            row("s-web-push-0000000004", "d", ServiceKind::WebPush, r#"{"endpoint":"https://push.example/d"}"#, far),
            row("s-fcm-000000000000005", "e", ServiceKind::Fcm, r#"{"registration_token":"tok-e"}"#, far),
            row("s-apns-00000000000006", "f", ServiceKind::Apns, r#"{"device_token":"ef01"}"#, far),
        ];
        for r in &rows {
            store.upsert(r).await.unwrap();
        }
        let (web, fcm, apns) =
            (Recording::new(ServiceKind::WebPush), Recording::new(ServiceKind::Fcm), Recording::new(ServiceKind::Apns));
        let svc = PushService::new(
            store.clone(),
            Transports::default().with(web.clone()).with(fcm.clone()).with(apns.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        );
        assert_eq!(svc.load(crate::unix_now()).await.unwrap(), 6);
        let ids: Vec<_> = rows.iter().map(|r| crate::SubscriptionId::parse(&r.id, 64).unwrap()).collect();
        assert!(ids.iter().all(|id| svc.index().get(id).unwrap().target.is_stored_only()), "routing only");

        let report = svc.notify(notification(), &Exclusions::default(), crate::unix_now());
        assert_eq!(report.total(), 6, "all routed");
        // Between the routing and the fetch: `d` unsubscribed (gone from the index and the
        // store), `e` gone from the store only, `f` expired in the store.
        svc.unsubscribe(&ClientId::parse("d", 8).unwrap(), None, None).await.unwrap();
        store.delete(&[rows[4].id.clone()]).await.unwrap();
        store.upsert(&row(&rows[5].id, "f", ServiceKind::Apns, r#"{"device_token":"ef01"}"#, 1)).await.unwrap();
        svc.fetches_done(Duration::from_secs(10)).await;
        let one = |c: &str, t: &str| vec![(c.to_owned(), t.to_owned())];
        assert_eq!(web.taken(), one("a", r#"{"endpoint":"https://push.example/a"}"#));
        assert_eq!(fcm.taken(), one("b", r#"{"registration_token":"tok-b"}"#));
        assert_eq!(apns.taken(), one("c", r#"{"device_token":"abcd"}"#));
        assert!(svc.metrics().target_fetch_last_us.get() > 0);

        // The outbox: a pending delivery of a subscription held as routing only is handed back
        // with its target.
        let pending = |id: &str| crate::PendingDelivery {
            subscription_id: id.into(),
            topic: "t".into(),
            sync_token: None,
            trigger: None,
            attempt: 1,
            due: 0,
            deadline: far,
        };
        store.save_pending(&[pending(&rows[0].id)]).await.unwrap();
        store.release_pending().await.unwrap();
        assert_eq!(svc.claim_pending(far).await.unwrap(), 1);
    }

    /// A notify of 1,000 topics with durable subscribers of three services (3,000 notifications
    /// of one topic and service, more than the fetcher's queue held before they were read
    /// together) reaches every subscriber, and a subscriber's notifications arrive in the order
    /// they were sent.
    #[tokio::test(flavor = "current_thread")]
    async fn issue_11_a_notify_of_a_thousand_small_topics_reaches_every_durable_subscriber_in_order() {
        let store = Arc::new(MemoryStore::default());
        let far = crate::unix_now() + 100_000;
        let kinds = [ServiceKind::WebPush, ServiceKind::Fcm, ServiceKind::Apns];
        for i in 0..1000 {
            for (k, kind) in kinds.into_iter().enumerate() {
                let mut r =
                    row(&format!("s-{k}-{i:016}"), &format!("c{k}-{i}"), kind, &format!(r#"{{"t":"{k}-{i}"}}"#), far);
                r.topic = format!("t{i}");
                store.upsert(&r).await.unwrap();
            }
        }
        let recordings: Vec<_> = kinds.into_iter().map(Recording::new).collect();
        let transports =
            recordings.iter().fold(Transports::default(), |t, r| t.with(r.clone() as Arc<dyn crate::Transport>));
        let metrics = Arc::new(Metrics::default());
        let svc = PushService::new(store.clone(), transports, Limits::default(), metrics.clone());
        assert_eq!(svc.load(crate::unix_now()).await.unwrap(), 3000);

        let topic = |i: usize| Topic::parse(&format!("t{i}"), 8).unwrap();
        let all: Vec<Notification> =
            (0..1000).map(|i| Notification { topic: topic(i), sync_token: None, trigger: None }).collect();
        assert_eq!(svc.notify(all, &Exclusions::default(), crate::unix_now()).total(), 3000);
        for token in ["S1", "S2", "S3"] {
            let n = Notification { topic: topic(7), sync_token: Some(token.into()), trigger: None };
            svc.notify(vec![n], &Exclusions::default(), crate::unix_now());
        }
        svc.fetches_done(Duration::from_secs(30)).await;
        for (k, rec) in recordings.iter().enumerate() {
            let taken = rec.taken();
            assert_eq!(taken.len(), 1003, "every subscriber of service {k}, t7's three times more");
            let clients: std::collections::HashSet<&str> = taken.iter().map(|(c, _)| c.as_str()).collect();
            assert_eq!(clients.len(), 1000, "each subscriber of service {k}");
            assert!(taken.iter().all(|(c, t)| t.contains(&format!("\"{}\"", &c[1..]))), "each with its own target");
            let of7: Vec<Option<String>> = rec
                .tokens
                .lock()
                .unwrap()
                .iter()
                .filter(|(c, _)| *c == format!("c{k}-7"))
                .map(|(_, t)| t.clone())
                .collect();
            assert_eq!(of7, [None, Some("S1".into()), Some("S2".into()), Some("S3".into())], "in the order sent");
        }
        for kind in kinds {
            let dropped = crate::metrics::DeliveryLabels { service: kind.as_str(), outcome: "dropped" };
            assert_eq!(metrics.deliveries.get_or_create(&dropped).get(), 0, "nothing dropped ({kind})");
        }
    }

    /// A big topic's subscribers are cut into ranges of ids that follow each other, each with
    /// the greatest id before it, every subscriber in exactly one: what the chunks read side by
    /// side rely on.
    #[test]
    fn issue_11_a_big_topic_is_cut_into_ranges_of_ids_that_follow_each_other() {
        use crate::{SubscriptionId, Target, Triggers};
        for n in [0_usize, 1, 999, 1_000, 1_001, 2_007, 10_000, 10_500] {
            // Ids in no order (a multiplicative hash of i), as the index hands them over.
            let subs: Vec<Arc<crate::Subscription>> = (0..n as u64)
                .map(|i| {
                    let id = format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    Arc::new(crate::Subscription {
                        id: SubscriptionId::parse(&id, 64).unwrap(),
                        client_id: ClientId::parse(&format!("c{i}"), 64).unwrap(),
                        topic: Topic::parse("t", 64).unwrap(),
                        target: Target::Stored(ServiceKind::WebPush),
                        expires: i64::MAX,
                        triggers: Triggers::ALL,
                    })
                })
                .collect();
            let chunks = super::chunks(subs.clone());
            assert_eq!(chunks.len(), n.div_ceil(crate::store::TARGETS_BATCH), "{n}");
            let mut seen: Vec<String> = Vec::new();
            let mut before = String::new();
            for (i, (from, chunk)) in chunks.iter().enumerate() {
                assert_eq!(*from, before, "{n}: chunk {i} starts after the greatest id before it");
                assert!(!chunk.is_empty() && chunk.len() <= crate::store::TARGETS_BATCH, "{n}: chunk {i}");
                if i + 1 < chunks.len() {
                    assert_eq!(chunk.len(), crate::store::TARGETS_BATCH, "{n}: only the last chunk is short");
                }
                assert!(chunk.iter().all(|s| s.id.as_str() > from.as_str()), "{n}: chunk {i}");
                before = chunk.iter().map(|s| s.id.to_string()).max().unwrap();
                seen.extend(chunk.iter().map(|s| s.id.to_string()));
            }
            let mut want: Vec<String> = subs.iter().map(|s| s.id.to_string()).collect();
            want.sort();
            seen.sort();
            assert_eq!(seen, want, "{n}: every subscriber in exactly one chunk");
        }
    }

    /// A big topic is read in pages of its topic and service: every routed subscriber across
    /// the pages gets its own target, and rows the routing did not address (another service,
    /// another topic, or a subscription stored after the routing) are delivered to no one.
    #[tokio::test(flavor = "current_thread")]
    async fn issue_11_a_big_topic_is_read_in_pages_and_rows_not_routed_are_not_delivered() {
        let store = Arc::new(MemoryStore::default());
        let far = crate::unix_now() + 100_000;
        let n = crate::store::TARGETS_BATCH * 2 + 7;
        let target = |i: usize| format!(r#"{{"endpoint":"https://push.example/{i}"}}"#);
        for i in 0..n {
            store
                .upsert(&row(&format!("s-web-push-{i:011}"), &format!("c{i}"), ServiceKind::WebPush, &target(i), far))
                .await
                .unwrap();
        }
        let mut other = row("s-other-topic-00000001", "o", ServiceKind::WebPush, &target(90_001), far);
        other.topic = "u".into();
        store.upsert(&other).await.unwrap();
        store
            .upsert(&row("s-fcm-000000000000001", "f", ServiceKind::Fcm, r#"{"registration_token":"tok"}"#, far))
            .await
            .unwrap();
        let web = Recording::new(ServiceKind::WebPush);
        let svc = PushService::new(
            store.clone(),
            Transports::default().with(web.clone()),
            Limits::default(),
            Arc::new(Metrics::default()),
        );
        assert_eq!(svc.load(crate::unix_now()).await.unwrap(), n + 1, "the FCM row has no transport here");

        let report = svc.notify(notification(), &Exclusions::default(), crate::unix_now());
        assert_eq!(report.total(), n as u64, "the topic's Web Push subscribers routed (no FCM transport)");
        // Stored after the routing, in the middle of the topic's id order: not addressed.
        store
            .upsert(&row("s-web-push-00000000500x", "late", ServiceKind::WebPush, &target(90_002), far))
            .await
            .unwrap();
        svc.fetches_done(Duration::from_secs(10)).await;
        let mut want: Vec<(String, String)> = (0..n).map(|i| (format!("c{i}"), target(i))).collect();
        want.sort();
        assert_eq!(web.taken(), want, "each routed subscriber exactly once, with its own target");
    }
}
