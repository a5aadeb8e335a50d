//! Registration as the WebDAV-Push spec and DAVx⁵ do it.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_testkit::python::{python_with, webpush_oracle};
use serde_json::{Value, json};

use crate::util::*;

fn ua_keys(py: &str) -> Value {
    webpush_oracle(py, "keys", &json!({})).unwrap()
}

/// Exactly what DAVx⁵ ≤ 4.5.19 sends (current-spec.md §3.1): no trigger, no content-encoding.
fn davx5_register(endpoint: &str, keys: &Value, expires: &str) -> String {
    format!(
        r#"<push-register xmlns="https://bitfire.at/webdav-push">
    <subscription><web-push-subscription>
      <push-resource>{endpoint}</push-resource>
      <subscription-public-key type="p256dh">{}</subscription-public-key>
      <auth-secret>{}</auth-secret>
    </web-push-subscription></subscription>
    <expires>{expires}</expires>
  </push-register>"#,
        keys["p256dh"].as_str().unwrap(),
        keys["auth"].as_str().unwrap()
    )
}

/// The spec's sample shape, with trigger and content-encoding.
fn spec_register(endpoint: &str, keys: &Value) -> String {
    format!(
        r#"<push-register xmlns="https://bitfire.at/webdav-push" xmlns:D="DAV:">
  <subscription><web-push-subscription>
      <push-resource>{endpoint}</push-resource>
      <content-encoding>aes128gcm</content-encoding>
      <subscription-public-key type="p256dh">{}</subscription-public-key>
      <auth-secret>{}</auth-secret>
  </web-push-subscription></subscription>
  <trigger><content-update><D:depth>infinity</D:depth></content-update>
    <property-update><D:depth>0</D:depth></property-update></trigger>
</push-register>"#,
        keys["p256dh"].as_str().unwrap(),
        keys["auth"].as_str().unwrap()
    )
}

const XML: (&str, &str) = ("Content-Type", "application/xml; charset=UTF-8");

fn decrypt(py: &str, keys: &Value, req: &davpush_testkit::fake_push::Captured, endpoint: &str) -> String {
    let checked = webpush_oracle(
        py,
        "check",
        &json!({"body": B64.encode(&req.body), "private": keys["private"], "auth": keys["auth"],
                "authorization": req.header("authorization").unwrap(), "endpoint": endpoint,
                "encoding": req.header("content-encoding")}),
    )
    .unwrap_or_else(|e| panic!("independent decryption failed: {e}"));
    checked["plaintext"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn davx5_registration_yields_an_encrypted_push_message() {
    let Some(py) = python_with(&["http_ece", "py_vapid"]) else { return };
    let Some(mut s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "personal").await;
    let topic = s.topic("alice", &cal).await;
    let keys = ua_keys(&py);
    let endpoint = s.push.endpoint("davx5");
    let in_3_days = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3 * 86_400));
    let (st, h, body) = s.dav("POST", &cal, "alice", &[XML], &davx5_register(&endpoint, &keys, &in_3_days)).await;
    assert_eq!(st, 201, "{body}");
    let location = h.get("location").unwrap().to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/.davpush/registrations/", s.gateway.url())),
        "absolute Location: {location}"
    );
    let expires = httpdate::parse_http_date(h.get("expires").unwrap().to_str().unwrap()).unwrap();
    assert!(expires >= SystemTime::now() + Duration::from_secs(3 * 86_400 - 60), "at least 3 days granted");

    // Registering the same push resource again updates (204), same registration URL.
    let (st, h2, _) = s.dav("POST", &cal, "alice", &[XML], &davx5_register(&endpoint, &keys, &in_3_days)).await;
    assert_eq!(st, 204);
    assert_eq!(h2.get("location").unwrap().to_str().unwrap(), location);

    // Someone (here: alice from another device) adds an event: DAVx⁵ gets a push-message.
    assert_eq!(s.put_event("alice", &format!("{cal}e1.ics"), "e1", "Dentist", &[]).await, 201);
    let req = s.push.next().await;
    assert_eq!(req.header("content-type"), Some("application/xml; charset=\"UTF-8\""));
    let xml = decrypt(&py, &keys, &req, &endpoint);
    let root = davpush_gateway::xml::parse(&xml).unwrap();
    assert!(root.is(davpush_gateway::xml::PUSH, "push-message"), "{xml}");
    assert_eq!(root.child(davpush_gateway::xml::PUSH, "topic").unwrap().text(), topic);
    let token = root
        .child(davpush_gateway::xml::PUSH, "content-update")
        .and_then(|c| c.child(davpush_gateway::xml::DAV, "sync-token"))
        .map(|t| t.text())
        .expect("the sync-token is in the message");
    assert_eq!(token, s.sync_token("alice", &cal).await, "the collection's new sync-token");
}

