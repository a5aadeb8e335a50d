//! FCM settings: where to send, how, and the engine limits; `[fcm]` as configured ([`RawFcm`])
//! and validated ([`FcmSettings`], [`FcmConfig`] with the credentials).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{RelayKey, ServiceAccount};
use crate::engine::EngineSettings;
use crate::membership::MembershipSettings;
pub use crate::settings::valid_topic_prefix;
use crate::settings::{RawDelivery, SettingsError, file, invalid, url};

/// How notifications reach FCM devices: one message per subscription (`message.token`), or
/// one per FCM topic that subscribing joins the device to (`message.topic`).
pub use crate::settings::Mode as FcmMode;

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

/// `[fcm]`: Google Firebase Cloud Messaging, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFcm {
    /// Offer `push_services.fcm`.
    pub enabled: bool,
    /// `token` (one message per subscription) or `topic` (one per topic).
    pub mode: FcmMode,
    /// The service-account JSON key (direct mode).
    pub credentials_file: PathBuf,
    /// An FCM relay instead of credentials.
    pub relay_url: String,
    /// The relay key (with `relay_url`).
    pub relay_key_file: PathBuf,
    /// FCM API base.
    pub base_url: String,
    /// Instance ID API base (topic membership).
    pub iid_url: String,
    /// OAuth token endpoint; empty: the key file's `token_uri`.
    pub token_url: String,
    /// Prefix of FCM topic names.
    pub topic_prefix: String,
    /// TTL, timeout, workers, queue and retries.
    #[serde(flatten)]
    pub delivery: RawDelivery,
}

impl Default for RawFcm {
    fn default() -> Self {
        let d = FcmSettings::default();
        RawFcm {
            enabled: false,
            mode: FcmMode::Token,
            credentials_file: PathBuf::new(),
            relay_url: String::new(),
            relay_key_file: PathBuf::new(),
            base_url: d.base_url,
            iid_url: d.iid_url,
            token_url: String::new(),
            topic_prefix: d.topic_prefix,
            delivery: RawDelivery::default(),
        }
    }
}

impl TryFrom<&RawFcm> for FcmSettings {
    type Error = SettingsError;

    fn try_from(r: &RawFcm) -> Result<Self, SettingsError> {
        let engine = r.delivery.engine("fcm")?;
        if !valid_topic_prefix(&r.topic_prefix) {
            return Err(invalid("fcm.topic_prefix", "must be 1–64 of A–Z a–z 0–9 _ . ~"));
        }
        Ok(FcmSettings {
            mode: r.mode,
            base_url: url("fcm.base_url", &r.base_url)?,
            iid_url: url("fcm.iid_url", &r.iid_url)?,
            token_url: if r.token_url.is_empty() { None } else { Some(url("fcm.token_url", &r.token_url)?) },
            topic_prefix: r.topic_prefix.clone(),
            timeout: r.delivery.timeout(),
            engine,
            membership: Default::default(),
        })
    }
}

/// Where FCM messages go.
#[derive(Debug, Clone)]
pub enum FcmUpstream {
    /// FCM itself, with this service account.
    Direct(Arc<ServiceAccount>),
    /// A relay.
    Relay {
        /// Its base URL.
        url: String,
        /// The key.
        key: RelayKey,
    },
}

/// Validated `[fcm]` with its credentials read.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// Settings.
    pub settings: FcmSettings,
    /// Direct or relay.
    pub upstream: FcmUpstream,
}

impl TryFrom<&RawFcm> for FcmConfig {
    type Error = SettingsError;

