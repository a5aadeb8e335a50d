//! Prometheus metrics. One registry per Director instance (tests run several in one process).
//! Counters on the notify path are incremented once per topic and service, not per recipient.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ServiceKind;

/// Label set `{service}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// Push service name.
    pub service: &'static str,
}

/// Label set `{service, outcome}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// Push service name.
    pub service: &'static str,
    /// `queued`, `dropped`, `sent`, …
    pub outcome: &'static str,
}

/// Label set `{channel, outcome}` of messages between cluster nodes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// `notify` or `subscriptions`.
    pub channel: &'static str,
    /// `published`, `received`, `failed` (not published), `dropped` (queue full), `malformed`.
    pub outcome: &'static str,
}

/// Label set `{reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// The Director's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Open WebSocket connections.
    pub ws_connections: Gauge,
    /// WebSocket connections closed, by reason.
    pub ws_closed: Family<ReasonLabel, Counter>,
    /// Active subscriptions by service (set when rendered).
    pub subscriptions: Family<ServiceLabel, Gauge>,
    /// Topics notified through the Notify API.
    pub notifications: Counter,
    /// Notify API requests rejected, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Deliveries by service and outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Resident memory of the process (set when rendered).
    pub resident_memory: Gauge,
    /// Messages between cluster nodes, by channel and outcome.
    pub cluster_messages: Family<ClusterLabels, Counter>,
    /// Size of the store's write-ahead log (SQLite; set when rendered).
    pub store_wal_bytes: Gauge,
    /// 1 once the durable subscriptions are loaded from the store, 0 before.
    pub ready: Gauge,
    /// `deliveries{service="websocket",outcome="sent"}`, resolved once: it is counted by every
    /// connection's task on every write, where a family lookup would contend.
    pub ws_sent: Counter,
    /// The last errors per push service and the most notified topics (the admin view).
    pub recent: Recent,
    /// Resumes from the history ([`crate::history`]), by outcome: `replayed` notifications and
    /// `resync` topics.
    pub resumes: Family<ReasonLabel, Counter>,
    /// Microseconds from the routing of the last notification whose durable subscribers' targets
    /// were read from the store until the last of them was handed to the delivery engine.
    pub target_fetch_last_us: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("davpush");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            ws_connections: Gauge::default(),
            ws_closed: Family::default(),
            subscriptions: Family::default(),
            notifications: Counter::default(),
            rejected: Family::default(),
            deliveries: Family::default(),
            resident_memory: Gauge::default(),
            cluster_messages: Family::default(),
            store_wal_bytes: Gauge::default(),
            ready: Gauge::default(),
            ws_sent: Counter::default(),
            recent: Recent::default(),
            resumes: Family::default(),
            target_fetch_last_us: Gauge::default(),
        };
        r.register("websocket_connections", "Open WebSocket connections", m.ws_connections.clone());
        r.register("websocket_closed", "WebSocket connections closed by the server or client", m.ws_closed.clone());
        r.register("subscriptions", "Active subscriptions", m.subscriptions.clone());
        r.register("notifications", "Topics notified through the Notify API", m.notifications.clone());
        r.register("requests_rejected", "API requests rejected, by reason", m.rejected.clone());
        r.register("deliveries", "Deliveries by push service and outcome", m.deliveries.clone());
        r.register("process_resident_memory_bytes", "Resident set size of the process", m.resident_memory.clone());
        r.register(
            "cluster_messages",
            "Messages between cluster nodes, by channel and outcome",
            m.cluster_messages.clone(),
        );
        r.register("store_wal_bytes", "Size of the store's write-ahead log (SQLite)", m.store_wal_bytes.clone());
        r.register(
            "resumed",
            "Notifications replayed from the history, and topics told to re-sync, for clients that resumed",
            m.resumes.clone(),
        );
        r.register(
            "target_fetch_last_microseconds",
            "From the routing of the last notification whose durable targets were read from the store until they were all handed to the delivery engine",
            m.target_fetch_last_us.clone(),
        );
        r.register("ready", "1 once the durable subscriptions are loaded from the store", m.ready.clone());
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        let ws_sent = m
            .deliveries
            .get_or_create(&DeliveryLabels { service: ServiceKind::WebSocket.as_str(), outcome: "sent" })
            .clone();
        Metrics { ws_sent, ..m }
    }
}

impl Metrics {
    /// Counts `n` deliveries of `service` with `outcome`.
    pub fn delivered(&self, service: ServiceKind, outcome: &'static str, n: u64) {
        if n > 0 {
            self.deliveries.get_or_create(&DeliveryLabels { service: service.as_str(), outcome }).inc_by(n);
        }
    }

    /// Counts a resume: `replayed` notifications sent again, `resync` topics to re-sync.
    pub fn replayed(&self, replayed: u64, resync: u64) {
        for (reason, n) in [("replayed", replayed), ("resync", resync)] {
            if n > 0 {
                self.resumes.get_or_create(&ReasonLabel { reason }).inc_by(n);
            }
        }
    }

    /// Counts a message between cluster nodes.
    pub fn cluster(&self, channel: &'static str, outcome: &'static str) {
        self.cluster_messages.get_or_create(&ClusterLabels { channel, outcome }).inc();
    }

    /// Counts a rejected request.
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Renders the Prometheus text format; `subscriptions` are the current counts per service.
    pub fn render(&self, subscriptions: &[usize]) -> String {
        for (k, n) in ServiceKind::ALL.iter().zip(subscriptions) {
            self.subscriptions.get_or_create(&ServiceLabel { service: k.as_str() }).set(*n as i64);
        }
        self.resident_memory.set(resident_memory_bytes().unwrap_or(0) as i64);
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String never fails");
        out
    }
}

