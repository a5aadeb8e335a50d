#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // tests, benches and examples stop at the first failure
//! Integration tests of the FCM relay: a real relay on 127.0.0.1:0 in front of the local FCM
//! (davpush_testkit::fakes::fcm). Authentication (issued, revoked and app keys), rate limits
//! per key, address and token, the topic-only payload, metrics, and a Director → relay → FCM
//! fake end to end.

mod util;

use std::path::Path;
use std::time::Duration;

use davpush_relay::config::{RawRelayConfig, RelayConfig};
use serde_json::{Value, json};

use crate::util::*;
use davpush_testkit::fakes::fcm::FakeFcm;

const APP_KEY: &str = "davx5-app-key-0123456789";

struct Relay {
    running: davpush_relay::Running,
    key: String,
    key_id: String,
    keys_file: std::path::PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn relay(fcm: &FakeFcm, limits: &str) -> Relay {
    relay_with(fcm, "", limits).await
}

/// `server` is TOML added to `[server]`, `limits` to `[limits]`.
async fn relay_with(fcm: &FakeFcm, server: &str, limits: &str) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, &fcm.service_account).unwrap();
    let app_key = dir.path().join("app-key");
    std::fs::write(&app_key, APP_KEY).unwrap();
    let keys_file = dir.path().join("keys.json");
    let (key_id, key) = davpush_relay::keys::issue(&keys_file, "dav.example.org", davpush_proto::unix_now()).unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrust_forwarded_for = true\n{server}[fcm]\ncredentials_file = {:?}\nbase_url = {:?}\niid_url = {:?}\n\
         [keys]\nfile = {:?}\napp_key_files = [{:?}]\nreload_secs = 1\n[limits]\n{limits}",
        sa.display().to_string(),
        fcm.url(),
        fcm.url(),
        keys_file.display().to_string(),
        app_key.display().to_string()
    );
    let config = RelayConfig::from_raw(RawRelayConfig::from_toml(&toml).unwrap()).unwrap();
    let running = davpush_relay::spawn(config).await.unwrap();
    Relay { running, key, key_id, keys_file, http: reqwest::Client::new(), _dir: dir }
}

impl Relay {
    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: Value,
        from: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let mut req = self.http.post(format!("{}{path}", self.running.url())).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(ip) = from {
            req = req.header("x-forwarded-for", ip);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (status, r.json().await.unwrap_or(Value::Null), retry)
    }

    async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.running.url())).send().await.unwrap().text().await.unwrap()
    }
}

fn refused(m: &str, reason: &str) -> f64 {
    metric(m, &format!("davpush_relay_refused_total{{reason=\"{reason}\"}}"))
}

#[tokio::test]
async fn issued_revoked_and_app_keys() {
    let mut fcm = FakeFcm::start().await;
    let r = relay(&fcm, "").await;
    let push = json!({"topic": "cal-1", "token": "tok-1"});
    let (s, b, _) = r.post("/v1/push", None, push.clone(), None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")), "{b}");
    let (s, _, _) = r.post("/v1/push", Some("dpr1.0000000000.guess"), push.clone(), None).await;
    assert_eq!(s, 401);
    let (s, _, _) = r.post("/v1/push", Some("not-the-app-key-at-all"), push.clone(), None).await;
    assert_eq!(s, 401);

    let (s, b, _) = r.post("/v1/push", Some(&r.key), push.clone(), None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("delivered")), "{b}");
    let m = fcm.next().await.message;
    assert_eq!(m["token"], "tok-1");
    assert_eq!(m["data"], json!({"topic": "cal-1"}), "only the topic is forwarded");
    assert_eq!(m["android"]["priority"], "high");

    // The pseudo-public app key: per-token pushes only.
    let (s, _, _) = r.post("/v1/push", Some(APP_KEY), json!({"topic": "cal-2", "token": "tok-2"}), None).await;
    assert_eq!(s, 200);
    fcm.next().await;
    let (s, b, _) = r.post("/v1/push", Some(APP_KEY), json!({"topic": "cal-2"}), None).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")), "{b}");
    let (s, _, _) =
        r.post("/v1/membership", Some(APP_KEY), json!({"op": "add", "topic": "t", "tokens": ["tok-1"]}), None).await;
    assert_eq!(s, 403, "topic membership needs an installation key");

    // Revocation takes effect without a restart (the keys file is re-read when it changes).
    davpush_relay::keys::revoke(&r.keys_file, &r.key_id, davpush_proto::unix_now()).unwrap();
    let relay_ref = &r;
    eventually("the revoked key is refused", || async move {
        relay_ref.post("/v1/push", Some(&relay_ref.key), json!({"topic": "x", "token": "tok-9"}), None).await.1["error"]
            == "key_revoked"
    })
    .await;
    let m = r.metrics().await;
    assert!(refused(&m, "unauthorized") >= 3.0, "{m}");
    assert!(refused(&m, "revoked") >= 1.0, "{m}");
    assert_eq!(refused(&m, "forbidden"), 2.0, "{m}");
    assert_eq!(metric(&m, "davpush_relay_keys_revoked"), 1.0, "{m}");
    // Two above, plus those the polling loop sent before the keys file was re-read.
    assert!(metric(&m, "davpush_relay_forwarded_total{endpoint=\"push\",outcome=\"delivered\"}") >= 2.0, "{m}");
    assert!(!m.contains("tok-") && !m.contains(&r.key_id), "metrics carry no tokens or key ids");
}

