//! Issue 9, item 1: a topic is public, never a capability. With the default
//! `subscription.grants = "required"` nobody subscribes to a topic without a grant that names it,
//! over the Subscription API or the WebSocket, through any push service.

use davpush_proto::GrantKeys;
use serde_json::{Value, json};

use crate::util::*;
use davpush_testkit::fake_push::FakePush;
use davpush_testkit::fakes::apns::FakeApns;
use davpush_testkit::fakes::fcm::FakeFcm;
use davpush_testkit::fakes::hms::FakeHms;

const REQUIRED: &str = "[subscription]\ngrants = \"required\"\n";

/// The keys of the Director's generated `grant-key` file (what a gateway sharing the data
/// directory signs with).
fn keys(d: &TestDirector) -> GrantKeys {
    GrantKeys::parse(&std::fs::read_to_string(d.data_dir().join("grant-key")).unwrap()).unwrap()
}

fn in_an_hour() -> i64 {
    davpush_core::unix_now() + 3600
}

/// Every way a grant can be missing or wrong, with the error code it gets.
fn bad_grants(keys: &GrantKeys, topic: &str) -> Vec<(Option<String>, &'static str)> {
    let foreign = GrantKeys::parse(&GrantKeys::generate_line()).unwrap();
    vec![
        (None, "grant_required"),
        (Some("not-a-grant".into()), "grant_invalid"),
        (Some(foreign.sign([topic], in_an_hour())), "grant_invalid"),
        (Some(keys.sign(["alices-calendar"], in_an_hour())), "grant_invalid"),
        (Some(keys.sign([topic], davpush_core::unix_now() - 1)), "grant_invalid"),
    ]
}

async fn subscribe_with(
    d: &TestDirector,
    topic: &str,
    service: &str,
    params: Value,
    grant: Option<String>,
) -> (u16, Value) {
    let mut body =
        json!({"client_id": format!("client-{service}"), "topic": topic, "push_services": {service: params}});
    if let Some(g) = grant {
        body["grant"] = json!(g);
    }
    d.subscribe(body).await
}

/// Refused without a valid grant (403, nothing stored), accepted with one.
async fn only_with_a_grant(d: &TestDirector, topic: &str, service: &str, params: Value) {
    let keys = keys(d);
    for (grant, code) in bad_grants(&keys, topic) {
        let (s, b) = subscribe_with(d, topic, service, params.clone(), grant.clone()).await;
        assert_eq!(
            (s, b["error"].as_str(), b["field"].as_str()),
            (403, Some(code), Some("grant")),
            "{service} {grant:?}: {b}"
        );
        assert!(!b.to_string().contains(grant.as_deref().unwrap_or("\u{0}")), "the grant is not echoed: {b}");
    }
    let (_, b) = d.notify(json!({"topic": topic})).await;
    assert_eq!(b["addressed"], 0, "{service}: a refused subscription is not addressed");
    let (s, b) = subscribe_with(d, topic, service, params, Some(keys.sign(["other", topic], in_an_hour()))).await;
    assert_eq!(s, 201, "{service}: {b}");
    let (_, b) = d.notify(json!({"topic": topic})).await;
    assert_eq!(b["services"][service], 1, "{service}: {b}");
}

#[tokio::test]
async fn issue_9_a_topic_alone_subscribes_nobody_over_the_api_or_the_socket() {
    let d = start(REQUIRED).await;
    let keys = keys(&d);
    let (_http_ws, conn) = d.ws().await;
    only_with_a_grant(&d, "cal-http", "websocket", json!({"connection_id": conn})).await;
    let (mut ws, _) = d.ws().await;

    for (grant, code) in bad_grants(&keys, "cal-ws") {
        let mut frame = json!({"type": "subscribe", "id": "s", "topic": "cal-ws"});
        if let Some(g) = &grant {
            frame["grant"] = json!(g);
        }
        send_json(&mut ws, frame).await;
        let answer = next_json(&mut ws).await;
        assert_eq!((answer["type"].as_str(), answer["error"].as_str()), (Some("error"), Some(code)), "{answer}");
    }
    let (_, b) = d.notify(json!({"topic": "cal-ws"})).await;
    assert_eq!(b["addressed"], 0);
    send_json(
        &mut ws,
        json!({"type": "subscribe", "id": "s", "topic": "cal-ws", "grant": keys.sign(["cal-ws"], in_an_hour())}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    d.notify(json!({"topic": "cal-ws", "sync_token": "9"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "notify", "topic": "cal-ws", "sync_token": "9"}));

    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"grant_refused\"}"), 10.0, "{m}");
    let info: Value = d.http.get(d.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["grants"], "required");
}

#[tokio::test]
async fn issue_9_every_push_service_needs_a_grant() {
    let push = FakePush::start().await;
    let d = start(&format!(
        "{REQUIRED}[web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\n",
        push.addr.port()
    ))
    .await;
    let ua = crate::webpush::ua_keys(None);
    let params = crate::webpush::web_push_params(&push.endpoint("a"), &ua, "topic-json");
    only_with_a_grant(&d, "cal-wp", "web_push", params).await;

    let fcm = FakeFcm::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let d = start(&format!("{REQUIRED}{}", fcm.director_toml(secrets.path(), "token"))).await;
    only_with_a_grant(&d, "cal-fcm", "fcm", json!({"registration_token": "dXo1:APA91bH-tok1"})).await;

    let apns = FakeApns::start().await;
    let d = start(&format!("{REQUIRED}{}", apns.director_toml(secrets.path()))).await;
    only_with_a_grant(&d, "cal-apns", "apns", json!({"device_token": "a".repeat(64)})).await;

    let hms = FakeHms::start().await;
    let d = start(&format!("{REQUIRED}{}", hms.director_toml(secrets.path(), "token", "hms-client-secret"))).await;
    only_with_a_grant(&d, "cal-hms", "hms", json!({"token": "hms-device-token-1"})).await;
}

#[tokio::test]
async fn with_grants_off_a_topic_is_enough_and_info_says_so() {
    let d = start("[subscription]\ngrants = \"off\"\n").await;
    let (_ws, conn) = d.ws().await;
    let (s, b) = subscribe_with(&d, "t", "websocket", json!({"connection_id": conn}), None).await;
    assert_eq!(s, 201, "{b}");
    let info: Value = d.http.get(d.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["grants"], "off");
}

#[tokio::test]
async fn a_grant_signed_by_pythons_standard_library_subscribes() {
    // An application server's grant, made independently of this code base (examples/grant.py:
    // Python's hmac, hashlib, base64 and json only), as docs/protocol.md §3.3 documents it.
    let Some(py) = davpush_testkit::python::python_with(&["hmac", "hashlib"]) else { return };
    let d = start(REQUIRED).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/grant.py");
    let key_file = d.data_dir().join("grant-key");
    let out = std::process::Command::new(py).args([script, key_file.to_str().unwrap(), "cal-py"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let grant = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(keys(&d).verify(Some(&grant), "cal-py", davpush_core::unix_now()).is_ok());
    let (mut ws, _) = d.ws().await;
    send_json(&mut ws, json!({"type": "subscribe", "topic": "cal-py", "grant": grant})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
}
