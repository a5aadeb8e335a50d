//! Per-host scheduling: one ready queue per push-service origin, served round-robin, with a
//! per-host share of the workers, a circuit breaker and an adaptive timeout per host.
//!
//! Nothing here touches slots or does I/O: the engine tells [`Hosts`] what happened (a slot got
//! ready, waits for a retry, a request finished) and asks it which slot goes next.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::SlotKey;

/// A push service's origin (scheme, host and port of an endpoint): slots of one origin share a
/// queue, a share of the workers, a circuit breaker and a latency estimate. Transports that
/// talk to one service only (FCM, APNs, HMS) use [`HostKey::default`] for every slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey(Arc<str>);

impl HostKey {
    /// The key of an origin such as `https://push.example.net:8443`.
    pub fn new(origin: &str) -> Self {
        HostKey(origin.into())
    }

    /// The origin as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() { f.write_str("the push service") } else { f.write_str(&self.0) }
    }
}

/// The limits [`Hosts`] enforces (derived from the engine settings).
#[derive(Debug, Clone)]
pub(super) struct Limits {
    /// Requests in flight at most, all hosts together.
    pub(super) workers: usize,
    /// Requests in flight at most per host.
    pub(super) per_host: usize,
    /// Workers only a host with nothing in flight may take (0 if one host may take them all).
    pub(super) reserve: usize,
    /// Consecutive transient failures (or timeouts) that open a host's breaker.
    pub(super) failures: u32,
    /// How long an open breaker keeps the host's slots waiting before one probe goes.
    pub(super) cool_down: Duration,
    /// The adaptive timeout's floor.
    pub(super) min_timeout: Duration,
    /// The configured request timeout: the adaptive timeout's ceiling.
    pub(super) max_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down is over: one probe may go (`probing` while it is in flight).
    HalfOpen {
        probing: bool,
    },
}

/// RFC 6298's estimator (SRTT, RTTVAR), with the timeout doubled after each timeout.
#[derive(Debug, Default)]
struct Latency {
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
}

impl Latency {
    fn sample(&mut self, r: Duration) {
        self.backoff = 0;
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
    }

    /// `SRTT + 4·RTTVAR` (doubled per timeout since the last answer), within the limits;
    /// `None` (no timeout of the engine's own) without an estimate or at the ceiling.
    fn timeout(&self, l: &Limits) -> Option<Duration> {
        let rto = self.srtt? + self.rttvar * 4;
        let rto = rto.saturating_mul(1 << self.backoff.min(16)).max(l.min_timeout);
        (rto < l.max_timeout).then_some(rto)
    }
}

#[derive(Debug)]
struct Host {
    ready: VecDeque<SlotKey>,
    /// Slots of this host backing off after a failure.
    waiting: HashSet<SlotKey>,
    in_flight: usize,
    /// In [`Hosts::rr`].
    queued: bool,
    breaker: Breaker,
    latency: Latency,
}

impl Host {
    fn new() -> Self {
        Host {
            ready: VecDeque::new(),
            waiting: HashSet::new(),
            in_flight: 0,
            queued: false,
            breaker: Breaker::Closed { failures: 0 },
            latency: Latency::default(),
        }
    }

    /// Has no slots: kept only for its breaker and latency estimate.
    fn idle(&self) -> bool {
        self.ready.is_empty() && self.waiting.is_empty() && self.in_flight == 0
    }

    /// Has a ready slot it may start now, leaving the global limits aside.
    fn can_start(&self, l: &Limits) -> bool {
        !self.ready.is_empty()
            && self.in_flight < l.per_host
            && match self.breaker {
                Breaker::Closed { .. } => true,
                Breaker::Open { .. } | Breaker::HalfOpen { probing: true } => false,
                Breaker::HalfOpen { probing: false } => true,
            }
    }
}

/// What a finished request did to its host's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transition {
    None,
    /// The breaker opened (or opened again after a failed probe) until then.
    Opened(Instant),
    /// The host answered again after its breaker was open: release its waiting slots.
    Closed,
}

/// How a request ended, as far as its host's health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// The host answered definitively (delivered, gone, rejected) after this long.
    Answered(Duration),
    /// The host answered with a transient failure (429, 5xx, network error) after this long.
    Failed(Duration),
    /// No answer within the timeout.
    TimedOut,
    /// No request was made (the message expired first).
    Skipped,
}

