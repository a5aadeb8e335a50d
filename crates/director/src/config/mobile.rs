//! `[fcm]`, `[apns]`, `[hms]`: the mobile push services. All are off by default: they need
//! credentials, which are read from files named here and never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use davpush_delivery::apns::{ApnsEnvironment, ApnsKey, ApnsPushType, ApnsSettings};
use davpush_delivery::engine::EngineSettings;
use davpush_delivery::fcm::settings::valid_topic_prefix;
use davpush_delivery::fcm::{FcmMode, FcmSettings, RelayKey, ServiceAccount};
use davpush_delivery::hms::{ClientSecret, HmsSettings};
use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The delivery keys every push-service section has (same meaning as in `[web_push]`).
macro_rules! delivery_fields {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
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
    };
}

const DEFAULT_DELIVERY: (u64, u64, usize, usize, u32, u64, u64) = (86_400, 30, 64, 100_000, 8, 1000, 600);

fn engine(
    section: &str,
    v: (u64, u64, usize, usize, u32, u64, u64),
) -> Result<(EngineSettings, Duration), ConfigError> {
    let names =
        ["ttl_secs", "timeout_secs", "workers", "max_pending", "max_attempts", "min_backoff_ms", "max_backoff_secs"];
    let values = [v.0, v.1, v.2 as u64, v.3 as u64, u64::from(v.4), v.5, v.6];
    for (n, x) in names.iter().zip(values) {
        if x == 0 {
            return Err(invalid(&format!("{section}.{n}"), "must be at least 1"));
        }
    }
    Ok((
        EngineSettings {
            workers: v.2,
            max_pending: v.3,
            max_attempts: v.4,
            min_backoff: Duration::from_millis(v.5),
            max_backoff: Duration::from_secs(v.6),
            ttl: Duration::from_secs(v.0),
            // One origin: every worker may serve it. The breaker and timeouts use the defaults.
            per_host_workers: v.2,
            request_timeout: Duration::from_secs(v.1),
            ..EngineSettings::default()
        },
        Duration::from_secs(v.1),
    ))
}

fn mode(key: &str, s: &str) -> Result<bool, ConfigError> {
    match s {
        "token" => Ok(false),
        "topic" => Ok(true),
        other => Err(invalid(key, format!("`{other}` is not one of `token`, `topic`"))),
    }
}

fn required<'a>(key: &str, v: &'a str) -> Result<&'a str, ConfigError> {
    if v.trim().is_empty() { Err(invalid(key, "is required when the service is enabled")) } else { Ok(v) }
}

fn url(key: &str, v: &str) -> Result<String, ConfigError> {
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(key, format!("`{v}` is not an http(s) URL")))
    }
}

fn file(key: &str, p: &Path) -> Result<PathBuf, ConfigError> {
    if p.as_os_str().is_empty() {
        Err(invalid(key, "is required when the service is enabled"))
    } else {
        Ok(p.to_owned())
    }
}

delivery_fields! {
    /// `[fcm]`: Google Firebase Cloud Messaging.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawFcm {
        /// Offer `push_services.fcm`.
        pub enabled: bool,
        /// `token` (one message per subscription) or `topic` (one per topic).
        pub mode: String,
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
    }
}

impl Default for RawFcm {
    fn default() -> Self {
        let d = FcmSettings::default();
        let e = DEFAULT_DELIVERY;
        RawFcm {
            enabled: false,
            mode: "token".into(),
            credentials_file: PathBuf::new(),
            relay_url: String::new(),
            relay_key_file: PathBuf::new(),
            base_url: d.base_url,
            iid_url: d.iid_url,
            token_url: String::new(),
            topic_prefix: d.topic_prefix,
            ttl_secs: e.0,
            timeout_secs: e.1,
            workers: e.2,
            max_pending: e.3,
            max_attempts: e.4,
            min_backoff_ms: e.5,
            max_backoff_secs: e.6,
        }
    }
}

/// Where the Director's FCM messages go.
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

/// Validated `[fcm]`.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// Settings.
    pub settings: FcmSettings,
    /// Direct or relay.
    pub upstream: FcmUpstream,
}

