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
    /// How the stalled connections ended (learned when the tool stops).
    pub(super) stalled_ended: Mutex<BTreeMap<String, u64>>,
    /// SO_RCVBUF in effect on the stalled connections (0: not set).
    pub(super) stalled_rcvbuf: AtomicU64,
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

    /// A text frame's payload: a `notify` frame's sync_token (found by byte search, no JSON
    /// parsing and no allocation) says which notification it is; other frames are skipped.
    pub(super) fn on_text(&mut self, sh: &Shared, payload: &[u8]) {
        let Some(token) = wire::notify_token(payload) else { return };
        let now = sh.now_ns();
        let (kind, number) = token.split_first().map_or((0, None), |(k, n)| (*k, wire::digits(n)));
        match (kind, number) {
            (b'S', Some(seq)) => {
                let sent = sh.sent_ns.get(seq).map_or(0, |s| s.load(Relaxed));
                if sent == 0 {
                    sh.unknown_frames.fetch_add(1, Relaxed);
                    return;
                }
                self.record(sh, now, now.saturating_sub(sent) / 1000);
            }
            (b'F', Some(r)) => {
                let Some(round) = sh.rounds.get(r) else {
                    sh.unknown_frames.fetch_add(1, Relaxed);
                    return;
                };
                let start = round.start_ns.load(Relaxed);
                round.hist.record(now.saturating_sub(start) / 1000);
                round.last_ns.fetch_max(now, Relaxed);
            }
            _ => {
                sh.unknown_frames.fetch_add(1, Relaxed);
            }
        }
    }

    /// One sustained-phase latency of `us` microseconds, read at `now`.
    fn record(&mut self, sh: &Shared, now: u64, us: u64) {
        self.last_ns = now;
        if self.direct {
            sh.sustained.record(us);
            sh.sustained_last_ns.fetch_max(now, Relaxed);
            return;
        }
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
}

/// A tokio-tungstenite client (the push-service bench's connections).
pub(super) type Ws = WebSocketStream<TcpStream>;

/// One load connection after its handshake: the raw socket and the lean frame reader
/// ([`wire`]).
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) reader: wire::Reader,
    masks: wire::Masks,
    /// Scratch for the client's own (masked) frames: pongs and the close.
    out: Vec<u8>,
}

/// `code reason` of a close frame's payload.
pub(super) fn close_reason(payload: &[u8]) -> String {
    match payload {
        [a, b, reason @ ..] => format!("{} {}", u16::from_be_bytes([*a, *b]), String::from_utf8_lossy(reason)),
        _ => String::new(),
    }
}

