//! RFC 8030 Web Push and UnifiedPush (the same protocol: an HTTP POST to an endpoint the client
//! got from its push service), with RFC 8291 encryption and RFC 8292 VAPID.
//!
//! `push_services.web_push` / `push_services.unified_push` parameters:
//! `{"endpoint": "https://…", "p256dh": "<base64url>", "auth": "<base64url>", "format": "topic-json"}`.
//! With keys every message is encrypted (`aes128gcm`); without keys it is sent in the clear, and
//! only if `allow_unencrypted` is set (the draft's plain UnifiedPush). `format` is `topic-json`
//! (the WebSocket `notify` frame, default) or `webdav-push-xml` (the spec's `push-message`).

pub mod ece;
pub mod keyring;
pub mod settings;
pub mod vapid;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_core::feedback::Feedback;
use davpush_core::transport::TargetError;
use davpush_core::{
    Metrics, PushMessage, RemoteTarget, ServiceKind, Subscription, SubscriptionStore, Target, TargetData,
};
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::{bounded_text, retry_after};
use crate::egress::{EgressClients, EgressPolicy};
use crate::engine::{Deliver, Engine, EngineSettings, HostKey, Outcome};
use crate::transport::{EngineTransport, TargetParser};
use keyring::{LiveRing, VapidRing};
pub use settings::{ContentType, RawWebPush, Urgency, WebPushConfig, WebPushSettings};
use vapid::Vapid;

/// Payload format of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// `{"type":"notify","topic":…,"sync_token":…}`, the WebSocket frame.
    #[default]
    TopicJson,
    /// The WebDAV-Push spec's `<push-message>`.
    WebdavPushXml,
}

/// The subscription parameters as stored (canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushParams {
    /// The push resource.
    pub endpoint: String,
    /// The user agent's P-256 public key (uncompressed, base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p256dh: Option<String>,
    /// The user agent's 16-byte auth secret (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Payload format.
    #[serde(default)]
    pub format: PayloadFormat,
    /// The id of the VAPID key the subscription was made with (set by the Director, never by
    /// the client): its messages are signed with that key, also after a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapid_key: Option<String>,
}

/// [`WebPushParams`] borrowed.
struct Parts<'a> {
    endpoint: &'a str,
    p256dh: Option<&'a str>,
    auth: Option<&'a str>,
    format: PayloadFormat,
    vapid_key: Option<&'a str>,
}

/// [`WebPushParams`] as read back from the store, borrowing from the row's text where it has
/// no escapes (issue 11: a notification of a big topic reads 10,000 of them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredParams<'a> {
    #[serde(borrow)]
    endpoint: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    p256dh: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    auth: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    format: PayloadFormat,
    #[serde(default, borrow)]
    vapid_key: Option<std::borrow::Cow<'a, str>>,
}

/// A Web Push destination, as kept for each subscription: its validated parameters only, the
/// endpoint and the two key texts in one string (issue 11: a million subscriptions). What a
/// delivery needs (the URL, the origin, the decoded keys) is worked out per delivery by
/// `WebPushTarget::resolve`, which costs microseconds next to the encryption.
#[derive(Debug, Clone)]
pub struct WebPushTarget {
    /// The endpoint, then `p256dh` and `auth` as given (nothing after the endpoint without keys).
    text: Box<str>,
    /// Where `p256dh` starts in `text` (the endpoint's length; at most [`MAX_ENDPOINT_LEN`]).
    p256dh_at: u16,
    /// Where `auth` starts in `text`.
    auth_at: u16,
    format: PayloadFormat,
    /// The VAPID key id it is bound to.
    vapid_key: Option<Arc<str>>,
}

impl WebPushTarget {
    /// Holds `p` (its lengths checked by [`parse_params`]). A `vapid_key` equal to `current`
    /// shares its string (one per Director, not one per subscription: issue 11).
    fn new(p: &WebPushParams, current: Option<&Arc<str>>) -> Result<Self, TargetError> {
        let parts = Parts {
            endpoint: &p.endpoint,
            p256dh: p.p256dh.as_deref(),
            auth: p.auth.as_deref(),
            format: p.format,
            vapid_key: p.vapid_key.as_deref(),
        };
        Self::from_parts(&parts, current)
    }

