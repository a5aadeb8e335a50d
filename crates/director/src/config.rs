//! Configuration: defaults → TOML file → `DAVPUSH_*` environment → flags.
//!
//! [`RawConfig`] is what the file says (every key optional, unknown keys refused); it becomes a
//! [`Config`] through [`Config::from_raw`], where all validation happens and every error names
//! its key. The environment is passed in as a map so that tests never touch the process's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use davpush_core::Limits;
use davpush_delivery::egress::EgressPolicy;
use davpush_delivery::engine::EngineSettings;
use davpush_delivery::webpush::WebPushSettings;
use davpush_delivery::webpush::vapid::VapidKey;
use serde::{Deserialize, Serialize};

mod cluster;
mod mobile;

pub use cluster::{ClusterConfig, RawCluster};

pub use mobile::{ApnsConfig, FcmConfig, FcmUpstream, HmsConfig, RawApns, RawFcm, RawHms};

/// The example configuration shipped with the binary (`davpush serve --print-example-config`).
pub const EXAMPLE: &str = include_str!("../../../examples/davpush.toml");

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
    /// TOML syntax or an unknown/mistyped key (the message contains the key).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid config: `{key}`: {message}")]
    Invalid {
        /// The key, dotted (`websocket.queue_frames`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A secret file could not be read or written.
    #[error("cannot use secret file {path} (`{key}`): {source}")]
    Secret {
        /// The key that asked for it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// The configuration file's shape. See `examples/davpush.toml` for every key, commented.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[store]`
    pub store: RawStore,
    /// `[notify]`
    pub notify: RawNotify,
    /// `[subscription]`
    pub subscription: RawSubscription,
    /// `[websocket]`
    pub websocket: RawWebSocket,
    /// `[web_push]`
    pub web_push: RawWebPush,
    /// `[fcm]`
    pub fcm: RawFcm,
    /// `[apns]`
    pub apns: RawApns,
    /// `[hms]`
    pub hms: RawHms,
    /// `[cluster]`
    pub cluster: RawCluster,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the database and generated secrets.
    pub data_dir: PathBuf,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Deadline for one HTTP request, seconds.
    pub request_timeout_secs: u64,
    /// How long shutdown waits for connections to close, seconds.
    pub shutdown_timeout_secs: u64,
    /// A new connection must complete its first request head within this, seconds.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in progress is closed after this, seconds.
    pub idle_timeout_secs: u64,
    /// Connections without a complete request yet; beyond it the oldest is closed.
    pub max_pending_connections: usize,
    /// How often expired subscriptions are purged, seconds.
    pub purge_interval_secs: u64,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// `standard`, or `strict`: refuse to start if a public third-party push service (FCM,
    /// APNs, HMS, an FCM relay) is enabled, and let Web Push reach allow-listed hosts only.
    pub privacy: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("davpush-data"),
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            shutdown_timeout_secs: 10,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_pending_connections: 1024,
            purge_interval_secs: 60,
            metrics: true,
            privacy: "standard".into(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// Database URL: `sqlite:…` or `postgres://…`; empty means `sqlite://<data_dir>/davpush.sqlite`.
    pub url: String,
}

/// `[notify]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotify {
    /// Accepted bearer tokens, one per Application Server.
    pub tokens: Vec<String>,
    /// Files holding one token each.
    pub token_files: Vec<PathBuf>,
}

/// `[subscription]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSubscription {
    /// `token`, `webdav` or `none`.
    pub auth: String,
    /// For `auth = "webdav"`: the WebDAV URL that credentials are checked against.
    pub webdav_url: String,
    /// For `auth = "webdav"`: seconds a successful check is remembered.
    pub webdav_cache_secs: u64,
    /// Accepted bearer tokens.
    pub tokens: Vec<String>,
    /// Files holding one token each.
    pub token_files: Vec<PathBuf>,
    /// Expiry granted when the client asks for none, seconds.
    pub default_expiry_secs: i64,
    /// Shortest expiry granted, seconds.
    pub min_expiry_secs: i64,
    /// Longest expiry granted, seconds.
    pub max_expiry_secs: i64,
    /// Subscriptions per client (and per WebSocket connection).
    pub max_per_client: usize,
    /// Subscriptions per subscription token (or WebDAV user) through the Subscription API.
    pub max_per_token: usize,
    /// Subscriptions in total.
    pub max_total: usize,
    /// Longest topic, bytes.
    pub max_topic_len: usize,
    /// Longest client id, bytes.
    pub max_client_id_len: usize,
    /// Topics per notify request.
    pub max_topics_per_notify: usize,
    /// `required`: every subscription needs a grant (docs/protocol.md §3.3); `off`: a topic is
    /// enough (for Directors whose topics are secrets of their own, e.g. a client vendor's).
    pub grants: String,
    /// The keys grants are signed with, one per line; empty: `<data_dir>/grant-key`
    /// (generated if missing). Shared with the gateway or application server that signs them.
    pub grant_key_file: PathBuf,
}

