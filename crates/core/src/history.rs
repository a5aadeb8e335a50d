//! The notification history that lets a client resume (`docs/protocol.md` §4.6): every
//! notification gets a [`Position`], and a client that reconnects with the last position it saw
//! gets exactly what its topics missed since, in order, or is told to re-sync them.
//!
//! A position is `<epoch>-<ms>-<n>`: an *epoch* naming one history (a random value made when
//! the history is created) and a point in it, ordered by time in milliseconds and a counter —
//! the shape of a Redis stream id, so that a cluster can use its stream's ids as they are. One
//! position orders every topic: a stream with several topics needs only its last one. A
//! position of another epoch (the Director restarted with a history in memory, or Redis lost
//! its stream) is never replayed from: the client re-syncs.
//!
//! Two implementations: [`MemoryHistory`] for a single node (positions assigned under one lock
//! together with the hand-off to local connections, so every connection sees positions in
//! order), and a [`SharedHistory`] for a cluster (a Redis stream, in `davpush-cluster`), whose
//! positions the cluster assigns.
//!
//! The design choice a reader may question: the single node keeps its history in memory, not
//! in SQLite. Recording is then a few hundred nanoseconds under a lock on the notify path
//! (`davpush bench`, README), where a store write would make every notify wait for the disk;
//! the price is that a restart loses the history, and clients re-sync once (never a wrong
//! replay: the epoch changes).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::{PushMessage, Topic};

/// A point in one history, ordered: time (ms) first, then a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq {
    /// Milliseconds (unix) when it was assigned.
    pub ms: u64,
    /// Counter within the millisecond.
    pub n: u64,
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.n)
    }
}

impl Seq {
    /// Reads `<ms>-<n>` (a Redis stream id).
    pub fn parse(s: &str) -> Option<Seq> {
        let (ms, n) = s.split_once('-')?;
        Some(Seq { ms: ms.parse().ok()?, n: n.parse().ok()? })
    }
}

/// A notification's position: `<epoch>-<ms>-<n>` on the wire (SSE `id:`, WebSocket `position`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history it belongs to: 1–32 lowercase hex digits.
    pub epoch: Arc<str>,
    /// Where in that history.
    pub seq: Seq,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl Position {
    /// Reads a position a client sent; `None` for anything malformed.
    pub fn parse(s: &str) -> Option<Position> {
        let (epoch, seq) = s.trim().split_once('-')?;
        let hex = |e: &str| !e.is_empty() && e.len() <= 32 && e.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(epoch) {
            return None;
        }
        Some(Position { epoch: Arc::from(epoch), seq: Seq::parse(seq)? })
    }
}

/// A fresh random epoch (64 bits, hex).
pub fn new_epoch() -> Arc<str> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS has randomness");
    Arc::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// How much history is kept (`[history]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Notifications kept per topic (older ones are dropped; a client that missed more
    /// re-syncs that topic).
    pub per_topic: usize,
    /// How long a notification is kept, milliseconds.
    pub max_age_ms: u64,
    /// Notifications kept in all (the memory bound).
    pub max_entries: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings { per_topic: 100, max_age_ms: 600_000, max_entries: 100_000 }
    }
}

/// What a client missed since its position.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The notifications of its topics after its position, in order (each with its position).
    pub messages: Vec<Arc<PushMessage>>,
    /// Topics whose missed notifications are no longer all known: the client must re-sync them.
    pub resync: Vec<Topic>,
    /// The newest position of the history now (what the client continues from after a resync).
    pub head: Option<Position>,
}

/// The history of a cluster, shared by its nodes (positions are assigned where it lives).
#[async_trait::async_trait]
pub trait SharedHistory: Send + Sync + fmt::Debug + 'static {
    /// The newest position now; `None` when the history cannot be reached.
    async fn head(&self) -> Option<Position>;
    /// What `topics` got after `since` (see [`Replayed`]); when the history cannot be reached,
    /// every topic is to be re-synced.
    async fn replay(&self, topics: &[Topic], since: &str, now_ms: u64) -> Replayed;
}

#[derive(Debug, Default)]
struct TopicLog {
    entries: VecDeque<Arc<PushMessage>>,
    /// The newest position dropped from this topic (a client before it re-syncs).
    dropped: Seq,
}

