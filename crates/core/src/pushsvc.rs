//! The Director as an RFC 8030 push service (`docs/protocol.md` §10): push subscriptions that
//! WebDAV-Push servers (or any Web Push sender) deliver to, and that clients of the WebSocket
//! protocol receive from.
//!
//! A client asks for a push subscription over its connection (`push_subscribe`) and gets an
//! unguessable endpoint, `<public_url>/push/<push_id>`, plus a secret. Senders `POST` encrypted
//! messages there; [`PushEndpoints::accept`] hands each one, still encrypted, to the connection
//! the subscription is attached to, or keeps it (within its TTL, a bounded number per
//! subscription, a newer message with the same `Topic` replacing the older one) until the
//! client re-attaches the subscription from a new connection (`push_id` + `secret`).
//!
//! The design choice a reader would question: push subscriptions are never written to the
//! store. On a single node they live in memory only; they are short-lived (a client renews its
//! WebDAV-Push registration well within their expiry), the messages are opaque ciphertext that
//! nobody but the client can read, and a lost subscription is repaired by the client
//! re-registering. In a cluster, a [`PushDirectory`] (the cluster's Redis) knows every node's
//! push subscriptions and keeps the messages of offline clients (`shared`, `docs/protocol.md`
//! §10.4).
//!
//! # Layout
//! - here: the node's own push subscriptions ([`PushEndpoints`]), their limits and messages;
//! - `shared`: the operations the Director calls, which consult the directory in a cluster;
//! - `directory`: [`PushDirectory`] and what nodes share and send each other.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use davpush_proto::ServerFrame;

use crate::Topic;
use crate::ids::random_token;
use crate::live::{Connection, Pushed};

mod directory;
mod shared;

pub use directory::{DirectoryError, ForwardKind, Forwarded, PushDirectory, SharedRecord, Waiting};
pub use shared::Route;

/// Bounds of the push service (`[push_service]` in the configuration).
#[derive(Debug, Clone)]
pub struct PushLimits {
    /// Seconds a push subscription lives after it was created or last re-attached.
    pub expiry_secs: i64,
    /// Largest `TTL` honoured; larger ones are lowered to it (and the answer's `TTL` says so).
    pub max_ttl_secs: i64,
    /// Messages kept per subscription for an offline client; the oldest is dropped beyond it.
    pub max_pending: usize,
    /// Push subscriptions on this node.
    pub max_subscriptions: usize,
    /// Live push subscriptions one connection may hold (`subscription.max_per_client`).
    pub max_per_connection: usize,
    /// Messages accepted per subscription and minute.
    pub per_subscription_per_minute: u32,
    /// Messages accepted per [`Sender`] and minute.
    pub per_sender_per_minute: u32,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            expiry_secs: 7 * 86400,
            max_ttl_secs: 4 * 7 * 86400,
            max_pending: 100,
            max_subscriptions: 100_000,
            max_per_connection: 100,
            per_subscription_per_minute: 120,
            per_sender_per_minute: 1200,
        }
    }
}

/// Why a push-service request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No such push subscription (never existed, or expired long ago).
    #[error("no such push subscription")]
    NotFound,
    /// The push subscription was deleted or expired.
    #[error("the push subscription was deleted or has expired")]
    Gone,
    /// The secret does not match.
    #[error("wrong push subscription secret")]
    Forbidden,
    /// The `vapid_key` is not an uncompressed P-256 point in base64url.
    #[error("`vapid_key` must be an uncompressed P-256 public key (65 bytes), base64url")]
    BadKey,
    /// This node holds as many push subscriptions as it may.
    #[error("too many push subscriptions on this server")]
    Full,
    /// The connection holds as many push subscriptions as it may.
    #[error("this connection holds as many push subscriptions as it may")]
    TooManyForConnection,
    /// A rate limit is exceeded; try again after this many seconds.
    #[error("too many messages; retry after {0} s")]
    RateLimited(u64),
    /// The cluster's directory of push subscriptions cannot be reached.
    #[error("the cluster's push-subscription directory cannot be reached; try again")]
    Unavailable,
}