impl Default for RawSubscription {
    fn default() -> Self {
        let l = Limits::default();
        RawSubscription {
            auth: "token".into(),
            webdav_url: String::new(),
            webdav_cache_secs: 60,
            tokens: Vec::new(),
            token_files: Vec::new(),
            default_expiry_secs: l.default_expiry,
            min_expiry_secs: l.min_expiry,
            max_expiry_secs: l.max_expiry,
            max_per_client: l.max_subscriptions_per_client,
            max_per_token: l.max_subscriptions_per_principal,
            max_total: l.max_subscriptions,
            max_topic_len: l.max_topic_len,
            max_client_id_len: l.max_client_id_len,
            max_topics_per_notify: l.max_topics_per_notify,
            grants: "required".into(),
            grant_key_file: PathBuf::new(),
        }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebSocket {
    /// Offer the WebSocket push service.
    pub enabled: bool,
    /// Seconds between server pings; silent clients are dropped after two.
    pub ping_interval_secs: u64,
    /// Frames queued per connection before it is dropped as too slow.
    pub queue_frames: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Largest frame a client may send, bytes.
    pub max_message_bytes: usize,
    /// Seconds a write to a client may take before it is dropped.
    pub write_timeout_secs: u64,
}

impl Default for RawWebSocket {
    fn default() -> Self {
        RawWebSocket {
            enabled: true,
            ping_interval_secs: 30,
            queue_frames: 256,
            max_connections: 50_000,
            max_message_bytes: 4096,
            write_timeout_secs: 10,
        }
    }
}

/// `[web_push]`: Web Push and UnifiedPush delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// How long a push service may keep an undelivered message, seconds (`TTL`).
    pub ttl_secs: u64,
    /// `Urgency` header: `very-low`, `low`, `normal` or `high`.
    pub urgency: String,
    /// Timeout of one request, seconds.
    pub timeout_secs: u64,
    /// Requests in flight at once.
    pub workers: usize,
    /// Requests in flight per push-service origin (scheme, host, port).
    pub max_per_host: usize,
    /// Floor of the per-host adaptive timeout, milliseconds (the ceiling is `timeout_secs`).
    pub min_timeout_ms: u64,
    /// Consecutive transient failures or timeouts that open a host's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker holds the host's deliveries before one probe, seconds.
    pub breaker_cool_down_secs: u64,
    /// Subscriptions with a pending delivery at most.
    pub max_pending: usize,
    /// Attempts per message.
    pub max_attempts: u32,
    /// First retry delay, milliseconds.
    pub min_backoff_ms: u64,
    /// Longest retry delay, seconds.
    pub max_backoff_secs: u64,
    /// Hosts, IP addresses or CIDR networks that endpoints may use although not public.
    pub allow_hosts: Vec<String>,
    /// Accept plain `http` endpoints for allow-listed hosts.
    pub allow_http: bool,
}

impl Default for RawWebPush {
    fn default() -> Self {
        RawWebPush {
            enabled: true,
            services: vec!["web_push".into(), "unified_push".into()],
            subject: "mailto:postmaster@localhost".into(),
            vapid_key_file: PathBuf::new(),
            allow_unencrypted: false,
            ttl_secs: 86_400,
            urgency: "normal".into(),
            timeout_secs: 30,
            workers: 64,
            max_per_host: 16,
            min_timeout_ms: 5000,
            breaker_failures: 5,
            breaker_cool_down_secs: 10,
            max_pending: 100_000,
            max_attempts: 8,
            min_backoff_ms: 1000,
            max_backoff_secs: 600,
            allow_hosts: Vec::new(),
            allow_http: false,
        }
    }
}

/// Validated `[web_push]`.
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    /// Service names offered.
    pub services: Vec<davpush_core::ServiceKind>,
    /// VAPID `sub`.
    pub subject: String,
    /// The VAPID key pair.
    pub key: Arc<VapidKey>,
    /// Where endpoints may point.
    pub policy: EgressPolicy,
    /// Delivery settings.
    pub settings: WebPushSettings,
}

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes, for comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How clients authenticate to the Subscription API and WebSocket endpoint.
#[derive(Debug, Clone)]
pub enum SubscriptionAuth {
    /// One of these bearer tokens (a token shared by many clients is the draft's
    /// "pseudo-public token").
    Tokens(Vec<Secret>),
    /// The draft's "same authentication as for WebDAV": the client's `Authorization` is
    /// verified against a WebDAV server (cached briefly, never stored); the configured tokens
    /// are accepted too (for gateways that subscribe on behalf of users).
    Webdav(Arc<crate::http::webdav_auth::WebdavVerifier>, Vec<Secret>),
    /// No authentication (development only; warned about loudly at start).
    None,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the database and generated secrets.
    pub data_dir: PathBuf,
    /// Database URL.
    pub store_url: String,
    /// `[cluster]`, if this node is one of several.
    pub cluster: Option<ClusterConfig>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Deadline for one HTTP request, seconds.
    pub request_timeout_secs: u64,
    /// How long shutdown waits for connections to close, seconds.
    pub shutdown_timeout_secs: u64,
    /// Header-read and idle timeouts, pending-connection cap (`server.*`).
    pub connections: davpush_serve::Limits,
    /// How often expired subscriptions are purged, seconds.
    pub purge_interval_secs: u64,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// Accepted Notify API tokens (never empty).
    pub notify_tokens: Vec<Secret>,
    /// Subscription API authentication.
    pub subscription_auth: SubscriptionAuth,
    /// Limits on clients and requests.
    pub limits: Limits,
    /// WebSocket settings.
    pub websocket: RawWebSocket,
    /// Web Push settings, if enabled.
    pub web_push: Option<WebPushConfig>,
    /// FCM settings, if enabled.
    pub fcm: Option<FcmConfig>,
    /// APNs settings, if enabled.
    pub apns: Option<ApnsConfig>,
    /// HMS settings, if enabled.
    pub hms: Option<HmsConfig>,
    /// `server.privacy = "strict"`.
    pub strict_privacy: bool,
    /// The grant keys, when subscriptions need grants (`subscription.grants = "required"`).
    pub grant_keys: Option<davpush_proto::GrantKeys>,
    /// Secret files generated while loading (printed once by the binary).
    pub generated_secrets: Vec<(&'static str, PathBuf)>,
}

/// Command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
}

