//! A local stand-in for Google's OAuth token endpoint, FCM HTTP v1 `messages:send` and the
//! Instance ID topic API. It verifies what Google verifies (crates-and-tools guide, Part 3):
//! the RS256 assertion against the service account's public key, its claims and lifetime, the
//! access token on every call, the message's shape (one target, string-only data, ttl and
//! priority formats, size), and answers with Google's error bodies.

// Handlers answer early with a full HTTP response; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::jwt;

/// The Firebase project id of the service account.
pub const PROJECT: &str = "davpush-test";
/// The service account's `client_email` (the assertion's `iss`).
pub const CLIENT_EMAIL: &str = "davpush@davpush-test.iam.gserviceaccount.com";
/// The service account's `private_key_id` (the assertion's `kid`).
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";

/// One accepted `messages:send`.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it was accepted.
    pub at: Instant,
    /// The `message` object.
    pub message: Value,
    /// For a topic message: how many devices had joined the topic.
    pub fanout: usize,
}

#[derive(Default)]
struct Inner {
    public_key: Vec<u8>,
    token_uri: String,
    expires_in: AtomicU64,
    issued: Mutex<HashMap<String, Instant>>,
    token_requests: AtomicUsize,
    send_requests: AtomicUsize,
    iid_requests: AtomicUsize,
    script: Mutex<VecDeque<(u16, Value, Option<&'static str>)>>,
    topics: Mutex<HashMap<String, HashSet<String>>>,
    rejections: Mutex<Vec<String>>,
    tx: Option<mpsc::Sender<Sent>>,
}

/// The local Google OAuth, FCM HTTP v1 and Instance ID.
pub struct FakeFcm {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Sent>,
    /// The service-account JSON key (what the Firebase console downloads).
    pub service_account: String,
}

/// An FCM error body: `{"error": {code, message, status, details: [FcmError errorCode]}}`.
pub fn fcm_error(code: u16, status: &str, error_code: Option<&str>, message: &str) -> Value {
    let mut details = vec![];
    if let Some(ec) = error_code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": ec}));
    }
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

impl Inner {
    fn reject(&self, why: String) -> String {
        self.rejections.lock().unwrap().push(why.clone());
        why
    }

    fn check_bearer(&self, headers: &HeaderMap) -> Result<(), Response> {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let ok = token.is_some_and(|t| self.issued.lock().unwrap().get(t).is_some_and(|exp| *exp > Instant::now()));
        if ok {
            return Ok(());
        }
        self.reject("missing, unknown or expired access token".into());
        Err(reply(
            401,
            fcm_error(
                401,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            ),
        ))
    }

    fn check_assertion(&self, form: &HashMap<String, String>) -> Result<(), String> {
        if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Err("grant_type is not jwt-bearer".into());
        }
        let jwt = form.get("assertion").ok_or("no assertion")?;
        let (header, claims) = jwt::verify(jwt, &RSA_PKCS1_2048_8192_SHA256, &self.public_key)?;
        if header["alg"] != "RS256" || header.get("typ").is_some_and(|t| t != "JWT") {
            return Err(format!("bad header {header}"));
        }
        if header.get("kid").is_some_and(|k| k != KEY_ID) {
            return Err("unknown kid".into());
        }
        if claims["iss"] != CLIENT_EMAIL {
            return Err("iss is not the client_email".into());
        }
        let scope = claims["scope"].as_str().unwrap_or("");
        if !scope.split(' ').any(|s| s == "https://www.googleapis.com/auth/firebase.messaging") {
            return Err("scope lacks firebase.messaging".into());
        }
        if claims["aud"] != self.token_uri.as_str() {
            return Err(format!("aud {} is not the token URI", claims["aud"]));
        }
        let (iat, exp) = (claims["iat"].as_i64().ok_or("no iat")?, claims["exp"].as_i64().ok_or("no exp")?);
        if (iat - jwt::now()).abs() > 60 || exp <= iat || exp - iat > 3600 {
            return Err(format!("bad lifetime iat={iat} exp={exp}"));
        }
        Ok(())
    }
}

async fn token(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-www-form-urlencoded") {
        let why = s.reject("token request is not form-urlencoded".into());
        return reply(400, json!({"error": "invalid_request", "error_description": why}));
    }
    let form: HashMap<String, String> = url_decode(&body);
    if let Err(why) = s.check_assertion(&form) {
        let why = s.reject(why);
        return reply(400, json!({"error": "invalid_grant", "error_description": why}));
    }
    let t = format!("ya29.fake-{}", super::random_token());
    let lifetime = s.expires_in.load(Ordering::SeqCst);
    s.issued.lock().unwrap().insert(t.clone(), Instant::now() + Duration::from_secs(lifetime));
    reply(200, json!({"access_token": t, "expires_in": lifetime, "token_type": "Bearer"}))
}

