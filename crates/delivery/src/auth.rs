//! Credentials shared by the mobile push transports: PEM decoding, JWTs signed with aws-lc-rs,
//! and [`TokenCache`], an OAuth 2 access token kept until shortly before it expires.
//!
//! Secrets (private keys, client secrets, access tokens) never appear in `Debug` output or logs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use tokio::time::Instant;

use crate::engine::Outcome;

/// A credential could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The content is not what was expected.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong (never the secret itself).
        message: String,
    },
}

/// Reads a secret file (trimmed).
pub fn read_secret(path: &std::path::Path) -> Result<String, CredentialError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| CredentialError::Io { path: path.display().to_string(), source })
}

/// The DER bytes of the first PEM block (any label).
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let mut inside = false;
    let mut b64 = String::new();
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") {
            inside = true;
        } else if line.starts_with("-----END ") {
            break;
        } else if inside {
            b64.push_str(line);
        }
    }
    if b64.is_empty() {
        return None;
    }
    STANDARD.decode(b64).ok()
}

/// An RSA private key for RS256 (Google service accounts).
pub struct RsaSigner {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaSigner(***)")
    }
}

impl RsaSigner {
    /// From a PEM private key (PKCS#8 `PRIVATE KEY`, as in service-account files, or PKCS#1).
    pub fn from_pem(pem: &str) -> Option<Self> {
        let der = pem_to_der(pem)?;
        let pair = RsaKeyPair::from_pkcs8(&der).or_else(|_| RsaKeyPair::from_der(&der)).ok()?;
        Some(RsaSigner { pair })
    }

    /// A compact JWS with `alg: RS256` over `header` and `claims`.
    pub fn jwt(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .expect("signing with a valid RSA key does not fail");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// Fetching an access token failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    /// The token endpoint refused the credentials (a 4xx): retrying will not help.
    pub refused: bool,
    /// What happened (the endpoint's error code and description; never a secret).
    pub message: String,
}

impl TokenError {
    /// What a delivery that needed the token makes of it.
    pub fn outcome(&self) -> Outcome {
        if self.refused {
            Outcome::Rejected(format!("access token refused: {}", self.message))
        } else {
            Outcome::Retry { after: None, reason: format!("access token unavailable: {}", self.message) }
        }
    }
}

/// Where a [`TokenCache`] reads the time: tokio's clock by default. A test that drives a
/// client against a push-service fake on real sockets (where tokio's paused clock would also
/// fire the HTTP timeouts) passes a clock it moves itself.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Instant + Send + Sync>);

impl Clock {
    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        Clock(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(Instant::now)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

#[derive(Clone)]
struct Cached {
    token: Arc<str>,
    renew_at: Instant,
}

/// An OAuth 2 access token, fetched once and shared until shortly before it expires (a tenth
/// of its lifetime, at most five minutes, before). Concurrent callers that find no fresh token
/// wait for one fetch (single flight) instead of each fetching.
pub struct TokenCache {
    current: Mutex<Option<Cached>>,
    /// Serializes fetches; held across the fetch's await on purpose (it is an async mutex and
    /// guards no data).
    fetching: tokio::sync::Mutex<()>,
    clock: Clock,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_clock(Clock::default())
    }
}

impl TokenCache {
    /// An empty cache that reads the time from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        TokenCache { current: Mutex::new(None), fetching: tokio::sync::Mutex::new(()), clock }
    }

    fn fresh(&self) -> Option<Arc<str>> {
        let now = self.clock.now();
        let c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().filter(|c| now < c.renew_at).map(|c| c.token.clone())
    }

    /// The cached token, or a new one from `fetch` (which returns the token and its lifetime).
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<str>, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), TokenError>>,
    {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _single = self.fetching.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let (token, lifetime) = fetch().await?;
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        let token: Arc<str> = Arc::from(token);
        let renew_at = self.clock.now() + lifetime.saturating_sub(margin);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached { token: token.clone(), renew_at });
        Ok(token)
    }

    /// Forgets `token` (the service said it is no longer valid), unless a newer one replaced it.
    pub fn invalidate(&self, token: &str) {
        let mut c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if c.as_ref().is_some_and(|c| &*c.token == token) {
            *c = None;
        }
    }
}

/// Keeps a push service at one HTTP/2 connection. With ALPN the client learns that a server
/// speaks HTTP/2 only once the first connection is up, so requests started before that each
/// open their own connection. While no request has succeeded yet (at start, and after a
/// network error) requests pass one at a time; afterwards they share the pooled connection.
#[derive(Debug)]
pub struct ConnectionGate {
    warm: std::sync::atomic::AtomicBool,
    one: tokio::sync::Semaphore,
}

