//! The WebSocket protocol: handshake, authentication, versions, frames, keep-alive, slow and
//! dead clients, shutdown.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};

use crate::util::*;

#[tokio::test]
async fn subscribe_ping_and_unsubscribe_over_the_socket() {
    let d = start("").await;
    let (mut ws, _) = d.ws().await;
    send_json(&mut ws, json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "id": "p1"}));

    send_json(&mut ws, json!({"type": "subscribe", "id": "s1", "topic": "cal-1"})).await;
    let sub = next_json(&mut ws).await;
    assert_eq!(
        (sub["type"].as_str(), sub["id"].as_str(), sub["topic"].as_str()),
        (Some("subscribed"), Some("s1"), Some("cal-1"))
    );
    assert!(sub["subscription_id"].as_str().unwrap().len() >= 22);
    assert!(sub["expires"].as_i64().unwrap() > davpush_core::unix_now());

    d.notify(json!({"topic": "cal-1", "sync_token": "7"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "notify", "topic": "cal-1", "sync_token": "7"}));

    // Push-Dont-Notify works with ids from the socket too.
    let (_, b) = d.notify(json!({"topic": "cal-1", "exclude": [sub["subscription_id"]]})).await;
    assert_eq!(b["addressed"], 0);

    send_json(&mut ws, json!({"type": "unsubscribe", "id": "u1", "topic": "cal-1"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "unsubscribed", "id": "u1", "topic": "cal-1"}));
    let (_, b) = d.notify(json!({"topic": "cal-1"})).await;
    assert_eq!(b["addressed"], 0);
}

#[tokio::test]
async fn bad_client_frames_get_error_frames_and_the_connection_stays() {
    let d = start("").await;
    let (mut ws, _) = d.ws().await;
    ws.send_text("{not json").await;
    assert_eq!(next_json(&mut ws).await["error"], "invalid_json");
    send_json(&mut ws, json!({"type": "subscribe", "topic": "t", "expire": 5})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["error"], "invalid_request");
    assert!(e["message"].as_str().unwrap().contains("expire"), "{e}");
    send_json(&mut ws, json!({"type": "subscribe", "id": "x", "topic": "a b"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "error", "id": "x", "error": "invalid_request", "message": "`topic` may only contain visible ASCII characters (no spaces or control characters)"})
    );
    send_json(&mut ws, json!({"type": "unsubscribe", "id": "y", "topic": "never"})).await;
    assert_eq!(next_json(&mut ws).await["error"], "not_found");
    ws.send_binary().await;
    assert_eq!(next_json(&mut ws).await["error"], "unsupported_frame");
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong"}));
}

trait SendRaw {
    async fn send_text(&mut self, t: &str);
    async fn send_binary(&mut self);
}