/// Resident set size of this process, from `VmRSS` in `/proc/self/status` (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many errors are kept per push service for the admin view.
pub const ERRORS_KEPT: usize = 5;
/// How many topics the busiest-topics counter follows.
const TOPICS_FOLLOWED: usize = 64;

/// A delivery that went wrong, as the admin view shows it: no endpoint path, token or topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecentError {
    /// Unix seconds.
    pub at: i64,
    /// `retry`, `rejected`, `gone`, `failed`.
    pub outcome: &'static str,
    /// The push service's origin (scheme, host, port), or the service's name.
    pub host: String,
    /// What happened, with URLs cut to their origin and token-like words removed
    /// ([`sanitize_reason`]).
    pub reason: String,
}

/// The last errors per push service, and the most notified topics (approximately: the
/// Space-Saving algorithm over 64 counters), for the admin view.
#[derive(Debug, Default)]
pub struct Recent {
    errors: Mutex<[std::collections::VecDeque<RecentError>; ServiceKind::ALL.len()]>,
    /// `None` until [`Recent::follow_topics`]: the notify path then pays nothing.
    topics: Mutex<Option<Vec<(crate::Topic, u64)>>>,
    following: std::sync::atomic::AtomicBool,
}

impl Recent {
    /// Keeps `error` (the oldest beyond [`ERRORS_KEPT`] goes), its reason sanitized.
    pub fn error(&self, service: ServiceKind, outcome: &'static str, host: &str, reason: &str) {
        let e = RecentError {
            at: crate::unix_now(),
            outcome,
            host: sanitize_reason(host),
            reason: sanitize_reason(reason),
        };
        let mut all = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut all[service.index()];
        if list.len() == ERRORS_KEPT {
            list.pop_front();
        }
        list.push_back(e);
    }

    /// The kept errors of `service`, newest first.
    pub fn errors(&self, service: ServiceKind) -> Vec<RecentError> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner())[service.index()].iter().rev().cloned().collect()
    }

    /// Starts counting notifications per topic.
    pub fn follow_topics(&self) {
        *self.topics.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::with_capacity(TOPICS_FOLLOWED));
        self.following.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Counts a notification of `topic` (if following).
    pub fn notified(&self, topic: &crate::Topic) {
        if !self.following.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut guard = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(counters) = guard.as_mut() else { return };
        if let Some(c) = counters.iter_mut().find(|(t, _)| t == topic) {
            c.1 += 1;
        } else if counters.len() < TOPICS_FOLLOWED {
            counters.push((topic.clone(), 1));
        } else if let Some(min) = counters.iter_mut().min_by_key(|(_, n)| *n) {
            // Space-Saving: the newcomer inherits the smallest count (an upper bound of its own).
            *min = (topic.clone(), min.1 + 1);
        }
    }

    /// The `n` most notified topics and their (approximate) counts, most first.
    pub fn busiest(&self, n: usize) -> Vec<(crate::Topic, u64)> {
        let guard = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = guard.clone().unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// `text` fit for the admin view: every URL cut to its origin (an endpoint's path is its
/// capability), every word of 24 or more characters that looks like a token or key replaced
/// by `[redacted]`, at most 200 characters.
pub fn sanitize_reason(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(256));
    let mut rest = text;
    while !rest.is_empty() {
        // The next word (a run of non-separators) and what precedes it.
        let start = rest.find(|c: char| !is_separator(c)).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_separator).unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if let Some((scheme, after)) = word.split_once("://") {
            let authority = after.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            out.push_str(scheme);
            out.push_str("://");
            out.push_str(host);
        } else if word.len() >= 24 && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:+/=%".contains(&b)) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    if out.len() > 200 {
        let mut cut = 197;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'' | '<' | '>' | ',' | ';' | '[' | ']' | '{' | '}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_lose_endpoint_paths_tokens_and_credentials() {
        let r = sanitize_reason(
            "request failed: error sending request for url (https://user:pw@push.example.org:8443/wpush/v2/gAAAAABk-secret?x=1)",
        );
        assert_eq!(r, "request failed: error sending request for url (https://push.example.org:8443)");
        let r = sanitize_reason(r#"HTTP 400: {"illegal_tokens":["IQAAAACy0kBqAADx9bLqqS-token-of-a-device"]}"#);
        assert!(!r.contains("IQAAAACy0kBqAADx9bLqqS"), "{r}");
        assert_eq!(sanitize_reason("HTTP 503: try later"), "HTTP 503: try later");
        assert!(sanitize_reason(&"x ".repeat(300)).len() <= 200);
    }

    #[test]
    fn the_busiest_topics_are_counted_in_bounded_space() {
        let r = Recent::default();
        let t = |s: &str| crate::Topic::parse(s, 64).unwrap();
        r.notified(&t("before"));
        assert!(r.busiest(10).is_empty(), "nothing is counted until followed");
        r.follow_topics();
        for i in 0..1_000 {
            r.notified(&t(&format!("rare-{i}")));
            r.notified(&t("hot"));
        }
        let top = r.busiest(3);
        assert_eq!(top[0], (t("hot"), 1_000));
        assert_eq!(r.topics.lock().unwrap().as_ref().unwrap().len(), TOPICS_FOLLOWED);
    }
}
