//! Test helpers: start a Director, HTTP and WebSocket clients, bounded waiting.

use std::collections::BTreeMap;
use std::time::Duration;

use davpush_director::config::{Overrides, RawConfig};
use davpush_director::{Config, Running};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const NOTIFY_TOKEN: &str = "notify-token-0123456789";
pub(crate) const SUB_TOKEN: &str = "subscribe-token-0123456789";

pub(crate) struct TestDirector {
    pub(crate) running: Running,
    pub(crate) http: reqwest::Client,
    toml: String,
    dir: tempfile::TempDir,
}

/// Starts a Director with test tokens in a fresh data directory; `extra` is TOML merged over
/// the test defaults (its keys win). The defaults turn grants off, so that tests of other parts
/// can subscribe to made-up topics; `grants.rs` tests the default, `grants = "required"`.
pub(crate) async fn start(extra: &str) -> TestDirector {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[notify]\ntokens = [{NOTIFY_TOKEN:?}]\n\
         [subscription]\ntokens = [{SUB_TOKEN:?}]\ngrants = \"off\"\n",
        dir.path().display().to_string()
    );
    let mut table: toml::Table = toml::from_str(&base).unwrap();
    let extra: toml::Table = toml::from_str(extra).unwrap();
    for (section, values) in extra {
        let target = table.entry(section).or_insert_with(|| toml::Value::Table(Default::default()));
        for (k, v) in values.as_table().unwrap() {
            target.as_table_mut().unwrap().insert(k.clone(), v.clone());
        }
    }
    start_with(&toml::to_string(&table).unwrap(), dir).await
}

pub(crate) async fn start_with(toml: &str, dir: tempfile::TempDir) -> TestDirector {
    let raw = RawConfig::from_toml(toml, &BTreeMap::new(), &Overrides::default()).unwrap();
    let config = Config::from_raw(raw).unwrap();
    let running = davpush_director::spawn(config).await.unwrap();
    TestDirector { running, http: reqwest::Client::new(), toml: toml.to_owned(), dir }
}

impl TestDirector {
    /// Stops gracefully and starts again with the same configuration and data directory.
    pub(crate) async fn restart(self) -> TestDirector {
        let TestDirector { running, toml, dir, .. } = self;
        running.shutdown().await.unwrap();
        start_with(&toml, dir).await
    }

    /// Stops gracefully; returns the configuration and the data directory.
    pub(crate) async fn stop(self) -> (String, tempfile::TempDir) {
        let TestDirector { running, toml, dir, .. } = self;
        running.shutdown().await.unwrap();
        (toml, dir)
    }

    /// The configuration it was started with.
    pub(crate) fn toml(&self) -> &str {
        &self.toml
    }

    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub(crate) async fn notify(&self, body: Value) -> (u16, Value) {
        self.post("/notify", Some(NOTIFY_TOKEN), body).await
    }

    pub(crate) async fn subscribe(&self, body: Value) -> (u16, Value) {
        self.post("/subscribe", Some(SUB_TOKEN), body).await
    }

    /// Opens a WebSocket with the subscription token; returns it and its connection id.
    pub(crate) async fn ws(&self) -> (Ws, String) {
        let req = self.ws_request(Some(SUB_TOKEN), &[davpush_proto::SUBPROTOCOL]);
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(
            resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()),
            Some(davpush_proto::SUBPROTOCOL)
        );
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["version"], 1);
        let id = hello["connection_id"].as_str().unwrap().to_owned();
        (ws, id)
    }

    pub(crate) fn ws_request(
        &self,
        token: Option<&str>,
        protocols: &[&str],
    ) -> tungstenite::handshake::client::Request {
        let url = format!("ws://{}/ws", self.running.addr);
        let mut req = url.into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if !protocols.is_empty() {
            req.headers_mut().insert("sec-websocket-protocol", protocols.join(", ").parse().unwrap());
        }
        req
    }

    /// Subscribes `conn` to `topic` through the Subscription API.
    pub(crate) async fn subscribe_ws(&self, client: &str, topic: &str, conn: &str) -> String {
        let (status, body) = self
            .subscribe(json!({
                "client_id": client,
                "topic": topic,
                "push_services": { "websocket": { "connection_id": conn } }
            }))
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
        body["subscriptions"][0]["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next text frame as JSON (control frames skipped), within 5 s.
pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    let deadline = Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("connection ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Asserts no text frame arrives within `ms`.
pub(crate) async fn assert_silent(ws: &mut Ws, ms: u64) {
    let r = tokio::time::timeout(Duration::from_millis(ms), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    if let Ok(Some(t)) = r {
        panic!("unexpected frame: {t}");
    }
}

pub(crate) async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub(crate) use davpush_testkit::eventually;

/// The value of one Prometheus series (exact line prefix match), 0 if absent.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The Python interpreter with the independent Web Push implementations (`http_ece`,
/// `py_vapid`); when they are missing the test fails, or skips if that was chosen
/// (`davpush_testkit::require`).
pub(crate) fn interop_python() -> Option<String> {
    davpush_testkit::python::python_with(&["http_ece", "py_vapid", "cryptography"])
}

/// Runs `tests/interop/webpush.py CMD` with `stdin`, returns its JSON output.
pub(crate) fn oracle(py: &str, cmd: &str, stdin: &Value) -> Result<Value, String> {
    davpush_testkit::python::webpush_oracle(py, cmd, stdin)
}
