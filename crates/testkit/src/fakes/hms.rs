//! A local stand-in for Huawei's OAuth client-credentials endpoint and Push Kit's v1 API
//! (`messages:send`, `topic:subscribe`, `topic:unsubscribe`). It verifies what Huawei verifies
//! (crates-and-tools guide, Part 3): the client id and secret, `Authorization: Bearer <token>`
//! of this app and unexpired, the message shape (`data` a string, `token` an array of 1–1000,
//! exactly one target, size), and answers with HMS business codes in the body.

// Handlers answer early with a full HTTP response; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The app id (OAuth client id) the fake accepts.
pub const APP_ID: &str = "104567891";
/// The app's client secret the fake accepts.
pub const SECRET: &str = "hms-client-secret-0123456789abcdef";

/// One accepted `messages:send`.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The `message` object.
    pub message: Value,
    /// How many devices it reached (tokens, or members of its topic).
    pub fanout: usize,
}

#[derive(Default)]
struct Inner {
    expires_in: AtomicU64,
    issued: Mutex<HashMap<String, Instant>>,
    token_requests: AtomicUsize,
    send_requests: AtomicUsize,
    topic_requests: AtomicUsize,
    script: Mutex<VecDeque<(u16, String, String)>>,
    topics: Mutex<HashMap<String, HashSet<String>>>,
    rejections: Mutex<Vec<String>>,
    tx: Option<mpsc::Sender<Sent>>,
}

/// The local Huawei OAuth and Push Kit.
pub struct FakeHms {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Sent>,
}

fn code(status: u16, code: &str, msg: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"code": code, "msg": msg, "requestId": "157440955549500001002006"})),
    )
        .into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn token(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-www-form-urlencoded") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": 1102, "error_description": "invalid content type"})),
        )
            .into_response();
    }
    let f = form(&body);
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": 1102, "error_description": "unsupported grant_type"})),
        )
            .into_response();
    }
    if f.get("client_id").map(String::as_str) != Some(APP_ID)
        || f.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        s.rejections.lock().unwrap().push("wrong client credentials".into());
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": 1101, "sub_error": 20109, "error_description": "invalid client_secret"})),
        )
            .into_response();
    }
    let t = format!("CF3Xl2XV6jMK{}==", super::random_token());
    let life = s.expires_in.load(Ordering::SeqCst);
    s.issued.lock().unwrap().insert(t.clone(), Instant::now() + Duration::from_secs(life));
    axum::Json(json!({"access_token": t, "expires_in": life, "token_type": "Bearer"})).into_response()
}

impl Inner {
    fn auth(&self, headers: &HeaderMap) -> Result<(), Response> {
        let t = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match t.map(|t| self.issued.lock().unwrap().get(t).copied()) {
            None => Err(code(401, "80200001", "Oauth authentication error")),
            Some(None) => Err(code(401, "80200001", "Oauth authentication error")),
            Some(Some(exp)) if exp <= Instant::now() => Err(code(401, "80200003", "Oauth Token expired.")),
            Some(Some(_)) => Ok(()),
        }
    }

    fn bad(&self, c: &str, why: &str) -> Response {
        self.rejections.lock().unwrap().push(format!("{c}: {why}"));
        code(400, c, why)
    }
}

