//! Engine tests with a scripted push service and paused time.

use std::collections::VecDeque;

use davpush_core::{ClientId, MemoryStore, RemoteTarget, Target, Topic};

use super::*;

/// Answers with scripted outcomes (then `Delivered`), recording what it was asked.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Outcome>>,
    calls: Mutex<Vec<(Instant, Option<String>, Duration)>>,
    topic_calls: Mutex<Vec<(String, Option<String>)>>,
    delivered: Notify,
}

#[async_trait]
impl Deliver for Script {
    async fn deliver(&self, _sub: &Subscription, message: &PushMessage, ttl: Duration) -> Outcome {
        self.calls.lock().unwrap().push((Instant::now(), message.notification.sync_token.clone(), ttl));
        let o = self.answers.lock().unwrap().pop_front().unwrap_or(Outcome::Delivered);
        self.delivered.notify_one();
        o
    }

    async fn deliver_topic(&self, message: &PushMessage, _ttl: Duration) -> Outcome {
        let n = &message.notification;
        self.topic_calls.lock().unwrap().push((n.topic.to_string(), n.sync_token.clone()));
        let o = self.answers.lock().unwrap().pop_front().unwrap_or(Outcome::Delivered);
        self.delivered.notify_one();
        o
    }
}

struct Fixture {
    engine: Engine,
    script: Arc<Script>,
    store: Arc<MemoryStore>,
    metrics: Arc<Metrics>,
    gone: davpush_core::feedback::FeedbackReceiver,
    sub: Arc<Subscription>,
}

async fn fixture(answers: Vec<Outcome>, settings: EngineSettings) -> Fixture {
    let script = Arc::new(Script { answers: Mutex::new(answers.into()), ..Default::default() });
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(Metrics::default());
    let (feedback, gone) = Feedback::channel();
    let sub = Arc::new(Subscription {
        id: SubscriptionId::random(),
        client_id: ClientId::parse("c", 10).unwrap(),
        topic: Topic::parse("t", 10).unwrap(),
        target: Target::Remote(RemoteTarget::new(ServiceKind::WebPush, String::from("{}"))),
        expires: davpush_core::unix_now() + 100_000_000,
        triggers: davpush_core::Triggers::ALL,
    });
    store
        .upsert(&davpush_core::StoredSubscription {
            id: sub.id.to_string(),
            client_id: "c".into(),
            topic: "t".into(),
            service: "web_push".into(),
            target: "{}".into(),
            expires: sub.expires,
            created: 0,
            triggers: 3,
        })
        .await
        .unwrap();
    let engine =
        Engine::start(ServiceKind::WebPush, script.clone(), settings, feedback, metrics.clone(), store.clone());
    Fixture { engine, script, store, metrics, gone, sub }
}

fn msg(token: &str) -> Arc<PushMessage> {
    Arc::new(PushMessage::new(Notification {
        topic: Topic::parse("t", 10).unwrap(),
        sync_token: Some(token.into()),
        trigger: None,
    }))
}

fn count(m: &Metrics, outcome: &'static str) -> u64 {
    m.deliveries.get_or_create(&davpush_core::metrics::DeliveryLabels { service: "web_push", outcome }).get()
}

/// The outbox's rows once the engine's writes so far are done.
async fn outbox(f: &Fixture) -> Vec<PendingDelivery> {
    f.engine.flush_outbox().await;
    f.store.load_pending().await.unwrap()
}

