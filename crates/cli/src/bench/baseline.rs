//! `davpush bench baseline-server`: the naive broadcast server that `davpush bench fanout`
//! measures the Director against (issue 17). It speaks just enough of the Director's protocol for
//! the load tool — `hello`, `subscribe`/`subscribed`, `ping`/`pong` over `GET /ws`, `POST /notify`,
//! `GET /metrics` (resident memory, connections) and `GET /readyz` — with the textbook design:
//! one [`broadcast`] channel per topic, and every subscribed connection's task woken through it
//! to write the frame itself, one write each. No mailbox, no coalescing, no history, no write
//! timeout, no keep-alive, no authentication: the cost of a fan-out and nothing else.
//!
//! It uses the same HTTP stack (axum over hyper, tungstenite underneath) and the same WebSocket
//! buffer settings as the Director, so that the two differ in their fan-out machinery only.
//! It listens on loopback addresses only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use davpush_proto::{
    ClientFrame, NotifyRequest, NotifyResponse, NotifyTopic, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame,
};
use tokio::sync::broadcast;

/// Options of `davpush bench baseline-server`.
#[derive(Debug, clap::Args)]
pub(crate) struct BaselineArgs {
    /// Where to listen (a loopback address; port 0 picks a free port, logged on stderr as
    /// `listening addr=…`).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Frames a slow connection may fall behind before it skips some (the channel's capacity).
const CHANNEL_CAPACITY: usize = 16;

#[derive(Default)]
struct Baseline {
    topics: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    connections: AtomicU64,
    next_id: AtomicU64,
}

impl Baseline {
    fn channel(&self, topic: &str) -> broadcast::Sender<Utf8Bytes> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.entry(topic.to_owned()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).clone()
    }
}

pub(crate) async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("the baseline server listens on loopback addresses only, not {}", args.listen);
    }
    let st = Arc::new(Baseline::default());
    let app = axum::Router::new()
        .route("/ws", get(upgrade))
        .route("/notify", post(notify))
        .route("/metrics", get(metrics))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(st);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot bind {}", args.listen))?;
    eprintln!("davpush bench baseline-server: listening addr={}", listener.local_addr()?);
    axum::serve(listener, app).await.context("the baseline server failed")
}

async fn upgrade(State(st): State<Arc<Baseline>>, ws: WebSocketUpgrade) -> Response {
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(128)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| connection(socket, st))
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(frame).expect("frames always serialize")))
}

async fn next_frame(rx: &mut Option<broadcast::Receiver<Utf8Bytes>>) -> Result<Utf8Bytes, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One connection: answers its frames and writes every frame broadcast on its topic.
async fn connection(mut socket: WebSocket, st: Arc<Baseline>) {
    st.connections.fetch_add(1, Relaxed);
    let id = st.next_id.fetch_add(1, Relaxed);
    let hello = ServerFrame::Hello {
        version: PROTOCOL_VERSION,
        connection_id: format!("baseline-{id}"),
        ping_interval: 30,
        position: None,
    };
    // One topic per connection (a new subscribe replaces it): all the load tool needs.
    let mut rx: Option<broadcast::Receiver<Utf8Bytes>> = None;
    let mut open = socket.send(text(&hello)).await.is_ok();
    while open {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let reply = answer(&st, t.as_str(), &mut rx);
                    open = socket.send(text(&reply)).await.is_ok();
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => open = false,
                Some(Ok(_)) => {}
            },
            frame = next_frame(&mut rx) => match frame {
                Ok(f) => open = socket.send(Message::Text(f)).await.is_ok(),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => rx = None,
            },
        }
    }
    st.connections.fetch_sub(1, Relaxed);
}

fn answer(st: &Baseline, text: &str, rx: &mut Option<broadcast::Receiver<Utf8Bytes>>) -> ServerFrame {
    let error = |id, error: &str, message: String| ServerFrame::Error { id, error: error.into(), message };
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Subscribe { id, topic, .. }) => {
            *rx = Some(st.channel(&topic).subscribe());
            ServerFrame::Subscribed { id, subscription_id: topic.clone(), topic, expires: 0 }
        }
        Ok(ClientFrame::Ping { id }) => ServerFrame::Pong { id },
        Ok(_) => error(None, "not_supported", "the baseline server knows subscribe and ping only".into()),
        Err(e) => error(None, "invalid_json", e.to_string()),
    }
}

async fn notify(State(st): State<Arc<Baseline>>, body: Bytes) -> Response {
    let req: NotifyRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let body = serde_json::json!({"error": "invalid_json", "message": e.to_string()});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let mut entries: Vec<(String, Option<String>)> = Vec::new();
    if let Some(t) = req.topic {
        entries.push((t, req.sync_token.clone()));
    }
    for t in req.topics.unwrap_or_default() {
        entries.push(match t {
            NotifyTopic::Plain(t) => (t, req.sync_token.clone()),
            NotifyTopic::Detailed(e) => (e.topic, e.sync_token.or_else(|| req.sync_token.clone())),
        });
    }
    let mut addressed = 0u64;
    for (topic, sync_token) in &entries {
        let channel = st.topics.lock().unwrap_or_else(|e| e.into_inner()).get(topic).cloned();
        let Some(channel) = channel else { continue };
        let frame = ServerFrame::Notify {
            topic: topic.clone(),
            sync_token: sync_token.clone(),
            trigger: req.trigger,
            position: None,
        };
        let frame = Utf8Bytes::from(serde_json::to_string(&frame).expect("frames always serialize"));
        addressed += channel.send(frame).unwrap_or(0) as u64;
    }
    let resp = NotifyResponse {
        topics: entries.len() as u64,
        addressed,
        services: [("websocket".to_owned(), addressed)].into(),
        unheard: Vec::new(),
        unheard_unknown: false,
    };
    axum::Json(resp).into_response()
}

async fn metrics(State(st): State<Arc<Baseline>>) -> String {
    let rss = super::cpu::rss(std::process::id()).unwrap_or(0);
    format!(
        "davpush_process_resident_memory_bytes {rss}\ndavpush_websocket_connections {}\n",
        st.connections.load(Relaxed)
    )
}
