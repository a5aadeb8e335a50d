//! The live web calendar (`/.davpush/demo/`) in headless Chromium: events another client
//! creates through the gateway appear without a reload, also after the Director restarted; and
//! the WebSocket proxy only opens for valid tickets.

use std::time::Duration;

use davpush_testkit::browser::Browser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::*;

/// The week the tests show (Monday).
pub(crate) const WEEK: &str = "2026-11-30";

fn ics(uid: &str, summary: &str, start: &str, end: &str, location: &str) -> String {
    let loc = if location.is_empty() { String::new() } else { format!("LOCATION:{location}\r\n") };
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//browser test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{summary}\r\n{loc}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

pub(crate) async fn put(s: &Stack, cal: &str, uid: &str, summary: &str, start: &str, end: &str, location: &str) {
    let (st, _, body) = s
        .dav(
            "PUT",
            &format!("{cal}{uid}.ics"),
            "alice",
            &[("Content-Type", "text/calendar; charset=utf-8")],
            &ics(uid, summary, start, end, location),
        )
        .await;
    assert!(st == 201 || st == 204, "PUT {uid}: {st} {body}");
}

pub(crate) fn shown(uid: &str) -> String {
    format!("return document.querySelector('.event[data-uid=\"{uid}\"]') !== null;")
}

/// Opens the demo page for `cal` and signs in as alice; returns when the page is subscribed.
pub(crate) async fn open_demo(b: &Browser, s: &Stack, cal: &str) {
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}&week={WEEK}", s.gateway.url())).await;
    b.wait_for("the login form", "return !document.getElementById('login').hidden;", Duration::from_secs(10)).await;
    b.eval(
        "document.getElementById('f-user').value = arguments[0];
         document.getElementById('f-password').value = arguments[1];
         document.getElementById('f-submit').click(); return true;",
        json!(["alice", "alice-password"]),
    )
    .await;
    b.wait_for(
        "the page subscribed",
        "return window.davpushDemo.subscriptions >= 1 && window.davpushDemo.state === 'live';",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn the_demo_calendar_shows_changes_by_others_live_and_after_a_director_restart() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "team").await;
    put(&s, &cal, "planning", "Sprint planning", "20261201T090000Z", "20261201T100000Z", "Room 1").await;

    open_demo(&b, &s, &cal).await;
    assert_eq!(b.eval(&shown("planning"), json!([])).await, true, "the existing event is listed");
    // Marks this page load: a reload would lose it.
    b.eval("window.__sameLoad = 'yes'; return true;", json!([])).await;

    // Another client creates an event through the gateway: it appears without a reload.
    put(&s, &cal, "review", "Design review", "20261202T140000Z", "20261202T150000Z", "").await;
    let took = b.wait_for("the new event appears", &shown("review"), Duration::from_secs(2)).await;
    eprintln!("event created by another client appeared on the page after {} ms", took.as_millis());
    // A deletion disappears as well.
    let (st, _, _) = s.dav("DELETE", &format!("{cal}planning.ics"), "alice", &[], "").await;
    assert_eq!(st, 200);
    let took = b
        .wait_for(
            "the deleted event disappears",
            &shown("planning").replace("!== null", "=== null"),
            Duration::from_secs(2),
        )
        .await;
    eprintln!("event deleted by another client disappeared after {} ms", took.as_millis());

    // The Director restarts: the page reconnects (through the gateway) and still updates.
    let s = s.restart_director().await;
    b.wait_for(
        "the page subscribed again after the restart",
        "return window.davpushDemo.subscriptions >= 2 && window.davpushDemo.state === 'live';",
        Duration::from_secs(20),
    )
    .await;
    put(&s, &cal, "retro", "Retrospective", "20261203T150000Z", "20261203T160000Z", "").await;
    let took = b.wait_for("an event after the restart appears", &shown("retro"), Duration::from_secs(2)).await;
    eprintln!("after the Director restart, a new event appeared after {} ms", took.as_millis());
    assert_eq!(b.eval("return window.__sameLoad;", json!([])).await, "yes", "the page was never reloaded");
    assert_eq!(b.eval("return window.davpushDemo.opens;", json!([])).await, 2, "one reconnect");
    b.quit().await;
}

