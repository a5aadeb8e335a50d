//! WebSocket connections of this process: each has a small bounded mailbox that notifications are
//! pushed into without blocking, and one task (in the HTTP layer) that drains it to the socket.
//!
//! The mailbox is a `Mutex<VecDeque>` plus a wake-up flag and an [`AtomicWaker`] rather than a
//! channel: an idle connection then owns no queue allocation at all, which matters at tens of
//! thousands of connections. The connection has exactly one waiter (its own task), so a single
//! waker slot does what a [`tokio::sync::Notify`] would without its lock and waiter list: a
//! fan-out to many connections pays one atomic swap and one wake per connection.
//!
//! Pending frames are coalesced per topic: a newer notification of a topic that is still queued
//! replaces the older one (the client syncs once, with the newest sync-token), and takes its
//! place in the order of positions ([`crate::history`]): frames leave a mailbox in the order of
//! their positions, so a client's last position means "everything before was written". So the
//! queue never holds more frames than the connection has topics, and a burst of changes to one
//! collection never overflows it. When more distinct topics are pending than the mailbox holds,
//! the client is too slow; it is closed rather than allowed to hold anyone else up, and its
//! subscriptions end with it. A client that stops reading altogether is caught by the write
//! timeout of its task.
//!
//! A connection whose task has [`Connection::attach`]ed its socket is written to from the fan-out
//! itself when nothing is waiting for it (mailbox empty, no frames or answer of its task in
//! flight): the notification's frame, encoded once for all connections ([`ws_text_frame`]), is
//! tried straight into the socket, and the task is not woken at all. Only when the socket would
//! not take it, or took part of it (the task then writes the rest), does the connection fall back
//! to its mailbox. The try-write happens under the mailbox's lock: it never blocks, and it keeps a
//! direct frame from overtaking a queued one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::history::{Position, Seq};
use crate::notification::Framing;
use crate::transport::{Dispatched, TargetError, Transport};
use crate::{PushMessage, ServiceKind, Subscription, SubscriptionId, Target, Topic};

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its mailbox overflowed: the client does not read fast enough.
    TooSlow,
    /// Nothing was heard from it for two ping intervals.
    Timeout,
    /// The server shuts down.
    Shutdown,
}

/// Result of pushing a frame into a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the connection's task.
    Queued,
    /// Replaced a queued frame of the same topic.
    Coalesced,
    /// The mailbox was full; the connection is now closed as too slow.
    Overflow,
    /// The connection was already closed.
    Closed,
    /// Written straight into the socket (the rest of it, if any, is its task's to write).
    Sent,
}

/// What [`DirectSocket::try_write_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// The whole frame.
    All,
    /// A part: the socket's owner keeps the rest and writes it before anything else.
    Part,
    /// Nothing (the socket would block, is busy, or still has bytes to write).
    Nothing,
}

/// A connection's socket as the fan-out sees it: frames can be tried into it without waiting.
pub trait DirectSocket: Send + Sync + std::fmt::Debug {
    /// Writes `frame`, one whole WebSocket frame, if the socket takes (at least a part of) it
    /// right now and nothing else is being written to it; never waits.
    fn try_write_frame(&self, frame: &[u8]) -> Wrote;
}

