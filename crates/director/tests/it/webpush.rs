//! Web Push / UnifiedPush delivery against a local push service, cross-checked with independent
//! implementations (Python http_ece and py_vapid).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::util::*;
use davpush_testkit::fake_push::FakePush;

/// The fake's loopback port is allow-listed for these tests, over plain http.
fn web_push_allowing(push: &FakePush) -> String {
    format!("[web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\nmin_backoff_ms = 200\n", push.addr.port())
}

pub(crate) fn ua_keys(py: Option<&str>) -> Value {
    match py {
        Some(py) => oracle(py, "keys", &json!({})).unwrap(),
        // Without Python the tests that only need *some* valid key use the RFC 8291 one.
        None => json!({
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg"
        }),
    }
}

async fn subscribe_push(d: &TestDirector, service: &str, client: &str, topic: &str, params: Value) -> (u16, Value) {
    d.subscribe(json!({"client_id": client, "topic": topic, "push_services": {service: params}})).await
}

pub(crate) fn web_push_params(endpoint: &str, keys: &Value, format: &str) -> Value {
    json!({"endpoint": endpoint, "p256dh": keys["p256dh"], "auth": keys["auth"], "format": format})
}

#[tokio::test]
async fn encrypted_pushes_decrypt_with_http_ece_and_their_vapid_verifies_with_py_vapid() {
    let Some(py) = interop_python() else { return };
    let mut push = FakePush::start().await;
    let d = start(&format!("{}subject = \"mailto:ops@example.org\"\n", web_push_allowing(&push))).await;
    let keys = ua_keys(Some(&py));
    let (s, b) =
        subscribe_push(&d, "web_push", "c1", "cal-1", web_push_params(&push.endpoint("a"), &keys, "topic-json")).await;
    assert_eq!((s, b["subscriptions"][0]["push_service"].as_str()), (201, Some("web_push")), "{b}");
    let keys2 = ua_keys(Some(&py));
    let (s, _) = subscribe_push(
        &d,
        "unified_push",
        "c2",
        "cal-1",
        web_push_params(&push.endpoint("b"), &keys2, "webdav-push-xml"),
    )
    .await;
    assert_eq!(s, 201);

    let (_, b) = d.notify(json!({"topic": "cal-1", "sync_token": "http://dav.example/sync/7"})).await;
    assert_eq!(b["services"], json!({"web_push": 1, "unified_push": 1}));

    for _ in 0..2 {
        let req = push.next().await;
        let (k, format) = if req.path == "/push/a" { (&keys, "json") } else { (&keys2, "xml") };
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("content-encoding"), Some("aes128gcm"));
        assert_eq!(req.header("ttl"), Some("86399").or(req.header("ttl")), "TTL present");
        assert!(req.header("ttl").unwrap().parse::<u64>().unwrap() > 86_000);
        assert_eq!(req.header("urgency"), Some("normal"));
        let topic = req.header("topic").unwrap();
        assert_eq!(topic.len(), 32, "RFC 8030 Topic: at most 32 base64url characters");
        assert!(!topic.contains("cal-1"));
        let checked = oracle(
            &py,
            "check",
            &json!({
                "body": B64.encode(&req.body),
                "private": k["private"],
                "auth": k["auth"],
                "authorization": req.header("authorization").unwrap(),
                "endpoint": push.endpoint("x"),
                "encoding": req.header("content-encoding"),
            }),
        )
        .unwrap_or_else(|e| panic!("independent check failed: {e}"));
        assert_eq!(checked["claims"]["sub"], "mailto:ops@example.org");
        let plaintext = checked["plaintext"].as_str().unwrap();
        if format == "json" {
            assert_eq!(req.header("content-type"), Some("application/json"));
            assert_eq!(
                serde_json::from_str::<Value>(plaintext).unwrap(),
                json!({"type": "notify", "topic": "cal-1", "sync_token": "http://dav.example/sync/7"})
            );
        } else {
            assert_eq!(req.header("content-type"), Some("application/xml; charset=\"UTF-8\""));
            assert!(
                plaintext.contains("<push-message xmlns=\"https://bitfire.at/webdav-push\" xmlns:D=\"DAV:\">"),
                "{plaintext}"
            );
            assert!(plaintext.contains("<topic>cal-1</topic><content-update><D:sync-token>http://dav.example/sync/7</D:sync-token></content-update>"), "{plaintext}");
        }
        // The advertised key is the one `davpush vapid` prints.
        assert_eq!(checked["vapid_key"], d.running.state.startup.vapid_key.as_ref().unwrap().public_key());
    }
}

