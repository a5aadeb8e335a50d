//! Against the real Redis (see `davpush_testkit::services`), on channels of each test's own.

use davpush_core::{ClusterEvent, ClusterMessage};
use davpush_testkit::services::{redis_url, unique_suffix};

use super::*;

fn settings(url: &str, node: &str, prefix: &str) -> ClusterSettings {
    ClusterSettings {
        redis_url: url.into(),
        node_id: node.into(),
        channel_prefix: prefix.into(),
        queue: 16,
        ready_timeout: Duration::from_secs(5),
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