async fn api(
    State(s): State<Arc<Inner>>,
    Path((app, op)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if app != APP_ID {
        return code(404, "80300002", "The current app does not have the permission");
    }
    if let Err(r) = s.auth(&headers) {
        s.rejections.lock().unwrap().push("auth".into());
        return r;
    }
    if !headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json")) {
        return s.bad("80100003", "Content-Type is not application/json");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else { return s.bad("80100003", "body is not JSON") };
    match op.as_str() {
        "messages:send" => send(&s, v, body.len()).await,
        "topic:subscribe" | "topic:unsubscribe" => topic(&s, &op, v),
        _ => code(404, "80100003", "unknown API"),
    }
}

async fn send(s: &Inner, v: Value, size: usize) -> Response {
    s.send_requests.fetch_add(1, Ordering::SeqCst);
    if size > 4096 {
        return s.bad("80300008", "The message body size exceeds the default value");
    }
    let m = &v["message"];
    if !m.is_object() {
        return s.bad("80100003", "message missing");
    }
    if let Some(d) = m.get("data")
        && !d.is_string()
    {
        return s.bad("80100003", "data must be a string");
    }
    let targets = ["token", "topic", "condition"].iter().filter(|k| m.get(**k).is_some()).count();
    if targets != 1 {
        return s.bad("80100003", "exactly one of token, topic, condition");
    }
    if let Some(a) = m.get("android") {
        if a.get("urgency").is_some_and(|u| u != "HIGH" && u != "NORMAL") {
            return s.bad("80100003", "bad urgency");
        }
        if a.get("ttl")
            .is_some_and(|t| t.as_str().is_none_or(|t| t.strip_suffix('s').is_none_or(|n| n.parse::<u64>().is_err())))
        {
            return s.bad("80100003", "bad ttl");
        }
    }
    if let Some((status, c, msg)) = s.script.lock().unwrap().pop_front() {
        return code(status, &c, &msg);
    }
    let mut fanout = 0;
    if let Some(t) = m.get("token") {
        let Some(tokens) = t.as_array().filter(|a| (1..=1000).contains(&a.len())) else {
            return s.bad("80300010", "The number of tokens must be 1 to 1000");
        };
        let dead: Vec<&str> = tokens.iter().filter_map(Value::as_str).filter(|t| t.starts_with("dead")).collect();
        if dead.len() == tokens.len() {
            return code(400, "80300007", "All the tokens are invalid");
        }
        if !dead.is_empty() {
            let msg = json!({"success": tokens.len() - dead.len(), "failure": dead.len(), "illegal_tokens": dead})
                .to_string();
            return code(200, "80100000", &msg);
        }
        fanout = tokens.len();
    }
    if let Some(t) = m["topic"].as_str() {
        fanout = s.topics.lock().unwrap().get(t).map_or(0, HashSet::len);
    }
    if let Some(tx) = &s.tx {
        let _ = tx.send(Sent { message: m.clone(), fanout }).await;
    }
    code(200, "80000000", "Success")
}

fn topic(s: &Inner, op: &str, v: Value) -> Response {
    s.topic_requests.fetch_add(1, Ordering::SeqCst);
    let (Some(name), Some(tokens)) = (v["topic"].as_str(), v["tokenArray"].as_array()) else {
        return s.bad("80100003", "topic and tokenArray are required");
    };
    if name.is_empty() || name.len() > 900 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.~%-".contains(&b))
    {
        return s.bad("80100003", "bad topic name");
    }
    if tokens.is_empty() || tokens.len() > 1000 {
        return s.bad("80300010", "1 to 1000 tokens");
    }
    let mut topics = s.topics.lock().unwrap();
    let members = topics.entry(name.to_owned()).or_default();
    let mut errors = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let t = t.as_str().unwrap_or_default();
        if t.starts_with("dead") {
            errors.push(json!({"index": i, "reason": "80300007 invalid token"}));
            continue;
        }
        if op == "topic:subscribe" {
            members.insert(t.to_owned());
        } else {
            members.remove(t);
        }
    }
    axum::Json(json!({
        "code": "80000000", "msg": "Success", "requestId": "1",
        "successCount": tokens.len() - errors.len(), "failureCount": errors.len(), "errors": errors,
    }))
    .into_response()
}

impl FakeHms {
    /// Starts it on a free port; access tokens live 3600 s.
    pub async fn start() -> FakeHms {
        let (tx, rx) = mpsc::channel(100_000);
        let inner = Arc::new(Inner { expires_in: AtomicU64::new(3600), tx: Some(tx), ..Default::default() });
        let app = axum::Router::new()
            .route("/oauth2/v3/token", axum::routing::post(token))
            .route("/v1/{app}/{op}", axum::routing::post(api))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeHms { addr, inner, rx }
    }

    /// Its base URL (for `base_url`; the token URL is `<url>/oauth2/v3/token`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes `secret` to `dir`; the `[hms]` TOML for it.
    pub fn director_toml(&self, dir: &std::path::Path, mode: &str, secret: &str) -> String {
        let path = dir.join("hms-secret");
        std::fs::write(&path, secret).unwrap();
        format!(
            "[hms]\nenabled = true\nmode = {mode:?}\napp_id = {APP_ID:?}\nclient_secret_file = {:?}\nbase_url = {:?}\ntoken_url = \"{}/oauth2/v3/token\"\nmin_backoff_ms = 100\n",
            path.display().to_string(),
            self.url(),
            self.url()
        )
    }

    /// The next `messages:send` answers (after validation), in order: (HTTP status, code, msg).
    pub fn answer(&self, answers: &[(u16, &str, &str)]) {
        let mut s = self.inner.script.lock().unwrap();
        s.extend(answers.iter().map(|(st, c, m)| (*st, c.to_string(), m.to_string())));
    }

    /// Makes every access token issued so far expired.
    pub fn expire_access_tokens(&self) {
        for exp in self.inner.issued.lock().unwrap().values_mut() {
            *exp = Instant::now();
        }
    }

    /// How many token requests arrived.
    pub fn token_requests(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// How many `messages:send` requests arrived.
    pub fn send_requests(&self) -> usize {
        self.inner.send_requests.load(Ordering::SeqCst)
    }

    /// How many topic (un)subscribe requests arrived.
    pub fn topic_requests(&self) -> usize {
        self.inner.topic_requests.load(Ordering::SeqCst)
    }

    /// How many tokens joined topic `topic`.
    pub fn members(&self, topic: &str) -> usize {
        self.inner.topics.lock().unwrap().get(topic).map_or(0, HashSet::len)
    }

    /// What the fake refused and why.
    pub fn rejections(&self) -> Vec<String> {
        self.inner.rejections.lock().unwrap().clone()
    }

    /// The next accepted message, within 10 s.
    pub async fn next(&mut self) -> Sent {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no HMS message within 10 s; fake rejected: {:?}", self.rejections()))
            .expect("fake HMS stopped")
    }

    /// Asserts that no message is accepted within `ms`.
    pub async fn assert_none(&mut self, ms: u64) {
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected HMS message {}", s.message);
        }
    }
}