#[tokio::test]
async fn gone_410_deletes_the_subscription() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    let keys = ua_keys(None);
    subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &keys, "topic-json")).await;
    push.answer(&[(410, None)]);
    d.notify(json!({"topic": "t"})).await;
    push.next().await;
    let svc = d.running.state.service.clone();
    // The index is updated first, the store right after (an await later): wait for both.
    eventually("subscription removed from index and store", || async {
        svc.index().is_empty() && svc.store().load(0).await.unwrap().is_empty()
    })
    .await;
    let (_, b) = d.notify(json!({"topic": "t"})).await;
    assert_eq!(b["addressed"], 0);
    push.assert_none(300).await;
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"gone\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn rejected_messages_are_not_retried_and_the_subscription_stays() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &ua_keys(None), "topic-json")).await;
    push.answer(&[(413, None)]);
    d.notify(json!({"topic": "t"})).await;
    push.next().await;
    push.assert_none(700).await;
    assert_eq!(d.running.state.service.index().len(), 1);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"rejected\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &ua_keys(None), "topic-json")).await;
    push.answer(&[(429, Some("2"))]);
    d.notify(json!({"topic": "t", "sync_token": "1"})).await;
    let first = push.next().await;
    let second = push.next().await;
    let gap = second.at - first.at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}, Retry-After said 2 s");
    assert_eq!(first.body.len(), second.body.len());
}

#[tokio::test]
async fn server_errors_back_off_exponentially() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &ua_keys(None), "topic-json")).await;
    push.answer(&[(500, None), (503, None), (502, None)]);
    d.notify(json!({"topic": "t"})).await;
    let times: Vec<_> =
        [push.next().await, push.next().await, push.next().await, push.next().await].iter().map(|c| c.at).collect();
    // min_backoff 200 ms, doubled each attempt, jittered into [d/2, d].
    for (i, w) in times.windows(2).enumerate() {
        let floor = Duration::from_millis(100 << i);
        assert!(w[1] - w[0] >= floor, "retry {i} after {:?}, expected at least {floor:?}", w[1] - w[0]);
    }
    let m = d.metrics().await;
    eventually("sent counted", || async {
        metric(&d.metrics().await, "davpush_deliveries_total{service=\"web_push\",outcome=\"sent\"}") == 1.0
    })
    .await;
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"retry\"}"), 3.0, "{m}");
}

/// Issue 9: subscriber-chosen endpoints that hang must not hold up a healthy subscriber's push.
#[tokio::test]
async fn issue_9_a_hanging_push_service_does_not_hold_up_a_healthy_one() {
    let mut slow = FakePush::start().await;
    let mut fast = FakePush::start().await;
    slow.hold(true);
    // Two loopback ports: two origins. Each origin gets at most 2 of the 4 workers.
    let d = start(&format!(
        "[web_push]\nallow_hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nallow_http = true\nmin_backoff_ms = 200\n\
         workers = 4\nmax_per_host = 2\n",
        slow.addr.port(),
        fast.addr.port()
    ))
    .await;
    let keys = ua_keys(None);
    for n in 0..10 {
        let params = web_push_params(&slow.endpoint(&format!("s{n}")), &keys, "topic-json");
        assert_eq!(subscribe_push(&d, "web_push", &format!("slow{n}"), "slow", params).await.0, 201);
    }
    let params = web_push_params(&fast.endpoint("healthy"), &keys, "topic-json");
    assert_eq!(subscribe_push(&d, "web_push", "healthy", "t", params).await.0, 201);
    d.notify(json!({"topic": "slow"})).await;
    // The slow push service has its share of requests, and does not answer them.
    slow.next().await;
    slow.next().await;

    d.notify(json!({"topic": "t", "sync_token": "1"})).await;
    assert_eq!(fast.next().await.path, "/push/healthy", "the healthy push went out meanwhile");
    slow.assert_none(300).await;
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"sent\"}"), 1.0, "{m}");

    // Once it answers again, the slow push service gets the other eight.
    slow.hold(false);
    for _ in 0..8 {
        slow.next().await;
    }
    eventually("all eleven sent", || async {
        metric(&d.metrics().await, "davpush_deliveries_total{service=\"web_push\",outcome=\"sent\"}") == 11.0
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_changes_coalesces_into_few_pushes() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &ua_keys(None), "topic-json")).await;
    // The push service is busy for a few seconds; meanwhile 100 changes happen, all at once so
    // that a debug build on a loaded machine still makes them within the busy period.
    push.answer(&[(429, Some("4"))]);
    d.notify(json!({"topic": "t", "sync_token": "0"})).await;
    push.next().await;
    let burst = (1..=100).map(|i| d.notify(json!({"topic": "t", "sync_token": i.to_string()})));
    for (status, _) in futures_util::future::join_all(burst).await {
        assert_eq!(status, 202);
    }
    push.next().await;
    push.assert_none(1500).await;
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"sent\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"coalesced\"}"), 100.0, "{m}");
}

