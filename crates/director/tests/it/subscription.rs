//! Subscription API: subscribe, update, unsubscribe, expiry, limits, exclusions, batches.

use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn notify_reaches_a_subscribed_websocket_with_sync_token_and_trigger() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    let (mut other, other_conn) = d.ws().await;
    d.subscribe_ws("client-1", "topic-a", &conn).await;
    d.subscribe_ws("client-2", "topic-b", &other_conn).await;

    let (s, b) = d
        .notify(json!({"topic": "topic-a", "sync_token": "http://radicale.example/sync/42", "trigger": "content"}))
        .await;
    assert_eq!(s, 202);
    assert_eq!(b, json!({"topics": 1, "addressed": 1, "services": {"websocket": 1}}));
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "notify", "topic": "topic-a", "sync_token": "http://radicale.example/sync/42", "trigger": "content"})
    );
    assert_silent(&mut other, 200).await;

    // A topic nobody listens to addresses nobody.
    let (s, b) = d.notify(json!({"topic": "nobody-listens"})).await;
    assert_eq!((s, b["addressed"].as_u64()), (202, Some(0)));
}

#[tokio::test]
async fn subscribing_again_updates_instead_of_duplicating() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    let body = json!({"client_id": "c1", "topic": "t", "push_services": {"websocket": {"connection_id": conn}}});
    let (s1, b1) = d.subscribe(body.clone()).await;
    let (s2, b2) = d.subscribe(body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(b1["subscriptions"][0]["created"], true);
    assert_eq!(b2["subscriptions"][0]["created"], false);
    assert_eq!(b1["subscriptions"][0]["id"], b2["subscriptions"][0]["id"]);
    assert_eq!(d.running.state.service.index().len(), 1);
    let (_, b) = d.notify(json!({"topic": "t"})).await;
    assert_eq!(b["addressed"], 1);
    next_json(&mut ws).await;
    assert_silent(&mut ws, 200).await;
}

#[tokio::test]
async fn resubscribing_from_a_new_connection_moves_the_subscription() {
    let d = start("").await;
    let (ws_old, old) = d.ws().await;
    let (mut ws_new, new) = d.ws().await;
    let id1 = d.subscribe_ws("c1", "t", &old).await;
    let id2 = d.subscribe_ws("c1", "t", &new).await;
    assert_eq!(id1, id2);
    drop(ws_old); // the old connection's end must not take the moved subscription with it
    eventually("old connection gone", || async { d.running.state.hub.len() == 1 }).await;
    d.notify(json!({"topic": "t"})).await;
    assert_eq!(next_json(&mut ws_new).await["topic"], "t");
}

#[tokio::test]
async fn unsubscribe_stops_notifications() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c1", "t1", &conn).await;
    d.subscribe_ws("c1", "t2", &conn).await;
    let (s, b) = d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "c1", "topic": "t1"})).await;
    assert_eq!((s, b), (200, json!({"removed": 1})));
    let (_, b) = d.notify(json!({"topics": ["t1", "t2"]})).await;
    assert_eq!(b["addressed"], 1);
    assert_eq!(next_json(&mut ws).await["topic"], "t2");
    assert_silent(&mut ws, 200).await;
    let (s, _) = d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "c1", "topic": "t1"})).await;
    assert_eq!(s, 404, "already gone");
    let (s, b) =
        d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "c1", "push_services": ["websocket"]})).await;
    assert_eq!((s, b["removed"].as_u64()), (200, Some(1)));
    assert!(d.running.state.service.index().is_empty());
}

