//! Issue 17: the fan-out writes notifications straight into idle sockets. What must not change:
//! frames stay whole next to the connection's own answers, a reply comes before the
//! notifications that follow it, and a socket that would block falls back to the mailbox
//! without losing or reordering anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::util::*;

/// The round of a `"{round}-…"` sync-token (`u64::MAX` for the last, `"end"`).
fn round_of(frame: &Value) -> u64 {
    let token = frame["sync_token"].as_str().unwrap();
    if token == "end" { u64::MAX } else { token.split('-').next().unwrap().parse().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_direct_notifications_and_answers_stay_whole_and_in_order() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c", "t", &conn).await;
    let topics: Vec<String> = std::iter::once("t".to_owned()).chain((0..20).map(|i| format!("s{i}"))).collect();
    let answered = AtomicBool::new(false);
    // Notifications to all topics, as fast as the Notify API takes them, while the client
    // subscribes through the socket and pings; once every request is answered, a last round.
    let notifier = async {
        let padding = "x".repeat(300);
        for round in 0..20_000u64 {
            if answered.load(Ordering::Acquire) {
                break;
            }
            let (s, _) = d.notify(json!({"topics": topics, "sync_token": format!("{round}-{padding}")})).await;
            assert_eq!(s, 202);
        }
        assert!(answered.load(Ordering::Acquire), "requests unanswered");
        d.notify(json!({"topics": topics, "sync_token": "end"})).await;
    };
    let client = async {
        for i in 0..20 {
            send_json(&mut ws, json!({"type": "subscribe", "id": format!("sub{i}"), "topic": format!("s{i}")})).await;
            send_json(&mut ws, json!({"type": "ping", "id": format!("p{i}")})).await;
        }
        let mut subscribed = std::collections::HashSet::new();
        let mut pongs = 0;
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut notifications = 0;
        while last.values().filter(|r| **r == u64::MAX).count() < topics.len() {
            // Every frame parses (a torn frame would fail here), and is one of the expected.
            let f = next_json(&mut ws).await;
            match f["type"].as_str().unwrap() {
                "subscribed" => {
                    let topic = f["topic"].as_str().unwrap().to_owned();
                    assert_eq!(f["id"].as_str().unwrap(), format!("sub{}", &topic[1..]));
                    assert!(!last.contains_key(&topic), "a notification of {topic} came before its subscribe reply");
                    subscribed.insert(topic);
                }
                "pong" => pongs += 1,
                "notify" => {
                    notifications += 1;
                    let topic = f["topic"].as_str().unwrap().to_owned();
                    assert!(topic == "t" || subscribed.contains(&topic), "{topic} before its subscribe reply");
                    let round = round_of(&f);
                    if let Some(prev) = last.insert(topic.clone(), round) {
                        assert!(prev < round, "{topic}: round {round} after {prev}");
                    }
                }
                other => panic!("unexpected frame {f}: {other}"),
            }
            if subscribed.len() == 20 && pongs == 20 {
                answered.store(true, Ordering::Release);
            }
        }
        assert_eq!((subscribed.len(), pongs), (20, 20));
        notifications
    };
    let ((), notifications) = tokio::join!(notifier, client);
    assert!(notifications > topics.len(), "{notifications}");
    let m = d.metrics().await;
    let (queued, sent) = (
        metric(&m, "davpush_deliveries_total{service=\"websocket\",outcome=\"queued\"}"),
        metric(&m, "davpush_deliveries_total{service=\"websocket\",outcome=\"sent\"}"),
    );
    assert!(sent >= notifications as f64 && sent <= queued, "{m}");
}

#[tokio::test]
async fn issue_17_a_full_socket_falls_back_to_the_mailbox_and_loses_nothing() {
    let d = start("[websocket]\nwrite_timeout_secs = 60\n").await;
    let (mut ws, conn) = d.ws().await;
    let topics: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    for t in &topics {
        d.subscribe_ws("slow", t, &conn).await;
    }
    // The client reads nothing until frames wait in its mailbox: the socket would block, and
    // the fan-out fell back to the mailbox (queued, not yet sent).
    let padding = "x".repeat(900);
    let mut round = 0u64;
    let (d_ref, topics_ref) = (&d, &topics);
    eventually("frames wait in the mailbox", || {
        round += 1;
        let body = json!({"topics": topics_ref, "sync_token": format!("{round}-{padding}")});
        async move {
            assert_eq!(d_ref.notify(body).await.0, 202);
            let m = d_ref.metrics().await;
            metric(&m, "davpush_deliveries_total{service=\"websocket\",outcome=\"queued\"}")
                > metric(&m, "davpush_deliveries_total{service=\"websocket\",outcome=\"sent\"}")
        }
    })
    .await;
    for _ in 0..5 {
        round += 1;
        d.notify(json!({"topics": topics, "sync_token": format!("{round}-{padding}")})).await;
    }
    // Reading again, the client gets each topic's notifications in order (a newer one may
    // have replaced an older one still in the mailbox), up to the last round, each whole.
    let mut last: HashMap<String, u64> = HashMap::new();
    while last.values().filter(|r| **r == round).count() < topics.len() {
        let f = next_json(&mut ws).await;
        assert_eq!(f["type"], "notify", "{f}");
        let topic = f["topic"].as_str().unwrap().to_owned();
        let r = round_of(&f);
        if let Some(prev) = last.insert(topic.clone(), r) {
            assert!(prev < r, "{topic}: round {r} after {prev}");
        }
    }
    assert_eq!(d.running.state.hub.get(&conn).map(|c| c.is_closed()), Some(false), "still open");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "davpush_deliveries_total{service=\"websocket\",outcome=\"dropped\"}"),
        0.0,
        "nothing dropped: {m}"
    );
}
