//! Relay configuration: a TOML file (every key optional, unknown keys refused), validated into
//! [`RelayConfig`] with errors that name the key. See `examples/relay.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use davpush_delivery::fcm::RawRelayFcm as RawFcm;
use davpush_delivery::fcm::{FcmSettings, RelayFcmConfig, ServiceAccount};
use davpush_delivery::settings::SettingsError;
use serde::{Deserialize, Serialize};

use crate::limit::Rate;

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key.
    #[error("invalid relay config: {0}")]
    Parse(String),
    /// `[fcm]` is invalid (the message names the key).
    #[error("invalid relay config: {0}")]
    Fcm(#[from] SettingsError),
    /// A value is out of range or a file unusable.
    #[error("invalid relay config: `{key}`: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// The file's shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRelayConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[fcm]`
    pub fcm: RawFcm,
    /// `[keys]`
    pub keys: RawKeys,
    /// `[limits]`
    pub limits: RawLimits,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: String,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a reverse proxy).
    pub trust_forwarded_for: bool,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// A new connection must complete its first request head within this, seconds.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in progress is closed after this, seconds.
    pub idle_timeout_secs: u64,
    /// Connections without a complete request yet; beyond it the oldest is closed.
    pub max_pending_connections: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8090".into(),
            trust_forwarded_for: false,
            metrics: true,
            max_body_bytes: 256 * 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_pending_connections: 1024,
        }
    }
}

/// `[keys]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeys {
    /// The issued installation keys (hashes), managed by `davpush relay issue-key/revoke-key`.
    pub file: PathBuf,
    /// Files holding one pseudo-public app key each.
    pub app_key_files: Vec<PathBuf>,
    /// How often the keys file is checked for changes, seconds.
    pub reload_secs: u64,
}

impl Default for RawKeys {
    fn default() -> Self {
        RawKeys { file: PathBuf::from("relay-keys.json"), app_key_files: Vec::new(), reload_secs: 5 }
    }
}

/// `[limits]`: requests per minute and burst, per installation key, per app-key caller (per
/// source address), per source address (all requests, before authentication), per push token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Per installation key, per minute.
    pub key_per_minute: u32,
    /// Per installation key, at once.
    pub key_burst: u32,
    /// Per source address using an app key, per minute.
    pub app_key_per_minute: u32,
    /// Per source address using an app key, at once.
    pub app_key_burst: u32,
    /// Per source address, per minute.
    pub ip_per_minute: u32,
    /// Per source address, at once.
    pub ip_burst: u32,
    /// Per push token, per minute.
    pub token_per_minute: u32,
    /// Per push token, at once.
    pub token_burst: u32,
    /// Keys tracked per limiter at most.
    pub max_tracked: usize,
    /// Tokens in one membership request at most (FCM's limit is 1000).
    pub max_membership_tokens: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            key_per_minute: 6000,
            key_burst: 1000,
            app_key_per_minute: 60,
            app_key_burst: 20,
            ip_per_minute: 12_000,
            ip_burst: 2000,
            token_per_minute: 10,
            token_burst: 5,
            max_tracked: 200_000,
            max_membership_tokens: 1000,
        }
    }
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Per installation key.
    pub key: Rate,
    /// Per app-key caller.
    pub app_key: Rate,
    /// Per source address.
    pub ip: Rate,
    /// Per push token.
    pub token: Rate,
    /// Keys tracked per limiter.
    pub max_tracked: usize,
    /// Tokens per membership request.
    pub max_membership_tokens: usize,
}

/// A secret app key: never printed.
#[derive(Clone)]
pub struct AppKey(pub(crate) String);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(***)")
    }
}

