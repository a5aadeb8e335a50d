//! A local stand-in for the APNs provider API: HTTP/2 over TLS only (ALPN `h2`; a client that
//! offers only HTTP/1.1 fails the handshake), with a test CA made by rcgen. It verifies what
//! APNs verifies (crates-and-tools guide, Part 3): the ES256 provider token against the `.p8`
//! key's public half, `kid`/`iss`/`iat`, the key bound to the connection, token updates at most
//! every 20 minutes per connection, the `apns-*` headers, and the payload; it answers with
//! Apple's `{"reason": …}` bodies.

// Handlers answer early with a full HTTP response; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::jwt;

/// The `.p8` key's id (`kid`) the fake accepts.
pub const KEY_ID: &str = "ABC123DEFG";
/// The team id (`iss`) the fake accepts.
pub const TEAM_ID: &str = "DEF123GHIJ";
/// The app's bundle id, the only `apns-topic` the fake accepts.
pub const BUNDLE_ID: &str = "org.example.davpush";

/// One accepted push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// When it arrived.
    pub at: Instant,
    /// The number of the HTTP/2 connection it came on (from 1).
    pub connection: usize,
    /// The device token of its path.
    pub device: String,
    /// Its headers.
    pub headers: hyper::HeaderMap,
    /// Its JSON payload.
    pub payload: Value,
}