/// A slot the engine may start now.
#[derive(Debug)]
pub(super) struct Pick {
    pub(super) host: HostKey,
    pub(super) key: SlotKey,
    /// The engine's own timeout for this request (`None`: the transport's request timeout).
    pub(super) timeout: Option<Duration>,
    /// This request is the probe of a half-open breaker.
    pub(super) probe: bool,
}

/// Hosts without slots kept at most (for their breaker and latency), beyond those with slots.
const MAX_IDLE_HOSTS: usize = 10_000;

/// All hosts with slots (bounded by the number of slots), and recently seen idle ones (their
/// breaker state and latency estimate outlive their slots; dropped beyond `MAX_IDLE_HOSTS`).
#[derive(Debug)]
pub(super) struct Hosts {
    limits: Limits,
    map: HashMap<HostKey, Host>,
    /// Hosts that may start a request as far as their own limits go, in round-robin order.
    rr: VecDeque<HostKey>,
    in_flight: usize,
}

impl Hosts {
    pub(super) fn new(limits: Limits) -> Self {
        Hosts { limits, map: HashMap::new(), rr: VecDeque::new(), in_flight: 0 }
    }

    fn host(&mut self, host: &HostKey) -> &mut Host {
        if !self.map.contains_key(host) && self.map.len() >= MAX_IDLE_HOSTS {
            let before = self.map.len();
            self.map.retain(|_, h| !h.idle());
            tracing::debug!(dropped = before - self.map.len(), "forgot idle push-service hosts");
        }
        self.map.entry(host.clone()).or_insert_with(Host::new)
    }

    /// `key` (of `host`) is ready to go.
    pub(super) fn push_ready(&mut self, host: &HostKey, key: SlotKey) {
        let h = self.host(host);
        h.waiting.remove(&key);
        h.ready.push_back(key);
        self.requeue(host);
    }

    /// `key` (of `host`) waits for a retry.
    pub(super) fn push_waiting(&mut self, host: &HostKey, key: SlotKey) {
        self.host(host).waiting.insert(key);
    }

    /// `key` is done.
    pub(super) fn forget(&mut self, host: &HostKey, key: &SlotKey) {
        if let Some(h) = self.map.get_mut(host) {
            h.waiting.remove(key);
        }
    }

    /// Takes the slots of `host` that wait for a retry (to release them at once).
    pub(super) fn take_waiting(&mut self, host: &HostKey) -> Vec<SlotKey> {
        self.map.get_mut(host).map(|h| h.waiting.drain().collect()).unwrap_or_default()
    }

    /// The slots of `host` that wait for a retry.
    pub(super) fn waiting(&self, host: &HostKey) -> impl Iterator<Item = &SlotKey> {
        self.map.get(host).into_iter().flat_map(|h| h.waiting.iter())
    }

    /// Whether `host` has a slot ready to go.
    pub(super) fn has_ready(&self, host: &HostKey) -> bool {
        self.map.get(host).is_some_and(|h| !h.ready.is_empty())
    }

    fn requeue(&mut self, host: &HostKey) {
        if let Some(h) = self.map.get_mut(host)
            && !h.queued
            && h.can_start(&self.limits)
        {
            h.queued = true;
            self.rr.push_back(host.clone());
        }
    }

    /// The next slot to start: hosts take turns, each within its share; `None` when every
    /// worker is busy or no host may start one.
    pub(super) fn pick(&mut self) -> Option<Pick> {
        let l = &self.limits;
        if self.in_flight >= l.workers {
            return None;
        }
        for _ in 0..self.rr.len() {
            let name = self.rr.pop_front()?;
            let Some(h) = self.map.get_mut(&name) else { continue };
            h.queued = false;
            if !h.can_start(l) {
                continue; // queued again when that changes
            }
            if self.in_flight + l.reserve >= l.workers && h.in_flight > 0 {
                // The last workers are kept for hosts with nothing in flight.
                h.queued = true;
                self.rr.push_back(name);
                continue;
            }
            let key = h.ready.pop_front()?;
            let probe = h.breaker == Breaker::HalfOpen { probing: false };
            if probe {
                h.breaker = Breaker::HalfOpen { probing: true };
            }
            // A probe gets the full request timeout: a slow but working host can show it.
            let timeout = if probe { None } else { h.latency.timeout(l) };
            h.in_flight += 1;
            self.in_flight += 1;
            self.requeue(&name);
            return Some(Pick { host: name, key, timeout, probe });
        }
        None
    }

