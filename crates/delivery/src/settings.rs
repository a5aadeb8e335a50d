//! What every push service's configuration section shares: the delivery keys ([`RawDelivery`]),
//! token/topic [`Mode`], and [`SettingsError`], which names the dotted key that is wrong. Each
//! service's own section (`RawX` → `XSettings` through `TryFrom`) sits next to its code:
//! [`crate::webpush::settings`], [`crate::fcm::settings`], [`crate::apns::settings`],
//! [`crate::hms::settings`]. Converting only validates; credentials are read from the files
//! named, nothing is created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::EngineSettings;

/// A setting is missing, out of range or names an unusable file; `key` is dotted (`fcm.mode`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct SettingsError {
    /// The key, dotted (`fcm.credentials_file`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A [`SettingsError`] for `key`.
pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError { key: key.into(), message: message.into() }
}

/// The delivery keys every push-service section has (flattened into it: `[fcm] ttl_secs = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    /// How long a message is worth delivering, seconds (TTL).
    pub ttl_secs: u64,
    /// Timeout of one request, seconds.
    pub timeout_secs: u64,
    /// Requests in flight at once.
    pub workers: usize,
    /// Subscriptions (or topics) with a pending delivery at most.
    pub max_pending: usize,
    /// Attempts per message.
    pub max_attempts: u32,
    /// First retry delay, milliseconds.
    pub min_backoff_ms: u64,
    /// Longest retry delay, seconds.
    pub max_backoff_secs: u64,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            ttl_secs: 86_400,
            timeout_secs: 30,
            workers: 64,
            max_pending: 100_000,
            max_attempts: 8,
            min_backoff_ms: 1000,
            max_backoff_secs: 600,
        }
    }
}

impl RawDelivery {
    /// Checks that every key of `[section]` is at least 1; the engine settings for one origin
    /// (every worker may serve it; breaker and adaptive timeout at their defaults).
    pub fn engine(&self, section: &str) -> Result<EngineSettings, SettingsError> {
        for (name, v) in [
            ("ttl_secs", self.ttl_secs),
            ("timeout_secs", self.timeout_secs),
            ("workers", self.workers as u64),
            ("max_pending", self.max_pending as u64),
            ("max_attempts", u64::from(self.max_attempts)),
            ("min_backoff_ms", self.min_backoff_ms),
            ("max_backoff_secs", self.max_backoff_secs),
        ] {
            if v == 0 {
                return Err(invalid(format!("{section}.{name}"), "must be at least 1"));
            }
        }
        Ok(EngineSettings {
            workers: self.workers,
            max_pending: self.max_pending,
            max_attempts: self.max_attempts,
            min_backoff: Duration::from_millis(self.min_backoff_ms),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
            ttl: Duration::from_secs(self.ttl_secs),
            per_host_workers: self.workers,
            request_timeout: self.timeout(),
            ..EngineSettings::default()
        })
    }

    /// `timeout_secs` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// How notifications reach the devices of a mobile push service (FCM, HMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One message per subscription (`message.token`).
    #[default]
    Token,
    /// Subscribing joins the device to a service topic per davpush topic; a notification is one
    /// message to that topic (`message.topic`), however many devices listen.
    Topic,
}

/// `v` if it is non-blank.
pub(crate) fn required<'a>(key: &str, v: &'a str) -> Result<&'a str, SettingsError> {
    if v.trim().is_empty() { Err(invalid(key, "is required when the service is enabled")) } else { Ok(v) }
}

/// `v` without a trailing `/`, if it is an http(s) URL.
pub(crate) fn url(key: &str, v: &str) -> Result<String, SettingsError> {
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(key, format!("`{v}` is not an http(s) URL")))
    }
}

/// `p` if it is set.
pub(crate) fn file(key: &str, p: &Path) -> Result<PathBuf, SettingsError> {
    if p.as_os_str().is_empty() {
        Err(invalid(key, "is required when the service is enabled"))
    } else {
        Ok(p.to_owned())
    }
}

/// Whether `p` may prefix topic names: 1–64 of `A–Z a–z 0–9 _ . ~` (valid for FCM and HMS).
pub fn valid_topic_prefix(p: &str) -> bool {
    !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.~".contains(&b))
}

/// A section with `enabled` and its validated form: `Ok(None)` when it is off.
pub fn enabled<R, S>(enabled: bool, raw: R) -> Result<Option<S>, SettingsError>
where
    S: TryFrom<R, Error = SettingsError>,
{
    if enabled { S::try_from(raw).map(Some) } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[allow(dead_code)]
        enabled: bool,
        #[serde(flatten)]
        delivery: RawDelivery,
    }

    #[test]
    fn flattened_delivery_keys_keep_their_defaults_and_unknown_keys_are_refused() {
        let s: Section = toml::from_str("enabled = true\nworkers = 3\n").unwrap();
        assert_eq!(s.delivery.workers, 3);
        assert_eq!(s.delivery.ttl_secs, RawDelivery::default().ttl_secs);
        let e = toml::from_str::<Section>("enabled = true\nworker = 3\n").unwrap_err();
        assert!(e.to_string().contains("worker"), "{e}");
    }

    #[test]
    fn zero_delivery_values_name_their_key() {
        let raw = RawDelivery { max_attempts: 0, ..RawDelivery::default() };
        assert_eq!(raw.engine("hms").unwrap_err().key, "hms.max_attempts");
        assert_eq!(RawDelivery::default().engine("fcm").unwrap().per_host_workers, 64);
    }
}