#[tokio::test]
async fn spec_shaped_registration_works_too() {
    let Some(py) = python_with(&["http_ece", "py_vapid"]) else { return };
    let Some(mut s) = stack("").await else { return };
    let book = s.mkaddressbook("alice", "contacts").await;
    let keys = ua_keys(&py);
    let endpoint = s.push.endpoint("spec");
    let (st, h, body) = s.dav("POST", &book, "alice", &[XML], &spec_register(&endpoint, &keys)).await;
    assert_eq!(st, 201, "{body}");
    assert!(h.get("expires").is_some());
    let vcf = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;;;\r\nEND:VCARD\r\n";
    let (st, _, _) = s.dav("PUT", &format!("{book}c1.vcf"), "alice", &[("Content-Type", "text/vcard")], vcf).await;
    assert_eq!(st, 201);
    let req = s.push.next().await;
    let xml = decrypt(&py, &keys, &req, &endpoint);
    assert!(xml.contains(&format!("<topic>{}</topic>", s.topic("alice", &book).await)), "{xml}");
}

#[tokio::test]
async fn refusals_carry_the_spec_preconditions() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "c").await;
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let no_trigger = spec_register("https://up.example.net/x", &keys)
        .replace("<content-update><D:depth>infinity</D:depth></content-update>", "")
        .replace("<property-update><D:depth>0</D:depth></property-update>", "");
    let (st, _, body) = s.dav("POST", &cal, "alice", &[XML], &no_trigger).await;
    assert_eq!(st, 403);
    assert!(body.contains("no-supported-trigger") && body.contains("DAV:"), "{body}");

    let no_sub =
        r#"<push-register xmlns="https://bitfire.at/webdav-push"><trigger><content-update/></trigger></push-register>"#;
    let (st, _, body) = s.dav("POST", &cal, "alice", &[XML], no_sub).await;
    assert_eq!((st, body.contains("invalid-subscription")), (403, true), "{body}");

    // An endpoint on a private address is refused by the Director's SSRF guard.
    let private = davx5_register("https://10.0.0.1/push", &keys, "Wed, 20 Dec 2023 10:03:31 GMT");
    let (st, _, body) = s.dav("POST", &cal, "alice", &[XML], &private).await;
    assert_eq!((st, body.contains("invalid-subscription")), (403, true), "{body}");
    assert!(body.contains("not a public address"), "{body}");

    // Not XML at all: a push-register it is not, so the POST goes to Radicale, never a 5xx.
    let (st, _, _) = s.dav("POST", &cal, "alice", &[XML], "<push-register").await;
    assert!((400..500).contains(&st), "{st}");
    // A registration for a collection the user may not read.
    let (st, _, body) =
        s.dav("POST", &cal, "bob", &[XML], &davx5_register("https://up.example.net/x", &keys, "x")).await;
    assert_eq!((st, body.contains("push-not-available")), (403, true), "{body}");
    // Wrong password: the upstream's challenge is passed on.
    let (st, h, _) =
        s.dav("POST", &cal, "mallory", &[XML], &davx5_register("https://up.example.net/x", &keys, "x")).await;
    assert_eq!(st, 401);
    assert!(h.get("www-authenticate").is_some());
}

#[tokio::test]
async fn a_registration_belongs_to_its_user() {
    let Some(mut s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "shared").await;
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let endpoint = s.push.endpoint("alice-phone");
    let (st, h, _) = s.dav("POST", &cal, "alice", &[XML], &davx5_register(&endpoint, &keys, "x")).await;
    assert_eq!(st, 201);
    let location = h.get("location").unwrap().to_str().unwrap().to_owned();
    let reg_path = url::Url::parse(&location).unwrap().path().to_owned();

    // Bob can neither delete it nor use it to silence alice's own notifications.
    let (st, _, _) = s.dav("DELETE", &reg_path, "bob", &[], "").await;
    assert_eq!(st, 403);
    let bob_cal = s.mkcalendar("bob", "own").await;
    let (st, _, _) = s.dav("GET", &reg_path, "alice", &[], "").await;
    assert_eq!(st, 405);
    // A forged or altered registration URL is unknown.
    let (st, _, _) = s.dav("DELETE", &format!("{reg_path}x"), "alice", &[], "").await;
    assert_eq!(st, 404);
    let _ = bob_cal;

    // Alice's change still reaches her device: bob's header named her registration on his own
    // (unrelated) write, which must not matter anyway.
    let dont = format!("\"{location}\"");
    assert_eq!(s.put_event("alice", &format!("{cal}e.ics"), "e", "x", &[]).await, 201);
    s.push.next().await;
    // Alice deletes her registration: 204, then 404, and no more pushes.
    let (st, _, _) = s.dav("DELETE", &reg_path, "alice", &[], "").await;
    assert_eq!(st, 204);
    let (st, _, _) = s.dav("DELETE", &reg_path, "alice", &[], "").await;
    assert_eq!(st, 404);
    assert_eq!(s.put_event("alice", &format!("{cal}f.ics"), "f", "y", &[("Push-Dont-Notify", &dont)]).await, 201);
    assert_eq!(s.put_event("alice", &format!("{cal}g.ics"), "g", "z", &[]).await, 201);
    s.push.assert_none(1000).await;
}

