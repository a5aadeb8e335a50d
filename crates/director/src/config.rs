//! Configuration: defaults → TOML file → `DAVPUSH_*` environment → flags.
//!
//! [`RawConfig`] is what the file says (every key optional, unknown keys refused); it becomes a
//! [`Config`] through [`Config::from_raw`], where all validation happens and every error names
//! its key. Validation creates nothing: the data directory, generated secrets, the VAPID key and
//! the WebDAV verifier come from [`Config::prepare`] at start-up (`crate::startup`). Each push
//! service's section (`[web_push]`, `[fcm]`, `[apns]`, `[hms]`) is its own `RawX` → `XSettings`
//! in `davpush_delivery`, whose `SettingsError` becomes [`ConfigError::Settings`]. The
//! environment is passed in as a map so that tests never touch the process's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use davpush_core::Limits;
use davpush_delivery::settings::{SettingsError, enabled};
use serde::{Deserialize, Serialize};

mod cluster;

pub use cluster::{ClusterConfig, RawCluster};
pub use davpush_delivery::apns::{ApnsConfig, RawApns};
pub use davpush_delivery::fcm::{FcmConfig, FcmUpstream, RawFcm};
pub use davpush_delivery::hms::{HmsConfig, RawHms};
pub use davpush_delivery::webpush::{RawWebPush, WebPushConfig};

pub use crate::startup::{Startup, SubscriptionAuth};

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
    /// A push service's section is invalid (the message names the key).
    #[error("invalid config: {0}")]
    Settings(#[from] SettingsError),
    /// The data directory cannot be created or written (exit 73, EX_CANTCREAT).
    #[error("cannot use the data directory {path} (`server.data_dir`{}): {problem}", origin.as_deref().map(|o| format!(", set by {o}")).unwrap_or_default())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Where `server.data_dir` was set, if not in the file.
        origin: Option<String>,
        /// What is wrong, for an operator.
        problem: String,
    },
    /// A secret file could not be read or written.
    #[error("cannot use secret file {path} (`{key}`): {}", crate::startup::describe_io(source))]
    Secret {
        /// The key that asked for it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The exit code: 73 (EX_CANTCREAT) when the data directory or a secret file cannot be
    /// created or written, 64 (EX_USAGE) for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::DataDir { .. } => 73,
            ConfigError::Secret { source, .. } if source.kind() != std::io::ErrorKind::NotFound => 73,
            _ => 64,
        }
    }

    /// Adds where the key's value came from (`origins` of [`RawConfig`]) to the message.
    pub fn with_origin(self, origins: &BTreeMap<String, String>) -> Self {
        let from = |key: &str, message: String| match origins.get(key) {
            Some(o) => format!("{message} (set by {o})"),
            None => message,
        };
        match self {
            ConfigError::Invalid { key, message } => {
                let message = from(&key, message);
                ConfigError::Invalid { key, message }
            }
            ConfigError::Settings(SettingsError { key, message }) => {
                let message = from(&key, message);
                ConfigError::Settings(SettingsError { key, message })
            }
            other => other,
        }
    }
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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
    /// `[history]`
    pub history: RawHistory,
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
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[push_service]`
    pub push_service: RawPushService,
    /// Where keys not from the file came from (dotted key → `environment variable DAVPUSH_…` or
    /// `--listen`), named by validation errors.
    #[serde(skip)]
    pub origins: BTreeMap<String, String>,
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
    pub privacy: Privacy,
}

/// `server.privacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Any push service configured.
    #[default]
    Standard,
    /// No public third-party push service; Web Push to allow-listed hosts only.
    Strict,
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
            privacy: Privacy::Standard,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// Database URL: `sqlite:…` or `postgres://…`; empty means `sqlite://<data_dir>/davpush.sqlite`.
    pub url: String,
    /// How long a node holds the outbox rows it claimed without renewing, seconds; it renews
    /// (and claims free rows, and reads the VAPID keys) every third of it.
    pub outbox_lease_secs: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { url: String::new(), outbox_lease_secs: davpush_core::store::DEFAULT_OUTBOX_LEASE_SECS as u64 }
    }
}