impl Pushed {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Inner {
    public_key: Vec<u8>,
    connections: AtomicUsize,
    requests: AtomicUsize,
    script: Mutex<VecDeque<(u16, &'static str, Option<&'static str>)>>,
    expire_next: AtomicBool,
    rejections: Mutex<Vec<String>>,
    tx: Option<mpsc::Sender<Pushed>>,
}

#[derive(Default)]
struct Conn {
    kid: Option<String>,
    token: Option<String>,
    token_since: Option<Instant>,
    /// The previous token was declared expired: the next update is allowed at once.
    renewal_allowed: bool,
}

/// The local APNs provider API.
pub struct FakeApns {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The test CA (PEM) the Director must trust.
    pub ca_pem: String,
    /// The `.p8` signing key (PEM) for the Director.
    pub p8: String,
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Pushed>,
}

type Resp = Response<Full<Bytes>>;

fn apns_reply(status: u16, reason: &str) -> Resp {
    let mut body = json!({"reason": reason});
    if status == 410 {
        body["timestamp"] = json!(jwt::now() * 1000 - 60_000);
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

const PUSH_TYPES: [&str; 11] = [
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
    "controls",
];

impl Inner {
    fn reject(&self, status: u16, reason: &'static str, why: String) -> Resp {
        self.rejections.lock().unwrap().push(format!("{reason}: {why}"));
        apns_reply(status, reason)
    }

    fn check_token(&self, conn: &Mutex<Conn>, auth: Option<&str>) -> Result<(), Resp> {
        let Some(jwt) = auth.and_then(|a| a.strip_prefix("bearer ")) else {
            return Err(self.reject(403, "MissingProviderToken", "no bearer token".into()));
        };
        let (header, claims) = jwt::verify(jwt, &ECDSA_P256_SHA256_FIXED, &self.public_key)
            .map_err(|e| self.reject(403, "InvalidProviderToken", e))?;
        if header["alg"] != "ES256" || header["kid"] != KEY_ID {
            return Err(self.reject(403, "InvalidProviderToken", format!("header {header}")));
        }
        if claims["iss"] != TEAM_ID {
            return Err(self.reject(403, "InvalidProviderToken", format!("iss {}", claims["iss"])));
        }
        let iat = claims["iat"].as_i64().ok_or_else(|| self.reject(403, "InvalidProviderToken", "no iat".into()))?;
        let now = jwt::now();
        if iat > now + 60 {
            return Err(self.reject(403, "InvalidProviderToken", "iat in the future".into()));
        }
        if now - iat > 3600 {
            return Err(self.reject(403, "ExpiredProviderToken", format!("iat {iat} is over an hour old")));
        }
        let mut c = conn.lock().unwrap();
        match &c.kid {
            Some(k) if k != KEY_ID => {
                return Err(self.reject(403, "UnrelatedKeyIdInToken", "another kid on this connection".into()));
            }
            _ => c.kid = Some(KEY_ID.to_owned()),
        }
        if c.token.as_deref() != Some(jwt) {
            let too_soon = c.token_since.is_some_and(|t| t.elapsed() < Duration::from_secs(20 * 60));
            if too_soon && !c.renewal_allowed {
                drop(c);
                return Err(self.reject(429, "TooManyProviderTokenUpdates", "new token within 20 minutes".into()));
            }
            c.token = Some(jwt.to_owned());
            c.token_since = Some(Instant::now());
            c.renewal_allowed = false;
        }
        if self.expire_next.swap(false, Ordering::SeqCst) {
            c.renewal_allowed = true;
            drop(c);
            return Err(apns_reply(403, "ExpiredProviderToken"));
        }
        Ok(())
    }

    async fn handle(&self, conn: &Mutex<Conn>, conn_id: usize, req: Request<Incoming>) -> Resp {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if req.version() != hyper::Version::HTTP_2 {
            return self.reject(400, "BadPath", "not HTTP/2".into());
        }
        let Some(device) = req.uri().path().strip_prefix("/3/device/").map(str::to_owned) else {
            return self.reject(404, "BadPath", req.uri().path().to_owned());
        };
        if req.method() != Method::POST {
            return self.reject(405, "MethodNotAllowed", req.method().to_string());
        }
        let h = req.headers().clone();
        for name in [
            "authorization",
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "apns-expiration",
            "apns-id",
            "apns-collapse-id",
        ] {
            if h.get_all(name).iter().count() > 1 {
                return self.reject(400, "DuplicateHeaders", name.to_owned());
            }
        }
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Err(r) = self.check_token(conn, get("authorization").as_deref()) {
            return r;
        }
        match get("apns-topic") {
            None => return self.reject(400, "MissingTopic", String::new()),
            Some(t) if t != BUNDLE_ID => return self.reject(400, "BadTopic", t),
            _ => {}
        }
        let push_type = get("apns-push-type").unwrap_or_else(|| "alert".into());
        if !PUSH_TYPES.contains(&push_type.as_str()) {
            return self.reject(400, "InvalidPushType", push_type);
        }
        let priority = get("apns-priority").unwrap_or_else(|| "10".into());
        if !["10", "5", "1"].contains(&priority.as_str()) {
            return self.reject(400, "BadPriority", priority);
        }
        if let Some(e) = get("apns-expiration")
            && e.parse::<u64>().is_err()
        {
            return self.reject(400, "BadExpirationDate", e);
        }
        if let Some(c) = get("apns-collapse-id")
            && c.len() > 64
        {
            return self.reject(400, "BadCollapseId", c);
        }
        if let Some(id) = get("apns-id") {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            if parts != [8, 4, 4, 4, 12] || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                return self.reject(400, "BadMessageId", id);
            }
        }
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if body.is_empty() {
            return self.reject(400, "PayloadEmpty", String::new());
        }
        if body.len() > 4096 {
            return self.reject(413, "PayloadTooLarge", body.len().to_string());
        }
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return self.reject(400, "BadPayload", "not JSON (the fake's own reason)".into());
        };
        let Some(aps) = payload["aps"].as_object() else {
            return self.reject(400, "BadPayload", "no aps dictionary (the fake's own reason)".into());
        };
        let silent = aps.get("content-available") == Some(&json!(1))
            && !aps.contains_key("alert")
            && !aps.contains_key("sound")
            && !aps.contains_key("badge");
        if push_type == "background" && !silent {
            return self.reject(400, "InvalidPushType", "background push with a visible payload".into());
        }
        if silent && priority == "10" {
            return self.reject(400, "BadPriority", "content-available only with priority 10".into());
        }
        if device.len() != 64 || !device.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.reject(400, "BadDeviceToken", device);
        }
        if let Some((status, reason, retry)) = self.script.lock().unwrap().pop_front() {
            let mut r = apns_reply(status, reason);
            if let Some(ra) = retry {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            return r;
        }
        match &device[..4] {
            "dead" => return apns_reply(410, "Unregistered"),
            "e0e0" => return apns_reply(410, "ExpiredToken"),
            "baad" => return apns_reply(400, "BadDeviceToken"),
            "f00d" => return apns_reply(400, "DeviceTokenNotForTopic"),
            _ => {}
        }
        let id = get("apns-id").unwrap_or_else(|| "3c9a8b04-5c1d-4e11-9a0b-0c0ffee00001".into());
        if let Some(tx) = &self.tx {
            let _ = tx.send(Pushed { at: Instant::now(), connection: conn_id, device, headers: h, payload }).await;
        }
        Response::builder().status(StatusCode::OK).header("apns-id", id).body(Full::new(Bytes::new())).unwrap()
    }
}

impl FakeApns {
    /// Starts it on a free port, with a fresh test CA and signing key.
    pub async fn start() -> FakeApns {
        // The provider's signing key (`AuthKey_<kid>.p8`).
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let p8 = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(doc.as_ref())
        );