/// Encodes `payload` as one unmasked WebSocket text frame (RFC 6455 §5.2), as a server sends it:
/// the same bytes for every connection, so a fan-out encodes each notification once.
pub fn ws_text_frame(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut v = Vec::with_capacity(len + 10);
    v.push(0x81); // FIN, text
    if len < 126 {
        v.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        v.push(126);
        v.extend_from_slice(&len.to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// A frame waiting in a mailbox.
#[derive(Debug)]
struct Pending {
    /// Its topic; `None` for a frame of no one topic (a `resync`, a position marker).
    topic: Option<Topic>,
    frame: Bytes,
    /// Its position, if it has one: the queue is kept in this order.
    seq: Option<Seq>,
    /// Replayed (or a `resync`): never coalesced away, and not counted against the capacity.
    pinned: bool,
}

#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<Pending>,
    closed: Option<CloseReason>,
    ping_due: bool,
    subscriptions: Vec<SubscriptionId>,
    /// Per replayed topic, the newest position the replay covered: a live frame of the topic
    /// at or before it was replayed already (or seen by the client before), and is skipped.
    floors: Vec<(Topic, Seq)>,
    /// The socket, once the connection's task attached it, until the connection closes.
    direct: Option<Arc<dyn DirectSocket>>,
    /// The task has frames or an answer in flight: a direct write could overtake them.
    busy: bool,
}

impl Mailbox {
    /// Inserts `p` after every queued frame with an earlier position (usually at the end).
    fn insert(&mut self, p: Pending) {
        let mut at = self.queue.len();
        if let Some(seq) = p.seq {
            while at > 0 && self.queue[at - 1].seq.is_some_and(|s| s > seq) {
                at -= 1;
            }
        }
        self.queue.insert(at, p);
    }
}

/// What the connection's task must do after [`Connection::take`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Send a WebSocket ping.
    pub ping: bool,
    /// Close with this reason (after writing the frames taken).
    pub close: Option<CloseReason>,
}

/// One WebSocket connection, as seen by the routing core.
#[derive(Debug)]
pub struct Connection {
    id: Arc<str>,
    /// Which keep-alive slice the connection is in ([`Hub::sweep_slice`]).
    slice: u32,
    capacity: usize,
    last_seen: AtomicI64,
    framing: AtomicU8,
    mailbox: Mutex<Mailbox>,
    /// Set when there is something to do; taken by [`Connection::ready`].
    woken: AtomicBool,
    waker: AtomicWaker,
}

impl Connection {
    /// Tells the connection's task that there is something to do (a permit, like
    /// [`tokio::sync::Notify::notify_one`]: a task not waiting yet finds it on its next wait).
    /// The task itself calls it to keep a wake-up it took but could not act on yet.
    pub fn wake(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// The unguessable connection id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How this connection wants notifications written.
    pub fn framing(&self) -> Framing {
        match self.framing.load(Ordering::Relaxed) {
            1 => Framing::WebSocketPositions,
            2 => Framing::Sse,
            _ => Framing::WebSocket,
        }
    }

    /// Sets how notifications are written from now on.
    pub fn set_framing(&self, framing: Framing) {
        self.framing.store(framing as u8, Ordering::Relaxed);
    }

    /// Queues the frame of a notification of `topic` without blocking.
    pub fn push(&self, topic: &Topic, frame: &Bytes) -> Pushed {
        self.push_at(topic, frame, None, None)
    }

    /// Queues `message`, written as this connection wants it, without blocking.
    pub fn push_message(&self, message: &PushMessage) -> Pushed {
        let seq = message.position.as_ref().map(|p| p.seq);
        self.push_at(&message.notification.topic, message.frame(self.framing()), seq, None)
    }

    /// Delivers `message` without blocking: straight into the socket if the connection has one
    /// attached and nothing is waiting for it, else into the mailbox. `wire` caches the encoded
    /// WebSocket frames of `message` by framing, for all the connections of one fan-out.
    pub fn deliver(&self, message: &PushMessage, wire: &mut [Option<Bytes>; 2]) -> Pushed {
        let framing = self.framing();
        let seq = message.position.as_ref().map(|p| p.seq);
        let slot = match framing {
            Framing::WebSocket => Some(&mut wire[0]),
            Framing::WebSocketPositions => Some(&mut wire[1]),
            Framing::Sse => None,
        };
        self.push_at(&message.notification.topic, message.frame(framing), seq, slot)
    }

    fn push_at(&self, topic: &Topic, frame: &Bytes, seq: Option<Seq>, wire: Option<&mut Option<Bytes>>) -> Pushed {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if m.closed.is_some() {
            return Pushed::Closed;
        }
        if let Some(seq) = seq
            && m.floors.iter().any(|(t, floor)| t == topic && seq <= *floor)
        {
            // Replayed already.
            return Pushed::Coalesced;
        }
        if let (Some(wire), Some(socket)) = (wire, &m.direct)
            && m.queue.is_empty()
            && !m.busy
        {
            let bytes = wire.get_or_insert_with(|| ws_text_frame(frame));
            match socket.try_write_frame(bytes) {
                Wrote::All => return Pushed::Sent,
                Wrote::Part => {
                    drop(m);
                    // The task writes the rest (and is caught by its write timeout if the
                    // client does not read it).
                    self.wake();
                    return Pushed::Sent;
                }
                Wrote::Nothing => {}
            }
        }
        let pending = Pending { topic: Some(topic.clone()), frame: frame.clone(), seq, pinned: false };
        if let Some(at) = m.queue.iter().position(|p| !p.pinned && p.topic.as_ref() == Some(topic)) {
            m.queue.remove(at);
            m.insert(pending);
            return Pushed::Coalesced;
        }
        if m.queue.iter().filter(|p| !p.pinned).count() >= self.capacity {
            m.closed = Some(CloseReason::TooSlow);
            m.direct = None;
            m.queue.clear();
            drop(m);
            self.wake();
            return Pushed::Overflow;
        }
        let was_empty = m.queue.is_empty();
        m.insert(pending);
        drop(m);
        if was_empty {
            self.wake();
        }
        Pushed::Queued
    }

    /// Queues what `topics` missed (`messages`, in order, then a `resync` frame for the topics in
    /// `resync`), merged with the live frames already queued in the order of positions. Live
    /// frames of `topics` up to `head` are skipped from now on: the replay covered them.
    pub fn replay(
        &self,
        topics: &[Topic],
        messages: &[Arc<PushMessage>],
        resync: Option<(Bytes, Option<&Position>)>,
        head: Option<&Position>,
    ) {
        let framing = self.framing();
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if m.closed.is_some() {
            return;
        }
        if let Some(head) = head {
            for t in topics {
                match m.floors.iter_mut().find(|(ft, _)| ft == t) {
                    Some((_, f)) => *f = (*f).max(head.seq),
                    None => m.floors.push((t.clone(), head.seq)),
                }
                m.queue.retain(|p| p.pinned || p.topic.as_ref() != Some(t) || p.seq.is_none_or(|s| s > head.seq));
            }
        }
        for msg in messages {
            let seq = msg.position.as_ref().map(|p| p.seq);
            let topic = Some(msg.notification.topic.clone());
            m.insert(Pending { topic, frame: msg.frame(framing).clone(), seq, pinned: true });
        }
        if let Some((frame, at)) = resync {
            m.insert(Pending { topic: None, frame, seq: at.map(|p| p.seq), pinned: true });
        }
        drop(m);
        self.wake();
    }

    /// Asks the connection's task to close. Nothing is written straight into its socket from
    /// now on (so the task can write its close frame last).
    pub fn close(&self, reason: CloseReason) {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if m.closed.is_none() {
            m.closed = Some(reason);
        }
        m.direct = None;
        drop(m);
        self.wake();
    }

    /// Whether the connection was closed.
    pub fn is_closed(&self) -> bool {
        self.closed_for().is_some()
    }

    /// Why the connection was closed, if it was.
    pub fn closed_for(&self) -> Option<CloseReason> {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// Waits until there is something to do. Only the connection's own task may wait.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            if self.woken.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A wake between the swap and the registration found no waker: look again.
            if self.woken.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }

    /// Lets the fan-out write this connection's frames straight into `socket` whenever nothing
    /// is waiting for it (see the module's documentation). The task attaches its socket once it
    /// is ready for notifications; the socket is let go when the connection closes.
    pub fn attach(&self, socket: Arc<dyn DirectSocket>) {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if m.closed.is_none() {
            m.direct = Some(socket);
        }
    }

    /// The task is about to write something whose order matters to the client (an answer to a
    /// request, a replay): notifications go through the mailbox until [`Connection::settle`].
    pub fn hold(&self) {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner()).busy = true;
    }

    /// What [`Connection::take`] or [`Connection::hold`] put in flight is written: the fan-out
    /// may write straight into the socket again.
    pub fn settle(&self) {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner()).busy = false;
    }

    /// Moves the queued frames into `out` and says what else to do. If it moved any, they are
    /// in flight until [`Connection::settle`].
    pub fn take(&self, out: &mut Vec<Bytes>) -> Work {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if !m.queue.is_empty() {
            m.busy = true;
        }
        out.extend(m.queue.drain(..).map(|p| p.frame));
        if m.queue.capacity() > 16 {
            // A burst is over; an idle connection keeps no large buffer.
            m.queue.shrink_to(0);
        }
        Work { ping: std::mem::take(&mut m.ping_due), close: m.closed }
    }

    /// Records that the client was heard from at `now` (unix seconds).
    pub fn touch(&self, now: i64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }

    fn request_ping(&self) {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if m.closed.is_some() {
            return;
        }
        m.ping_due = true;
        drop(m);
        self.wake();
    }

    /// Remembers a subscription made for this connection, so that it ends with it.
    pub fn add_subscription(&self, id: SubscriptionId) {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        if !m.subscriptions.contains(&id) {
            m.subscriptions.push(id);
        }
    }

    /// Forgets a subscription (unsubscribed).
    pub fn remove_subscription(&self, id: &SubscriptionId) {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        m.subscriptions.retain(|x| x != id);
    }

    /// Number of subscriptions made for this connection.
    pub fn subscription_count(&self) -> usize {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner()).subscriptions.len()
    }

    /// Takes the ids of all subscriptions made for this connection (on close).
    pub fn take_subscriptions(&self) -> Vec<SubscriptionId> {
        let mut m = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut m.subscriptions)
    }
}

