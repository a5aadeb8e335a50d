//! APNs settings.

use std::time::Duration;

use crate::engine::EngineSettings;

/// Production or sandbox (development builds of an app get sandbox tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