    /// As [`WebPushTarget::new`], from borrowed texts; the lengths checked as [`validated`]
    /// does.
    fn from_parts(p: &Parts<'_>, current: Option<&Arc<str>>) -> Result<Self, TargetError> {
        if p.endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(TargetError::new(
                Some("endpoint"),
                format!("`endpoint` may be at most {MAX_ENDPOINT_LEN} bytes"),
            ));
        }
        // The texts are stored as given: their length is checked, not only what they decode to.
        if p.p256dh.is_some_and(|k| k.len() > MAX_P256DH_LEN) {
            return Err(TargetError::new(Some("p256dh"), "`p256dh` must be a 65-byte P-256 public key".into()));
        }
        if p.auth.is_some_and(|a| a.len() > MAX_AUTH_LEN) {
            return Err(TargetError::new(Some("auth"), "`auth` must be 16 bytes".into()));
        }
        let (k, a) = match (p.p256dh, p.auth) {
            (Some(k), Some(a)) => (k, a),
            (None, None) => ("", ""),
            _ => return Err(TargetError::new(Some("auth"), "`p256dh` and `auth` go together".into())),
        };
        let p256dh_at = u16::try_from(p.endpoint.len()).unwrap_or(u16::MAX);
        let auth_at = u16::try_from(p.endpoint.len() + k.len()).unwrap_or(u16::MAX);
        Ok(WebPushTarget {
            text: [p.endpoint, k, a].concat().into(),
            p256dh_at,
            auth_at,
            format: p.format,
            vapid_key: p.vapid_key.map(|k| match current {
                Some(c) if **c == *k => c.clone(),
                _ => Arc::from(k),
            }),
        })
    }

    fn endpoint(&self) -> &str {
        &self.text[..usize::from(self.p256dh_at)]
    }

    /// `p256dh` and `auth`, if the subscription has keys.
    fn key_texts(&self) -> Option<(&str, &str)> {
        let (k, a) = (usize::from(self.p256dh_at), usize::from(self.auth_at));
        (self.text.len() > k).then(|| (&self.text[k..a], &self.text[a..]))
    }
}

impl TargetData for WebPushTarget {
    fn params(&self) -> String {
        let keys = self.key_texts();
        let p = WebPushParams {
            endpoint: self.endpoint().to_owned(),
            p256dh: keys.map(|(k, _)| k.to_owned()),
            auth: keys.map(|(_, a)| a.to_owned()),
            format: self.format,
            vapid_key: self.vapid_key.as_deref().map(str::to_owned),
        };
        serde_json::to_string(&p).unwrap_or_default()
    }
}

/// A [`WebPushTarget`] ready for a request.
#[derive(Debug)]
struct Resolved {
    endpoint: Url,
    /// Scheme, host and port: the VAPID audience and the engine's [`HostKey`].
    origin: String,
    keys: Option<(Vec<u8>, Vec<u8>)>,
    format: PayloadFormat,
    vapid_key: Option<Arc<str>>,
}

impl WebPushTarget {
    /// The endpoint's URL.
    fn url(&self) -> Result<Url, TargetError> {
        Url::parse(self.endpoint())
            .map_err(|e| TargetError::new(Some("endpoint"), format!("`endpoint` is not a URL: {e}")))
    }

    /// The endpoint's URL, its origin and the decoded keys (checked as at subscribe time).
    fn resolve(&self) -> Result<Resolved, TargetError> {
        let endpoint = self.url()?;
        let keys = match self.key_texts() {
            Some((k, a)) => {
                let k = decode("p256dh", k)?;
                let a = decode("auth", a)?;
                // Only the form here: this runs for every delivery. That the point is on the
                // curve is checked once, at subscribe time, by `check_target`, and the store is
                // trusted after (issue 11).
                if k.len() != ece::PUBLIC_KEY_LEN || k[0] != 0x04 {
                    return Err(TargetError::new(Some("p256dh"), ece::EceError::BadPublicKey.to_string()));
                }
                if a.len() != ece::AUTH_LEN {
                    return Err(TargetError::new(Some("auth"), "`auth` must be 16 bytes".into()));
                }
                Some((k, a))
            }
            None => None,
        };
        let origin = endpoint.origin().ascii_serialization();
        Ok(Resolved { endpoint, origin, keys, format: self.format, vapid_key: self.vapid_key.clone() })
    }