impl Conn {
    /// Writes one masked frame.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        self.masks.frame(opcode, payload, &mut self.out);
        self.stream.write_all(&self.out).await
    }

    /// Next text frame during setup (pings are answered).
    async fn next_text(&mut self) -> Result<String, SetupError> {
        loop {
            let head = match self.reader.fill_frame(&mut self.stream).await {
                Ok(Some(h)) => h,
                Ok(None) => return Err(SetupError::Closed("connection ended".into())),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(SetupError::Protocol(e.to_string()));
                }
                Err(e) => return Err(SetupError::Io(e, "WebSocket read")),
            };
            let payload = self.reader.take(head);
            match head.opcode {
                wire::OP_TEXT => return Ok(String::from_utf8_lossy(payload).into_owned()),
                wire::OP_CLOSE => return Err(SetupError::Closed(close_reason(payload))),
                wire::OP_PING => {
                    let ping = payload.to_vec();
                    self.send(wire::OP_PONG, &ping).await.map_err(|e| SetupError::Io(e, "WebSocket write"))?;
                }
                _ => {}
            }
        }
    }

    /// Subscribes to topic `t` over the socket and waits for the answer.
    async fn subscribe(&mut self, cs: &ConnSetup, t: usize) -> Result<(), SetupError> {
        let (topic, grant) = (cs.topics[t].clone(), cs.grants[t].clone());
        let frame =
            serde_json::to_string(&ClientFrame::Subscribe { id: None, topic, expires: None, grant, since: None })
                .expect("a frame always serializes");
        self.send(wire::OP_TEXT, frame.as_bytes()).await.map_err(|e| SetupError::Io(e, "WebSocket write"))?;
        loop {
            let text = self.next_text().await?;
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Subscribed { .. }) => return Ok(()),
                Ok(ServerFrame::Error { error, message, .. }) => {
                    return Err(SetupError::Refused(format!("{error}: {message}")));
                }
                // Other frames (including kinds newer than this tool) are not the answer.
                Ok(_) | Err(_) => {}
            }
        }
    }

    /// Handles the frames already buffered; `Err` says why the connection ends.
    async fn drain_buffered(&mut self, sh: &Shared, local: &mut Local) -> Result<(), String> {
        loop {
            let head = match self.reader.head() {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("protocol error: {e}")),
            };
            match head.opcode {
                wire::OP_TEXT => local.on_text(sh, self.reader.take(head)),
                wire::OP_PING => {
                    // The payload (≤ 125 bytes) moves into the scratch buffer: no allocation.
                    let Conn { reader, masks, out, stream } = self;
                    out.clear();
                    masks.frame(wire::OP_PONG, reader.take(head), out);
                    stream.write_all(out).await.map_err(|e| format!("write error: {e}"))?;
                }
                wire::OP_CLOSE => {
                    let payload = self.reader.take(head);
                    let why = match close_reason(payload) {
                        r if r.is_empty() => "closed by the server".to_owned(),
                        r => format!("closed by the server: {r}"),
                    };
                    // Answer with the same code (RFC 6455 §5.5.1), then drop the socket.
                    let code: [u8; 2] = payload.get(..2).and_then(|c| c.try_into().ok()).unwrap_or([3, 232]);
                    let _ = self.send(wire::OP_CLOSE, &code).await;
                    return Err(why);
                }
                _ => {
                    self.reader.take(head);
                }
            }
        }
    }

    /// The client's close handshake, bounded: close frame, then read until the server closes.
    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            self.send(wire::OP_CLOSE, &1000u16.to_be_bytes()).await.ok()?;
            loop {
                let spare = self.reader.spare();
                if spare.is_empty() {
                    self.reader.consume(usize::MAX);
                    continue;
                }
                match self.stream.read(spare).await {
                    Ok(0) | Err(_) => return Some(()),
                    // What arrives after our close is not looked at.
                    Ok(_) => self.reader.consume(usize::MAX),
                }
            }
        })
        .await;
    }
}