/// The server is at its connection limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server has reached its limit of {0} WebSocket connections")]
pub struct HubFull(pub usize);

/// All WebSocket connections of this process.
#[derive(Debug)]
pub struct Hub {
    conns: RwLock<HashMap<Arc<str>, Arc<Connection>>>,
    capacity: usize,
    max_connections: usize,
    /// Connections opened so far: each new one goes to the next keep-alive slice.
    opened: std::sync::atomic::AtomicU32,
}

impl Hub {
    /// A hub whose mailboxes hold `capacity` frames, for at most `max_connections` connections.
    pub fn new(capacity: usize, max_connections: usize) -> Self {
        Hub { conns: RwLock::default(), capacity: capacity.max(1), max_connections, opened: Default::default() }
    }

    /// Registers a new connection with a fresh random id.
    pub fn open(&self, now: i64) -> Result<Arc<Connection>, HubFull> {
        let id: Arc<str> = Arc::from(crate::ids::random_token(16));
        let conn = Arc::new(Connection {
            id: id.clone(),
            slice: self.opened.fetch_add(1, Ordering::Relaxed),
            capacity: self.capacity,
            last_seen: AtomicI64::new(now),
            framing: AtomicU8::new(Framing::WebSocket as u8),
            mailbox: Mutex::default(),
            woken: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let mut conns = self.conns.write().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= self.max_connections {
            return Err(HubFull(self.max_connections));
        }
        conns.insert(id, conn.clone());
        Ok(conn)
    }

    /// Looks a connection up by id.
    pub fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Unregisters a connection (its task ended).
    pub fn remove(&self, id: &str) {
        self.conns.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are no connections.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Vec<Arc<Connection>> {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Keep-alive round: connections not heard from since `stale_before` are closed, the others
    /// are asked to send a ping. Returns how many were closed.
    pub fn sweep(&self, stale_before: i64) -> usize {
        self.sweep_slice(stale_before, 0, 1)
    }

    /// A keep-alive round over slice `slice` of `slices` only (connections are dealt to the
    /// slices in turn as they open): the Director sweeps one slice every `1 / slices` of the
    /// ping interval, so that 19,000 connections are not all woken to write a ping at the same
    /// moment, which held up every notification behind them (issue 17), and each is still
    /// checked and pinged once per interval.
    pub fn sweep_slice(&self, stale_before: i64, slice: u32, slices: u32) -> usize {
        let slices = slices.max(1);
        let due: Vec<Arc<Connection>> = self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.slice % slices == slice % slices)
            .cloned()
            .collect();
        let mut closed = 0;
        for c in due {
            if c.last_seen.load(Ordering::Relaxed) < stale_before {
                c.close(CloseReason::Timeout);
                closed += 1;
            } else {
                c.request_ping();
            }
        }
        closed
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for c in self.snapshot() {
            c.close(reason);
        }
    }
}

/// The WebSocket push service: delivery is a non-blocking write into the connection's socket
/// or push into its mailbox ([`Connection::deliver`]).
#[derive(Debug)]
pub struct WebSocketTransport {
    hub: Arc<Hub>,
}

impl WebSocketTransport {
    /// Delivers to the connections of `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        WebSocketTransport { hub }
    }
}

impl Transport for WebSocketTransport {
    fn kind(&self) -> ServiceKind {
        ServiceKind::WebSocket
    }

    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        let t: davpush_proto::WebSocketTarget =
            serde_json::from_value(params.clone()).map_err(|e| TargetError::new(None, e.to_string()))?;
        match self.hub.get(&t.connection_id) {
            Some(c) if !c.is_closed() => Ok(Target::WebSocket(c)),
            _ => Err(TargetError::new(Some("connection_id"), "no open WebSocket connection has this id".into())),
        }
    }

    fn dispatch(&self, message: &Arc<PushMessage>, recipients: &[Arc<Subscription>]) -> Dispatched {
        let mut d = Dispatched::default();
        let mut wire = [None, None];
        for s in recipients {
            let Some(conn) = s.target.connection() else {
                d.dropped += 1;
                continue;
            };
            match conn.deliver(message, &mut wire) {
                Pushed::Sent => {
                    d.queued += 1;
                    d.sent += 1;
                }
                Pushed::Queued => d.queued += 1,
                Pushed::Coalesced => d.coalesced += 1,
                Pushed::Overflow | Pushed::Closed => d.dropped += 1,
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::parse(s, 64).unwrap()
    }

    #[test]
    fn same_topic_coalesces_and_moves_behind_older_frames() {
        let hub = Hub::new(2, 10);
        let c = hub.open(0).unwrap();
        assert_eq!(c.push(&topic("a"), &Bytes::from_static(b"a1")), Pushed::Queued);
        assert_eq!(c.push(&topic("b"), &Bytes::from_static(b"b1")), Pushed::Queued);
        for _ in 0..100 {
            assert_eq!(c.push(&topic("a"), &Bytes::from_static(b"a2")), Pushed::Coalesced);
        }
        let mut out = Vec::new();
        assert_eq!(c.take(&mut out), Work::default());
        assert_eq!(out, vec![Bytes::from_static(b"b1"), Bytes::from_static(b"a2")]);
    }

    fn seq(n: u64) -> Position {
        Position { epoch: Arc::from("e"), seq: Seq { ms: 1, n } }
    }

    fn message(t: &str, n: u64) -> Arc<PushMessage> {
        let note = crate::Notification { topic: topic(t), sync_token: Some(format!("{t}{n}")), trigger: None };
        Arc::new(PushMessage::new(note).at(seq(n)))
    }

    #[test]
    fn replayed_frames_merge_in_order_and_live_duplicates_are_skipped() {
        let hub = Hub::new(4, 10);
        let c = hub.open(0).unwrap();
        c.set_framing(Framing::WebSocketPositions);
        // Live frames that arrived while the replay was read: b5 (another topic) and a4 (also
        // in the replay).
        c.push_message(&message("b", 5));
        c.push_message(&message("a", 4));
        c.replay(&[topic("a")], &[message("a", 2), message("a", 4)], None, Some(&seq(4)));
        assert_eq!(c.push_message(&message("a", 3)), Pushed::Coalesced, "covered by the replay");
        c.push_message(&message("a", 6));
        let mut out = Vec::new();
        c.take(&mut out);
        let positions: Vec<String> = out
            .iter()
            .map(|f| serde_json::from_slice::<serde_json::Value>(f).unwrap()["position"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(positions, ["e-1-2", "e-1-4", "e-1-5", "e-1-6"]);
    }

    #[test]
    fn too_many_pending_topics_close_the_connection() {
        let hub = Hub::new(2, 10);
        let c = hub.open(0).unwrap();
        let f = Bytes::from_static(b"x");
        assert_eq!(c.push(&topic("a"), &f), Pushed::Queued);
        assert_eq!(c.push(&topic("b"), &f), Pushed::Queued);
        assert_eq!(c.push(&topic("c"), &f), Pushed::Overflow);
        assert_eq!(c.push(&topic("a"), &f), Pushed::Closed);
        let mut out = Vec::new();
        assert_eq!(c.take(&mut out).close, Some(CloseReason::TooSlow));
        assert!(out.is_empty(), "a too-slow connection's backlog is discarded");
    }

    #[test]
    fn hub_limits_connections_and_sweeps_stale_ones() {
        let hub = Hub::new(8, 2);
        let a = hub.open(100).unwrap();
        let b = hub.open(100).unwrap();
        assert!(hub.open(100).is_err());
        b.touch(200);
        assert_eq!(hub.sweep(150), 1);
        assert!(a.is_closed());
        let mut out = Vec::new();
        assert_eq!(b.take(&mut out), Work { ping: true, close: None });
        hub.remove(a.id());
        assert_eq!(hub.len(), 1);
        assert!(hub.get(b.id()).is_some());
    }

    /// Over the slices of one interval, every connection is checked once: the stale ones
    /// closed, the others asked for one ping.
    #[test]
    fn issue_17_keep_alive_slices_visit_each_connection_once() {
        let hub = Hub::new(8, 100);
        let conns: Vec<_> = (0..25).map(|_| hub.open(100).unwrap()).collect();
        for c in conns.iter().skip(1) {
            c.touch(200);
        }
        let mut closed = 0;
        let mut pinged = Vec::new();
        for slice in 0..7 {
            let before: Vec<bool> = conns.iter().map(|c| c.mailbox.lock().unwrap().ping_due).collect();
            closed += hub.sweep_slice(150, slice, 7);
            let now: Vec<bool> = conns.iter().map(|c| c.mailbox.lock().unwrap().ping_due).collect();
            let this: Vec<usize> = (0..conns.len()).filter(|&i| now[i] && !before[i]).collect();
            assert!(this.len() <= 4, "slice {slice} pinged {this:?}: a seventh of 25 at most");
            pinged.extend(this);
        }
        assert_eq!(closed, 1, "the silent one");
        assert!(conns[0].is_closed());
        pinged.sort_unstable();
        assert_eq!(pinged, (1..25).collect::<Vec<_>>(), "every other one pinged, once");
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_taken_once() {
        let hub = Hub::new(8, 2);
        let c = hub.open(0).unwrap();
        c.push(&topic("t"), &Bytes::from_static(b"early"));
        c.push(&topic("u"), &Bytes::from_static(b"second, no second wake"));
        tokio::time::timeout(std::time::Duration::from_secs(5), c.ready()).await.expect("the permit was kept");
        let mut out = Vec::new();
        c.take(&mut out);
        assert_eq!(out.len(), 2);
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), c.ready()).await;
        assert!(again.is_err(), "the permit is taken by one wait");
        c.close(CloseReason::Shutdown);
        tokio::time::timeout(std::time::Duration::from_secs(5), c.ready()).await.expect("close wakes");
    }

    #[tokio::test]
    async fn push_wakes_the_waiting_task() {
        let hub = Hub::new(8, 2);
        let c = hub.open(0).unwrap();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            c2.ready().await;
            let mut out = Vec::new();
            c2.take(&mut out);
            out
        });
        c.push(&topic("t"), &Bytes::from_static(b"hello"));
        assert_eq!(waiter.await.unwrap(), vec![Bytes::from_static(b"hello")]);
    }

    /// A socket that takes or refuses frames as told, and keeps what it took.
    #[derive(Debug, Default)]
    struct Socket {
        refuse: AtomicBool,
        took: Mutex<Vec<Bytes>>,
    }

    impl DirectSocket for Socket {
        fn try_write_frame(&self, frame: &[u8]) -> Wrote {
            if self.refuse.load(Ordering::Relaxed) {
                return Wrote::Nothing;
            }
            self.took.lock().unwrap().push(Bytes::copy_from_slice(frame));
            Wrote::All
        }
    }

    #[test]
    fn issue_17_direct_writes_only_when_nothing_waits_for_the_connection() {
        let hub = Hub::new(8, 2);
        let c = hub.open(0).unwrap();
        let socket = Arc::new(Socket::default());
        c.attach(socket.clone());
        let mut wire = [None, None];
        let m1 = PushMessage::new(crate::Notification { topic: topic("a"), sync_token: None, trigger: None });
        assert_eq!(c.deliver(&m1, &mut wire), Pushed::Sent);
        assert_eq!(socket.took.lock().unwrap().as_slice(), [ws_text_frame(&m1.ws_frame)]);
        assert_eq!(wire[0].as_ref(), Some(&ws_text_frame(&m1.ws_frame)), "encoded once for the fan-out");
        // The socket would block: the mailbox takes it, and what follows queues behind it.
        socket.refuse.store(true, Ordering::Relaxed);
        assert_eq!(c.deliver(&m1, &mut [None, None]), Pushed::Queued);
        socket.refuse.store(false, Ordering::Relaxed);
        assert_eq!(c.deliver(&m1, &mut [None, None]), Pushed::Coalesced);
        // Taken by the task: in flight until it settles.
        let mut out = Vec::new();
        c.take(&mut out);
        assert_eq!(c.deliver(&m1, &mut [None, None]), Pushed::Queued);
        c.take(&mut out);
        c.settle();
        assert_eq!(c.deliver(&m1, &mut [None, None]), Pushed::Sent);
        // An answer in flight holds it too; a closed connection lets the socket go.
        c.hold();
        assert_eq!(c.deliver(&m1, &mut [None, None]), Pushed::Queued);
        c.close(CloseReason::Shutdown);
        assert_eq!(Arc::strong_count(&socket), 1);
        assert_eq!(socket.took.lock().unwrap().len(), 2);
    }

    #[test]
    fn ws_text_frames_carry_their_length() {
        assert_eq!(&ws_text_frame(b"hi")[..], b"\x81\x02hi");
        let f = ws_text_frame(&[b'x'; 300]);
        assert_eq!(&f[..4], [0x81, 126, 1, 44]);
        let f = ws_text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&f[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(f.len(), 70_010);
    }
}
