//! The connection tasks: state shared with the main task, setup, frame reading.

use super::*;

// ---------------------------------------------------------------------------------------------
// State shared by the connection tasks and the main task.

/// Connection tasks run in `Run` (sustained latencies are buffered), `Drain` (flushed, and from
/// then on recorded at once) and `Stop` (flush, close, end).
pub(super) const PHASE_RUN: u8 = 0;
pub(super) const PHASE_DRAIN: u8 = 1;
pub(super) const PHASE_STOP: u8 = 2;

pub(super) struct Round {
    pub(super) start_ns: AtomicU64,
    pub(super) last_ns: AtomicU64,
    pub(super) hist: Histogram,
}

pub(super) struct Shared {
    pub(super) epoch: Instant,
    pub(super) phase: AtomicU8,
    pub(super) rounds: Box<[Round]>,
    /// Send instant (ns since `epoch`, 0 = not sent) of each sustained sequence number.
    pub(super) sent_ns: Box<[AtomicU64]>,
    pub(super) sustained: Histogram,
    pub(super) sustained_last_ns: AtomicU64,
    /// Notify frames whose sync_token this run did not send (or could not parse).
    pub(super) unknown_frames: AtomicU64,
    pub(super) open: AtomicU64,
    /// Why connections ended before the tool closed them.
    pub(super) ended: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub(super) fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    pub(super) fn ended(&self, why: String) {
        self.open.fetch_sub(1, Relaxed);
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
    }
}

/// The part of a `notify` frame the tool reads; every other field is skipped.
#[derive(Deserialize)]
pub(super) struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: &'a str,
    #[serde(default, borrow)]
    pub(super) sync_token: Option<&'a str>,
}

/// Per-task buffer of sustained-phase latencies.
pub(super) struct Local {
    pub(super) buf: Vec<u32>,
    /// Arrival of the oldest buffered latency.
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
    pub(super) direct: bool,
}

impl Local {
    pub(super) fn flush(&mut self, sh: &Shared) {
        if !self.buf.is_empty() {
            sh.sustained.record_all(&self.buf);
            self.buf.clear();
        }
        if self.last_ns > 0 {
            sh.sustained_last_ns.fetch_max(self.last_ns, Relaxed);
        }
    }

    pub(super) fn on_text(&mut self, sh: &Shared, text: &str) {
        let Ok(head) = serde_json::from_str::<FrameHead<'_>>(text) else {
            sh.unknown_frames.fetch_add(1, Relaxed);
            return;
        };
        if head.kind != "notify" {
            return;
        }
        let now = sh.now_ns();
        let token = head.sync_token.unwrap_or("");
        if let Some(seq) = token.strip_prefix('S').and_then(|s| s.parse::<usize>().ok()) {
            let sent = sh.sent_ns.get(seq).map_or(0, |s| s.load(Relaxed));
            if sent == 0 {
                sh.unknown_frames.fetch_add(1, Relaxed);
                return;
            }
            let us = now.saturating_sub(sent) / 1000;
            self.last_ns = now;
            if self.direct {
                sh.sustained.record(us);
                sh.sustained_last_ns.fetch_max(now, Relaxed);
            } else {
                if self.buf.capacity() == 0 {
                    self.buf.reserve_exact(LOCAL_BATCH);
                }
                if self.buf.is_empty() {
                    self.first_ns = now;
                }
                self.buf.push(us.min(u64::from(u32::MAX)) as u32);
                // Merge when the buffer is full, or holds a sample older than a second (so that
                // progress lines stay roughly current on connections that receive few frames).
                if self.buf.len() >= LOCAL_BATCH || now - self.first_ns >= LOCAL_MAX_AGE_NS {
                    self.flush(sh);
                }
            }
        } else if let Some(r) = token.strip_prefix('F').and_then(|s| s.parse::<usize>().ok()) {
            let Some(round) = sh.rounds.get(r) else {
                sh.unknown_frames.fetch_add(1, Relaxed);
                return;
            };
            let start = round.start_ns.load(Relaxed);
            round.hist.record(now.saturating_sub(start) / 1000);
            round.last_ns.fetch_max(now, Relaxed);
        } else {
            sh.unknown_frames.fetch_add(1, Relaxed);
        }
    }
}

pub(super) type Ws = WebSocketStream<TcpStream>;

