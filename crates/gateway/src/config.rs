//! Gateway configuration: defaults, then a TOML file (`--config`) with the keys below at top
//! level, then environment variables `DAVPUSH_GATEWAY__<KEY>` (e.g.
//! `DAVPUSH_GATEWAY__UPSTREAM=http://127.0.0.1:5232/`), then flags. See `examples/gateway.toml`
//! for every key, commented ([`EXAMPLE`]).
//!
//! The variables' prefix has a double underscore, like the Director's `DAVPUSH_<SECTION>__<KEY>`
//! (as if the gateway's keys were a section `[gateway]`), so that it collides neither with the
//! CLI's own `DAVPUSH_GATEWAY_CONFIG` nor with the Director's keys: one environment can hold both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::topic::TopicKey;

/// The commented example configuration (`davpush gateway --print-example-config`).
pub const EXAMPLE: &str = include_str!("../../../examples/gateway.toml");

/// The prefix of the environment variables that set the gateway's keys.
pub const ENV_PREFIX: &str = "DAVPUSH_GATEWAY__";

/// A configuration error naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid gateway config: `{key}`: {message}")]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), message: message.into() }
}

/// The file's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGatewayConfig {
    /// Address to listen on.
    pub listen: String,
    /// How clients reach the gateway (scheme, host, path prefix); empty: `http://<listen>`.
    pub public_url: String,
    /// The WebDAV server behind the gateway.
    pub upstream: String,
    /// The Director, as the gateway reaches it.
    pub director_url: String,
    /// The Director, as clients reach it (advertised in PROPFIND); empty: `director_url`.
    pub director_public_url: String,
    /// Where the default secret files are.
    pub data_dir: PathBuf,
    /// The Director's notify token; empty: `<data_dir>/notify-token`.
    pub notify_token_file: PathBuf,
    /// A Director subscription token; empty: `<data_dir>/subscription-token`.
    pub subscription_token_file: PathBuf,
    /// The topic secret; empty: `<data_dir>/topic-secret` (generated if missing).
    pub topic_secret_file: PathBuf,
    /// The Director's grant keys (the first signs); empty: `<data_dir>/grant-key`.
    pub grant_key_file: PathBuf,
    /// Headers the gateway sets on every request to the upstream (e.g. `X-Forwarded-Proto`),
    /// after removing whatever the client sent under routing and identity headers.
    pub upstream_headers: std::collections::BTreeMap<String, String>,
    /// Largest request or multistatus body the gateway buffers, bytes.
    pub max_body_bytes: usize,
    /// Timeout of requests to the upstream and the Director, seconds.
    pub timeout_secs: u64,
    /// Path under `public_url` where registration URLs live.
    pub registration_path: String,
    /// Registrations are requested for at least this long, seconds (the spec: at least 3 days).
    pub min_registration_secs: i64,
    /// Change notifications waiting for the Director at most.
    pub notify_queue: usize,
    /// Attempts to reach the Director per notification.
    pub notify_attempts: u32,
    /// Ask the upstream for a collection's new sync-token after a change.
    pub sync_token_lookup: bool,
    /// Serve browsers under `<public_url>.davpush/`: the client module, the demo calendar,
    /// WebSocket tickets and the WebSocket proxy to the Director.
    pub web_clients: bool,
    /// Proxied browser WebSockets one user may hold at once (`/.davpush/ws`).
    pub max_sockets_per_user: usize,
    /// A new connection must complete its first request head within this, seconds.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in progress is closed after this, seconds.
    pub idle_timeout_secs: u64,
    /// Connections without a complete request yet; beyond it the oldest is closed.
    pub max_pending_connections: usize,
    /// Serve Prometheus metrics at `<public_url>.davpush/metrics`.
    pub metrics: bool,
    /// Where keys were set other than in the file (a variable, a flag), for messages.
    #[serde(skip)]
    pub origins: BTreeMap<String, String>,
}

