//! Server-Sent Events streams (`GET /events`, `docs/protocol.md` §4.5): [`run`] moves what a
//! connection's mailbox holds into the response body. The stream is a connection of the hub
//! like a WebSocket (same queue, coalescing, limits and keep-alive rounds), written as SSE.
//!
//! One task per stream writes into a channel of one chunk that the response body reads: a
//! client that stops reading leaves the chunk unread, and the task gives up after
//! `websocket.write_timeout_secs`, as for a WebSocket. A stream has no closing handshake: it
//! just ends, and the browser reconnects (after `retry:`) with its `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use davpush_core::live::{CloseReason, Connection};
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::state::AppState;

/// A comment line that keeps proxies and the browser from timing the stream out.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Serves `conn` (subscribed, its replay queued) until it closes, the client goes away or its
/// subscriptions expire (at `expires`, unix seconds: the browser then reconnects and subscribes
/// again); `first` is written first. Returns the response body.
pub(crate) fn run(
    conn: Arc<Connection>,
    st: AppState,
    first: String,
    expires: i64,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let metrics = st.service.metrics().clone();
    metrics.ws_connections.inc();
    tokio::spawn(async move {
        let reason = serve(&conn, &st, &tx, Bytes::from(first), expires).await;
        conn.close(CloseReason::Shutdown);
        st.service.connection_closed(&conn);
        metrics.ws_closed.get_or_create(&davpush_core::metrics::ReasonLabel { reason }).inc();
        drop(tx);
        st.hub.remove(conn.id());
        metrics.ws_connections.dec();
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) })
}

/// Why a stream ended (the `reason` of `davpush_websocket_closed_total`).
async fn serve(conn: &Connection, st: &AppState, tx: &mpsc::Sender<Bytes>, first: Bytes, expires: i64) -> &'static str {
    let write_timeout = Duration::from_secs(st.config.websocket.write_timeout_secs);
    if let Err(reason) = send(tx, first, write_timeout).await {
        return reason;
    }
    let left = (expires - davpush_core::unix_now()).clamp(0, 366 * 86_400) as u64;
    let expiry = tokio::time::Instant::now() + Duration::from_secs(left);
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = conn.ready() => {
                let work = conn.take(&mut frames);
                let n = frames.len() as u64;
                let mut chunk = BytesMut::new();
                for f in frames.drain(..) {
                    chunk.extend_from_slice(&f);
                }
                if work.ping {
                    chunk.extend_from_slice(KEEP_ALIVE);
                }
                if !chunk.is_empty() {
                    if let Err(reason) = send(tx, chunk.freeze(), write_timeout).await {
                        return reason;
                    }
                    st.service.metrics().ws_sent.inc_by(n);
                    // The client cannot answer pings: a stream whose writes go through is alive.
                    conn.touch(davpush_core::unix_now());
                }
                if let Some(reason) = work.close {
                    return match reason {
                        CloseReason::TooSlow => "too_slow",
                        CloseReason::Timeout => "timeout",
                        CloseReason::Shutdown => "shutdown",
                    };
                }
            }
            () = tx.closed() => return "client_gone",
            () = tokio::time::sleep_until(expiry) => return "expired",
        }
    }
}

async fn send(tx: &mpsc::Sender<Bytes>, chunk: Bytes, timeout: Duration) -> Result<(), &'static str> {
    match tokio::time::timeout(timeout, tx.send(chunk)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("client_gone"),
        Err(_) => Err("write_timeout"),
    }
}
