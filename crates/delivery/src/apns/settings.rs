//! APNs settings: `[apns]` as configured ([`RawApns`]) and validated ([`ApnsSettings`],
//! [`ApnsConfig`] with the signing key).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ApnsKey;
use crate::engine::EngineSettings;
use crate::settings::{RawDelivery, SettingsError, file, invalid, required, url};

/// Production or sandbox (development builds of an app get sandbox tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// `https://api.push.apple.com`.
    Production,
    /// `https://api.sandbox.push.apple.com`.
    Sandbox,
}

impl ApnsEnvironment {
    /// Apple's host for this environment.
    pub fn base_url(self) -> &'static str {
        match self {
            ApnsEnvironment::Production => "https://api.push.apple.com",
            ApnsEnvironment::Sandbox => "https://api.sandbox.push.apple.com",
        }
    }
}

/// `apns-push-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsPushType {
    /// Silent: `{"aps":{"content-available":1}}`, priority 5; the app syncs in the background.
    Background,
    /// Visible alert (for apps that show one), priority 10.
    Alert,
}

/// APNs settings.
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    /// Environment (the default base URL).
    pub environment: ApnsEnvironment,
    /// Overrides the environment's base URL (tests, proxies).
    pub base_url: Option<String>,
    /// PEM root certificates to trust instead of the system's (tests).
    pub ca_pem: Option<Vec<u8>>,
    /// Key id (`kid`), 10 characters.
    pub key_id: String,
    /// Team id (`iss`), 10 characters.
    pub team_id: String,
    /// `apns-topic`: the app's bundle id.
    pub bundle_id: String,
    /// `apns-push-type`.
    pub push_type: ApnsPushType,
    /// `apns-priority`; `None`: 5 for background, 10 for alert.
    pub priority: Option<u8>,
    /// Alert text, for `Alert` pushes.
    pub alert_body: String,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Engine limits.
    pub engine: EngineSettings,
}

impl ApnsSettings {
    /// The base URL in force.
    pub fn url(&self) -> String {
        self.base_url.clone().unwrap_or_else(|| self.environment.base_url().to_owned()).trim_end_matches('/').to_owned()
    }

    /// The priority in force.
    pub fn priority(&self) -> u8 {
        self.priority.unwrap_or(match self.push_type {
            ApnsPushType::Background => 5,
            ApnsPushType::Alert => 10,
        })
    }
}

/// `[apns]`: Apple Push Notification service, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApns {
    /// Offer `push_services.apns`.
    pub enabled: bool,
    /// `production` or `sandbox`.
    pub environment: ApnsEnvironment,
    /// Overrides the environment's host.
    pub base_url: String,
    /// PEM roots to trust instead of the system's (tests, TLS-inspecting proxies).
    pub ca_file: PathBuf,
    /// The `.p8` signing key.
    pub key_file: PathBuf,
    /// Its key id (10 characters).
    pub key_id: String,
    /// The team id (10 characters).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub bundle_id: String,
    /// `background` or `alert`.
    pub push_type: ApnsPushType,
    /// `apns-priority` (1, 5 or 10); 0: 5 for background, 10 for alert.
    pub priority: u8,
    /// Alert text for `alert` pushes.
    pub alert_body: String,
    /// TTL, timeout, workers, queue and retries.
    #[serde(flatten)]
    pub delivery: RawDelivery,
}

impl Default for RawApns {
    fn default() -> Self {
        RawApns {
            enabled: false,
            environment: ApnsEnvironment::Production,
            base_url: String::new(),
            ca_file: PathBuf::new(),
            key_file: PathBuf::new(),
            key_id: String::new(),
            team_id: String::new(),
            bundle_id: String::new(),
            push_type: ApnsPushType::Background,
            priority: 0,
            alert_body: "Your calendars or contacts changed".into(),
            delivery: RawDelivery::default(),
        }
    }
}

impl TryFrom<&RawApns> for ApnsSettings {
    type Error = SettingsError;

    /// Validates `r` and reads `ca_file` (if set).
    fn try_from(r: &RawApns) -> Result<Self, SettingsError> {
        let engine = r.delivery.engine("apns")?;
        if ![0, 1, 5, 10].contains(&r.priority) {
            return Err(invalid("apns.priority", "must be 1, 5 or 10 (0: by push type)"));
        }
        if r.push_type == ApnsPushType::Background && r.priority == 10 {
            return Err(invalid(
                "apns.priority",
                "background pushes must not use priority 10 (APNs answers BadPriority)",
            ));
        }
        for (key, v) in [("apns.key_id", &r.key_id), ("apns.team_id", &r.team_id)] {
            if v.len() != 10 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid(key, "must be the 10-character identifier from the Apple developer account"));
            }
        }
        required("apns.bundle_id", &r.bundle_id)?;
        let ca_pem = if r.ca_file.as_os_str().is_empty() {
            None
        } else {
            let pem = std::fs::read(&r.ca_file)
                .map_err(|e| invalid("apns.ca_file", format!("{}: {e}", r.ca_file.display())))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid("apns.ca_file", "holds no PEM certificate"));
            }
            Some(pem)
        };
        Ok(ApnsSettings {
            environment: r.environment,
            base_url: if r.base_url.is_empty() { None } else { Some(url("apns.base_url", &r.base_url)?) },
            ca_pem,
            key_id: r.key_id.clone(),
            team_id: r.team_id.clone(),
            bundle_id: r.bundle_id.clone(),
            push_type: r.push_type,
            priority: (r.priority != 0).then_some(r.priority),
            alert_body: r.alert_body.clone(),
            timeout: r.delivery.timeout(),
            engine,
        })
    }
}

/// Validated `[apns]` with its signing key read.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// Settings.
    pub settings: ApnsSettings,
    /// The signing key.
    pub key: Arc<ApnsKey>,
}

impl TryFrom<&RawApns> for ApnsConfig {
    type Error = SettingsError;

    fn try_from(r: &RawApns) -> Result<Self, SettingsError> {
        let settings = ApnsSettings::try_from(r)?;
        let key =
            ApnsKey::load(&file("apns.key_file", &r.key_file)?).map_err(|e| invalid("apns.key_file", e.to_string()))?;
        Ok(ApnsConfig { settings, key: Arc::new(key) })
    }
}
