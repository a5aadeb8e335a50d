//! Web Push settings: `[web_push]` as configured ([`RawWebPush`]) and validated
//! ([`WebPushConfig`], whose delivery part is [`WebPushSettings`]). The VAPID key is not read
//! here: it may have to be generated, which start-up does.

use std::path::PathBuf;
use std::time::Duration;

use davpush_core::ServiceKind;
use serde::{Deserialize, Serialize};

use crate::egress::EgressPolicy;
use crate::engine::EngineSettings;
use crate::settings::{RawDelivery, SettingsError, invalid};

/// The `Urgency` header of RFC 8030 §5.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    /// `very-low`: on power and Wi-Fi only.
    VeryLow,
    /// `low`: on power or Wi-Fi.
    Low,
    /// `normal`: on neither (the default).
    #[default]
    Normal,
    /// `high`: even on low battery.
    High,
}

impl Urgency {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// `web_push.content_type`: the `Content-Type` of an encrypted (aes128gcm) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentType {
    /// The type of what was encrypted (`application/xml` for a WebDAV-Push message), as the
    /// WebDAV-Push draft says.
    #[default]
    Xml,
    /// `application/octet-stream`, as the Node `web-push` library, RustiCal and
    /// `web-push-testing` send (and the last requires).
    OctetStream,
}

/// Web Push settings.
#[derive(Debug, Clone)]
pub struct WebPushSettings {
    /// `Content-Type` of encrypted messages.
    pub content_type: ContentType,
    /// Accept subscriptions without encryption keys (plain body).
    pub allow_unencrypted: bool,
    /// `Urgency` header.
    pub urgency: Urgency,
    /// Requests in flight per push-service origin (the engine's `per_host_workers`).
    pub max_per_host: usize,
    /// Request timeout (also the ceiling of the engine's adaptive timeout).
    pub timeout: Duration,
    /// Engine limits (TTL, retries, workers, breaker); `per_host_workers` and `request_timeout`
    /// are taken from the two fields above.
    pub engine: EngineSettings,
}

impl Default for WebPushSettings {
    fn default() -> Self {
        WebPushSettings {
            content_type: ContentType::Xml,
            allow_unencrypted: false,
            urgency: Urgency::Normal,
            max_per_host: 16,
            timeout: Duration::from_secs(30),
            engine: EngineSettings::default(),
        }
    }
}

/// `[web_push]`: Web Push and UnifiedPush delivery, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebPush {
    /// Offer Web Push / UnifiedPush.
    pub enabled: bool,
    /// Service names offered: `web_push`, `unified_push`.
    pub services: Vec<String>,
    /// VAPID `sub` claim: a `mailto:` or `https:` contact for push services.
    pub subject: String,
    /// The VAPID private key (PKCS#8 PEM); empty: `<data_dir>/vapid-key.pem`, generated if missing.
    pub vapid_key_file: PathBuf,
    /// Accept subscriptions without `p256dh`/`auth` and send them plain messages.
    pub allow_unencrypted: bool,
    /// `Urgency` header: `very-low`, `low`, `normal` or `high`.
    pub urgency: Urgency,
    /// `Content-Type` of encrypted messages: `xml` (the type of the plain message, as the
    /// WebDAV-Push draft says) or `octet-stream` (what most Web Push libraries send).
    pub content_type: ContentType,
    /// Requests in flight per push-service origin (scheme, host, port).
    pub max_per_host: usize,
    /// Floor of the per-host adaptive timeout, milliseconds (the ceiling is `timeout_secs`).
    pub min_timeout_ms: u64,
    /// Consecutive transient failures or timeouts that open a host's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker holds the host's deliveries before one probe, seconds.
    pub breaker_cool_down_secs: u64,
    /// Hosts, IP addresses or CIDR networks that endpoints may use although not public.
    pub allow_hosts: Vec<String>,
    /// Accept plain `http` endpoints for allow-listed hosts.
    pub allow_http: bool,
    /// TTL, timeout, workers, queue and retries.
    #[serde(flatten)]
    pub delivery: RawDelivery,
}

impl Default for RawWebPush {
    fn default() -> Self {
        RawWebPush {
            enabled: true,
            services: vec!["web_push".into(), "unified_push".into()],
            subject: "mailto:postmaster@localhost".into(),
            vapid_key_file: PathBuf::new(),
            allow_unencrypted: false,
            urgency: Urgency::Normal,
            content_type: ContentType::Xml,
            max_per_host: 16,
            min_timeout_ms: 5000,
            breaker_failures: 5,
            breaker_cool_down_secs: 10,
            allow_hosts: Vec::new(),
            allow_http: false,
            delivery: RawDelivery::default(),
        }
    }
}

/// Validated `[web_push]`.
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    /// Service names offered.
    pub services: Vec<ServiceKind>,
    /// VAPID `sub`.
    pub subject: String,
    /// Where endpoints may point.
    pub policy: EgressPolicy,
    /// Delivery settings.
    pub settings: WebPushSettings,
    /// `vapid_key_file` as configured; empty: the caller's default (in its data directory).
    pub vapid_key_file: PathBuf,
}

impl TryFrom<&RawWebPush> for WebPushConfig {
    type Error = SettingsError;

    fn try_from(w: &RawWebPush) -> Result<Self, SettingsError> {
        let mut services = Vec::new();
        for name in &w.services {
            match name.parse::<ServiceKind>() {
                Ok(k @ (ServiceKind::WebPush | ServiceKind::UnifiedPush)) => services.push(k),
                _ => {
                    return Err(invalid(
                        "web_push.services",
                        format!("`{name}` is not one of `web_push`, `unified_push`"),
                    ));
                }
            }
        }
        if !(w.subject.starts_with("mailto:") || w.subject.starts_with("https:")) {
            return Err(invalid("web_push.subject", "must be a mailto: or https: URI (RFC 8292)"));
        }
        let engine = w.delivery.engine("web_push")?;
        for (key, v) in [
            ("web_push.max_per_host", w.max_per_host as u64),
            ("web_push.min_timeout_ms", w.min_timeout_ms),
            ("web_push.breaker_failures", u64::from(w.breaker_failures)),
            ("web_push.breaker_cool_down_secs", w.breaker_cool_down_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let policy = EgressPolicy::new(&w.allow_hosts, w.allow_http).map_err(|e| invalid("web_push.allow_hosts", e))?;
        let settings = WebPushSettings {
            content_type: w.content_type,
            allow_unencrypted: w.allow_unencrypted,
            urgency: w.urgency,
            max_per_host: w.max_per_host,
            timeout: w.delivery.timeout(),
            engine: EngineSettings {
                per_host_workers: w.max_per_host,
                min_timeout: Duration::from_millis(w.min_timeout_ms),
                breaker_failures: w.breaker_failures,
                breaker_cool_down: Duration::from_secs(w.breaker_cool_down_secs),
                ..engine
            },
        };
        Ok(WebPushConfig {
            services,
            subject: w.subject.clone(),
            policy,
            settings,
            vapid_key_file: w.vapid_key_file.clone(),
        })
    }
}