#[tokio::test]
async fn the_newest_change_is_what_arrives_after_a_burst() {
    let Some(py) = interop_python() else { return };
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    let keys = ua_keys(Some(&py));
    subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &keys, "topic-json")).await;
    push.answer(&[(429, Some("1"))]);
    for i in 0..=20 {
        d.notify(json!({"topic": "t", "sync_token": i.to_string()})).await;
    }
    push.next().await;
    let last = push.next().await;
    let checked = oracle(
        &py,
        "check",
        &json!({"body": B64.encode(&last.body), "private": keys["private"], "auth": keys["auth"],
                "authorization": last.header("authorization").unwrap(), "endpoint": push.endpoint("a"),
                "encoding": last.header("content-encoding")}),
    )
    .unwrap();
    let frame: Value = serde_json::from_str(checked["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(frame["sync_token"], "20");
}

#[tokio::test]
async fn durable_subscriptions_and_pending_deliveries_survive_a_restart() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    let keys = ua_keys(None);
    let (_, b) =
        subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &keys, "topic-json")).await;
    let id = b["subscriptions"][0]["id"].clone();
    let d = d.restart().await;
    assert_eq!(d.running.state.service.index().len(), 1, "subscription reloaded from SQLite");
    let (_, b) = d.notify(json!({"topic": "t", "sync_token": "after-restart"})).await;
    assert_eq!(b["addressed"], 1);
    push.next().await;

    // A delivery waiting for its retry when the Director stops is sent after the restart.
    push.answer(&[(503, Some("2"))]);
    d.notify(json!({"topic": "t", "sync_token": "pending"})).await;
    let failed = push.next().await;
    let d = d.restart().await;
    let retried = push.next().await;
    assert!(retried.at - failed.at >= Duration::from_secs(2), "Retry-After still honoured after the restart");
    let (_, b) = d.subscribe(json!({"client_id": "c1", "topic": "t", "push_services": {"web_push": web_push_params(&push.endpoint("a"), &keys, "topic-json")}})).await;
    assert_eq!(b["subscriptions"][0]["id"], id, "same subscription across restarts");
}

#[tokio::test]
async fn endpoints_that_point_inside_are_refused_at_subscribe_time() {
    // Default policy: nothing allow-listed.
    let d = start("").await;
    let keys = ua_keys(None);
    for endpoint in [
        "https://127.0.0.1/push/x",
        "https://10.1.2.3/push/x",
        "https://[::1]/push/x",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/push/x",
        "http://push.example.net/push/x",
    ] {
        let (s, b) = subscribe_push(&d, "web_push", "c1", "t", web_push_params(endpoint, &keys, "topic-json")).await;
        assert_eq!((s, b["error"].as_str()), (400, Some("invalid_push_service")), "{endpoint}: {b}");
        assert_eq!(b["field"], "push_services.web_push.endpoint", "{endpoint}");
        let msg = b["message"].as_str().unwrap();
        assert!(msg.contains("not a public address") || msg.contains("https"), "{endpoint}: {msg}");
    }
    assert!(d.running.state.service.index().is_empty());
}

#[tokio::test]
async fn issue_9_an_unlisted_port_of_an_allowed_host_is_refused_at_subscribe_time() {
    // 127.0.0.1 is allowed on the fake's port only: not on Redis's, nor on the standard ones.
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    let keys = ua_keys(None);
    for (endpoint, port) in
        [("http://127.0.0.1:6379/", 6379), ("https://127.0.0.1/push/x", 443), ("http://127.0.0.1/push/x", 80)]
    {
        let (s, b) = subscribe_push(&d, "web_push", "c1", "t", web_push_params(endpoint, &keys, "topic-json")).await;
        assert_eq!((s, b["error"].as_str()), (400, Some("invalid_push_service")), "{endpoint}: {b}");
        assert_eq!(b["field"], "push_services.web_push.endpoint", "{endpoint}");
        let msg = b["message"].as_str().unwrap();
        assert!(msg.contains(&format!("allow-listed for other ports only, not for {port}")), "{endpoint}: {msg}");
    }
    assert!(d.running.state.service.index().is_empty());
    // The listed port works.
    let (s, b) =
        subscribe_push(&d, "web_push", "c1", "t", web_push_params(&push.endpoint("a"), &keys, "topic-json")).await;
    assert_eq!(s, 201, "{b}");
    d.notify(json!({"topic": "t"})).await;
    assert_eq!(push.next().await.path, "/push/a");
}

#[tokio::test]
async fn plain_messages_only_where_configured() {
    let mut push = FakePush::start().await;
    let d = start(&web_push_allowing(&push)).await;
    let plain = json!({"endpoint": push.endpoint("p")});
    let (s, b) = subscribe_push(&d, "unified_push", "c1", "t", plain.clone()).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("push_services.unified_push.p256dh")), "{b}");

    let d = start(&format!("{}allow_unencrypted = true\n", web_push_allowing(&push))).await;
    let (s, _) = subscribe_push(&d, "unified_push", "c1", "t", plain).await;
    assert_eq!(s, 201);
    d.notify(json!({"topic": "t"})).await;
    let req = push.next().await;
    assert_eq!(req.header("content-encoding"), None);
    assert_eq!(serde_json::from_slice::<Value>(&req.body).unwrap(), json!({"type": "notify", "topic": "t"}));
}

#[tokio::test]
async fn the_vapid_key_is_generated_once_and_kept() {
    let d = start("").await;
    let key = d.running.state.startup.vapid_key.as_ref().unwrap().public_key();
    assert_eq!(B64.decode(&key).unwrap().len(), 65);
    let path = d.data_dir().join("vapid-key.pem");
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let d = d.restart().await;
    assert_eq!(d.running.state.startup.vapid_key.as_ref().unwrap().public_key(), key);
}
