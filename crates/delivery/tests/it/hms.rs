//! Huawei Push Kit (`HmsSender`) against the local HMS: client credentials, the message it
//! sends, the outcome of each business code, token renewal, and topic membership.

use davpush_delivery::hms::{self, ClientSecret, HmsSender, HmsSettings};
use davpush_delivery::membership::{MembershipApi, Op, TokenResult};
use davpush_delivery::{Deliver, Outcome};
use davpush_testkit::fakes::hms::{APP_ID, FakeHms, SECRET};
use serde_json::{Value, json};

use crate::util::*;

fn sender(fake: &FakeHms, secret: &str) -> HmsSender {
    let settings = HmsSettings {
        app_id: APP_ID.into(),
        client_id: APP_ID.into(),
        base_url: fake.url(),
        token_url: format!("{}/oauth2/v3/token", fake.url()),
        ..Default::default()
    };
    HmsSender::new(ClientSecret::new(secret.into()), &settings).unwrap()
}

fn token_sub(token: &str) -> davpush_core::Subscription {
    sub("cal-1", hms::parse_params(&json!({"token": token})).unwrap())
}

#[tokio::test]
async fn hms_sends_a_data_message_with_an_access_token_from_client_credentials() {
    let mut fake = FakeHms::start().await;
    let s = sender(&fake, SECRET);
    assert_eq!(s.deliver(&token_sub("tok-1"), &message("cal-1", Some("7")), TTL).await, Outcome::Delivered);
    let sent = fake.next().await;
    assert_eq!(sent.message["token"], json!(["tok-1"]));
    assert_eq!(sent.message["android"], json!({"urgency": "HIGH", "ttl": "3600s"}));
    let data: Value = serde_json::from_str(sent.message["data"].as_str().expect("data is a string")).unwrap();
    assert_eq!(data, json!({"topic": "cal-1", "sync_token": "7"}));
    assert_eq!(s.deliver_topic(&message("cal-1", None), TTL).await, Outcome::Delivered);
    assert_eq!(fake.next().await.message["topic"], davpush_delivery::fcm::topic_name("davpush", "cal-1"));
    assert_eq!(fake.token_requests(), 1);
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn hms_outcome_of_each_business_code() {
    let fake = FakeHms::start().await;
    let s = sender(&fake, SECRET);
    let msg = message("cal-1", None);
    assert_eq!(class(&s.deliver(&token_sub("dead-1"), &msg, TTL).await), "gone", "80300007 all tokens invalid");
    let cases = [
        (400, "80100003", "Incorrect message structure", "rejected"),
        (400, "80300008", "The message body size exceeds the default value", "rejected"),
        (400, "80300007", "All the tokens are invalid", "gone"),
        (200, "80100000", r#"{"success":0,"failure":1,"illegal_tokens":["alive"]}"#, "gone"),
        (200, "80100000", r#"{"success":1,"failure":1,"illegal_tokens":["other"]}"#, "delivered"),
        (403, "80300002", "The current app does not have the permission", "rejected"),
        (503, "81000001", "System inner error", "retry"),
        (502, "80600003", "Request OAuth service failed", "retry"),
    ];
    for (status, code, msg_text, expected) in cases {
        fake.answer(&[(status, code, msg_text)]);
        let out = s.deliver(&token_sub("alive"), &msg, TTL).await;
        assert_eq!(class(&out), expected, "{status} {code}: {out:?}");
    }
}

#[tokio::test]
async fn hms_renews_an_expired_access_token_once_and_refused_credentials_are_rejected() {
    let mut fake = FakeHms::start().await;
    let s = sender(&fake, SECRET);
    assert_eq!(s.deliver(&token_sub("tok"), &message("t", Some("1")), TTL).await, Outcome::Delivered);
    fake.next().await;
    fake.expire_access_tokens();
    assert_eq!(s.deliver(&token_sub("tok"), &message("t", Some("2")), TTL).await, Outcome::Delivered);
    assert_eq!(fake.next().await.message["data"], json!({"topic": "t", "sync_token": "2"}).to_string());
    assert_eq!(fake.token_requests(), 2);

    let wrong = sender(&fake, "not-the-secret");
    let out = wrong.deliver(&token_sub("tok"), &message("t", None), TTL).await;
    assert_eq!(class(&out), "rejected", "{out:?}");
    let Outcome::Rejected(why) = out else { unreachable!() };
    assert!(!why.contains("not-the-secret"), "no secret in the outcome: {why}");
    assert_eq!(fake.send_requests(), 2, "nothing sent without a token");
}

#[tokio::test]
async fn hms_topic_membership_joins_leaves_and_reports_dead_tokens() {
    let fake = FakeHms::start().await;
    let s = sender(&fake, SECRET);
    let name = davpush_delivery::fcm::topic_name("davpush", "cal-1");
    let tokens = vec!["tok-a".to_owned(), "dead-b".to_owned(), "tok-c".to_owned()];
    let r = s.change(Op::Add, "cal-1", &tokens).await.unwrap();
    assert_eq!(r[0], TokenResult::Ok);
    assert!(matches!(r[1], TokenResult::Gone(_)), "{r:?}");
    assert_eq!(fake.members(&name), 2);
    s.change(Op::Remove, "cal-1", &tokens[2..]).await.unwrap();
    assert_eq!(fake.members(&name), 1);
    assert_eq!(fake.topic_requests(), 2);
}
