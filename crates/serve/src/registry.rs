//! Which connections are waiting for their first request, busy, or idle between requests; and
//! which to close first when there are too many. Upgraded connections (WebSockets) have left
//! the registry: they are not HTTP connections any more and are never shed here.
//!
//! One `std::sync::Mutex` guards everything; it is held for a few map operations and never
//! across an `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Refusal;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; no complete request head yet.
    Pending { since: Instant },
    /// This many requests are in progress (handler running or response body being sent).
    Active { requests: usize },
    /// Keep-alive, nothing in progress since `since`.
    Idle { order: u64, since: Instant },
    /// To be closed now, for this reason.
    Shed(Refusal),
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Entry>,
    /// Pending connections by id, that is by age (ids grow).
    pending: BTreeSet<u64>,
    /// Idle connections by the order in which they became idle → id.
    idle: BTreeMap<u64, u64>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    max_pending: usize,
}

impl Registry {
    pub(crate) fn new(max_pending: usize) -> Self {
        Registry { inner: Mutex::default(), max_pending: max_pending.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection as pending; if that makes more than `max_pending`, the oldest
    /// pending one is told to close ([`Refusal::PendingLimit`]). Returns the id and the
    /// connection's wake-up signal.
    pub(crate) fn admit(&self, now: Instant) -> (u64, Arc<Notify>) {
        let mut g = self.lock();
        let id = g.next;
        g.next += 1;
        let wake = Arc::new(Notify::new());
        g.conns.insert(id, Entry { phase: Phase::Pending { since: now }, wake: wake.clone() });
        g.pending.insert(id);
        while g.pending.len() > self.max_pending {
            let Some(oldest) = g.pending.pop_first() else { break };
            g.shed(oldest, Refusal::PendingLimit);
        }
        (id, wake)
    }

    /// A request head arrived on `id`.
    pub(crate) fn begin(&self, id: u64) {
        let mut g = self.lock();
        let Some(e) = g.conns.get_mut(&id) else { return };
        let phase = e.phase;
        match phase {
            Phase::Pending { .. } => {
                e.phase = Phase::Active { requests: 1 };
                g.pending.remove(&id);
            }
            Phase::Idle { order, .. } => {
                e.phase = Phase::Active { requests: 1 };
                g.idle.remove(&order);
            }
            Phase::Active { requests } => e.phase = Phase::Active { requests: requests + 1 },
            Phase::Shed(_) => {}
        }
    }

    /// A request on `id` is finished (its response sent, or abandoned).
    pub(crate) fn end(&self, id: u64, now: Instant) {
        let mut g = self.lock();
        let order = g.next;
        let Some(e) = g.conns.get_mut(&id) else { return };
        match e.phase {
            Phase::Active { requests } if requests > 1 => e.phase = Phase::Active { requests: requests - 1 },
            Phase::Active { .. } => {
                e.phase = Phase::Idle { order, since: now };
                e.wake.notify_one();
                g.next += 1;
                g.idle.insert(order, id);
            }
            _ => {}
        }
    }

    pub(crate) fn phase(&self, id: u64) -> Option<Phase> {
        self.lock().conns.get(&id).map(|e| e.phase)
    }

    /// The connection's task is done (closed, or upgraded to another protocol).
    pub(crate) fn remove(&self, id: u64) {
        let mut g = self.lock();
        if let Some(e) = g.conns.remove(&id) {
            match e.phase {
                Phase::Pending { .. } => {
                    g.pending.remove(&id);
                }
                Phase::Idle { order, .. } => {
                    g.idle.remove(&order);
                }
                _ => {}
            }
        }
    }

    /// Tells up to `n` connections to close: the oldest pending ones first, then those idle
    /// longest. Returns how many.
    pub(crate) fn shed_oldest(&self, n: usize, why: Refusal) -> usize {
        let mut g = self.lock();
        let mut shed = 0;
        while shed < n {
            let id = match g.pending.pop_first() {
                Some(id) => id,
                None => match g.idle.pop_first() {
                    Some((_, id)) => id,
                    None => break,
                },
            };
            g.shed(id, why);
            shed += 1;
        }
        shed
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (g.conns.len(), g.pending.len(), g.idle.len())
    }
}

impl Inner {
    /// Marks `id` (already out of the pending and idle sets) as shed and wakes its task.
    fn shed(&mut self, id: u64, why: Refusal) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.phase = Phase::Shed(why);
            e.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_cap_sheds_the_oldest() {
        let r = Registry::new(2);
        let now = Instant::now();
        let (a, _) = r.admit(now);
        let (b, _) = r.admit(now);
        r.begin(b);
        let (c, _) = r.admit(now);
        assert!(matches!(r.phase(a), Some(Phase::Pending { .. })));
        let (d, _) = r.admit(now);
        assert_eq!(r.phase(a), Some(Phase::Shed(Refusal::PendingLimit)));
        assert!(matches!(r.phase(c), Some(Phase::Pending { .. })));
        assert!(matches!(r.phase(d), Some(Phase::Pending { .. })));
        assert_eq!(r.phase(b), Some(Phase::Active { requests: 1 }));
    }

    #[test]
    fn requests_move_a_connection_between_active_and_idle() {
        let r = Registry::new(8);
        let now = Instant::now();
        let (a, _) = r.admit(now);
        r.begin(a);
        r.begin(a);
        r.end(a, now);
        assert_eq!(r.phase(a), Some(Phase::Active { requests: 1 }));
        r.end(a, now);
        assert!(matches!(r.phase(a), Some(Phase::Idle { .. })));
        assert_eq!(r.counts(), (1, 0, 1));
        r.begin(a);
        assert_eq!(r.counts(), (1, 0, 0));
        r.remove(a);
        assert_eq!(r.counts(), (0, 0, 0));
        r.end(a, now);
        assert_eq!(r.phase(a), None);
    }

    #[test]
    fn shedding_takes_pending_first_then_the_longest_idle_and_never_active() {
        let r = Registry::new(8);
        let now = Instant::now();
        let (idle_old, _) = r.admit(now);
        let (idle_new, _) = r.admit(now);
        let (busy, _) = r.admit(now);
        for id in [idle_new, idle_old, busy] {
            r.begin(id);
        }
        r.end(idle_old, now);
        r.end(idle_new, now);
        let (pending, _) = r.admit(now);
        assert_eq!(r.shed_oldest(2, Refusal::FdLimit), 2);
        assert_eq!(r.phase(pending), Some(Phase::Shed(Refusal::FdLimit)));
        assert_eq!(r.phase(idle_old), Some(Phase::Shed(Refusal::FdLimit)));
        assert!(matches!(r.phase(idle_new), Some(Phase::Idle { .. })));
        assert_eq!(r.shed_oldest(5, Refusal::FdLimit), 1);
        assert_eq!(r.phase(busy), Some(Phase::Active { requests: 1 }));
        // A shed connection stays shed even if a request head still arrives.
        r.begin(pending);
        assert_eq!(r.phase(pending), Some(Phase::Shed(Refusal::FdLimit)));
    }
}
