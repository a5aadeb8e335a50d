//! WebSocket connections: [`run`] moves frames between the socket and the routing core;
//! [`session`] decides what a client frame means (message in, reply out) and knows nothing of
//! sockets.
//!
//! One task per connection, no reader/writer split and no channel: the task waits on either
//! the socket or the connection's mailbox. Keep-alive pings are requested by one sweeper for all
//! connections (see `app.rs`) instead of a timer per connection.

pub(crate) mod session;

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
pub(crate) async fn run(socket: WebSocket, st: AppState) {
    let conn = match st.hub.open(davpush_core::unix_now()) {
        Ok(c) => c,
        Err(full) => {
            let mut socket = socket;
            let frame = CloseFrame { code: 1013, reason: Utf8Bytes::from(full.to_string()) };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
    };
    let metrics = st.service.metrics().clone();
    metrics.ws_connections.inc();
    let reason = serve(socket, &conn, &st).await;
    conn.close(CloseReason::Shutdown);
    st.service.connection_closed(&conn);
    st.hub.remove(conn.id());
    metrics.ws_connections.dec();
    metrics.ws_closed.get_or_create(&davpush_core::metrics::ReasonLabel { reason }).inc();
}

async fn serve(mut socket: WebSocket, conn: &Arc<Connection>, st: &AppState) -> &'static str {
    let cfg = &st.config.websocket;
    let write_timeout = Duration::from_secs(cfg.write_timeout_secs);
    let hello = ServerFrame::Hello {
        version: PROTOCOL_VERSION,
        connection_id: conn.id().to_owned(),
        ping_interval: cfg.ping_interval_secs,
    };
    if socket.send(text(&hello)).await.is_err() {
        return "client_gone";
    }
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = conn.ready() => {
                let work = conn.take(&mut frames);
                let n = frames.len() as u64;
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
                match tokio::time::timeout(write_timeout, write).await {
                    Ok(Ok(())) => st.service.metrics().delivered(davpush_core::ServiceKind::WebSocket, "sent", n),
                    Ok(Err(_)) => return "client_gone",
                    Err(_) => return "write_timeout",
                }
                frames = Vec::new();
                if let Some(reason) = work.close {
                    return reason_label(reason);
                }
            }
            msg = socket.next() => {
                let Some(Ok(msg)) = msg else { return "client_gone" };
                conn.touch(davpush_core::unix_now());
                let reply = match msg {
                    Message::Text(t) => Some(session::handle(st, conn, t.as_str()).await),
                    Message::Binary(_) => Some(session::error(None, "unsupported_frame", "binary frames are not part of the protocol; send JSON text frames")),
                    Message::Close(_) => return "client_closed",
                    Message::Ping(_) | Message::Pong(_) => None,
                };
                if let Some(reply) = reply {
                    match tokio::time::timeout(write_timeout, socket.send(text(&reply))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return "client_gone",
                        Err(_) => return "write_timeout",
                    }
                }
            }
        }
    }
}
