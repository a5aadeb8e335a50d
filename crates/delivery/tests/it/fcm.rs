//! FCM HTTP v1 (`FcmSender` over `FcmClient`) against the local FCM: the OAuth assertion and
//! the message it sends, the outcome of each documented error, access-token renewal, and
//! Instance ID membership.

use std::sync::Arc;
use std::time::Duration;

use davpush_delivery::auth::topic_hash;
use davpush_delivery::fcm::{self, FcmClient, FcmSender, FcmSettings, ServiceAccount, Upstream};
use davpush_delivery::membership::{MembershipApi, Op, TokenResult};
use davpush_delivery::{Deliver, Outcome};
use davpush_testkit::fakes::fcm::{FakeFcm, fcm_error};
use serde_json::json;

use crate::util::*;

fn client(fake: &FakeFcm) -> FcmClient {
    let account = ServiceAccount::from_json(&fake.service_account, "service-account.json").unwrap();
    let settings = FcmSettings { base_url: fake.url(), iid_url: fake.url(), ..Default::default() };
    FcmClient::new(Arc::new(account), &settings).unwrap()
}

fn sender(c: FcmClient) -> FcmSender {
    FcmSender::new(Upstream::Direct(c), "davpush".into())
}

fn token_sub(token: &str) -> davpush_core::Subscription {
    sub("cal-1", fcm::parse_params(&json!({"registration_token": token})).unwrap())
}

#[tokio::test]
async fn fcm_sends_a_data_only_high_priority_message_with_the_service_accounts_token() {
    let mut fake = FakeFcm::start().await;
    let s = sender(client(&fake));
    let out = s.deliver(&token_sub("dXo1:APA91bH-tok1"), &message("cal-1", Some("http://dav/sync/7")), TTL).await;
    assert_eq!(out, Outcome::Delivered);
    let m = fake.next().await.message;
    assert_eq!(
        m,
        json!({"token": "dXo1:APA91bH-tok1", "data": {"topic": "cal-1", "sync_token": "http://dav/sync/7"},
            "android": {"priority": "high", "ttl": "3600s", "collapse_key": topic_hash("cal-1")}})
    );
    // Topic mode: one message to the FCM topic, same data.
    assert_eq!(s.deliver_topic(&message("cal-1", None), TTL).await, Outcome::Delivered);
    let m = fake.next().await.message;
    assert_eq!(m["topic"], fcm::topic_name("davpush", "cal-1"));
    assert!(m.get("token").is_none());
    assert_eq!(fake.token_requests(), 1, "one access token for both");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn fcm_outcome_of_each_documented_error() {
    let fake = FakeFcm::start().await;
    let s = sender(client(&fake));
    let msg = message("cal-1", None);
    // Errors of the token itself (the fake answers them for these token prefixes).
    for (token, expected) in [("dead-1", "gone"), ("malformed-2", "gone"), ("foreign-3", "gone")] {
        let out = s.deliver(&token_sub(token), &msg, TTL).await;
        assert_eq!(class(&out), expected, "{token}: {out:?}");
    }
    // Scripted answers (FCM's error bodies, `errorCode` in `details`).
    let cases = [
        (
            400,
            fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), "Invalid value at 'message.data'"),
            None,
            "rejected",
        ),
        (404, fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), "Requested entity was not found."), None, "gone"),
        (403, fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "SenderId mismatch"), None, "gone"),
        (401, fcm_error(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"), "APNs certificate"), None, "rejected"),
        (429, fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "Quota exceeded"), Some("7"), "retry"),
        (
            503,
            fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE"), "The service is currently unavailable."),
            None,
            "retry",
        ),
        (500, fcm_error(500, "INTERNAL", Some("INTERNAL"), "Internal error"), None, "retry"),
    ];
    for (status, body, retry_after, expected) in cases {
        fake.answer(vec![(status, body.clone(), retry_after)]);
        let out = s.deliver(&token_sub("alive"), &msg, TTL).await;
        assert_eq!(class(&out), expected, "{status} {body}: {out:?}");
        if let Outcome::Retry { after, .. } = &out {
            assert_eq!(*after, retry_after.map(|r| Duration::from_secs(r.parse().unwrap())), "{status}");
        }
    }
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn fcm_replaces_a_revoked_access_token_once_without_a_retry() {
    let mut fake = FakeFcm::start().await;
    let s = sender(client(&fake));
    assert_eq!(s.deliver(&token_sub("tok"), &message("t", Some("1")), TTL).await, Outcome::Delivered);
    fake.next().await;
    fake.revoke_access_tokens();
    assert_eq!(s.deliver(&token_sub("tok"), &message("t", Some("2")), TTL).await, Outcome::Delivered);
    assert_eq!(fake.next().await.message["data"]["sync_token"], "2");
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.rejections().len(), 1, "exactly the revoked token was refused: {:?}", fake.rejections());
}

/// Issue 10: the Director's test waited 1.9 s of real time for a 2 s token to come due; the
/// client's clock is now the test's.
#[tokio::test]
async fn issue_10_fcm_access_token_is_renewed_a_tenth_of_its_lifetime_before_expiry() {
    let mut fake = FakeFcm::start().await;
    fake.set_token_lifetime(1000);
    let clock = ManualClock::new();
    let s = sender(client(&fake).with_clock(clock.clock()));
    let send = |n: u32| {
        let (s, sub, m) = (&s, token_sub("tok"), message("t", Some(&n.to_string())));
        async move { s.deliver(&sub, &m, TTL).await }
    };
    assert_eq!(send(1).await, Outcome::Delivered);
    assert_eq!(fake.token_requests(), 1);
    clock.advance(Duration::from_secs(899));
    assert_eq!(send(2).await, Outcome::Delivered);
    assert_eq!(fake.token_requests(), 1, "still fresh 101 s before expiry");
    clock.advance(Duration::from_secs(1));
    assert_eq!(send(3).await, Outcome::Delivered);
    assert_eq!(fake.token_requests(), 2, "renewed 100 s (a tenth) before expiry");
    for n in 1..=3 {
        assert_eq!(fake.next().await.message["data"]["sync_token"], n.to_string());
    }
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn fcm_instance_id_membership_joins_leaves_and_reports_dead_tokens() {
    let fake = FakeFcm::start().await;
    let s = sender(client(&fake));
    let name = fcm::topic_name("davpush", "cal-1");
    let tokens = vec!["tok-a".to_owned(), "dead-b".to_owned(), "tok-c".to_owned()];
    let r = s.change(Op::Add, "cal-1", &tokens).await.unwrap();
    assert_eq!(r[0], TokenResult::Ok);
    assert!(matches!(r[1], TokenResult::Gone(_)), "{r:?}");
    assert_eq!(r[2], TokenResult::Ok);
    assert_eq!(fake.members(&name), 2);
    s.change(Op::Remove, "cal-1", &tokens[..1]).await.unwrap();
    assert_eq!(fake.members(&name), 1);
    assert_eq!((fake.iid_requests(), fake.token_requests()), (2, 1));
}
