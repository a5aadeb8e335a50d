//! WebSocket connections: [`run`] moves frames between the socket and the routing core;
//! [`davpush_core::session`] decides what a client frame means (frame in, frame out) and knows
//! nothing of sockets. What is left here is the transport: pings, timeouts and close codes.
//!
//! One task per connection, no reader/writer split and no channel: the task waits on either
//! the socket or the connection's mailbox. Keep-alive pings are requested by one sweeper for all
//! connections (see `app.rs`) instead of a timer per connection.
//!
//! Every end the server chooses is a closing handshake (RFC 6455 §7.1.1): a close frame with a
//! code saying why, then up to `write_timeout_secs` for the client's close frame, and only then
//! the TCP connection is dropped (by the server first, as §7.1.1 asks). A client's close frame is
//! answered with one carrying its code (§5.5.1).
//!
//! Once the `hello` is written the task attaches its socket to the connection: from then on the
//! fan-out writes notifications straight into it whenever nothing waits in the mailbox and
//! nothing of the task is in flight ([`gate`] keeps the frames of both writers whole). The task
//! marks what it puts in flight: the frames it took, and an answer from the moment a client frame
//! is read until its reply is written (so that a `subscribe` reply, and what a `since` replays,
//! come before the live notifications that follow them).

pub(crate) mod gate;

/// Upper bound for the size of one connection's task (its future), checked in debug builds:
/// the task is held by every idle connection, so growth shows directly in memory per connection.
pub(crate) const MAX_TASK_SIZE: usize = 1024;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use davpush_core::live::{CloseReason, Connection};
use davpush_core::session::{self, Inbound};
use davpush_proto::ServerFrame;
use futures_util::{Sink, SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::state::AppState;

/// A connection's WebSocket.
type WebSocket = WebSocketStream<gate::Io>;

/// Why the server closes a connection: the close code (RFC 6455 §7.4.1), its reason text and
/// the `reason` label of `davpush_websocket_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Decided by the routing core (too slow, silent, shutdown).
    Core(CloseReason),
    /// A write did not complete within the write timeout: the client stopped reading.
    WriteTimeout,
    /// A client frame or message over `websocket.max_message_bytes`.
    TooBig,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// Any other violation of RFC 6455 (reserved bits, stray continuation, ...).
    ProtocolError,
    /// The server's connection limit is reached.
    Full,
}

impl Closing {
    fn code(self) -> u16 {
        match self {
            Closing::Core(CloseReason::TooSlow) | Closing::WriteTimeout | Closing::Full => 1013,
            Closing::Core(CloseReason::Timeout | CloseReason::Shutdown) => 1001,
            Closing::TooBig => 1009,
            Closing::InvalidUtf8 => 1007,
            Closing::ProtocolError => 1002,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Closing::Core(CloseReason::TooSlow) => "too slow: notifications were not read in time",
            Closing::WriteTimeout => "too slow: a write did not complete in time",
            Closing::Core(CloseReason::Timeout) => "no pong or message for two ping intervals",
            Closing::Core(CloseReason::Shutdown) => "server shutting down",
            Closing::TooBig => "message too big",
            Closing::InvalidUtf8 => "text frames must be UTF-8",
            Closing::ProtocolError => "WebSocket protocol error",
            Closing::Full => "the server has reached its WebSocket connection limit",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Closing::Core(CloseReason::TooSlow) => "too_slow",
            Closing::Core(CloseReason::Timeout) => "timeout",
            Closing::Core(CloseReason::Shutdown) => "shutdown",
            Closing::WriteTimeout => "write_timeout",
            Closing::TooBig => "too_big",
            Closing::InvalidUtf8 => "invalid_utf8",
            Closing::ProtocolError => "protocol_error",
            Closing::Full => "full",
        }
    }

    fn frame(self) -> CloseFrame {
        CloseFrame { code: self.code().into(), reason: Utf8Bytes::from_static(self.text()) }
    }
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Nothing more can or need be sent (the client went away, or its close was answered).
    Done(&'static str),
    /// The server closes: send a close frame and wait for the client's.
    Close(Closing),
}

/// What a read error means: a broken client frame is answered with a close code, a vanished
/// client with nothing.
fn read_error(e: &WsError) -> End {
    match e {
        WsError::Capacity(_) => End::Close(Closing::TooBig),
        WsError::Utf8(_) => End::Close(Closing::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Done("client_gone"),
        WsError::Protocol(_) => End::Close(Closing::ProtocolError),
        _ => End::Done("client_gone"),
    }
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(frame).expect("frames always serialize")))
}