impl Default for RawGatewayConfig {
    fn default() -> Self {
        RawGatewayConfig {
            listen: "127.0.0.1:8081".into(),
            public_url: String::new(),
            upstream: String::new(),
            director_url: "http://127.0.0.1:8080".into(),
            director_public_url: String::new(),
            data_dir: PathBuf::from("davpush-data"),
            notify_token_file: PathBuf::new(),
            subscription_token_file: PathBuf::new(),
            topic_secret_file: PathBuf::new(),
            grant_key_file: PathBuf::new(),
            upstream_headers: Default::default(),
            max_body_bytes: 10 * 1024 * 1024,
            timeout_secs: 60,
            registration_path: "/.davpush/registrations/".into(),
            min_registration_secs: 3 * 86_400,
            notify_queue: 10_000,
            notify_attempts: 6,
            sync_token_lookup: true,
            web_clients: true,
            max_sockets_per_user: 16,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_pending_connections: 1024,
            metrics: true,
            origins: BTreeMap::new(),
        }
    }
}

/// A token read from a file: shown as `***` by `Debug`, so a logged configuration leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public base URL (no trailing slash in its path unless root).
    pub public_url: Url,
    /// Upstream base URL.
    pub upstream: Url,
    /// The Director (gateway side).
    pub director_url: Url,
    /// The Director (client side).
    pub director_public_url: Url,
    /// Director notify token.
    pub notify_token: Secret,
    /// Director subscription token.
    pub subscription_token: Secret,
    /// Topic key.
    pub topic_key: TopicKey,
    /// Signs grants for the topics of collections a user may read.
    pub grant_keys: davpush_proto::GrantKeys,
    /// Headers set on every upstream request.
    pub upstream_headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// Buffer limit.
    pub max_body_bytes: usize,
    /// Timeout.
    pub timeout: Duration,
    /// Registration path (absolute path, ends with `/`).
    pub registration_path: String,
    /// Minimum registration time, seconds.
    pub min_registration_secs: i64,
    /// Notification queue bound.
    pub notify_queue: usize,
    /// Attempts per notification.
    pub notify_attempts: u32,
    /// Look up sync-tokens.
    pub sync_token_lookup: bool,
    /// Serve the browser module, the demo, tickets and the WebSocket proxy.
    pub web_clients: bool,
    /// Proxied browser WebSockets one user may hold at once.
    pub max_sockets_per_user: usize,
    /// Header-read and idle timeouts, pending-connection cap.
    pub connections: davpush_serve::Limits,
    /// Serve `GET <public_url>.davpush/metrics`.
    pub metrics: bool,
    /// The topic secret file, if generated now.
    pub generated_topic_secret: Option<PathBuf>,
}

