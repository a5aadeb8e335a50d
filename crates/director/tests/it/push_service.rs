//! The Director as an RFC 8030 push service (issue 16): a WebSocket client makes a push
//! subscription, an independent sender (Python `pywebpush`) encrypts and VAPID-signs messages
//! to its endpoint, and the client gets the ciphertext, which decrypts (Python `http_ece`) to
//! what was sent.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{Ws, assert_silent, next_json, send_json, start};

/// A Director with the push service on, its public URL being where it listens.
async fn director(extra: &str) -> crate::util::TestDirector {
    let port = davpush_testkit::free_port();
    start(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[push_service]\nenabled = true\npublic_url = \"http://127.0.0.1:{port}\"\n{extra}"
    ))
    .await
}

pub(crate) fn python() -> Option<String> {
    davpush_testkit::python::python_with(&["pywebpush", "http_ece", "py_vapid", "cryptography"])
}

pub(crate) fn oracle(py: &str, cmd: &str, stdin: &Value) -> Value {
    davpush_testkit::python::pushsvc_oracle(py, cmd, stdin)
}

/// Asks for a push subscription over `ws`; returns the `push_subscribed` frame.
pub(crate) async fn push_subscribe(ws: &mut Ws, frame: Value) -> Value {
    send_json(ws, frame).await;
    let answer = next_json(ws).await;
    assert_eq!(answer["type"], "push_subscribed", "{answer}");
    answer
}

pub(crate) async fn send(py: &str, keys: &Value, endpoint: &str, data: &str, extra: Value) -> Value {
    let mut req =
        json!({"endpoint": endpoint, "p256dh": keys["p256dh"], "auth": keys["auth"], "data": data, "ttl": 60});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    let py = py.to_owned();
    tokio::task::spawn_blocking(move || oracle(&py, "send", &req)).await.unwrap()
}

pub(crate) fn decrypt(py: &str, keys: &Value, data: &Value) -> String {
    let out = oracle(py, "decrypt", &json!({"data": data, "private": keys["private"], "auth": keys["auth"]}));
    out["plaintext"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn pywebpush_message_reaches_the_client_still_encrypted_and_decrypts() {
    let Some(py) = python() else { return };
    let d = director("").await;
    let keys = oracle(&py, "keys", &json!({}));
    let (mut ws, _) = d.ws().await;
    let sub =
        push_subscribe(&mut ws, json!({"type": "push_subscribe", "id": "p1", "vapid_key": keys["vapid_key"]})).await;
    assert_eq!(sub["id"], "p1");
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    let push_id = sub["push_id"].as_str().unwrap();
    assert_eq!(endpoint, d.url(&format!("/push/{push_id}")));
    assert!(push_id.len() >= 22, "at least 128 random bits: {push_id}");

    let plaintext = "calendar changed: plaintext-marker-7f3a";
    let sent = send(
        &py,
        &keys,
        &endpoint,
        plaintext,
        json!({"vapid_pem": keys["vapid_pem"], "topic": "cal1", "urgency": "high"}),
    )
    .await;
    assert_eq!(sent["status"], 201, "{sent}");
    assert!(sent["location"].as_str().unwrap().starts_with(&format!("{endpoint}/messages/")), "{sent}");
    assert_eq!(sent["ttl"], "60");
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["type"], "push");
    assert_eq!(frame["push_id"], push_id);
    assert_eq!((frame["topic"].as_str(), frame["urgency"].as_str()), (Some("cal1"), Some("high")));
    assert!(sent["location"].as_str().unwrap().ends_with(frame["message_id"].as_str().unwrap()));
    assert!(!frame.to_string().contains("plaintext-marker"), "the Director forwards ciphertext");
    assert_eq!(decrypt(&py, &keys, &frame["data"]), plaintext);

    // A different application server's key: refused, and nothing reaches the client.
    let other = oracle(&py, "keys", &json!({}));
    let wrong = send(&py, &keys, &endpoint, "forged", json!({"vapid_pem": other["vapid_pem"]})).await;
    assert_eq!(wrong["status"], 403, "{wrong}");
    let unsigned = send(&py, &keys, &endpoint, "unsigned", json!({})).await;
    assert_eq!(unsigned["status"], 401, "{unsigned}");
    assert_silent(&mut ws, 200).await;
}

#[tokio::test]
async fn an_offline_client_gets_what_waited_within_ttl_when_it_reattaches() {
    let Some(py) = python() else { return };
    let d = director("").await;
    let keys = oracle(&py, "keys", &json!({}));
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    drop(ws);
    // Until the Director has seen the connection go, a push may still be handed to it; the
    // first message is sent only once the socket is known to be gone.
    let eps = d.running.state.service.push_endpoints().unwrap().clone();
    let sid = sub["push_id"].as_str().unwrap().to_owned();
    crate::util::eventually("the connection is gone", || async { d.running.state.hub.is_empty() }).await;

    for (data, topic) in [("first cal1", "cal1"), ("second cal1", "cal1"), ("other", "cal2")] {
        let sent = send(&py, &keys, &endpoint, data, json!({"topic": topic})).await;
        assert_eq!(sent["status"], 201, "{sent}");
    }
    assert_eq!(eps.pending(&sid), 2, "the newer cal1 message replaced the older");
    let sent = send(&py, &keys, &endpoint, "gone at once", json!({"ttl": 0})).await;
    assert_eq!(sent["status"], 201);
    assert_eq!(sent["ttl"], "0");

    let (mut ws, _) = d.ws().await;
    let bad = json!({"type": "push_subscribe", "push_id": sub["push_id"], "secret": "not-the-secret"});
    send_json(&mut ws, bad).await;
    assert_eq!(next_json(&mut ws).await["error"], "forbidden");
    let again = json!({"type": "push_subscribe", "push_id": sub["push_id"], "secret": sub["secret"]});
    send_json(&mut ws, again).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_json(&mut ws).await);
    }
    let answer = got.iter().find(|f| f["type"] == "push_subscribed").expect("re-attached");
    assert_eq!(answer["endpoint"], endpoint.as_str());
    let plain: Vec<String> =
        got.iter().filter(|f| f["type"] == "push").map(|f| decrypt(&py, &keys, &f["data"])).collect();
    assert_eq!(plain, ["second cal1", "other"]);
    assert_silent(&mut ws, 200).await;
}

