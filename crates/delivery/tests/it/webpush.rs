//! RFC 8030 Web Push (`WebPushSender`) against the local push service: the request it sends
//! (RFC 8291 encryption, RFC 8292 VAPID, `TTL`, `Urgency`, `Topic`) and the outcome of each
//! status a push service answers with.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_core::ServiceKind;
use davpush_delivery::egress::EgressPolicy;
use davpush_delivery::webpush::vapid::{Vapid, VapidKey};
use davpush_delivery::webpush::{self, WebPushSender, WebPushSettings, topic_header};
use davpush_delivery::{Deliver, Outcome};
use davpush_testkit::fake_push::FakePush;
use davpush_testkit::fakes::jwt;
use serde_json::json;

use crate::util::*;

const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

struct Setup {
    sender: WebPushSender,
    policy: EgressPolicy,
    public_key: String,
    _dir: tempfile::TempDir,
}

fn setup(push: &FakePush) -> Setup {
    setup_with(push, webpush::ContentType::Xml)
}

fn setup_with(push: &FakePush, content_type: webpush::ContentType) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = VapidKey::load_or_create(&dir.path().join("vapid.pem")).unwrap();
    let public_key = key.public_key();
    let vapid = Arc::new(Vapid::new(Arc::new(key), "mailto:ops@example.org".into()));
    let policy = EgressPolicy::new(&[format!("127.0.0.1:{}", push.addr.port())], true).unwrap();
    let settings =
        WebPushSettings { urgency: davpush_delivery::webpush::Urgency::High, content_type, ..Default::default() };
    let sender = WebPushSender::new(vapid, policy.clone(), &settings).unwrap();
    Setup { sender, policy, public_key, _dir: dir }
}

fn web_push_sub(s: &Setup, endpoint: &str) -> davpush_core::Subscription {
    let params = json!({"endpoint": endpoint, "p256dh": P256DH, "auth": AUTH});
    sub("cal-1", webpush::parse_params(ServiceKind::WebPush, &params, &s.policy, false).unwrap())
}

#[tokio::test]
async fn webpush_sends_an_encrypted_message_with_vapid_ttl_urgency_and_topic() {
    let mut push = FakePush::start().await;
    let s = setup(&push);
    let out = s.sender.deliver(&web_push_sub(&s, &push.endpoint("a")), &message("cal-1", Some("7")), TTL).await;
    assert_eq!(out, Outcome::Delivered);
    let r = push.next().await;
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/push/a"));
    assert_eq!(r.header("ttl"), Some("3600"));
    assert_eq!(r.header("urgency"), Some("high"));
    assert_eq!(r.header("topic"), Some(topic_header("cal-1").as_str()));
    assert_eq!(r.header("content-encoding"), Some("aes128gcm"));
    // RFC 8188 header: 16-byte salt, record size, key id length 65, the server's public key.
    assert!(r.body.len() > 86 && r.body[20] == 65 && r.body[21] == 4, "aes128gcm header");
    // RFC 8292: `vapid t=<JWT>, k=<public key>`, the JWT verified with the public key alone.
    let auth = r.header("authorization").unwrap();
    let (t, k) = auth.strip_prefix("vapid t=").and_then(|rest| rest.split_once(", k=")).expect(auth);
    assert_eq!(k, s.public_key);
    let (header, claims) = jwt::verify(t, &ECDSA_P256_SHA256_FIXED, &B64.decode(k).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["aud"], format!("http://{}", push.addr));
    assert_eq!(claims["sub"], "mailto:ops@example.org");
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > jwt::now() && exp <= jwt::now() + 86_400, "exp within 24 h: {exp}");
}

/// Issue 12, item 11: the type of the message inside by default (`application/xml` for the
/// draft's XML, as the draft says); `web_push.content_type = "octet-stream"` for receivers that
/// want what the Node `web-push` library sends.
#[tokio::test]
async fn issue_12_webpush_content_type_is_the_messages_by_default_and_octet_stream_when_configured() {
    let mut push = FakePush::start().await;
    let xml = "application/xml; charset=\"UTF-8\"";
    for (setting, format, expected) in [
        (webpush::ContentType::Xml, "webdav-push-xml", xml),
        (webpush::ContentType::Xml, "topic-json", "application/json"),
        (webpush::ContentType::OctetStream, "webdav-push-xml", "application/octet-stream"),
        (webpush::ContentType::OctetStream, "topic-json", "application/octet-stream"),
    ] {
        let s = setup_with(&push, setting);
        let params = json!({"endpoint": push.endpoint("a"), "p256dh": P256DH, "auth": AUTH, "format": format});
        let sub = sub("cal-1", webpush::parse_params(ServiceKind::WebPush, &params, &s.policy, false).unwrap());
        let out = s.sender.deliver(&sub, &message("cal-1", Some("7")), TTL).await;
        assert_eq!(out, Outcome::Delivered);
        let r = push.next().await;
        assert_eq!(r.header("content-type"), Some(expected), "{setting:?} {format}");
        assert_eq!(r.header("content-encoding"), Some("aes128gcm"));
    }
}

#[tokio::test]
async fn webpush_outcome_of_each_status() {
    let mut push = FakePush::start().await;
    let s = setup(&push);
    let sub = web_push_sub(&s, &push.endpoint("b"));
    let cases = [
        (201, None, "delivered"),
        (202, None, "delivered"),
        (400, None, "rejected"),
        (403, None, "rejected"),
        (404, None, "gone"),
        (410, None, "gone"),
        (413, None, "rejected"),
        (429, Some("30"), "retry"),
        (500, None, "retry"),
        (503, Some("4"), "retry"),
    ];
    for (status, retry_after, expected) in cases {
        push.answer(&[(status, retry_after)]);
        let out = s.sender.deliver(&sub, &message("cal-1", None), TTL).await;
        push.next().await;
        assert_eq!(class(&out), expected, "{status}: {out:?}");
        if let Outcome::Retry { after, .. } = &out {
            assert_eq!(*after, retry_after.map(|r| Duration::from_secs(r.parse().unwrap())), "{status}");
        }
    }
}

#[tokio::test]
async fn webpush_refuses_an_endpoint_the_egress_policy_does_not_allow_without_a_request() {
    let push = FakePush::start().await;
    let s = setup(&push);
    let other = FakePush::start().await;
    // Parsed under a policy that allows the other service, delivered under one that does not.
    let lenient = EgressPolicy::new(&[format!("127.0.0.1:{}", other.addr.port())], true).unwrap();
    let params = json!({"endpoint": other.endpoint("x"), "p256dh": P256DH, "auth": AUTH});
    let target = webpush::parse_params(ServiceKind::WebPush, &params, &lenient, false).unwrap();
    let out = s.sender.deliver(&sub("cal-1", target), &message("cal-1", None), TTL).await;
    assert_eq!(class(&out), "rejected", "{out:?}");
}
