//! The draft's sample requests, verbatim (webdav-push-draft.txt, "Notify API" and
//! "Subscription API"), sent as raw bytes with the draft's headers.

use serde_json::Value;

use crate::util::*;

/// The draft's tokens, configured so that its samples authenticate. Its samples carry no grant
/// (the draft has none): they are accepted verbatim by a Director with `grants = "off"`.
const DRAFT_NOTIFY_TOKEN: &str = "ohb_hLi2ain!oo5d";
const DRAFT_SUB_TOKEN: &str = "ee2Ewoob#a!ingei";

async fn draft_director() -> TestDirector {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[notify]\ntokens = [{DRAFT_NOTIFY_TOKEN:?}, {NOTIFY_TOKEN:?}]\n\
         [subscription]\ntokens = [{DRAFT_SUB_TOKEN:?}, {SUB_TOKEN:?}]\ngrants = \"off\"\n",
        dir.path().display().to_string()
    );
    start_with(&toml, dir).await
}

async fn raw_post(d: &TestDirector, path: &str, token: &str, body: &'static str) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(path))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn draft_notify_sample_is_accepted_and_delivered() {
    let d = draft_director().await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("0f069e09-4486-4a1a-85ff-fdad58400b11", "f0ec984b-4b19-4652-91f2-92c6d81c3c09", &conn).await;

    let (status, body) =
        raw_post(&d, "/notify", DRAFT_NOTIFY_TOKEN, r#"{ "topic": "f0ec984b-4b19-4652-91f2-92c6d81c3c09" }"#).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["addressed"], 1);
    assert_eq!(body["services"]["websocket"], 1);
    let frame = next_json(&mut ws).await;
    assert_eq!(frame, serde_json::json!({"type": "notify", "topic": "f0ec984b-4b19-4652-91f2-92c6d81c3c09"}));
}

#[tokio::test]
async fn draft_subscription_sample_names_the_disabled_service() {
    // The draft's sample asks for FCM and UnifiedPush, neither enabled on this Director: a 400
    // that names the first one, and nothing subscribed.
    let d = draft_director().await;
    let (status, body) = raw_post(
        &d,
        "/subscribe",
        DRAFT_SUB_TOKEN,
        r#"{
  "client_id": "0f069e09-4486-4a1a-85ff-fdad58400b11",
  "topic": "f0ec984b-4b19-4652-91f2-92c6d81c3c09",
  "push_services": {
    "fcm": {
      "registration_token": "FCM_REGISTRATION_TOKEN"
    },
    "unified_push": {
      "endpoint": "https://up.example.com/endpoint"
    }
  },
  "expires": 1698165940
}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "push_service_disabled");
    assert_eq!(body["field"], "push_services.fcm");
    assert!(body["message"].as_str().unwrap().contains("`fcm`"), "{body}");
    assert!(d.running.state.service.index().is_empty());
}

#[tokio::test]
async fn draft_subscription_sample_with_a_websocket_clamps_the_past_expiry() {
    // The draft's sample shape with the one service enabled here. Its `expires` lies in 2023:
    // the Director grants its minimum instead of refusing.
    let d = draft_director().await;
    let (_ws, conn) = d.ws().await;
    let body = format!(
        r#"{{
  "client_id": "0f069e09-4486-4a1a-85ff-fdad58400b11",
  "topic": "f0ec984b-4b19-4652-91f2-92c6d81c3c09",
  "push_services": {{
    "websocket": {{
      "connection_id": "{conn}"
    }}
  }},
  "expires": 1698165940
}}"#
    );
    let resp = d
        .http
        .post(d.url("/subscribe"))
        .header("Authorization", format!("Bearer {DRAFT_SUB_TOKEN}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    let now = davpush_core::unix_now();
    let granted = body["expires"].as_i64().unwrap();
    assert!((now + 3600 - 5..=now + 3600 + 5).contains(&granted), "granted {granted}, now {now}");
}
