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
        target: Target::Remote(RemoteTarget::new(ServiceKind::WebPush, "{}".into(), ())),
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
    let saved = f.store.load_pending().await.unwrap();
    assert_eq!(saved.len(), 1, "a waiting retry is in the outbox");
    assert_eq!(saved[0].attempt, 1);
    settle(&f).await;
    let calls = f.script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "51 notifications, 2 requests");
    assert!(calls[1].0 - start >= after, "retried after {:?}", calls[1].0 - start);
    assert_eq!(calls[1].1.as_deref(), Some("51"), "the newest message wins");
    assert!(f.store.load_pending().await.unwrap().is_empty(), "delivered: removed from the outbox");
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
    assert!(f.store.load_pending().await.unwrap().is_empty());
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
    let rows = f.store.load_pending().await.unwrap();
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

#[tokio::test(start_paused = true)]
async fn the_number_of_pending_deliveries_is_bounded() {
    let settings = EngineSettings { max_pending: 2, workers: 1, ..Default::default() };
    let f = fixture(vec![], settings).await;
    let other = |n: u32| {
        Arc::new(Subscription {
            id: SubscriptionId::random(),
            client_id: ClientId::parse(&format!("c{n}"), 10).unwrap(),
            topic: f.sub.topic.clone(),
            target: f.sub.target.clone(),
            expires: f.sub.expires,
            triggers: davpush_core::Triggers::ALL,
        })
    };
    assert_eq!(f.engine.enqueue(&other(1), &msg("1")), Enqueued::Queued);
    assert_eq!(f.engine.enqueue(&other(2), &msg("1")), Enqueued::Queued);
    assert_eq!(f.engine.enqueue(&other(3), &msg("1")), Enqueued::Dropped);
    assert_eq!(count(&f.metrics, "overflow"), 1);
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
    let rows = f.store.load_pending().await.unwrap();
    assert_eq!(rows.len(), 1, "one outbox row for the topic");
    assert_eq!(rows[0].subscription_id, f.sub.id.to_string(), "kept by the first subscription");
    settle(&f).await;
    let calls = f.script.topic_calls.lock().unwrap().clone();
    assert_eq!(calls, vec![("t".to_owned(), Some("1".to_owned())), ("t".to_owned(), Some("3".to_owned()))]);
    assert!(f.script.calls.lock().unwrap().is_empty(), "no per-subscription delivery");
    assert!(f.store.load_pending().await.unwrap().is_empty());
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