    /// A request of `pick` ended (`probe`: it was the breaker's probe).
    pub(super) fn finish(&mut self, host: &HostKey, probe: bool, health: Health, now: Instant) -> Transition {
        let l = &self.limits;
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(h) = self.map.get_mut(host) else { return Transition::None };
        h.in_flight = h.in_flight.saturating_sub(1);
        let transition = match health {
            Health::Skipped => {
                if probe {
                    h.breaker = Breaker::HalfOpen { probing: false };
                }
                Transition::None
            }
            Health::Answered(took) => {
                h.latency.sample(took);
                let was_closed = matches!(h.breaker, Breaker::Closed { .. });
                h.breaker = Breaker::Closed { failures: 0 };
                if was_closed { Transition::None } else { Transition::Closed }
            }
            Health::Failed(_) | Health::TimedOut => {
                match health {
                    Health::Failed(took) => h.latency.sample(took),
                    _ => h.latency.backoff = h.latency.backoff.saturating_add(1),
                }
                match h.breaker {
                    Breaker::Closed { failures } if failures + 1 >= l.failures => {
                        h.breaker = Breaker::Open { until: now + l.cool_down };
                        Transition::Opened(now + l.cool_down)
                    }
                    Breaker::Closed { failures } => {
                        h.breaker = Breaker::Closed { failures: failures + 1 };
                        Transition::None
                    }
                    Breaker::HalfOpen { .. } if probe => {
                        h.breaker = Breaker::Open { until: now + l.cool_down };
                        Transition::Opened(now + l.cool_down)
                    }
                    // A request started before the breaker opened: no news.
                    Breaker::Open { .. } | Breaker::HalfOpen { .. } => Transition::None,
                }
            }
        };
        // The engine tells next what became of the slot (ready, waiting or forgotten).
        self.requeue(host);
        transition
    }

    /// The cool-down of `host` may be over: a probe may go. True if the breaker is now half-open.
    pub(super) fn cool_down_over(&mut self, host: &HostKey, now: Instant) -> bool {
        let Some(h) = self.map.get_mut(host) else { return false };
        match h.breaker {
            Breaker::Open { until } if until <= now => {
                h.breaker = Breaker::HalfOpen { probing: false };
                self.requeue(host);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            workers: 8,
            per_host: 2,
            reserve: 2,
            failures: 3,
            cool_down: Duration::from_secs(10),
            min_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(30),
        }
    }

    fn key(n: u32) -> SlotKey {
        SlotKey::Topic(davpush_core::Topic::parse(&format!("t{n}"), 10).unwrap())
    }

    #[test]
    fn the_timeout_follows_the_latency_within_floor_and_ceiling() {
        let l = limits();
        let mut lat = Latency::default();
        assert_eq!(lat.timeout(&l), None, "no estimate: the transport's own timeout");
        lat.sample(Duration::from_millis(50));
        assert_eq!(lat.timeout(&l), Some(Duration::from_secs(1)), "never below the floor");
        for _ in 0..20 {
            lat.sample(Duration::from_secs(2));
        }
        let t = lat.timeout(&l).unwrap();
        assert!(t > Duration::from_secs(2) && t < Duration::from_secs(5), "{t:?}");
        lat.backoff = 4;
        assert_eq!(lat.timeout(&l), None, "doubled past the ceiling: the configured timeout");
    }

    #[test]
    fn hosts_take_turns_within_their_share_and_the_reserve() {
        let mut hosts = Hosts::new(limits());
        let (slow, fast) = (HostKey::new("https://slow"), HostKey::new("https://fast"));
        for n in 0..10 {
            hosts.push_ready(&slow, key(n));
        }
        let picks: Vec<_> = std::iter::from_fn(|| hosts.pick()).collect();
        assert_eq!(picks.len(), 2, "the slow host's share");
        hosts.push_ready(&fast, key(100));
        let p = hosts.pick().unwrap();
        assert_eq!((p.host, p.key), (fast, key(100)));
    }
}