pub(super) fn fcm_config(r: &RawFcm) -> Result<Option<FcmConfig>, ConfigError> {
    if !r.enabled {
        return Ok(None);
    }
    let topic = mode("fcm.mode", &r.mode)?;
    let (engine, timeout) = engine(
        "fcm",
        (r.ttl_secs, r.timeout_secs, r.workers, r.max_pending, r.max_attempts, r.min_backoff_ms, r.max_backoff_secs),
    )?;
    if !valid_topic_prefix(&r.topic_prefix) {
        return Err(invalid("fcm.topic_prefix", "must be 1–64 of A–Z a–z 0–9 _ . ~"));
    }
    let upstream = match (r.credentials_file.as_os_str().is_empty(), r.relay_url.is_empty()) {
        (false, true) => {
            let account = ServiceAccount::load(&r.credentials_file)
                .map_err(|e| invalid("fcm.credentials_file", e.to_string()))?;
            FcmUpstream::Direct(Arc::new(account))
        }
        (true, false) => {
            let key_file = file("fcm.relay_key_file", &r.relay_key_file)?;
            let key = davpush_delivery::auth::read_secret(&key_file)
                .map_err(|e| invalid("fcm.relay_key_file", e.to_string()))?;
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
    let settings = FcmSettings {
        mode: if topic { FcmMode::Topic } else { FcmMode::Token },
        base_url: url("fcm.base_url", &r.base_url)?,
        iid_url: url("fcm.iid_url", &r.iid_url)?,
        token_url: if r.token_url.is_empty() { None } else { Some(url("fcm.token_url", &r.token_url)?) },
        topic_prefix: r.topic_prefix.clone(),
        timeout,
        engine,
        membership: Default::default(),
    };
    Ok(Some(FcmConfig { settings, upstream }))
}

delivery_fields! {
    /// `[apns]`: Apple Push Notification service.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawApns {
        /// Offer `push_services.apns`.
        pub enabled: bool,
        /// `production` or `sandbox`.
        pub environment: String,
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
        pub push_type: String,
        /// `apns-priority` (1, 5 or 10); 0: 5 for background, 10 for alert.
        pub priority: u8,
        /// Alert text for `alert` pushes.
        pub alert_body: String,
    }
}

impl Default for RawApns {
    fn default() -> Self {
        let e = DEFAULT_DELIVERY;
        RawApns {
            enabled: false,
            environment: "production".into(),
            base_url: String::new(),
            ca_file: PathBuf::new(),
            key_file: PathBuf::new(),
            key_id: String::new(),
            team_id: String::new(),
            bundle_id: String::new(),
            push_type: "background".into(),
            priority: 0,
            alert_body: "Your calendars or contacts changed".into(),
            ttl_secs: e.0,
            timeout_secs: e.1,
            workers: e.2,
            max_pending: e.3,
            max_attempts: e.4,
            min_backoff_ms: e.5,
            max_backoff_secs: e.6,
        }
    }
}

/// Validated `[apns]`.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// Settings.
    pub settings: ApnsSettings,
    /// The signing key.
    pub key: Arc<ApnsKey>,
}

pub(super) fn apns_config(r: &RawApns) -> Result<Option<ApnsConfig>, ConfigError> {
    if !r.enabled {
        return Ok(None);
    }
    let (engine, timeout) = engine(
        "apns",
        (r.ttl_secs, r.timeout_secs, r.workers, r.max_pending, r.max_attempts, r.min_backoff_ms, r.max_backoff_secs),
    )?;
    let environment = match r.environment.as_str() {
        "production" => ApnsEnvironment::Production,
        "sandbox" => ApnsEnvironment::Sandbox,
        other => return Err(invalid("apns.environment", format!("`{other}` is not one of `production`, `sandbox`"))),
    };
    let push_type = match r.push_type.as_str() {
        "background" => ApnsPushType::Background,
        "alert" => ApnsPushType::Alert,
        other => return Err(invalid("apns.push_type", format!("`{other}` is not one of `background`, `alert`"))),
    };
    if ![0, 1, 5, 10].contains(&r.priority) {
        return Err(invalid("apns.priority", "must be 1, 5 or 10 (0: by push type)"));
    }
    if push_type == ApnsPushType::Background && r.priority == 10 {
        return Err(invalid("apns.priority", "background pushes must not use priority 10 (APNs answers BadPriority)"));
    }
    for (key, v) in [("apns.key_id", &r.key_id), ("apns.team_id", &r.team_id)] {
        if v.len() != 10 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(key, "must be the 10-character identifier from the Apple developer account"));
        }
    }
    required("apns.bundle_id", &r.bundle_id)?;
    let key =
        ApnsKey::load(&file("apns.key_file", &r.key_file)?).map_err(|e| invalid("apns.key_file", e.to_string()))?;
    let ca_pem = if r.ca_file.as_os_str().is_empty() {
        None
    } else {
        let pem =
            std::fs::read(&r.ca_file).map_err(|e| invalid("apns.ca_file", format!("{}: {e}", r.ca_file.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid("apns.ca_file", "holds no PEM certificate"));
        }
        Some(pem)
    };
    let settings = ApnsSettings {
        environment,
        base_url: if r.base_url.is_empty() { None } else { Some(url("apns.base_url", &r.base_url)?) },
        ca_pem,
        key_id: r.key_id.clone(),
        team_id: r.team_id.clone(),
        bundle_id: r.bundle_id.clone(),
        push_type,
        priority: (r.priority != 0).then_some(r.priority),
        alert_body: r.alert_body.clone(),
        timeout,
        engine,
    };
    Ok(Some(ApnsConfig { settings, key: Arc::new(key) }))
}

