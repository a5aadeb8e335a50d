//! Issue 9, item 1 (a cross-user leak) and item 7 (4xx passed on), kept as regression tests.
//!
//! The attack: bob sent `X-Script-Name: /alice/calendar` with a PROPFIND of `/`; Radicale took it
//! as its base path and answered with `/alice/calendar/` hrefs, the gateway computed their topic,
//! and with the topic alone the Director let bob subscribe to alice's changes.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::*;

const TOPIC_PROPFIND: &str =
    r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><P:topic/></prop></propfind>"#;

/// Every header an attacker could use to move paths or claim an identity upstream.
const SPOOFED: &[(&str, &str)] = &[
    ("X-Script-Name", "/alice/calendar"),
    ("X-Forwarded-Prefix", "/alice/calendar"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "gopher"),
    ("X-Forwarded-User", "alice"),
    ("Forwarded", "for=10.0.0.1;host=evil.example"),
    ("X-Remote-User", "alice"),
    ("Remote-User", "alice"),
    ("X-Real-IP", "10.0.0.1"),
    ("X-Original-URL", "/alice/calendar/"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-Auth-Request-User", "alice"),
];

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// An upstream that records the headers it gets and answers every PROPFIND as a server that
/// trusted them would: with hrefs outside the requested path (`/alice/calendar/`).
async fn recording_upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(headers);
            let body = r#"<?xml version="1.0" encoding="utf-8"?>
<multistatus xmlns="DAV:"><response><href>/alice/calendar/</href>
<propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat>
</response><response><href>/bob/</href>
<propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat>
</response></multistatus>"#;
            (axum::http::StatusCode::MULTI_STATUS, [("content-type", "application/xml; charset=utf-8")], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn topics_in(text: &str) -> Vec<String> {
    let root = davpush_gateway::xml::parse(text).unwrap();
    root.elements()
        .flat_map(|r| r.elements().filter(|e| e.is(davpush_gateway::xml::DAV, "propstat")))
        .filter_map(|ps| ps.child(davpush_gateway::xml::DAV, "prop")?.child(davpush_gateway::xml::PUSH, "topic"))
        .map(|t| t.text())
        .filter(|t| !t.is_empty())
        .collect()
}

#[tokio::test]
async fn issue_9_routing_and_identity_headers_of_clients_never_reach_the_upstream() {
    let (upstream, seen) = recording_upstream().await;
    let Some(s) = stack_configured(Some(&upstream), "", |raw| {
        raw.upstream_headers.insert("X-Forwarded-Proto".into(), "https".into());
    })
    .await
    else {
        return;
    };
    let mut headers = SPOOFED.to_vec();
    headers.extend([("Depth", "1"), ("Content-Type", "application/xml")]);
    let (status, _, text) = s.dav("PROPFIND", "/bob/", "bob", &headers, TOPIC_PROPFIND).await;
    assert_eq!(status, 207, "{text}");
    let (_, _, _) = s.dav("PUT", "/bob/x.ics", "bob", SPOOFED, "x").await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "the upstream was asked");
    for h in &seen {
        for (name, _) in SPOOFED {
            if *name == "X-Forwarded-Proto" {
                continue;
            }
            assert!(h.get(*name).is_none(), "{name} reached the upstream: {h:?}");
        }
        // The gateway's own, configured value, not the client's `gopher`.
        assert_eq!(h.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["https"], "{h:?}");
        assert!(h.get("authorization").is_some(), "credentials still go to the upstream");
    }
    // Topics only for the requested path and below: `/bob/`, never `/alice/calendar/`.
    let alice = davpush_gateway::topic::TopicKey::load_or_create(&s.data.path().join("topic-secret"))
        .unwrap()
        .0
        .topic("/alice/calendar/")
        .unwrap();
    let topics = topics_in(&text);
    assert_eq!(topics.len(), 1, "{text}");
    assert!(!topics.contains(&alice), "a topic of a collection outside the request: {text}");
}

#[tokio::test]
async fn issue_9_bob_gets_neither_alices_topic_nor_a_subscription_to_it() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "calendar").await;
    let alice_topic = s.topic("alice", &cal).await;
    s.mkcalendar("bob", "calendar").await;

    // The request of the report, verbatim: no topic of alice's calendar comes back.
    let (status, _, text) = s
        .dav(
            "PROPFIND",
            "/",
            "bob",
            &[("Depth", "0"), ("X-Script-Name", "/alice/calendar"), ("Content-Type", "application/xml")],
            TOPIC_PROPFIND,
        )
        .await;
    assert!(status == 207 || status == 403, "{status} {text}");
    assert!(!text.contains(&alice_topic), "{text}");

    // Nor a grant for it: the upstream does not let bob read alice's calendar.
    assert_eq!(s.grant("bob", &cal).await, None);
    let bobs_grant = s.grant("bob", "/bob/calendar/").await.expect("bob may read his own calendar");

    // Suppose bob learnt the topic anyway (a topic is public): the Director still refuses him,
    // with the shared subscription token, over the API and the socket.
    let token = std::fs::read_to_string(s.data.path().join("subscription-token")).unwrap();
    let mut req = format!("ws://{}/ws", s.director.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = next_text(&mut ws).await;
    let conn = hello["connection_id"].as_str().unwrap().to_owned();
    for grant in [None, Some(bobs_grant.clone())] {
        let mut body = json!({"client_id": "bobs-phone", "topic": alice_topic,
                              "push_services": {"websocket": {"connection_id": conn}}});
        if let Some(g) = &grant {
            body["grant"] = json!(g);
        }
        let resp = s
            .http
            .post(format!("{}/subscribe", s.director.url()))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let b: Value = resp.json().await.unwrap();
        assert_eq!((status, b["field"].as_str()), (403, Some("grant")), "{b}");
        let mut frame = json!({"type": "subscribe", "id": "x", "topic": alice_topic});
        if let Some(g) = &grant {
            frame["grant"] = json!(g);
        }
        ws.send(Message::Text(frame.to_string().into())).await.unwrap();
        assert_eq!(next_text(&mut ws).await["type"], "error");
    }
    // Alice's grant from the gateway does subscribe her, and she gets her changes.
    let grant = s.grant("alice", &cal).await.expect("alice may read her calendar");
    ws.send(Message::Text(json!({"type": "subscribe", "topic": alice_topic, "grant": grant}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "subscribed");
    assert_eq!(s.put_event("alice", &format!("{cal}e.ics"), "e", "E", &[]).await, 201);
    assert_eq!(next_notify(&mut ws).await["topic"], alice_topic.as_str());
}

#[tokio::test]
async fn issue_9_in_webdav_mode_bobs_own_login_does_not_subscribe_him_to_alice() {
    let Some(s) = stack("[subscription]\nauth = \"webdav\"\nwebdav_url = \"{radicale}\"\n").await else { return };
    let cal = s.mkcalendar("alice", "calendar").await;
    let alice_topic = s.topic("alice", &cal).await;
    let mut req = format!("ws://{}/ws", s.director.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", basic("bob").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("bob's login opens a socket");
    next_text(&mut ws).await;
    ws.send(Message::Text(json!({"type": "subscribe", "topic": alice_topic}).to_string().into())).await.unwrap();
    let answer = next_text(&mut ws).await;
    assert_eq!(
        (answer["type"].as_str(), answer["error"].as_str()),
        (Some("error"), Some("grant_required")),
        "{answer}"
    );
}

#[tokio::test]
async fn issue_9_push_register_on_a_path_the_upstream_refuses_passes_its_4xx_on() {
    let Some(s) = stack("").await else { return };
    s.mkcalendar("alice", "calendar").await;
    let path = "/alice/calendar/%00";
    // What Radicale itself answers for that path.
    let direct = s
        .http
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            format!("{}{}", s.radicale.url.trim_end_matches('/'), path),
        )
        .header("Authorization", basic("alice"))
        .header("Depth", "0")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert!((400..500).contains(&direct) && direct != 401 && direct != 403 && direct != 404, "{direct}");
    let body = r#"<push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription>
<push-resource>https://push.example.net/x</push-resource>
<subscription-public-key type="p256dh">BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4</subscription-public-key>
<auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret></web-push-subscription></subscription></push-register>"#;
    let (status, _, text) = s.dav("POST", path, "alice", &[("Content-Type", "application/xml")], body).await;
    assert_eq!(status, direct, "{text}");
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("no frame in 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn issue_9_a_gateways_users_are_counted_one_by_one() {
    // The gateway registers everybody with one subscription token; its grants name the user, so
    // `max_per_token` limits each user, not the gateway as a whole.
    let Some(s) = stack("[subscription]\nmax_per_token = 1\n").await else { return };
    let register = |endpoint: String| {
        format!(
            r#"<push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription>
<push-resource>{endpoint}</push-resource>
<subscription-public-key type="p256dh">BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4</subscription-public-key>
<auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret></web-push-subscription></subscription></push-register>"#
        )
    };
    let xml = [("Content-Type", "application/xml")];
    let alice = s.mkcalendar("alice", "calendar").await;
    let bob = s.mkcalendar("bob", "calendar").await;
    let (st, _, b) = s.dav("POST", &alice, "alice", &xml, &register(s.push.endpoint("alice-1"))).await;
    assert_eq!(st, 201, "{b}");
    let (st, _, b) = s.dav("POST", &bob, "bob", &xml, &register(s.push.endpoint("bob-1"))).await;
    assert_eq!(st, 201, "bob is not counted under alice's (the gateway's) token: {b}");
    let (st, _, b) = s.dav("POST", &alice, "alice", &xml, &register(s.push.endpoint("alice-2"))).await;
    assert_eq!(st, 403, "alice's second registration is over her limit: {b}");
    assert!(b.contains("push-not-available"), "{b}");
}
