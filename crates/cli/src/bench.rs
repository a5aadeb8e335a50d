//! `davpush bench`: the load tool. It drives an already-running Director from this machine's
//! loopback interface with many WebSocket clients and measures what `shared/guides/performance.md`
//! asks for: server memory per idle connection, fan-out time, and sustained delivery latency.
//!
//! Design, so that the client costs as little as possible next to the server it measures:
//! - one task per connection; it connects, reads `hello`, subscribes over the socket itself and
//!   then only reads frames. A `notify` frame is parsed into a struct that borrows `type` and
//!   `sync_token` and skips everything else.
//! - fan-out frames (one per connection and round) are counted with a few relaxed atomics;
//!   sustained-phase latencies are buffered per task and merged into a shared lock-free
//!   histogram in chunks, and when the main task asks (end of sending).
//! - everything is bounded: setup and HTTP timeouts, a semaphore for concurrent connects and for
//!   notify requests in flight, bounded channels, and loops that end with `--duration`/drain time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use davpush_proto::notify::TopicEntry;
use davpush_proto::{
    ClientFrame, NotifyRequest, NotifyResponse, NotifyTopic, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, generate_key};
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// What `davpush bench --help` prints after the options (the subcommand's one-line summary
/// comes from `main.rs`).
const LONG_HELP: &str = "\
Runs against an already-running Director (--url) from this machine's loopback interface.

Phases:
  1. baseline: the Director's resident memory from GET /metrics
     (davpush_process_resident_memory_bytes);
  2. connect: --connections WebSockets to /ws (subprotocol davpush.v1, Authorization: Bearer),
     each subscribed over the socket itself to one of --topics topics (round-robin; topic names
     bench-<run-id>-<i>);
  3. idle: after --idle-secs, resident memory again; (after - before) / connections is the
     server's memory per idle connection (its subscription included);
  4. fan-out (--fanout-rounds times): one POST /notify naming every topic once (a `topics`
     batch), timed from sending it until the last expected frame arrived at every connection;
  5. sustained (skipped with --rate 0): --rate notifications per second for --duration seconds,
     spread over the topics, each with a unique sync_token carrying a sequence number;
     latency = frame read - request sent, for every frame; lost = expected - received.
     Every --batch-ms the notifications that are due go out together: one in the draft's
     single-topic form, several as one `topics` batch (at most --batch-max per request), so that
     the notifier keeps up at thousands per second with at most --notify-concurrency requests in
     flight; if it still falls behind, the lag is reported.

The client and the server share this machine's cores: pin them apart with `taskset` when
comparing, and quote medians of several runs. Every connection costs one file descriptor here
and one in the server: raise `ulimit -n` in both shells (up to `ulimit -Hn`); the tool tries to
raise its own soft limit to the hard limit. One source address has ~28,000 ephemeral ports; spread
client sockets over 127.0.0.1..127.0.0.K with --source-addrs beyond that, or when TIME_WAIT
sockets of earlier runs hold them.

Example:
  davpush bench --url http://127.0.0.1:8080 \\
    --notify-token-file davpush-data/notify-token \\
    --subscription-token-file davpush-data/subscription-token \\
    --connections 10000 --topics 100 --rate 1000 --duration 10";

/// Options of the load tool (see [`LONG_HELP`]).
#[derive(Debug, clap::Args)]
#[command(after_long_help = LONG_HELP)]
pub(crate) struct BenchArgs {
    /// Base URL of the running Director; plain http:// on a loopback address only.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token of the Notify API (prefer --notify-token-file: arguments are visible in `ps`).
    #[arg(long, conflicts_with = "notify_token_file", required_unless_present = "notify_token_file")]
    notify_token: Option<String>,
    /// File holding the Notify API token, e.g. davpush-data/notify-token.
    #[arg(long, value_name = "PATH")]
    notify_token_file: Option<PathBuf>,
    /// Bearer token for GET /ws; leave out when the Director runs with subscription.auth = "none".
    #[arg(long, conflicts_with = "subscription_token_file")]
    subscription_token: Option<String>,
    /// File holding the subscription token, e.g. davpush-data/subscription-token.
    #[arg(long, value_name = "PATH")]
    subscription_token_file: Option<PathBuf>,
    /// WebSocket connections to open.
    #[arg(long, short = 'n', default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Topics; connection i subscribes to topic i mod T.
    #[arg(long, short = 't', default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    topics: u32,
    /// Sustained phase: notifications per second (spread over the topics); 0 skips the phase.
    #[arg(long, short = 'r', default_value_t = 100.0)]
    rate: f64,
    /// Sustained phase: seconds of sending.
    #[arg(long, short = 'd', default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Spread client sockets over 127.0.0.1..127.0.0.K (bind before connect); each source
    /// address has its own ~28,000 ephemeral ports.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    source_addrs: u8,
    /// Connections being set up at the same time (TCP connect, upgrade, hello, subscribe).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_concurrency: u32,
    /// Seconds to hold all connections idle before reading the server's memory again.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    idle_secs: u64,
    /// Fan-out rounds (the median is reported too).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    fanout_rounds: u32,
    /// Sustained phase: milliseconds between notify requests; what is due goes out together.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_ms: u64,
    /// Most topics in one notify request (the Director's notify.max_topics_per_notify).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_max: u32,
    /// Notify requests in flight at most; a notifier that falls behind catches up with bigger
    /// batches (and the lag is reported).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    notify_concurrency: u32,
    /// Seconds to wait for outstanding frames after the last notification (or a fan-out).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain_secs: u64,
    /// Read buffer of each client WebSocket, bytes (frames are ~100 bytes).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    read_buffer: u32,
    /// Print the report as one JSON object on stdout (the human-readable one goes to stderr).
    #[arg(long)]
    json: bool,
}

