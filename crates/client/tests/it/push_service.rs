//! The client's Web Push receiving side against a real Director as push service (issue 16):
//! an independent sender (Python `pywebpush`) encrypts a WebDAV-Push `push-message` to the
//! client's keys and posts it to the Director's endpoint; the client decrypts what the Director
//! hands it over the WebSocket, and parses the topic and sync-token.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use davpush_client::webpush::{ReceiverKeys, parse_push_message, push_register_body};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn sender(py: &str, cmd: &str, stdin: &Value) -> Value {
    davpush_testkit::python::pushsvc_oracle(py, cmd, stdin)
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s");
        if let Message::Text(t) = m.unwrap().unwrap() {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn a_pywebpush_push_message_decrypts_with_the_clients_keys() {
    let Some(py) = davpush_testkit::python::python_with(&["pywebpush", "py_vapid"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = davpush_testkit::free_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n[subscription]\nauth = \"none\"\n\
         [push_service]\nenabled = true\npublic_url = \"http://127.0.0.1:{port}\"\n",
        dir.path().display().to_string()
    );
    let raw = davpush_director::RawConfig::from_toml(&toml, &BTreeMap::new(), &Default::default()).unwrap();
    let _director = davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    next_json(&mut ws).await; // hello
    let vapid = sender(&py, "keys", &json!({}));
    let frame = json!({"type": "push_subscribe", "vapid_key": vapid["vapid_key"]});
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    let sub = next_json(&mut ws).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();

    let keys = ReceiverKeys::generate();
    let register = push_register_body(&endpoint, &keys);
    assert!(register.contains(&endpoint));
    let message = concat!(
        r#"<?xml version="1.0" encoding="utf-8"?>"#,
        r#"<P:push-message xmlns:D="DAV:" xmlns:P="https://bitfire.at/webdav-push">"#,
        "<P:topic>cal-topic-1</P:topic><P:content-update><D:sync-token>http://dav/sync/42</D:sync-token></P:content-update>",
        "</P:push-message>"
    );
    let req = json!({"endpoint": endpoint, "p256dh": keys.p256dh(), "auth": keys.auth(), "data": message,
                     "ttl": 60, "vapid_pem": vapid["vapid_pem"]});
    let py2 = py.clone();
    let sent = tokio::task::spawn_blocking(move || sender(&py2, "send", &req)).await.unwrap();
    assert_eq!(sent["status"], 201, "{sent}");
    let push = next_json(&mut ws).await;
    assert_eq!(push["type"], "push");
    let body = URL_SAFE_NO_PAD.decode(push["data"].as_str().unwrap()).unwrap();
    let plain = keys.decrypt(&body).expect("decrypts with the client's keys");
    assert_eq!(plain, message.as_bytes());
    let m = parse_push_message(std::str::from_utf8(&plain).unwrap());
    assert_eq!((m.topic.as_deref(), m.sync_token.as_deref()), (Some("cal-topic-1"), Some("http://dav/sync/42")));
    assert!(ReceiverKeys::generate().decrypt(&body).is_err(), "only the client's keys decrypt it");
}