    /// The origin of the endpoint (its host key), without the rest of [`WebPushTarget::resolve`]:
    /// taken from the text when it is plainly in the form the URL parser would give
    /// ([`plain_origin`]), parsed otherwise.
    fn origin(&self) -> Option<String> {
        let endpoint = self.endpoint();
        plain_origin(endpoint)
            .map(str::to_owned)
            .or_else(|| Url::parse(endpoint).ok().map(|u| u.origin().ascii_serialization()))
    }
}

/// The origin of `url` (`scheme://host[:port]`) as its text's prefix, when that prefix is already
/// what [`Url::parse`] then [`url::Origin::ascii_serialization`] would give: `http` or `https`
/// in lower case, a host name of lower-case ASCII letters, digits, hyphens and dots (no IP
/// address, no IDNA `xn--` label, no empty label) and either no port or a port that is not
/// the scheme's default and has no leading zero. `None` otherwise (the caller parses): the
/// endpoints push services hand out are of this form, and one delivery engine sorts 10,000 of
/// them into hosts per notification of a big topic (issue 11).
fn plain_origin(url: &str) -> Option<&str> {
    let (rest, default_port) =
        if let Some(r) = url.strip_prefix("https://") { (r, "443") } else { (url.strip_prefix("http://")?, "80") };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let plain_label = |l: &str| {
        !l.is_empty()
            && !l.starts_with("xn--")
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let labels = host.strip_suffix('.').unwrap_or(host);
    // The last label starting with a digit may make the host an IPv4 address (`127.1`, `0x7f`):
    // the parser's business.
    let last_alpha = labels.rsplit('.').next().and_then(|l| l.bytes().next()).is_some_and(|b| b.is_ascii_lowercase());
    if !last_alpha || !labels.split('.').all(plain_label) {
        return None;
    }
    if let Some(p) = port
        && (p.is_empty()
            || p == default_port
            || p.starts_with('0')
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u16>().is_err())
    {
        return None;
    }
    // A question mark or fragment right after the authority: the parser adds a `/`, the origin
    // is the same.
    Some(&url[..url.len() - rest.len() + end])
}

fn decode(field: &'static str, s: &str) -> Result<Vec<u8>, TargetError> {
    B64.decode(s.trim_end_matches('='))
        .map_err(|_| TargetError::new(Some(field), format!("`{field}` is not base64url")))
}

/// The RFC 8030 `Topic` header for a topic: at most 32 base64url characters, derived by hashing
/// (the push service sees it, so it reveals no more than the topic itself).
pub fn topic_header(topic: &str) -> String {
    let h = digest(&SHA256, topic.as_bytes());
    B64.encode(&h.as_ref()[..24])
}

/// Longest accepted endpoint URL, bytes. Push services hand out endpoints of 60–400 bytes
/// (Mozilla's are the longest); the limit bounds what one subscription costs in memory and
/// in the store.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// Longest base64url text of a 65-byte P-256 public key (87 characters, 88 padded).
const MAX_P256DH_LEN: usize = 88;
/// Longest base64url text of a 16-byte auth secret (22 characters, 24 padded).
const MAX_AUTH_LEN: usize = 24;

/// Parses and validates parameters (no I/O).
pub fn parse_params(
    kind: ServiceKind,
    params: &serde_json::Value,
    policy: &EgressPolicy,
    allow_unencrypted: bool,
) -> Result<Target, TargetError> {
    let p: WebPushParams = Deserialize::deserialize(params).map_err(|e| TargetError::new(None, e.to_string()))?;
    validated(kind, p, policy, allow_unencrypted, None)
}

/// Checks parameters already read into their struct (see [`parse_params`]).
fn validated(
    kind: ServiceKind,
    p: WebPushParams,
    policy: &EgressPolicy,
    allow_unencrypted: bool,
    current_key: Option<&Arc<str>>,
) -> Result<Target, TargetError> {
    let target = WebPushTarget::new(&p, current_key)?;
    let resolved = target.resolve()?;
    policy.check_url(&resolved.endpoint).map_err(|e| TargetError::new(Some("endpoint"), e.to_string()))?;
    encrypted_unless_allowed(resolved.keys.is_some(), allow_unencrypted)?;
    Ok(Target::Remote(RemoteTarget::new(kind, target)))
}

fn encrypted_unless_allowed(keys: bool, allow_unencrypted: bool) -> Result<(), TargetError> {
    if !keys && !allow_unencrypted {
        return Err(TargetError::new(
            Some("p256dh"),
            "`p256dh` and `auth` are required: this Director sends encrypted messages only".into(),
        ));
    }
    Ok(())
}

/// Sends one message per request.
pub struct WebPushSender {
    clients: EgressClients,
    vapid: Arc<LiveRing>,
    policy: EgressPolicy,
    urgency: HeaderValue,
    /// `Content-Type` of encrypted messages.
    content_type: settings::ContentType,
}

impl std::fmt::Debug for WebPushSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushSender").finish_non_exhaustive()
    }
}

