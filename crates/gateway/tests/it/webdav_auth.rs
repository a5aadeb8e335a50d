//! The draft's "same authentication as for WebDAV": a web calendar subscribes its WebSocket with
//! the login it already has for the WebDAV server.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::*;

const WEBDAV_AUTH: &str = "[subscription]\nauth = \"webdav\"\nwebdav_url = \"{radicale}\"\n";

async fn open_ws(
    s: &Stack,
    authorization: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, u16> {
    let mut req = format!("ws://{}/ws", s.director.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", authorization.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn webdav_credentials_open_websockets_and_wrong_ones_do_not() {
    let Some(s) = stack(WEBDAV_AUTH).await else { return };
    let cal = s.mkcalendar("alice", "web").await;
    let topic = s.topic("alice", &cal).await;
    let mut ws = open_ws(&s, &basic("alice")).await.expect("alice's WebDAV login opens a WebSocket");
    let grant = s.grant("alice", &cal).await.expect("the gateway grants alice her calendar");
    ws.send(Message::Text(json!({"type": "subscribe", "topic": topic, "grant": grant}).to_string().into()))
        .await
        .unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("socket ended") };
        if t.as_str().contains("subscribed") {
            break;
        }
    }
    assert_eq!(open_ws(&s, &basic("mallory")).await.err(), Some(401));
    let wrong = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:nope"));
    assert_eq!(open_ws(&s, &wrong).await.err(), Some(401));
    // The HTTP Subscription API accepts the same login (with a grant for bob's own calendar).
    let bob_cal = s.mkcalendar("bob", "web").await;
    let bob_topic = s.topic("bob", &bob_cal).await;
    let bob_grant = s.grant("bob", &bob_cal).await.expect("bob may read his calendar");
    let (_bob_ws, conn) = {
        let mut ws2 = open_ws(&s, &basic("bob")).await.unwrap();
        let Some(Ok(Message::Text(hello))) = ws2.next().await else { panic!() };
        let v: serde_json::Value = serde_json::from_str(hello.as_str()).unwrap();
        (ws2, v["connection_id"].as_str().unwrap().to_owned())
    };
    let resp = s
        .http
        .post(format!("{}/subscribe", s.director.url()))
        .header("Authorization", basic("bob"))
        .json(&json!({"client_id": "bob-web", "topic": bob_topic, "grant": bob_grant,
                      "push_services": {"websocket": {"connection_id": conn}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    // And the gateway still registers on the users' behalf with its token.
    assert_eq!(s.put_event("alice", &format!("{cal}e.ics"), "e", "x", &[]).await, 201);
    let f = next_notify(&mut ws).await;
    assert_eq!(f["topic"], topic.as_str());
}