/// Reads frames until the main task says stop or the connection ends.
pub(super) async fn serve(mut ws: Ws, sh: Arc<Shared>, wake: Arc<Notify>) {
    let mut local = Local { buf: Vec::new(), first_ns: 0, last_ns: 0, direct: false };
    loop {
        match sh.phase.load(Relaxed) {
            PHASE_STOP => {
                local.flush(&sh);
                // Close handshake, bounded: the server answers and closes the TCP connection.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    ws.close(None).await.ok()?;
                    while let Some(Ok(_)) = ws.next().await {}
                    Some(())
                })
                .await;
                return;
            }
            PHASE_DRAIN => {
                local.flush(&sh);
                local.direct = true;
            }
            _ => local.direct = false,
        }
        // The wake-up future lives across frames: it is registered once per phase change.
        let woken = wake.notified();
        tokio::pin!(woken);
        loop {
            tokio::select! {
                biased;
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => local.on_text(&sh, t.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        local.flush(&sh);
                        let why = match frame {
                            Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                            None => "closed by the server".to_owned(),
                        };
                        sh.ended(why);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        local.flush(&sh);
                        sh.ended(format!("read error: {e}"));
                        return;
                    }
                    None => {
                        local.flush(&sh);
                        sh.ended("connection ended without a close frame".into());
                        return;
                    }
                },
                () = &mut woken => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection setup.

/// Why a connection could not be set up.
#[derive(Debug)]
pub(super) enum SetupError {
    Unauthorized(String),
    Http(u16, String),
    Io(std::io::Error, &'static str),
    Timeout,
    Closed(String),
    Refused(String),
    Protocol(String),
}

impl SetupError {
    /// A short category for counting.
    pub(super) fn category(&self) -> String {
        match self {
            SetupError::Unauthorized(_) => "unauthorized (401)".into(),
            SetupError::Http(s, _) => format!("HTTP {s}"),
            SetupError::Io(e, step) => match e.raw_os_error() {
                Some(24) => "too many open files (EMFILE)".into(),
                Some(23) => "too many open files in the system (ENFILE)".into(),
                Some(99) => "no free local port (EADDRNOTAVAIL)".into(),
                Some(98) => "no free local port (EADDRINUSE)".into(),
                Some(111) => "connection refused".into(),
                _ => format!("{step}: {:?}", e.kind()),
            },
            SetupError::Timeout => "setup timed out".into(),
            SetupError::Closed(_) => "closed by the server during setup".into(),
            SetupError::Refused(_) => "subscribe refused".into(),
            SetupError::Protocol(_) => "protocol error".into(),
        }
    }

    /// Advice for the categories the user can act on.
    pub(super) fn hint(&self) -> Option<&'static str> {
        match self {
            SetupError::Io(e, _) if matches!(e.raw_os_error(), Some(23 | 24)) => Some(
                "this process ran out of file descriptors: raise the soft limit with `ulimit -n <n>` \
                 (up to `ulimit -Hn`) in this shell, or open fewer connections",
            ),
            SetupError::Io(e, _) if matches!(e.raw_os_error(), Some(98 | 99)) => Some(
                "the source address ran out of ephemeral ports: spread sockets with --source-addrs, \
                 or wait for TIME_WAIT sockets of an earlier run to expire",
            ),
            SetupError::Timeout => Some(
                "the server did not complete the handshake in time; if it holds many connections it \
                 may be out of file descriptors (raise `ulimit -n` in the server's shell)",
            ),
            _ => None,
        }
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Unauthorized(b) => write!(
                f,
                "GET /ws was refused with 401: the subscription token is missing or not accepted \
                 (--subscription-token[-file]); server said: {b}"
            ),
            SetupError::Http(s, b) => write!(f, "GET /ws answered {s}: {b}"),
            SetupError::Io(e, step) => write!(f, "{step}: {e}"),
            SetupError::Timeout => write!(f, "setup took longer than {SETUP_TIMEOUT:?}"),
            SetupError::Closed(why) => write!(f, "the server closed the connection: {why}"),
            SetupError::Refused(why) => write!(f, "the server refused the subscription: {why}"),
            SetupError::Protocol(why) => write!(f, "unexpected answer: {why}"),
        }
    }
}

impl From<tungstenite::Error> for SetupError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Http(resp) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                if status == 401 { SetupError::Unauthorized(body) } else { SetupError::Http(status, body) }
            }
            tungstenite::Error::Io(e) => SetupError::Io(e, "WebSocket I/O"),
            other => SetupError::Protocol(other.to_string()),
        }
    }
}