/// `DAVPUSH_*` variables that are not the Director's keys: those of the other subcommands
/// (`--config` files of `gateway` and `relay`, `listen`'s credentials), of the tool chain
/// (`DAVPUSH_PYTHON`, the CI's virtualenv, screenshots of the browser tests) and `DAVPUSH_TEST_*`
/// of the test suite. Anything else must be `DAVPUSH_<SECTION>__<KEY>` of a known key, so that a
/// misspelt key still stops the Director with a message naming it.
const OTHER_VARIABLES: &[&str] =
    &["CONFIG", "LOG", "GATEWAY_CONFIG", "RELAY_CONFIG", "USER", "TOKEN", "PYTHON", "CI_VENV", "WRITE_SCREENSHOT"];

impl RawConfig {
    /// Reads the file at `path` (if any), applies `DAVPUSH_*` variables from `env` and the flags.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<RawConfig, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            None => String::new(),
        };
        Self::from_toml(&text, env, flags)
    }

    /// Like [`RawConfig::load`] with the file's text given.
    pub fn from_toml(text: &str, env: &BTreeMap<String, String>, flags: &Overrides) -> Result<RawConfig, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("DAVPUSH_") else {
                continue;
            };
            if OTHER_VARIABLES.contains(&rest) || rest.starts_with("TEST_") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let key = path.join(".");
            if path.len() != 2 || path.iter().any(String::is_empty) {
                return Err(invalid(&key, format!("environment variable {name} must be DAVPUSH_<SECTION>__<KEY>")));
            }
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            let section = table.entry(path[0].clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section) = section.as_table_mut() else {
                return Err(invalid(&path[0], "must be a table"));
            };
            section.insert(path[1].clone(), parsed);
        }
        let mut raw: RawConfig = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if let Some(l) = &flags.listen {
            raw.server.listen = l.clone();
        }
        if let Some(d) = &flags.data_dir {
            raw.server.data_dir = d.clone();
        }
        Ok(raw)
    }

    /// The configuration as TOML, secrets replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for t in c.notify.tokens.iter_mut().chain(c.subscription.tokens.iter_mut()) {
            *t = "***".into();
        }
        c.store.url = cluster::redact_url(&c.store.url);
        c.cluster.redis_url = cluster::redact_url(&c.cluster.redis_url);
        toml::to_string(&c).unwrap_or_default()
    }
}

