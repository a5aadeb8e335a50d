//! APNs (`ApnsSender`) against the local HTTP/2-over-TLS APNs: the headers, payload and
//! provider token it sends, and the outcome of each documented `reason`.

use std::sync::Arc;
use std::time::Duration;

use davpush_delivery::apns::client::ApnsKey;
use davpush_delivery::apns::{self, ApnsEnvironment, ApnsPushType, ApnsSender, ApnsSettings};
use davpush_delivery::auth::topic_hash;
use davpush_delivery::{Deliver, EngineSettings, Outcome};
use davpush_testkit::fakes::apns::{BUNDLE_ID, FakeApns, KEY_ID, TEAM_ID};
use serde_json::json;

use crate::util::*;

fn sender(fake: &FakeApns) -> ApnsSender {
    let settings = ApnsSettings {
        environment: ApnsEnvironment::Sandbox,
        base_url: Some(fake.url()),
        ca_pem: Some(fake.ca_pem.clone().into_bytes()),
        key_id: KEY_ID.into(),
        team_id: TEAM_ID.into(),
        bundle_id: BUNDLE_ID.into(),
        push_type: ApnsPushType::Background,
        priority: None,
        alert_body: String::new(),
        timeout: Duration::from_secs(30),
        engine: EngineSettings::default(),
    };
    ApnsSender::new(Arc::new(ApnsKey::from_pem(&fake.p8).unwrap()), &settings).unwrap()
}

fn device(prefix: &str) -> davpush_core::Subscription {
    let token = format!("{prefix}{}", "0".repeat(64 - prefix.len()));
    sub("cal-1", apns::parse_params(&json!({"device_token": token})).unwrap())
}

#[tokio::test]
async fn apns_sends_a_background_push_with_a_provider_token_over_one_http2_connection() {
    let mut fake = FakeApns::start().await;
    let s = sender(&fake);
    let before = davpush_core::unix_now();
    for n in 0..3 {
        let out = s.deliver(&device("a1"), &message("cal-1", Some(&n.to_string())), TTL).await;
        assert_eq!(out, Outcome::Delivered);
        let p = fake.next().await;
        assert_eq!(p.device, format!("a1{}", "0".repeat(62)));
        assert_eq!(p.header("apns-topic"), Some(BUNDLE_ID));
        assert_eq!(p.header("apns-push-type"), Some("background"));
        assert_eq!(p.header("apns-priority"), Some("5"), "background pushes must not ask for priority 10");
        assert_eq!(p.header("apns-collapse-id"), Some(topic_hash("cal-1").as_str()));
        let exp: i64 = p.header("apns-expiration").unwrap().parse().unwrap();
        assert!(
            (before + 3600..=davpush_core::unix_now() + 3600).contains(&exp),
            "expires at the end of the TTL: {exp}"
        );
        assert_eq!(p.payload, json!({"aps": {"content-available": 1}, "topic": "cal-1", "sync_token": n.to_string()}));
        assert_eq!(p.connection, 1);
    }
    assert_eq!(fake.connections(), 1);
    assert!(
        fake.rejections().is_empty(),
        "one provider token for all (else TooManyProviderTokenUpdates): {:?}",
        fake.rejections()
    );
}

#[tokio::test]
async fn apns_outcome_of_each_documented_reason() {
    let fake = FakeApns::start().await;
    let s = sender(&fake);
    let msg = message("cal-1", None);
    // The fake answers these for device tokens with these prefixes.
    for (prefix, expected) in [("dead", "gone"), ("e0e0", "gone"), ("baad", "gone"), ("f00d", "gone")] {
        let out = s.deliver(&device(prefix), &msg, TTL).await;
        assert_eq!(class(&out), expected, "{prefix}: {out:?}");
    }
    let cases = [
        (400, "BadCollapseId", None, "rejected"),
        (403, "InvalidProviderToken", None, "rejected"),
        (403, "Forbidden", None, "rejected"),
        (410, "Unregistered", None, "gone"),
        (413, "PayloadTooLarge", None, "rejected"),
        (429, "TooManyRequests", Some("9"), "retry"),
        (500, "InternalServerError", None, "retry"),
        (503, "ServiceUnavailable", Some("2"), "retry"),
    ];
    for (status, reason, retry_after, expected) in cases {
        fake.answer(&[(status, reason, retry_after)]);
        let out = s.deliver(&device("a1"), &msg, TTL).await;
        assert_eq!(class(&out), expected, "{status} {reason}: {out:?}");
        if let Outcome::Retry { after, .. } = &out {
            assert_eq!(*after, retry_after.map(|r| Duration::from_secs(r.parse().unwrap())), "{reason}");
        }
    }
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn apns_renews_an_expired_provider_token_once() {
    let mut fake = FakeApns::start().await;
    let s = sender(&fake);
    assert_eq!(s.deliver(&device("a1"), &message("t", Some("1")), TTL).await, Outcome::Delivered);
    let first = fake.next().await.header("authorization").map(str::to_owned);
    fake.expire_provider_token();
    assert_eq!(s.deliver(&device("a1"), &message("t", Some("2")), TTL).await, Outcome::Delivered);
    let p = fake.next().await;
    assert_eq!(p.payload["sync_token"], "2");
    assert_ne!(p.header("authorization").map(str::to_owned), first, "a new provider token");
    assert_eq!(fake.requests(), 3, "the refused request, then one more");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}
