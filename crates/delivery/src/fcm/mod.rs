//! Google Firebase Cloud Messaging (HTTP v1), directly or through an FCM relay.
//!
//! `push_services.fcm` parameters: `{"registration_token": "<FCM registration token>"}` (the
//! draft's sample). Messages are data-only and high priority: `data` carries `topic` (and
//! `sync_token`/`trigger` when known; through a relay only `topic`), `android.collapse_key` is
//! a hash of the topic, so the device keeps only the newest message of a collection.
//!
//! Two modes ([`FcmMode`]): per token (one `messages:send` per subscription), or per topic:
//! subscribing joins the token to the FCM topic `<prefix>.<hash of the topic>` (Instance ID
//! `batchAdd`, batched; [`crate::membership`]) and leaving removes it; a notification is then
//! one message to that topic, however many devices listen.

pub mod client;
pub mod error;
pub mod relay;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::feedback::Feedback;
use davpush_core::transport::TargetError;
use davpush_core::{
    Metrics, PushMessage, RemoteTarget, ServiceKind, Subscription, SubscriptionStore, Target, TargetData,
};
use serde::{Deserialize, Serialize};

pub use crate::transport::{message_data, topic_name};
pub use client::{FcmClient, Recipient, ServiceAccount};
pub use relay::{RelayClient, RelayKey};
pub use settings::{FcmConfig, FcmMode, FcmSettings, FcmUpstream, RawFcm, RawRelayFcm, RelayFcmConfig};

use crate::auth::{is_push_token, topic_hash};
use crate::engine::{Deliver, Engine, Outcome};
use crate::membership::{BatchError, Membership, MembershipApi, Op, TokenResult};
use crate::transport::{EngineTransport, TargetParser};

/// The subscription parameters as stored (canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmParams {
    /// The app instance's FCM registration token.
    pub registration_token: String,
}

/// A parsed FCM destination.
#[derive(Debug, Clone)]
pub struct FcmTarget {
    token: String,
}

impl TargetData for FcmTarget {
    fn params(&self) -> String {
        serde_json::json!({ "registration_token": self.token }).to_string()
    }
}

/// Parses and validates parameters.
pub fn parse_params(params: &serde_json::Value) -> Result<Target, TargetError> {
    let p: FcmParams = Deserialize::deserialize(params).map_err(|e| TargetError::new(None, e.to_string()))?;
    if !is_push_token(&p.registration_token) {
        return Err(TargetError::new(
            Some("registration_token"),
            "`registration_token` must be 1–4096 characters of A–Z a–z 0–9 - _ : .".into(),
        ));
    }
    Ok(Target::Remote(RemoteTarget::new(ServiceKind::Fcm, FcmTarget { token: p.registration_token })))
}

/// Where messages go: FCM itself, or a relay.
#[derive(Debug)]
pub enum Upstream {
    /// FCM with our own service account.
    Direct(FcmClient),
    /// A relay that holds the credentials.
    Relay(RelayClient),
}

/// Delivers through the upstream; also the membership API of topic mode.
#[derive(Debug)]
pub struct FcmSender {
    upstream: Upstream,
    prefix: String,
}

impl FcmSender {
    /// A sender; `prefix` names FCM topics (direct mode).
    pub fn new(upstream: Upstream, prefix: String) -> Self {
        FcmSender { upstream, prefix }
    }
}

#[async_trait]
impl Deliver for FcmSender {
    async fn deliver(&self, sub: &Subscription, message: &PushMessage, ttl: Duration) -> Outcome {
        let Some(t) = (match &sub.target {
            Target::Remote(r) => r.data::<FcmTarget>(),
            _ => None,
        }) else {
            return Outcome::Rejected("not an FCM subscription".into());
        };
        let n = &message.notification;
        match &self.upstream {
            Upstream::Direct(c) => {
                c.send(Recipient::Token(&t.token), &message_data(n, true), ttl, &topic_hash(n.topic.as_str())).await
            }
            Upstream::Relay(r) => r.push(n.topic.as_str(), Some(&t.token)).await,
        }
    }

