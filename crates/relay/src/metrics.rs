//! The relay's Prometheus metrics: what it forwarded, and what it refused and why (the abuse
//! signals). No label carries a key, address, token or topic.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `{endpoint, outcome}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Forwarded {
    /// `push` or `membership`.
    pub endpoint: &'static str,
    /// `delivered`, `gone`, `retry`, `rejected`.
    pub outcome: &'static str,
}

/// `{reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why.
    pub reason: &'static str,
}

/// `{caller}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerKind {
    /// `installation` or `app`.
    pub caller: &'static str,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RelayMetrics {
    registry: Mutex<Registry>,
    /// Requests forwarded to FCM, by endpoint and FCM's outcome.
    pub forwarded: Family<Forwarded, Counter>,
    /// Requests refused, by reason (`unauthorized`, `revoked`, `forbidden`, `rate_limited_ip`,
    /// `rate_limited_key`, `rate_limited_token`, `invalid_request`, `payload_too_large`, …).
    pub refused: Family<Reason, Counter>,
    /// Authenticated requests by kind of key.
    pub callers: Family<CallerKind, Counter>,
    /// Installation keys, active.
    pub keys_active: Gauge,
    /// Installation keys, revoked.
    pub keys_revoked: Gauge,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let m = RelayMetrics {
            registry: Mutex::new(Registry::default()),
            forwarded: Family::default(),
            refused: Family::default(),
            callers: Family::default(),
            keys_active: Gauge::default(),
            keys_revoked: Gauge::default(),
        };
        let mut r = Registry::with_prefix("davpush_relay");
        r.register("forwarded", "Requests forwarded to FCM, by endpoint and outcome", m.forwarded.clone());
        r.register("refused", "Requests refused by the relay, by reason", m.refused.clone());
        r.register("callers", "Authenticated requests, by kind of key", m.callers.clone());
        r.register("keys_active", "Installation keys that are not revoked", m.keys_active.clone());
        r.register("keys_revoked", "Installation keys that are revoked", m.keys_revoked.clone());
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m
    }
}

impl RelayMetrics {
    /// Counts a refusal.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    /// Renders the text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String never fails");
        out
    }
}