impl WebPushSender {
    /// A sender with its own HTTP client built on `policy`.
    pub fn new(vapid: Arc<Vapid>, policy: EgressPolicy, settings: &WebPushSettings) -> Result<Self, reqwest::Error> {
        Self::with_keys(Arc::new(LiveRing::new(VapidRing::single(vapid))), policy, settings)
    }

    /// A sender signing each subscription's messages with the key it was made with, from the
    /// ring in use at each request.
    pub fn with_keys(
        vapid: Arc<LiveRing>,
        policy: EgressPolicy,
        settings: &WebPushSettings,
    ) -> Result<Self, reqwest::Error> {
        Ok(WebPushSender {
            clients: policy.clients(settings.timeout)?,
            vapid,
            urgency: HeaderValue::from_static(settings.urgency.as_str()),
            content_type: settings.content_type,
            policy,
        })
    }
}

fn web_push_target(sub: &Subscription) -> Option<&WebPushTarget> {
    match &sub.target {
        Target::Remote(r) => r.data::<WebPushTarget>(),
        _ => None,
    }
}

/// Classifies a push service's answer (RFC 8030 §5, §6).
pub fn classify(status: u16, retry: Option<Duration>, body: &str) -> Outcome {
    let detail = || format!("HTTP {status}: {}", body.chars().take(200).collect::<String>());
    match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone(detail()),
        429 | 500..=599 => Outcome::Retry { after: retry, reason: detail() },
        _ => Outcome::Rejected(detail()),
    }
}

#[async_trait]
impl Deliver for WebPushSender {
    /// Each endpoint's origin is a host of its own: a slow or failing push service (or one a
    /// subscriber chose to make hang) only holds its own share of the workers.
    fn origin(&self, sub: &Subscription) -> HostKey {
        web_push_target(sub).and_then(WebPushTarget::origin).map_or_else(HostKey::default, |o| HostKey::new(&o))
    }

    async fn deliver(&self, sub: &Subscription, message: &PushMessage, ttl: Duration) -> Outcome {
        let Some(t) = web_push_target(sub) else {
            return Outcome::Rejected("not a Web Push subscription".into());
        };
        let t = match t.resolve() {
            Ok(t) => t,
            Err(e) => return Outcome::Rejected(e.to_string()),
        };
        // IP-literal endpoints are not seen by the resolver: check again before every request.
        if let Err(e) = self.policy.check_url(&t.endpoint) {
            return Outcome::Rejected(e.to_string());
        }
        let n = &message.notification;
        let rotation = n.is_key_rotation();
        let (plain, content_type): (std::borrow::Cow<'_, [u8]>, &'static str) = match t.format {
            // The spec's message whatever the format: it names no topic.
            _ if rotation => {
                (davpush_proto::xml::key_rotation_message().into_bytes().into(), "application/xml; charset=\"UTF-8\"")
            }
            PayloadFormat::TopicJson => (message.ws_frame.as_ref().into(), "application/json"),
            PayloadFormat::WebdavPushXml => (
                davpush_proto::xml::push_message(n.topic.as_str(), n.sync_token.as_deref(), n.trigger)
                    .into_bytes()
                    .into(),
                "application/xml; charset=\"UTF-8\"",
            ),
        };
        let ring = self.vapid.get();
        let signer = ring.signer(t.vapid_key.as_deref());
        let mut req = self
            .clients
            .for_url(&t.endpoint)
            .post(t.endpoint.clone())
            .header("TTL", ttl.as_secs().to_string())
            .header("Urgency", self.urgency.clone())
            .header("Topic", topic_header(n.topic.as_str()))
            .header(AUTHORIZATION, &*signer.authorization(&t.origin, davpush_core::unix_now()));
        req = match &t.keys {
            Some((p256dh, auth)) => match ece::encrypt(&plain, p256dh, auth) {
                Ok(body) => {
                    let content_type = match self.content_type {
                        settings::ContentType::Xml => content_type,
                        settings::ContentType::OctetStream => "application/octet-stream",
                    };
                    req.header(CONTENT_TYPE, content_type).header(CONTENT_ENCODING, "aes128gcm").body(body)
                }
                // The spec counts a subscription that cannot be encrypted for as invalid.
                Err(e) => return Outcome::Gone(format!("encryption failed: {e}")),
            },
            None => req.header(CONTENT_TYPE, content_type).body(plain.into_owned()),
        };
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry = retry_after(resp.headers().get(RETRY_AFTER));
                let body = if resp.status().is_success() { String::new() } else { bounded_text(resp, 4096).await };
                classify(status, retry, &body)
            }
            Err(e) => {
                // The resolver refuses non-public addresses: that is not going to get better.
                let refused = std::error::Error::source(&e)
                    .map(|s| format!("{s:?}"))
                    .is_some_and(|s| s.contains("NotPublic") || s.contains("NotAllowed"));
                if refused {
                    Outcome::Rejected(format!("egress refused: {e}"))
                } else {
                    Outcome::Retry { after: None, reason: format!("request failed: {e}") }
                }
            }
        }
    }
}