/// Lets the engine's tasks run until nothing is pending (time is paused: advances as needed).
async fn settle(f: &Fixture) {
    for _ in 0..10_000 {
        if f.engine.pending() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("deliveries still pending");
}

#[tokio::test(start_paused = true)]
async fn delivers_once() {
    let f = fixture(vec![], EngineSettings::default()).await;
    assert_eq!(f.engine.enqueue(&f.sub, &msg("1")), Enqueued::Queued);
    settle(&f).await;
    let calls = f.script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1.as_deref(), Some("1"));
    assert_eq!(calls[0].2, Duration::from_secs(86_400), "TTL passed on");
    assert_eq!(count(&f.metrics, "sent"), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_a_burst_coalesces_while_waiting() {
    let after = Duration::from_secs(30);
    let f = fixture(vec![Outcome::Retry { after: Some(after), reason: "429".into() }], EngineSettings::default()).await;
    let start = Instant::now();
    f.engine.enqueue(&f.sub, &msg("1"));
    f.script.delivered.notified().await;
    // While the retry waits, 50 more changes arrive: they replace the pending message.
    tokio::task::yield_now().await;
    for i in 2..=51 {
        assert_eq!(f.engine.enqueue(&f.sub, &msg(&i.to_string())), Enqueued::Coalesced);
    }
    let saved = outbox(&f).await;
    assert_eq!(saved.len(), 1, "a waiting retry is in the outbox");
    assert_eq!(saved[0].attempt, 1);
    settle(&f).await;
    let calls = f.script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "51 notifications, 2 requests");
    assert!(calls[1].0 - start >= after, "retried after {:?}", calls[1].0 - start);
    assert_eq!(calls[1].1.as_deref(), Some("51"), "the newest message wins");
    assert!(outbox(&f).await.is_empty(), "delivered: removed from the outbox");
    assert_eq!((count(&f.metrics, "retry"), count(&f.metrics, "sent")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_exponentially_then_give_up() {
    let errors = (0..10).map(|_| Outcome::Retry { after: None, reason: "500".into() }).collect();
    let settings = EngineSettings { max_attempts: 4, min_backoff: Duration::from_secs(2), ..Default::default() };
    let f = fixture(errors, settings).await;
    f.engine.enqueue(&f.sub, &msg("1"));
    settle(&f).await;
    let calls = f.script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // Jittered in [d/2, d] with d = 2 s, 4 s, 8 s.
    for (gap, d) in gaps.iter().zip([2u64, 4, 8]) {
        assert!(
            *gap >= Duration::from_secs(d) / 2 && *gap <= Duration::from_secs(d) + Duration::from_millis(200),
            "{gaps:?}"
        );
    }
    assert_eq!(count(&f.metrics, "failed"), 1);
    assert!(outbox(&f).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn gone_is_reported_and_not_retried() {
    let mut f = fixture(vec![Outcome::Gone("410".into())], EngineSettings::default()).await;
    f.engine.enqueue(&f.sub, &msg("1"));
    assert_eq!(f.gone.recv().await.unwrap(), f.sub.id);
    settle(&f).await;
    assert_eq!(f.script.calls.lock().unwrap().len(), 1);
    assert_eq!(count(&f.metrics, "gone"), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_message_ttl() {
    let settings = EngineSettings { ttl: Duration::from_secs(60), ..Default::default() };
    let f =
        fixture(vec![Outcome::Retry { after: Some(Duration::from_secs(120)), reason: "429".into() }], settings).await;
    f.engine.enqueue(&f.sub, &msg("1"));
    settle(&f).await;
    assert_eq!(f.script.calls.lock().unwrap().len(), 1, "a retry after the TTL is pointless");
    assert_eq!(count(&f.metrics, "failed"), 1);
}

#[tokio::test(start_paused = true)]
async fn pending_deliveries_survive_shutdown_and_restore() {
    let f = fixture(
        vec![Outcome::Retry { after: Some(Duration::from_secs(600)), reason: "503".into() }],
        EngineSettings::default(),
    )
    .await;
    f.engine.enqueue(&f.sub, &msg("1"));
    f.script.delivered.notified().await;
    tokio::task::yield_now().await;
    f.engine.enqueue(&f.sub, &msg("2"));
    f.engine.shutdown().await;
    assert_eq!(f.engine.enqueue(&f.sub, &msg("3")), Enqueued::Dropped);
    let rows = outbox(&f).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].sync_token.as_deref(), Some("2"));

    // A new engine (the next start) takes them back and delivers when due.
    let script = Arc::new(Script::default());
    let (feedback, _gone) = Feedback::channel();
    let engine = Engine::start(
        ServiceKind::WebPush,
        script.clone(),
        EngineSettings::default(),
        feedback,
        f.metrics.clone(),
        f.store.clone(),
    );
    engine.restore(rows.into_iter().map(|r| (f.sub.clone(), r)).collect());
    assert_eq!(engine.pending(), 1);
    script.delivered.notified().await;
    assert_eq!(script.calls.lock().unwrap()[0].1.as_deref(), Some("2"));
}

/// A subscription of another client (`c<n>`) to `sub`'s topic, with its target.
fn another(sub: &Subscription, n: u32) -> Arc<Subscription> {
    Arc::new(Subscription {
        id: SubscriptionId::random(),
        client_id: ClientId::parse(&format!("c{n}"), 10).unwrap(),
        topic: sub.topic.clone(),
        target: sub.target.clone(),
        expires: sub.expires,
        triggers: davpush_core::Triggers::ALL,
    })
}

#[tokio::test(start_paused = true)]
async fn the_number_of_pending_deliveries_is_bounded() {
    let settings = EngineSettings { max_pending: 2, workers: 1, ..Default::default() };
    let f = fixture(vec![], settings).await;
    let other = |n: u32| another(&f.sub, n);
    assert_eq!(f.engine.enqueue(&other(1), &msg("1")), Enqueued::Queued);
    assert_eq!(f.engine.enqueue(&other(2), &msg("1")), Enqueued::Queued);
    assert_eq!(f.engine.enqueue(&other(3), &msg("1")), Enqueued::Dropped);
    assert_eq!(count(&f.metrics, "overflow"), 1);
}

/// A batch is queued as its subscriptions would be one by one: a repeated one coalesces, those
/// beyond the bound are dropped and counted, and what was queued is delivered.
#[tokio::test(start_paused = true)]
async fn issue_11_a_batch_is_queued_as_one_by_one() {
    let settings = EngineSettings { max_pending: 2, workers: 1, ..Default::default() };
    let f = fixture(vec![], settings).await;
    let other = |n: u32| another(&f.sub, n);
    let (a, b, c) = (other(1), other(2), other(3));
    let batch = [a.clone(), b, a, c];
    assert_eq!(f.engine.enqueue_many(&batch, &msg("1")), (2, 1, 1), "queued, coalesced, dropped");
    assert_eq!(count(&f.metrics, "overflow"), 1);
    assert_eq!(f.engine.pending(), 2);
    f.script.delivered.notified().await;
}

/// A push service down: the first deliveries of a big topic fail at once. Their outbox rows are
/// written together, in a few calls of the store, not a call (a transaction) each; those that
/// the store took meanwhile were the notify's target reads' (issue 11).
#[tokio::test(start_paused = true)]
async fn issue_11_a_burst_of_failures_is_written_to_the_outbox_together() {
    let refused = || Outcome::Retry { after: None, reason: "connection refused".into() };
    let f = fixture((0..64).map(|_| refused()).collect(), EngineSettings::default()).await;
    let subs: Vec<_> = (0..64).map(|n| another(&f.sub, n)).collect();
    assert_eq!(f.engine.enqueue_many(&subs, &msg("1")), (64, 0, 0));
    until("64 deliveries tried", || f.script.calls.lock().unwrap().len() == 64).await;
    let rows = outbox(&f).await;
    assert_eq!(rows.len(), 64, "every failed delivery waits in the outbox");
    assert!(f.store.outbox_writes() <= 2, "{} outbox writes for 64 rows", f.store.outbox_writes());
    assert_eq!(count(&f.metrics, "retry"), 64);
}

#[tokio::test(start_paused = true)]
async fn topic_slots_deliver_once_per_topic_and_coalesce() {
    let f = fixture(
        vec![Outcome::Retry { after: Some(Duration::from_secs(5)), reason: "503".into() }],
        EngineSettings::default(),
    )
    .await;
    let other = Arc::new(Subscription {
        id: SubscriptionId::random(),
        client_id: ClientId::parse("c2", 10).unwrap(),
        topic: f.sub.topic.clone(),
        target: f.sub.target.clone(),
        expires: f.sub.expires,
        triggers: davpush_core::Triggers::ALL,
    });
    assert_eq!(f.engine.enqueue_topic(&f.sub, &msg("1")), Enqueued::Queued);
    f.script.delivered.notified().await;
    tokio::task::yield_now().await;
    // The retry waits; more changes of the same topic (through any subscription) coalesce.
    assert_eq!(f.engine.enqueue_topic(&other, &msg("2")), Enqueued::Coalesced);
    assert_eq!(f.engine.enqueue_topic(&f.sub, &msg("3")), Enqueued::Coalesced);
    let rows = outbox(&f).await;
    assert_eq!(rows.len(), 1, "one outbox row for the topic");
    assert_eq!(rows[0].subscription_id, f.sub.id.to_string(), "kept by the first subscription");
    settle(&f).await;
    let calls = f.script.topic_calls.lock().unwrap().clone();
    assert_eq!(calls, vec![("t".to_owned(), Some("1".to_owned())), ("t".to_owned(), Some("3".to_owned()))]);
    assert!(f.script.calls.lock().unwrap().is_empty(), "no per-subscription delivery");
    assert!(outbox(&f).await.is_empty());
    assert_eq!((count(&f.metrics, "retry"), count(&f.metrics, "sent")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn gone_for_a_topic_is_a_rejection_and_pending_topics_are_restored() {
    let mut f = fixture(vec![Outcome::Gone("404".into())], EngineSettings::default()).await;
    f.engine.enqueue_topic(&f.sub, &msg("1"));
    settle(&f).await;
    assert!(f.gone.try_recv().is_err(), "a topic is never gone");
    assert_eq!(count(&f.metrics, "rejected"), 1);

    let row = PendingDelivery {
        subscription_id: f.sub.id.to_string(),
        topic: "t".into(),
        sync_token: Some("9".into()),
        trigger: None,
        attempt: 1,
        due: davpush_core::unix_now(),
        deadline: davpush_core::unix_now() + 3600,
    };
    f.engine.restore_topics(vec![(f.sub.clone(), row.clone()), (f.sub.clone(), row)]);
    assert_eq!(f.engine.pending(), 1, "one slot per topic");
    settle(&f).await;
    assert_eq!(f.script.topic_calls.lock().unwrap().last().unwrap().1.as_deref(), Some("9"));
}

/// Push services on several hosts (the host is the client id's part before `-`): `slow…`
/// answers after 28 s, `bad…` fails while `down`, `flaky…` answers in 100 ms until `hang`,
/// then never; others answer at once.
#[derive(Default)]
struct Farm {
    down: AtomicBool,
    hang: AtomicBool,
    started: Mutex<Vec<(Instant, String)>>,
    finished: Mutex<Vec<(Instant, String)>>,
}

fn host_of(sub: &Subscription) -> String {
    sub.client_id.as_str().split('-').next().unwrap_or_default().to_owned()
}

#[async_trait]
impl Deliver for Farm {
    fn origin(&self, sub: &Subscription) -> HostKey {
        HostKey::new(&format!("https://{}", host_of(sub)))
    }

    async fn deliver(&self, sub: &Subscription, _message: &PushMessage, _ttl: Duration) -> Outcome {
        let (host, client) = (host_of(sub), sub.client_id.as_str().to_owned());
        self.started.lock().unwrap().push((Instant::now(), client.clone()));
        let outcome = if host.starts_with("slow") {
            tokio::time::sleep(Duration::from_secs(28)).await;
            Outcome::Delivered
        } else if host.starts_with("bad") && self.down.load(Ordering::SeqCst) {
            Outcome::Retry { after: None, reason: "503".into() }
        } else if host.starts_with("flaky") {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Outcome::Delivered
        } else {
            Outcome::Delivered
        };
        self.finished.lock().unwrap().push((Instant::now(), client));
        outcome
    }
}

struct FarmFixture {
    engine: Engine,
    farm: Arc<Farm>,
    metrics: Arc<Metrics>,
}

fn farm(settings: EngineSettings) -> FarmFixture {
    let farm = Arc::new(Farm::default());
    let metrics = Arc::new(Metrics::default());
    let (feedback, _gone) = Feedback::channel();
    let store = Arc::new(MemoryStore::default());
    let engine = Engine::start(ServiceKind::WebPush, farm.clone(), settings, feedback, metrics.clone(), store);
    FarmFixture { engine, farm, metrics }
}

fn sub_of(client: &str) -> Arc<Subscription> {
    Arc::new(Subscription {
        id: SubscriptionId::random(),
        client_id: ClientId::parse(client, 64).unwrap(),
        topic: Topic::parse("t", 10).unwrap(),
        target: Target::Remote(RemoteTarget::new(ServiceKind::WebPush, String::from("{}"))),
        expires: davpush_core::unix_now() + 100_000_000,
        triggers: davpush_core::Triggers::ALL,
    })
}

impl Farm {
    fn started(&self, client: &str) -> Vec<Instant> {
        self.started.lock().unwrap().iter().filter(|(_, c)| c == client).map(|(t, _)| *t).collect()
    }

    fn finished_with_prefix(&self, prefix: &str) -> usize {
        self.finished.lock().unwrap().iter().filter(|(_, c)| c.starts_with(prefix)).count()
    }
}

/// Waits (in paused time, advancing it) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn issue_9_a_slow_host_with_many_slots_does_not_delay_a_fast_hosts_push() {
    // The measurement of issue 9: 200 slow subscriptions on 5 hosts, then a healthy one.
    let settings = EngineSettings { workers: 16, per_host_workers: 4, ..Default::default() };
    let f = farm(settings);
    let start = Instant::now();
    for n in 0..200 {
        f.engine.enqueue(&sub_of(&format!("slow{}-{n}", n % 5)), &msg("1"));
    }
    f.engine.enqueue(&sub_of("fast-1"), &msg("1"));
    until("the healthy push", || !f.farm.started("fast-1").is_empty()).await;
    assert_eq!(f.farm.started("fast-1"), vec![start], "sent in the first scheduling round");
    assert_eq!(f.farm.finished_with_prefix("slow"), 0, "while the slow hosts still hang");
    let in_flight = f.farm.started.lock().unwrap().len() - 1;
    assert_eq!(in_flight, 12, "the slow hosts share 12 workers; the last 4 are kept for hosts with none in flight");
    settle_engine(&f.engine).await;
    assert_eq!(f.farm.finished_with_prefix("slow"), 200, "and the slow ones all arrive in the end");
}

#[tokio::test(start_paused = true)]
async fn issue_9_when_every_worker_is_busy_the_next_free_one_goes_to_the_next_host_in_turn() {
    // One host may take every worker here (no reserve): the healthy push waits for one
    // completion, not behind the slow host's whole queue.
    let settings = EngineSettings { workers: 4, per_host_workers: 4, ..Default::default() };
    let f = farm(settings);
    for n in 0..20 {
        f.engine.enqueue(&sub_of(&format!("slow-{n}")), &msg("1"));
    }
    until("the slow host holds every worker", || f.farm.started.lock().unwrap().len() == 4).await;
    let busy_since = f.farm.started.lock().unwrap()[0].0;
    f.engine.enqueue(&sub_of("fast-1"), &msg("1"));
    until("the healthy push", || !f.farm.started("fast-1").is_empty()).await;
    let started = f.farm.started.lock().unwrap().clone();
    // The fifth request overall: ahead of the 16 slow slots that were queued before it.
    assert_eq!(started[4], (busy_since + Duration::from_secs(28), "fast-1".to_owned()), "{started:?}");
    settle_engine(&f.engine).await;
}

async fn settle_engine(engine: &Engine) {
    until("nothing pending", || engine.pending() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn issue_9_a_failing_host_opens_its_breaker_and_a_successful_probe_releases_its_slots_at_once() {
    let settings = EngineSettings {
        workers: 8,
        per_host_workers: 2,
        breaker_failures: 3,
        breaker_cool_down: Duration::from_secs(10),
        // Each slot's own backoff is long: what brings them back early is the probe.
        min_backoff: Duration::from_secs(60),
        ..Default::default()
    };
    let f = farm(settings);
    f.farm.down.store(true, Ordering::SeqCst);
    let bad: Vec<String> = (0..6).map(|n| format!("bad-{n}")).collect();
    // The push service fails at once (the clock is paused): the breaker opens now.
    let opened = Instant::now();
    for c in &bad {
        f.engine.enqueue(&sub_of(c), &msg("1"));
    }
    until("the breaker opens", || count(&f.metrics, "host_open") == 1).await;
    let tried = f.farm.started.lock().unwrap().len();
    assert!((3..=4).contains(&tried), "3 failures open it (one more may have been in flight): {tried}");

    // While it is open its slots wait without using workers; other hosts are served.
    f.engine.enqueue(&sub_of("fast-1"), &msg("1"));
    until("the healthy push", || !f.farm.started("fast-1").is_empty()).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(f.farm.started.lock().unwrap().len(), tried + 1, "nothing sent to the open host");

    // The host is back. After the cool-down one probe goes; its answer releases the rest.
    f.farm.down.store(false, Ordering::SeqCst);
    until("everything delivered", || f.engine.pending() == 0).await;
    let probe = opened + Duration::from_secs(10);
    for c in &bad {
        let last = *f.farm.started(c).last().unwrap();
        assert!(last == probe, "{c} was last sent at +{:?}, not at the probe", last - opened);
    }
    let at_probe = f.farm.started.lock().unwrap().iter().filter(|(t, _)| *t == probe).count();
    assert_eq!(at_probe, 6, "the probe, then the 5 others at once");
    assert_eq!(count(&f.metrics, "host_closed"), 1);
    assert_eq!(count(&f.metrics, "sent"), 7);
}

#[tokio::test(start_paused = true)]
async fn issue_9_a_failed_probe_keeps_the_breaker_open_for_another_cool_down() {
    let settings = EngineSettings {
        breaker_failures: 1,
        breaker_cool_down: Duration::from_secs(10),
        min_backoff: Duration::from_secs(60),
        ..Default::default()
    };
    let f = farm(settings);
    f.farm.down.store(true, Ordering::SeqCst);
    let opened = Instant::now();
    for n in 0..3 {
        f.engine.enqueue(&sub_of(&format!("bad-{n}")), &msg("1"));
    }
    until("the breaker opens", || count(&f.metrics, "host_open") == 1).await;
    until("a probe fails", || count(&f.metrics, "host_open") == 2).await;
    let starts = f.farm.started.lock().unwrap().clone();
    assert_eq!(starts.last().unwrap().0, opened + Duration::from_secs(10), "one probe after the cool-down");
    let tried = starts.len();
    f.farm.down.store(false, Ordering::SeqCst);
    until("everything delivered", || f.engine.pending() == 0).await;
    let starts = f.farm.started.lock().unwrap().clone();
    assert!(starts[tried..].iter().all(|(t, _)| *t == opened + Duration::from_secs(20)), "{starts:?}");
}

#[tokio::test(start_paused = true)]
async fn issue_9_a_host_that_stops_answering_is_cut_at_its_adaptive_timeout() {
    let settings = EngineSettings {
        min_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let f = farm(settings);
    for n in 0..3 {
        f.engine.enqueue(&sub_of(&format!("flaky-{n}")), &msg("1"));
        settle_engine(&f.engine).await;
    }
    f.farm.hang.store(true, Ordering::SeqCst);
    f.engine.enqueue(&sub_of("flaky-3"), &msg("1"));
    until("the request starts", || !f.farm.started("flaky-3").is_empty()).await;
    let sent = f.farm.started("flaky-3")[0];
    until("the hanging request is given up", || count(&f.metrics, "retry") == 1).await;
    let waited = Instant::now() - sent;
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "cut after {waited:?}, not 30 s");
}