/// Serves the connection `on_upgrade` yields once the upgrade response is sent.
///
/// The task lives as long as the connection: no value is kept in a named local across the
/// connection's await (a moved-from local keeps its place in the future, doubling the size of
/// what it held), and the size of [`run`]'s future is checked in debug builds.
pub(crate) async fn accept(on_upgrade: hyper::upgrade::OnUpgrade, config: WebSocketConfig, st: AppState) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let (io, gate) = gate::Io::new(upgraded);
    sized(run(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await, gate, st)).await
}

/// `task`, checked in debug builds not to have grown past [`MAX_TASK_SIZE`].
fn sized<F: std::future::Future>(task: F) -> F {
    debug_assert!(std::mem::size_of_val(&task) <= MAX_TASK_SIZE, "connection task grew");
    task
}

/// Serves one upgraded connection until it closes.
///
/// Written as a plain function returning an `async move` block that uses its captured socket in
/// place, with the loop taking `&mut WebSocket`: an `async fn` taking the socket by value would
/// keep it twice in its state (once as argument, once as local). This future lives as long as
/// the connection, tens of thousands of times over: everything that is only needed while
/// writing, answering a request or closing is boxed, so that an idle connection's task holds
/// little more than the socket (see [`MAX_TASK_SIZE`]).
#[allow(clippy::manual_async_fn)] // deliberate: see above
/// `gate` is the socket's write gate, if it has one: the fan-out may then write to it directly.
pub(crate) fn run(
    mut socket: WebSocket,
    gate: Option<Arc<gate::Gate>>,
    st: AppState,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let write_timeout = Duration::from_secs(st.config.websocket.write_timeout_secs);
        let conn = match st.hub.open(davpush_core::unix_now()) {
            Ok(c) => c,
            Err(_) => {
                Box::pin(close_handshake(&mut socket, Closing::Full, write_timeout)).await;
                return;
            }
        };
        let metrics = st.service.metrics().clone();
        metrics.ws_connections.inc();
        let end = serve(&mut socket, &conn, gate, &st, write_timeout).await;
        // Nothing more is queued for a closing connection, and its subscriptions end now, not
        // when the client has taken its close frame; it is counted as closed now too. It stays
        // in the hub (and counts against the connection limit, and shutdown waits for it) until
        // the closing handshake is over.
        conn.close(CloseReason::Shutdown);
        st.service.connection_closed(&conn);
        let reason = match end {
            End::Done(reason) => reason,
            End::Close(closing) => closing.label(),
        };
        metrics.ws_closed.get_or_create(&davpush_core::metrics::ReasonLabel { reason }).inc();
        if let End::Close(closing) = end {
            Box::pin(close_handshake(&mut socket, closing, write_timeout)).await;
        }
        st.hub.remove(conn.id());
        metrics.ws_connections.dec();
    }
}

async fn serve(
    socket: &mut WebSocket,
    conn: &Arc<Connection>,
    gate: Option<Arc<gate::Gate>>,
    st: &AppState,
    write_timeout: Duration,
) -> End {
    {
        let head = Box::pin(st.service.history_head()).await;
        let hello = text(&session::hello(conn, st.config.websocket.ping_interval_secs, head.as_ref()));
        if let Err(end) = Box::pin(send_one(socket, hello, write_timeout)).await {
            return end;
        }
    }
    if let Some(gate) = gate {
        conn.attach(gate);
    }
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = conn.ready() => {
                let mut work = conn.take(&mut frames);
                let n = frames.len() as u64;
                // Usually the socket takes the burst at once: written without arming the write
                // timeout (a timer entry per burst) or boxing the writing future.
                let now = std::future::poll_fn(|cx| Poll::Ready(write_now(socket, &mut frames, &mut work, cx))).await;
                let written = match now {
                    Poll::Ready(Ok(())) => Ok(()),
                    Poll::Ready(Err(_)) => Err(End::Done("client_gone")),
                    Poll::Pending => Box::pin(write_burst(socket, conn, &mut frames, work, write_timeout)).await,
                };
                match written {
                    Ok(()) if n > 0 => {
                        conn.settle();
                        st.service.metrics().ws_sent.inc_by(n);
                    }
                    Ok(()) => {}
                    Err(end) => return end,
                }
                if frames.capacity() > 4 {
                    // A burst is over; an idle connection keeps no large buffer.
                    frames = Vec::new();
                }
                if let Some(reason) = work.close {
                    return End::Close(Closing::Core(reason));
                }
            }
            msg = socket.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => return read_error(&e),
                    None => return End::Done("client_gone"),
                };
                conn.touch(davpush_core::unix_now());
                if matches!(msg, Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) {
                    // A pong is queued by the library and goes out with the next write.
                    continue;
                }
                conn.hold();
                if let Err(end) = Box::pin(answer(socket, conn, st, msg, write_timeout)).await {
                    return end;
                }
                conn.settle();
            }
        }
    }
}

