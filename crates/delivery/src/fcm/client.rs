//! The FCM HTTP v1 client: the service account's OAuth 2 JWT-bearer grant (RS256), the access
//! token cached until shortly before it expires, `messages:send`, and Instance ID topic
//! membership (`batchAdd`/`batchRemove`). Used by the Director (direct mode) and by the relay.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

use super::error::{FcmError, classify};
use super::settings::FcmSettings;
use crate::auth::{CredentialError, RsaSigner, TokenCache, TokenError, api_client, retry_after, token_reply};
use crate::engine::Outcome;
use crate::membership::{BatchError, Op, TokenResult};

/// The HTTP client's error (re-exported so users need no direct reqwest dependency).
pub type HttpError = reqwest::Error;

/// The OAuth scope FCM needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// A Google service account (the JSON key file from the Firebase console).
pub struct ServiceAccount {
    /// The Firebase project.
    pub project_id: String,
    /// `iss` of the assertion.
    pub client_email: String,
    /// `kid` of the assertion.
    pub private_key_id: String,
    /// The token endpoint (`https://oauth2.googleapis.com/token`).
    pub token_uri: String,
    signer: RsaSigner,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses a service-account JSON key (`path` only names it in errors).
    pub fn from_json(text: &str, path: &str) -> Result<Self, CredentialError> {
        let invalid = |message: String| CredentialError::Invalid { path: path.to_owned(), message };
        let k: KeyFile = serde_json::from_str(text).map_err(|e| {
            invalid(format!("not a service-account JSON key (line {}, column {})", e.line(), e.column()))
        })?;
        if k.kind.as_deref().is_some_and(|t| t != "service_account") {
            return Err(invalid("`type` is not \"service_account\"".into()));
        }
        let signer = RsaSigner::from_pem(&k.private_key)
            .ok_or_else(|| invalid("`private_key` is not an RSA private key in PEM".into()))?;
        Ok(ServiceAccount {
            project_id: k.project_id,
            client_email: k.client_email,
            private_key_id: k.private_key_id.unwrap_or_default(),
            token_uri: k.token_uri.unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
            signer,
        })
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CredentialError::Io { path: path.display().to_string(), source })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// The signed assertion for the JWT-bearer grant at `aud`, issued at `now`, valid one hour.
    pub fn assertion(&self, aud: &str, now: i64) -> String {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if !self.private_key_id.is_empty() {
            header["kid"] = self.private_key_id.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email, "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600,
        });
        self.signer.jwt(&header, &claims)
    }
}

/// Where one message goes.
#[derive(Debug, Clone, Copy)]
pub enum Recipient<'a> {
    /// One registration token.
    Token(&'a str),
    /// An FCM topic name (without `/topics/`).
    Topic(&'a str),
}

/// See the module documentation.
pub struct FcmClient {
    http: reqwest::Client,
    gate: crate::auth::ConnectionGate,
    account: Arc<ServiceAccount>,
    send_url: String,
    iid_url: String,
    token_url: String,
    tokens: TokenCache,
}

impl std::fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmClient").field("account", &self.account).field("send_url", &self.send_url).finish()
    }
}

/// The message body: data only (all values strings), high priority, with TTL and collapse key.
pub fn message_body(
    to: Recipient<'_>,
    data: &serde_json::Map<String, serde_json::Value>,
    ttl: Duration,
    collapse_key: &str,
) -> serde_json::Value {
    let mut message = serde_json::json!({
        "data": data,
        "android": {"priority": "high", "ttl": format!("{}s", ttl.as_secs()), "collapse_key": collapse_key},
    });
    match to {
        Recipient::Token(t) => message["token"] = t.into(),
        Recipient::Topic(t) => message["topic"] = t.into(),
    }
    serde_json::json!({ "message": message })
}

impl FcmClient {
    /// A client for `account` with `settings`' URLs.
    pub fn new(account: Arc<ServiceAccount>, settings: &FcmSettings) -> Result<Self, reqwest::Error> {
        let base = settings.base_url.trim_end_matches('/');
        Ok(FcmClient {
            http: api_client(settings.timeout).build()?,
            gate: Default::default(),
            send_url: format!("{base}/v1/projects/{}/messages:send", account.project_id),
            iid_url: settings.iid_url.trim_end_matches('/').to_owned(),
            token_url: settings.token_url.clone().unwrap_or_else(|| account.token_uri.clone()),
            account,
            tokens: TokenCache::default(),
        })
    }

