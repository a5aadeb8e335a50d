//! Huawei Push Kit (HMS Core, `v1` API).
//!
//! `push_services.hms` parameters: `{"token": "<HMS push token>"}`. The access token comes from
//! the OAuth client-credentials grant (client id + secret) and is cached for its lifetime (HMS
//! flow-controls token requests). A notification is a data message: `message.data` is the JSON
//! string `{"topic":…,"sync_token":…}`, `android.urgency` `HIGH`, `android.ttl` the message's TTL.
//! Topic mode joins tokens to the HMS topic `<prefix>.<hash>` (`topic:subscribe`, batched) and
//! sends one message per topic (`message.topic`).

pub mod error;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::feedback::Feedback;
use davpush_core::transport::TargetError;
use davpush_core::{
    Metrics, PushMessage, RemoteTarget, ServiceKind, Subscription, SubscriptionStore, Target, TargetData,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};

pub use settings::{HmsConfig, HmsSettings, HmsUrgency, RawHms};

use crate::auth::{ConnectionGate, TokenCache, TokenError, api_client, is_push_token, retry_after, token_reply};
use crate::engine::{Deliver, Engine, Outcome};
use crate::membership::{BatchError, Membership, MembershipApi, Op, TokenResult};
use crate::transport::{EngineTransport, TargetParser, message_data, topic_name};

/// The subscription parameters as stored (canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmsParams {
    /// The app's HMS push token.
    pub token: String,
}

/// A parsed HMS destination.
#[derive(Debug, Clone)]
pub struct HmsTarget {
    token: String,
}

impl TargetData for HmsTarget {
    fn params(&self) -> String {
        serde_json::json!({ "token": self.token }).to_string()
    }
}

/// Parses and validates parameters.
pub fn parse_params(params: &serde_json::Value) -> Result<Target, TargetError> {
    let p: HmsParams = Deserialize::deserialize(params).map_err(|e| TargetError::new(None, e.to_string()))?;
    if !is_push_token(&p.token) {
        return Err(TargetError::new(Some("token"), "`token` must be 1–4096 characters of A–Z a–z 0–9 - _ : .".into()));
    }
    Ok(Target::Remote(RemoteTarget::new(ServiceKind::Hms, HmsTarget { token: p.token })))
}

/// The client secret.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        ClientSecret(s)
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(***)")
    }
}

/// The Push Kit client: sends messages and changes topic membership.
pub struct HmsSender {
    http: reqwest::Client,
    gate: ConnectionGate,
    client_id: String,
    secret: ClientSecret,
    token_url: String,
    api: String,
    prefix: String,
    urgency: String,
    tokens: TokenCache,
}

impl std::fmt::Debug for HmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsSender").field("api", &self.api).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

impl HmsSender {
    /// A client for `settings` with the app's client secret.
    pub fn new(secret: ClientSecret, settings: &HmsSettings) -> Result<Self, reqwest::Error> {
        Ok(HmsSender {
            http: api_client(settings.timeout).build()?,
            gate: ConnectionGate::default(),
            client_id: settings.client_id.clone(),
            secret,
            token_url: settings.token_url.clone(),
            api: format!("{}/v1/{}", settings.base_url.trim_end_matches('/'), settings.app_id),
            prefix: settings.topic_prefix.clone(),
            urgency: settings.urgency.clone(),
            tokens: TokenCache::default(),
        })
    }