/// `[admin]`: the admin view (`/admin/`, docs/operations.md "Admin view").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Serve `/admin/`.
    pub enabled: bool,
    /// Accepted bearer tokens (none: one is generated into `<data_dir>/admin-token`).
    pub tokens: Vec<String>,
    /// Files holding one token each.
    pub token_files: Vec<PathBuf>,
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
    pub auth: AuthMode,
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
    pub grants: Grants,
    /// The keys grants are signed with, one per line; empty: `<data_dir>/grant-key`
    /// (generated if missing). Shared with the gateway or application server that signs them.
    pub grant_key_file: PathBuf,
}

impl Default for RawSubscription {
    fn default() -> Self {
        let l = Limits::default();
        RawSubscription {
            auth: AuthMode::Token,
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
            grants: Grants::Required,
            grant_key_file: PathBuf::new(),
        }
    }
}

/// `subscription.auth`: how clients authenticate to the Subscription API and WebSocket endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer tokens.
    #[default]
    Token,
    /// The client's WebDAV credentials, checked against `webdav_url` (tokens accepted too).
    Webdav,
    /// None (development only).
    None,
}

/// `subscription.grants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grants {
    /// Every subscription needs a grant.
    #[default]
    Required,
    /// A topic is enough.
    Off,
}

/// `[history]`: what clients that reconnect can get replayed (`docs/protocol.md` §4.6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistory {
    /// Notifications kept per topic.
    pub per_topic: usize,
    /// Seconds a notification is kept.
    pub max_age_secs: u64,
    /// Notifications kept in all.
    pub max_entries: usize,
}

impl Default for RawHistory {
    fn default() -> Self {
        let d = davpush_core::history::HistorySettings::default();
        RawHistory { per_topic: d.per_topic, max_age_secs: d.max_age_ms / 1000, max_entries: d.max_entries }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebSocket {
    /// Offer Server-Sent Events (`GET /events`) too.
    pub sse: bool,
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
            sse: true,
            enabled: true,
            ping_interval_secs: 30,
            queue_frames: 256,
            max_connections: 50_000,
            max_message_bytes: 4096,
            write_timeout_secs: 10,
        }
    }
}