#[tokio::test]
async fn wrong_passwords_are_refused_on_the_page() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "private").await;
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}", s.gateway.url())).await;
    b.wait_for("the login form", "return !document.getElementById('login').hidden;", Duration::from_secs(10)).await;
    b.eval(
        "document.getElementById('f-user').value = 'alice';
         document.getElementById('f-password').value = 'wrong';
         document.getElementById('f-submit').click(); return true;",
        json!([]),
    )
    .await;
    b.wait_for(
        "an error message",
        "return document.getElementById('login-error').textContent.includes('Wrong user name or password');",
        Duration::from_secs(10),
    )
    .await;
    b.quit().await;
}

/// Renders a week of events and takes a screenshot; with `DAVPUSH_WRITE_SCREENSHOT=1` it
/// regenerates `docs/demo-calendar.png` (`DAVPUSH_WRITE_SCREENSHOT=1 cargo test -p
/// davpush-gateway --test it browser::screenshot`).
#[tokio::test]
async fn screenshot_of_the_demo_calendar() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "team").await;
    let (st, _, _) = s
        .dav(
            "PROPPATCH",
            &cal,
            "alice",
            &[("Content-Type", "application/xml")],
            r#"<propertyupdate xmlns="DAV:"><set><prop><displayname>Team calendar</displayname></prop></set></propertyupdate>"#,
        )
        .await;
    assert_eq!(st, 207);
    for (uid, summary, start, end, loc) in [
        ("standup-1", "Stand-up", "20261130T083000Z", "20261130T084500Z", "Video call"),
        ("planning", "Sprint planning", "20261130T100000Z", "20261130T113000Z", "Room Ada"),
        ("lunch", "Lunch with the design team", "20261201T113000Z", "20261201T123000Z", "Canteen"),
        ("standup-2", "Stand-up", "20261202T083000Z", "20261202T084500Z", "Video call"),
        ("review", "Architecture review", "20261202T130000Z", "20261202T143000Z", "Room Grace"),
        ("dentist", "Dentist", "20261203T070000Z", "20261203T080000Z", ""),
        ("release", "Release 2.4", "20261204T090000Z", "20261204T100000Z", ""),
        ("retro", "Retrospective", "20261204T140000Z", "20261204T150000Z", "Room Ada"),
        ("hike", "Hike in the hills", "20261205T080000Z", "20261205T150000Z", "Trailhead"),
    ] {
        put(&s, &cal, uid, summary, start, end, loc).await;
    }
    open_demo(&b, &s, &cal).await;
    put(&s, &cal, "customer", "Customer call (just added)", "20261203T130000Z", "20261203T140000Z", "").await;
    b.wait_for("the new event", &shown("customer"), Duration::from_secs(2)).await;
    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real screenshot ({} bytes)", png.len());
    if std::env::var("DAVPUSH_WRITE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/demo-calendar.png");
        std::fs::write(path, png).unwrap();
    }
    b.quit().await;
}