impl PushError {
    /// The `error` code of a WebSocket error frame.
    pub fn code(&self) -> &'static str {
        match self {
            PushError::NotFound => "not_found",
            PushError::Gone => "gone",
            PushError::Forbidden => "forbidden",
            PushError::BadKey => "invalid_request",
            PushError::Full | PushError::TooManyForConnection => "too_many_subscriptions",
            PushError::RateLimited(_) => "rate_limited",
            PushError::Unavailable => "unavailable",
        }
    }
}

/// `Urgency` (RFC 8030 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// `very-low`.
    VeryLow,
    /// `low`.
    Low,
    /// `normal` (the default).
    Normal,
    /// `high`.
    High,
}

impl Urgency {
    /// Parses the header value.
    pub fn parse(s: &str) -> Option<Urgency> {
        Some(match s.trim() {
            "very-low" => Urgency::VeryLow,
            "low" => Urgency::Low,
            "normal" => Urgency::Normal,
            "high" => Urgency::High,
            _ => return None,
        })
    }

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

/// Whether `s` is a valid `Topic` header (RFC 8030 §5.4: at most 32 base64url characters).
pub fn valid_topic(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A message a sender pushed, as accepted.
#[derive(Debug, Clone)]
pub struct Message {
    /// The `Topic` header (validated with [`valid_topic`]).
    pub topic: Option<String>,
    /// The `Urgency` header.
    pub urgency: Urgency,
    /// The `TTL` header, in seconds.
    pub ttl: i64,
    /// The encrypted body, as sent.
    pub body: Bytes,
}

/// What [`PushEndpoints::accept`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The message's id (for its `Location`).
    pub message_id: String,
    /// The TTL in force (the requested one, lowered to the maximum).
    pub ttl: i64,
    /// Whether it went to a connected client now (else it waits, or was dropped with TTL 0).
    pub delivered: bool,
}

/// A push subscription made or re-attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its id.
    pub push_id: String,
    /// Its endpoint URL.
    pub endpoint: String,
    /// Its secret.
    pub secret: String,
    /// When it ends unless re-attached.
    pub expires: i64,
}

#[derive(Debug)]
struct Pending {
    key: Topic,
    topic: Option<String>,
    frame: Bytes,
    expires: i64,
}

#[derive(Debug)]
struct Entry {
    secret: String,
    vapid_key: Option<Vec<u8>>,
    expires: i64,
    /// Deleted: kept until `expires` so that pushes get `410`, not `404`.
    gone: bool,
    conn: Option<Weak<Connection>>,
    pending: VecDeque<Pending>,
    window: Window,
}

/// Whom the per-sender limit counts a message against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    /// The application-server key of a VAPID signature that verified.
    Key(Vec<u8>),
    /// The sender's address (behind trusted proxies, the one they name).
    Address(IpAddr),
}

/// A fixed one-minute window of counted events.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: i64,
    count: u32,
}

impl Window {
    /// Counts one event at `now` unless `limit` is reached; else the seconds until the next window.
    fn take(&mut self, now: i64, limit: u32) -> Result<(), u64> {
        let minute = now.div_euclid(60);
        if minute != self.minute {
            *self = Window { minute, count: 0 };
        }
        if self.count >= limit {
            return Err((60 - now.rem_euclid(60)) as u64);
        }
        self.count += 1;
        Ok(())
    }
}

/// Windows per key (sender addresses), bounded: old windows are dropped when it grows.
#[derive(Debug)]
struct Windows<K> {
    map: HashMap<K, Window>,
}

impl<K: Hash + Eq> Windows<K> {
    fn take(&mut self, key: K, now: i64, limit: u32) -> Result<(), u64> {
        if self.map.len() >= 100_000 {
            let minute = now.div_euclid(60);
            self.map.retain(|_, w| w.minute == minute);
        }
        self.map.entry(key).or_default().take(now, limit)
    }
}