/// Runs the load tool; progress and errors go to stderr.
pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    let json = args.json;
    match bench(args).await {
        Ok(report) => {
            let text = report.human();
            if json {
                eprint!("{text}");
                println!("{}", report.json());
            } else {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("davpush bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Longest time one connection's setup (connect, upgrade, hello, subscribe) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one HTTP request to the Director.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Sustained-phase sequence numbers tracked at most (8 bytes each).
const MAX_SEQUENCES: u64 = 20_000_000;
/// Latencies a connection task buffers before merging them into the shared histogram.
const LOCAL_BATCH: usize = 64;
/// Age of the oldest buffered latency at which a connection task merges its buffer anyway.
const LOCAL_MAX_AGE_NS: u64 = 1_000_000_000;

macro_rules! progress {
    ($($t:tt)*) => { eprintln!("davpush bench: {}", format_args!($($t)*)) };
}

// ---------------------------------------------------------------------------------------------
// Target: URL, tokens, HTTP client.

/// Where and how to reach the Director.
struct Target {
    base: reqwest::Url,
    http: reqwest::Client,
    notify_token: String,
}

impl Target {
    fn endpoint(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base.join(path).with_context(|| format!("cannot build the URL of {path}"))
    }
}

fn read_token(inline: Option<String>, file: Option<&Path>, what: &str) -> anyhow::Result<Option<String>> {
    let token = match (inline, file) {
        (Some(t), _) => t,
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read the {what} token file {}", p.display()))?
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the {what} token is empty");
    }
    Ok(Some(token))
}

/// Parses `--url` and resolves it; only loopback addresses are accepted.
async fn resolve(url: &str) -> anyhow::Result<(reqwest::Url, SocketAddr)> {
    let mut base = reqwest::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    if base.scheme() != "http" {
        bail!("--url must be a plain http:// URL on this machine (got {url:?})");
    }
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    let host = base
        .host_str()
        .ok_or_else(|| anyhow!("--url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = base.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("{host} resolves to no address");
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("--url must name a loopback address (127.0.0.0/8 or ::1): {host} resolves to {}", bad.ip());
    }
    Ok((base, first))
}

fn http_client(max_idle: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// What we read from `GET /metrics`.
#[derive(Debug, Clone, Default)]
struct Scrape {
    rss: Option<u64>,
    ws_connections: Option<u64>,
    ws_subscriptions: Option<u64>,
    /// `davpush_deliveries_total{service="websocket"}` by outcome (queued, coalesced, sent, …).
    ws_outcomes: BTreeMap<String, u64>,
    /// `davpush_websocket_closed_total` by reason.
    closed: BTreeMap<String, u64>,
}

impl Scrape {
    /// `self - before`, per key, leaving out zeros.
    fn delta(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        now.iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

/// The value of the sample named exactly `name` (with its labels, as rendered).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn parse_scrape(text: &str) -> Scrape {
    let mut closed = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("davpush_websocket_closed_total{reason=\"")
            && let Some((reason, v)) = rest.split_once("\"} ")
            && let Ok(v) = v.trim().parse::<f64>()
        {
            closed.insert(reason.to_owned(), v as u64);
        }
    }
    let mut ws_outcomes = BTreeMap::new();
    for l in text.lines() {
        let Some(labels) = l.strip_prefix("davpush_deliveries_total{") else { continue };
        let Some((labels, v)) = labels.split_once("} ") else { continue };
        if !labels.split(',').any(|kv| kv == "service=\"websocket\"") {
            continue;
        }
        let outcome = labels.split(',').find_map(|kv| kv.strip_prefix("outcome=\"")?.strip_suffix('"'));
        if let (Some(outcome), Ok(v)) = (outcome, v.trim().parse::<f64>()) {
            *ws_outcomes.entry(outcome.to_owned()).or_default() += v as u64;
        }
    }
    Scrape {
        rss: sample(text, "davpush_process_resident_memory_bytes").map(|v| v as u64),
        ws_connections: sample(text, "davpush_websocket_connections").map(|v| v as u64),
        ws_subscriptions: sample(text, "davpush_subscriptions{service=\"websocket\"}").map(|v| v as u64),
        ws_outcomes,
        closed,
    }
}

/// Reads the Director's metrics; `None` when it serves none (server.metrics = false).
async fn scrape(t: &Target) -> anyhow::Result<Option<Scrape>> {
    let url = t.endpoint("metrics")?;
    let resp = t
        .http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| anyhow!("the Director at {} is unreachable: {}", t.base, error_chain(&e)))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        bail!("GET {url} answered {}", resp.status());
    }
    let text = resp.text().await.context("cannot read /metrics")?;
    Ok(Some(parse_scrape(&text)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Notify requests.

/// A failed notify request.
#[derive(Debug)]
enum NotifyError {
    Unauthorized(String),
    Status(u16, String),
    Transport(String),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Unauthorized(b) => write!(f, "the notify token is not accepted (401): {b}"),
            NotifyError::Status(s, b) => write!(f, "POST /notify answered {s}: {b}"),
            NotifyError::Transport(e) => write!(f, "POST /notify failed: {e}"),
        }
    }
}

async fn post_notify(
    http: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
    body: Vec<u8>,
) -> Result<NotifyResponse, NotifyError> {
    let resp = http
        .post(url.clone())
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| NotifyError::Transport(error_chain(&e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let b = resp.text().await.unwrap_or_default();
        return Err(NotifyError::Unauthorized(b));
    }
    if !status.is_success() {
        let b = resp.text().await.unwrap_or_default();
        return Err(NotifyError::Status(status.as_u16(), b));
    }
    resp.json::<NotifyResponse>().await.map_err(|e| NotifyError::Transport(error_chain(&e)))
}

/// Body of a notify request for `(topic, sync_token)` pairs: the draft's single-topic form for
/// one, a `topics` batch for more.
fn notify_body(entries: Vec<(String, String)>) -> Vec<u8> {
    let req = if entries.len() == 1 {
        let (topic, token) = entries.into_iter().next().expect("one entry");
        NotifyRequest { topic: Some(topic), sync_token: Some(token), ..NotifyRequest::default() }
    } else {
        NotifyRequest {
            topics: Some(
                entries
                    .into_iter()
                    .map(|(topic, sync_token)| {
                        NotifyTopic::Detailed(TopicEntry { topic, sync_token: Some(sync_token), trigger: None })
                    })
                    .collect(),
            ),
            ..NotifyRequest::default()
        }
    };
    serde_json::to_vec(&req).expect("a notify request always serializes")
}

// ---------------------------------------------------------------------------------------------
// Lock-free latency histogram (microseconds, ~1.6 % resolution).

const HIST_BUCKETS: usize = 128 + 57 * 64;

struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize; // 7..=63
        let m = (v >> (e - 6)) as usize; // 64..=127
        128 + (e - 7) * 64 + (m - 64)
    }

    /// Highest value that falls into bucket `i`.
    fn high(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let e = (i - 128) / 64 + 7;
        let m = ((i - 128) % 64 + 64) as u64;
        ((m + 1) << (e - 6)) - 1
    }

    /// Records a batch (one count update, one max update).
    fn record_all(&self, values: &[u32]) {
        let mut max = 0;
        for &v in values {
            self.buckets[Self::index(u64::from(v))].fetch_add(1, Relaxed);
            max = max.max(v);
        }
        self.count.fetch_add(values.len() as u64, Relaxed);
        self.max.fetch_max(u64::from(max), Relaxed);
    }

    fn record(&self, v: u64) {
        self.buckets[Self::index(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The q-quantile in microseconds (upper bound of its bucket, at most the maximum).
    fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().map(|b| b.load(Relaxed)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Some(Self::high(i).min(self.max.load(Relaxed)));
            }
        }
        Some(self.max.load(Relaxed))
    }

    fn summary(&self) -> Latency {
        Latency {
            p50_ms: self.quantile(0.50).map(us_to_ms),
            p99_ms: self.quantile(0.99).map(us_to_ms),
            max_ms: (self.count() > 0).then(|| us_to_ms(self.max.load(Relaxed))),
        }
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// State shared by the connection tasks and the main task.

/// Connection tasks run in `Run` (sustained latencies are buffered), `Drain` (flushed, and from
/// then on recorded at once) and `Stop` (flush, close, end).
const PHASE_RUN: u8 = 0;
const PHASE_DRAIN: u8 = 1;
const PHASE_STOP: u8 = 2;

struct Round {
    start_ns: AtomicU64,
    last_ns: AtomicU64,
    hist: Histogram,
}

struct Shared {
    epoch: Instant,
    phase: AtomicU8,
    rounds: Box<[Round]>,
    /// Send instant (ns since `epoch`, 0 = not sent) of each sustained sequence number.
    sent_ns: Box<[AtomicU64]>,
    sustained: Histogram,
    sustained_last_ns: AtomicU64,
    /// Notify frames whose sync_token this run did not send (or could not parse).
    unknown_frames: AtomicU64,
    open: AtomicU64,
    /// Why connections ended before the tool closed them.
    ended: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    fn ended(&self, why: String) {
        self.open.fetch_sub(1, Relaxed);
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
    }
}

/// The part of a `notify` frame the tool reads; every other field is skipped.
#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    sync_token: Option<&'a str>,
}

/// Per-task buffer of sustained-phase latencies.
struct Local {
    buf: Vec<u32>,
    /// Arrival of the oldest buffered latency.
    first_ns: u64,
    last_ns: u64,
    direct: bool,
}

impl Local {
    fn flush(&mut self, sh: &Shared) {
        if !self.buf.is_empty() {
            sh.sustained.record_all(&self.buf);
            self.buf.clear();
        }
        if self.last_ns > 0 {
            sh.sustained_last_ns.fetch_max(self.last_ns, Relaxed);
        }
    }

    fn on_text(&mut self, sh: &Shared, text: &str) {
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

type Ws = WebSocketStream<TcpStream>;

/// Reads frames until the main task says stop or the connection ends.
async fn serve(mut ws: Ws, sh: Arc<Shared>, wake: Arc<Notify>) {
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
enum SetupError {
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
    fn category(&self) -> String {
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
    fn hint(&self) -> Option<&'static str> {
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
struct ConnSetup {
    server: SocketAddr,
    source_addrs: Vec<IpAddr>,
    request: Request,
    ws_config: WebSocketConfig,
    topics: Box<[String]>,
    limit: Semaphore,
}

impl ConnSetup {
    fn topic_of(&self, idx: usize) -> usize {
        idx % self.topics.len()
    }
}

/// Next text frame (server pings are answered by the library while reading).
async fn next_text(ws: &mut Ws) -> Result<String, SetupError> {
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
async fn open(idx: usize, cs: &ConnSetup) -> Result<Ws, SetupError> {
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
    let frame = serde_json::to_string(&ClientFrame::Subscribe { id: None, topic, expires: None })
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

/// One connection: set up (limited by the semaphore), report, then read until told to stop.
async fn connection(
    idx: usize,
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
            let _ = results.send(Ok(cs.topic_of(idx))).await;
            drop(results);
            serve(ws, sh, wake).await;
        }
        Err(e) => {
            let _ = results.send(Err(e)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File descriptors.

/// `(soft, hard)` limit on open files from /proc/self/limits (`None` = unlimited).
fn fd_limits() -> Option<(Option<u64>, Option<u64>)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| -> Option<Option<u64>> {
        match v? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some((parse(it.next())?, parse(it.next())?))
}

/// Raises the soft limit on open files to the hard limit with the util-linux `prlimit` tool,
/// when the soft limit is below what is needed (the binary has no libc binding and no unsafe
/// code). Returns the limits in force afterwards.
fn raise_fd_limit(needed: u64) -> Option<(Option<u64>, Option<u64>)> {
    let (soft, hard) = fd_limits()?;
    if soft.is_none_or(|s| s >= needed) || soft == hard {
        return Some((soft, hard));
    }
    let target = hard.map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{target}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => progress!("raised the open-files soft limit to {target}"),
        _ => progress!("could not raise the open-files soft limit (run `ulimit -n {target}`)"),
    }
    fd_limits()
}

/// Online CPUs of the machine, whatever this process's affinity (from /proc/cpuinfo).
fn machine_cores() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let n = s.lines().filter(|l| l.starts_with("processor")).count();
    (n > 0).then_some(n)
}

fn show_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Default)]
struct FanoutRound {
    expected: u64,
    received: u64,
    addressed: u64,
    response_ms: f64,
    last_frame_ms: Option<f64>,
    latency: Latency,
}

impl FanoutRound {
    fn frames_per_s(&self) -> Option<f64> {
        self.last_frame_ms.filter(|ms| *ms > 0.0).map(|ms| self.received as f64 / (ms / 1000.0))
    }
}

#[derive(Debug, Default)]
struct Sustained {
    target_rate: f64,
    duration_s: u64,
    notifications_planned: u64,
    notifications_sent: u64,
    requests: u64,
    batched_requests: u64,
    request_errors: u64,
    first_error: Option<String>,
    addressed: u64,
    expected: u64,
    received: u64,
    send_secs: f64,
    delivery_secs: f64,
    max_send_lag_ms: f64,
    latency: Latency,
    /// Why waiting for the last frames ended.
    drain_end: WaitEnd,
    /// The server's WebSocket delivery outcomes during the phase (from /metrics).
    server: Option<BTreeMap<String, u64>>,
}

impl Sustained {
    fn not_received(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// Frames neither received nor explained by the server's coalescing or dropping.
    fn unaccounted(&self) -> Option<u64> {
        let srv = self.server.as_ref()?;
        let explained = srv.get("coalesced").copied().unwrap_or(0) + srv.get("dropped").copied().unwrap_or(0);
        Some(self.not_received().saturating_sub(explained))
    }
}

#[derive(Debug, Default)]
struct Report {
    run_id: String,
    url: String,
    /// Cores of the machine (client and server run on the same one).
    machine_cores: Option<usize>,
    /// Cores this client may run on (its CPU affinity).
    client_cores: usize,
    fd_soft: Option<u64>,
    fd_hard: Option<u64>,
    requested: u64,
    topics: u64,
    source_addrs: u8,
    connected: u64,
    failed: BTreeMap<String, (u64, String)>,
    setup_secs: f64,
    idle_secs: u64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    /// WebSocket connections the server had served (or still held) before this run.
    earlier_connections: u64,
    server_connections: Option<u64>,
    server_subscriptions: Option<u64>,
    fanout: Vec<FanoutRound>,
    sustained: Option<Sustained>,
    unknown_frames: u64,
    still_open: u64,
    ended_early: BTreeMap<String, u64>,
    /// The server's WebSocket delivery outcomes during the fan-out rounds.
    fanout_server: Option<BTreeMap<String, u64>>,
    /// Connections the server closed from the idle measurement to the end, by reason.
    server_closed: BTreeMap<String, u64>,
}

fn show_map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} ms"))
}

fn kib(b: f64) -> String {
    format!("{:.1} KiB", b / 1024.0)
}

impl Report {
    fn bytes_per_connection(&self) -> Option<f64> {
        let (b, a) = (self.rss_before?, self.rss_after?);
        (self.connected > 0).then(|| (a as f64 - b as f64) / self.connected as f64)
    }

    fn fanout_median_ms(&self) -> Option<f64> {
        median(self.fanout.iter().filter_map(|r| r.last_frame_ms).collect())
    }

    fn fanout_median_rate(&self) -> Option<f64> {
        median(self.fanout.iter().filter_map(FanoutRound::frames_per_s).collect())
    }

    fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "\ndavpush bench — run {} against {}", self.run_id, self.url);
        let _ = writeln!(
            w,
            "  machine: {} cores, this client may use {} of them; the server runs on the same machine \
             (pin them apart with taskset when comparing); open-files limit here {} (hard {})",
            self.machine_cores.map_or_else(|| "?".into(), |n| n.to_string()),
            self.client_cores,
            show_limit(self.fd_soft),
            show_limit(self.fd_hard)
        );
        let _ = writeln!(
            w,
            "\nconnections: {} of {} up in {:.1} s ({:.0}/s), {} topic(s), {} source address(es)",
            self.connected,
            self.requested,
            self.setup_secs,
            self.connected as f64 / self.setup_secs.max(1e-9),
            self.topics,
            self.source_addrs
        );
        for (cat, (n, first)) in &self.failed {
            let _ = writeln!(w, "  FAILED {n}× {cat}: {first}");
        }
        if let (Some(c), Some(sub)) = (self.server_connections, self.server_subscriptions) {
            let _ = writeln!(w, "  server reports {c} WebSocket connections, {sub} WebSocket subscriptions");
        }
        let _ = writeln!(w, "\nidle memory (server RSS, after {} s idle):", self.idle_secs);
        match (self.rss_before, self.rss_after, self.bytes_per_connection()) {
            (Some(b), Some(a), Some(per)) => {
                let _ = writeln!(
                    w,
                    "  before {:.1} MiB, after {:.1} MiB → {} ({:.0} bytes) per idle connection",
                    b as f64 / 1048576.0,
                    a as f64 / 1048576.0,
                    kib(per),
                    per
                );
            }
            _ => {
                let _ = writeln!(w, "  n/a (the Director serves no /metrics)");
            }
        }
        if self.earlier_connections > 0 {
            let _ = writeln!(
                w,
                "  NOTE: the server had served {} WebSocket connections before this run; memory its allocator \
                 kept from them hides part of the new cost. Restart the Director for this figure.",
                self.earlier_connections
            );
        }
        let _ = writeln!(w, "\nfan-out (one notify per topic, one frame per connection):");
        for (i, r) in self.fanout.iter().enumerate() {
            let _ = writeln!(
                w,
                "  round {}: {}/{} frames (server addressed {}), last frame after {}, {} frames/s; \
                 per frame p50 {} p99 {}; notify answered in {:.1} ms",
                i + 1,
                r.received,
                r.expected,
                r.addressed,
                opt_ms(r.last_frame_ms),
                r.frames_per_s().map_or_else(|| "n/a".into(), |v| format!("{v:.0}")),
                opt_ms(r.latency.p50_ms),
                opt_ms(r.latency.p99_ms),
                r.response_ms
            );
        }
        let _ = writeln!(
            w,
            "  median: {} to the last frame, {} frames/s",
            opt_ms(self.fanout_median_ms()),
            self.fanout_median_rate().map_or_else(|| "n/a".into(), |v| format!("{v:.0}"))
        );
        if let Some(srv) = &self.fanout_server {
            let _ = writeln!(w, "  server WebSocket deliveries in these rounds: {}", show_map(srv));
        }
        if let Some(st) = &self.sustained {
            let _ = writeln!(w, "\nsustained: target {} notifications/s for {} s", st.target_rate, st.duration_s);
            let _ = writeln!(
                w,
                "  sent {} of {} notifications in {} requests ({} batched), {:.0}/s achieved, \
                 {} failed requests, notifier lag at most {:.1} ms",
                st.notifications_sent,
                st.notifications_planned,
                st.requests,
                st.batched_requests,
                st.notifications_sent as f64 / st.send_secs.max(1e-9),
                st.request_errors,
                st.max_send_lag_ms
            );
            if let Some(e) = &st.first_error {
                let _ = writeln!(w, "  first request error: {e}");
            }
            let lost = st.not_received();
            let _ = writeln!(
                w,
                "  frames: expected {}, server addressed {}, received {}, not received {} ({:.3} %; waiting ended: {})",
                st.expected,
                st.addressed,
                st.received,
                lost,
                if st.expected > 0 { lost as f64 * 100.0 / st.expected as f64 } else { 0.0 },
                st.drain_end.describe()
            );
            if let Some(srv) = &st.server {
                let _ = writeln!(w, "  server WebSocket deliveries in this phase: {}", show_map(srv));
                if let Some(u) = st.unaccounted().filter(|_| lost > 0) {
                    let _ = writeln!(
                        w,
                        "  of the frames not received, {} were coalesced (a newer notification of the same topic \
                         replaced one still queued: by design, the client gets the newest sync-token), {} dropped \
                         by the server, {u} unaccounted (lost)",
                        srv.get("coalesced").copied().unwrap_or(0),
                        srv.get("dropped").copied().unwrap_or(0),
                    );
                }
            }
            let _ = writeln!(
                w,
                "  delivered {:.0} frames/s; latency (request sent → frame read) p50 {} p99 {} max {}",
                st.received as f64 / st.delivery_secs.max(1e-9),
                opt_ms(st.latency.p50_ms),
                opt_ms(st.latency.p99_ms),
                opt_ms(st.latency.max_ms)
            );
        }
        let _ = writeln!(w);
        if self.unknown_frames > 0 {
            let _ = writeln!(w, "  {} notify frames carried a sync_token this run did not send", self.unknown_frames);
        }
        if !self.ended_early.is_empty() {
            let _ = writeln!(w, "connections that ended before the tool closed them:");
            for (why, n) in &self.ended_early {
                let _ = writeln!(w, "  {n}× {why}");
            }
        }
        if !self.server_closed.is_empty() {
            let _ = writeln!(w, "connections the server closed during the run: {}", show_map(&self.server_closed));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let lat = |l: &Latency| json!({ "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "max_ms": l.max_ms });
        let failed: serde_json::Map<String, serde_json::Value> =
            self.failed.iter().map(|(k, (n, first))| (k.clone(), json!({ "count": n, "first": first }))).collect();
        let rounds: Vec<_> = self
            .fanout
            .iter()
            .map(|r| {
                json!({
                    "expected": r.expected,
                    "received": r.received,
                    "addressed": r.addressed,
                    "last_frame_ms": r.last_frame_ms,
                    "frames_per_s": r.frames_per_s(),
                    "notify_response_ms": r.response_ms,
                    "latency": lat(&r.latency),
                })
            })
            .collect();
        let sustained = self.sustained.as_ref().map(|st| {
            json!({
                "target_rate": st.target_rate,
                "duration_s": st.duration_s,
                "notifications_planned": st.notifications_planned,
                "notifications_sent": st.notifications_sent,
                "achieved_rate": st.notifications_sent as f64 / st.send_secs.max(1e-9),
                "requests": st.requests,
                "batched_requests": st.batched_requests,
                "request_errors": st.request_errors,
                "first_error": st.first_error,
                "max_send_lag_ms": st.max_send_lag_ms,
                "expected_frames": st.expected,
                "addressed": st.addressed,
                "received_frames": st.received,
                "not_received_frames": st.not_received(),
                "unaccounted_frames": st.unaccounted(),
                "waiting_ended": st.drain_end.describe(),
                "server_ws_deliveries": st.server,
                "frames_per_s": st.received as f64 / st.delivery_secs.max(1e-9),
                "latency": lat(&st.latency),
            })
        });
        json!({
            "run_id": self.run_id,
            "url": self.url,
            "machine": {
                "machine_cores": self.machine_cores,
                "client_cores": self.client_cores,
                "server_on_same_machine": true,
                "fd_soft_limit": self.fd_soft,
                "fd_hard_limit": self.fd_hard,
            },
            "connections": {
                "requested": self.requested,
                "connected": self.connected,
                "failed": failed,
                "setup_s": self.setup_secs,
                "topics": self.topics,
                "source_addrs": self.source_addrs,
                "still_open_at_end": self.still_open,
                "ended_early": self.ended_early,
            },
            "idle": {
                "idle_s": self.idle_secs,
                "rss_before_bytes": self.rss_before,
                "rss_after_bytes": self.rss_after,
                "bytes_per_connection": self.bytes_per_connection(),
                "earlier_connections_on_server": self.earlier_connections,
                "server_ws_connections": self.server_connections,
                "server_ws_subscriptions": self.server_subscriptions,
            },
            "fanout": {
                "rounds": rounds,
                "median_last_frame_ms": self.fanout_median_ms(),
                "median_frames_per_s": self.fanout_median_rate(),
                "server_ws_deliveries": self.fanout_server,
            },
            "sustained": sustained,
            "unknown_frames": self.unknown_frames,
            "server": {
                "ws_closed_by_reason": self.server_closed,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

fn run_id() -> String {
    use std::hash::BuildHasher;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let h = std::hash::RandomState::new().hash_one((seed, std::process::id()));
    format!("{:08x}", h as u32)
}

/// Why waiting for frames ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum WaitEnd {
    /// Every expected frame arrived.
    #[default]
    Complete,
    /// Nothing arrived for [`QUIET`] (the rest is not coming: coalesced, dropped or lost).
    Quiet,
    /// `--drain-secs` passed while frames were still arriving.
    Timeout,
}

impl WaitEnd {
    fn describe(self) -> &'static str {
        match self {
            WaitEnd::Complete => "all arrived",
            WaitEnd::Quiet => "nothing more arrived for 1 s",
            WaitEnd::Timeout => "--drain-secs passed",
        }
    }
}

/// How long no frame may arrive before waiting for more ends.
const QUIET: Duration = Duration::from_secs(1);

/// Waits until `received()` reaches `expected`, stays unchanged for [`QUIET`], or `limit` passes.
async fn wait_for(expected: u64, limit: Duration, received: impl Fn() -> u64) -> WaitEnd {
    let until = Instant::now() + limit;
    let mut last = received();
    let mut last_change = Instant::now();
    loop {
        let now_count = received();
        if now_count >= expected {
            return WaitEnd::Complete;
        }
        let now = Instant::now();
        if now_count != last {
            last = now_count;
            last_change = now;
        } else if now - last_change >= QUIET {
            return WaitEnd::Quiet;
        }
        if now >= until {
            return WaitEnd::Timeout;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Tells every connection task about a phase change.
fn set_phase(sh: &Shared, wakes: &[Arc<Notify>], phase: u8) {
    sh.phase.store(phase, Relaxed);
    for w in wakes {
        w.notify_one();
    }
}

async fn bench(args: BenchArgs) -> anyhow::Result<Report> {
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be a number ≥ 0");
    }
    let notify_token = read_token(args.notify_token.clone(), args.notify_token_file.as_deref(), "notify")?
        .ok_or_else(|| anyhow!("--notify-token or --notify-token-file is required"))?;
    let sub_token =
        read_token(args.subscription_token.clone(), args.subscription_token_file.as_deref(), "subscription")?;
    let (base, server) = resolve(&args.url).await?;
    let source_addrs: Vec<IpAddr> = match server.ip() {
        IpAddr::V4(_) => (1..=args.source_addrs).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect(),
        IpAddr::V6(_) if args.source_addrs > 1 => {
            bail!("--source-addrs needs the server on an IPv4 loopback address")
        }
        IpAddr::V6(_) => Vec::new(),
    };
    let n = u64::from(args.connections);
    let fds = raise_fd_limit(n + 64);
    let (fd_soft, fd_hard) = fds.unwrap_or((None, None));
    if let Some(soft) = fd_soft.filter(|s| *s < n + 32) {
        progress!(
            "warning: {n} connections need about {} file descriptors but this process may open \
             {soft}: run `ulimit -n {}` first (the hard limit is {})",
            n + 32,
            fd_hard.map_or(n + 64, |h| h.min(n + 1024)),
            show_limit(fd_hard)
        );
    }

    let http = http_client(args.notify_concurrency as usize + 2)?;
    let target = Arc::new(Target { base, http, notify_token });
    let run = run_id();
    let topics: Box<[String]> = (0..args.topics).map(|i| format!("bench-{run}-{i}")).collect();

    // Phase 1: reachability, baseline, notify token.
    let before = scrape(&target).await?;
    if before.is_none() {
        progress!("the Director serves no /metrics (server.metrics = false): memory is not measured");
    }
    let notify_url = target.endpoint("notify")?;
    let probe = notify_body(vec![(format!("bench-{run}-probe"), "P0".into())]);
    post_notify(&target.http, &notify_url, &target.notify_token, probe).await.map_err(|e| anyhow!("{e}"))?;

    // Phase 2: connections.
    let mut ws_url = target.endpoint("ws")?;
    ws_url.set_scheme("ws").map_err(|()| anyhow!("cannot make a ws:// URL from {}", target.base))?;
    let mut request = ws_url.as_str().into_client_request().context("cannot build the WebSocket request")?;
    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    if let Some(t) = &sub_token {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}"))
                .context("the subscription token cannot be sent in a header")?,
        );
    }
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(args.read_buffer as usize)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let cs = Arc::new(ConnSetup {
        server,
        source_addrs,
        request,
        ws_config,
        topics,
        limit: Semaphore::new(args.connect_concurrency as usize),
    });

    let planned = if args.rate > 0.0 { (args.rate * args.duration as f64).floor().max(1.0) as u64 } else { 0 };
    if planned > MAX_SEQUENCES {
        bail!("--rate × --duration is {planned} notifications; at most {MAX_SEQUENCES} are tracked");
    }
    let sh = Arc::new(Shared {
        epoch: Instant::now(),
        phase: AtomicU8::new(PHASE_RUN),
        rounds: (0..args.fanout_rounds)
            .map(|_| Round { start_ns: AtomicU64::new(0), last_ns: AtomicU64::new(0), hist: Histogram::new() })
            .collect(),
        sent_ns: (0..planned).map(|_| AtomicU64::new(0)).collect(),
        sustained: Histogram::new(),
        sustained_last_ns: AtomicU64::new(0),
        unknown_frames: AtomicU64::new(0),
        open: AtomicU64::new(0),
        ended: Mutex::new(BTreeMap::new()),
    });

    let mut report = Report {
        run_id: run.clone(),
        url: target.base.to_string(),
        machine_cores: machine_cores(),
        client_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        fd_soft,
        fd_hard,
        requested: n,
        topics: u64::from(args.topics),
        source_addrs: args.source_addrs,
        idle_secs: args.idle_secs,
        rss_before: before.as_ref().and_then(|s| s.rss),
        earlier_connections: before
            .as_ref()
            .map_or(0, |s| s.ws_connections.unwrap_or(0) + s.closed.values().sum::<u64>()),
        ..Report::default()
    };

    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    let mut wakes: Vec<Arc<Notify>> = Vec::with_capacity(args.connections as usize);
    // The first connection alone: a bad token or an unreachable /ws fails fast and clearly.
    let (tx, mut rx) = mpsc::channel::<Result<usize, SetupError>>(1024);
    {
        let wake = Arc::new(Notify::new());
        wakes.push(wake.clone());
        tasks.spawn(connection(0, cs.clone(), sh.clone(), wake, tx.clone()));
        match rx.recv().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
                bail!("the first WebSocket connection failed: {e}{hint}");
            }
            None => bail!("the first connection task ended without a result"),
        }
    }
    let mut subs_per_topic = vec![0u64; args.topics as usize];
    subs_per_topic[0] += 1;
    let mut connected = 1u64;
    let mut failed: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut hints: Vec<&'static str> = Vec::new();
    for idx in 1..args.connections as usize {
        let wake = Arc::new(Notify::new());
        wakes.push(wake.clone());
        tasks.spawn(connection(idx, cs.clone(), sh.clone(), wake, tx.clone()));
    }
    drop(tx);
    let mut last_progress = Instant::now();
    let mut done = 1u64;
    while done < n {
        let Some(res) = rx.recv().await else { break };
        done += 1;
        match res {
            Ok(topic) => {
                connected += 1;
                subs_per_topic[topic] += 1;
            }
            Err(e) => {
                if let Some(h) = e.hint()
                    && !hints.contains(&h)
                {
                    hints.push(h);
                }
                let entry = failed.entry(e.category()).or_insert((0, e.to_string()));
                entry.0 += 1;
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let nfail: u64 = failed.values().map(|v| v.0).sum();
            progress!("connected {connected}/{n} ({nfail} failed)");
        }
    }
    report.setup_secs = t0.elapsed().as_secs_f64();
    report.connected = connected;
    let nfail: u64 = failed.values().map(|v| v.0).sum();
    progress!(
        "{connected} of {n} connections up and subscribed in {:.1} s{}",
        report.setup_secs,
        if nfail > 0 { format!(" ({nfail} failed)") } else { String::new() }
    );
    for h in &hints {
        progress!("hint: {h}");
    }
    report.failed = failed;

    // Phase 3: idle memory.
    if args.idle_secs > 0 {
        progress!("holding the connections idle for {} s", args.idle_secs);
        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    }
    let idle = scrape(&target).await?;
    if let Some(s) = &idle {
        report.rss_after = s.rss;
        report.server_connections = s.ws_connections;
        report.server_subscriptions = s.ws_subscriptions;
    }

    // Phase 4: fan-out rounds.
    let drain = Duration::from_secs(args.drain_secs);
    let expected_fanout: u64 = subs_per_topic.iter().sum();
    for r in 0..args.fanout_rounds as usize {
        let round = &sh.rounds[r];
        let token = format!("F{r}");
        let bodies: Vec<Vec<u8>> = cs
            .topics
            .chunks(args.batch_max as usize)
            .map(|c| notify_body(c.iter().map(|t| (t.clone(), token.clone())).collect()))
            .collect();
        let start = sh.now_ns();
        round.start_ns.store(start, Relaxed);
        let mut addressed = 0;
        for body in bodies {
            let resp = post_notify(&target.http, &notify_url, &target.notify_token, body)
                .await
                .map_err(|e| anyhow!("fan-out: {e}"))?;
            addressed += resp.addressed;
        }
        let response_ms = (sh.now_ns() - start) as f64 / 1e6;
        let end = wait_for(expected_fanout, drain, || round.hist.count()).await;
        let received = round.hist.count();
        let last = round.last_ns.load(Relaxed);
        let fr = FanoutRound {
            expected: expected_fanout,
            received,
            addressed,
            response_ms,
            last_frame_ms: (last > 0).then(|| (last.saturating_sub(start)) as f64 / 1e6),
            latency: round.hist.summary(),
        };
        progress!(
            "fan-out round {}: {received}/{expected_fanout} frames ({}), last after {}",
            r + 1,
            end.describe(),
            opt_ms(fr.last_frame_ms)
        );
        report.fanout.push(fr);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after_fanout = scrape(&target).await?;
    if let (Some(b), Some(a)) = (&idle, &after_fanout) {
        report.fanout_server = Some(Scrape::delta(&a.ws_outcomes, &b.ws_outcomes));
    }

    // Phase 5: sustained.
    let mut last_scrape = after_fanout;
    if planned > 0 {
        progress!("sustained: {} notifications/s for {} s ({planned} notifications)", args.rate, args.duration);
        let mut st = sustained(&args, &target, &notify_url, &cs, &sh, &subs_per_topic, planned).await;
        // Flush the per-task buffers, then wait for the rest.
        set_phase(&sh, &wakes, PHASE_DRAIN);
        st.drain_end = wait_for(st.expected, drain, || sh.sustained.count()).await;
        st.received = sh.sustained.count();
        let last = sh.sustained_last_ns.load(Relaxed);
        st.delivery_secs = (last.saturating_sub(st_start_ns(&sh))) as f64 / 1e9;
        st.latency = sh.sustained.summary();
        progress!("sustained: {} of {} frames received ({})", st.received, st.expected, st.drain_end.describe());
        let after = scrape(&target).await?;
        if let (Some(b), Some(a)) = (&last_scrape, &after) {
            st.server = Some(Scrape::delta(&a.ws_outcomes, &b.ws_outcomes));
        }
        last_scrape = after;
        report.sustained = Some(st);
    }
    if let (Some(b), Some(a)) = (&idle, &last_scrape) {
        report.server_closed = Scrape::delta(&a.closed, &b.closed);
    }

    // Close everything.
    report.still_open = sh.open.load(Relaxed);
    report.unknown_frames = sh.unknown_frames.load(Relaxed);
    report.ended_early = sh.ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
    progress!("closing {} connections", report.still_open);
    set_phase(&sh, &wakes, PHASE_STOP);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(15), closing).await.is_err() {
        tasks.abort_all();
    }
    Ok(report)
}

/// Start of the sustained phase (the send instant of sequence 0).
fn st_start_ns(sh: &Shared) -> u64 {
    sh.sent_ns.first().map_or(0, |s| s.load(Relaxed))
}

/// Sends `planned` notifications at `--rate` for at most `--duration` seconds; returns the
/// sending side of the report (frames are counted by the connection tasks).
async fn sustained(
    args: &BenchArgs,
    target: &Arc<Target>,
    notify_url: &reqwest::Url,
    cs: &ConnSetup,
    sh: &Shared,
    subs_per_topic: &[u64],
    planned: u64,
) -> Sustained {
    struct Outcome {
        expected: u64,
        addressed: u64,
        error: Option<String>,
    }
    let mut st = Sustained {
        target_rate: args.rate,
        duration_s: args.duration,
        notifications_planned: planned,
        ..Sustained::default()
    };
    let topics = cs.topics.len() as u64;
    let limit = Arc::new(Semaphore::new(args.notify_concurrency as usize));
    let mut inflight: JoinSet<Outcome> = JoinSet::new();
    let collect = |st: &mut Sustained, o: Outcome| {
        st.expected += o.expected;
        st.addressed += o.addressed;
        if let Some(e) = o.error {
            st.request_errors += 1;
            st.first_error.get_or_insert(e);
        }
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(args.batch_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut max_lag = Duration::ZERO;
    let mut last_progress = Instant::now();
    while sent < planned {
        tick.tick().await;
        while let Some(done) = inflight.try_join_next() {
            if let Ok(o) = done {
                collect(&mut st, o);
            }
        }
        let now = Instant::now();
        // The last notifications are due just before the deadline; one more tick sends them.
        if now >= deadline + 2 * Duration::from_millis(args.batch_ms) {
            break;
        }
        let elapsed = now - start;
        let due = ((elapsed.as_secs_f64() * args.rate).floor() as u64 + 1).min(planned);
        while sent < due {
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                break; // all requests in flight: catch up on a later tick with a bigger batch
            };
            let count = (due - sent).min(u64::from(args.batch_max));
            let first = sent;
            // When this notification was due, for the lag figure.
            let intended = start + Duration::from_secs_f64(first as f64 / args.rate);
            max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
            let mut entries = Vec::with_capacity(count as usize);
            let mut expected = 0;
            for seq in first..first + count {
                let topic = (seq % topics) as usize;
                expected += subs_per_topic[topic];
                entries.push((cs.topics[topic].clone(), format!("S{seq}")));
            }
            let body = notify_body(entries);
            let now_ns = sh.now_ns();
            for seq in first..first + count {
                sh.sent_ns[seq as usize].store(now_ns, Relaxed);
            }
            sent += count;
            st.requests += 1;
            if count > 1 {
                st.batched_requests += 1;
            }
            let target = target.clone();
            let url = notify_url.clone();
            inflight.spawn(async move {
                let r = post_notify(&target.http, &url, &target.notify_token, body).await;
                drop(permit);
                match r {
                    Ok(resp) => Outcome { expected, addressed: resp.addressed, error: None },
                    Err(e) => Outcome { expected: 0, addressed: 0, error: Some(e.to_string()) },
                }
            });
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            progress!("sustained: {sent} sent, {} frames received", sh.sustained.count());
        }
    }
    st.send_secs = start.elapsed().as_secs_f64();
    st.notifications_sent = sent;
    st.max_send_lag_ms = max_lag.as_secs_f64() * 1000.0;
    while let Some(done) = inflight.join_next().await {
        if let Ok(o) = done {
            collect(&mut st, o);
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in (0..200_000u64).chain([u64::from(u32::MAX), u64::MAX / 2]) {
            let i = Histogram::index(v);
            assert!(i >= prev, "bucket of {v} went backwards");
            assert!(i < HIST_BUCKETS);
            assert!(Histogram::high(i) >= v, "bucket {i} ends below {v}");
            assert!(Histogram::high(i) as f64 <= v as f64 * 1.032 + 1.0, "bucket {i} is too wide for {v}");
            prev = i;
        }
    }

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::new();
        let values: Vec<u32> = (1..=1000).collect();
        h.record_all(&values);
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5).unwrap();
        assert!((495..=510).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((985..=1000).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0), Some(1000));
    }

    #[test]
    fn metrics_are_parsed() {
        let text = "# HELP x\n\
            davpush_process_resident_memory_bytes 123456\n\
            davpush_websocket_connections 7\n\
            davpush_subscriptions{service=\"websocket\"} 5\n\
            davpush_deliveries_total{service=\"websocket\",outcome=\"dropped\"} 3\n\
            davpush_deliveries_total{service=\"websocket\",outcome=\"sent\"} 30\n\
            davpush_websocket_closed_total{reason=\"too_slow\"} 2\n";
        let s = parse_scrape(text);
        assert_eq!(s.rss, Some(123456));
        assert_eq!(s.ws_connections, Some(7));
        assert_eq!(s.ws_subscriptions, Some(5));
        assert_eq!(s.ws_outcomes.get("dropped"), Some(&3));
        assert_eq!(s.ws_outcomes.get("sent"), Some(&30));
        assert_eq!(s.closed.get("too_slow"), Some(&2));
    }

    #[test]
    fn notify_bodies_use_the_single_form_for_one_topic() {
        let one = notify_body(vec![("t".into(), "S1".into())]);
        assert_eq!(std::str::from_utf8(&one).unwrap(), r#"{"topic":"t","sync_token":"S1"}"#);
        let two = notify_body(vec![("a".into(), "S1".into()), ("b".into(), "S2".into())]);
        assert_eq!(
            std::str::from_utf8(&two).unwrap(),
            r#"{"topics":[{"topic":"a","sync_token":"S1"},{"topic":"b","sync_token":"S2"}]}"#
        );
    }

    #[test]
    fn frame_head_borrows() {
        let f: FrameHead<'_> = serde_json::from_str(r#"{"type":"notify","topic":"x","sync_token":"S42"}"#).unwrap();
        assert_eq!(f.kind, "notify");
        assert_eq!(f.sync_token, Some("S42"));
    }
}