    /// The same client, deciding when its access token is due for renewal by `clock`.
    pub fn with_clock(self, clock: crate::auth::Clock) -> Self {
        FcmClient { tokens: TokenCache::with_clock(clock), ..self }
    }

    /// The service account.
    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    async fn access_token(&self) -> Result<Arc<str>, TokenError> {
        self.tokens
            .get(|| async {
                let assertion = self.account.assertion(&self.token_url, davpush_core::unix_now());
                let form = format!(
                    "grant_type={}&assertion={assertion}",
                    url::form_urlencoded::byte_serialize(b"urn:ietf:params:oauth:grant-type:jwt-bearer")
                        .collect::<String>()
                );
                let resp = self
                    .http
                    .post(&self.token_url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await;
                token_reply(resp).await
            })
            .await
    }

    /// Sends one message; an expired or revoked access token is renewed once.
    pub async fn send(
        &self,
        to: Recipient<'_>,
        data: &serde_json::Map<String, serde_json::Value>,
        ttl: Duration,
        collapse_key: &str,
    ) -> Outcome {
        let body = message_body(to, data, ttl, collapse_key);
        for attempt in 0..2 {
            let token = match self.access_token().await {
                Ok(t) => t,
                Err(e) => return e.outcome(),
            };
            let req = self.http.post(&self.send_url).header(AUTHORIZATION, format!("Bearer {token}")).json(&body);
            let resp = self.gate.run(req.send(), |r| r.is_ok()).await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => return Outcome::Retry { after: None, reason: format!("request to FCM failed: {e}") },
            };
            let status = resp.status().as_u16();
            let retry = retry_after(resp.headers().get(RETRY_AFTER));
            let text = if resp.status().is_success() { String::new() } else { resp.text().await.unwrap_or_default() };
            if status == 401 && FcmError::parse(&text).code() == "UNAUTHENTICATED" && attempt == 0 {
                self.tokens.invalidate(&token);
                continue;
            }
            return classify(status, retry, &text);
        }
        Outcome::Retry { after: None, reason: "FCM refused two fresh access tokens".into() }
    }

    /// Instance ID `batchAdd`/`batchRemove` of `tokens` (at most 1000) to FCM topic `name`.
    pub async fn membership(&self, op: Op, name: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError> {
        let url = match op {
            Op::Add => format!("{}/iid/v1:batchAdd", self.iid_url),
            Op::Remove => format!("{}/iid/v1:batchRemove", self.iid_url),
        };
        let body = serde_json::json!({"to": format!("/topics/{name}"), "registration_tokens": tokens});
        for attempt in 0..2 {
            let token =
                self.access_token().await.map_err(|e| BatchError { transient: !e.refused, message: e.message })?;
            let resp = self
                .http
                .post(&url)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header("access_token_auth", "true")
                .json(&body)
                .send()
                .await
                .map_err(|e| BatchError { transient: true, message: format!("request to Instance ID failed: {e}") })?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.as_u16() == 401 && attempt == 0 {
                self.tokens.invalidate(&token);
                continue;
            }
            if !status.is_success() {
                return Err(BatchError {
                    transient: status.as_u16() == 429 || status.is_server_error(),
                    message: format!("Instance ID answered {status}: {}", text.chars().take(200).collect::<String>()),
                });
            }
            return Ok(iid_results(&text, tokens.len()));
        }
        Err(BatchError { transient: true, message: "Instance ID refused two fresh access tokens".into() })
    }
}

/// `{"results": [{}, {"error": "NOT_FOUND"}, …]}` → one result per token.
pub fn iid_results(body: &str, n: usize) -> Vec<TokenResult> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let results = v["results"].as_array().cloned().unwrap_or_default();
    (0..n)
        .map(|i| match results.get(i).and_then(|r| r["error"].as_str()) {
            None => TokenResult::Ok,
            Some(e @ ("NOT_FOUND" | "INVALID_ARGUMENT")) => TokenResult::Gone(e.to_owned()),
            Some(e) => TokenResult::Failed(e.to_owned()),
        })
        .collect()
}
