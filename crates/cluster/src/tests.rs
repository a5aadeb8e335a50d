//! Against the real Redis (see `davpush_testkit::services`), on channels of each test's own.

use davpush_core::{ClusterEvent, ClusterMessage};
use davpush_testkit::redis_server::RedisServer;
use davpush_testkit::services::{redis_url, unique_suffix};

use super::*;

fn settings(url: &str, node: &str, prefix: &str) -> ClusterSettings {
    ClusterSettings {
        redis_url: url.into(),
        node_id: node.into(),
        channel_prefix: prefix.into(),
        queue: 16,
        ready_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(1),
        publish_retry: Duration::from_secs(30),
        history: None,
    }
}

fn removed(node: &str, id: &str) -> ClusterMessage {
    ClusterMessage { node: node.into(), event: ClusterEvent::Removed { ids: vec![id.into()] } }
}

fn count(m: &Metrics, channel: &str, outcome: &str) -> f64 {
    let text = m.render(&[0; 6]);
    let series = format!("davpush_cluster_messages_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn has_client(redis: &RedisServer, name: &str) -> bool {
    redis.client_names().await.iter().any(|n| n == name)
}

async fn next(rx: &mut Inbound) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a message within 5 s").expect("open")
}

#[tokio::test]
async fn nodes_receive_each_others_messages_but_not_their_own() {
    let Some(url) = redis_url().await else { return };
    let prefix = format!("davpush-test-{}", unique_suffix());
    let (ma, mb) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
    let (a, mut a_in) = RedisFanout::start(settings(&url, "a", &prefix), ma.clone()).await.unwrap();
    let (b, mut b_in) = RedisFanout::start(settings(&url, "b", &prefix), mb.clone()).await.unwrap();

    let m = removed("a", "s1");
    assert!(a.publish(Channel::Subscriptions, m.encode()));
    match next(&mut b_in).await {
        Received::Message(got) => assert_eq!(got, m),
        other => panic!("unexpected {other:?}"),
    }
    let m2 = removed("b", "s2");
    assert!(b.publish(Channel::Subscriptions, m2.encode()));
    // a's next message is b's: its own was skipped.
    match next(&mut a_in).await {
        Received::Message(got) => assert_eq!(got, m2),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(count(&ma, "subscriptions", "published"), 1.0);
    assert_eq!(count(&ma, "subscriptions", "received"), 1.0);
    assert_eq!(count(&mb, "subscriptions", "received"), 1.0);
    a.close();
    b.close();
}

#[tokio::test]
async fn an_unreachable_redis_neither_blocks_nor_fails_the_start_and_is_counted() {
    // Nothing listens on port 1.
    let mut s = settings("redis://127.0.0.1:1", "a", "davpush-test-unreachable");
    s.ready_timeout = Duration::from_millis(200);
    s.publish_retry = Duration::from_millis(300);
    let metrics = Arc::new(Metrics::default());
    let (a, _inbound) = RedisFanout::start(s, metrics.clone()).await.unwrap();
    assert!(a.publish(Channel::Notify, removed("a", "x").encode()), "publishing only queues");
    davpush_testkit::eventually("the failed publish is counted", || async {
        count(&metrics, "notify", "failed") == 1.0
    })
    .await;
    a.close();
    assert!(RedisFanout::start(settings("nonsense", "a", "p"), metrics).await.is_err(), "a malformed URL fails");
}

/// Issue 9, item 10: after a Redis restart the publisher found its connection broken only at the
/// next `PUBLISH` and dropped that message. Here the idle `PING` is off (an hour), so the
/// message itself meets the broken connection: it must be sent again on a new one.
#[tokio::test]
async fn issue_9_a_message_meeting_a_connection_broken_by_a_redis_restart_is_sent_again() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let prefix = format!("davpush-test-{}", unique_suffix());
    let (ma, mb) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
    let mut sa = settings(&redis.url(), "a", &prefix);
    sa.ping_interval = Duration::from_secs(3600);
    let (a, _a_in) = RedisFanout::start(sa, ma.clone()).await.unwrap();
    let (b, mut b_in) = RedisFanout::start(settings(&redis.url(), "b", &prefix), mb).await.unwrap();
    let m1 = removed("a", "before");
    assert!(a.publish(Channel::Notify, m1.encode()));
    match next(&mut b_in).await {
        Received::Message(got) => assert_eq!(got, m1),
        other => panic!("unexpected {other:?}"),
    }

    redis.restart().await;
    let channel = format!("{prefix}:notify");
    davpush_testkit::eventually("both nodes subscribe again", || async { redis.subscribers(&channel).await == 2 })
        .await;
    let m2 = removed("a", "after");
    assert!(a.publish(Channel::Notify, m2.encode()));
    assert!(matches!(next(&mut b_in).await, Received::Resubscribed), "b reports its own reconnection first");
    match next(&mut b_in).await {
        Received::Message(got) => assert_eq!(got, m2, "the first message after the restart arrives"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(count(&ma, "notify", "published"), 2.0);
    assert_eq!(count(&ma, "notify", "failed"), 0.0);
    a.close();
    b.close();
}

/// Issue 9, item 10: the publisher replaces a connection that Redis dropped without waiting for a
/// message to fail on it (its labelled connection shows up again on the restarted server).
#[tokio::test]
async fn issue_9_the_publisher_reconnects_after_a_redis_restart_without_any_message() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let prefix = format!("davpush-test-{}", unique_suffix());
    let mut s = settings(&redis.url(), "a", &prefix);
    s.ping_interval = Duration::from_millis(100);
    let (a, _a_in) = RedisFanout::start(s, Arc::new(Metrics::default())).await.unwrap();
    let label = format!("{prefix}:a:publisher");
    davpush_testkit::eventually("the publisher connects at start", || has_client(&redis, &label)).await;

    redis.restart().await;
    assert!(!has_client(&redis, &label).await, "a restarted Redis starts without clients");
    davpush_testkit::eventually("the publisher connects again by itself", || has_client(&redis, &label)).await;
    a.close();
}

/// A message that cannot be published within `publish_retry` is given up and counted `failed`
/// (the queue does not stall behind it), and the next one goes out once Redis is back.
#[tokio::test]
async fn a_message_is_given_up_after_publish_retry_and_the_next_goes_out_when_redis_is_back() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let prefix = format!("davpush-test-{}", unique_suffix());
    let ma = Arc::new(Metrics::default());
    let mut sa = settings(&redis.url(), "a", &prefix);
    sa.publish_retry = Duration::from_millis(300);
    let (a, _a_in) = RedisFanout::start(sa, ma.clone()).await.unwrap();
    let (b, mut b_in) =
        RedisFanout::start(settings(&redis.url(), "b", &prefix), Arc::new(Metrics::default())).await.unwrap();

    redis.kill();
    assert!(a.publish(Channel::Notify, removed("a", "lost").encode()));
    davpush_testkit::eventually("the message is given up", || async { count(&ma, "notify", "failed") == 1.0 }).await;

    redis.restart().await;
    let channel = format!("{prefix}:notify");
    davpush_testkit::eventually("both nodes subscribe again", || async { redis.subscribers(&channel).await == 2 })
        .await;
    let label = format!("{prefix}:a:publisher");
    davpush_testkit::eventually("a's publisher is connected again", || has_client(&redis, &label)).await;
    let m = removed("a", "after");
    assert!(a.publish(Channel::Notify, m.encode()));
    assert!(matches!(next(&mut b_in).await, Received::Resubscribed));
    match next(&mut b_in).await {
        Received::Message(got) => assert_eq!(got, m),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(count(&ma, "notify", "published"), 1.0);
    assert_eq!(count(&ma, "notify", "failed"), 1.0);
    a.close();
    b.close();
}