impl Default for ConnectionGate {
    fn default() -> Self {
        ConnectionGate { warm: std::sync::atomic::AtomicBool::new(false), one: tokio::sync::Semaphore::new(1) }
    }
}

impl ConnectionGate {
    /// Runs `request`; `ok` says whether its result shows a working connection.
    pub async fn run<T, Fut: Future<Output = T>>(&self, request: Fut, ok: impl FnOnce(&T) -> bool) -> T {
        use std::sync::atomic::Ordering;
        let _permit = if self.warm.load(Ordering::Acquire) { None } else { self.one.acquire().await.ok() };
        let out = request.await;
        self.warm.store(ok(&out), Ordering::Release);
        out
    }
}

/// At most `max` bytes of a response body, as text (the rest is not read): for error bodies of
/// endpoints a client chose.
pub async fn bounded_text(mut resp: reqwest::Response, max: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk[..chunk.len().min(max - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The longest `Retry-After` honoured: a push service (or an endpoint a client chose) cannot
/// park a delivery longer than a day, nor overflow the engine's clock with a huge value.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Parses a `Retry-After` header (seconds or HTTP date), at most [`MAX_RETRY_AFTER`].
pub fn retry_after(h: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let v = h?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now()).unwrap_or_default()
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The hex SHA-256 of `topic`, cut to 32 characters (128 bits): the name part a push service
/// sees for a davpush topic (FCM and HMS topic names, APNs collapse ids). Only characters every
/// service accepts.
pub fn topic_hash(topic: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, topic.as_bytes());
    d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like a push token of FCM or HMS: 1–4096 characters of `A–Z a–z 0–9 - _ : .`.
pub fn is_push_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 4096 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
}

/// An HTTP client for a push service API the operator configured: HTTP/2 where the server
/// offers it (ALPN), connections kept and reused, no redirects, timeouts.
pub(crate) fn api_client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(600))
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_while_idle(true)
        .user_agent(concat!("davpush/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

/// Reads an OAuth token endpoint's answer (Google and Huawei answer alike).
pub(crate) async fn token_reply(
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<(String, Duration), TokenError> {
    let resp = resp.map_err(|e| TokenError { refused: false, message: format!("token request failed: {e}") })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let code = match &v["error"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let desc: String = v["error_description"].as_str().unwrap_or_default().chars().take(200).collect();
        return Err(TokenError {
            refused: status.is_client_error() && status.as_u16() != 429,
            message: format!("token endpoint answered {status}: {code} {desc}"),
        });
    }
    let r: TokenReply = serde_json::from_str(&body)
        .map_err(|_| TokenError { refused: false, message: "token endpoint answered without access_token".into() })?;
    Ok((r.access_token, Duration::from_secs(r.expires_in.max(1))))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    #[test]
    fn rs256_verifies_with_the_public_key() {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
        let pem =
            format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(der.as_ref()));
        let signer = RsaSigner::from_pem(&pem).unwrap();
        assert_eq!(format!("{signer:?}"), "RsaSigner(***)");
        let jwt = signer.jwt(&serde_json::json!({"alg": "RS256", "typ": "JWT"}), &serde_json::json!({"iss": "x"}));
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref())
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_cached_until_shortly_before_expiry_and_fetched_once() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let fetch = |f: Arc<std::sync::atomic::AtomicU32>| async move {
            let n = f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok((format!("t{n}"), Duration::from_secs(3600)))
        };
        let mut handles = Vec::new();
        for _ in 0..10 {
            let (c, f) = (cache.clone(), fetches.clone());
            handles.push(tokio::spawn(async move { c.get(|| fetch(f)).await.unwrap() }));
        }
        for h in handles {
            assert_eq!(&*h.await.unwrap(), "t0");
        }
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1, "single flight");
        tokio::time::advance(Duration::from_secs(3600 - 301)).await;
        assert_eq!(&*cache.get(|| fetch(fetches.clone())).await.unwrap(), "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(&*cache.get(|| fetch(fetches.clone())).await.unwrap(), "t1", "renewed 5 min before expiry");
        cache.invalidate("t0");
        assert_eq!(&*cache.get(|| fetch(fetches.clone())).await.unwrap(), "t1", "an old token does not evict");
        cache.invalidate("t1");
        assert_eq!(&*cache.get(|| fetch(fetches.clone())).await.unwrap(), "t2");
    }

    #[test]
    fn topic_hashes_and_tokens() {
        assert_eq!(topic_hash("a").len(), 32);
        assert_ne!(topic_hash("a"), topic_hash("b"));
        assert!(is_push_token("dXo1:APA91bH-x_y.z"));
        assert!(!is_push_token("has space") && !is_push_token("") && !is_push_token("ü"));
    }
}