#[tokio::test]
async fn expiry_is_clamped_to_the_configured_limits() {
    let d = start("[subscription]\ntokens = [\"subscribe-token-0123456789\"]\ndefault_expiry_secs = 7200\nmin_expiry_secs = 3600\nmax_expiry_secs = 86400\n").await;
    let (_ws, conn) = d.ws().await;
    let sub = |topic: &str, expires: Option<i64>| {
        let mut b = json!({"client_id": "c", "topic": topic, "push_services": {"websocket": {"connection_id": conn}}});
        if let Some(e) = expires {
            b["expires"] = json!(e);
        }
        b
    };
    let now = davpush_core::unix_now();
    let near = |v: &serde_json::Value, want: i64| {
        let got = v["expires"].as_i64().unwrap();
        assert!((want - 5..=want + 5).contains(&got), "granted {got}, expected about {want}");
    };
    near(&d.subscribe(sub("none", None)).await.1, now + 7200);
    near(&d.subscribe(sub("past", Some(1))).await.1, now + 3600);
    near(&d.subscribe(sub("soon", Some(now + 10))).await.1, now + 3600);
    near(&d.subscribe(sub("far", Some(now + 10 * 86400))).await.1, now + 86400);
    near(&d.subscribe(sub("within", Some(now + 20000))).await.1, now + 20000);
}

#[tokio::test]
async fn expired_subscriptions_are_not_notified_and_are_purged() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c1", "t", &conn).await;
    let svc = &d.running.state.service;
    let later = davpush_core::unix_now() + 4 * 24 * 3600; // past the default expiry of 3 days
    let topic = svc.topic("topic", "t").unwrap();
    let report = svc.notify(
        vec![davpush_core::Notification { topic, sync_token: None, trigger: None }],
        &Default::default(),
        later,
    );
    assert_eq!(report.total(), 0, "an expired subscription is never notified");
    assert_silent(&mut ws, 200).await;
    assert_eq!(svc.purge_expired(later).await.unwrap(), 1);
    assert!(svc.index().is_empty());
}

#[tokio::test]
async fn per_client_limit_is_409() {
    let d = start("[subscription]\ntokens = [\"subscribe-token-0123456789\"]\nmax_per_client = 2\n").await;
    let (_ws, conn) = d.ws().await;
    d.subscribe_ws("c1", "t1", &conn).await;
    d.subscribe_ws("c1", "t2", &conn).await;
    let (s, b) = d
        .subscribe(json!({"client_id": "c1", "topic": "t3", "push_services": {"websocket": {"connection_id": conn}}}))
        .await;
    assert_eq!((s, b["error"].as_str()), (409, Some("too_many_subscriptions")), "{b}");
    // Updating an existing one is still allowed.
    d.subscribe_ws("c1", "t2", &conn).await;
}

#[tokio::test]
async fn exclude_skips_the_named_subscription() {
    let d = start("").await;
    let (mut a, ca) = d.ws().await;
    let (mut b, cb) = d.ws().await;
    let id_a = d.subscribe_ws("writer", "t", &ca).await;
    d.subscribe_ws("reader", "t", &cb).await;
    let (s, body) = d.notify(json!({"topic": "t", "exclude": [id_a]})).await;
    assert_eq!((s, body["addressed"].as_u64()), (202, Some(1)));
    assert_eq!(next_json(&mut b).await["topic"], "t");
    assert_silent(&mut a, 200).await;
}

#[tokio::test]
async fn topic_batches_carry_their_own_sync_tokens() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c", "t1", &conn).await;
    d.subscribe_ws("c", "t2", &conn).await;
    let (s, b) = d
        .notify(json!({
            "topics": ["t1", {"topic": "t2", "sync_token": "s2", "trigger": "property"}],
            "sync_token": "s-default"
        }))
        .await;
    assert_eq!((s, b["topics"].as_u64(), b["addressed"].as_u64()), (202, Some(2), Some(2)));
    let mut frames = [next_json(&mut ws).await, next_json(&mut ws).await];
    frames.sort_by_key(|f| f["topic"].as_str().unwrap().to_owned());
    assert_eq!(frames[0], json!({"type": "notify", "topic": "t1", "sync_token": "s-default"}));
    assert_eq!(frames[1], json!({"type": "notify", "topic": "t2", "sync_token": "s2", "trigger": "property"}));
}