    async fn access_token(&self) -> Result<Arc<str>, TokenError> {
        self.tokens
            .get(|| async {
                let form: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", &self.secret.0)
                    .finish();
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

    /// Posts `body` to `{api}/{path}` with the access token, renewing it once if HMS says so.
    /// Returns the status, `Retry-After` and body, or the outcome of a failure.
    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<(u16, Option<Duration>, String), Outcome> {
        let url = format!("{}/{path}", self.api);
        for attempt in 0..2 {
            let token = self.access_token().await.map_err(|e| e.outcome())?;
            let req = self.http.post(&url).header(AUTHORIZATION, format!("Bearer {token}")).json(body);
            let resp = self
                .gate
                .run(req.send(), |r| r.is_ok())
                .await
                .map_err(|e| Outcome::Retry { after: None, reason: format!("request to HMS failed: {e}") })?;
            let status = resp.status().as_u16();
            let retry = retry_after(resp.headers().get(RETRY_AFTER));
            let text = resp.text().await.unwrap_or_default();
            if attempt == 0 && error::needs_new_token(status, &error::parse(&text).0) {
                self.tokens.invalidate(&token);
                continue;
            }
            return Ok((status, retry, text));
        }
        Err(Outcome::Retry { after: None, reason: "HMS refused two fresh access tokens".into() })
    }

    async fn send(&self, token: Option<&str>, message: &PushMessage, ttl: Duration) -> Outcome {
        let n = &message.notification;
        let data = serde_json::Value::Object(message_data(n, true)).to_string();
        let mut msg = serde_json::json!({
            "data": data,
            "android": {"urgency": self.urgency, "ttl": format!("{}s", ttl.as_secs())},
        });
        match token {
            Some(t) => msg["token"] = serde_json::json!([t]),
            None => msg["topic"] = topic_name(&self.prefix, n.topic.as_str()).into(),
        }
        match self.post("messages:send", &serde_json::json!({"validate_only": false, "message": msg})).await {
            Ok((status, retry, text)) => error::classify(status, retry, &text, token),
            Err(o) => o,
        }
    }
}

#[async_trait]
impl Deliver for HmsSender {
    async fn deliver(&self, sub: &Subscription, message: &PushMessage, ttl: Duration) -> Outcome {
        match &sub.target {
            Target::Remote(r) => match r.data::<HmsTarget>() {
                Some(t) => self.send(Some(&t.token), message, ttl).await,
                None => Outcome::Rejected("not an HMS subscription".into()),
            },
            _ => Outcome::Rejected("not an HMS subscription".into()),
        }
    }

    async fn deliver_topic(&self, message: &PushMessage, ttl: Duration) -> Outcome {
        self.send(None, message, ttl).await
    }
}

#[async_trait]
impl MembershipApi for HmsSender {
    async fn change(&self, op: Op, topic: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError> {
        let path = match op {
            Op::Add => "topic:subscribe",
            Op::Remove => "topic:unsubscribe",
        };
        let body = serde_json::json!({"topic": topic_name(&self.prefix, topic), "tokenArray": tokens});
        let (status, _, text) = self
            .post(path, &body)
            .await
            .map_err(|o| BatchError { transient: matches!(o, Outcome::Retry { .. }), message: format!("{o:?}") })?;
        let (code, msg) = error::parse(&text);
        if status != 200 || code != error::SUCCESS {
            return Err(BatchError {
                transient: status == 429 || status >= 500,
                message: format!("HMS answered {status} code {code}: {msg}"),
            });
        }
        // {"successCount":…, "failureCount":…, "errors":[{"index":i, "reason":"…"}]}
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mut out = vec![TokenResult::Ok; tokens.len()];
        for e in v["errors"].as_array().into_iter().flatten() {
            let Some(i) = e["index"].as_u64().map(|i| i as usize).filter(|i| *i < out.len()) else { continue };
            let reason = e["reason"].as_str().map(str::to_owned).unwrap_or_else(|| e["reason"].to_string());
            out[i] = if reason.contains(error::ALL_TOKENS_INVALID)
                || reason.to_ascii_lowercase().contains("invalid token")
            {
                TokenResult::Gone(reason)
            } else {
                TokenResult::Failed(reason)
            };
        }
        Ok(out)
    }
}

/// How `hms` subscriptions read.
#[derive(Debug, Clone, Copy, Default)]
pub struct HmsTargets;

impl TargetParser for HmsTargets {
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        parse_params(params)
    }

    fn token<'a>(&self, sub: &'a Subscription) -> Option<&'a str> {
        match &sub.target {
            Target::Remote(r) => r.data::<HmsTarget>().map(|t| t.token.as_str()),
            _ => None,
        }
    }
}

/// The `hms` push service.
pub type HmsTransport = EngineTransport<HmsTargets>;

impl EngineTransport<HmsTargets> {
    /// Starts the engine (and, in topic mode, the membership task) of the `hms` service.
    pub fn start(
        sender: Arc<HmsSender>,
        settings: &HmsSettings,
        feedback: Feedback,
        metrics: Arc<Metrics>,
        store: Arc<dyn SubscriptionStore>,
    ) -> Self {
        let membership = settings.topic_mode.then(|| {
            Membership::start(
                ServiceKind::Hms,
                sender.clone(),
                settings.membership.clone(),
                feedback.clone(),
                metrics.clone(),
            )
        });
        let engine = Engine::start(
            ServiceKind::Hms,
            sender,
            settings.engine.with_request_timeout(settings.timeout),
            feedback,
            metrics,
            store,
        );
        EngineTransport::new(ServiceKind::Hms, HmsTargets, engine, membership)
    }
}
