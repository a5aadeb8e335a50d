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
use davpush_proto::{ClientFrame, NotifyRequest, NotifyTopic, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, generate_key};
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};

macro_rules! progress {
    ($($t:tt)*) => { eprintln!("davpush bench: {}", format_args!($($t)*)) };
}

mod baseline;
mod compare;
mod conn;
mod cpu;
mod histogram;
mod limits;
mod notify;
pub(crate) mod population;
pub(crate) mod pushsvc;
mod report;
mod run;
mod target;
mod wire;

use conn::*;
use histogram::*;
use limits::*;
use notify::*;
use report::*;
use run::*;
use target::*;

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

The connections are read by a minimal RFC 6455 client (no per-frame parsing beyond finding the
sync_token) on --client-threads worker threads; the sustained phase's notifier has an OS thread,
runtime and HTTP client of its own, so that reading cannot delay it. The report gives the tool's
own CPU time per received frame next to the server's: near 100 % of its cores, the client was the
bottleneck.

--stalled N with --stalled-rcvbuf BYTES: the stalled connections get a small receive buffer
(SO_RCVBUF before connect; Linux doubles the value and keeps a minimum of about 2 KiB), so that
once the server's send buffer is full too its writes to them block. On loopback that buffer
grows to about 4 MiB (tcp_wmem), some 30,000 frames: a stalled connection of one topic gets
--rate / --topics frames/s, so add --stalled-all-topics (it then gets --rate frames/s; e.g.
--topics 1000 --rate 2000 fills it in about 20 s) to make it fill within a run. At the
end the tool reads what they hold and reports how each ended (a close by the server, for
example after its write timeout or when its mailbox overflowed, is expected).

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
    --grant-key-file davpush-data/grant-key \\
    --connections 10000 --topics 100 --rate 1000 --duration 10";

/// Options of the load tool (see [`LONG_HELP`]).
#[derive(Debug, clap::Args)]
#[command(after_long_help = LONG_HELP, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BenchArgs {
    /// Other benchmarks (the WebSocket load above runs without one).
    #[command(subcommand)]
    command: Option<BenchCommand>,
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
    /// The Director's grant key file, e.g. davpush-data/grant-key, to sign a subscription grant
    /// for each topic; leave out when the Director runs with subscription.grants = "off".
    #[arg(long, value_name = "PATH")]
    grant_key_file: Option<PathBuf>,
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
    /// Read buffer of each client WebSocket, bytes (frames are ~100 bytes); a larger frame ends
    /// the connection as a protocol error.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    read_buffer: u32,
    /// Worker threads of the connection tasks [default: the cores this process may use]; the
    /// sustained phase's notifier runs on a thread of its own besides them.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    client_threads: Option<u32>,
    /// Connections that stop reading once subscribed (the last N): the server's frames fill
    /// their socket buffers. They are left out of the expected frames and the latencies, so the
    /// others' figures show what one slow client costs them. Must be fewer than --connections.
    #[arg(long, default_value_t = 0)]
    stalled: u32,
    /// SO_RCVBUF of the stalled connections, bytes, set before they connect (see below).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=1 << 30))]
    stalled_rcvbuf: Option<u32>,
    /// The stalled connections subscribe to every topic (at most the Director's
    /// subscription.max_per_client, 1000 by default), so that each gets --rate frames/s.
    #[arg(long)]
    stalled_all_topics: bool,
    /// Print the report as one JSON object on stdout (the human-readable one goes to stderr).
    #[arg(long)]
    json: bool,
    /// Process id of the server (on this machine): its on-CPU time, all threads, is read from
    /// /proc before each fan-out round and after its last frame, and around the sustained
    /// phase, and reported per delivered frame.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

/// Benchmarks other than the WebSocket load.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Durable subscriptions at scale (issue 11): starts its own `davpush serve` on a fresh
    /// data directory, creates the population through the Subscription API and measures
    /// subscribe/s, the write-ahead log, memory per subscription, restart-to-ready, the notify
    /// of a 10,000-subscriber topic and the purge of expired rows.
    Population(population::PopulationArgs),
    /// Fan-out cost side by side (issue 17): starts `davpush serve` and the naive broadcast
    /// server (`baseline-server`) in turn, pinned to --server-cpus, runs the load tool's
    /// connect, idle and fan-out phases against each with --server-pid, and prints server CPU
    /// time per delivered frame, memory per idle connection and fan-out time for both.
    Fanout(compare::FanoutArgs),
    /// The naive broadcast server that `bench fanout` compares with (runs until killed).
    #[command(hide = true)]
    BaselineServer(baseline::BaselineArgs),
    /// The push service at load (issue 16): starts its own `davpush serve` with the push service
    /// on, connects WebSocket clients with one push subscription each, and measures accepted
    /// pushes/s and frames/s with senders posting as fast as they are answered, then the
    /// POST-to-frame latency at half that rate.
    PushService(pushsvc::PushServiceArgs),
}

/// `dir`, created if missing and made absolute; an error unless it is empty (a bench that starts
/// its own Director measures a fresh one).
fn fresh_data_dir(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!("{} is not empty: give a fresh data directory", dir.display());
    }
    Ok(dir)
}

/// Runs the load tool; progress and errors go to stderr.
pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    let (name, done) = match args.command {
        Some(BenchCommand::Population(p)) => ("population", population::run(p).await),
        Some(BenchCommand::Fanout(f)) => ("fanout", compare::run(f).await),
        Some(BenchCommand::BaselineServer(b)) => ("baseline-server", baseline::run(b).await),
        Some(BenchCommand::PushService(p)) => ("push-service", pushsvc::run(p).await),
        None => return load(args).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The WebSocket load run (no subcommand).
async fn load(args: BenchArgs) -> ExitCode {
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
    fn stalled_connections_are_the_last_n() {
        let stalled = |n: u32, k: u32| (0..n as usize).filter(|&i| is_stalled(i, n, k)).collect::<Vec<_>>();
        assert_eq!(stalled(10_000, 1), vec![9_999]);
        assert_eq!(stalled(10, 3), vec![7, 8, 9]);
        assert!(stalled(10, 0).is_empty());
        // The first connection (set up alone to fail fast) reads whenever one reads at all.
        assert!(!is_stalled(0, 10, 9));
    }
}