/// The push subscriptions of this node.
#[derive(Debug)]
pub struct PushEndpoints {
    public_url: String,
    limits: PushLimits,
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    senders: Mutex<Windows<Sender>>,
    /// Windows of the subscriptions held by other nodes, for messages accepted here.
    remote: Mutex<Windows<Arc<str>>>,
    directory: Option<Arc<dyn PushDirectory>>,
}

fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PushEndpoints {
    /// Push subscriptions whose endpoints are `<public_url>/push/<id>`.
    pub fn new(public_url: &str, limits: PushLimits) -> Self {
        PushEndpoints {
            public_url: public_url.trim_end_matches('/').to_owned(),
            limits,
            entries: Mutex::default(),
            senders: Mutex::new(Windows { map: HashMap::new() }),
            remote: Mutex::new(Windows { map: HashMap::new() }),
            directory: None,
        }
    }

    /// Shares the push subscriptions with the other nodes of a cluster through `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn PushDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &PushLimits {
        &self.limits
    }

    /// The endpoint URL of `push_id`.
    pub fn endpoint(&self, push_id: &str) -> String {
        format!("{}/push/{push_id}", self.public_url)
    }

    /// The origin senders sign their VAPID tokens for (`aud`): scheme, host and port of the
    /// public URL.
    pub fn origin(&self) -> &str {
        let after_scheme = self.public_url.find("://").map_or(0, |i| i + 3);
        match self.public_url[after_scheme..].find('/') {
            Some(i) => &self.public_url[..after_scheme + i],
            None => &self.public_url,
        }
    }

    /// Push subscriptions held (deleted ones kept for their `410` included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a push subscription attached to `conn`, restricted to `vapid_key` (base64url,
    /// RFC 8292 §4) when given.
    pub fn create(&self, conn: &Arc<Connection>, vapid_key: Option<&str>, now: i64) -> Result<Created, PushError> {
        let vapid_key = match vapid_key {
            Some(k) => {
                let raw = URL_SAFE_NO_PAD.decode(k.trim_end_matches('=')).map_err(|_| PushError::BadKey)?;
                if raw.len() != 65 || raw[0] != 4 {
                    return Err(PushError::BadKey);
                }
                Some(raw)
            }
            None => None,
        };
        let mut entries = self.lock();
        if entries.len() >= self.limits.max_subscriptions {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.limits.max_subscriptions {
                return Err(PushError::Full);
            }
        }
        let mine = entries
            .values()
            .filter(|e| !e.gone && e.expires > now && e.conn.as_ref().is_some_and(|w| w.as_ptr() == Arc::as_ptr(conn)))
            .count();
        if mine >= self.limits.max_per_connection {
            return Err(PushError::TooManyForConnection);
        }
        let push_id = random_token(18); // 144 bits
        let secret = random_token(18);
        let expires = now + self.limits.expiry_secs;
        entries.insert(
            Arc::from(push_id.as_str()),
            Entry {
                secret: secret.clone(),
                vapid_key,
                expires,
                gone: false,
                conn: Some(Arc::downgrade(conn)),
                pending: VecDeque::new(),
                window: Window::default(),
            },
        );
        Ok(Created { endpoint: self.endpoint(&push_id), push_id, secret, expires })
    }

    /// Re-attaches `push_id` to `conn` (proved by `secret`), renews its expiry and hands the
    /// waiting messages to the connection.
    pub fn attach(&self, push_id: &str, secret: &str, conn: &Arc<Connection>, now: i64) -> Result<Created, PushError> {
        let mut entries = self.lock();
        let entry = live_entry(&mut entries, push_id, now)?;
        if !eq_ct(entry.secret.as_bytes(), secret.as_bytes()) {
            return Err(PushError::Forbidden);
        }
        entry.expires = now + self.limits.expiry_secs;
        entry.conn = Some(Arc::downgrade(conn));
        while let Some(p) = entry.pending.pop_front() {
            if p.expires < now {
                continue;
            }
            if !matches!(conn.push(&p.key, &p.frame), Pushed::Queued | Pushed::Coalesced) {
                entry.pending.push_front(p);
                entry.conn = None;
                break;
            }
        }
        Ok(Created {
            push_id: push_id.to_owned(),
            endpoint: self.endpoint(push_id),
            secret: entry.secret.clone(),
            expires: entry.expires,
        })
    }

    /// Deletes `push_id` (proved by `secret`): later pushes get `410`.
    pub fn remove(&self, push_id: &str, secret: &str, now: i64) -> Result<(), PushError> {
        let mut entries = self.lock();
        let entry = live_entry(&mut entries, push_id, now)?;
        if !eq_ct(entry.secret.as_bytes(), secret.as_bytes()) {
            return Err(PushError::Forbidden);
        }
        entry.gone = true;
        entry.conn = None;
        entry.pending.clear();
        // Answer 410 for as long as senders may reasonably retry.
        entry.expires = entry.expires.max(now + 86400);
        Ok(())
    }

    /// The application-server key `push_id` is restricted to, if any.
    pub fn restriction(&self, push_id: &str, now: i64) -> Result<Option<Vec<u8>>, PushError> {
        let mut entries = self.lock();
        Ok(live_entry(&mut entries, push_id, now)?.vapid_key.clone())
    }

    /// Counts a message from `sender` against its per-minute limit.
    pub fn check_sender(&self, sender: Sender, now: i64) -> Result<(), PushError> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.take(sender, now, self.limits.per_sender_per_minute).map_err(PushError::RateLimited)
    }

    /// Accepts `msg` for `push_id`: hands it to the attached connection, or keeps it within
    /// its TTL for the next re-attach.
    pub fn accept(&self, push_id: &str, msg: Message, now: i64) -> Result<Accepted, PushError> {
        self.accept_local(push_id, msg, now, true).map(|(a, _)| a)
    }

    /// Like [`Self::accept`]; with `keep` false a message that cannot be handed over now is
    /// returned instead of kept (for the cluster's directory).
    fn accept_local(
        &self,
        push_id: &str,
        msg: Message,
        now: i64,
        keep: bool,
    ) -> Result<(Accepted, Option<Waiting>), PushError> {
        let ttl = msg.ttl.clamp(0, self.limits.max_ttl_secs);
        let mut entries = self.lock();
        let entry = live_entry(&mut entries, push_id, now)?;
        entry.window.take(now, self.limits.per_subscription_per_minute).map_err(PushError::RateLimited)?;
        let (message_id, key, frame) = push_frame(push_id, &msg);
        let conn = entry.conn.as_ref().and_then(Weak::upgrade);
        if let Some(conn) = conn {
            if matches!(conn.push(&key, &frame), Pushed::Queued | Pushed::Coalesced) {
                return Ok((Accepted { message_id, ttl, delivered: true }, None));
            }
            entry.conn = None;
        }
        let accepted = Accepted { message_id, ttl, delivered: false };
        if ttl == 0 {
            return Ok((accepted, None));
        }
        if !keep {
            let frame = String::from_utf8(frame.to_vec()).expect("frames are JSON");
            let waiting = Waiting { key: key.as_str().to_owned(), topic: msg.topic, frame, expires: now + ttl };
            return Ok((accepted, Some(waiting)));
        }
        if let Some(t) = &msg.topic {
            entry.pending.retain(|p| p.topic.as_ref() != Some(t));
        }
        entry.pending.retain(|p| p.expires >= now);
        if entry.pending.len() >= self.limits.max_pending {
            entry.pending.pop_front();
        }
        entry.pending.push_back(Pending { key, topic: msg.topic, frame, expires: now + ttl });
        Ok((accepted, None))
    }

    /// Messages waiting for `push_id` to be re-attached.
    pub fn pending(&self, push_id: &str) -> usize {
        self.lock().get(push_id).map_or(0, |e| e.pending.len())
    }

    /// Forgets expired subscriptions and messages; returns how many subscriptions went.
    pub fn purge(&self, now: i64) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.expires > now);
        for e in entries.values_mut() {
            e.pending.retain(|p| p.expires >= now);
        }
        before - entries.len()
    }
}