impl SendRaw for Ws {
    async fn send_text(&mut self, t: &str) {
        futures_util::SinkExt::send(self, Message::Text(t.into())).await.unwrap();
    }
    async fn send_binary(&mut self) {
        futures_util::SinkExt::send(self, Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    }
}

#[tokio::test]
async fn handshake_requires_a_token_and_accepts_it_as_query_parameter() {
    let d = start("").await;
    let err = tokio_tungstenite::connect_async(d.ws_request(None, &[])).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    // Browsers cannot set headers on a WebSocket: ?access_token= works, without a subprotocol too.
    let url = format!("ws://{}/ws?access_token={SUB_TOKEN}", d.running.addr);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let url = format!("ws://{}/ws?access_token=wrong-token-0123456789", d.running.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn unknown_protocol_versions_are_refused() {
    let d = start("").await;
    let err = tokio_tungstenite::connect_async(d.ws_request(Some(SUB_TOKEN), &["davpush.v2"])).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    // A client offering a future version and v1 gets v1.
    let (_ws, resp) =
        tokio_tungstenite::connect_async(d.ws_request(Some(SUB_TOKEN), &["davpush.v2", "davpush.v1"])).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "davpush.v1");
}

#[tokio::test]
async fn subscriptions_end_with_their_connection() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c1", "t1", &conn).await;
    send_json(&mut ws, json!({"type": "subscribe", "topic": "t2"})).await;
    next_json(&mut ws).await;
    assert_eq!(d.running.state.service.index().len(), 2);
    ws.close(None).await.unwrap();
    drop(ws);
    eventually("subscriptions removed", || async { d.running.state.service.index().is_empty() }).await;
    assert_eq!(d.running.state.hub.len(), 0);
    let (s, b) = d
        .subscribe(json!({"client_id": "c1", "topic": "t1", "push_services": {"websocket": {"connection_id": conn}}}))
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_push_service")));
    let (_, b) = d.notify(json!({"topics": ["t1", "t2"]})).await;
    assert_eq!(b["addressed"], 0);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_without_holding_up_others() {
    // Mailboxes hold 16 distinct topics. The stuck client watches 20 topics and never reads; the
    // healthy one watches 10 of them and reads everything.
    let d = start("[websocket]\nqueue_frames = 16\n").await;
    let (stuck, stuck_conn) = d.ws().await;
    let (mut healthy, healthy_conn) = d.ws().await;
    let topics: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for t in &topics {
        d.subscribe_ws("stuck", t, &stuck_conn).await;
    }
    for t in &topics[..10] {
        d.subscribe_ws("healthy", t, &healthy_conn).await;
    }
    // Once the kernel's socket buffers toward the stuck client are full, its writer blocks,
    // its pending topics pile up past 16 and the server drops it. Bounded: 2,000 batches.
    let padding = "x".repeat(500);
    let mut dropped_after = None;
    for round in 0..2000 {
        let (s, _) = d.notify(json!({"topics": topics, "sync_token": format!("{round}-{padding}")})).await;
        assert_eq!(s, 202);
        // The healthy client receives all of its 10 topics, the newest token of each.
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 10 {
            let f = next_json(&mut healthy).await;
            if f["sync_token"].as_str().unwrap().starts_with(&format!("{round}-")) {
                seen.insert(f["topic"].as_str().unwrap().to_owned());
            }
        }
        if d.running.state.hub.get(&stuck_conn).is_none_or(|c| c.is_closed()) {
            dropped_after = Some(round);
            break;
        }
    }
    assert!(dropped_after.is_some(), "the non-reading client was never dropped");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_websocket_closed_total{reason=\"too_slow\"}"), 1.0, "{m}");
    assert_eq!(d.running.state.service.index().len(), 10, "only the healthy client's subscriptions remain");
    drop(stuck);
}

#[tokio::test]
async fn silent_clients_are_dropped_after_two_ping_intervals() {
    let d = start("[websocket]\nping_interval_secs = 1\n").await;
    let (silent, silent_conn) = d.ws().await; // never polled again: never answers pings
    let (mut alive, alive_conn) = d.ws().await;
    d.subscribe_ws("silent", "t", &silent_conn).await;
    // Keep reading on the live one: tungstenite answers the server's pings while we poll.
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, alive.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
            if pings >= 4 {
                break;
            }
        }
        (pings, alive)
    });
    eventually("silent client dropped", || async {
        let m = d.metrics().await;
        metric(&m, "davpush_websocket_closed_total{reason=\"timeout\"}") == 1.0
    })
    .await;
    let (pings, _alive) = reader.await.unwrap();
    assert!(pings >= 2, "the live client saw {pings} pings");
    let hub = &d.running.state.hub;
    assert!(hub.get(&alive_conn).is_some_and(|c| !c.is_closed()), "the answering client stays");
    assert!(hub.get(&silent_conn).is_none_or(|c| c.is_closed()));
    assert!(d.running.state.service.index().is_empty());
    drop(silent);
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let d = start("").await;
    let (mut ws, _) = d.ws().await;
    let TestDirector { running, .. } = d;
    let stop = tokio::spawn(running.shutdown());
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(frame.unwrap().code, CloseCode::Away);
    drop(ws);
    tokio::time::timeout(Duration::from_secs(15), stop).await.unwrap().unwrap().unwrap();
}

/// Reads until the server's close frame (skipping data and control frames) within 10 s; `None`
/// when the connection ended without one.
async fn close_frame_of(ws: &mut Ws) -> Option<CloseFrame> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("no close frame within 10 s")
}

