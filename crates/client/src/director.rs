//! [`DirectorClient`]: the one client of a Director's HTTP APIs — `GET /info`, the Subscription
//! API and the Notify API — used by the gateway, `davpush notify` and the load tool.

use std::time::Duration;

use davpush_proto::{
    DirectorInfo, ErrorBody, NotifyRequest, NotifyResponse, SubscribeRequest, SubscribeResponse, UnsubscribeRequest,
};
use url::Url;

/// A Director call failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// The Director answered with an error status and (usually) its JSON error body.
    #[error("the Director answered {status}: {}", body.message)]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error body (`error: "unknown"` with the start of the text when it sent no JSON).
        body: ErrorBody,
    },
    /// The Director could not be reached, or the connection broke; the message gives the
    /// causes (connection refused, a certificate error…).
    #[error("the Director is unreachable: {}", crate::error::with_causes(.0))]
    Unreachable(reqwest::Error),
    /// The Director answered 2xx with a body that is not what the API promises.
    #[error("the Director's answer is not valid: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The call needs a token this client was not given.
    #[error("no {0} token was configured for the Director")]
    NoToken(&'static str),
}

impl DirectorError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            DirectorError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Talks to one Director. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct DirectorClient {
    base: Url,
    http: reqwest::Client,
    notify_token: Option<String>,
    subscription_token: Option<String>,
}

impl std::fmt::Debug for DirectorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl DirectorClient {
    /// A client of the Director at `base` (e.g. `http://127.0.0.1:8080/`); every request times
    /// out after `timeout`. No redirects, no proxy from the environment.
    pub fn new(base: Url, timeout: Duration) -> Result<Self, DirectorError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(DirectorError::Unreachable)?;
        Ok(Self::with_http(base, http))
    }

    /// With a given HTTP client.
    pub fn with_http(base: Url, http: reqwest::Client) -> Self {
        DirectorClient { base, http, notify_token: None, subscription_token: None }
    }

    /// The Notify API's bearer token.
    pub fn notify_token(mut self, token: impl Into<String>) -> Self {
        self.notify_token = Some(token.into());
        self
    }

    /// The Subscription API's bearer token.
    pub fn subscription_token(mut self, token: impl Into<String>) -> Self {
        self.subscription_token = Some(token.into());
        self
    }

    /// The URL of `path` under the Director's base.
    pub fn url(&self, path: &str) -> Url {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(path.trim_start_matches('/')).expect("API paths join")
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        what: &'static str,
        body: reqwest::Body,
    ) -> Result<(u16, bytes::Bytes), DirectorError> {
        let token = token.ok_or(DirectorError::NoToken(what))?;
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(DirectorError::Unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(DirectorError::Unreachable)?;
        if (200..300).contains(&status) {
            Ok((status, bytes))
        } else {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                error: "unknown".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                field: None,
            });
            Err(DirectorError::Refused { status, body })
        }
    }

    fn json<T: serde::Serialize>(v: &T) -> reqwest::Body {
        serde_json::to_vec(v).expect("API requests serialize").into()
    }

    fn parse<R: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<R, DirectorError> {
        serde_json::from_slice(bytes).map_err(DirectorError::Malformed)
    }

    /// `GET /info`.
    pub async fn info(&self) -> Result<DirectorInfo, DirectorError> {
        let resp = self.http.get(self.url("info")).send().await.map_err(DirectorError::Unreachable)?;
        let bytes = resp.bytes().await.map_err(DirectorError::Unreachable)?;
        Self::parse(&bytes)
    }

    /// `POST /subscribe`; whether a subscription was created (201) and the answer.
    pub async fn subscribe(&self, req: &SubscribeRequest) -> Result<(bool, SubscribeResponse), DirectorError> {
        let (status, bytes) =
            self.post("subscribe", self.subscription_token.as_deref(), "subscription", Self::json(req)).await?;
        Ok((status == 201, Self::parse(&bytes)?))
    }

    /// `POST /unsubscribe`; `Ok(false)` if nothing matched.
    pub async fn unsubscribe(&self, req: &UnsubscribeRequest) -> Result<bool, DirectorError> {
        match self.post("unsubscribe", self.subscription_token.as_deref(), "subscription", Self::json(req)).await {
            Ok(_) => Ok(true),
            Err(DirectorError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /notify`.
    pub async fn notify(&self, req: &NotifyRequest) -> Result<NotifyResponse, DirectorError> {
        self.notify_bytes(serde_json::to_vec(req).expect("API requests serialize")).await
    }

    /// `POST /notify` with a body serialized already (the load tool sends many).
    pub async fn notify_bytes(&self, body: impl Into<reqwest::Body>) -> Result<NotifyResponse, DirectorError> {
        let (_, bytes) = self.post("notify", self.notify_token.as_deref(), "notify", body.into()).await?;
        Self::parse(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_the_base_with_or_without_a_slash() {
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let c = DirectorClient::with_http(Url::parse(base).unwrap(), reqwest::Client::new());
            assert_eq!(c.url("notify").as_str(), "http://127.0.0.1:8080/notify");
        }
        let c = DirectorClient::with_http(Url::parse("https://h/push").unwrap(), reqwest::Client::new());
        assert_eq!(c.url("/subscribe").as_str(), "https://h/push/subscribe");
    }

    #[test]
    fn tokens_never_show_in_debug() {
        let c = DirectorClient::with_http(Url::parse("http://h/").unwrap(), reqwest::Client::new())
            .notify_token("secret-notify")
            .subscription_token("secret-sub");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