/// Validated configuration.
#[derive(Debug)]
pub struct RelayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Use `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Serve metrics.
    pub metrics: bool,
    /// Largest body.
    pub max_body_bytes: usize,
    /// Header-read and idle timeouts, pending-connection cap (`server.*`).
    pub connections: davpush_serve::Limits,
    /// The vendor's service account.
    pub account: std::sync::Arc<ServiceAccount>,
    /// FCM client settings.
    pub fcm: FcmSettings,
    /// `android.ttl` of forwarded messages.
    pub ttl: Duration,
    /// Issued keys file.
    pub keys_file: PathBuf,
    /// App keys.
    pub app_keys: Vec<AppKey>,
    /// Keys file check interval.
    pub reload: Duration,
    /// Rate limits.
    pub limits: Limits,
}

impl RawRelayConfig {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_toml(&text)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}

impl RelayConfig {
    /// Validates `raw` and reads the credentials and app keys.
    pub fn from_raw(raw: RawRelayConfig) -> Result<Self, ConfigError> {
        let listen = davpush_serve::resolve_listen(&raw.server.listen).map_err(|e| invalid("server.listen", e))?;
        if raw.server.max_body_bytes < 256 {
            return Err(invalid("server.max_body_bytes", "must be at least 256"));
        }
        let srv = &raw.server;
        for (key, v) in [
            ("server.header_read_timeout_secs", srv.header_read_timeout_secs),
            ("server.idle_timeout_secs", srv.idle_timeout_secs),
            ("server.max_pending_connections", srv.max_pending_connections as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let connections = davpush_serve::Limits {
            header_read_timeout: Duration::from_secs(srv.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(srv.idle_timeout_secs),
            max_pending_connections: srv.max_pending_connections,
        };
        let fcm = RelayFcmConfig::try_from(&raw.fcm)?;
        if raw.keys.reload_secs == 0 {
            return Err(invalid("keys.reload_secs", "must be at least 1"));
        }
        if raw.keys.file.as_os_str().is_empty() {
            return Err(invalid("keys.file", "is required (it may not exist yet)"));
        }
        let mut app_keys = Vec::new();
        for f in &raw.keys.app_key_files {
            let k = davpush_delivery::auth::read_secret(f).map_err(|e| invalid("keys.app_key_files", e.to_string()))?;
            if k.len() < 16 || k.starts_with("dpr1.") || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "keys.app_key_files",
                    "an app key must be at least 16 visible ASCII characters, not starting with dpr1.",
                ));
            }
            app_keys.push(AppKey(k));
        }
        let l = &raw.limits;
        for (key, v) in [
            ("limits.key_burst", l.key_burst),
            ("limits.app_key_burst", l.app_key_burst),
            ("limits.ip_burst", l.ip_burst),
            ("limits.token_burst", l.token_burst),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(1..=1000).contains(&l.max_membership_tokens) {
            return Err(invalid("limits.max_membership_tokens", "must lie between 1 and 1000"));
        }
        if l.max_tracked == 0 {
            return Err(invalid("limits.max_tracked", "must be at least 1"));
        }
        Ok(RelayConfig {
            listen,
            trust_forwarded_for: raw.server.trust_forwarded_for,
            metrics: raw.server.metrics,
            max_body_bytes: raw.server.max_body_bytes,
            connections,
            account: fcm.account,
            fcm: fcm.settings,
            ttl: fcm.ttl,
            keys_file: raw.keys.file.clone(),
            app_keys,
            reload: Duration::from_secs(raw.keys.reload_secs),
            limits: Limits {
                key: Rate { per_minute: l.key_per_minute, burst: l.key_burst },
                app_key: Rate { per_minute: l.app_key_per_minute, burst: l.app_key_burst },
                ip: Rate { per_minute: l.ip_per_minute, burst: l.ip_burst },
                token: Rate { per_minute: l.token_per_minute, burst: l.token_burst },
                max_tracked: l.max_tracked,
                max_membership_tokens: l.max_membership_tokens,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_examples_relay_toml_documents_every_key() {
        let text = include_str!("../../../examples/relay.toml");
        davpush_testkit::config::assert_example_documents_every_key(
            text,
            toml::Table::try_from(RawRelayConfig::default()).unwrap(),
            "examples/relay.toml",
        );
    }

    #[test]
    fn the_example_parses_and_errors_name_the_key() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/relay.toml")).unwrap();
        let raw = RawRelayConfig::from_toml(&text).unwrap();
        assert_eq!(raw.limits.token_burst, 5);
        let e = RelayConfig::from_raw(raw).unwrap_err().to_string();
        assert!(e.contains("fcm.credentials_file"), "{e}");
        let e = RawRelayConfig::from_toml("[limits]\nper_token = 1\n").unwrap_err().to_string();
        assert!(e.contains("per_token"), "{e}");
        for key in ["header_read_timeout_secs", "idle_timeout_secs", "max_pending_connections"] {
            let raw = RawRelayConfig::from_toml(&format!("[server]\n{key} = 0\n")).unwrap();
            let e = RelayConfig::from_raw(raw).unwrap_err().to_string();
            assert!(e.contains(&format!("server.{key}")), "{e}");
        }
    }
}
