//! The gateway's Prometheus metrics (`GET <public_url>.davpush/metrics`), all named
//! `davpush_gateway_*`. One registry per gateway (tests run several in one process). No label
//! carries a path, user, topic or token: methods are folded into a fixed list, statuses into
//! their class.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{method, status_class}` of `davpush_gateway_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method, one of [`KNOWN_METHODS`], else `other`.
    pub method: &'static str,
    /// `1xx` … `5xx`.
    pub status_class: &'static str,
}

/// `{outcome}` of `davpush_gateway_changes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `queued`, `sent`, `coalesced`, `retried`, `dropped`.
    pub outcome: &'static str,
}

/// `{action}` of `davpush_gateway_registrations_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `created` or `deleted`.
    pub action: &'static str,
}

/// The methods counted under their own name; any other is `other`.
pub const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "MKCALENDAR",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "ACL",
    "SEARCH",
];

/// The outcomes of a change notification, each a series from the start.
pub const CHANGE_OUTCOMES: &[&str] = &["queued", "sent", "coalesced", "retried", "dropped"];

/// The label of `method`: its name if known, else `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// `1xx` … `5xx` (anything else, which hyper never sends, counts as `5xx`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Mutex<Registry>,
    /// Requests answered, by method and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the upstream's response head, seconds.
    pub upstream_duration: Histogram,
    /// Change notifications to the Director, by outcome.
    pub changes: Family<OutcomeLabel, Counter>,
    /// `push-register` results, by action.
    pub registrations: Family<ActionLabel, Counter>,
    /// Proxied WebSocket connections open now.
    pub websockets: Gauge,
    /// Proxied WebSocket connections opened.
    pub websockets_opened: Counter,
    /// 1 when the last readiness check found the upstream and the Director reachable.
    pub ready: Gauge,
    /// Resident memory of the process (set when rendered).
    pub resident_memory: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("davpush_gateway");
        let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let m = GatewayMetrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            upstream_duration: Histogram::new(buckets),
            changes: Family::default(),
            registrations: Family::default(),
            websockets: Gauge::default(),
            websockets_opened: Counter::default(),
            ready: Gauge::default(),
            resident_memory: Gauge::default(),
        };
        r.register("requests", "Requests answered, by method and status class", m.requests.clone());
        r.register(
            "upstream_duration_seconds",
            "Time to the upstream WebDAV server's response head",
            m.upstream_duration.clone(),
        );
        r.register("changes", "Change notifications to the Director, by outcome", m.changes.clone());
        r.register("registrations", "push-register registrations created and deleted", m.registrations.clone());
        r.register("websockets", "Proxied WebSocket connections open now", m.websockets.clone());
        r.register("websockets_opened", "Proxied WebSocket connections opened", m.websockets_opened.clone());
        r.register(
            "ready",
            "1 when the last readiness check found the upstream and the Director reachable",
            m.ready.clone(),
        );
        r.register("resident_memory_bytes", "Resident set size of the process", m.resident_memory.clone());
        for outcome in CHANGE_OUTCOMES {
            let _ = m.changes.get_or_create(&OutcomeLabel { outcome });
        }
        for action in ["created", "deleted"] {
            let _ = m.registrations.get_or_create(&ActionLabel { action });
        }
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m
    }
}

impl GatewayMetrics {
    /// Counts one answered request.
    pub fn request(&self, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { method: method_label(method), status_class: status_class(status) })
            .inc();
    }

    /// Counts a change notification's `outcome` (one of [`CHANGE_OUTCOMES`]).
    pub fn change(&self, outcome: &'static str) {
        self.changes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a registration `created` or `deleted`.
    pub fn registration(&self, action: &'static str) {
        self.registrations.get_or_create(&ActionLabel { action }).inc();
    }

    /// Records the time an upstream request took to its response head.
    pub fn upstream(&self, took: Duration) {
        self.upstream_duration.observe(took.as_secs_f64());
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let rss = davpush_core::metrics::resident_memory_bytes().unwrap_or(0);
        self.resident_memory.set(rss.min(i64::MAX as u64) as i64);
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String never fails");
        out
    }
}

/// Counts a proxied WebSocket while it is open.
#[derive(Debug)]
pub(crate) struct OpenSocket(std::sync::Arc<GatewayMetrics>);

impl OpenSocket {
    pub(crate) fn new(m: std::sync::Arc<GatewayMetrics>) -> OpenSocket {
        m.websockets_opened.inc();
        m.websockets.inc();
        OpenSocket(m)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.websockets.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agreed_series_exists_from_the_start() {
        let text = GatewayMetrics::default().render();
        for line in [
            "davpush_gateway_changes_total{outcome=\"queued\"} 0",
            "davpush_gateway_changes_total{outcome=\"sent\"} 0",
            "davpush_gateway_changes_total{outcome=\"coalesced\"} 0",
            "davpush_gateway_changes_total{outcome=\"retried\"} 0",
            "davpush_gateway_changes_total{outcome=\"dropped\"} 0",
            "davpush_gateway_registrations_total{action=\"created\"} 0",
            "davpush_gateway_registrations_total{action=\"deleted\"} 0",
            "davpush_gateway_websockets 0",
            "davpush_gateway_websockets_opened_total 0",
            "davpush_gateway_ready 0",
            "davpush_gateway_upstream_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("davpush_gateway_resident_memory_bytes ")), "{text}");
    }

    #[test]
    fn methods_and_statuses_fold_into_fixed_labels() {
        let m = GatewayMetrics::default();
        m.request("PROPFIND", 207);
        m.request("BREW", 405);
        m.request("GET", 101);
        let text = m.render();
        for line in [
            r#"davpush_gateway_requests_total{method="PROPFIND",status_class="2xx"} 1"#,
            r#"davpush_gateway_requests_total{method="other",status_class="4xx"} 1"#,
            r#"davpush_gateway_requests_total{method="GET",status_class="1xx"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("BREW"));
    }
}