/// `[push_service]`: the Director as an RFC 8030 push service for its WebSocket clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPushService {
    /// Offer push subscriptions (`push_subscribe` frames, `POST /push/<id>`).
    pub enabled: bool,
    /// The URL senders reach this Director at (`https://push.example.org`); endpoints are
    /// `<public_url>/push/<id>` and VAPID tokens must name its origin as `aud`.
    pub public_url: String,
    /// Seconds a push subscription lives after it was made or last re-attached.
    pub expiry_secs: u64,
    /// Largest `TTL` honoured, seconds.
    pub max_ttl_secs: u64,
    /// Messages kept per subscription while its client is offline.
    pub max_pending: usize,
    /// Push subscriptions on this node.
    pub max_subscriptions: usize,
    /// Messages accepted per subscription and minute.
    pub per_subscription_per_minute: u32,
    /// Messages accepted per sender (its verified VAPID key, else its address) and minute.
    pub per_sender_per_minute: u32,
    /// Networks of reverse proxies (CIDR) whose `X-Forwarded-For`/`Forwarded` names the
    /// sender's address; nobody else is believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for RawPushService {
    fn default() -> Self {
        let l = davpush_core::pushsvc::PushLimits::default();
        RawPushService {
            enabled: false,
            public_url: String::new(),
            expiry_secs: l.expiry_secs as u64,
            max_ttl_secs: l.max_ttl_secs as u64,
            max_pending: l.max_pending,
            max_subscriptions: l.max_subscriptions,
            per_subscription_per_minute: l.per_subscription_per_minute,
            per_sender_per_minute: l.per_sender_per_minute,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Validated `[push_service]`.
#[derive(Debug, Clone)]
pub struct PushServiceConfig {
    /// `push_service.public_url`, without a trailing slash.
    pub public_url: String,
    /// Its limits.
    pub limits: davpush_core::pushsvc::PushLimits,
    /// `push_service.trusted_proxies`.
    pub trusted_proxies: crate::http::forwarded::TrustedProxies,
}

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

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

/// Bearer tokens: given inline (checked), in files (read at start-up), or else generated into
/// `generated` at start-up.
#[derive(Debug, Clone)]
pub struct TokenSource {
    /// The key they are configured under (`notify.tokens`).
    pub key: &'static str,
    /// Inline tokens.
    pub inline: Vec<Secret>,
    /// Files holding one token each.
    pub files: Vec<PathBuf>,
    /// Where a token is generated (or found from an earlier start) when there is none.
    pub generated: PathBuf,
}

/// Validated `[subscription]` authentication (`auth`, `webdav_url`, `tokens`).
#[derive(Debug, Clone)]
pub struct SubscriptionAuthConfig {
    /// `subscription.auth`.
    pub mode: AuthMode,
    /// `subscription.webdav_url` (with `auth = "webdav"`).
    pub webdav_url: Option<url::Url>,
    /// `subscription.webdav_cache_secs`.
    pub webdav_cache: Duration,
    /// Accepted tokens (unused with `auth = "none"`).
    pub tokens: TokenSource,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the database and generated secrets.
    pub data_dir: PathBuf,
    /// Where `data_dir` was set when not in the file (`--data-dir`, a variable), for messages.
    pub data_dir_origin: Option<String>,
    /// Whether start-up must create `data_dir` (the default store or a secret lives there).
    pub needs_data_dir: bool,
    /// Database URL.
    pub store_url: String,
    /// `store.outbox_lease_secs`.
    pub outbox_lease_secs: u64,
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
    /// Notify API tokens (read or generated at start-up; never none).
    pub notify_tokens: TokenSource,
    /// Subscription API authentication (its verifier and tokens made at start-up).
    pub subscription_auth: SubscriptionAuthConfig,
    /// Admin view tokens, when `admin.enabled` (read or generated at start-up).
    pub admin_tokens: Option<TokenSource>,
    /// Limits on clients and requests.
    pub limits: Limits,
    /// WebSocket settings.
    pub websocket: RawWebSocket,
    /// The notification history that WebSocket and SSE clients resume from.
    pub history: davpush_core::history::HistorySettings,
    /// Server-Sent Events (`GET /events`) are offered.
    pub sse: bool,
    /// The push service, if enabled.
    pub push_service: Option<PushServiceConfig>,
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
    /// `subscription.grants = "required"`.
    pub grants_required: bool,
    /// The grant keys' file (read, or generated, at start-up whatever `grants_required` says).
    pub grant_key_file: PathBuf,
}

/// Command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
}

/// `DAVPUSH_*` variables that are not the Director's keys, so that one environment (a shared
/// systemd `EnvironmentFile`, a shell) can hold them all: the `--config` files of `serve`,
/// `gateway` and `relay` (`CONFIG`, `GATEWAY_CONFIG`, `RELAY_CONFIG`), `listen`'s credentials
/// (`USER`, `TOKEN`, `PASSWORD…`), what `listen --exec` gives its command (`COLLECTIONS`,
/// `COLLECTION`, `SYNC_TOKEN`), the tool chain's (`PYTHON`, the CI's `CI_CACHE`,
/// `FUZZ_SECONDS`, the browser tests' `WRITE_SCREENSHOT`, `cargo xtask test`'s `ALLOW_SKIP` and
/// `SKIP_LOG`) and `DAVPUSH_TEST_*` of the test suite.
/// The gateway's keys (`DAVPUSH_GATEWAY__<KEY>`) are not the Director's either.
/// The binary also leaves out every variable a clap argument reads. Anything else must be
/// `DAVPUSH_<SECTION>__<KEY>` of a known key, so that a misspelt key still stops the Director
/// with a message naming the variable.
pub const OTHER_VARIABLES: &[&str] = &[
    "DAVPUSH_CONFIG",
    "DAVPUSH_LOG",
    "DAVPUSH_GATEWAY_CONFIG",
    "DAVPUSH_RELAY_CONFIG",
    "DAVPUSH_USER",
    "DAVPUSH_TOKEN",
    "DAVPUSH_TOKEN_FILE",
    "DAVPUSH_PASSWORD",
    "DAVPUSH_PASSWORD_FILE",
    "DAVPUSH_COLLECTIONS",
    "DAVPUSH_COLLECTION",
    "DAVPUSH_SYNC_TOKEN",
    "DAVPUSH_PYTHON",
    "DAVPUSH_CI_CACHE",
    "DAVPUSH_FUZZ_SECONDS",
    "DAVPUSH_WRITE_SCREENSHOT",
    "DAVPUSH_ALLOW_SKIP",
    "DAVPUSH_SKIP_LOG",
];

/// Whether `name` is one of davpush's variables that are not configuration keys
/// ([`OTHER_VARIABLES`], `DAVPUSH_TEST_*`, the gateway's `DAVPUSH_GATEWAY__*`).
pub fn is_other_variable(name: &str) -> bool {
    OTHER_VARIABLES.contains(&name) || name.starts_with("DAVPUSH_TEST_") || name.starts_with("DAVPUSH_GATEWAY__")
}

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

    /// Like [`RawConfig::load`] with the file's text given. Each `DAVPUSH_<SECTION>__<KEY>`
    /// variable is checked on its own first, so that an unknown key or a value of the wrong
    /// type is reported with the variable's name; [`RawConfig::origins`] remembers it for the
    /// validation's messages.
    pub fn from_toml(text: &str, env: &BTreeMap<String, String>, flags: &Overrides) -> Result<RawConfig, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut origins = BTreeMap::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("DAVPUSH_") else {
                continue;
            };
            if is_other_variable(name) {
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
            check_alone(name, &path, &parsed)?;
            let section = table.entry(path[0].clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section) = section.as_table_mut() else {
                return Err(invalid(&path[0], "must be a table"));
            };
            section.insert(path[1].clone(), parsed);
            origins.insert(key, format!("environment variable {name}"));
        }
        let mut raw: RawConfig = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if let Some(l) = &flags.listen {
            raw.server.listen = l.clone();
            origins.insert("server.listen".into(), "--listen".into());
        }
        if let Some(d) = &flags.data_dir {
            raw.server.data_dir = d.clone();
            origins.insert("server.data_dir".into(), "--data-dir".into());
        }
        raw.origins = origins;
        Ok(raw)
    }

    /// The configuration as TOML, secrets replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for t in c.notify.tokens.iter_mut().chain(c.subscription.tokens.iter_mut()).chain(c.admin.tokens.iter_mut()) {
            *t = "***".into();
        }
        c.store.url = cluster::redact_url(&c.store.url);
        c.cluster.redis_url = cluster::redact_url(&c.cluster.redis_url);
        // A relay's or WebDAV server's URL may carry credentials as its user part alone.
        for url in [&mut c.fcm.relay_url, &mut c.subscription.webdav_url] {
            *url = redact_userinfo(url);
        }
        toml::to_string(&c).unwrap_or_default()
    }
}