    async fn deliver_topic(&self, message: &PushMessage, ttl: Duration) -> Outcome {
        let n = &message.notification;
        match &self.upstream {
            Upstream::Direct(c) => {
                let name = topic_name(&self.prefix, n.topic.as_str());
                c.send(Recipient::Topic(&name), &message_data(n, true), ttl, &topic_hash(n.topic.as_str())).await
            }
            Upstream::Relay(r) => r.push(n.topic.as_str(), None).await,
        }
    }
}

#[async_trait]
impl MembershipApi for FcmSender {
    async fn change(&self, op: Op, topic: &str, tokens: &[String]) -> Result<Vec<TokenResult>, BatchError> {
        match &self.upstream {
            Upstream::Direct(c) => c.membership(op, &topic_name(&self.prefix, topic), tokens).await,
            Upstream::Relay(r) => r.membership(op, topic, tokens).await,
        }
    }
}

/// How `fcm` subscriptions read.
#[derive(Debug, Clone, Copy, Default)]
pub struct FcmTargets;

impl TargetParser for FcmTargets {
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        parse_params(params)
    }

    fn token<'a>(&self, sub: &'a Subscription) -> Option<&'a str> {
        match &sub.target {
            Target::Remote(r) => r.data::<FcmTarget>().map(|t| t.token.as_str()),
            _ => None,
        }
    }
}

/// The `fcm` push service.
pub type FcmTransport = EngineTransport<FcmTargets>;

impl EngineTransport<FcmTargets> {
    /// Starts the engine (and, in topic mode, the membership task) of the `fcm` service.
    pub fn start(
        sender: Arc<FcmSender>,
        settings: &FcmSettings,
        feedback: Feedback,
        metrics: Arc<Metrics>,
        store: Arc<dyn SubscriptionStore>,
    ) -> Self {
        let membership = (settings.mode == FcmMode::Topic).then(|| {
            Membership::start(
                ServiceKind::Fcm,
                sender.clone(),
                settings.membership.clone(),
                feedback.clone(),
                metrics.clone(),
            )
        });
        let engine = Engine::start(
            ServiceKind::Fcm,
            sender,
            settings.engine.with_request_timeout(settings.timeout),
            feedback,
            metrics,
            store,
        );
        EngineTransport::new(ServiceKind::Fcm, FcmTargets, engine, membership)
    }
}

#[cfg(test)]
mod tests {
    use davpush_core::Notification;

    use super::*;

    #[test]
    fn params_are_validated() {
        let t = parse_params(&serde_json::json!({"registration_token": "dXo1:APA91bH-x_y"})).unwrap();
        assert!(t.is_durable());
        assert_eq!(t.to_json(), r#"{"registration_token":"dXo1:APA91bH-x_y"}"#);
        let e = parse_params(&serde_json::json!({"registration_token": "a b"})).unwrap_err();
        assert_eq!(e.field, Some("registration_token"));
        let e = parse_params(&serde_json::json!({"token": "x"})).unwrap_err();
        assert!(e.message.contains("token"), "{e}");
    }

    #[test]
    fn topic_names_are_valid_fcm_topics() {
        let n = topic_name("davpush", "f0ec984b-4b19-4652-91f2-92c6d81c3c09");
        assert!(n.starts_with("davpush.") && n.len() == 8 + 32);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
    }

    #[test]
    fn message_body_is_data_only_and_high_priority() {
        let n = Notification {
            topic: davpush_core::Topic::parse("cal-1", 64).unwrap(),
            sync_token: Some("7".into()),
            trigger: None,
        };
        let b = client::message_body(Recipient::Token("tok"), &message_data(&n, true), Duration::from_secs(60), "k");
        assert_eq!(
            b,
            serde_json::json!({"message": {"token": "tok", "data": {"topic": "cal-1", "sync_token": "7"},
                "android": {"priority": "high", "ttl": "60s", "collapse_key": "k"}}})
        );
        assert_eq!(message_data(&n, false).len(), 1);
    }
}