/// Reads frames until the main task says stop or the connection ends.
pub(super) async fn serve(mut conn: Conn, sh: Arc<Shared>, wake: Arc<Notify>) {
    let mut local = Local { buf: Vec::new(), first_ns: 0, last_ns: 0, direct: false };
    loop {
        match sh.phase.load(Relaxed) {
            PHASE_STOP => {
                local.flush(&sh);
                conn.close().await;
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
            if let Err(why) = conn.drain_buffered(&sh, &mut local).await {
                local.flush(&sh);
                sh.ended(why);
                return;
            }
            // `read` is cancel-safe: a wake-up loses no bytes.
            tokio::select! {
                biased;
                read = conn.stream.read(conn.reader.spare()) => match read {
                    Ok(0) => {
                        local.flush(&sh);
                        sh.ended("connection ended without a close frame".into());
                        return;
                    }
                    Ok(n) => conn.reader.filled(n),
                    Err(e) => {
                        local.flush(&sh);
                        sh.ended(format!("read error: {e}"));
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
    /// The opening handshake's request.
    pub(super) upgrade: wire::Upgrade,
    /// Read buffer of each connection, bytes (the largest frame it accepts).
    pub(super) read_buffer: usize,
    /// SO_RCVBUF of the stalled connections, set before they connect.
    pub(super) stalled_rcvbuf: Option<u32>,
    /// Whether the stalled connections subscribe to every topic.
    pub(super) stalled_all_topics: bool,
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
pub(super) async fn open(idx: usize, stalled: bool, cs: &ConnSetup, sh: &Shared) -> Result<Conn, SetupError> {
    let sock = match cs.server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| SetupError::Io(e, "socket"))?;
    if let Some(bytes) = cs.stalled_rcvbuf.filter(|_| stalled) {
        // Before connect, so that the window advertised in the handshake is already small.
        sock.set_recv_buffer_size(bytes).map_err(|e| SetupError::Io(e, "SO_RCVBUF"))?;
        if let Ok(got) = sock.recv_buffer_size() {
            sh.stalled_rcvbuf.store(u64::from(got), Relaxed);
        }
    }
    if !cs.source_addrs.is_empty() {
        let src = cs.source_addrs[idx % cs.source_addrs.len()];
        sock.bind(SocketAddr::new(src, 0)).map_err(|e| SetupError::Io(e, "bind"))?;
    }
    let stream = sock.connect(cs.server).await.map_err(|e| SetupError::Io(e, "connect"))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        reader: wire::Reader::new(cs.read_buffer),
        masks: wire::Masks::new(idx as u64),
        out: Vec::new(),
    };
    wire::handshake(&mut conn.stream, &cs.upgrade, &mut conn.reader).await?;
    let hello = conn.next_text().await?;
    match serde_json::from_str::<ServerFrame>(&hello) {
        Ok(ServerFrame::Hello { version, .. }) if version == PROTOCOL_VERSION => {}
        _ => return Err(SetupError::Protocol(format!("expected hello, got {hello}"))),
    }
    let first = cs.topic_of(idx);
    conn.subscribe(cs, first).await?;
    if stalled && cs.stalled_all_topics {
        // One at a time: pipelined answers could fill the small receive buffer and stop both
        // sides.
        for t in (0..cs.topics.len()).filter(|t| *t != first) {
            conn.subscribe(cs, t).await?;
        }
    }
    // Room for a pong or the close; nothing more is allocated per frame.
    conn.out = Vec::with_capacity(2 + 4 + 125);
    Ok(conn)
}

/// Whether connection `idx` of `connections` is one of the last `stalled`, which stop reading
/// once subscribed.
pub(super) fn is_stalled(idx: usize, connections: u32, stalled: u32) -> bool {
    idx >= connections.saturating_sub(stalled) as usize
}

/// How long a stalled connection reads, once told to stop, to learn how it ended.
const STALL_DRAIN: Duration = Duration::from_secs(3);

/// A stalled connection: holds its socket without reading until the main task says stop, then
/// reads what the socket holds (for at most [`STALL_DRAIN`]) to learn whether the server
/// closed it meanwhile, records that, and drops it (no close handshake).
async fn stall(mut conn: Conn, sh: Arc<Shared>, wake: Arc<Notify>) {
    loop {
        let woken = wake.notified();
        if sh.phase.load(Relaxed) == PHASE_STOP {
            break;
        }
        woken.await;
    }
    let mut frames = 0u64;
    let outcome = tokio::time::timeout(STALL_DRAIN, async {
        loop {
            match conn.reader.fill_frame(&mut conn.stream).await {
                Ok(Some(h)) => {
                    let payload = conn.reader.take(h);
                    if h.opcode == wire::OP_CLOSE {
                        return format!("closed by the server ({})", close_reason(payload));
                    }
                    frames += 1;
                }
                Ok(None) => return "ended by the server without a close frame".to_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return "reset by the server".to_owned(),
                Err(e) => return format!("read error: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "still open at the end".to_owned());
    let why = format!("{outcome}; {frames} unread frames were waiting");
    *sh.stalled_ended.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
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
        tokio::time::timeout(SETUP_TIMEOUT, open(idx, stalled, &cs, &sh)).await.unwrap_or(Err(SetupError::Timeout))
    };
    match setup {
        Ok(conn) => {
            sh.open.fetch_add(1, Relaxed);
            let _ = results.send(Ok(idx)).await;
            drop(results);
            if stalled {
                stall(conn, sh, wake).await;
            } else {
                serve(conn, sh, wake).await;
            }
        }
        Err(e) => {
            let _ = results.send(Err(e)).await;
        }
    }
}