#[tokio::test]
async fn issue_9_a_client_close_is_answered_with_a_close_frame() {
    let d = start("").await;
    let (mut ws, _) = d.ws().await;
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
    let answer = close_frame_of(&mut ws).await.expect("the server answered with a close frame");
    assert_eq!(answer.code, CloseCode::Normal);
    // The handshake is complete: the server then ends the TCP connection, cleanly.
    assert!(ws.next().await.is_none());
    eventually("connection counted as closed by the client", || async {
        metric(&d.metrics().await, "davpush_websocket_closed_total{reason=\"client_closed\"}") == 1.0
    })
    .await;
}

#[tokio::test]
async fn issue_9_an_oversized_frame_is_closed_with_1009() {
    let d = start("").await; // websocket.max_message_bytes = 4096
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c1", "t1", &conn).await;
    ws.send(Message::Text("x".repeat(5000).into())).await.unwrap();
    let f = close_frame_of(&mut ws).await.expect("a close frame");
    assert_eq!(f.code, CloseCode::Size);
    eventually("subscriptions ended", || async { d.running.state.service.index().is_empty() }).await;
    assert_eq!(metric(&d.metrics().await, "davpush_websocket_closed_total{reason=\"too_big\"}"), 1.0);
}

#[tokio::test]
async fn issue_9_protocol_errors_are_closed_with_1002_and_bad_utf8_with_1007() {
    let d = start("").await;
    // A data frame with a reserved bit set (no extension was negotiated).
    let (mut ws, _) = d.ws().await;
    let mut frame = Frame::message(Bytes::from_static(b"{}"), OpCode::Data(OpData::Text), true);
    frame.header_mut().rsv1 = true;
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_frame_of(&mut ws).await.expect("a close frame").code, CloseCode::Protocol);
    // A continuation frame without a message to continue.
    let (mut ws, _) = d.ws().await;
    let frame = Frame::message(Bytes::from_static(b"{}"), OpCode::Data(OpData::Continue), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_frame_of(&mut ws).await.expect("a close frame").code, CloseCode::Protocol);
    // A text frame that is not UTF-8.
    let (mut ws, _) = d.ws().await;
    let frame = Frame::message(Bytes::from_static(b"{\"type\": \"\xff\"}"), OpCode::Data(OpData::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_frame_of(&mut ws).await.expect("a close frame").code, CloseCode::Invalid);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_websocket_closed_total{reason=\"protocol_error\"}"), 2.0, "{m}");
    assert_eq!(metric(&m, "davpush_websocket_closed_total{reason=\"invalid_utf8\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn issue_9_a_stalled_reader_gets_whole_frames_then_1013() {
    // The mailbox holds every topic (no overflow): only the write timeout can catch this client.
    let d = start("[websocket]\nwrite_timeout_secs = 1\nqueue_frames = 1000\n").await;
    let (mut stalled, conn) = d.ws().await;
    let topics: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    for t in &topics {
        d.subscribe_ws("stalled", t, &conn).await;
    }
    // The client reads nothing while ~100 KB batches are sent, until the server's writer has
    // given up on it (the socket buffers are full; a write waited for a whole second).
    let padding = "x".repeat(900);
    let mut round = 0;
    let (d_ref, conn_ref) = (&d, conn.as_str());
    eventually("the stalled connection is closed", || {
        round += 1;
        let body = json!({"topics": topics, "sync_token": format!("{round}-{padding}")});
        async move {
            assert_eq!(d_ref.notify(body).await.0, 202);
            d_ref.running.state.hub.get(conn_ref).is_none_or(|c| c.is_closed())
        }
    })
    .await;
    // Reading again, the client gets every frame the server had started, each whole, and then
    // the close frame: 1013 Try Again Later.
    let mut notifications = 0;
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.next().await.expect("connection ended without a close frame").expect("broken frame") {
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "notify");
                    notifications += 1;
                }
                Message::Close(f) => return f,
                _ => {}
            }
        }
    })
    .await
    .expect("no close frame within 10 s");
    assert_eq!(close.expect("a close frame").code, CloseCode::Again);
    assert!(notifications > 0);
    eventually("counted", || async {
        metric(&d.metrics().await, "davpush_websocket_closed_total{reason=\"write_timeout\"}") == 1.0
    })
    .await;
}
