//! A local push service (RFC 8030 endpoint) that records what it receives and answers with
//! scripted statuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One request the push service received.
#[derive(Debug, Clone)]
pub struct Captured {
    /// When it arrived.
    pub at: Instant,
    /// Its method.
    pub method: Method,
    /// Its path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Captured {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Script = Arc<Mutex<VecDeque<(u16, Option<&'static str>)>>>;

#[derive(Clone)]
struct Shared {
    script: Script,
    tx: mpsc::Sender<Captured>,
    hold: watch::Sender<bool>,
}

/// The local push service.
pub struct FakePush {
    /// Where it listens.
    pub addr: SocketAddr,
    script: Script,
    rx: mpsc::Receiver<Captured>,
    hold: watch::Sender<bool>,
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let _ = s.tx.send(Captured { at: Instant::now(), method, path: uri.path().to_owned(), headers, body }).await;
    // A hanging push service: recorded, then no answer until released.
    let _ = s.hold.subscribe().wait_for(|hold| !*hold).await;
    let (status, retry_after) = s.script.lock().unwrap().pop_front().unwrap_or((201, None));
    let mut h = HeaderMap::new();
    if let Some(r) = retry_after {
        h.insert("retry-after", r.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), h, "")
}

impl FakePush {
    /// Starts it on a free port.
    pub async fn start() -> FakePush {
        let (tx, rx) = mpsc::channel(1000);
        let script: Script = Arc::default();
        let hold = watch::Sender::new(false);
        let app =
            axum::Router::new().fallback(handle).with_state(Shared { script: script.clone(), tx, hold: hold.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakePush { addr, script, rx, hold }
    }

    /// While `true`, requests are recorded but not answered (a push service that hangs).
    pub fn hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// An endpoint URL of it.
    pub fn endpoint(&self, name: &str) -> String {
        format!("http://{}/push/{name}", self.addr)
    }

    /// The next answers, in order (then 201).
    pub fn answer(&self, answers: &[(u16, Option<&'static str>)]) {
        self.script.lock().unwrap().extend(answers.iter().copied());
    }

    /// The next request, within 10 s.
    pub async fn next(&mut self) -> Captured {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no push request within 10 s")
            .expect("fake push service stopped")
    }

    /// Asserts that no request arrives within `ms`.
    pub async fn assert_none(&mut self, ms: u64) {
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected push request to {}", c.path);
        }
    }
}