const MIN_TOKEN_LEN: usize = 16;

fn read_tokens(key: &'static str, inline: &[String], files: &[PathBuf]) -> Result<Vec<Secret>, ConfigError> {
    let mut out = Vec::new();
    for t in inline {
        out.push(t.clone());
    }
    for f in files {
        let s = std::fs::read_to_string(f).map_err(|source| ConfigError::Secret { key, path: f.clone(), source })?;
        out.push(s.trim().to_owned());
    }
    for t in &out {
        if t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(key, format!("every token must be at least {MIN_TOKEN_LEN} visible ASCII characters")));
        }
    }
    Ok(out.into_iter().map(Secret).collect())
}

/// Reads the secret in `path`, or creates it (mode 0600) with a fresh random token.
fn generated_token(
    key: &'static str,
    path: &Path,
    generated: &mut Vec<(&'static str, PathBuf)>,
) -> Result<Secret, ConfigError> {
    let fail = |source| ConfigError::Secret { key, path: path.into(), source };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Secret(s.trim().to_owned())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let token = davpush_core::ids::random_token(32);
    davpush_core::secrets::write_private(path, &format!("{token}\n")).map_err(fail)?;
    generated.push((key, path.to_owned()));
    Ok(Secret(token))
}

/// Reads the grant keys in `path`, or creates the file (mode 0600) with a fresh key.
fn grant_keys(
    path: &Path,
    generated: &mut Vec<(&'static str, PathBuf)>,
) -> Result<davpush_proto::GrantKeys, ConfigError> {
    const KEY: &str = "subscription.grant_key_file";
    let text =
        match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let line = davpush_proto::GrantKeys::generate_line();
                davpush_core::secrets::write_private(path, &format!("{line}\n"))
                    .map_err(|source| ConfigError::Secret { key: KEY, path: path.into(), source })?;
                generated.push((KEY, path.to_owned()));
                line
            }
            Err(source) => return Err(ConfigError::Secret { key: KEY, path: path.into(), source }),
        };
    davpush_proto::GrantKeys::parse(&text).map_err(|e| invalid(KEY, format!("{}: {e}", path.display())))
}

/// `[web_push]` validated, before its key is loaded.
struct PartialWebPush {
    services: Vec<davpush_core::ServiceKind>,
    policy: EgressPolicy,
    settings: WebPushSettings,
    key_path: PathBuf,
}

