//! The gateway's client of the Director's HTTP APIs.

use std::time::Duration;

use davpush_proto::{DirectorInfo, ErrorBody, NotifyRequest, SubscribeRequest, SubscribeResponse, UnsubscribeRequest};
use url::Url;

/// A Director call failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// The Director answered with an error.
    #[error("the Director answered {status}: {}", body.message)]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error body.
        body: ErrorBody,
    },
    /// The Director could not be reached or answered nonsense.
    #[error("the Director is unreachable: {0}")]
    Unreachable(String),
}

/// Talks to one Director.
#[derive(Debug, Clone)]
pub struct DirectorClient {
    base: Url,
    http: reqwest::Client,
    notify_token: String,
    subscription_token: String,
}

impl DirectorClient {
    /// A client of the Director at `base`.
    pub fn new(
        base: Url,
        notify_token: String,
        subscription_token: String,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(DirectorClient { base, http, notify_token, subscription_token })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("static paths join")
    }

    async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &T,
    ) -> Result<(u16, R), DirectorError> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| DirectorError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| DirectorError::Unreachable(e.to_string()))?;
        if (200..300).contains(&status) {
            let r = serde_json::from_slice(&bytes).map_err(|e| DirectorError::Unreachable(e.to_string()))?;
            Ok((status, r))
        } else {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                error: "unknown".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                field: None,
            });
            Err(DirectorError::Refused { status, body })
        }
    }

    /// `GET /info`.
    pub async fn info(&self) -> Result<DirectorInfo, DirectorError> {
        let resp =
            self.http.get(self.url("info")).send().await.map_err(|e| DirectorError::Unreachable(e.to_string()))?;
        resp.json().await.map_err(|e| DirectorError::Unreachable(e.to_string()))
    }

    /// `POST /subscribe`; returns whether it was created (201) and the answer.
    pub async fn subscribe(&self, req: &SubscribeRequest) -> Result<(bool, SubscribeResponse), DirectorError> {
        let (status, r) = self.post("subscribe", &self.subscription_token, req).await?;
        Ok((status == 201, r))
    }

    /// `POST /unsubscribe`; `Ok(false)` if nothing matched.
    pub async fn unsubscribe(&self, req: &UnsubscribeRequest) -> Result<bool, DirectorError> {
        match self.post::<_, serde_json::Value>("unsubscribe", &self.subscription_token, req).await {
            Ok(_) => Ok(true),
            Err(DirectorError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /notify`.
    pub async fn notify(&self, req: &NotifyRequest) -> Result<(), DirectorError> {
        self.post::<_, serde_json::Value>("notify", &self.notify_token, req).await.map(|_| ())
    }
}
