//! Huawei Push Kit against the local fake: OAuth client credentials, data messages, business
//! codes (gone, partial success, token expiry, flow control) and topic mode.

use serde_json::{Value, json};

use davpush_delivery::fcm::topic_name;

use crate::util::*;
use davpush_testkit::fakes::hms::{FakeHms, SECRET};

async fn sub(d: &TestDirector, client: &str, topic: &str, token: &str) -> (u16, Value) {
    d.subscribe(json!({"client_id": client, "topic": topic, "push_services": {"hms": {"token": token}}})).await
}

fn count(m: &str, outcome: &str) -> f64 {
    metric(m, &format!("davpush_deliveries_total{{service=\"hms\",outcome=\"{outcome}\"}}"))
}

#[tokio::test]
async fn data_messages_with_a_cached_oauth_token() {
    let mut hms = FakeHms::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&hms.director_toml(secrets.path(), "token", SECRET)).await;
    sub(&d, "c1", "cal-1", "AH2Ftok1").await;
    for i in 0..3 {
        d.notify(json!({"topic": "cal-1", "sync_token": i.to_string()})).await;
        let m = hms.next().await.message;
        assert_eq!(m["token"], json!(["AH2Ftok1"]));
        let data: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"topic": "cal-1", "sync_token": i.to_string()}));
        assert_eq!(m["android"]["urgency"], "HIGH");
        assert!(m["android"]["ttl"].as_str().unwrap().ends_with('s'));
    }
    assert_eq!(hms.token_requests(), 1, "the access token is cached");
    assert!(hms.rejections().is_empty(), "{:?}", hms.rejections());
}

#[tokio::test]
async fn business_codes_map_to_gone_retry_and_rejected() {
    let mut hms = FakeHms::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&hms.director_toml(secrets.path(), "token", SECRET)).await;
    // 80300007: all tokens invalid.
    sub(&d, "c1", "t1", "dead-1").await;
    d.notify(json!({"topic": "t1"})).await;
    let svc = d.running.state.service.clone();
    eventually("80300007 removes the subscription", || async { svc.index().is_empty() }).await;
    // 80100000 partial success listing our token as illegal.
    hms.answer(&[(200, "80100000", r#"{"success":0,"failure":1,"illegal_tokens":["tok-2"]}"#)]);
    sub(&d, "c2", "t2", "tok-2").await;
    d.notify(json!({"topic": "t2"})).await;
    eventually("illegal token removed", || async { svc.index().is_empty() }).await;

    // An expired access token (80200003) is renewed once; flow control (503) is retried.
    sub(&d, "c3", "t3", "tok-3").await;
    d.notify(json!({"topic": "t3", "sync_token": "a"})).await;
    hms.next().await;
    let tokens = hms.token_requests();
    hms.expire_access_tokens();
    hms.answer(&[]);
    d.notify(json!({"topic": "t3", "sync_token": "b"})).await;
    hms.next().await;
    assert_eq!(hms.token_requests(), tokens + 1);
    hms.answer(&[(503, "81000001", "flow control"), (502, "", "")]);
    d.notify(json!({"topic": "t3", "sync_token": "c"})).await;
    let m: Value = serde_json::from_str(hms.next().await.message["data"].as_str().unwrap()).unwrap();
    assert_eq!(m["sync_token"], "c");
    // 80100003 (bad message structure: our bug) is rejected, not retried; the subscription stays.
    hms.answer(&[(400, "80100003", "Illegal payload")]);
    d.notify(json!({"topic": "t3"})).await;
    eventually("rejected", || async { count(&d.metrics().await, "rejected") == 1.0 }).await;
    hms.assert_none(300).await;
    let text = d.metrics().await;
    assert_eq!((count(&text, "gone"), count(&text, "retry")), (2.0, 2.0), "{text}");
    assert_eq!(svc.index().len(), 1);
}

#[tokio::test]
async fn a_wrong_client_secret_rejects_deliveries_but_keeps_subscriptions() {
    let hms = FakeHms::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&hms.director_toml(secrets.path(), "token", "wrong-secret-0123456789")).await;
    sub(&d, "c1", "t", "tok-1").await;
    d.notify(json!({"topic": "t"})).await;
    eventually("rejected", || async { count(&d.metrics().await, "rejected") == 1.0 }).await;
    assert_eq!(hms.send_requests(), 0);
    assert_eq!(d.running.state.service.index().len(), 1);
    let logged = format!("{:?}", d.running.state.config);
    assert!(!logged.contains("wrong-secret"), "the secret never appears in Debug output");
}

#[tokio::test]
async fn topic_mode_sends_one_message_per_topic() {
    let mut hms = FakeHms::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&hms.director_toml(secrets.path(), "topic", SECRET)).await;
    for i in 0..50 {
        sub(&d, &format!("c{i}"), "team-cal", &format!("tok-{i}")).await;
    }
    sub(&d, "c-dead", "team-cal", "dead-x").await;
    let name = topic_name("davpush", "team-cal");
    eventually("joined", || async { hms.members(&name) == 50 }).await;
    let svc = d.running.state.service.clone();
    eventually("invalid token's subscription removed", || async { svc.index().len() == 50 }).await;
    assert!(hms.topic_requests() < 51, "batched: {}", hms.topic_requests());
    let before = hms.send_requests();
    d.notify(json!({"topic": "team-cal"})).await;
    let s = hms.next().await;
    assert_eq!(s.message["topic"], name.as_str());
    assert_eq!(s.fanout, 50);
    hms.assert_none(300).await;
    assert_eq!(hms.send_requests() - before, 1);
    d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "c3"})).await;
    eventually("left", || async { hms.members(&name) == 49 }).await;
}