/// Validates `[web_push]`; the key is loaded by the caller once the data directory exists.
fn web_push_config(w: &RawWebPush, data_dir: &Path) -> Result<Option<PartialWebPush>, ConfigError> {
    if !w.enabled {
        return Ok(None);
    }
    let mut services = Vec::new();
    for name in &w.services {
        match name.parse::<davpush_core::ServiceKind>() {
            Ok(k @ (davpush_core::ServiceKind::WebPush | davpush_core::ServiceKind::UnifiedPush)) => services.push(k),
            _ => {
                return Err(invalid("web_push.services", format!("`{name}` is not one of `web_push`, `unified_push`")));
            }
        }
    }
    if !(w.subject.starts_with("mailto:") || w.subject.starts_with("https:")) {
        return Err(invalid("web_push.subject", "must be a mailto: or https: URI (RFC 8292)"));
    }
    if !["very-low", "low", "normal", "high"].contains(&w.urgency.as_str()) {
        return Err(invalid("web_push.urgency", "must be one of very-low, low, normal, high"));
    }
    for (key, v) in [
        ("web_push.ttl_secs", w.ttl_secs),
        ("web_push.timeout_secs", w.timeout_secs),
        ("web_push.workers", w.workers as u64),
        ("web_push.max_per_host", w.max_per_host as u64),
        ("web_push.min_timeout_ms", w.min_timeout_ms),
        ("web_push.breaker_failures", u64::from(w.breaker_failures)),
        ("web_push.breaker_cool_down_secs", w.breaker_cool_down_secs),
        ("web_push.max_pending", w.max_pending as u64),
        ("web_push.max_attempts", u64::from(w.max_attempts)),
        ("web_push.min_backoff_ms", w.min_backoff_ms),
        ("web_push.max_backoff_secs", w.max_backoff_secs),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    let policy = EgressPolicy::new(&w.allow_hosts, w.allow_http).map_err(|e| invalid("web_push.allow_hosts", e))?;
    let key_path =
        if w.vapid_key_file.as_os_str().is_empty() { data_dir.join("vapid-key.pem") } else { w.vapid_key_file.clone() };
    let settings = WebPushSettings {
        allow_unencrypted: w.allow_unencrypted,
        urgency: w.urgency.clone(),
        max_per_host: w.max_per_host,
        timeout: Duration::from_secs(w.timeout_secs),
        engine: EngineSettings {
            workers: w.workers,
            max_pending: w.max_pending,
            max_attempts: w.max_attempts,
            min_backoff: Duration::from_millis(w.min_backoff_ms),
            max_backoff: Duration::from_secs(w.max_backoff_secs),
            ttl: Duration::from_secs(w.ttl_secs),
            per_host_workers: w.max_per_host,
            request_timeout: Duration::from_secs(w.timeout_secs),
            min_timeout: Duration::from_millis(w.min_timeout_ms),
            breaker_failures: w.breaker_failures,
            breaker_cool_down: Duration::from_secs(w.breaker_cool_down_secs),
        },
    };
    Ok(Some(PartialWebPush { services, policy, settings, key_path }))
}

impl Config {
    /// Validates `raw`; creates the data directory and generates missing secrets in it.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let s = &raw.server;
        let listen: SocketAddr = s.listen.parse().map_err(|e| {
            invalid("server.listen", format!("`{}` is not an address like 127.0.0.1:8080: {e}", s.listen))
        })?;
        if s.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if s.request_timeout_secs == 0 {
            return Err(invalid("server.request_timeout_secs", "must be at least 1"));
        }
        if s.purge_interval_secs == 0 {
            return Err(invalid("server.purge_interval_secs", "must be at least 1"));
        }
        for (key, v) in [
            ("server.header_read_timeout_secs", s.header_read_timeout_secs),
            ("server.idle_timeout_secs", s.idle_timeout_secs),
            ("server.max_pending_connections", s.max_pending_connections as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let connections = davpush_serve::Limits {
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            max_pending_connections: s.max_pending_connections,
        };
        let sub = &raw.subscription;
        if sub.min_expiry_secs < 60 {
            return Err(invalid("subscription.min_expiry_secs", "must be at least 60"));
        }
        if sub.max_expiry_secs < sub.min_expiry_secs {
            return Err(invalid("subscription.max_expiry_secs", "must not be less than min_expiry_secs"));
        }
        if !(sub.min_expiry_secs..=sub.max_expiry_secs).contains(&sub.default_expiry_secs) {
            return Err(invalid(
                "subscription.default_expiry_secs",
                "must lie between min_expiry_secs and max_expiry_secs",
            ));
        }
        for (key, v) in [
            ("subscription.max_per_client", sub.max_per_client),
            ("subscription.max_per_token", sub.max_per_token),
            ("subscription.max_total", sub.max_total),
            ("subscription.max_topic_len", sub.max_topic_len),
            ("subscription.max_client_id_len", sub.max_client_id_len),
            ("subscription.max_topics_per_notify", sub.max_topics_per_notify),
            ("websocket.queue_frames", raw.websocket.queue_frames),
            ("websocket.max_connections", raw.websocket.max_connections),
            ("websocket.ping_interval_secs", raw.websocket.ping_interval_secs as usize),
            ("websocket.write_timeout_secs", raw.websocket.write_timeout_secs as usize),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if raw.websocket.max_message_bytes < 256 {
            return Err(invalid("websocket.max_message_bytes", "must be at least 256"));
        }

        let strict_privacy = match s.privacy.as_str() {
            "standard" => false,
            "strict" => true,
            other => return Err(invalid("server.privacy", format!("`{other}` is not one of `standard`, `strict`"))),
        };
        if strict_privacy {
            for (key, on, what) in [
                ("fcm.enabled", raw.fcm.enabled, "Google FCM (directly or through a relay)"),
                ("apns.enabled", raw.apns.enabled, "Apple APNs"),
                ("hms.enabled", raw.hms.enabled, "Huawei HMS"),
            ] {
                if on {
                    return Err(invalid(
                        key,
                        format!(
                            "must be false with server.privacy = \"strict\": {what} is a public third-party push service"
                        ),
                    ));
                }
            }
            if raw.web_push.enabled && raw.web_push.allow_hosts.is_empty() {
                return Err(invalid(
                    "web_push.enabled",
                    "with server.privacy = \"strict\" Web Push/UnifiedPush may only reach allow-listed hosts: \
                     list your own push distributor in web_push.allow_hosts, or set web_push.enabled = false",
                ));
            }
        }
        let mut web_push = web_push_config(&raw.web_push, &s.data_dir)?;
        if strict_privacy && let Some(w) = &mut web_push {
            w.policy = w.policy.clone().allowed_only();
        }
        let fcm = mobile::fcm_config(&raw.fcm)?;
        let apns = mobile::apns_config(&raw.apns)?;
        let hms = mobile::hms_config(&raw.hms)?;
        let needs_dir = raw.store.url.is_empty()
            || raw.web_push.enabled && raw.web_push.vapid_key_file.as_os_str().is_empty()
            || raw.notify.tokens.is_empty() && raw.notify.token_files.is_empty()
            || sub.auth != "none" && sub.tokens.is_empty() && sub.token_files.is_empty()
            || sub.grant_key_file.as_os_str().is_empty();
        if needs_dir {
            std::fs::create_dir_all(&s.data_dir)
                .map_err(|e| invalid("server.data_dir", format!("cannot create {}: {e}", s.data_dir.display())))?;
        }
        let mut generated = Vec::new();
        let web_push = match web_push {
            None => None,
            Some(p) => {
                let (key, created) = VapidKey::load_or_create(&p.key_path)
                    .map_err(|e| invalid("web_push.vapid_key_file", e.to_string()))?;
                if created {
                    generated.push(("web_push.vapid_key_file", p.key_path));
                }
                Some(WebPushConfig {
                    services: p.services,
                    subject: raw.web_push.subject.clone(),
                    key: Arc::new(key),
                    policy: p.policy,
                    settings: p.settings,
                })
            }
        };
        let mut notify_tokens = read_tokens("notify.tokens", &raw.notify.tokens, &raw.notify.token_files)?;
        if notify_tokens.is_empty() {
            notify_tokens.push(generated_token("notify.tokens", &s.data_dir.join("notify-token"), &mut generated)?);
        }
        let subscription_auth = match sub.auth.as_str() {
            "none" => SubscriptionAuth::None,
            "token" => {
                let mut t = read_tokens("subscription.tokens", &sub.tokens, &sub.token_files)?;
                if t.is_empty() {
                    t.push(generated_token(
                        "subscription.tokens",
                        &s.data_dir.join("subscription-token"),
                        &mut generated,
                    )?);
                }
                SubscriptionAuth::Tokens(t)
            }
            "webdav" => {
                let url = url::Url::parse(&sub.webdav_url)
                    .map_err(|e| invalid("subscription.webdav_url", format!("must be an http(s) URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid("subscription.webdav_url", "must be an http(s) URL"));
                }
                let mut tokens = read_tokens("subscription.tokens", &sub.tokens, &sub.token_files)?;
                if tokens.is_empty() {
                    // For gateways that subscribe on behalf of users they authenticated.
                    tokens.push(generated_token(
                        "subscription.tokens",
                        &s.data_dir.join("subscription-token"),
                        &mut generated,
                    )?);
                }
                let verifier = crate::http::webdav_auth::WebdavVerifier::new(
                    url,
                    Duration::from_secs(sub.webdav_cache_secs),
                    Duration::from_secs(s.request_timeout_secs),
                )
                .map_err(|e| invalid("subscription.webdav_url", e.to_string()))?;
                SubscriptionAuth::Webdav(Arc::new(verifier), tokens)
            }
            other => {
                return Err(invalid("subscription.auth", format!("`{other}` is not one of `token`, `webdav`, `none`")));
            }
        };
        // The key file exists in both modes, so a gateway sharing the data directory can start
        // (and sign) whatever the Director's setting.
        let grant_key_path = if sub.grant_key_file.as_os_str().is_empty() {
            s.data_dir.join("grant-key")
        } else {
            sub.grant_key_file.clone()
        };
        let keys = grant_keys(&grant_key_path, &mut generated)?;
        let grant_keys = match sub.grants.as_str() {
            "off" => None,
            "required" => Some(keys),
            other => return Err(invalid("subscription.grants", format!("`{other}` is not one of `required`, `off`"))),
        };
        let store_url = if raw.store.url.is_empty() {
            format!("sqlite://{}", s.data_dir.join("davpush.sqlite").display())
        } else {
            davpush_store::StoreKind::from_url(&raw.store.url).map_err(|e| invalid("store.url", e.to_string()))?;
            raw.store.url.clone()
        };
        let shared_store =
            davpush_store::StoreKind::from_url(&store_url).is_ok_and(|k| k == davpush_store::StoreKind::Postgres);
        let cluster = cluster::cluster_config(&raw.cluster, shared_store)?;
        let limits = Limits {
            max_topic_len: sub.max_topic_len,
            max_client_id_len: sub.max_client_id_len,
            max_subscriptions_per_client: sub.max_per_client,
            max_subscriptions_per_principal: sub.max_per_token,
            max_subscriptions: sub.max_total,
            max_topics_per_notify: sub.max_topics_per_notify,
            default_expiry: sub.default_expiry_secs,
            min_expiry: sub.min_expiry_secs,
            max_expiry: sub.max_expiry_secs,
            ..Limits::default()
        };
        Ok(Config {
            listen,
            data_dir: s.data_dir.clone(),
            store_url,
            cluster,
            max_body_bytes: s.max_body_bytes,
            request_timeout_secs: s.request_timeout_secs,
            shutdown_timeout_secs: s.shutdown_timeout_secs,
            connections,
            purge_interval_secs: s.purge_interval_secs,
            metrics: s.metrics,
            notify_tokens,
            subscription_auth,
            limits,
            websocket: raw.websocket,
            web_push,
            fcm,
            apns,
            hms,
            strict_privacy,
            grant_keys,
            generated_secrets: generated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = RawConfig::from_toml("[server]\nlisten_addr = \"x\"\n", &env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
        let e =
            RawConfig::from_toml("", &env(&[("DAVPUSH_WEBSOCKET__QUEUE", "5")]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("queue"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let raw = RawConfig::from_toml(
            "[websocket]\nqueue_frames = 8\n[server]\nlisten = \"127.0.0.1:1\"\n",
            &env(&[("DAVPUSH_WEBSOCKET__QUEUE_FRAMES", "16"), ("DAVPUSH_SERVER__LISTEN", "127.0.0.1:2")]),
            &Overrides { listen: Some("127.0.0.1:3".into()), data_dir: None },
        )
        .unwrap();
        assert_eq!(raw.websocket.queue_frames, 16);
        assert_eq!(raw.server.listen, "127.0.0.1:3");
    }

    #[test]
    fn davpushs_other_variables_are_not_keys_and_misspelt_keys_still_fail() {
        let others: Vec<(&str, &str)> = OTHER_VARIABLES
            .iter()
            .map(|v| (Box::leak(format!("DAVPUSH_{v}").into_boxed_str()) as &str, "x"))
            .chain([("DAVPUSH_TEST_POSTGRES", "postgres://x")])
            .collect();
        assert!(RawConfig::from_toml("", &env(&others), &Overrides::default()).is_ok());
        for bad in ["DAVPUSH_SERVER_LISTEN", "DAVPUSH_SERVER__LISTN", "DAVPUSH_TOKENS"] {
            let e = RawConfig::from_toml("", &env(&[(bad, "127.0.0.1:2")]), &Overrides::default()).unwrap_err();
            let last = bad.rsplit("__").next().unwrap().trim_start_matches("DAVPUSH_").to_ascii_lowercase();
            assert!(e.to_string().contains(&last), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_names_the_key_and_secrets_are_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.server.data_dir = dir.path().to_owned();
        raw.subscription.min_expiry_secs = 10;
        let e = Config::from_raw(raw.clone()).unwrap_err();
        assert!(e.to_string().contains("subscription.min_expiry_secs"), "{e}");

        raw.subscription.min_expiry_secs = 3600;
        let c = Config::from_raw(raw.clone()).unwrap();
        // notify token, subscription token, VAPID key, grant key.
        assert_eq!(c.generated_secrets.len(), 4);
        assert!(c.grant_keys.is_some(), "grants are required by default");
        let grant_key = dir.path().join("grant-key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&grant_key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let token_file = dir.path().join("notify-token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let c2 = Config::from_raw(raw).unwrap();
        assert!(c2.generated_secrets.is_empty(), "existing secrets are reused");
        assert_eq!(c.notify_tokens, c2.notify_tokens);
        assert!(!format!("{c:?}").contains(c.notify_tokens[0].expose()), "Debug never shows secrets");
    }

    #[test]
    fn strict_privacy_refuses_public_push_services() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("[server]\nprivacy = \"strict\"\ndata_dir = {:?}\n", dir.path().display().to_string());
        let load = |extra: &str| {
            let raw = RawConfig::from_toml(&format!("{base}{extra}"), &env(&[]), &Overrides::default()).unwrap();
            Config::from_raw(raw)
        };
        let e = load("").unwrap_err();
        assert!(e.to_string().contains("web_push.enabled"), "default Web Push may reach public services: {e}");
        for (section, key) in [("fcm", "fcm.enabled"), ("apns", "apns.enabled"), ("hms", "hms.enabled")] {
            let e = load(&format!("[web_push]\nenabled = false\n[{section}]\nenabled = true\n")).unwrap_err();
            assert!(e.to_string().contains(key) && e.to_string().contains("strict"), "{e}");
        }
        let e = load("[web_push]\nenabled = false\n[fcm]\nenabled = true\nrelay_url = \"https://relay.example\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("fcm.enabled"), "a relay is public too: {e}");
        let c = load("[web_push]\nallow_hosts = [\"push.lan\"]\n").unwrap();
        assert!(c.strict_privacy);
        let policy = &c.web_push.as_ref().unwrap().policy;
        assert!(policy.check_addrs("https", "push.example.net", &["8.8.8.8:443".parse().unwrap()]).is_err());
        assert!(policy.check_addrs("https", "push.lan", &["192.168.1.2:443".parse().unwrap()]).is_ok());
        assert!(policy.check_addrs("https", "push.lan", &["192.168.1.2:8443".parse().unwrap()]).is_err());
        let c = load("[web_push]\nallow_hosts = [\"push.lan:8443\", \"[fd00::1]:8080\"]\n").unwrap();
        let policy = &c.web_push.as_ref().unwrap().policy;
        assert!(policy.check_addrs("https", "push.lan", &["192.168.1.2:8443".parse().unwrap()]).is_ok());
        let e = load("[web_push]\nallow_hosts = [\"push.lan:http\"]\n").unwrap_err();
        assert!(e.to_string().contains("web_push.allow_hosts"), "{e}");
        let e = RawConfig::from_toml("[server]\nprivacy = \"paranoid\"\n", &env(&[]), &Overrides::default())
            .map(Config::from_raw)
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("server.privacy"), "{e}");
    }

    #[test]
    fn mobile_services_name_the_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let load = |extra: &str| {
            let t = format!("[server]\ndata_dir = {:?}\n{extra}", dir.path().display().to_string());
            Config::from_raw(RawConfig::from_toml(&t, &env(&[]), &Overrides::default()).unwrap())
        };
        let c = load("").unwrap();
        assert!(c.fcm.is_none() && c.apns.is_none() && c.hms.is_none(), "off by default");
        for (extra, key) in [
            ("[fcm]\nenabled = true\n", "fcm.credentials_file"),
            ("[fcm]\nenabled = true\nmode = \"fanout\"\n", "fcm.mode"),
            ("[fcm]\nenabled = true\nrelay_url = \"https://r.example\"\n", "fcm.relay_key_file"),
            ("[fcm]\nenabled = true\ncredentials_file = \"/nonexistent.json\"\n", "fcm.credentials_file"),
            ("[apns]\nenabled = true\n", "apns.key_id"),
            ("[apns]\nenabled = true\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\n", "apns.bundle_id"),
            ("[apns]\nenabled = true\npriority = 10\n", "apns.priority"),
            ("[apns]\nenabled = true\nenvironment = \"dev\"\n", "apns.environment"),
            ("[hms]\nenabled = true\n", "hms.app_id"),
            ("[hms]\nenabled = true\napp_id = \"1234\"\n", "hms.client_secret_file"),
            ("[hms]\nenabled = true\napp_id = \"1234\"\nurgency = \"LOW\"\n", "hms.urgency"),
        ] {
            let e = load(extra).unwrap_err();
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn the_example_and_the_deployment_profiles_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Overrides { listen: None, data_dir: Some(dir.path().to_owned()) };
        let c = Config::from_raw(RawConfig::from_toml(EXAMPLE, &env(&[]), &flags).unwrap()).unwrap();
        assert!(c.fcm.is_none() && c.apns.is_none() && c.hms.is_none() && !c.strict_privacy);
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
        for name in ["profile-private", "profile-google-free", "profile-company", "profile-risk-exposed"] {
            let text = std::fs::read_to_string(format!("{root}{name}.toml")).unwrap();
            let mut raw = RawConfig::from_toml(&text, &env(&[]), &flags).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Secrets and credentials live on the real host; the rest must validate as is.
            raw.subscription.token_files.clear();
            raw.notify.token_files.clear();
            raw.fcm.enabled = false;
            raw.apns.enabled = false;
            let c = Config::from_raw(raw.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.strict_privacy, name == "profile-risk-exposed", "{name}");
            if c.strict_privacy {
                raw.fcm.enabled = true;
                let e = Config::from_raw(raw).unwrap_err().to_string();
                assert!(e.contains("fcm.enabled"), "{e}");
            }
        }
    }

    #[test]
    fn short_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.server.data_dir = dir.path().to_owned();
        raw.notify.tokens = vec!["short".into()];
        let e = Config::from_raw(raw).unwrap_err();
        assert!(e.to_string().contains("notify.tokens"), "{e}");
    }
}