#[tokio::test]
async fn unsubscribed_endpoints_answer_410() {
    let Some(py) = python() else { return };
    let d = director("").await;
    let keys = oracle(&py, "keys", &json!({}));
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    send_json(
        &mut ws,
        json!({"type": "push_unsubscribe", "id": "u", "push_id": sub["push_id"], "secret": sub["secret"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "push_unsubscribed", "id": "u", "push_id": sub["push_id"]}));
    assert_eq!(send(&py, &keys, &endpoint, "late", json!({})).await["status"], 410);

    // The same over HTTP: DELETE with the secret.
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    let del = |secret: Option<&str>| {
        let mut r = d.http.delete(&endpoint);
        if let Some(s) = secret {
            r = r.bearer_auth(s);
        }
        r.send()
    };
    assert_eq!(del(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(del(Some("wrong")).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(del(sub["secret"].as_str()).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(send(&py, &keys, &endpoint, "late", json!({})).await["status"], 410);
    let unknown = d.url("/push/AAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(send(&py, &keys, &unknown, "x", json!({})).await["status"], 404);
}

#[tokio::test]
async fn malformed_pushes_are_refused_with_rfc8030_codes() {
    let d = director("").await;
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    let post = |body: Vec<u8>, headers: &[(&'static str, &'static str)]| {
        let mut r = d.http.post(&endpoint).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let enc = ("Content-Encoding", "aes128gcm");
    let ttl = ("TTL", "30");
    assert_eq!(post(vec![0; 4097], &[enc, ttl]).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(post(vec![0; 10], &[ttl]).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(post(vec![0; 10], &[enc]).await.unwrap().status(), StatusCode::BAD_REQUEST, "TTL is required");
    assert_eq!(post(vec![0; 10], &[enc, ttl, ("Urgency", "soon")]).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        post(vec![0; 10], &[enc, ttl, ("Topic", "not a topic!")]).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_silent(&mut ws, 100).await;
    let ok = post(vec![7; 4096], &[enc, ("TTL", "99999999999")]).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(ok.headers()["ttl"], "2419200", "lowered to push_service.max_ttl_secs");
    assert_eq!(next_json(&mut ws).await["type"], "push");
    // A push without payload needs no Content-Encoding.
    assert_eq!(post(Vec::new(), &[ttl]).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(next_json(&mut ws).await["data"], "");
}

/// Posts until refused (a fixed one-minute window may roll over once in between): returns the
/// refusal.
async fn until_refused(d: &crate::util::TestDirector, endpoint: &str, limit: usize) -> reqwest::Response {
    for _ in 0..2 * limit + 1 {
        let r = d.http.post(endpoint).header("TTL", "0").send().await.unwrap();
        if r.status() != StatusCode::CREATED {
            return r;
        }
    }
    panic!("never refused");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let d = director("per_subscription_per_minute = 3\nper_sender_per_minute = 1000").await;
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let r = until_refused(&d, sub["endpoint"].as_str().unwrap(), 3).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    // Another subscription is not affected (a new connection: this one has the pushes queued).
    let (mut ws2, _) = d.ws().await;
    let other = push_subscribe(&mut ws2, json!({"type": "push_subscribe"})).await;
    let r = d.http.post(other["endpoint"].as_str().unwrap()).header("TTL", "0").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let d = director("per_subscription_per_minute = 1000\nper_sender_per_minute = 4").await;
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let r = until_refused(&d, sub["endpoint"].as_str().unwrap(), 4).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn push_subscriptions_need_the_push_service_enabled() {
    let d = start("").await;
    let (mut ws, _) = d.ws().await;
    send_json(&mut ws, json!({"type": "push_subscribe", "id": "x"})).await;
    let answer = next_json(&mut ws).await;
    assert_eq!((answer["type"].as_str(), answer["error"].as_str()), (Some("error"), Some("not_enabled")));
    let r = d.http.post(d.url("/push/abc")).header("TTL", "0").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Posts an empty message to `endpoint` with `headers`; the status.
async fn post_from(d: &crate::util::TestDirector, endpoint: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut r = d.http.post(endpoint).header("TTL", "0");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap().status()
}

#[tokio::test]
async fn issue_16_behind_a_trusted_proxy_the_per_sender_limit_counts_the_senders_it_names() {
    let limits = "per_subscription_per_minute = 1000\nper_sender_per_minute = 2";
    let d = director(&format!("{limits}\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]")).await;
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap();
    // A fixed one-minute window may roll over in between: count until refused.
    let dr = &d;
    let refused_after = |sender: &'static str| async move {
        let xff = [("X-Forwarded-For", sender)];
        for n in 0..5 {
            if post_from(dr, endpoint, &xff).await == StatusCode::TOO_MANY_REQUESTS {
                return n;
            }
        }
        panic!("{sender} was never refused");
    };
    assert!(refused_after("198.51.100.1").await >= 2);
    // Another sender behind the same proxy has a window of its own; what a sender writes
    // left of the proxies' entries is not believed.
    assert_eq!(post_from(&d, endpoint, &[("X-Forwarded-For", "198.51.100.2")]).await, StatusCode::CREATED);
    let forged = [("X-Forwarded-For", "203.0.113.7, 198.51.100.1, 10.1.2.3")];
    assert_eq!(post_from(&d, endpoint, &forged).await, StatusCode::TOO_MANY_REQUESTS, "198.51.100.1 again");
    let rfc7239 = [("Forwarded", "for=\"[2001:db8::5]:4711\";proto=https")];
    assert_eq!(post_from(&d, endpoint, &rfc7239).await, StatusCode::CREATED);

    // Without trusted proxies the peer is the sender, whatever it claims.
    let d = director(limits).await;
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap();
    let mut statuses = Vec::new();
    for n in 0..5 {
        let xff = format!("198.51.100.{n}");
        statuses.push(post_from(&d, endpoint, &[("X-Forwarded-For", &xff)]).await);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[tokio::test]
async fn issue_16_a_verified_vapid_key_is_the_sender_for_the_per_sender_limit() {
    let Some(py) = python() else { return };
    let d = director("per_subscription_per_minute = 1000\nper_sender_per_minute = 2").await;
    let keys = oracle(&py, "keys", &json!({}));
    let (mut ws, _) = d.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap();
    // Two application servers on one address (the test's): each signs with a key of its own,
    // and each gets its own window; the unsigned sender counts against the address.
    let other = oracle(&py, "keys", &json!({}));
    let mut refused = Vec::new();
    for sender in [&keys, &other] {
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let extra = json!({"vapid_pem": sender["vapid_pem"], "ttl": 0});
            statuses.push(send(&py, &keys, endpoint, "x", extra).await["status"].as_u64().unwrap());
        }
        refused.push(statuses);
    }
    // (A window may roll over in between; it then only lets more through.)
    assert_eq!(refused, [[201, 201], [201, 201]], "two keys, two windows");
    let mut unsigned = Vec::new();
    for _ in 0..5 {
        unsigned.push(send(&py, &keys, endpoint, "x", json!({"ttl": 0})).await["status"].as_u64().unwrap());
    }
    assert!(unsigned.contains(&429), "{unsigned:?}");
}