#[tokio::test]
async fn rate_limits_per_token_key_and_address() {
    let fcm = FakeFcm::start().await;
    let r =
        relay(&fcm, "token_burst = 2\ntoken_per_minute = 1\nkey_burst = 5\nkey_per_minute = 1\nip_burst = 100\n").await;
    let p = |tok: &str| json!({"topic": "t", "token": tok});
    for _ in 0..2 {
        assert_eq!(r.post("/v1/push", Some(&r.key), p("tok-a"), Some("198.51.100.1")).await.0, 200);
    }
    let (s, b, retry) = r.post("/v1/push", Some(&r.key), p("tok-a"), Some("198.51.100.1")).await;
    assert_eq!((s, b["scope"].as_str()), (429, Some("token")), "{b}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    for t in ["tok-b", "tok-c"] {
        assert_eq!(r.post("/v1/push", Some(&r.key), p(t), Some("198.51.100.1")).await.0, 200);
    }
    // 5 key requests spent (the refused one was refused before it cost the key anything? no:
    // the key bucket is charged before the token check) — the next distinct token hits the key limit.
    let (s, b, _) = r.post("/v1/push", Some(&r.key), p("tok-d"), Some("198.51.100.1")).await;
    assert_eq!((s, b["scope"].as_str()), (429, Some("key")), "{b}");

    let r = relay(&fcm, "ip_burst = 3\nip_per_minute = 1\n").await;
    for i in 0..3 {
        assert_eq!(r.post("/v1/push", Some(&r.key), p(&format!("t{i}")), Some("203.0.113.7")).await.0, 200);
    }
    let (s, b, _) = r.post("/v1/push", Some(&r.key), p("t9"), Some("203.0.113.7")).await;
    assert_eq!((s, b["scope"].as_str()), (429, Some("address")), "{b}");
    let (s, _, _) = r.post("/v1/push", None, p("t9"), Some("203.0.113.7")).await;
    assert_eq!(s, 429, "the address limit applies before authentication (no key guessing at full speed)");
    assert_eq!(r.post("/v1/push", Some(&r.key), p("t9"), Some("203.0.113.8")).await.0, 200, "other addresses pass");
    let m = r.metrics().await;
    assert_eq!(refused(&m, "rate_limited_ip"), 2.0, "{m}");

    let r = relay(&fcm, "app_key_burst = 2\napp_key_per_minute = 1\n").await;
    for i in 0..2 {
        assert_eq!(r.post("/v1/push", Some(APP_KEY), p(&format!("a{i}")), Some("192.0.2.1")).await.0, 200);
    }
    let (s, b, _) = r.post("/v1/push", Some(APP_KEY), p("a3"), Some("192.0.2.1")).await;
    assert_eq!((s, b["scope"].as_str()), (429, Some("key")), "app-key callers are limited per address: {b}");
    assert_eq!(r.post("/v1/push", Some(APP_KEY), p("a3"), Some("192.0.2.2")).await.0, 200);
}

#[tokio::test]
async fn only_the_topic_payload_is_accepted() {
    let fcm = FakeFcm::start().await;
    let r = relay(&fcm, "").await;
    for (body, field) in [
        (json!({"topic": "t", "token": "tok", "data": {"x": "y"}}), Some("data")),
        (json!({"topic": "t", "token": "tok", "notification": {"title": "Win!"}}), Some("notification")),
        (json!({"topic": "has space", "token": "tok"}), Some("topic")),
        (json!({"topic": "t".repeat(257), "token": "tok"}), Some("topic")),
        (json!({"topic": "t", "token": "bad token"}), Some("token")),
        (json!({"token": "tok"}), None),
    ] {
        let (s, b, _) = r.post("/v1/push", Some(&r.key), body.clone(), None).await;
        assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")), "{body}: {b}");
        assert_eq!(b["field"].as_str(), field, "{body}: {b}");
    }
    let resp = r
        .http
        .post(format!("{}/v1/push", r.running.url()))
        .bearer_auth(&r.key)
        .header("content-type", "text/plain")
        .body("{\"topic\":\"t\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let (s, b, _) = r.post("/v1/push", Some(&r.key), json!({"topic": "t", "token": "x".repeat(9000)}), None).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")), "{b}");
    let tokens: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let (s, b, _) =
        r.post("/v1/membership", Some(&r.key), json!({"op": "add", "topic": "t", "tokens": tokens}), None).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("tokens")), "{b}");
    let (s, b, _) =
        r.post("/v1/membership", Some(&r.key), json!({"op": "join", "topic": "t", "tokens": ["a"]}), None).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("op")), "{b}");
    assert_eq!(fcm.send_requests(), 0, "nothing reached FCM");
    let m = r.metrics().await;
    assert!(refused(&m, "invalid_request") >= 8.0, "{m}");
    assert_eq!(refused(&m, "payload_too_large"), 1.0, "{m}");
}