/// The message's id, its mailbox key and the client's `push` frame.
fn push_frame(push_id: &str, msg: &Message) -> (String, Topic, Bytes) {
    let message_id = random_token(12);
    let frame = ServerFrame::Push {
        push_id: push_id.to_owned(),
        message_id: message_id.clone(),
        topic: msg.topic.clone(),
        urgency: msg.urgency.as_str().to_owned(),
        data: URL_SAFE_NO_PAD.encode(&msg.body),
    };
    let frame = Bytes::from(serde_json::to_vec(&frame).expect("frames always serialize"));
    // The mailbox coalesces by this key: a newer message with the same `Topic` replaces a
    // queued older one; messages without a topic never replace each other.
    let key = format!("push:{push_id}:{}", msg.topic.as_deref().map_or(message_id.as_str(), |t| t));
    let key = Topic::parse(&key, usize::MAX).expect("ids and topics are visible ASCII");
    (message_id, key, frame)
}

fn live_entry<'a>(
    entries: &'a mut HashMap<Arc<str>, Entry>,
    push_id: &str,
    now: i64,
) -> Result<&'a mut Entry, PushError> {
    match entries.get_mut(push_id) {
        None => Err(PushError::NotFound),
        Some(e) if e.gone || e.expires <= now => Err(PushError::Gone),
        Some(e) => Ok(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Hub;

    const NOW: i64 = 6_000_000;

    fn msg(topic: Option<&str>, ttl: i64, body: &[u8]) -> Message {
        Message { topic: topic.map(str::to_owned), urgency: Urgency::Normal, ttl, body: Bytes::copy_from_slice(body) }
    }

    fn frames(conn: &Connection) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        conn.take(&mut out);
        out.iter().map(|f| serde_json::from_slice(f).unwrap()).collect()
    }

    #[test]
    fn offline_messages_wait_within_ttl_topics_replace_and_reattach_delivers() {
        let hub = Hub::new(16, 16);
        let eps = PushEndpoints::new("https://push.example/", PushLimits { max_pending: 3, ..PushLimits::default() });
        assert_eq!(eps.origin(), "https://push.example");
        let conn = hub.open(NOW).unwrap();
        let c = eps.create(&conn, None, NOW).unwrap();
        assert_eq!(c.endpoint, format!("https://push.example/push/{}", c.push_id));
        assert!(c.push_id.len() >= 22, "at least 128 random bits");
        let a = eps.accept(&c.push_id, msg(None, 60, b"one"), NOW).unwrap();
        assert!(a.delivered);
        let got = frames(&conn);
        assert_eq!(got[0]["data"], URL_SAFE_NO_PAD.encode(b"one"));
        assert_eq!(got[0]["message_id"], a.message_id.as_str());

        conn.close(crate::live::CloseReason::Shutdown);
        assert!(!eps.accept(&c.push_id, msg(Some("cal"), 60, b"old"), NOW).unwrap().delivered);
        eps.accept(&c.push_id, msg(Some("cal"), 60, b"new"), NOW).unwrap();
        eps.accept(&c.push_id, msg(None, 0, b"ttl0"), NOW).unwrap();
        eps.accept(&c.push_id, msg(None, 5, b"short"), NOW).unwrap();
        eps.accept(&c.push_id, msg(None, 60, b"a"), NOW).unwrap();
        eps.accept(&c.push_id, msg(None, 60, b"b"), NOW).unwrap();
        assert_eq!(eps.pending(&c.push_id), 3, "bounded: the oldest went");

        let conn2 = hub.open(NOW).unwrap();
        assert_eq!(eps.attach(&c.push_id, "wrong", &conn2, NOW + 10), Err(PushError::Forbidden));
        let again = eps.attach(&c.push_id, &c.secret, &conn2, NOW + 10).unwrap();
        assert_eq!(again.endpoint, c.endpoint);
        let data: Vec<_> = frames(&conn2).iter().map(|f| f["data"].as_str().unwrap().to_owned()).collect();
        assert_eq!(
            data,
            [URL_SAFE_NO_PAD.encode(b"a"), URL_SAFE_NO_PAD.encode(b"b")],
            "short TTL expired, 'new' was dropped as oldest"
        );
        assert_eq!(eps.pending(&c.push_id), 0);

        eps.remove(&c.push_id, &c.secret, NOW + 10).unwrap();
        assert_eq!(eps.accept(&c.push_id, msg(None, 60, b"x"), NOW + 11), Err(PushError::Gone));
        assert_eq!(eps.accept("unknown", msg(None, 60, b"x"), NOW), Err(PushError::NotFound));
    }

    #[test]
    fn same_topic_replaces_the_waiting_message() {
        let hub = Hub::new(16, 16);
        let eps = PushEndpoints::new("https://p", PushLimits::default());
        let conn = hub.open(NOW).unwrap();
        let c = eps.create(&conn, None, NOW).unwrap();
        conn.close(crate::live::CloseReason::Shutdown);
        eps.accept(&c.push_id, msg(Some("cal"), 60, b"old"), NOW).unwrap();
        eps.accept(&c.push_id, msg(Some("cal"), 60, b"new"), NOW).unwrap();
        eps.accept(&c.push_id, msg(Some("other"), 60, b"o"), NOW).unwrap();
        let conn = hub.open(NOW).unwrap();
        eps.attach(&c.push_id, &c.secret, &conn, NOW).unwrap();
        let got = frames(&conn);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["data"], URL_SAFE_NO_PAD.encode(b"new"));
        assert_eq!(got[0]["topic"], "cal");
    }

    #[test]
    fn rate_limits_per_subscription_and_sender() {
        let hub = Hub::new(512, 16);
        let limits = PushLimits { per_subscription_per_minute: 2, per_sender_per_minute: 3, ..PushLimits::default() };
        let eps = PushEndpoints::new("https://p", limits);
        let conn = hub.open(NOW).unwrap();
        let c = eps.create(&conn, None, NOW).unwrap();
        let t = NOW - NOW.rem_euclid(60) + 50;
        eps.accept(&c.push_id, msg(None, 0, b""), t).unwrap();
        eps.accept(&c.push_id, msg(None, 0, b""), t).unwrap();
        assert_eq!(eps.accept(&c.push_id, msg(None, 0, b""), t), Err(PushError::RateLimited(10)));
        eps.accept(&c.push_id, msg(None, 0, b""), t + 10).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            eps.check_sender(Sender::Address(ip), t).unwrap();
        }
        assert_eq!(eps.check_sender(Sender::Address(ip), t), Err(PushError::RateLimited(10)));
        eps.check_sender(Sender::Address("192.0.2.2".parse().unwrap()), t).unwrap();
        eps.check_sender(Sender::Key(vec![4; 65]), t).unwrap();
    }

    #[test]
    fn vapid_keys_must_be_p256_points() {
        let hub = Hub::new(16, 16);
        let eps = PushEndpoints::new("https://p", PushLimits::default());
        let conn = hub.open(NOW).unwrap();
        assert_eq!(eps.create(&conn, Some("abc"), NOW), Err(PushError::BadKey));
        let key = URL_SAFE_NO_PAD.encode([4u8; 65]);
        let c = eps.create(&conn, Some(&key), NOW).unwrap();
        assert_eq!(eps.restriction(&c.push_id, NOW).unwrap(), Some(vec![4u8; 65]));
    }

    #[test]
    fn a_connection_holds_a_bounded_number() {
        let hub = Hub::new(16, 16);
        let eps = PushEndpoints::new("https://p", PushLimits { max_per_connection: 2, ..PushLimits::default() });
        let conn = hub.open(NOW).unwrap();
        let a = eps.create(&conn, None, NOW).unwrap();
        eps.create(&conn, None, NOW).unwrap();
        assert_eq!(eps.create(&conn, None, NOW), Err(PushError::TooManyForConnection));
        eps.create(&hub.open(NOW).unwrap(), None, NOW).unwrap();
        eps.remove(&a.push_id, &a.secret, NOW).unwrap();
        eps.create(&conn, None, NOW).unwrap();
    }
}
