//! Issue 11, only the routing in memory: after a restart the index holds a durable
//! subscription without its target, and a notify reads each subscriber's target from the store
//! (Web Push, FCM and APNs, each against its local fake) and delivers to it.

use davpush_core::SubscriptionId;
use davpush_testkit::fake_push::FakePush;
use davpush_testkit::fakes::apns::FakeApns;
use davpush_testkit::fakes::fcm::FakeFcm;
use serde_json::json;

use crate::util::*;
use crate::webpush::{ua_keys, web_push_params};

#[tokio::test]
async fn issue_11_after_a_restart_a_notify_reads_each_services_target_from_the_store() {
    let mut push = FakePush::start().await;
    let mut fcm = FakeFcm::start().await;
    let mut apns = FakeApns::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let web_push = format!(
        "[web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\nmin_backoff_ms = 200\n",
        push.addr.port()
    );
    let d = start(&format!(
        "{web_push}{}{}",
        fcm.director_toml(secrets.path(), "token"),
        apns.director_toml(secrets.path())
    ))
    .await;
    let keys = ua_keys(None);
    let device = "ab".repeat(32);
    let services = [
        ("c1", json!({"web_push": web_push_params(&push.endpoint("w1"), &keys, "topic-json")})),
        ("c2", json!({"fcm": {"registration_token": "dXo1:APA91bH-tok1"}})),
        ("c3", json!({"apns": {"device_token": device}})),
    ];
    let mut ids = Vec::new();
    for (client, service) in &services {
        let (s, b) = d.subscribe(json!({"client_id": client, "topic": "t", "push_services": service})).await;
        assert_eq!(s, 201, "{b}");
        ids.push(SubscriptionId::parse(b["subscriptions"][0]["id"].as_str().unwrap(), 64).unwrap());
    }

    let d = d.restart().await;
    let svc = d.running.state.service.clone();
    for id in &ids {
        let sub = svc.index().get(id).expect("loaded at start");
        assert!(sub.target.is_stored_only(), "only the routing is held: {:?}", sub.target);
    }
    let (_, b) = d.notify(json!({"topic": "t", "sync_token": "s1"})).await;
    assert_eq!(b["services"], json!({"web_push": 1, "fcm": 1, "apns": 1}), "{b}");
    assert_eq!(push.next().await.path, "/push/w1");
    let m = fcm.next().await.message;
    assert_eq!((m["token"].as_str(), m["data"]["sync_token"].as_str()), (Some("dXo1:APA91bH-tok1"), Some("s1")));
    let p = apns.next().await;
    assert_eq!((p.device.as_str(), p.payload["sync_token"].as_str()), (device.as_str(), Some("s1")));

    // An update's new target is what the next notify reads; an unsubscribed one is not read.
    let (s, _) = d
        .subscribe(json!({"client_id": "c1", "topic": "t", "push_services":
            {"web_push": web_push_params(&push.endpoint("w2"), &keys, "topic-json")}}))
        .await;
    assert_eq!(s, 200);
    assert!(svc.index().get(&ids[0]).unwrap().target.is_stored_only(), "updated, still routing only");
    let (s, b) = d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "c2", "topic": "t"})).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = d.notify(json!({"topic": "t", "sync_token": "s2"})).await;
    assert_eq!(b["services"], json!({"web_push": 1, "apns": 1}), "{b}");
    assert_eq!(push.next().await.path, "/push/w2");
    assert_eq!(apns.next().await.payload["sync_token"], "s2");
    push.assert_none(300).await;
    let m = d.metrics().await;
    assert!(metric(&m, "davpush_target_fetch_last_microseconds") > 0.0, "{m}");
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"web_push\",outcome=\"queued\"}"), 2.0, "{m}");
}
