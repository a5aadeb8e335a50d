//! Issue 16 (the Director as a push service): a message sent to a push endpoint by an
//! independent sender (Python `pywebpush`) reaches the client, yet neither its plaintext nor the
//! endpoint's capability (push id) nor the subscription's secret is in `davpush serve`'s log at
//! `RUST_LOG=debug` or anywhere in its data directory (SQLite store and its journal).

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::secrets_in_logs::{DebugServe, next_text};

const PLAINTEXT: &str = "plaintext-marker-never-in-the-director-3b9c";

fn sender(py: &str, cmd: &str, stdin: &Value) -> Value {
    davpush_testkit::python::pushsvc_oracle(py, cmd, stdin)
}

/// Every file under `dir`, concatenated.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn issue_16_no_plaintext_push_id_or_secret_in_the_log_or_the_store() {
    let Some(py) = davpush_testkit::python::python_with(&["pywebpush", "http_ece", "py_vapid", "cryptography"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("davpush.toml");
    let port = davpush_testkit::free_port();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n[subscription]\nauth = \"none\"\n\
             [push_service]\nenabled = true\npublic_url = \"http://127.0.0.1:{port}\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let serve = DebugServe::start(&config);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    next_text(&mut ws).await; // hello
    ws.send(Message::Text(json!({"type": "push_subscribe"}).to_string().into())).await.unwrap();
    let sub: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(sub["type"], "push_subscribed", "{sub}");
    let keys = sender(&py, "keys", &json!({}));
    let req = json!({"endpoint": sub["endpoint"], "p256dh": keys["p256dh"], "auth": keys["auth"], "data": PLAINTEXT, "ttl": 60});
    let sent = tokio::task::spawn_blocking({
        let py = py.clone();
        move || sender(&py, "send", &req)
    })
    .await
    .unwrap();
    assert_eq!(sent["status"], 201, "{sent}");
    let frame: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(frame["type"], "push");
    let plain =
        sender(&py, "decrypt", &json!({"data": frame["data"], "private": keys["private"], "auth": keys["auth"]}));
    assert_eq!(plain["plaintext"], PLAINTEXT, "the client gets the message");
    drop(ws);

    let log = serve.stop();
    assert!(log.contains("/push/***"), "the request trace logs the push:\n{log}");
    let store = all_bytes(&data);
    assert!(!store.is_empty(), "the data directory holds the store");
    for (what, needle) in [
        ("plaintext", PLAINTEXT),
        ("push id", sub["push_id"].as_str().unwrap()),
        ("secret", sub["secret"].as_str().unwrap()),
    ] {
        assert!(!log.contains(needle), "the {what} is in the debug log:\n{log}");
        assert!(!contains(&store, needle), "the {what} is in the data directory");
    }
}