#[tokio::test]
async fn push_dont_notify_suppresses_the_registrants_own_echo() {
    let Some(mut s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "echo").await;
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let (_, h, _) = s.dav("POST", &cal, "alice", &[XML], &davx5_register(&s.push.endpoint("phone"), &keys, "x")).await;
    let location = h.get("location").unwrap().to_str().unwrap().to_owned();
    let own = format!("\"{location}\"");
    // The phone's own upload carries Push-Dont-Notify with its registration URL: no echo.
    assert_eq!(
        s.put_event("alice", &format!("{cal}a.ics"), "a", "from phone", &[("Push-Dont-Notify", &own)]).await,
        201
    );
    s.push.assert_none(1000).await;
    // `*` silences everything; other values are ignored.
    assert_eq!(s.put_event("alice", &format!("{cal}b.ics"), "b", "batch", &[("Push-Dont-Notify", "*")]).await, 201);
    s.push.assert_none(500).await;
    assert_eq!(
        s.put_event(
            "alice",
            &format!("{cal}c.ics"),
            "c",
            "x",
            &[("Push-Dont-Notify", "\"https://elsewhere.example/r/1\"")]
        )
        .await,
        201
    );
    s.push.next().await;

    // Bob cannot silence alice's device by naming her registration on a write of his own calendar
    // (there is nothing of alice's to notify there), nor does his header affect her pushes.
    let bob_cal = s.mkcalendar("bob", "b").await;
    assert_eq!(s.put_event("bob", &format!("{bob_cal}x.ics"), "x", "bob", &[("Push-Dont-Notify", &own)]).await, 201);
    s.push.assert_none(500).await;
}

#[tokio::test]
async fn a_property_only_registration_is_not_woken_by_content_changes() {
    let Some(mut s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "props").await;
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let body = spec_register(&s.push.endpoint("props"), &keys)
        .replace("<content-update><D:depth>infinity</D:depth></content-update>", "");
    let (st, _, b) = s.dav("POST", &cal, "alice", &[XML], &body).await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(s.put_event("alice", &format!("{cal}e.ics"), "e", "x", &[]).await, 201);
    s.push.assert_none(800).await;
    let pp =
        r#"<propertyupdate xmlns="DAV:"><set><prop><displayname>Renamed</displayname></prop></set></propertyupdate>"#;
    let (st, _, _) = s.dav("PROPPATCH", &cal, "alice", &[("Content-Type", "application/xml")], pp).await;
    assert_eq!(st, 207);
    s.push.next().await;
}

/// Sends a request with its path exactly as given (HTTP clients would normalise `\\` and `..`).
async fn raw_status(s: &Stack, method: &str, path: &str, user: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/xml\r\nDepth: 0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.gateway.addr,
        basic(user),
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"))
}

#[tokio::test]
async fn paths_that_could_resolve_elsewhere_upstream_are_refused() {
    let Some(s) = stack("").await else { return };
    let bob_cal = s.mkcalendar("bob", "private").await;
    s.mkcalendar("alice", "own").await;
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let register = davx5_register("https://up.example.net/x", &keys, "x");
    // Checked by the upstream as alice's collection, topic of bob's: must not be possible.
    for path in [
        format!("{bob_cal}x\\..\\..\\..\\alice\\y/.."),
        format!("{bob_cal}%2e%2e/%2e%2e/alice/own/"),
        format!("{bob_cal}../../alice/own/"),
        format!("{bob_cal}x%2f..%2f..%2falice"),
    ] {
        assert_eq!(raw_status(&s, "POST", &path, "alice", &register).await, 400, "POST {path}");
        assert_eq!(raw_status(&s, "PROPFIND", &path, "alice", "").await, 400, "PROPFIND {path}");
    }
    // A plain path still works.
    assert_eq!(raw_status(&s, "PROPFIND", "/alice/own/", "alice", "").await, 207);
}