fn director_toml(relay: &Relay, dir: &Path, mode: &str) -> String {
    let key_file = dir.join("relay-key");
    std::fs::write(&key_file, &relay.key).unwrap();
    format!(
        "[fcm]\nenabled = true\nmode = {mode:?}\nrelay_url = {:?}\nrelay_key_file = {:?}\nmin_backoff_ms = 100\n",
        relay.running.url(),
        key_file.display().to_string()
    )
}

#[tokio::test]
async fn a_director_delivers_through_the_relay_to_fcm() {
    let mut fcm = FakeFcm::start().await;
    let r = relay(&fcm, "").await;
    let secrets = tempfile::tempdir().unwrap();

    // Topic mode: membership and one message per topic, in the relay key's namespace.
    let d = start(&director_toml(&r, secrets.path(), "topic")).await;
    for i in 0..3 {
        let (s, _) = d
            .subscribe(json!({"client_id": format!("c{i}"), "topic": "cal-1",
                "push_services": {"fcm": {"registration_token": format!("tok-{i}")}}}))
            .await;
        assert_eq!(s, 201);
    }
    let name = davpush_delivery::fcm::topic_name(&format!("davpush-relay.{}", r.key_id), "cal-1");
    eventually("joined through the relay", || async { fcm.members(&name) == 3 }).await;
    let (_, b) = d.notify(json!({"topic": "cal-1", "sync_token": "s1"})).await;
    assert_eq!(b["services"], json!({"fcm": 3}));
    let sent = fcm.next().await;
    assert_eq!(sent.message["topic"], name.as_str());
    assert_eq!(sent.message["data"], json!({"topic": "cal-1"}), "the relay forwards the topic only");
    assert_eq!(sent.fanout, 3);
    fcm.assert_none(300).await;
    assert_eq!(fcm.topics(), vec![name.clone()]);

    // Token mode through the relay; an unregistered token ends its subscription at the Director.
    let d2 = start(&director_toml(&r, secrets.path(), "token")).await;
    d2.subscribe(json!({"client_id": "x", "topic": "t", "push_services": {"fcm": {"registration_token": "tok-live"}}}))
        .await;
    d2.subscribe(json!({"client_id": "y", "topic": "t", "push_services": {"fcm": {"registration_token": "dead-tok"}}}))
        .await;
    d2.notify(json!({"topic": "t"})).await;
    assert_eq!(fcm.next().await.message["token"], "tok-live");
    let svc = d2.running.state.service.clone();
    eventually("gone through the relay", || async { svc.index().len() == 1 }).await;
    let m = r.metrics().await;
    assert_eq!(metric(&m, "davpush_relay_forwarded_total{endpoint=\"push\",outcome=\"gone\"}"), 1.0, "{m}");
    assert!(fcm.rejections().is_empty(), "{:?}", fcm.rejections());
}

#[tokio::test]
async fn issue_9_relay_closes_half_sent_heads_and_serves_new_clients_past_the_pending_cap() {
    use davpush_testkit::sockets::{half_sent_request, idle_connections, wait_closed_by_server};
    let bound = Duration::from_secs(30);
    let mut fcm = FakeFcm::start().await;
    let r = relay_with(&fcm, "header_read_timeout_secs = 1\nmax_pending_connections = 10\n", "").await;
    let mut half = half_sent_request(r.running.addr).await;
    wait_closed_by_server(&mut half, bound).await;

    let mut idle = idle_connections(r.running.addr, 60).await;
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let resp = fresh.get(format!("{}/healthz", r.running.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = fresh
        .post(format!("{}/v1/push", r.running.url()))
        .bearer_auth(&r.key)
        .json(&json!({"topic": "cal-1", "token": "tok-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fcm.next().await.message["token"], "tok-1");
    wait_closed_by_server(&mut idle[0], bound).await;
    let m = fresh.get(format!("{}/metrics", r.running.url())).send().await.unwrap().text().await.unwrap();
    assert!(refused(&m, "header_timeout") >= 1.0, "{m}");
    assert!(refused(&m, "pending_limit") >= 50.0, "{m}");
    assert!(!m.contains(&r.key), "no key in metrics");
}