/// How `web_push` / `unified_push` subscriptions read: endpoints within the egress policy,
/// keys unless plain messages are allowed; the endpoint's addresses are checked after DNS.
#[derive(Debug, Clone)]
pub struct WebPushTargets {
    kind: ServiceKind,
    policy: EgressPolicy,
    allow_unencrypted: bool,
    /// The keys: new subscriptions are bound to the advertised one's id.
    keys: Arc<LiveRing>,
}

#[async_trait]
impl TargetParser for WebPushTargets {
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        let mut p: WebPushParams =
            Deserialize::deserialize(params).map_err(|e| TargetError::new(None, e.to_string()))?;
        // Whatever the client says: a subscription is bound to the key it could have been
        // restricted to, the advertised one.
        let ring = self.keys.get();
        p.vapid_key = Some(ring.current_id().to_string());
        validated(self.kind, p, &self.policy, self.allow_unencrypted, Some(ring.current_id()))
    }

    /// A stored row was resolved and checked at subscribe time (`check_target`), and the sender
    /// parses the URL and checks it against the egress policy before every request
    /// (`WebPushSender::deliver`): a row read back for a notification is trusted as it is, its
    /// form and lengths only checked (issue 11: 10,000 of one topic at once).
    fn parse_stored(&self, json: &str) -> Result<Target, TargetError> {
        let p: StoredParams<'_> = serde_json::from_str(json).map_err(|e| TargetError::new(None, e.to_string()))?;
        // Rows from before rotation existed are bound to the advertised key at start.
        let ring = self.keys.get();
        let current = ring.current_id();
        let parts = Parts {
            endpoint: &p.endpoint,
            p256dh: p.p256dh.as_deref(),
            auth: p.auth.as_deref(),
            format: p.format,
            vapid_key: Some(p.vapid_key.as_deref().unwrap_or(current)),
        };
        let target = WebPushTarget::from_parts(&parts, Some(current))?;
        encrypted_unless_allowed(target.key_texts().is_some(), self.allow_unencrypted)?;
        Ok(Target::Remote(RemoteTarget::new(self.kind, target)))
    }

    async fn check_target(&self, target: &Target) -> Result<(), TargetError> {
        let Target::Remote(r) = target else { return Ok(()) };
        let Some(t) = r.data::<WebPushTarget>() else { return Ok(()) };
        let t = t.resolve()?;
        if let Some((p256dh, _)) = &t.keys {
            ece::check_public_key(p256dh).map_err(|e| TargetError::new(Some("p256dh"), e.to_string()))?;
        }
        self.policy.check_resolved(&t.endpoint).await.map_err(|e| TargetError::new(Some("endpoint"), e.to_string()))
    }
}

/// The transport for one of the two service names (`web_push`, `unified_push`).
pub type WebPushTransport = EngineTransport<WebPushTargets>;

