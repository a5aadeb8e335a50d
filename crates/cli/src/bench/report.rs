//! The report: figures per phase, printed for people or as JSON.

use super::*;

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Default)]
pub(super) struct FanoutRound {
    pub(super) expected: u64,
    pub(super) received: u64,
    pub(super) addressed: u64,
    pub(super) response_ms: f64,
    pub(super) last_frame_ms: Option<f64>,
    pub(super) latency: Latency,
    /// On-CPU time of the server's threads from the notify to the last frame (`--server-pid`).
    pub(super) server_cpu_ns: Option<u64>,
}

/// Microseconds of server CPU per received frame.
pub(super) fn per_frame_us(cpu_ns: Option<u64>, frames: u64) -> Option<f64> {
    cpu_ns.filter(|_| frames > 0).map(|ns| ns as f64 / 1e3 / frames as f64)
}

impl FanoutRound {
    pub(super) fn cpu_per_frame_us(&self) -> Option<f64> {
        per_frame_us(self.server_cpu_ns, self.received)
    }

    pub(super) fn frames_per_s(&self) -> Option<f64> {
        self.last_frame_ms.filter(|ms| *ms > 0.0).map(|ms| self.received as f64 / (ms / 1000.0))
    }
}

#[derive(Debug, Default)]
pub(super) struct Sustained {
    pub(super) target_rate: f64,
    pub(super) duration_s: u64,
    pub(super) notifications_planned: u64,
    pub(super) notifications_sent: u64,
    pub(super) requests: u64,
    pub(super) batched_requests: u64,
    pub(super) request_errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) addressed: u64,
    pub(super) expected: u64,
    pub(super) received: u64,
    pub(super) send_secs: f64,
    pub(super) delivery_secs: f64,
    pub(super) max_send_lag_ms: f64,
    /// Seconds from the end of sending until waiting for the last frames ended.
    pub(super) drain_secs: f64,
    pub(super) latency: Latency,
    /// Round trips of the notify requests (sent → answered).
    pub(super) notify_rtt: Latency,
    /// Why waiting for the last frames ended.
    pub(super) drain_end: WaitEnd,
    /// The server's WebSocket delivery outcomes during the phase (from /metrics).
    pub(super) server: Option<BTreeMap<String, u64>>,
    /// On-CPU time of the server's threads during the phase and its drain (`--server-pid`).
    pub(super) server_cpu_ns: Option<u64>,
    /// On-CPU time of this process (the load tool, all its threads) over the same span.
    pub(super) client_cpu_ns: Option<u64>,
    /// The kernel's share of it, percent (from clock ticks).
    pub(super) client_kernel_pct: Option<f64>,
}

impl Sustained {
    pub(super) fn not_received(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// Frames neither received nor explained by the server's coalescing or dropping.
    pub(super) fn unaccounted(&self) -> Option<u64> {
        let srv = self.server.as_ref()?;
        let explained = srv.get("coalesced").copied().unwrap_or(0) + srv.get("dropped").copied().unwrap_or(0);
        Some(self.not_received().saturating_sub(explained))
    }
}

#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) run_id: String,
    pub(super) url: String,
    /// Cores of the machine (client and server run on the same one).
    pub(super) machine_cores: Option<usize>,
    /// Cores this client may run on (its CPU affinity).
    pub(super) client_cores: usize,
    /// Worker threads of the connection tasks (the notifier has one more).
    pub(super) client_threads: usize,
    pub(super) fd_soft: Option<u64>,
    pub(super) fd_hard: Option<u64>,
    pub(super) requested: u64,
    pub(super) topics: u64,
    pub(super) source_addrs: u8,
    pub(super) connected: u64,
    /// Connections up that stopped reading once subscribed (--stalled); no frame is expected
    /// of them.
    pub(super) stalled: u64,
    pub(super) failed: BTreeMap<String, (u64, String)>,
    pub(super) setup_secs: f64,
    pub(super) idle_secs: u64,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_after: Option<u64>,
    /// WebSocket connections the server had served (or still held) before this run.
    pub(super) earlier_connections: u64,
    pub(super) server_connections: Option<u64>,
    pub(super) server_subscriptions: Option<u64>,
    pub(super) fanout: Vec<FanoutRound>,
    pub(super) sustained: Option<Sustained>,
    pub(super) unknown_frames: u64,
    pub(super) still_open: u64,
    pub(super) ended_early: BTreeMap<String, u64>,
    /// The server's WebSocket delivery outcomes during the fan-out rounds.
    pub(super) fanout_server: Option<BTreeMap<String, u64>>,
    /// Connections the server closed from the idle measurement to the end, by reason.
    pub(super) server_closed: BTreeMap<String, u64>,
    /// How the stalled connections ended, as read at the end of the run.
    pub(super) stalled_ended: BTreeMap<String, u64>,
    /// SO_RCVBUF in effect on the stalled connections (`--stalled-rcvbuf`).
    pub(super) stalled_rcvbuf: Option<u64>,
}

