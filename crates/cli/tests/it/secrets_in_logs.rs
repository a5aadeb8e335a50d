//! Issue 12 (secrets in logs): `davpush serve` at `RUST_LOG=debug` writes no token, grant or
//! credential it was given (in a header, the query of `/ws`, or a subscribe frame), while its
//! request trace does log those requests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const NOTIFY: &str = "notify-token-never-logged-0123456789";
const SUBSCRIBE: &str = "subscription-token-never-logged-0123456789";

#[tokio::test]
async fn issue_12_the_debug_log_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("davpush.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[notify]\ntokens = [{NOTIFY:?}]\n\
             [subscription]\ntokens = [{SUBSCRIBE:?}]\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_davpush");
    let grant = Command::new(bin).args(["grant", "--config"]).arg(&config).arg("cal-secret").output().unwrap();
    assert!(grant.status.success(), "{}", String::from_utf8_lossy(&grant.stderr));
    let grant = String::from_utf8(grant.stdout).unwrap().trim().to_owned();

    let serve = DebugServe::start(&config);
    let addr = serve.addr.clone();

    // A browser's WebSocket: the token in the query; a subscribe with a grant.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?access_token={SUBSCRIBE}")).await.unwrap();
    next_text(&mut ws).await;
    let frame = json!({"type": "subscribe", "topic": "cal-secret", "grant": grant});
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    let answer = next_text(&mut ws).await;
    assert!(answer.contains("subscribed"), "{answer}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/notify"))
        .bearer_auth(NOTIFY)
        .json(&json!({"topic": "cal-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(next_text(&mut ws).await.contains("notify"));
    // Wrong credentials are logged as refusals, not by their value.
    let r = http.get(format!("http://{addr}/ws?access_token=wrong-{SUBSCRIBE}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    drop(ws);

    let log = serve.stop();
    assert!(log.contains("access_token=***"), "the request trace logs the requests:\n{log}");
    for (what, secret) in [("subscription token", SUBSCRIBE), ("notify token", NOTIFY), ("grant", grant.as_str())] {
        assert!(!log.contains(secret), "the {what} is in the debug log:\n{log}");
    }
    let (_, mac) = grant.split_once('.').unwrap();
    assert!(!log.contains(mac), "the grant's signature is in the debug log");
}

/// `davpush serve --config CONFIG` at `RUST_LOG=debug` with JSON logs, whose log is kept.
pub(crate) struct DebugServe {
    child: Killed,
    reader: std::thread::JoinHandle<()>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Where it listens.
    pub(crate) addr: String,
}

/// Ended whatever happens, also when an assertion fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl DebugServe {
    /// Starts it and waits until it listens.
    pub(crate) fn start(config: &std::path::Path) -> DebugServe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_davpush"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stderr = child.stderr.take().unwrap();
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if v["fields"]["message"] == "Push Director listening"
                        && let Some(addr) = v["fields"]["addr"].as_str()
                    {
                        let _ = tx.try_send(addr.to_owned());
                    }
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let child = Killed(child);
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the Director did not start");
        DebugServe { child, reader, lines, addr }
    }

    /// Stops it; its whole log.
    pub(crate) fn stop(self) -> String {
        drop(self.child);
        self.reader.join().unwrap();
        self.lines.lock().unwrap().join("\n")
    }
}

/// The next text frame (control frames skipped), within 10 s.
pub(crate) async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s");
        if let Message::Text(t) = m.expect("the socket is open").expect("a frame") {
            return t.as_str().to_owned();
        }
    }
}
