//! WebSocket connections: [`run`] moves frames between the socket and the routing core;
//! [`session`] decides what a client frame means (message in, reply out) and knows nothing of
//! sockets.
//!
//! One task per connection, no reader/writer split and no channel: the task waits on either
//! the socket or the connection's mailbox. Keep-alive pings are requested by one sweeper for all
//! connections (see `app.rs`) instead of a timer per connection.

pub(crate) mod session;

/// Upper bound for the size of one connection's task (its future), checked in debug builds:
/// the task is held by every idle connection, so growth shows directly in memory per connection.
pub(crate) const MAX_TASK_SIZE: usize = 1024;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use davpush_core::live::{CloseReason, Connection};
use davpush_proto::{PROTOCOL_VERSION, ServerFrame};
use futures_util::{SinkExt, StreamExt};

use crate::app::AppState;

/// Close codes (RFC 6455 §7.4.1) the server uses.
fn close_frame(reason: CloseReason) -> CloseFrame {
    let (code, text) = match reason {
        CloseReason::TooSlow => (1013, "too slow: notifications were not read in time"),
        CloseReason::Timeout => (1001, "no pong or message for two ping intervals"),
        CloseReason::Shutdown => (1001, "server shutting down"),
    };
    CloseFrame { code, reason: Utf8Bytes::from_static(text) }
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(frame).expect("frames always serialize")))
}

fn reason_label(r: CloseReason) -> &'static str {
    match r {
        CloseReason::TooSlow => "too_slow",
        CloseReason::Timeout => "timeout",
        CloseReason::Shutdown => "shutdown",
    }
}

/// Serves one upgraded connection until it closes.
///
/// Written as a plain function returning an `async move` block that uses its captured socket in
/// place, with the loop taking `&mut WebSocket`: an `async fn` taking the socket by value would
/// keep it twice in its state (once as argument, once as local). This future lives as long as
/// the connection, tens of thousands of times over: everything that is only needed while
/// writing or answering a request is boxed, so that an idle connection's task holds little more
/// than the socket (see [`MAX_TASK_SIZE`]).
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub(crate) fn run(mut socket: WebSocket, st: AppState) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let write_timeout = Duration::from_secs(st.config.websocket.write_timeout_secs);
        let conn = match st.hub.open(davpush_core::unix_now()) {
            Ok(c) => c,
            Err(full) => {
                let frame = CloseFrame { code: 1013, reason: Utf8Bytes::from(full.to_string()) };
                let _ = Box::pin(send_one(&mut socket, Message::Close(Some(frame)), write_timeout)).await;
                return;
            }
        };
        let metrics = st.service.metrics().clone();
        metrics.ws_connections.inc();
        let reason = serve(&mut socket, &conn, &st, write_timeout).await;
        conn.close(CloseReason::Shutdown);
        st.service.connection_closed(&conn);
        st.hub.remove(conn.id());
        metrics.ws_connections.dec();
        metrics.ws_closed.get_or_create(&davpush_core::metrics::ReasonLabel { reason }).inc();
    }
}

async fn serve(socket: &mut WebSocket, conn: &Arc<Connection>, st: &AppState, write_timeout: Duration) -> &'static str {
    {
        let hello = text(&ServerFrame::Hello {
            version: PROTOCOL_VERSION,
            connection_id: conn.id().to_owned(),
            ping_interval: st.config.websocket.ping_interval_secs,
        });
        if let Err(reason) = Box::pin(send_one(socket, hello, write_timeout)).await {
            return reason;
        }
    }
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = conn.ready() => {
                let work = conn.take(&mut frames);
                let n = frames.len() as u64;
                match Box::pin(write_burst(socket, &mut frames, work, write_timeout)).await {
                    Ok(()) => {
                        st.service.metrics().ws_sent.inc_by(n);
                    }
                    Err(reason) => return reason,
                }
                frames = Vec::new();
                if let Some(reason) = work.close {
                    return reason_label(reason);
                }
            }
            msg = socket.next() => {
                let Some(Ok(msg)) = msg else { return "client_gone" };
                conn.touch(davpush_core::unix_now());
                if let Err(reason) = Box::pin(answer(socket, conn, st, msg, write_timeout)).await {
                    return reason;
                }
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
) -> Result<(), &'static str> {
    let reply = match msg {
        Message::Text(t) => session::handle(st, conn, t.as_str()).await,
        Message::Binary(_) => session::error(
            None,
            "unsupported_frame",
            "binary frames are not part of the protocol; send JSON text frames",
        ),
        Message::Close(_) => return Err("client_closed"),
        Message::Ping(_) | Message::Pong(_) => return Ok(()),
    };
    send_one(socket, text(&reply), write_timeout).await
}

/// Sends one frame within the write timeout.
async fn send_one(socket: &mut WebSocket, msg: Message, timeout: Duration) -> Result<(), &'static str> {
    match tokio::time::timeout(timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("client_gone"),
        Err(_) => Err("write_timeout"),
    }
}

/// Writes the queued frames (and a ping or close frame if due) with one flush.
async fn write_burst(
    socket: &mut WebSocket,
    frames: &mut Vec<Bytes>,
    work: davpush_core::live::Work,
    timeout: Duration,
) -> Result<(), &'static str> {
    let write = async {
        for f in frames.drain(..) {
            // The frame is JSON we serialized ourselves: valid UTF-8; the check is cheap.
            let t = Utf8Bytes::try_from(f).expect("frames are UTF-8");
            socket.feed(Message::Text(t)).await?;
        }
        if work.ping {
            socket.feed(Message::Ping(Bytes::new())).await?;
        }
        if let Some(reason) = work.close {
            socket.feed(Message::Close(Some(close_frame(reason)))).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("client_gone"),
        Err(_) => Err("write_timeout"),
    }
}