pub(super) fn show_map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

pub(super) fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} ms"))
}

pub(super) fn kib(b: f64) -> String {
    format!("{:.1} KiB", b / 1024.0)
}

impl Report {
    pub(super) fn bytes_per_connection(&self) -> Option<f64> {
        let (b, a) = (self.rss_before?, self.rss_after?);
        (self.connected > 0).then(|| (a as f64 - b as f64) / self.connected as f64)
    }

    pub(super) fn fanout_median_ms(&self) -> Option<f64> {
        median(self.fanout.iter().filter_map(|r| r.last_frame_ms).collect())
    }

    pub(super) fn fanout_median_rate(&self) -> Option<f64> {
        median(self.fanout.iter().filter_map(FanoutRound::frames_per_s).collect())
    }

    /// Server CPU per frame over all fan-out rounds (total time / total frames).
    pub(super) fn fanout_cpu_per_frame_us(&self) -> Option<f64> {
        let ns: Option<u64> = self.fanout.iter().map(|r| r.server_cpu_ns).sum();
        per_frame_us(ns, self.fanout.iter().map(|r| r.received).sum())
    }

    pub(super) fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "\ndavpush bench — run {} against {}", self.run_id, self.url);
        let _ = writeln!(
            w,
            "  machine: {} cores, this client may use {} of them ({} connection thread(s) and a notifier \
             thread); the server runs on the same machine (pin them apart with taskset when comparing); \
             open-files limit here {} (hard {})",
            self.machine_cores.map_or_else(|| "?".into(), |n| n.to_string()),
            self.client_cores,
            self.client_threads,
            show_limit(self.fd_soft),
            show_limit(self.fd_hard)
        );
        let _ = writeln!(
            w,
            "\nconnections: {} of {} up in {:.1} s ({:.0}/s), {} topic(s), {} source address(es)",
            self.connected,
            self.requested,
            self.setup_secs,
            self.connected as f64 / self.setup_secs.max(1e-9),
            self.topics,
            self.source_addrs
        );
        if self.stalled > 0 {
            let _ = writeln!(
                w,
                "  {} of them stalled (read nothing once subscribed; left out of the expected frames and latencies){}",
                self.stalled,
                self.stalled_rcvbuf.map_or_else(String::new, |b| format!("; SO_RCVBUF {b} bytes in effect"))
            );
        }
        for (cat, (n, first)) in &self.failed {
            let _ = writeln!(w, "  FAILED {n}× {cat}: {first}");
        }
        if let (Some(c), Some(sub)) = (self.server_connections, self.server_subscriptions) {
            let _ = writeln!(w, "  server reports {c} WebSocket connections, {sub} WebSocket subscriptions");
        }
        let _ = writeln!(w, "\nidle memory (server RSS, after {} s idle):", self.idle_secs);
        match (self.rss_before, self.rss_after, self.bytes_per_connection()) {
            (Some(b), Some(a), Some(per)) => {
                let _ = writeln!(
                    w,
                    "  before {:.1} MiB, after {:.1} MiB → {} ({:.0} bytes) per idle connection",
                    b as f64 / 1048576.0,
                    a as f64 / 1048576.0,
                    kib(per),
                    per
                );
            }
            _ => {
                let _ = writeln!(w, "  n/a (the Director serves no /metrics)");
            }
        }
        if self.earlier_connections > 0 {
            let _ = writeln!(
                w,
                "  NOTE: the server had served {} WebSocket connections before this run; memory its allocator \
                 kept from them hides part of the new cost. Restart the Director for this figure.",
                self.earlier_connections
            );
        }
        let _ = writeln!(w, "\nfan-out (one notify per topic, one frame per connection):");
        for (i, r) in self.fanout.iter().enumerate() {
            let _ = writeln!(
                w,
                "  round {}: {}/{} frames (server addressed {}), last frame after {}, {} frames/s; \
                 per frame p50 {} p99 {}; notify answered in {:.1} ms{}",
                i + 1,
                r.received,
                r.expected,
                r.addressed,
                opt_ms(r.last_frame_ms),
                r.frames_per_s().map_or_else(|| "n/a".into(), |v| format!("{v:.0}")),
                opt_ms(r.latency.p50_ms),
                opt_ms(r.latency.p99_ms),
                r.response_ms,
                r.cpu_per_frame_us().map_or_else(String::new, |us| format!("; server CPU {us:.2} µs/frame"))
            );
        }
        let _ = writeln!(
            w,
            "  median: {} to the last frame, {} frames/s",
            opt_ms(self.fanout_median_ms()),
            self.fanout_median_rate().map_or_else(|| "n/a".into(), |v| format!("{v:.0}"))
        );
        if let Some(us) = self.fanout_cpu_per_frame_us() {
            let _ = writeln!(w, "  server CPU (all its threads, notify → last frame): {us:.2} µs per delivered frame");
        }
        if let Some(srv) = &self.fanout_server {
            let _ = writeln!(w, "  server WebSocket deliveries in these rounds: {}", show_map(srv));
        }
        if let Some(st) = &self.sustained {
            let _ = writeln!(w, "\nsustained: target {} notifications/s for {} s", st.target_rate, st.duration_s);
            let _ = writeln!(
                w,
                "  sent {} of {} notifications in {} requests ({} batched), {:.0}/s achieved, \
                 {} failed requests, notifier lag at most {:.1} ms",
                st.notifications_sent,
                st.notifications_planned,
                st.requests,
                st.batched_requests,
                st.notifications_sent as f64 / st.send_secs.max(1e-9),
                st.request_errors,
                st.max_send_lag_ms
            );
            if let Some(e) = &st.first_error {
                let _ = writeln!(w, "  first request error: {e}");
            }
            let lost = st.not_received();
            let _ = writeln!(
                w,
                "  frames: expected {}, server addressed {}, received {}, not received {} ({:.3} %; waiting ended: {})",
                st.expected,
                st.addressed,
                st.received,
                lost,
                if st.expected > 0 { lost as f64 * 100.0 / st.expected as f64 } else { 0.0 },
                st.drain_end.describe()
            );
            if let Some(srv) = &st.server {
                let _ = writeln!(w, "  server WebSocket deliveries in this phase: {}", show_map(srv));
                if let Some(u) = st.unaccounted().filter(|_| lost > 0) {
                    let _ = writeln!(
                        w,
                        "  of the frames not received, {} were coalesced (a newer notification of the same topic \
                         replaced one still queued: by design, the client gets the newest sync-token), {} dropped \
                         by the server, {u} unaccounted (lost)",
                        srv.get("coalesced").copied().unwrap_or(0),
                        srv.get("dropped").copied().unwrap_or(0),
                    );
                }
            }
            let _ = writeln!(
                w,
                "  delivered {:.0} frames/s; latency (request sent → frame read) p50 {} p90 {} p99 {} p99.9 {} max {}",
                st.received as f64 / st.delivery_secs.max(1e-9),
                opt_ms(st.latency.p50_ms),
                opt_ms(st.latency.p90_ms),
                opt_ms(st.latency.p99_ms),
                opt_ms(st.latency.p999_ms),
                opt_ms(st.latency.max_ms)
            );
            let _ = writeln!(
                w,
                "  notify requests answered (sent → response) p50 {} p99 {} max {}",
                opt_ms(st.notify_rtt.p50_ms),
                opt_ms(st.notify_rtt.p99_ms),
                opt_ms(st.notify_rtt.max_ms)
            );
            if let Some(us) = per_frame_us(st.server_cpu_ns, st.received) {
                let _ = writeln!(w, "  server CPU: {us:.2} µs per delivered frame");
            }
            if let Some(us) = per_frame_us(st.client_cpu_ns, st.received) {
                let span = (st.send_secs + st.drain_secs).max(1e-9);
                let _ = writeln!(
                    w,
                    "  load tool CPU (this process, all threads): {us:.2} µs per received frame{}, {:.0} % of one \
                     core (near {} % means the client was the bottleneck)",
                    st.client_kernel_pct.map_or_else(String::new, |p| format!(" ({p:.0} % of it in the kernel)")),
                    st.client_cpu_ns.unwrap_or(0) as f64 / 1e7 / span,
                    100 * self.client_cores
                );
            }
        }
        let _ = writeln!(w);
        if self.unknown_frames > 0 {
            let _ = writeln!(w, "  {} notify frames carried a sync_token this run did not send", self.unknown_frames);
        }
        if !self.ended_early.is_empty() {
            let _ = writeln!(w, "connections that ended before the tool closed them:");
            for (why, n) in &self.ended_early {
                let _ = writeln!(w, "  {n}× {why}");
            }
        }
        if !self.server_closed.is_empty() {
            let _ = writeln!(w, "connections the server closed during the run: {}", show_map(&self.server_closed));
        }
        if !self.stalled_ended.is_empty() {
            let _ = writeln!(w, "how the stalled connections ended:");
            for (why, n) in &self.stalled_ended {
                let _ = writeln!(w, "  {n}× {why}");
            }
        }
        s
    }

    pub(super) fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let lat = |l: &Latency| {
            json!({
                "p50_ms": l.p50_ms, "p90_ms": l.p90_ms, "p99_ms": l.p99_ms, "p999_ms": l.p999_ms, "max_ms": l.max_ms,
            })
        };
        let failed: serde_json::Map<String, serde_json::Value> =
            self.failed.iter().map(|(k, (n, first))| (k.clone(), json!({ "count": n, "first": first }))).collect();
        let rounds: Vec<_> = self
            .fanout
            .iter()
            .map(|r| {
                json!({
                    "expected": r.expected,
                    "received": r.received,
                    "addressed": r.addressed,
                    "last_frame_ms": r.last_frame_ms,
                    "frames_per_s": r.frames_per_s(),
                    "notify_response_ms": r.response_ms,
                    "latency": lat(&r.latency),
                    "server_cpu_ns": r.server_cpu_ns,
                    "server_cpu_us_per_frame": r.cpu_per_frame_us(),
                })
            })
            .collect();
        let sustained = self.sustained.as_ref().map(|st| {
            json!({
                "target_rate": st.target_rate,
                "duration_s": st.duration_s,
                "notifications_planned": st.notifications_planned,
                "notifications_sent": st.notifications_sent,
                "achieved_rate": st.notifications_sent as f64 / st.send_secs.max(1e-9),
                "requests": st.requests,
                "batched_requests": st.batched_requests,
                "request_errors": st.request_errors,
                "first_error": st.first_error,
                "max_send_lag_ms": st.max_send_lag_ms,
                "expected_frames": st.expected,
                "addressed": st.addressed,
                "received_frames": st.received,
                "not_received_frames": st.not_received(),
                "unaccounted_frames": st.unaccounted(),
                "waiting_ended": st.drain_end.describe(),
                "server_ws_deliveries": st.server,
                "frames_per_s": st.received as f64 / st.delivery_secs.max(1e-9),
                "latency": lat(&st.latency),
                "notify_rtt": lat(&st.notify_rtt),
                "server_cpu_us_per_frame": per_frame_us(st.server_cpu_ns, st.received),
                "client_cpu_us_per_frame": per_frame_us(st.client_cpu_ns, st.received),
                "client_kernel_pct": st.client_kernel_pct,
            })
        });
        json!({
            "run_id": self.run_id,
            "url": self.url,
            "machine": {
                "machine_cores": self.machine_cores,
                "client_cores": self.client_cores,
                "client_threads": self.client_threads,
                "server_on_same_machine": true,
                "fd_soft_limit": self.fd_soft,
                "fd_hard_limit": self.fd_hard,
            },
            "connections": {
                "requested": self.requested,
                "connected": self.connected,
                "stalled": self.stalled,
                "stalled_rcvbuf_bytes": self.stalled_rcvbuf,
                "stalled_ended": self.stalled_ended,
                "failed": failed,
                "setup_s": self.setup_secs,
                "topics": self.topics,
                "source_addrs": self.source_addrs,
                "still_open_at_end": self.still_open,
                "ended_early": self.ended_early,
            },
            "idle": {
                "idle_s": self.idle_secs,
                "rss_before_bytes": self.rss_before,
                "rss_after_bytes": self.rss_after,
                "bytes_per_connection": self.bytes_per_connection(),
                "earlier_connections_on_server": self.earlier_connections,
                "server_ws_connections": self.server_connections,
                "server_ws_subscriptions": self.server_subscriptions,
            },
            "fanout": {
                "rounds": rounds,
                "median_last_frame_ms": self.fanout_median_ms(),
                "median_frames_per_s": self.fanout_median_rate(),
                "server_cpu_us_per_frame": self.fanout_cpu_per_frame_us(),
                "server_ws_deliveries": self.fanout_server,
            },
            "sustained": sustained,
            "unknown_frames": self.unknown_frames,
            "server": {
                "ws_closed_by_reason": self.server_closed,
            },
        })
    }
}