#[derive(Debug, Default)]
struct Inner {
    last: Seq,
    topics: HashMap<Topic, TopicLog>,
    /// Every recorded notification in order, for the age and total bounds (entries already
    /// dropped by their topic's bound stay until they reach the front).
    order: VecDeque<(Seq, Topic)>,
    /// The newest position dropped together with the last entry of its topic.
    floor: Seq,
}

/// The history of a single node, in memory. See the module documentation.
#[derive(Debug)]
pub struct MemoryHistory {
    epoch: Arc<str>,
    settings: HistorySettings,
    inner: Mutex<Inner>,
}

impl MemoryHistory {
    /// An empty history with a new epoch.
    pub fn new(settings: HistorySettings) -> Self {
        MemoryHistory { epoch: new_epoch(), settings, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether anything is kept (`max_entries` and `per_topic` above 0): a history that keeps
    /// nothing gives no positions, and every resume is a resync.
    pub fn enabled(&self) -> bool {
        self.settings.max_entries > 0 && self.settings.per_topic > 0
    }

    /// The newest position (`None` when not [`MemoryHistory::enabled`]).
    pub fn head(&self) -> Option<Position> {
        self.enabled().then(|| Position { epoch: self.epoch.clone(), seq: self.lock().last })
    }

    /// Gives `message` the next position, keeps it, and calls `deliver` with it while no other
    /// notification can get a position: what `deliver` hands to connections reaches each of
    /// them in the order of the positions.
    pub fn record(&self, mut message: PushMessage, now_ms: u64, deliver: impl FnOnce(&Arc<PushMessage>)) {
        let mut inner = self.lock();
        let ms = now_ms.max(inner.last.ms);
        let seq = if ms == inner.last.ms { Seq { ms, n: inner.last.n + 1 } } else { Seq { ms, n: 0 } };
        inner.last = seq;
        message.position = Some(Position { epoch: self.epoch.clone(), seq });
        let message = Arc::new(message);
        deliver(&message);
        let topic = message.notification.topic.clone();
        let log = inner.topics.entry(topic.clone()).or_default();
        log.entries.push_back(message);
        while log.entries.len() > self.settings.per_topic {
            if let Some(old) = log.entries.pop_front() {
                log.dropped = seq_of(&old);
            }
        }
        if log.entries.is_empty() {
            let dropped = log.dropped;
            inner.topics.remove(&topic);
            inner.floor = inner.floor.max(dropped);
        } else {
            inner.order.push_back((seq, topic));
        }
        self.evict(&mut inner, now_ms);
    }

    /// Drops what is older than the age bound, and the oldest beyond the total bound.
    fn evict(&self, inner: &mut Inner, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.settings.max_age_ms);
        while let Some((seq, _)) = inner.order.front() {
            if inner.order.len() <= self.settings.max_entries && seq.ms >= oldest {
                break;
            }
            let Some((seq, topic)) = inner.order.pop_front() else { break };
            let Some(log) = inner.topics.get_mut(&topic) else { continue };
            if log.entries.front().is_some_and(|m| seq_of(m) == seq) {
                log.entries.pop_front();
                log.dropped = log.dropped.max(seq);
            }
            if log.entries.is_empty() {
                let dropped = log.dropped;
                inner.topics.remove(&topic);
                inner.floor = inner.floor.max(dropped);
            }
        }
    }

    /// What `topics` got after `since`.
    pub fn replay(&self, topics: &[Topic], since: &str, now_ms: u64) -> Replayed {
        if !self.enabled() {
            return Replayed { messages: Vec::new(), resync: topics.to_vec(), head: None };
        }
        let mut inner = self.lock();
        self.evict(&mut inner, now_ms);
        let head = Some(Position { epoch: self.epoch.clone(), seq: inner.last });
        let since = match Position::parse(since) {
            Some(p) if p.epoch == self.epoch && p.seq <= inner.last => p.seq,
            // Another history (a restart), or nothing we gave out: nothing can be replayed.
            _ => return Replayed { messages: Vec::new(), resync: topics.to_vec(), head },
        };
        let mut out = Replayed { head, ..Replayed::default() };
        for t in topics {
            match inner.topics.get(t) {
                Some(log) if log.dropped > since => out.resync.push(t.clone()),
                Some(log) => out.messages.extend(log.entries.iter().filter(|m| seq_of(m) > since).cloned()),
                None if inner.floor > since => out.resync.push(t.clone()),
                None => {}
            }
        }
        out.messages.sort_by_key(|m| seq_of(m));
        out
    }

    /// Notifications kept now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().topics.values().map(|l| l.entries.len()).sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn seq_of(m: &PushMessage) -> Seq {
    m.position.as_ref().map(|p| p.seq).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Notification;

    fn msg(topic: &str, token: &str) -> PushMessage {
        PushMessage::new(Notification {
            topic: Topic::parse(topic, 64).unwrap(),
            sync_token: Some(token.into()),
            trigger: None,
        })
    }

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|t| Topic::parse(t, 64).unwrap()).collect()
    }

    fn tokens(r: &Replayed) -> Vec<&str> {
        r.messages.iter().map(|m| m.notification.sync_token.as_deref().unwrap()).collect()
    }

    fn record(h: &MemoryHistory, topic: &str, token: &str, now: u64) -> Position {
        let mut pos = None;
        h.record(msg(topic, token), now, |m| pos = m.position.clone());
        pos.unwrap()
    }

    #[test]
    fn positions_round_trip_and_order() {
        let p = Position::parse("0a1b-1700000000000-3").unwrap();
        assert_eq!(p.to_string(), "0a1b-1700000000000-3");
        assert!(Position::parse("").is_none());
        assert!(Position::parse("XYZ-1-2").is_none(), "the epoch is hex");
        assert!(Position::parse("ab-1").is_none());
        assert!(Seq { ms: 1, n: 9 } < Seq { ms: 2, n: 0 });
    }

    #[test]
    fn a_client_gets_what_its_topics_missed_in_order() {
        let h = MemoryHistory::new(HistorySettings::default());
        let start = h.head().unwrap().to_string();
        let a1 = record(&h, "a", "a1", 1_000);
        record(&h, "b", "b1", 1_000);
        record(&h, "c", "c1", 1_001);
        record(&h, "a", "a2", 1_002);
        let r = h.replay(&topics(&["a", "b"]), &start, 1_003);
        assert_eq!(tokens(&r), ["a1", "b1", "a2"]);
        assert!(r.resync.is_empty());
        let r = h.replay(&topics(&["a", "b"]), &a1.to_string(), 1_003);
        assert_eq!(tokens(&r), ["b1", "a2"], "only what came after the position");
        assert_eq!(r.head, h.head());
        assert!(a1.seq < h.head().unwrap().seq);
    }

    #[test]
    fn beyond_the_window_or_another_epoch_is_a_resync() {
        let h = MemoryHistory::new(HistorySettings { per_topic: 2, max_age_ms: 10_000, max_entries: 100 });
        let start = h.head().unwrap().to_string();
        for i in 0..3 {
            record(&h, "a", &format!("a{i}"), 1_000);
        }
        record(&h, "b", "b0", 1_000);
        let r = h.replay(&topics(&["a", "b", "quiet"]), &start, 1_000);
        assert_eq!(r.resync, topics(&["a"]), "a lost one beyond its 2 kept");
        assert_eq!(tokens(&r), ["b0"]);
        // Later everything is older than the age bound: whoever was behind re-syncs.
        record(&h, "c", "c0", 20_000);
        let r = h.replay(&topics(&["a", "b", "c"]), &start, 20_000);
        assert_eq!(r.resync, topics(&["a", "b"]));
        assert_eq!(tokens(&r), ["c0"]);
        let other = MemoryHistory::new(HistorySettings::default());
        let r = other.replay(&topics(&["a"]), &start, 20_000);
        assert_eq!(r.resync, topics(&["a"]), "a position of another history is never replayed from");
        assert_eq!(other.replay(&topics(&["a"]), "garbage", 0).resync.len(), 1);
    }

    #[test]
    fn the_total_bound_drops_the_oldest() {
        let h = MemoryHistory::new(HistorySettings { per_topic: 10, max_age_ms: 10_000, max_entries: 3 });
        let start = h.head().unwrap().to_string();
        for t in ["a", "b", "c", "d"] {
            record(&h, t, t, 1_000);
        }
        assert_eq!(h.len(), 3);
        let r = h.replay(&topics(&["a", "d", "x"]), &start, 1_000);
        assert_eq!(r.resync, topics(&["a", "x"]), "a was dropped; x cannot be told apart from a dropped topic");
        assert_eq!(tokens(&r), ["d"]);
        let off = MemoryHistory::new(HistorySettings { max_entries: 0, ..HistorySettings::default() });
        assert!(off.head().is_none(), "a history that keeps nothing gives no positions");
        assert_eq!(off.replay(&topics(&["a"]), &start, 1_000).resync, topics(&["a"]));
    }
}