fn url_decode(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (pct(k), pct(v)))
        .collect()
}

fn pct(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn invalid_argument(s: &Inner, why: &str) -> Response {
    s.reject(why.to_owned());
    reply(400, fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), why))
}

fn valid_topic_name(t: &str) -> bool {
    !t.is_empty() && t.len() <= 900 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
}

async fn send(State(s): State<Arc<Inner>>, Path(rest): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    s.send_requests.fetch_add(1, Ordering::SeqCst);
    let Some(project) = rest.strip_suffix("/messages:send") else {
        return reply(404, fcm_error(404, "NOT_FOUND", None, "Requested entity was not found."));
    };
    if let Err(r) = s.check_bearer(&headers) {
        return r;
    }
    if project != PROJECT {
        s.reject(format!("project {project}"));
        return reply(403, fcm_error(403, "PERMISSION_DENIED", None, "Permission denied on the project."));
    }
    if !headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json")) {
        return invalid_argument(&s, "Content-Type is not application/json");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else { return invalid_argument(&s, "body is not JSON") };
    let Some(obj) = v.as_object() else { return invalid_argument(&s, "body is not an object") };
    if obj.keys().any(|k| k != "message" && k != "validate_only") {
        return invalid_argument(&s, "Invalid JSON payload received. Unknown name at top level");
    }
    let m = &v["message"];
    let targets = ["token", "topic", "condition"].iter().filter(|k| m.get(**k).is_some()).count();
    if targets != 1 {
        return invalid_argument(&s, "Recipient of the message is not set or set more than once");
    }
    if let Some(data) = m.get("data") {
        if !data.as_object().is_some_and(|d| d.values().all(Value::is_string)) {
            return invalid_argument(&s, "Invalid value at 'message.data': values must be strings");
        }
        for k in data.as_object().unwrap().keys() {
            if ["from", "notification", "message_type"].contains(&k.as_str())
                || k.starts_with("google")
                || k.starts_with("gcm")
            {
                return invalid_argument(&s, "reserved data key");
            }
        }
    }
    if m.to_string().len() > 4096 {
        return invalid_argument(&s, "Message is too big");
    }
    if let Some(a) = m.get("android") {
        if a.get("ttl")
            .is_some_and(|t| t.as_str().is_none_or(|t| t.strip_suffix('s').is_none_or(|n| n.parse::<f64>().is_err())))
        {
            return invalid_argument(&s, "Invalid value at 'message.android.ttl'");
        }
        if a.get("priority").is_some_and(|p| p != "normal" && p != "high") {
            return invalid_argument(&s, "Invalid value at 'message.android.priority'");
        }
    }
    if let Some((status, body, retry)) = s.script.lock().unwrap().pop_front() {
        let mut r = reply(status, body);
        if let Some(ra) = retry {
            r.headers_mut().insert("retry-after", ra.parse().unwrap());
        }
        return r;
    }
    let mut fanout = 1;
    if let Some(t) = m["token"].as_str() {
        if t.starts_with("dead") {
            return reply(404, fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), "Requested entity was not found."));
        }
        if t.starts_with("foreign") {
            return reply(403, fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "SenderId mismatch"));
        }
        if t.starts_with("malformed") {
            return invalid_argument(&s, "The registration token is not a valid FCM registration token");
        }
    }
    if let Some(t) = m["topic"].as_str() {
        if !valid_topic_name(t) {
            return invalid_argument(&s, "Invalid topic name");
        }
        fanout = s.topics.lock().unwrap().get(t).map_or(0, HashSet::len);
    }
    if let Some(tx) = &s.tx {
        let _ = tx.send(Sent { at: Instant::now(), message: m.clone(), fanout }).await;
    }
    let n = s.send_requests.load(Ordering::SeqCst);
    reply(200, json!({"name": format!("projects/{PROJECT}/messages/{n}")}))
}

