//! APNs against the local HTTP/2-over-TLS fake: provider token, headers, one connection, and
//! every gone and retry path.

use std::time::Duration;

use davpush_delivery::auth::topic_hash;
use serde_json::{Value, json};

use crate::util::*;
use davpush_testkit::fakes::apns::{BUNDLE_ID, FakeApns};

fn token(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:0>width$x}", width = 64 - prefix.len())
}

async fn sub(d: &TestDirector, client: &str, topic: &str, device: &str) -> (u16, Value) {
    d.subscribe(json!({"client_id": client, "topic": topic, "push_services": {"apns": {"device_token": device}}})).await
}

fn count(m: &str, outcome: &str) -> f64 {
    metric(m, &format!("davpush_deliveries_total{{service=\"apns\",outcome=\"{outcome}\"}}"))
}

#[tokio::test]
async fn silent_pushes_go_over_one_http2_connection_with_one_provider_token() {
    let mut apns = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&apns.director_toml(secrets.path())).await;
    for i in 0..20 {
        assert_eq!(sub(&d, &format!("c{i}"), "cal-1", &token("a1", i)).await.0, 201);
    }
    let (_, b) = d.notify(json!({"topic": "cal-1", "sync_token": "7"})).await;
    assert_eq!(b["services"], json!({"apns": 20}));
    let now = davpush_core::unix_now();
    for _ in 0..20 {
        let p = apns.next().await;
        assert_eq!(p.header("apns-topic"), Some(BUNDLE_ID));
        assert_eq!(p.header("apns-push-type"), Some("background"));
        assert_eq!(p.header("apns-priority"), Some("5"));
        assert_eq!(p.header("apns-collapse-id"), Some(topic_hash("cal-1").as_str()));
        let exp: i64 = p.header("apns-expiration").unwrap().parse().unwrap();
        assert!((exp - (now + 86_400)).abs() <= 5, "expiration at the end of the TTL: {exp}");
        assert_eq!(p.payload, json!({"aps": {"content-available": 1}, "topic": "cal-1", "sync_token": "7"}));
    }
    // A second round reuses the connection and the token (a new token per push would be 429
    // TooManyProviderTokenUpdates at the fake, as at APNs).
    d.notify(json!({"topic": "cal-1"})).await;
    for _ in 0..20 {
        assert_eq!(apns.next().await.connection, 1);
    }
    assert_eq!(apns.connections(), 1, "one long-lived HTTP/2 connection");
    assert!(apns.rejections().is_empty(), "{:?}", apns.rejections());
    eventually("sent counted", || async { count(&d.metrics().await, "sent") == 40.0 }).await;
}

#[tokio::test]
async fn the_fake_refuses_http1_and_clients_without_the_test_ca() {
    let apns = FakeApns::start().await;
    let ca = reqwest::Certificate::from_pem(apns.ca_pem.as_bytes()).unwrap();
    let url = format!("{}/3/device/{}", apns.url(), token("a1", 1));
    let h1 = reqwest::Client::builder().tls_certs_only([ca.clone()]).http1_only().build().unwrap();
    assert!(h1.post(&url).body("{}").send().await.is_err(), "HTTP/1.1 (ALPN http/1.1 only) must fail");
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting.post(&url).body("{}").send().await.is_err(), "the test CA is not a public one");
    let h2 = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let r = h2.post(&url).body("{\"aps\":{}}").send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN negotiated h2");
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (403, r#"{"reason":"MissingProviderToken"}"#.into()));
}

#[tokio::test]
async fn dead_device_tokens_delete_the_subscription() {
    let mut apns = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&apns.director_toml(secrets.path())).await;
    // 410 Unregistered, 410 ExpiredToken, 400 BadDeviceToken, 400 DeviceTokenNotForTopic.
    for (i, prefix) in ["dead", "e0e0", "baad", "f00d"].iter().enumerate() {
        sub(&d, &format!("c{i}"), "t", &token(prefix, i)).await;
    }
    sub(&d, "alive", "t", &token("a1", 9)).await;
    d.notify(json!({"topic": "t"})).await;
    apns.next().await;
    let svc = d.running.state.service.clone();
    eventually("four subscriptions removed from index and store", || async {
        svc.index().len() == 1 && svc.store().load(0).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(svc.store().load(0).await.unwrap()[0].client_id, "alive");
    let m = d.metrics().await;
    assert_eq!(count(&m, "gone"), 4.0, "{m}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_other_refusals_are_not() {
    let mut apns = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&apns.director_toml(secrets.path())).await;
    sub(&d, "c1", "t", &token("a1", 1)).await;
    apns.answer(&[
        (429, "TooManyRequests", Some("1")),
        (503, "ServiceUnavailable", None),
        (500, "InternalServerError", None),
    ]);
    let t0 = tokio::time::Instant::now();
    d.notify(json!({"topic": "t"})).await;
    let p = apns.next().await;
    assert!(p.at - t0 >= Duration::from_secs(1), "Retry-After honoured");
    assert_eq!(apns.requests(), 4);
    apns.answer(&[(400, "BadCollapseId", None)]);
    d.notify(json!({"topic": "t"})).await;
    eventually("rejected counted", || async { count(&d.metrics().await, "rejected") == 1.0 }).await;
    apns.assert_none(300).await;
    let m = d.metrics().await;
    assert_eq!((count(&m, "retry"), count(&m, "sent")), (3.0, 1.0), "{m}");
    assert_eq!(d.running.state.service.index().len(), 1);
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_once() {
    let mut apns = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&apns.director_toml(secrets.path())).await;
    sub(&d, "c1", "t", &token("a1", 1)).await;
    d.notify(json!({"topic": "t", "sync_token": "1"})).await;
    apns.next().await;
    apns.expire_provider_token();
    d.notify(json!({"topic": "t", "sync_token": "2"})).await;
    assert_eq!(apns.next().await.payload["sync_token"], "2");
    assert_eq!(apns.requests(), 3, "refused once, then accepted with a new token");
    let m = d.metrics().await;
    assert_eq!(count(&m, "retry"), 0.0, "{m}");
}

#[tokio::test]
async fn alert_pushes_use_priority_10_and_an_alert() {
    let mut apns = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&format!(
        "{}push_type = \"alert\"\nalert_body = \"Calendar changed\"\n",
        apns.director_toml(secrets.path())
    ))
    .await;
    sub(&d, "c1", "t", &token("a1", 1)).await;
    d.notify(json!({"topic": "t"})).await;
    let p = apns.next().await;
    assert_eq!((p.header("apns-push-type"), p.header("apns-priority")), (Some("alert"), Some("10")));
    assert_eq!(p.payload["aps"]["alert"]["body"], "Calendar changed");
    let (s, b) = sub(&d, "c2", "t", "not-hex").await;
    assert_eq!((s, b["field"].as_str()), (400, Some("push_services.apns.device_token")), "{b}");
}

#[tokio::test]
async fn the_fake_refuses_a_provider_token_signed_with_another_key() {
    let apns = FakeApns::start().await;
    let other = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let toml = apns.director_toml(secrets.path());
    std::fs::write(secrets.path().join("AuthKey.p8"), &other.p8).unwrap();
    let d = start(&toml).await;
    sub(&d, "c1", "t", &token("a1", 1)).await;
    d.notify(json!({"topic": "t"})).await;
    eventually("rejected", || async { count(&d.metrics().await, "rejected") == 1.0 }).await;
    assert!(apns.rejections().iter().any(|r| r.starts_with("InvalidProviderToken")), "{:?}", apns.rejections());
    assert_eq!(d.running.state.service.index().len(), 1, "a credentials problem is not the device's fault");
}