    /// Validates `r` (the mode, the delivery keys, the prefix) and reads the service account
    /// or the relay key. Creates nothing.
    fn try_from(r: &RawFcm) -> Result<Self, SettingsError> {
        let settings = FcmSettings::try_from(r)?;
        let upstream = match (r.credentials_file.as_os_str().is_empty(), r.relay_url.is_empty()) {
            (false, true) => {
                let account = ServiceAccount::load(&r.credentials_file)
                    .map_err(|e| invalid("fcm.credentials_file", e.to_string()))?;
                FcmUpstream::Direct(Arc::new(account))
            }
            (true, false) => {
                let key_file = file("fcm.relay_key_file", &r.relay_key_file)?;
                let key =
                    crate::auth::read_secret(&key_file).map_err(|e| invalid("fcm.relay_key_file", e.to_string()))?;
                if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid("fcm.relay_key_file", "must hold one relay key (visible ASCII)"));
                }
                FcmUpstream::Relay { url: url("fcm.relay_url", &r.relay_url)?, key: RelayKey::new(key) }
            }
            (false, false) => {
                return Err(invalid("fcm.relay_url", "give either fcm.credentials_file or fcm.relay_url, not both"));
            }
            (true, true) => {
                return Err(invalid(
                    "fcm.credentials_file",
                    "is required when FCM is enabled (or use an FCM relay: fcm.relay_url and fcm.relay_key_file)",
                ));
            }
        };
        Ok(FcmConfig { settings, upstream })
    }
}

/// `[fcm]` of an FCM relay (`davpush relay`): the client vendor's account, forwarded messages
/// always to topics. Fewer keys than the Director's [`RawFcm`]: the relay has no engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRelayFcm {
    /// The vendor's service-account JSON key.
    pub credentials_file: PathBuf,
    /// FCM API base.
    pub base_url: String,
    /// Instance ID API base.
    pub iid_url: String,
    /// Token endpoint; empty: the key file's `token_uri`.
    pub token_url: String,
    /// Prefix of FCM topic names (`<prefix>.<key id>.<hash>`).
    pub topic_prefix: String,
    /// `android.ttl` of forwarded messages, seconds.
    pub ttl_secs: u64,
    /// Timeout of one request to FCM, seconds.
    pub timeout_secs: u64,
}

impl Default for RawRelayFcm {
    fn default() -> Self {
        let d = FcmSettings::default();
        RawRelayFcm {
            credentials_file: PathBuf::new(),
            base_url: d.base_url,
            iid_url: d.iid_url,
            token_url: String::new(),
            topic_prefix: "davpush-relay".into(),
            ttl_secs: 86_400,
            timeout_secs: 30,
        }
    }
}

/// Validated `[fcm]` of a relay, with the vendor's account read.
#[derive(Debug, Clone)]
pub struct RelayFcmConfig {
    /// The vendor's service account.
    pub account: Arc<ServiceAccount>,
    /// Client settings (topic mode).
    pub settings: FcmSettings,
    /// `android.ttl` of forwarded messages.
    pub ttl: Duration,
}

impl TryFrom<&RawRelayFcm> for RelayFcmConfig {
    type Error = SettingsError;

    fn try_from(r: &RawRelayFcm) -> Result<Self, SettingsError> {
        if r.credentials_file.as_os_str().is_empty() {
            return Err(invalid("fcm.credentials_file", "is required: the vendor's FCM service-account JSON key"));
        }
        let account =
            ServiceAccount::load(&r.credentials_file).map_err(|e| invalid("fcm.credentials_file", e.to_string()))?;
        // FCM topic names also allow `-` (HMS's do not, hence the stricter shared check there).
        if !valid_topic_prefix(&r.topic_prefix.replace('-', "_")) {
            return Err(invalid("fcm.topic_prefix", "must be 1–64 of A–Z a–z 0–9 - _ . ~"));
        }
        for (key, v) in [("fcm.ttl_secs", r.ttl_secs), ("fcm.timeout_secs", r.timeout_secs)] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let settings = FcmSettings {
            mode: FcmMode::Topic,
            base_url: r.base_url.clone(),
            iid_url: r.iid_url.clone(),
            token_url: (!r.token_url.is_empty()).then(|| r.token_url.clone()),
            topic_prefix: r.topic_prefix.clone(),
            timeout: Duration::from_secs(r.timeout_secs),
            ..FcmSettings::default()
        };
        Ok(RelayFcmConfig { account: Arc::new(account), settings, ttl: Duration::from_secs(r.ttl_secs) })
    }
}
