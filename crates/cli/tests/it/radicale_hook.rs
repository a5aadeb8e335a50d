//! `davpush notify` as Radicale's storage hook: changes made directly to Radicale (not through
//! the gateway) reach WebSocket subscribers under the topic the gateway advertises.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn radicale_storage_hook_notifies_the_director() {
    let data = tempfile::tempdir().unwrap();
    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n", data.path().display().to_string());
    let raw = davpush_director::RawConfig::from_toml(&toml, &BTreeMap::new(), &Default::default()).unwrap();
    let director = davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap();
    let storage = data.path().join("radicale-collections");
    let hook = format!(
        "{} notify --data-dir {} --director {} --item %(path)s --strip-prefix {}/collection-root",
        env!("CARGO_BIN_EXE_davpush"),
        data.path().display(),
        director.url(),
        storage.display()
    );
    let storage_arg = storage.display().to_string();
    let Some(radicale) = davpush_testkit::radicale::Radicale::start(&[
        "--storage-filesystem-folder",
        &storage_arg,
        "--storage-hook",
        &hook,
    ]) else {
        return;
    };
    let (key, _) = davpush_gateway::RawGatewayConfig { data_dir: data.path().to_owned(), ..Default::default() }
        .topic_key()
        .unwrap();
    let topic = key.topic("/alice/cal/").unwrap();

    let token = std::fs::read_to_string(data.path().join("subscription-token")).unwrap();
    let mut req = format!("ws://{}/ws", director.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // A grant for the topic, as `davpush grant` prints it with the Director's key.
    // (The test harness's own DAVPUSH_* variables are not the Director's configuration.)
    let mut grant_cmd = std::process::Command::new(env!("CARGO_BIN_EXE_davpush"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")) {
        grant_cmd.env_remove(k);
    }
    let out = grant_cmd.args(["grant", "--data-dir", &data.path().display().to_string(), &topic]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let grant = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    ws.send(Message::Text(json!({"type": "subscribe", "topic": topic, "grant": grant}).to_string().into()))
        .await
        .unwrap();

    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:alice-password"));
    let http = reqwest::Client::new();
    let mk = http
        .request(reqwest::Method::from_bytes(b"MKCALENDAR").unwrap(), format!("{}alice/cal/", radicale.url))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(mk.status().as_u16(), 201);
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:h1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nSUMMARY:hook\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let put = http
        .put(format!("{}alice/cal/h1.ics", radicale.url))
        .header("Authorization", &auth)
        .header("Content-Type", "text/calendar")
        .body(ics)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no notification from the hook")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "notify" {
                assert_eq!(v["topic"], topic.as_str());
                break;
            }
        }
    }
}