/// Flags that override the file.
#[derive(Debug, Clone, Default)]
pub struct GatewayOverrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--upstream`
    pub upstream: Option<String>,
    /// `--director`
    pub director: Option<String>,
    /// `--public-url`
    pub public_url: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
}

fn read_secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        invalid(key, format!("cannot read {}: {e} (start the Director first, or set `{key}`)", path.display()))
    })?;
    let t = s.trim().to_owned();
    if t.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(t)
}

/// The value of the variable `name` for `key`: TOML if it parses as such and fits the key, else
/// the text itself (`DAVPUSH_GATEWAY__DATA_DIR=2026` is a directory, not a number).
fn env_value(name: &str, key: &str, value: &str) -> Result<toml::Value, ConfigError> {
    let fits = |v: &toml::Value| -> Result<(), String> {
        let mut defaults = toml::Table::try_from(RawGatewayConfig::default()).map_err(|e| e.to_string())?;
        defaults.insert(key.to_owned(), v.clone());
        defaults.try_into::<RawGatewayConfig>().map(drop).map_err(|e| e.message().to_owned())
    };
    let text = toml::Value::String(value.to_owned());
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v"));
    let first = match parsed {
        Some(v) => match fits(&v) {
            Ok(()) => return Ok(v),
            Err(e) => e,
        },
        None => String::new(),
    };
    match fits(&text) {
        Ok(()) => Ok(text),
        Err(e) => {
            let e = if first.is_empty() { e } else { first };
            Err(invalid(key, format!("environment variable {name}: {e}")))
        }
    }
}

/// `url` with its user information (name and password) replaced by `***`.
fn redact_userinfo(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn parse_url(key: &'static str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s).map_err(|e| invalid(key, format!("`{s}` is not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(invalid(key, format!("`{s}` must be an http(s) URL")));
    }
    Ok(u)
}

impl RawGatewayConfig {
    /// Reads `path` (if any), applies the `DAVPUSH_GATEWAY__<KEY>` variables of `env` (others
    /// are ignored) and the flags.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &GatewayOverrides,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| invalid("--config", format!("cannot read {}: {e}", p.display())))?,
            None => String::new(),
        };
        Self::from_toml(&text, env, flags)
    }

    /// Like [`RawGatewayConfig::load`] with the file's text given. Each variable is checked on
    /// its own first, so that an unknown key or a value of the wrong type names the variable.
    pub fn from_toml(
        text: &str,
        env: &BTreeMap<String, String>,
        flags: &GatewayOverrides,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| invalid("--config", e.to_string()))?;
        let mut origins = BTreeMap::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            if key.is_empty() || key.contains("__") {
                return Err(invalid(&key, format!("environment variable {name} must be {ENV_PREFIX}<KEY>")));
            }
            let value = env_value(name, &key, value)?;
            table.insert(key.clone(), value);
            origins.insert(key, format!("environment variable {name}"));
        }
        let mut raw: RawGatewayConfig =
            table.try_into().map_err(|e: toml::de::Error| invalid("--config", e.to_string()))?;
        for (key, flag, value) in [
            ("listen", "--listen", &flags.listen),
            ("upstream", "--upstream", &flags.upstream),
            ("director_url", "--director", &flags.director),
            ("public_url", "--public-url", &flags.public_url),
        ] {
            if let Some(v) = value {
                let field = match key {
                    "listen" => &mut raw.listen,
                    "upstream" => &mut raw.upstream,
                    "director_url" => &mut raw.director_url,
                    _ => &mut raw.public_url,
                };
                *field = v.clone();
                origins.insert(key.to_owned(), flag.to_owned());
            }
        }
        if let Some(v) = &flags.data_dir {
            raw.data_dir = v.clone();
            origins.insert("data_dir".into(), "--data-dir".into());
        }
        raw.origins = origins;
        Ok(raw)
    }

    /// The configuration as TOML with secrets redacted: the values of `upstream_headers` (a
    /// shared secret of the upstream's, perhaps) and the user information of URLs. The secrets
    /// themselves are in files, which are named, not read.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for v in c.upstream_headers.values_mut() {
            *v = "***".into();
        }
        for url in [&mut c.upstream, &mut c.public_url, &mut c.director_url, &mut c.director_public_url] {
            *url = redact_userinfo(url);
        }
        toml::to_string(&c).unwrap_or_default()
    }

    /// The topic key, creating the secret if needed: for the gateway only, which owns it.
    pub fn topic_key(&self) -> Result<(TopicKey, bool), ConfigError> {
        let path = self.topic_secret_path();
        TopicKey::load_or_create(&path).map_err(|e| invalid("topic_secret_file", e.to_string()))
    }

    /// Where the topic secret is (`topic_secret_file`, else `<data_dir>/topic-secret`).
    pub fn topic_secret_path(&self) -> PathBuf {
        self.secret_path(&self.topic_secret_file, "topic-secret")
    }

    /// The topic key of an existing secret (for `davpush topic` and `davpush notify`, which
    /// never create one: a topic under a secret the gateway does not use reaches nobody).
    pub fn existing_topic_key(&self) -> Result<TopicKey, ConfigError> {
        let path = self.topic_secret_path();
        TopicKey::load(&path).map_err(|e| {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "no topic secret in {}: the gateway creates it on its first start; start `davpush gateway` \
                     once with this data directory, or point --data-dir (or `data_dir`/`topic_secret_file` \
                     in --config) at the gateway's",
                    path.display()
                )
            } else {
                format!("cannot read {}: {e}", path.display())
            };
            invalid("topic_secret_file", message)
        })
    }

    fn secret_path(&self, configured: &Path, default: &str) -> PathBuf {
        if configured.as_os_str().is_empty() { self.data_dir.join(default) } else { configured.to_owned() }
    }

    /// The files of the Director's secrets the gateway reads (notify and subscription tokens,
    /// grant key): a gateway started together with a Director's first start waits for them.
    pub fn director_secret_files(&self) -> [PathBuf; 3] {
        [
            self.secret_path(&self.notify_token_file, "notify-token"),
            self.secret_path(&self.subscription_token_file, "subscription-token"),
            self.secret_path(&self.grant_key_file, "grant-key"),
        ]
    }

    /// The notify token alone (for `davpush notify`).
    pub fn notify_token(&self) -> Result<String, ConfigError> {
        read_secret("notify_token_file", &self.secret_path(&self.notify_token_file, "notify-token"))
    }
}

impl GatewayConfig {
    /// Validates `raw`; generates the topic secret if it does not exist yet. An error about a
    /// key a variable or flag set names it.
    pub fn from_raw(raw: RawGatewayConfig) -> Result<Self, ConfigError> {
        let origins = raw.origins.clone();
        Self::validate(raw, true).map_err(|e| with_origin(e, &origins))
    }

    /// Validates `raw` like [`GatewayConfig::from_raw`] but creates nothing: a missing topic
    /// secret is not generated (`--dump-config`).
    pub fn check(raw: RawGatewayConfig) -> Result<(), ConfigError> {
        let origins = raw.origins.clone();
        Self::validate(raw, false).map(drop).map_err(|e| with_origin(e, &origins))
    }

    fn validate(raw: RawGatewayConfig, create_topic_secret: bool) -> Result<Self, ConfigError> {
        let listen: SocketAddr = davpush_serve::resolve_listen(&raw.listen).map_err(|e| invalid("listen", e))?;
        if raw.upstream.is_empty() {
            return Err(invalid("upstream", "is required: the URL of the WebDAV server behind the gateway"));
        }
        let upstream = parse_url("upstream", &raw.upstream)?;
        let public_url = if raw.public_url.is_empty() {
            parse_url("public_url", &format!("http://{listen}/"))?
        } else {
            parse_url("public_url", &raw.public_url)?
        };
        let director_url = parse_url("director_url", &raw.director_url)?;
        let director_public_url = if raw.director_public_url.is_empty() {
            director_url.clone()
        } else {
            parse_url("director_public_url", &raw.director_public_url)?
        };
        if !raw.registration_path.starts_with('/') || !raw.registration_path.ends_with('/') {
            return Err(invalid("registration_path", "must start and end with `/`"));
        }
        if raw.max_body_bytes < 4096 {
            return Err(invalid("max_body_bytes", "must be at least 4096"));
        }
        if raw.timeout_secs == 0 {
            return Err(invalid("timeout_secs", "must be at least 1"));
        }
        if raw.notify_queue == 0 || raw.notify_attempts == 0 {
            return Err(invalid("notify_queue", "notify_queue and notify_attempts must be at least 1"));
        }
        for (key, v) in [
            ("header_read_timeout_secs", raw.header_read_timeout_secs),
            ("idle_timeout_secs", raw.idle_timeout_secs),
            ("max_pending_connections", raw.max_pending_connections as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let connections = davpush_serve::Limits {
            header_read_timeout: Duration::from_secs(raw.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
            max_pending_connections: raw.max_pending_connections,
        };
        let notify_token = raw.notify_token()?;
        let subscription_token = read_secret(
            "subscription_token_file",
            &raw.secret_path(&raw.subscription_token_file, "subscription-token"),
        )?;
        let grant_key_path = raw.secret_path(&raw.grant_key_file, "grant-key");
        let grant_keys = std::fs::read_to_string(&grant_key_path)
            .map_err(|e| {
                invalid(
                    "grant_key_file",
                    format!(
                        "cannot read {}: {e} (start the Director first, or set `grant_key_file`)",
                        grant_key_path.display()
                    ),
                )
            })
            .and_then(|text| {
                davpush_proto::GrantKeys::parse(&text)
                    .map_err(|e| invalid("grant_key_file", format!("{}: {e}", grant_key_path.display())))
            })?;
        let mut upstream_headers = Vec::with_capacity(raw.upstream_headers.len());
        for (name, value) in &raw.upstream_headers {
            let n = axum::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("upstream_headers", format!("`{name}` is not a header name")))?;
            let mut v = axum::http::HeaderValue::from_str(value).map_err(|_| {
                invalid("upstream_headers", format!("the value of `{name}` is not a valid header value"))
            })?;
            // It may be a shared secret of the upstream's: never shown by `Debug`.
            v.set_sensitive(true);
            upstream_headers.push((n, v));
        }
        let (topic_key, created) = if create_topic_secret || raw.topic_secret_path().exists() {
            raw.topic_key()?
        } else {
            (TopicKey::new(b"not used: this configuration is only checked"), false)
        };
        let generated_topic_secret = created.then(|| raw.secret_path(&raw.topic_secret_file, "topic-secret"));
        Ok(GatewayConfig {
            listen,
            public_url,
            upstream,
            director_url,
            director_public_url,
            notify_token: Secret(notify_token),
            subscription_token: Secret(subscription_token),
            topic_key,
            grant_keys,
            upstream_headers,
            max_body_bytes: raw.max_body_bytes,
            timeout: Duration::from_secs(raw.timeout_secs),
            registration_path: raw.registration_path,
            min_registration_secs: raw.min_registration_secs,
            notify_queue: raw.notify_queue,
            notify_attempts: raw.notify_attempts,
            sync_token_lookup: raw.sync_token_lookup,
            web_clients: raw.web_clients,
            max_sockets_per_user: raw.max_sockets_per_user.max(1),
            connections,
            metrics: raw.metrics,
            generated_topic_secret,
        })
    }

    /// The path prefix of the public URL (`/` or `/dav/`).
    pub fn public_prefix(&self) -> &str {
        self.public_url.path()
    }

    /// The path prefix of the upstream URL.
    pub fn upstream_prefix(&self) -> &str {
        self.upstream.path()
    }

    /// Maps a public request path to the upstream path, if it is under the public prefix.
    /// Paths that are not [`crate::topic::path_is_safe`] are refused (`None`).
    pub fn to_upstream_path(&self, public_path: &str) -> Option<String> {
        if !crate::topic::path_is_safe(public_path) {
            return None;
        }
        let rest = strip_prefix_dir(public_path, self.public_prefix())?;
        Some(join(self.upstream_prefix(), rest))
    }

    /// Maps an upstream path back to the public one.
    pub fn to_public_path(&self, upstream_path: &str) -> Option<String> {
        let rest = strip_prefix_dir(upstream_path, self.upstream_prefix())?;
        Some(join(self.public_prefix(), rest))
    }
}

/// `e` with where its key was set, if not in the file.
fn with_origin(e: ConfigError, origins: &BTreeMap<String, String>) -> ConfigError {
    match origins.get(&e.key) {
        Some(o) if !e.message.contains(o.as_str()) => {
            ConfigError { message: format!("{} (set by {o})", e.message), key: e.key }
        }
        _ => e,
    }
}

fn strip_prefix_dir<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if let Some(rest) = path.strip_prefix(prefix) {
        return Some(rest);
    }
    // `/dav` for prefix `/dav/`
    (prefix.ends_with('/') && path == &prefix[..prefix.len() - 1]).then_some("")
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.ends_with('/') { format!("{prefix}{rest}") } else { format!("{prefix}/{rest}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_examples_gateway_toml_documents_every_key() {
        let text = include_str!("../../../examples/gateway.toml");
        davpush_testkit::config::assert_example_documents_every_key(
            text,
            toml::Table::try_from(RawGatewayConfig::default()).unwrap(),
            "examples/gateway.toml",
        );
    }

    fn cfg(public: &str, upstream: &str) -> GatewayConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notify-token"), "n-token-0123456789\n").unwrap();
        std::fs::write(dir.path().join("subscription-token"), "s-token-0123456789\n").unwrap();
        std::fs::write(dir.path().join("grant-key"), davpush_proto::GrantKeys::generate_line()).unwrap();
        let raw = RawGatewayConfig {
            upstream: upstream.into(),
            public_url: public.into(),
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        let c = GatewayConfig::from_raw(raw).unwrap();
        assert!(c.generated_topic_secret.is_some());
        c
    }

    #[test]
    fn upstream_header_values_are_not_shown_by_debug() {
        let dir = tempfile::tempdir().unwrap();
        for (f, v) in [("notify-token", "n-token-0123456789"), ("subscription-token", "s-token-0123456789")] {
            std::fs::write(dir.path().join(f), v).unwrap();
        }
        std::fs::write(dir.path().join("grant-key"), davpush_proto::GrantKeys::generate_line()).unwrap();
        let mut raw = RawGatewayConfig {
            upstream: "http://127.0.0.1:5232/".into(),
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        raw.upstream_headers.insert("X-Upstream-Secret".into(), "hunter2-secret".into());
        let c = GatewayConfig::from_raw(raw).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        assert!(!format!("{c:?}").contains("n-token"), "{c:?}");
    }

    #[test]
    fn the_example_file_parses_and_names_the_defaults() {
        let example: RawGatewayConfig = toml::from_str(include_str!("../../../examples/gateway.toml")).unwrap();
        let defaults = RawGatewayConfig::default();
        assert_eq!(toml::to_string(&example).unwrap(), toml::to_string(&defaults).unwrap());
    }

    #[test]
    fn paths_map_between_public_and_upstream() {
        let c = cfg("https://dav.example.org/dav/", "http://127.0.0.1:5232/");
        assert_eq!(c.to_upstream_path("/dav/alice/cal/"), Some("/alice/cal/".into()));
        assert_eq!(c.to_upstream_path("/dav"), Some("/".into()));
        assert_eq!(c.to_upstream_path("/other"), None);
        assert_eq!(c.to_public_path("/alice/cal/e.ics"), Some("/dav/alice/cal/e.ics".into()));
        let same = cfg("", "http://127.0.0.1:5232/");
        assert_eq!(same.to_upstream_path("/alice/"), Some("/alice/".into()));
        assert_eq!(same.notify_token.expose(), "n-token-0123456789");
    }

    #[test]
    fn variables_override_the_file_and_flags_override_both() {
        let env: BTreeMap<String, String> = [
            ("DAVPUSH_GATEWAY__UPSTREAM", "http://127.0.0.1:5232/"),
            ("DAVPUSH_GATEWAY__TIMEOUT_SECS", "30"),
            ("DAVPUSH_GATEWAY__DATA_DIR", "2026"),
            ("DAVPUSH_GATEWAY__WEB_CLIENTS", "false"),
            ("DAVPUSH_GATEWAY__LISTEN", "127.0.0.1:9000"),
            ("DAVPUSH_GATEWAY__UPSTREAM_HEADERS", r#"{ "X-Forwarded-Proto" = "https" }"#),
            // Not the gateway's: the CLI's own variable and the Director's keys.
            ("DAVPUSH_GATEWAY_CONFIG", "/nonexistent"),
            ("DAVPUSH_SERVER__LISTEN", "127.0.0.1:1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let flags = GatewayOverrides { listen: Some("127.0.0.1:9001".into()), ..Default::default() };
        let raw = RawGatewayConfig::from_toml(
            "timeout_secs = 5
metrics = false
",
            &env,
            &flags,
        )
        .unwrap();
        assert_eq!(raw.upstream, "http://127.0.0.1:5232/");
        assert_eq!(raw.timeout_secs, 30);
        assert_eq!(raw.data_dir, PathBuf::from("2026"));
        assert!(!raw.web_clients && !raw.metrics);
        assert_eq!(raw.listen, "127.0.0.1:9001");
        assert_eq!(raw.upstream_headers["X-Forwarded-Proto"], "https");
        assert_eq!(raw.origins["timeout_secs"], "environment variable DAVPUSH_GATEWAY__TIMEOUT_SECS");
        assert_eq!(raw.origins["listen"], "--listen");
    }

    #[test]
    fn a_bad_variable_is_named() {
        for (name, value, key) in [
            ("DAVPUSH_GATEWAY__LISTN", "127.0.0.1:0", "listn"),
            ("DAVPUSH_GATEWAY__TIMEOUT_SECS", "soon", "timeout_secs"),
            ("DAVPUSH_GATEWAY__UPSTREAM_HEADERS__X", "y", "upstream_headers__x"),
        ] {
            let env = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            let e = RawGatewayConfig::from_toml("", &env, &GatewayOverrides::default()).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(name), "{e}");
        }
        // A value that parses but is invalid: the validation names the variable too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notify-token"), "n-token-0123456789\n").unwrap();
        let env = BTreeMap::from([
            ("DAVPUSH_GATEWAY__TIMEOUT_SECS".to_owned(), "0".to_owned()),
            ("DAVPUSH_GATEWAY__UPSTREAM".to_owned(), "http://127.0.0.1:5232/".to_owned()),
        ]);
        let raw = RawGatewayConfig::from_toml("", &env, &GatewayOverrides::default()).unwrap();
        let e = GatewayConfig::check(raw).unwrap_err();
        assert!(e.to_string().contains("DAVPUSH_GATEWAY__TIMEOUT_SECS"), "{e}");
    }

    #[test]
    fn the_dump_hides_header_values_and_url_credentials() {
        let mut raw = RawGatewayConfig {
            upstream: "http://user:hunter2@127.0.0.1:5232/dav/".into(),
            director_url: "http://only-a-token@127.0.0.1:8080".into(),
            ..Default::default()
        };
        raw.upstream_headers.insert("X-Upstream-Secret".into(), "hunter3".into());
        let dump = raw.to_redacted_toml();
        assert!(!dump.contains("hunter2") && !dump.contains("hunter3") && !dump.contains("only-a-token"), "{dump}");
        assert!(dump.contains("http://***@127.0.0.1:5232/dav/"), "{dump}");
        // The dump is a configuration again.
        let again: RawGatewayConfig = toml::from_str(&dump).unwrap();
        assert_eq!(again.upstream_headers["X-Upstream-Secret"], "***");
    }

    #[test]
    fn check_creates_no_topic_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notify-token"), "n-token-0123456789\n").unwrap();
        std::fs::write(dir.path().join("subscription-token"), "s-token-0123456789\n").unwrap();
        std::fs::write(dir.path().join("grant-key"), davpush_proto::GrantKeys::generate_line()).unwrap();
        let raw = RawGatewayConfig {
            upstream: "http://127.0.0.1:5232/".into(),
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        GatewayConfig::check(raw.clone()).unwrap();
        assert!(!dir.path().join("topic-secret").exists());
        GatewayConfig::from_raw(raw).unwrap();
        assert!(dir.path().join("topic-secret").exists());
    }

    #[test]
    fn errors_name_the_key() {
        let e = GatewayConfig::from_raw(RawGatewayConfig::default()).unwrap_err();
        assert_eq!(e.key, "upstream");
        let e =
            GatewayConfig::from_raw(RawGatewayConfig { upstream: "ftp://x".into(), ..Default::default() }).unwrap_err();
        assert_eq!(e.key, "upstream");
    }
}
