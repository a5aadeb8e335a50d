//! The Director's side of the FCM relay (`davpush relay`, see `docs/relay.md`): instead of
//! holding FCM credentials, a Director sends topic-only push requests and topic-membership
//! changes to a relay that a client vendor runs, authenticated with a relay key.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, RETRY_AFTER};

use super::client::iid_results;
use crate::auth::api_client;
use crate::auth::retry_after;
use crate::engine::Outcome;
use crate::membership::{BatchError, Op, TokenResult};

/// A relay key (an installation key issued by the relay's operator, or the pseudo-public app key).
#[derive(Clone)]
pub struct RelayKey(String);

impl RelayKey {
    /// Wraps a key.
    pub fn new(key: String) -> Self {
        RelayKey(key)
    }
}

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(***)")
    }
}

/// See the module documentation.
pub struct RelayClient {
    http: reqwest::Client,
    push_url: String,
    membership_url: String,
    key: RelayKey,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient").field("push_url", &self.push_url).finish_non_exhaustive()
    }
}

/// What a relay answer means for the delivery.
pub fn classify(status: u16, retry: Option<Duration>, body: &str) -> Outcome {
    let detail = || format!("relay answered {status}: {}", body.chars().take(200).collect::<String>());
    match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone(detail()),
        429 | 500..=501 | 503..=599 => Outcome::Retry { after: retry, reason: detail() },
        _ => Outcome::Rejected(detail()),
    }
}

impl RelayClient {
    /// A client for the relay at `base` (`https://relay.example/`).
    pub fn new(base: &str, key: RelayKey, timeout: Duration) -> Result<Self, reqwest::Error> {
        let base = base.trim_end_matches('/');
        Ok(RelayClient {
            http: api_client(timeout).build()?,
            push_url: format!("{base}/v1/push"),
            membership_url: format!("{base}/v1/membership"),
            key,
        })
    }

    /// Asks the relay to wake the devices of `topic`: one device (`token`) or, in topic mode,
    /// every device that joined the topic through this relay key.
    pub async fn push(&self, topic: &str, token: Option<&str>) -> Outcome {
        let mut body = serde_json::json!({ "topic": topic });
        if let Some(t) = token {
            body["token"] = t.into();
        }
        let resp = self
            .http
            .post(&self.push_url)
            .header(AUTHORIZATION, format!("Bearer {}", self.key.0))
            .json(&body)
            .send()
            .await;
        match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry = retry_after(r.headers().get(RETRY_AFTER));
                let text = if r.status().is_success() { String::new() } else { r.text().await.unwrap_or_default() };
                classify(status, retry, &text)
            }
            Err(e) => Outcome::Retry { after: None, reason: format!("request to the relay failed: {e}") },
        }
    }

    /// Joins or leaves `tokens` to/from the relay-side topic of `topic`.
    pub async fn membership(&self, op: Op, topic: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError> {
        let op_name = match op {
            Op::Add => "add",
            Op::Remove => "remove",
        };
        let body = serde_json::json!({"op": op_name, "topic": topic, "tokens": tokens});
        let resp = self
            .http
            .post(&self.membership_url)
            .header(AUTHORIZATION, format!("Bearer {}", self.key.0))
            .json(&body)
            .send()
            .await
            .map_err(|e| BatchError { transient: true, message: format!("request to the relay failed: {e}") })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(BatchError {
                transient: status.as_u16() == 429 || status.is_server_error(),
                message: format!("relay answered {status}: {}", text.chars().take(200).collect::<String>()),
            });
        }
        Ok(iid_results(&text, tokens.len()))
    }
}
