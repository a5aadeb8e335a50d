//! FCM settings: where to send, how, and the engine limits.

use std::time::Duration;

use crate::engine::EngineSettings;
use crate::membership::MembershipSettings;

/// How notifications reach FCM devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcmMode {
    /// One message per subscription (`message.token`).
    Token,
    /// Subscribing joins the device to an FCM topic per davpush topic; a notification is one
    /// message to that topic (`message.topic`), however many devices listen.
    Topic,
}

/// FCM settings.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    /// Token or topic mode.
    pub mode: FcmMode,
    /// FCM API base (`https://fcm.googleapis.com`).
    pub base_url: String,
    /// Instance ID API base for topic membership (`https://iid.googleapis.com`).
    pub iid_url: String,
    /// OAuth token endpoint; `None`: the service account's `token_uri`.
    pub token_url: Option<String>,
    /// Prefix of FCM topic names (`<prefix>.<hash of the davpush topic>`).
    pub topic_prefix: String,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Engine limits (TTL, retries, workers).
    pub engine: EngineSettings,
    /// Topic-membership batching.
    pub membership: MembershipSettings,
}

impl Default for FcmSettings {
    fn default() -> Self {
        FcmSettings {
            mode: FcmMode::Token,
            base_url: "https://fcm.googleapis.com".into(),
            iid_url: "https://iid.googleapis.com".into(),
            token_url: None,
            topic_prefix: "davpush".into(),
            timeout: Duration::from_secs(30),
            engine: EngineSettings::default(),
            membership: MembershipSettings::default(),
        }
    }
}

/// Whether `p` may prefix topic names: 1–64 of `A–Z a–z 0–9 _ . ~` (valid for FCM and HMS).
pub fn valid_topic_prefix(p: &str) -> bool {
    !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.~".contains(&b))
}