impl EngineTransport<WebPushTargets> {
    /// Starts a transport of `kind` (`WebPush` or `UnifiedPush`) delivering through `sender`.
    pub fn start(
        kind: ServiceKind,
        sender: Arc<WebPushSender>,
        settings: &WebPushSettings,
        feedback: Feedback,
        metrics: Arc<Metrics>,
        store: Arc<dyn SubscriptionStore>,
    ) -> Self {
        let policy = sender.policy.clone();
        let keys = sender.vapid.clone();
        let engine_settings = EngineSettings {
            per_host_workers: settings.max_per_host,
            request_timeout: settings.timeout,
            ..settings.engine.clone()
        };
        let engine = Engine::start(kind, sender, engine_settings, feedback, metrics, store);
        let targets = WebPushTargets { kind, policy, allow_unencrypted: settings.allow_unencrypted, keys };
        EngineTransport::new(kind, targets, engine, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_keys() -> Arc<LiveRing> {
        let key = Arc::new(vapid::VapidKey::generate_pem().unwrap().0);
        Arc::new(LiveRing::new(VapidRing::single(Arc::new(Vapid::new(key, "mailto:ops@example.org".into())))))
    }

    #[test]
    fn topic_header_is_32_base64url_chars() {
        let h = topic_header("f0ec984b-4b19-4652-91f2-92c6d81c3c09");
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(h, topic_header("other"));
    }

    #[test]
    fn outcomes_are_classified() {
        assert_eq!(classify(201, None, ""), Outcome::Delivered);
        assert!(matches!(classify(410, None, ""), Outcome::Gone(_)));
        assert!(matches!(classify(404, None, ""), Outcome::Gone(_)));
        for s in [400, 403, 413] {
            assert!(matches!(classify(s, None, "x"), Outcome::Rejected(_)), "{s}");
        }
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), ""),
            Outcome::Retry { after: Some(Duration::from_secs(7)), reason: "HTTP 429: ".into() }
        );
        assert!(matches!(classify(503, None, ""), Outcome::Retry { after: None, .. }));
    }

    #[test]
    fn retry_after_in_seconds_and_as_date() {
        assert_eq!(retry_after(Some(&HeaderValue::from_static("120"))), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("18446744073709551615"))),
            Some(crate::auth::MAX_RETRY_AFTER),
            "capped: a hostile endpoint cannot overflow the engine's clock"
        );
        let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let d = retry_after(Some(&HeaderValue::from_str(&future).unwrap())).unwrap();
        assert!(d > Duration::from_secs(55) && d <= Duration::from_secs(60), "{d:?}");
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
    }

    #[test]
    fn params_are_validated() {
        let policy = EgressPolicy::default();
        let ok = serde_json::json!({
            "endpoint": "https://push.example.net/x",
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg",
            "format": "webdav-push-xml"
        });
        let t = parse_params(ServiceKind::WebPush, &ok, &policy, false).unwrap();
        assert!(t.is_durable());
        let mut no_keys = ok.clone();
        no_keys.as_object_mut().unwrap().remove("p256dh");
        no_keys.as_object_mut().unwrap().remove("auth");
        let e = parse_params(ServiceKind::WebPush, &no_keys, &policy, false).unwrap_err();
        assert!(e.message.contains("encrypted"), "{e}");
        assert!(parse_params(ServiceKind::UnifiedPush, &no_keys, &policy, true).is_ok());
        let mut private = ok.clone();
        private["endpoint"] = "https://192.168.1.10/push".into();
        let e = parse_params(ServiceKind::WebPush, &private, &policy, false).unwrap_err();
        assert_eq!(e.field, Some("endpoint"));
        assert!(e.message.contains("not a public address"), "{e}");
        let mut bad_format = ok.clone();
        bad_format["format"] = "yaml".into();
        assert!(parse_params(ServiceKind::WebPush, &bad_format, &policy, false).is_err());
        let mut bad_auth = ok.clone();
        bad_auth["auth"] = "AAAA".into();
        assert_eq!(parse_params(ServiceKind::WebPush, &bad_auth, &policy, false).unwrap_err().field, Some("auth"));
        let mut short_key = ok.clone();
        short_key["p256dh"] = "BCVxsr7N_eNgVRqvHtD0zTZsEc6".into();
        assert_eq!(parse_params(ServiceKind::WebPush, &short_key, &policy, false).unwrap_err().field, Some("p256dh"));
    }

    #[test]
    fn issue_11_a_target_held_as_one_string_gives_back_its_parameters_and_resolves() {
        let policy = EgressPolicy::default();
        let key = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        let with_keys = serde_json::json!({
            "endpoint": "https://push.example.net:8443/wpush/v2/abc?x=1",
            // Padded base64url is accepted and kept as given.
            "auth": "BTBZMqHH6r4Tts7J_aSIgg==",
            "p256dh": key,
            "format": "topic-json"
        });
        let no_keys = serde_json::json!({ "endpoint": "https://up.example.org/UP?token=t" });
        for (params, unencrypted) in [(&with_keys, false), (&no_keys, true)] {
            let t = parse_params(ServiceKind::UnifiedPush, params, &policy, unencrypted).unwrap();
            let canonical = serde_json::to_string(&WebPushParams::deserialize(params).unwrap()).unwrap();
            assert_eq!(t.to_json(), canonical, "the stored text is what was given");
            let Target::Remote(r) = &t else { panic!("durable") };
            let again =
                parse_params(ServiceKind::UnifiedPush, &serde_json::from_str(&t.to_json()).unwrap(), &policy, true)
                    .unwrap();
            assert!(again.same_destination(&t));
            let targets = WebPushTargets {
                kind: ServiceKind::UnifiedPush,
                policy: policy.clone(),
                allow_unencrypted: true,
                keys: test_keys(),
            };
            // A subscription is bound to the advertised VAPID key; its row reads back the same.
            let k = targets.keys.get().current_id().to_string();
            let bound = targets.parse_target(params).unwrap();
            assert!(bound.to_json().ends_with(&format!(",\"vapid_key\":\"{k}\"}}")), "{}", bound.to_json());
            let stored = targets.parse_stored(&bound.to_json()).unwrap();
            assert!(stored.same_destination(&bound), "a stored row reads back the same");
            // Every subscription bound to the advertised key shares its string (issue 11).
            let key_of = |t: &Target| match t {
                Target::Remote(r) => r.data::<WebPushTarget>().unwrap().vapid_key.clone().unwrap(),
                Target::WebSocket(_) | Target::Stored(_) => unreachable!(),
            };
            let current = targets.keys.get().current_id().clone();
            assert!(Arc::ptr_eq(&key_of(&stored), &current));
            assert!(Arc::ptr_eq(&key_of(&bound), &current));
            let retired = targets.parse_stored(&bound.to_json().replace(&format!("\"{k}\""), "\"OLD\"")).unwrap();
            assert_eq!(&*key_of(&retired), "OLD");
            assert_eq!(stored.to_json(), bound.to_json());
            // A row from before rotation existed is bound to the advertised key when read.
            assert_eq!(targets.parse_stored(&t.to_json()).unwrap().to_json(), bound.to_json());
            assert!(targets.parse_stored("{\"endpoint\": 1}").is_err());
            let resolved = r.data::<WebPushTarget>().unwrap().resolve().unwrap();
            assert_eq!(resolved.endpoint.as_str(), params["endpoint"].as_str().unwrap());
            match resolved.keys {
                Some((k, a)) => {
                    assert_eq!((k.len(), a.len()), (65, 16));
                    assert_eq!(resolved.origin, "https://push.example.net:8443");
                    assert_eq!(resolved.format, PayloadFormat::TopicJson);
                }
                None => assert_eq!(resolved.origin, "https://up.example.org"),
            }
        }
    }

    #[tokio::test]
    async fn issue_11_the_curve_is_checked_at_subscribe_time_and_the_store_is_trusted() {
        let policy = EgressPolicy::default();
        let targets = WebPushTargets {
            kind: ServiceKind::WebPush,
            policy: policy.clone(),
            allow_unencrypted: false,
            keys: test_keys(),
        };
        let key = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        let mut bytes = B64.decode(key).unwrap();
        bytes[10] ^= 1;
        let off_curve = serde_json::json!({
            "endpoint": "https://push.example.net/x", "p256dh": B64.encode(&bytes), "auth": "BTBZMqHH6r4Tts7J_aSIgg"
        });
        // Restoring a stored row parses its form only (no ECDH per row at start)…
        let t = targets.parse_target(&off_curve).unwrap();
        // …and a subscribe, which always checks its targets, refuses a point off the curve
        // (before anything is resolved).
        let e = targets.check_target(&t).await.unwrap_err();
        assert_eq!((e.field, e.message.as_str()), (Some("p256dh"), "p256dh is not an uncompressed P-256 public key"));
    }

    /// The origin taken from the text is exactly the parser's, or left to the parser.
    #[test]
    fn issue_11_plain_origins_are_the_parsers() {
        let parsed = |u: &str| Url::parse(u).ok().map(|u| u.origin().ascii_serialization());
        let plain = [
            "https://fcm.googleapis.com/fcm/send/dGVzdA:APA91b",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
            "https://web.push.apple.com/QGx",
            "http://push.example:8080/p/1",
            "https://push.example:8443",
            "https://push.example?x=1",
            "https://push.example#f",
            "https://push.example./x",
            "https://a-b.c1.example/x",
        ];
        for u in plain {
            assert_eq!(plain_origin(u).map(str::to_owned), parsed(u), "{u}");
            assert!(plain_origin(u).is_some(), "{u} is plain");
        }
        let left_to_the_parser = [
            "https://Push.Example/x",
            "HTTPS://push.example/x",
            "https://push.example:443/x",
            "http://push.example:80/x",
            "https://push.example:0443/x",
            "https://push.example:/x",
            "https://push.example:99999/x",
            "https://user:pw@push.example/x",
            "https://127.0.0.1:9/x",
            "https://127.1/x",
            "https://0x7f.1/x",
            "https://[::1]/x",
            "https://xn--bcher-kva.example/x",
            "https://push..example/x",
            "https://.push.example/x",
            "https://push.example%2e/x",
            "https://bücher.example/x",
            "https:///x",
            "https://push.example\\x",
            "ftp://push.example/x",
            "https:push.example/x",
        ];
        for u in left_to_the_parser {
            assert_eq!(plain_origin(u), None, "{u} is left to the parser");
        }
        // Whatever the text: a plain origin is always the parser's. Texts made of host-like
        // labels, ports and tails, with odd characters mixed in.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let label_chars = ["a", "z", "q", "0", "9", "-", "X", "%", "@", "[", "xn--", "."];
        let ports = ["", ":", ":0", ":80", ":443", ":8080", ":0443", ":65535", ":99999", ":x"];
        let tails = ["", "/", "/p?q", "?x", "#f", "\\x", "@h/", ":1/", "/a b"];
        let mut taken_plain = 0;
        for _ in 0..200_000 {
            let mut u = String::from(["https://", "http://", "HTTPS://", "https:"][next(4)]);
            for l in 0..1 + next(3) {
                if l > 0 {
                    u.push('.');
                }
                for c in 0..1 + next(6) {
                    // Mostly plain letters, sometimes anything.
                    let pick = if next(8) == 0 { next(label_chars.len()) } else { next(5) };
                    let ch = label_chars[pick];
                    u.push_str(if c == 0 && pick == 5 { "b" } else { ch });
                }
            }
            u.push_str(ports[next(ports.len())]);
            u.push_str(tails[next(tails.len())]);
            if let Some(o) = plain_origin(&u) {
                assert_eq!(Some(o.to_owned()), parsed(&u), "{u}");
                taken_plain += 1;
            }
        }
        assert!(taken_plain > 1000, "the texts made cover plain origins too ({taken_plain})");
    }

    #[test]
    fn issue_9_endpoints_and_keys_are_bounded() {
        let policy = EgressPolicy::default();
        let ok = serde_json::json!({
            "endpoint": "https://push.example.net/x",
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg",
        });
        let base = "https://push.example.net/";
        let mut longest = ok.clone();
        longest["endpoint"] = format!("{base}{}", "a".repeat(MAX_ENDPOINT_LEN - base.len())).into();
        assert!(parse_params(ServiceKind::WebPush, &longest, &policy, false).is_ok());
        let mut long = ok.clone();
        long["endpoint"] = format!("{base}{}", "a".repeat(60_000)).into();
        let e = parse_params(ServiceKind::WebPush, &long, &policy, false).unwrap_err();
        assert_eq!((e.field, e.message.contains("2048")), (Some("endpoint"), true), "{}", e.message);
        // Padding decodes to nothing but would be stored: the texts are bounded too.
        let mut padded = ok.clone();
        padded["p256dh"] = format!("{}{}", ok["p256dh"].as_str().unwrap(), "=".repeat(10_000)).into();
        assert_eq!(parse_params(ServiceKind::WebPush, &padded, &policy, false).unwrap_err().field, Some("p256dh"));
        let mut padded = ok.clone();
        padded["auth"] = format!("{}{}", ok["auth"].as_str().unwrap(), "=".repeat(10_000)).into();
        assert_eq!(parse_params(ServiceKind::WebPush, &padded, &policy, false).unwrap_err().field, Some("auth"));
        let mut padded = ok;
        padded["auth"] = format!("{}==", padded["auth"].as_str().unwrap()).into();
        assert!(parse_params(ServiceKind::WebPush, &padded, &policy, false).is_ok(), "standard padding is fine");
    }
}