#[tokio::test]
async fn the_websocket_proxy_opens_for_tickets_and_forwards_only_readable_collections() {
    let Some(s) = stack("").await else { return };
    let alice_cal = s.mkcalendar("alice", "mine").await;
    let bob_cal = s.mkcalendar("bob", "his").await;
    let (alice_topic, bob_topic) = (s.topic("alice", &alice_cal).await, s.topic("bob", &bob_cal).await);
    let ticket_url = format!("{}/.davpush/ticket", s.gateway.url());
    let ask = |user: &'static str, collections: Vec<String>| {
        s.http
            .post(&ticket_url)
            .header("Authorization", basic(user))
            .json(&serde_json::json!({"collections": collections}))
    };
    let r = ask("mallory", vec![]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "unknown users get no ticket");
    let r = ask("alice", vec![bob_cal.clone()]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "no ticket for a collection the user may not read");
    let r = ask("alice", vec![alice_cal.clone()]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ticket = r.json::<serde_json::Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned();

    let ws_url = |q: &str| format!("ws://{}/.davpush/ws{q}", s.gateway.addr);
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        e => panic!("{e}"),
    };
    let err = tokio_tungstenite::connect_async(ws_url("")).await.err().map(status);
    assert_eq!(err, Some(401), "no ticket, no credentials");
    let mut forged = ticket.clone();
    forged.replace_range(0..1, if forged.starts_with('A') { "B" } else { "A" });
    let err = tokio_tungstenite::connect_async(ws_url(&format!("?ticket={forged}"))).await.err().map(status);
    assert_eq!(err, Some(401), "an altered ticket");

    let mut req = ws_url(&format!("?ticket={ticket}")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "davpush.v1".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "davpush.v1");
    assert_eq!(next_frame(&mut ws).await["type"], "hello");
    // The ticket covers alice's calendar, not bob's.
    let send = |t: &str| tokio_tungstenite::tungstenite::Message::Text(t.to_owned().into());
    ws.send(send(&format!(r#"{{"type":"subscribe","id":"a","topic":"{alice_topic}"}}"#))).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "subscribed");
    ws.send(send(&format!(r#"{{"type":"subscribe","id":"b","topic":"{bob_topic}"}}"#))).await.unwrap();
    let denied = next_frame(&mut ws).await;
    // Another JSON shape the Director's parser would also take for a subscribe is not forwarded.
    ws.send(send(&format!(r#"["subscribe",null,"{bob_topic}"]"#))).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["error"], "invalid_json", "only protocol frames pass");
    assert_eq!(
        (denied["type"].as_str(), denied["error"].as_str(), denied["id"].as_str()),
        (Some("error"), Some("forbidden"), Some("b"))
    );

    // Native clients may authenticate with their credentials instead, naming each collection.
    let mut req = ws_url("").into_client_request().unwrap();
    req.headers_mut().insert("authorization", basic("bob").parse().unwrap());
    let (mut native, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(next_frame(&mut native).await["type"], "hello");
    native.send(send(&format!(r#"{{"type":"subscribe","id":"1","topic":"{bob_topic}"}}"#))).await.unwrap();
    assert_eq!(next_frame(&mut native).await["error"], "forbidden", "without `collection`");
    native
        .send(send(&format!(r#"{{"type":"subscribe","id":"2","topic":"{alice_topic}","collection":"{alice_cal}"}}"#)))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut native).await["error"], "forbidden", "bob may not read alice's calendar");
    native
        .send(send(&format!(r#"{{"type":"subscribe","id":"3","topic":"{bob_topic}","collection":"{bob_cal}"}}"#)))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut native).await["type"], "subscribed");

    // One user holds at most 16 proxied sockets (max_sockets_per_user): bob has one open.
    let mut held = Vec::new();
    for _ in 0..15 {
        let mut req = ws_url("").into_client_request().unwrap();
        req.headers_mut().insert("authorization", basic("bob").parse().unwrap());
        held.push(tokio_tungstenite::connect_async(req).await.expect("within the limit").0);
    }
    let mut req = ws_url("").into_client_request().unwrap();
    req.headers_mut().insert("authorization", basic("bob").parse().unwrap());
    assert_eq!(tokio_tungstenite::connect_async(req).await.err().map(status), Some(429));
    drop(held);
    let mut req = ws_url("").into_client_request().unwrap();
    req.headers_mut().insert("authorization", basic("alice").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok(), "other users are not affected");
}

type TestSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON, within 5 s.
async fn next_frame(ws: &mut TestSocket) -> serde_json::Value {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a frame, got {other:?}"),
    }
}