async fn iid(State(s): State<Arc<Inner>>, Path(op): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    s.iid_requests.fetch_add(1, Ordering::SeqCst);
    if let Err(r) = s.check_bearer(&headers) {
        return r;
    }
    if headers.get("access_token_auth").and_then(|v| v.to_str().ok()) != Some("true") {
        s.reject("IID request without access_token_auth: true".into());
        return reply(401, json!({"error": "Unauthorized"}));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return reply(400, json!({"error": "InvalidRequest"}));
    };
    let (Some(to), Some(tokens)) = (v["to"].as_str(), v["registration_tokens"].as_array()) else {
        return reply(400, json!({"error": "MissingRequiredParameter"}));
    };
    let Some(topic) = to.strip_prefix("/topics/").filter(|t| valid_topic_name(t)) else {
        return reply(400, json!({"error": "InvalidTopicName"}));
    };
    if tokens.is_empty() || tokens.len() > 1000 {
        return reply(400, json!({"error": "InvalidRequest"}));
    }
    let mut topics = s.topics.lock().unwrap();
    let members = topics.entry(topic.to_owned()).or_default();
    let results: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let t = t.as_str().unwrap_or_default();
            if t.starts_with("dead") || t.is_empty() {
                return json!({"error": "NOT_FOUND"});
            }
            match op.as_str() {
                "v1:batchAdd" => members.insert(t.to_owned()),
                _ => members.remove(t),
            };
            json!({})
        })
        .collect();
    if !["v1:batchAdd", "v1:batchRemove"].contains(&op.as_str()) {
        return reply(404, json!({"error": "NotFound"}));
    }
    reply(200, json!({"results": results}))
}

impl FakeFcm {
    /// Starts it on a free port with a fresh service-account key; access tokens live 3599 s.
    pub async fn start() -> FakeFcm {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let der = AsDer::<Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for c in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(c).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token_uri = format!("http://{addr}/token");
        let (tx, rx) = mpsc::channel(100_000);
        let inner = Arc::new(Inner {
            public_key: pair.public_key().as_ref().to_vec(),
            token_uri: token_uri.clone(),
            expires_in: AtomicU64::new(3599),
            tx: Some(tx),
            ..Default::default()
        });
        let service_account = json!({
            "type": "service_account", "project_id": PROJECT, "private_key_id": KEY_ID, "private_key": pem,
            "client_email": CLIENT_EMAIL, "client_id": "1", "token_uri": token_uri,
        })
        .to_string();
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .route("/v1/projects/{*rest}", axum::routing::post(send))
            .route("/iid/{op}", axum::routing::post(iid))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeFcm { addr, inner, rx, service_account }
    }

    /// Its base URL (for `base_url` and `iid_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes the service-account key to `dir` and returns the `[fcm]` TOML for it.
    pub fn director_toml(&self, dir: &std::path::Path, mode: &str) -> String {
        let path = dir.join("service-account.json");
        std::fs::write(&path, &self.service_account).unwrap();
        format!(
            "[fcm]\nenabled = true\nmode = {mode:?}\ncredentials_file = {:?}\nbase_url = {:?}\niid_url = {:?}\nmin_backoff_ms = 100\n",
            path.display().to_string(),
            self.url(),
            self.url()
        )
    }

    /// The `expires_in` of access tokens issued from now on, in seconds.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.inner.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Invalidates every access token issued so far (as if revoked).
    pub fn revoke_access_tokens(&self) {
        self.inner.issued.lock().unwrap().clear();
    }

    /// The next `messages:send` answers (after validation), in order.
    pub fn answer(&self, answers: Vec<(u16, Value, Option<&'static str>)>) {
        self.inner.script.lock().unwrap().extend(answers);
    }

    /// How many token requests arrived.
    pub fn token_requests(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// How many `messages:send` requests arrived.
    pub fn send_requests(&self) -> usize {
        self.inner.send_requests.load(Ordering::SeqCst)
    }

    /// How many Instance ID requests arrived.
    pub fn iid_requests(&self) -> usize {
        self.inner.iid_requests.load(Ordering::SeqCst)
    }

    /// How many tokens joined FCM topic `topic`.
    pub fn members(&self, topic: &str) -> usize {
        self.inner.topics.lock().unwrap().get(topic).map_or(0, HashSet::len)
    }

    /// The FCM topics that have (or had) members.
    pub fn topics(&self) -> Vec<String> {
        self.inner.topics.lock().unwrap().keys().cloned().collect()
    }

    /// What the fake refused and why (a test that expects none asserts this is empty).
    pub fn rejections(&self) -> Vec<String> {
        self.inner.rejections.lock().unwrap().clone()
    }

    /// The next accepted message, within 10 s.
    pub async fn next(&mut self) -> Sent {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no FCM message within 10 s; fake rejected: {:?}", self.rejections()))
            .expect("fake FCM stopped")
    }

    /// Asserts that no message is accepted within `ms`.
    pub async fn assert_none(&mut self, ms: u64) {
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected FCM message {}", s.message);
        }
    }
}
