//! Issue 15: the Notify API names the topics nobody listens to, and `GET /topics/active` lists
//! the topics with subscribers, page by page (docs/protocol.md §2.1). The cluster side is in
//! `cluster.rs`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::util::*;

/// `GET /topics/active` with `query`, with the notify token.
pub(crate) async fn active(d: &TestDirector, query: &str) -> (u16, Value) {
    let resp = d.http.get(d.url(&format!("/topics/active{query}"))).bearer_auth(NOTIFY_TOKEN).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn issue_15_the_notify_answer_names_the_topics_without_any_subscriber() {
    let d = start("").await;
    let (s, r) = d.notify(json!({"topics": ["t1", "t2", "t1"]})).await;
    assert_eq!(s, 202);
    assert_eq!(r, json!({"topics": 3, "addressed": 0, "services": {}, "unheard": ["t1", "t2"]}), "each topic once");

    let (_ws, conn) = d.ws().await;
    d.subscribe_ws("c1", "t1", &conn).await;
    let (_, r) = d.notify(json!({"topics": ["t1", "t2"]})).await;
    assert_eq!(r["unheard"], json!(["t2"]), "{r}");

    // A subscriber that does not want this change, or that the notify excludes, still listens.
    let (s, b) = d
        .subscribe(json!({"client_id": "c2", "topic": "t2", "triggers": ["property"],
            "push_services": {"websocket": {"connection_id": conn}}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let id = d.subscribe_ws("c3", "t1", &conn).await;
    let (_, r) = d.notify(json!({"topics": ["t1", "t2"], "trigger": "content", "exclude": [id]})).await;
    assert!(r.get("unheard").is_none(), "{r}");
    assert_eq!(r["addressed"], 1, "{r}");
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_active_topics_come_in_bounded_pages_that_list_each_topic_once() {
    let d = start("[subscription]\nmax_per_client = 2000\n").await;
    let (_ws, conn) = d.ws().await;
    let topics: BTreeSet<String> = (0..1_200).map(|i| format!("topic-{i:04}")).collect();
    for (i, t) in topics.iter().enumerate() {
        // Every tenth topic has two subscribers.
        d.subscribe_ws("c", t, &conn).await;
        if i.is_multiple_of(10) {
            d.subscribe_ws("d", t, &conn).await;
        }
    }
    let mut seen = BTreeSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (s, page) = active(&d, &format!("?limit=500{cursor}")).await;
        assert_eq!(s, 200, "{page}");
        let entries = page["topics"].as_array().unwrap();
        assert!(entries.len() <= 500, "a page holds at most `limit` topics");
        for e in entries {
            let t = e["topic"].as_str().unwrap().to_owned();
            let n: usize = t["topic-".len()..].parse().unwrap();
            let expected = if n.is_multiple_of(10) { 2 } else { 1 };
            assert_eq!(e["subscriptions"], expected, "{e}");
            assert_eq!(e["services"], json!({"websocket": expected}), "{e}");
            assert!(seen.insert(t), "listed once: {e}");
        }
        pages += 1;
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, topics, "every active topic, in {pages} pages");
    assert!(pages >= 3, "1,200 topics need at least 3 pages of 500");

    let (s, page) = active(&d, "?limit=100000").await;
    assert_eq!((s, page["topics"].as_array().unwrap().len()), (200, 1_200), "the limit is capped at 10,000");
    let (s, e) = active(&d, "?cursor=bm9uc2Vuc2U").await;
    assert_eq!((s, e["error"].as_str(), e["field"].as_str()), (400, Some("invalid_request"), Some("cursor")), "{e}");
    let resp = d.http.get(d.url("/topics/active")).bearer_auth(SUB_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a subscription token is not a notify token");
    d.running.shutdown().await.unwrap();
}