/// What every connection task needs to set itself up.
pub(super) struct ConnSetup {
    pub(super) server: SocketAddr,
    pub(super) source_addrs: Vec<IpAddr>,
    pub(super) request: Request,
    pub(super) ws_config: WebSocketConfig,
    pub(super) topics: Box<[String]>,
    /// A subscription grant per topic, when the Director requires them.
    pub(super) grants: Box<[Option<String>]>,
    pub(super) limit: Semaphore,
}

impl ConnSetup {
    pub(super) fn topic_of(&self, idx: usize) -> usize {
        idx % self.topics.len()
    }
}

/// Next text frame (server pings are answered by the library while reading).
pub(super) async fn next_text(ws: &mut Ws) -> Result<String, SetupError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(f))) => {
                return Err(SetupError::Closed(
                    f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default(),
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(SetupError::Closed("connection ended".into())),
        }
    }
}

/// Connects, upgrades, reads `hello`, subscribes over the socket and waits for `subscribed`.
pub(super) async fn open(idx: usize, cs: &ConnSetup) -> Result<Ws, SetupError> {
    let sock = match cs.server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| SetupError::Io(e, "socket"))?;
    if !cs.source_addrs.is_empty() {
        let src = cs.source_addrs[idx % cs.source_addrs.len()];
        sock.bind(SocketAddr::new(src, 0)).map_err(|e| SetupError::Io(e, "bind"))?;
    }
    let stream = sock.connect(cs.server).await.map_err(|e| SetupError::Io(e, "connect"))?;
    let _ = stream.set_nodelay(true);
    let mut req = cs.request.clone();
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&generate_key()).expect("a generated key is a valid header"),
    );
    let (mut ws, _resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(cs.ws_config)).await?;
    let hello = next_text(&mut ws).await?;
    match serde_json::from_str::<ServerFrame>(&hello) {
        Ok(ServerFrame::Hello { version, .. }) if version == PROTOCOL_VERSION => {}
        _ => return Err(SetupError::Protocol(format!("expected hello, got {hello}"))),
    }
    let topic = cs.topics[cs.topic_of(idx)].clone();
    let grant = cs.grants[cs.topic_of(idx)].clone();
    let frame = serde_json::to_string(&ClientFrame::Subscribe { id: None, topic, expires: None, grant, since: None })
        .expect("a frame always serializes");
    ws.send(Message::text(frame)).await?;
    loop {
        let text = next_text(&mut ws).await?;
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::Subscribed { .. }) => return Ok(ws),
            Ok(ServerFrame::Error { error, message, .. }) => {
                return Err(SetupError::Refused(format!("{error}: {message}")));
            }
            // Other frames (including kinds newer than this tool) are not the answer.
            Ok(_) | Err(_) => {}
        }
    }
}

/// Whether connection `idx` of `connections` is one of the last `stalled`, which stop reading
/// once subscribed.
pub(super) fn is_stalled(idx: usize, connections: u32, stalled: u32) -> bool {
    idx >= connections.saturating_sub(stalled) as usize
}

/// A stalled connection: holds its socket without reading until the main task says stop, then
/// drops it (no close handshake: the server's frames may fill both socket buffers).
async fn stall(ws: Ws, sh: Arc<Shared>, wake: Arc<Notify>) {
    loop {
        let woken = wake.notified();
        if sh.phase.load(Relaxed) == PHASE_STOP {
            break;
        }
        woken.await;
    }
    drop(ws);
}

/// One connection: set up (limited by the semaphore), report its index, then read until told
/// to stop (or, when `stalled`, hold the socket without reading).
pub(super) async fn connection(
    idx: usize,
    stalled: bool,
    cs: Arc<ConnSetup>,
    sh: Arc<Shared>,
    wake: Arc<Notify>,
    results: mpsc::Sender<Result<usize, SetupError>>,
) {
    let setup = {
        let _permit = cs.limit.acquire().await;
        tokio::time::timeout(SETUP_TIMEOUT, open(idx, &cs)).await.unwrap_or(Err(SetupError::Timeout))
    };
    match setup {
        Ok(ws) => {
            sh.open.fetch_add(1, Relaxed);
            let _ = results.send(Ok(idx)).await;
            drop(results);
            if stalled {
                stall(ws, sh, wake).await;
            } else {
                serve(ws, sh, wake).await;
            }
        }
        Err(e) => {
            let _ = results.send(Err(e)).await;
        }
    }
}