/// `url` with all of its user information (name and password) replaced by `***`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
    }
}

/// Checks the variable `name` (key `path`, value `value`) against the defaults alone: an unknown
/// key or a value of the wrong type is reported with the variable's name.
fn check_alone(name: &str, path: &[String], value: &toml::Value) -> Result<(), ConfigError> {
    let fail =
        |e: &dyn fmt::Display| ConfigError::Parse(format!("environment variable {name} (`{}`): {e}", path.join(".")));
    let mut defaults = toml::Table::try_from(RawConfig::default()).map_err(|e| fail(&e))?;
    match defaults.get_mut(&path[0]).and_then(toml::Value::as_table_mut) {
        Some(section) => {
            section.insert(path[1].clone(), value.clone());
        }
        None => return Err(fail(&format_args!("there is no section [{}]", path[0]))),
    }
    defaults.try_into::<RawConfig>().map(drop).map_err(|e| fail(&e.message()))
}

pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// Checks one token (inline or read from a file at start-up).
pub(crate) fn check_token(key: &'static str, token: String) -> Result<Secret, ConfigError> {
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(key, format!("every token must be at least {MIN_TOKEN_LEN} visible ASCII characters")));
    }
    Ok(Secret(token))
}

fn token_source(
    key: &'static str,
    inline: &[String],
    files: &[PathBuf],
    generated: PathBuf,
) -> Result<TokenSource, ConfigError> {
    let inline = inline.iter().map(|t| check_token(key, t.clone())).collect::<Result<_, _>>()?;
    Ok(TokenSource { key, inline, files: files.to_vec(), generated })
}

