//! HMS Push Kit settings: `[hms]` as configured ([`RawHms`]) and validated ([`HmsSettings`],
//! [`HmsConfig`] with the client secret).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ClientSecret;
use crate::engine::EngineSettings;
use crate::membership::MembershipSettings;
use crate::settings::{Mode, RawDelivery, SettingsError, file, invalid, required, url, valid_topic_prefix};

/// `android.urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HmsUrgency {
    /// `HIGH`: delivered at once (the default).
    #[default]
    High,
    /// `NORMAL`.
    Normal,
}

impl HmsUrgency {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            HmsUrgency::High => "HIGH",
            HmsUrgency::Normal => "NORMAL",
        }
    }
}

/// HMS settings.
#[derive(Debug, Clone)]
pub struct HmsSettings {
    /// The app id (`/v1/{app_id}/messages:send`).
    pub app_id: String,
    /// The OAuth client id (usually the app id).
    pub client_id: String,
    /// Topic mode: one message per topic (HMS topic subscription) instead of one per token.
    pub topic_mode: bool,
    /// Push API base (`https://push-api.cloud.huawei.com`).
    pub base_url: String,
    /// OAuth token endpoint (`https://oauth-login.cloud.huawei.com/oauth2/v3/token`).
    pub token_url: String,
    /// Prefix of HMS topic names.
    pub topic_prefix: String,
    /// `android.urgency`: `HIGH` or `NORMAL`.
    pub urgency: String,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Engine limits.
    pub engine: EngineSettings,
    /// Topic-membership batching.
    pub membership: MembershipSettings,
}

impl Default for HmsSettings {
    fn default() -> Self {
        HmsSettings {
            app_id: String::new(),
            client_id: String::new(),
            topic_mode: false,
            base_url: "https://push-api.cloud.huawei.com".into(),
            token_url: "https://oauth-login.cloud.huawei.com/oauth2/v3/token".into(),
            topic_prefix: "davpush".into(),
            urgency: HmsUrgency::High.as_str().into(),
            timeout: Duration::from_secs(30),
            engine: EngineSettings::default(),
            membership: MembershipSettings::default(),
        }
    }
}

/// `[hms]`: Huawei Push Kit, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHms {
    /// Offer `push_services.hms`.
    pub enabled: bool,
    /// `token` or `topic`.
    pub mode: Mode,
    /// The app id.
    pub app_id: String,
    /// The OAuth client id; empty: the app id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret_file: PathBuf,
    /// Push API base.
    pub base_url: String,
    /// OAuth token endpoint.
    pub token_url: String,
    /// Prefix of HMS topic names.
    pub topic_prefix: String,
    /// `HIGH` or `NORMAL`.
    pub urgency: HmsUrgency,
    /// TTL, timeout, workers, queue and retries.
    #[serde(flatten)]
    pub delivery: RawDelivery,
}

impl Default for RawHms {
    fn default() -> Self {
        let d = HmsSettings::default();
        RawHms {
            enabled: false,
            mode: Mode::Token,
            app_id: String::new(),
            client_id: String::new(),
            client_secret_file: PathBuf::new(),
            base_url: d.base_url,
            token_url: d.token_url,
            topic_prefix: d.topic_prefix,
            urgency: HmsUrgency::High,
            delivery: RawDelivery::default(),
        }
    }
}

impl TryFrom<&RawHms> for HmsSettings {
    type Error = SettingsError;

    fn try_from(r: &RawHms) -> Result<Self, SettingsError> {
        let engine = r.delivery.engine("hms")?;
        let app_id = required("hms.app_id", &r.app_id)?;
        if !app_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("hms.app_id", "must be the numeric app id from AppGallery Connect"));
        }
        if !valid_topic_prefix(&r.topic_prefix) {
            return Err(invalid("hms.topic_prefix", "must be 1–64 of A–Z a–z 0–9 _ . ~"));
        }
        Ok(HmsSettings {
            app_id: app_id.to_owned(),
            client_id: if r.client_id.is_empty() { app_id.to_owned() } else { r.client_id.clone() },
            topic_mode: r.mode == Mode::Topic,
            base_url: url("hms.base_url", &r.base_url)?,
            token_url: url("hms.token_url", &r.token_url)?,
            topic_prefix: r.topic_prefix.clone(),
            urgency: r.urgency.as_str().into(),
            timeout: r.delivery.timeout(),
            engine,
            membership: Default::default(),
        })
    }
}

/// Validated `[hms]` with its client secret read.
#[derive(Debug, Clone)]
pub struct HmsConfig {
    /// Settings.
    pub settings: HmsSettings,
    /// The client secret.
    pub secret: ClientSecret,
}

impl TryFrom<&RawHms> for HmsConfig {
    type Error = SettingsError;

    fn try_from(r: &RawHms) -> Result<Self, SettingsError> {
        let settings = HmsSettings::try_from(r)?;
        let secret = crate::auth::read_secret(&file("hms.client_secret_file", &r.client_secret_file)?)
            .map_err(|e| invalid("hms.client_secret_file", e.to_string()))?;
        if secret.is_empty() {
            return Err(invalid("hms.client_secret_file", "is empty"));
        }
        Ok(HmsConfig { settings, secret: ClientSecret::new(secret) })
    }
}
