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
    /// Resumes from the history ([`crate::history`]), by outcome: `replayed` notifications and
    /// `resync` topics.
    pub resumes: Family<ReasonLabel, Counter>,
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
            resumes: Family::default(),
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