        // A test CA and a leaf (CA:FALSE, serverAuth, SAN localhost + 127.0.0.1) signed by it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "davpush test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let (tx, rx) = mpsc::channel(100_000);
        let inner =
            Arc::new(Inner { public_key: pair.public_key().as_ref().to_vec(), tx: Some(tx), ..Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, inner) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            inner.rejections.lock().unwrap().push(format!("TLS handshake failed: {e}"));
                            return;
                        }
                    };
                    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                        inner.rejections.lock().unwrap().push("ALPN did not select h2".into());
                        return;
                    }
                    let id = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let conn = Arc::new(Mutex::new(Conn::default()));
                    let svc = hyper::service::service_fn(move |req| {
                        let (inner, conn) = (inner.clone(), conn.clone());
                        async move { Ok::<_, Infallible>(inner.handle(&conn, id, req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FakeApns { addr, ca_pem: ca.pem(), p8, inner, rx }
    }

    /// Its base URL (`https://localhost:<port>`, a name the certificate carries).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Writes the key and CA to `dir`; the `[apns]` TOML for them.
    pub fn director_toml(&self, dir: &std::path::Path) -> String {
        let (key, ca) = (dir.join("AuthKey.p8"), dir.join("apns-ca.pem"));
        std::fs::write(&key, &self.p8).unwrap();
        std::fs::write(&ca, &self.ca_pem).unwrap();
        format!(
            "[apns]\nenabled = true\nbase_url = {:?}\nca_file = {:?}\nkey_file = {:?}\nkey_id = {KEY_ID:?}\nteam_id = {TEAM_ID:?}\nbundle_id = {BUNDLE_ID:?}\nmin_backoff_ms = 100\n",
            self.url(),
            ca.display().to_string(),
            key.display().to_string()
        )
    }

    /// The next pushes' answers (after validation), in order.
    pub fn answer(&self, answers: &[(u16, &'static str, Option<&'static str>)]) {
        self.inner.script.lock().unwrap().extend(answers.iter().copied());
    }

    /// The next push with a valid token gets 403 ExpiredProviderToken (and a renewal is allowed).
    pub fn expire_provider_token(&self) {
        self.inner.expire_next.store(true, Ordering::SeqCst);
    }

    /// How many connections completed the TLS handshake with `h2`.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// What the fake refused and why.
    pub fn rejections(&self) -> Vec<String> {
        self.inner.rejections.lock().unwrap().clone()
    }

    /// The next accepted push, within 10 s.
    pub async fn next(&mut self) -> Pushed {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no APNs push within 10 s; fake rejected: {:?}", self.rejections()))
            .expect("fake APNs stopped")
    }

    /// Asserts that no push is accepted within `ms`.
    pub async fn assert_none(&mut self, ms: u64) {
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected APNs push to {}", p.device);
        }
    }
}