#[tokio::test]
async fn subscription_auth_none_accepts_anyone() {
    let d = start("[subscription]\nauth = \"none\"\n").await;
    let (_ws, conn) = d.ws().await;
    let (s, _) = d
        .post(
            "/subscribe",
            None,
            json!({"client_id": "c", "topic": "t", "push_services": {"websocket": {"connection_id": conn}}}),
        )
        .await;
    assert_eq!(s, 201);
    // The Notify API stays authenticated whatever the subscription auth.
    let (s, _) = d.post("/notify", None, json!({"topic": "t"})).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn subscriptions_get_only_the_kinds_of_change_they_asked_for() {
    let d = start("").await;
    let (mut props, pc) = d.ws().await;
    let (mut all, ac) = d.ws().await;
    let (s, b) = d
        .subscribe(json!({"client_id": "p", "topic": "t", "triggers": ["property"],
                          "push_services": {"websocket": {"connection_id": pc}}}))
        .await;
    assert_eq!(s, 201, "{b}");
    d.subscribe_ws("a", "t", &ac).await;
    let (_, b) = d.notify(json!({"topic": "t", "trigger": "content"})).await;
    assert_eq!(b["addressed"], 1, "only the subscription that wants everything");
    assert_eq!(next_json(&mut all).await["trigger"], "content");
    assert_silent(&mut props, 200).await;
    let (_, b) = d.notify(json!({"topic": "t"})).await;
    assert_eq!(b["addressed"], 1, "no trigger counts as content");
    next_json(&mut all).await;
    let (_, b) = d.notify(json!({"topic": "t", "trigger": "property"})).await;
    assert_eq!(b["addressed"], 2);
    assert_eq!(next_json(&mut props).await["trigger"], "property");
    next_json(&mut all).await;
    let (s, b) = d
        .subscribe(json!({"client_id": "x", "topic": "t", "triggers": [],
                          "push_services": {"websocket": {"connection_id": pc}}}))
        .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("triggers")), "{b}");
}

#[tokio::test]
async fn issue_9_subscriptions_are_capped_per_token_and_in_total() {
    const OTHER: &str = "other-subscribe-token-0123456789";
    let d = start(&format!("[subscription]\ntokens = [{SUB_TOKEN:?}, {OTHER:?}]\nmax_per_token = 3\nmax_total = 5\n"))
        .await;
    let (_ws, conn) = d.ws().await;
    let sub = |client: &str| json!({"client_id": client, "topic": "t", "push_services": {"websocket": {"connection_id": conn}}});
    for c in ["a1", "a2", "a3"] {
        assert_eq!(d.post("/subscribe", Some(SUB_TOKEN), sub(c)).await.0, 201);
    }
    let (s, b) = d.post("/subscribe", Some(SUB_TOKEN), sub("a4")).await;
    assert_eq!((s, b["error"].as_str()), (429, Some("too_many_subscriptions_per_token")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("subscription.max_per_token"), "{b}");
    // Updates are always allowed; another token has its own count.
    assert_eq!(d.post("/subscribe", Some(SUB_TOKEN), sub("a1")).await.0, 200);
    for c in ["b1", "b2"] {
        assert_eq!(d.post("/subscribe", Some(OTHER), sub(c)).await.0, 201);
    }
    let (s, b) = d.post("/subscribe", Some(OTHER), sub("b3")).await;
    assert_eq!((s, b["error"].as_str()), (429, Some("too_many_subscriptions_in_total")), "{b}");
    assert_eq!(d.running.state.service.index().len(), 5, "nothing was subscribed beyond the limits");
    // Unsubscribing frees a place, for the token and in total.
    let (s, _) = d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "a2"})).await;
    assert_eq!(s, 200);
    assert_eq!(d.post("/subscribe", Some(SUB_TOKEN), sub("a4")).await.0, 201);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"subscription_limit_per_token\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"subscription_limit_total\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn issue_9_a_60_kb_web_push_endpoint_is_refused() {
    let d = start("[web_push]\nallow_hosts = [\"push.example.net\"]\n").await;
    let endpoint = format!("https://push.example.net/{}", "a".repeat(60_000));
    let params = json!({
        "endpoint": endpoint,
        "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    });
    let (s, b) = d.subscribe(json!({"client_id": "c", "topic": "t", "push_services": {"web_push": params}})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_push_service")), "{b}");
    assert_eq!(b["field"], "push_services.web_push.endpoint");
    assert!(b["message"].as_str().unwrap().contains("at most 2048 bytes"), "{b}");
    assert!(d.running.state.service.index().is_empty());
}