impl Config {
    /// Validates `raw`. Reads the push services' credential files; creates nothing (see
    /// [`Config::prepare`]). An error about a key set by a variable or flag names it.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let origins = raw.origins.clone();
        Self::validate(raw).map_err(|e| e.with_origin(&origins))
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let s = &raw.server;
        let listen = davpush_serve::resolve_listen(&s.listen).map_err(|e| invalid("server.listen", e))?;
        if s.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if s.request_timeout_secs == 0 {
            return Err(invalid("server.request_timeout_secs", "must be at least 1"));
        }
        if raw.store.outbox_lease_secs < 3 {
            return Err(invalid("store.outbox_lease_secs", "must be at least 3"));
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
        let h = &raw.history;
        if h.max_age_secs > 86_400 {
            return Err(invalid("history.max_age_secs", "must be at most 86400 (a day)"));
        }
        if h.max_entries > 10_000_000 {
            return Err(invalid("history.max_entries", "must be at most 10000000"));
        }
        if h.per_topic > h.max_entries && h.max_entries > 0 {
            return Err(invalid("history.per_topic", "must not be more than history.max_entries"));
        }
        let history = davpush_core::history::HistorySettings {
            per_topic: h.per_topic,
            max_age_ms: h.max_age_secs * 1000,
            max_entries: h.max_entries,
        };
        let push_service = if raw.push_service.enabled {
            let p = &raw.push_service;
            let url = url::Url::parse(&p.public_url).map_err(|e| {
                invalid("push_service.public_url", format!("must be the Director's public http(s) URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
                return Err(invalid("push_service.public_url", "must be an http(s) URL without a query"));
            }
            for (key, v) in [
                ("push_service.expiry_secs", p.expiry_secs as usize),
                ("push_service.max_pending", p.max_pending),
                ("push_service.max_subscriptions", p.max_subscriptions),
                ("push_service.per_subscription_per_minute", p.per_subscription_per_minute as usize),
                ("push_service.per_sender_per_minute", p.per_sender_per_minute as usize),
            ] {
                if v == 0 {
                    return Err(invalid(key, "must be at least 1"));
                }
            }
            if !raw.websocket.enabled {
                return Err(invalid("push_service.enabled", "needs websocket.enabled = true"));
            }
            let trusted_proxies = crate::http::forwarded::TrustedProxies::parse(&p.trusted_proxies)
                .map_err(|e| invalid("push_service.trusted_proxies", e.to_string()))?;
            Some(PushServiceConfig {
                trusted_proxies,
                public_url: p.public_url.trim_end_matches('/').to_owned(),
                limits: davpush_core::pushsvc::PushLimits {
                    expiry_secs: p.expiry_secs.min(i64::MAX as u64) as i64,
                    max_ttl_secs: p.max_ttl_secs.min(i64::MAX as u64) as i64,
                    max_pending: p.max_pending,
                    max_subscriptions: p.max_subscriptions,
                    max_per_connection: sub.max_per_client,
                    per_subscription_per_minute: p.per_subscription_per_minute,
                    per_sender_per_minute: p.per_sender_per_minute,
                },
            })
        } else {
            None
        };
        if raw.websocket.max_message_bytes < 256 {
            return Err(invalid("websocket.max_message_bytes", "must be at least 256"));
        }

        let strict_privacy = s.privacy == Privacy::Strict;
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
        let mut web_push: Option<WebPushConfig> = enabled(raw.web_push.enabled, &raw.web_push)?;
        if let Some(w) = &mut web_push {
            if strict_privacy {
                w.policy = w.policy.clone().allowed_only();
            }
            if w.vapid_key_file.as_os_str().is_empty() {
                w.vapid_key_file = s.data_dir.join("vapid-key.pem");
            }
        }
        let fcm = enabled(raw.fcm.enabled, &raw.fcm)?;
        let apns = enabled(raw.apns.enabled, &raw.apns)?;
        let hms = enabled(raw.hms.enabled, &raw.hms)?;

        let notify_tokens = token_source(
            "notify.tokens",
            &raw.notify.tokens,
            &raw.notify.token_files,
            s.data_dir.join("notify-token"),
        )?;
        let tokens =
            token_source("subscription.tokens", &sub.tokens, &sub.token_files, s.data_dir.join("subscription-token"))?;
        let admin_tokens = match raw.admin.enabled {
            true => Some(token_source(
                "admin.tokens",
                &raw.admin.tokens,
                &raw.admin.token_files,
                s.data_dir.join("admin-token"),
            )?),
            false => None,
        };
        let webdav_url = match sub.auth {
            AuthMode::Webdav => {
                let url = url::Url::parse(&sub.webdav_url)
                    .map_err(|e| invalid("subscription.webdav_url", format!("must be an http(s) URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid("subscription.webdav_url", "must be an http(s) URL"));
                }
                Some(url)
            }
            AuthMode::Token | AuthMode::None => None,
        };
        let subscription_auth = SubscriptionAuthConfig {
            mode: sub.auth,
            webdav_url,
            webdav_cache: Duration::from_secs(sub.webdav_cache_secs),
            tokens,
        };
        let grant_key_file = if sub.grant_key_file.as_os_str().is_empty() {
            s.data_dir.join("grant-key")
        } else {
            sub.grant_key_file.clone()
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
        // The data directory is needed for the default store and for every secret not given.
        let needs_data_dir = raw.store.url.is_empty()
            || raw.web_push.enabled && raw.web_push.vapid_key_file.as_os_str().is_empty()
            || raw.notify.tokens.is_empty() && raw.notify.token_files.is_empty()
            || sub.auth != AuthMode::None && sub.tokens.is_empty() && sub.token_files.is_empty()
            || sub.grant_key_file.as_os_str().is_empty()
            || raw.admin.enabled && raw.admin.tokens.is_empty() && raw.admin.token_files.is_empty();
        Ok(Config {
            listen,
            data_dir: s.data_dir.clone(),
            data_dir_origin: raw.origins.get("server.data_dir").cloned(),
            needs_data_dir,
            store_url,
            outbox_lease_secs: raw.store.outbox_lease_secs,
            cluster,
            max_body_bytes: s.max_body_bytes,
            request_timeout_secs: s.request_timeout_secs,
            shutdown_timeout_secs: s.shutdown_timeout_secs,
            connections,
            purge_interval_secs: s.purge_interval_secs,
            metrics: s.metrics,
            notify_tokens,
            subscription_auth,
            admin_tokens,
            limits,
            sse: raw.websocket.enabled && raw.websocket.sse,
            websocket: raw.websocket,
            history,
            push_service,
            web_push,
            fcm,
            apns,
            hms,
            strict_privacy,
            grants_required: sub.grants == Grants::Required,
            grant_key_file,
        })
    }
}

#[cfg(test)]
mod tests;
