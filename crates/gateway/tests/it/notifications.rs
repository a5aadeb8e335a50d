//! Changes made through the gateway reach WebSocket subscribers with the right topics and
//! sync-tokens; a plain proxy for everything else.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::*;

async fn ws(s: &Stack) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let token = std::fs::read_to_string(s.data.path().join("subscription-token")).unwrap();
    let mut req = format!("ws://{}/ws", s.director.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws
}

/// Subscribes with a grant signed with the Director's key (as an application server would).
async fn subscribe(
    s: &Stack,
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    topic: &str,
) {
    use futures_util::StreamExt;
    let frame = json!({"type": "subscribe", "topic": topic, "grant": s.sign(topic)});
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await
            && t.as_str().contains("\"subscribed\"")
        {
            return;
        }
    }
}

#[tokio::test]
async fn create_change_move_delete_reach_websocket_subscribers() {
    let Some(s) = stack("").await else { return };
    let work = s.mkcalendar("alice", "work").await;
    let home = s.mkcalendar("alice", "home").await;
    let book = s.mkaddressbook("alice", "book").await;
    let (t_work, t_home, t_book) =
        (s.topic("alice", &work).await, s.topic("alice", &home).await, s.topic("alice", &book).await);
    let mut c = ws(&s).await;
    for t in [&t_work, &t_home, &t_book] {
        subscribe(&s, &mut c, t).await;
    }

    // Create.
    assert_eq!(s.put_event("alice", &format!("{work}e1.ics"), "e1", "Standup", &[]).await, 201);
    let f = next_notify(&mut c).await;
    assert_eq!((f["topic"].as_str(), f["trigger"].as_str()), (Some(t_work.as_str()), Some("content")));
    assert_eq!(f["sync_token"].as_str().unwrap(), s.sync_token("alice", &work).await);
    // Change.
    assert_eq!(s.put_event("alice", &format!("{work}e1.ics"), "e1", "Standup (moved)", &[]).await, 204);
    let f = next_notify(&mut c).await;
    assert_eq!(f["topic"], t_work.as_str());
    assert_eq!(f["sync_token"].as_str().unwrap(), s.sync_token("alice", &work).await);
    // Move to another calendar: both change.
    let dest = format!("{}{home}e1.ics", s.gateway.url());
    let (st, _, _) = s.dav("MOVE", &format!("{work}e1.ics"), "alice", &[("Destination", &dest)], "").await;
    assert_eq!(st, 201);
    let mut topics = vec![next_notify(&mut c).await, next_notify(&mut c).await]
        .into_iter()
        .map(|f| f["topic"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    topics.sort();
    let mut want = vec![t_work.clone(), t_home.clone()];
    want.sort();
    assert_eq!(topics, want);
    // Delete.
    let (st, _, _) = s.dav("DELETE", &format!("{home}e1.ics"), "alice", &[], "").await;
    assert_eq!(st, 200);
    assert_eq!(next_notify(&mut c).await["topic"], t_home.as_str());
    // A contact.
    let vcf = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Grace Hopper\r\nN:Hopper;Grace;;;\r\nEND:VCARD\r\n";
    let (st, _, _) = s.dav("PUT", &format!("{book}c1.vcf"), "alice", &[("Content-Type", "text/vcard")], vcf).await;
    assert_eq!(st, 201);
    assert_eq!(next_notify(&mut c).await["topic"], t_book.as_str());
    // A property change of the calendar: a property trigger.
    let pp =
        r#"<propertyupdate xmlns="DAV:"><set><prop><displayname>Work!</displayname></prop></set></propertyupdate>"#;
    let (st, _, _) = s.dav("PROPPATCH", &work, "alice", &[("Content-Type", "application/xml")], pp).await;
    assert_eq!(st, 207);
    let f = next_notify(&mut c).await;
    assert_eq!((f["topic"].as_str(), f["trigger"].as_str()), (Some(t_work.as_str()), Some("property")));
}

#[tokio::test]
async fn failed_writes_notify_nobody_and_reads_pass_through() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "c").await;
    let t = s.topic("alice", &cal).await;
    let mut c = ws(&s).await;
    subscribe(&s, &mut c, &t).await;
    // Bob may not write into alice's calendar: 403 from Radicale, passed on, no notification.
    assert_eq!(s.put_event("bob", &format!("{cal}x.ics"), "x", "intruder", &[]).await, 403);
    assert_eq!(s.put_event("alice", &format!("{cal}y.ics"), "y", "ok", &[]).await, 201);
    let f = next_notify(&mut c).await;
    assert_eq!(f["topic"], t.as_str(), "only the successful write was notified");
    // GET passes through with its headers.
    let (st, h, body) = s.dav("GET", &format!("{cal}y.ics"), "alice", &[], "").await;
    assert_eq!(st, 200);
    assert!(body.contains("SUMMARY:ok"));
    assert!(h.get("etag").is_some());
    // REPORT (sync-collection) passes through untouched.
    let report = r#"<sync-collection xmlns="DAV:"><sync-token/><sync-level>1</sync-level><prop><getetag/></prop></sync-collection>"#;
    let (st, _, body) = s.dav("REPORT", &cal, "alice", &[("Content-Type", "application/xml")], report).await;
    assert_eq!(st, 207);
    assert!(body.contains("y.ics"), "{body}");
}

#[tokio::test]
async fn an_unreachable_director_does_not_fail_or_delay_writes() {
    let Some(s) = stack("").await else { return };
    let cal = s.mkcalendar("alice", "c").await;
    // A second gateway in front of the same Radicale, whose Director is not there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = davpush_gateway::GatewayConfig::from_raw(davpush_gateway::RawGatewayConfig {
        listen: listener.local_addr().unwrap().to_string(),
        upstream: s.radicale.url.clone(),
        director_url: format!("http://{dead}/"),
        data_dir: s.data.path().to_owned(),
        ..Default::default()
    })
    .unwrap();
    let gw = davpush_gateway::spawn(cfg, listener).await.unwrap();
    let start = std::time::Instant::now();
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:z\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nSUMMARY:z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let resp = s
        .http
        .put(format!("{}{cal}z.ics", gw.url()))
        .header("Authorization", basic("alice"))
        .header("Content-Type", "text/calendar")
        .body(ics)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "the write waited for the Director");
    // Reads through it still work: the Director is only needed for push.
    let (st, _, _) = (
        s.http
            .get(format!("{}{cal}z.ics", gw.url()))
            .header("Authorization", basic("alice"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        (),
        (),
    );
    assert_eq!(st, 200);
}