/// Handles one client frame and writes the reply, if any.
async fn answer(
    socket: &mut WebSocket,
    conn: &Arc<Connection>,
    st: &AppState,
    msg: Message,
    write_timeout: Duration,
) -> Result<(), End> {
    let frame = match &msg {
        Message::Text(t) => Inbound::Text(t.as_str()),
        Message::Binary(_) => Inbound::Binary,
        Message::Close(_) => {
            // The library has queued the answering close frame (same code, RFC 6455 §5.5.1);
            // flushing sends it and ends the connection. Nothing may follow it: the fan-out
            // stops writing to this socket first.
            conn.close(CloseReason::Shutdown);
            let _ = tokio::time::timeout(write_timeout, socket.flush()).await;
            return Err(End::Done("client_closed"));
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
    };
    let reply = session::handle(&st.service, conn, frame, davpush_core::unix_now()).await;
    send_one(socket, text(&reply), write_timeout).await
}

/// Sends one frame within the write timeout.
async fn send_one(socket: &mut WebSocket, msg: Message, timeout: Duration) -> Result<(), End> {
    match tokio::time::timeout(timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Done("client_gone")),
        Err(_) => Err(End::Close(Closing::WriteTimeout)),
    }
}

/// Writes the queued frames (and a ping if due) as far as the socket takes them without
/// waiting: `Ready(Ok)` when all are written and flushed; `Pending` when the socket would block,
/// with the frames not yet handed to the library left in `frames` (and `work.ping` still set if
/// the ping was not), for [`write_burst`] to finish within the write timeout.
fn write_now(
    socket: &mut WebSocket,
    frames: &mut Vec<Bytes>,
    work: &mut davpush_core::live::Work,
    cx: &mut Context<'_>,
) -> Poll<Result<(), WsError>> {
    let mut s = Pin::new(socket);
    let mut handed = 0;
    let result = loop {
        if handed == frames.len() && !work.ping {
            break s.as_mut().poll_flush(cx);
        }
        match s.as_mut().poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            other => break other,
        }
        let msg = if handed < frames.len() {
            let f = std::mem::take(&mut frames[handed]);
            handed += 1;
            // The frame is JSON we serialized ourselves: valid UTF-8; the check is cheap.
            Message::Text(Utf8Bytes::try_from(f).expect("frames are UTF-8"))
        } else {
            work.ping = false;
            Message::Ping(Bytes::new())
        };
        if let Err(e) = s.as_mut().start_send(msg) {
            break Poll::Ready(Err(e));
        }
    };
    frames.drain(..handed);
    result
}

/// Writes the queued frames (and a ping if due) with one flush, within `timeout`. A connection
/// closed meanwhile (its mailbox overflowed while the socket was full) ends at once rather than
/// when the timeout runs out.
async fn write_burst(
    socket: &mut WebSocket,
    conn: &Connection,
    frames: &mut Vec<Bytes>,
    work: davpush_core::live::Work,
    timeout: Duration,
) -> Result<(), End> {
    let write = async {
        for f in frames.drain(..) {
            // The frame is JSON we serialized ourselves: valid UTF-8; the check is cheap.
            let t = Utf8Bytes::try_from(f).expect("frames are UTF-8");
            socket.feed(Message::Text(t)).await?;
        }
        if work.ping {
            socket.feed(Message::Ping(Bytes::new())).await?;
        }
        socket.flush().await
    };
    let write = tokio::time::timeout(timeout, write);
    tokio::pin!(write);
    let mut woken = false;
    let written = loop {
        tokio::select! {
            biased;
            r = &mut write => break r,
            () = conn.ready() => match conn.closed_for() {
                Some(reason) => return Err(End::Close(Closing::Core(reason))),
                // Frames or a ping for after this burst: keep the wake-up for the task's loop.
                None => woken = true,
            },
        }
    };
    if woken {
        conn.wake();
    }
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Done("client_gone")),
        Err(_) => Err(End::Close(Closing::WriteTimeout)),
    }
}

/// The server's side of the closing handshake (RFC 6455 §7.1.1), within `timeout` in all: sends
/// the close frame after whatever is still buffered (a client that stopped reading gets every
/// frame whole and then the close, if it reads again in time), then reads until the client's
/// close frame. Frames the client sent meanwhile are discarded. After a broken client frame the
/// socket cannot be read any more and this ends once the close frame is written.
async fn close_handshake(socket: &mut WebSocket, closing: Closing, timeout: Duration) {
    let handshake = async {
        if socket.send(Message::Close(Some(closing.frame()))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = socket.next().await {}
    };
    if tokio::time::timeout(timeout, handshake).await.is_err() {
        tracing::debug!(code = closing.code(), "WebSocket closing handshake not completed in time");
    }
}