delivery_fields! {
    /// `[hms]`: Huawei Push Kit.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawHms {
        /// Offer `push_services.hms`.
        pub enabled: bool,
        /// `token` or `topic`.
        pub mode: String,
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
        pub urgency: String,
    }
}

impl Default for RawHms {
    fn default() -> Self {
        let d = HmsSettings::default();
        let e = DEFAULT_DELIVERY;
        RawHms {
            enabled: false,
            mode: "token".into(),
            app_id: String::new(),
            client_id: String::new(),
            client_secret_file: PathBuf::new(),
            base_url: d.base_url,
            token_url: d.token_url,
            topic_prefix: d.topic_prefix,
            urgency: d.urgency,
            ttl_secs: e.0,
            timeout_secs: e.1,
            workers: e.2,
            max_pending: e.3,
            max_attempts: e.4,
            min_backoff_ms: e.5,
            max_backoff_secs: e.6,
        }
    }
}

/// Validated `[hms]`.
#[derive(Debug, Clone)]
pub struct HmsConfig {
    /// Settings.
    pub settings: HmsSettings,
    /// The client secret.
    pub secret: ClientSecret,
}

pub(super) fn hms_config(r: &RawHms) -> Result<Option<HmsConfig>, ConfigError> {
    if !r.enabled {
        return Ok(None);
    }
    let topic_mode = mode("hms.mode", &r.mode)?;
    let (engine, timeout) = engine(
        "hms",
        (r.ttl_secs, r.timeout_secs, r.workers, r.max_pending, r.max_attempts, r.min_backoff_ms, r.max_backoff_secs),
    )?;
    let app_id = required("hms.app_id", &r.app_id)?;
    if !app_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("hms.app_id", "must be the numeric app id from AppGallery Connect"));
    }
    if !["HIGH", "NORMAL"].contains(&r.urgency.as_str()) {
        return Err(invalid("hms.urgency", "must be HIGH or NORMAL"));
    }
    if !valid_topic_prefix(&r.topic_prefix) {
        return Err(invalid("hms.topic_prefix", "must be 1–64 of A–Z a–z 0–9 _ . ~"));
    }
    let secret = davpush_delivery::auth::read_secret(&file("hms.client_secret_file", &r.client_secret_file)?)
        .map_err(|e| invalid("hms.client_secret_file", e.to_string()))?;
    if secret.is_empty() {
        return Err(invalid("hms.client_secret_file", "is empty"));
    }
    let settings = HmsSettings {
        app_id: app_id.to_owned(),
        client_id: if r.client_id.is_empty() { app_id.to_owned() } else { r.client_id.clone() },
        topic_mode,
        base_url: url("hms.base_url", &r.base_url)?,
        token_url: url("hms.token_url", &r.token_url)?,
        topic_prefix: r.topic_prefix.clone(),
        urgency: r.urgency.clone(),
        timeout,
        engine,
        membership: Default::default(),
    };
    Ok(Some(HmsConfig { settings, secret: ClientSecret::new(secret) }))
}
