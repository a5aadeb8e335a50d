//! Apple Push Notification service (provider API, token-based authentication, HTTP/2).
//!
//! `push_services.apns` parameters: `{"device_token": "<hex>"}`. A notification is a silent
//! push by default: `apns-push-type: background`, `apns-priority: 5`, body
//! `{"aps":{"content-available":1},"topic":…,"sync_token":…}`; `apns-collapse-id` is a hash of
//! the topic, so the device keeps only the newest push per collection; `apns-expiration` is the
//! end of the message's TTL. APNs has no broadcast topics for this use (its "topic" is the app's
//! bundle id): each subscription costs one request, multiplexed over one HTTP/2 connection.

pub mod client;
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

pub use client::{ApnsKey, ProviderToken};
pub use settings::{ApnsConfig, ApnsEnvironment, ApnsPushType, ApnsSettings, RawApns};

use crate::auth::{ConnectionGate, retry_after, topic_hash};
use crate::engine::{Deliver, Engine, Outcome};
use crate::transport::{EngineTransport, TargetParser};

/// The subscription parameters as stored (canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsParams {
    /// The device token the app got from `registerForRemoteNotifications`, hex.
    pub device_token: String,
}

/// A parsed APNs destination.
#[derive(Debug, Clone)]
pub struct ApnsTarget {
    token: String,
}

impl TargetData for ApnsTarget {
    fn params(&self) -> String {
        serde_json::json!({ "device_token": self.token }).to_string()
    }
}

/// Parses and validates parameters: an even number (16–200) of hex digits, kept lower-case.
/// Device tokens are 32 bytes today; Apple documents at most 100 bytes (200 hex digits).
pub fn parse_params(params: &serde_json::Value) -> Result<Target, TargetError> {
    let mut p: ApnsParams = Deserialize::deserialize(params).map_err(|e| TargetError::new(None, e.to_string()))?;
    let t = &p.device_token;
    if !(16..=200).contains(&t.len()) || !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TargetError::new(
            Some("device_token"),
            "`device_token` must be an even number (16–200) of hexadecimal digits".into(),
        ));
    }
    p.device_token = p.device_token.to_ascii_lowercase();
    Ok(Target::Remote(RemoteTarget::new(ServiceKind::Apns, ApnsTarget { token: p.device_token })))
}

/// Sends one notification per request.
pub struct ApnsSender {
    http: reqwest::Client,
    gate: ConnectionGate,
    url: String,
    token: ProviderToken,
    bundle_id: String,
    push_type: ApnsPushType,
    priority: String,
    alert_body: String,
}

impl std::fmt::Debug for ApnsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSender").field("url", &self.url).field("bundle_id", &self.bundle_id).finish_non_exhaustive()
    }
}

impl ApnsSender {
    /// A sender signing with `key`.
    pub fn new(key: Arc<ApnsKey>, settings: &ApnsSettings) -> Result<Self, reqwest::Error> {
        Ok(ApnsSender {
            http: client::http_client(settings)?,
            gate: ConnectionGate::default(),
            url: settings.url(),
            token: ProviderToken::new(key, settings.key_id.clone(), settings.team_id.clone()),
            bundle_id: settings.bundle_id.clone(),
            push_type: settings.push_type,
            priority: settings.priority().to_string(),
            alert_body: settings.alert_body.clone(),
        })
    }

    /// The JSON payload.
    pub fn payload(&self, message: &PushMessage) -> serde_json::Value {
        let n = &message.notification;
        let aps = match self.push_type {
            ApnsPushType::Background => serde_json::json!({"content-available": 1}),
            ApnsPushType::Alert => serde_json::json!({"alert": {"body": self.alert_body}, "content-available": 1}),
        };
        let mut body = serde_json::json!({"aps": aps, "topic": n.topic.as_str()});
        if let Some(s) = &n.sync_token {
            body["sync_token"] = s.as_str().into();
        }
        if let Some(t) = n.trigger {
            body["trigger"] = t.as_str().into();
        }
        body
    }
}

#[async_trait]
impl Deliver for ApnsSender {
    async fn deliver(&self, sub: &Subscription, message: &PushMessage, ttl: Duration) -> Outcome {
        let Some(t) = (match &sub.target {
            Target::Remote(r) => r.data::<ApnsTarget>(),
            _ => None,
        }) else {
            return Outcome::Rejected("not an APNs subscription".into());
        };
        let body = serde_json::to_vec(&self.payload(message)).expect("payload serializes");
        if body.len() > 4096 {
            return Outcome::Rejected(format!("payload of {} bytes exceeds APNs' 4096", body.len()));
        }
        let url = format!("{}/3/device/{}", self.url, t.token);
        let push_type = match self.push_type {
            ApnsPushType::Background => "background",
            ApnsPushType::Alert => "alert",
        };
        for attempt in 0..2 {
            let now = davpush_core::unix_now();
            let auth = self.token.header(now);
            let req = self
                .http
                .post(&url)
                .header(AUTHORIZATION, &*auth)
                .header(CONTENT_TYPE, "application/json")
                .header("apns-topic", &self.bundle_id)
                .header("apns-push-type", push_type)
                .header("apns-priority", &self.priority)
                .header("apns-expiration", (now + ttl.as_secs() as i64).to_string())
                .header("apns-collapse-id", topic_hash(message.notification.topic.as_str()))
                .body(body.clone());
            let resp = self.gate.run(req.send(), |r| r.is_ok()).await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => return Outcome::Retry { after: None, reason: format!("request to APNs failed: {e}") },
            };
            if resp.version() != reqwest::Version::HTTP_2 {
                return Outcome::Rejected(format!("APNs answered over {:?}; it speaks HTTP/2 only", resp.version()));
            }
            let status = resp.status().as_u16();
            let retry = retry_after(resp.headers().get(RETRY_AFTER));
            let text = if status == 200 { String::new() } else { resp.text().await.unwrap_or_default() };
            if attempt == 0 && error::needs_new_token(status, &error::reason(&text)) {
                self.token.invalidate(&auth);
                continue;
            }
            return error::classify(status, retry, &text);
        }
        Outcome::Retry { after: None, reason: "APNs refused two fresh provider tokens".into() }
    }
}

/// How `apns` subscriptions read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApnsTargets;

impl TargetParser for ApnsTargets {
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        parse_params(params)
    }
}

/// The `apns` push service (one message per device: APNs has no topics).
pub type ApnsTransport = EngineTransport<ApnsTargets>;

impl EngineTransport<ApnsTargets> {
    /// Starts the engine of the `apns` service.
    pub fn start(
        sender: Arc<ApnsSender>,
        settings: &ApnsSettings,
        feedback: Feedback,
        metrics: Arc<Metrics>,
        store: Arc<dyn SubscriptionStore>,
    ) -> Self {
        let engine = Engine::start(
            ServiceKind::Apns,
            sender,
            settings.engine.with_request_timeout(settings.timeout),
            feedback,
            metrics,
            store,
        );
        EngineTransport::new(ServiceKind::Apns, ApnsTargets, engine, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_are_validated_and_lower_cased() {
        let t = parse_params(&serde_json::json!({"device_token": "AB".repeat(32)})).unwrap();
        assert_eq!(t.to_json(), format!(r#"{{"device_token":"{}"}}"#, "ab".repeat(32)));
        assert!(parse_params(&serde_json::json!({"device_token": "ab".repeat(100)})).is_ok());
        for bad in ["abc", "zz".repeat(32).as_str(), "", "ab".repeat(101).as_str()] {
            let e = parse_params(&serde_json::json!({"device_token": bad})).unwrap_err();
            assert_eq!(e.field, Some("device_token"), "{bad}");
        }
    }
}
