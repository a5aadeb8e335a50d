//! The run: connect, idle, fan-out rounds, sustained phase.

use super::*;

// ---------------------------------------------------------------------------------------------
// The run.

pub(super) fn run_id() -> String {
    use std::hash::BuildHasher;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let h = std::hash::RandomState::new().hash_one((seed, std::process::id()));
    format!("{:08x}", h as u32)
}

/// Why waiting for frames ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum WaitEnd {
    /// Every expected frame arrived.
    #[default]
    Complete,
    /// Nothing arrived for [`QUIET`] (the rest is not coming: coalesced, dropped or lost).
    Quiet,
    /// `--drain-secs` passed while frames were still arriving.
    Timeout,
}

impl WaitEnd {
    pub(super) fn describe(self) -> &'static str {
        match self {
            WaitEnd::Complete => "all arrived",
            WaitEnd::Quiet => "nothing more arrived for 1 s",
            WaitEnd::Timeout => "--drain-secs passed",
        }
    }
}

/// How long no frame may arrive before waiting for more ends.
pub(super) const QUIET: Duration = Duration::from_secs(1);

/// Waits until `received()` reaches `expected`, stays unchanged for [`QUIET`], or `limit` passes.
pub(super) async fn wait_for(expected: u64, limit: Duration, received: impl Fn() -> u64) -> WaitEnd {
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
pub(super) fn set_phase(sh: &Shared, wakes: &[Arc<Notify>], phase: u8) {
    sh.phase.store(phase, Relaxed);
    for w in wakes {
        w.notify_one();
    }
}

pub(super) async fn bench(args: BenchArgs) -> anyhow::Result<Report> {
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be a number ≥ 0");
    }
    if args.stalled >= args.connections {
        bail!("--stalled must be fewer than --connections");
    }
    // Started together with the Director (`davpush serve … & davpush bench …`): its first start
    // writes the token and key files, then listens.
    let files = [&args.notify_token_file, &args.subscription_token_file, &args.grant_key_file];
    wait_for_files(files.into_iter().flatten()).await;
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
    wait_for_listener(server).await;
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

    let client_threads =
        args.client_threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |n| n as usize);
    let conn_rt = ClientRuntime::new(client_threads)?;
    let http = http_client(args.notify_concurrency as usize + 2)?;
    let director =
        davpush_client::DirectorClient::with_http(base.clone(), http.clone()).notify_token(notify_token.clone());
    let target = Arc::new(Target { base, http, director });
    let run = run_id();
    let topics: Box<[String]> = (0..args.topics).map(|i| format!("bench-{run}-{i}")).collect();
    let grants = grants_for(&args, &topics)?;

    // Phase 1: reachability, baseline, notify token.
    let before = scrape(&target).await?;
    if before.is_none() {
        progress!("the Director serves no /metrics (server.metrics = false): memory is not measured");
    }
    let probe = notify_body(vec![(format!("bench-{run}-probe"), "P0".into())]);
    target.director.notify_bytes(probe).await.map_err(|e| anyhow!("POST /notify: {e}"))?;

    // Phase 2: connections.
    let cs = Arc::new(connection_setup(&args, &target, server, source_addrs, sub_token.as_deref(), topics, grants)?);

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
        stalled_ended: Mutex::new(BTreeMap::new()),
        stalled_rcvbuf: AtomicU64::new(0),
    });

    let mut report = Report {
        run_id: run.clone(),
        url: target.base.to_string(),
        machine_cores: machine_cores(),
        client_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        client_threads,
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

    let Connected { mut tasks, wakes, subs_per_topic } =
        connect_all(&args, &cs, &sh, conn_rt.handle(), &mut report).await?;

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
    report.fanout = fanout_rounds(&args, &target, &cs, &sh, subs_per_topic.iter().sum()).await?;
    let after_fanout = scrape(&target).await?;
    if let (Some(b), Some(a)) = (&idle, &after_fanout) {
        report.fanout_server = Some(Scrape::delta(&a.ws_outcomes, &b.ws_outcomes));
    }

    // Phase 5: sustained.
    let mut last_scrape = after_fanout;
    if planned > 0 {
        progress!("sustained: {} notifications/s for {} s ({planned} notifications)", args.rate, args.duration);
        let cpu_before = args.server_pid.and_then(cpu::cpu_ns);
        let own_before = cpu::cpu_ns(std::process::id());
        let ticks_before = cpu::user_sys_ticks(std::process::id());
        let mut st = notifier_thread(&args, &target.base, &notify_token, &cs, &sh, &subs_per_topic, planned)?;
        // Flush the per-task buffers, then wait for the rest.
        set_phase(&sh, &wakes, PHASE_DRAIN);
        let drain_start = Instant::now();
        st.drain_end = wait_for(st.expected, drain, || sh.sustained.count()).await;
        st.drain_secs = drain_start.elapsed().as_secs_f64();
        st.server_cpu_ns = cpu::spent(cpu_before, args.server_pid.and_then(cpu::cpu_ns));
        st.client_cpu_ns = cpu::spent(own_before, cpu::cpu_ns(std::process::id()));
        st.client_kernel_pct = cpu::kernel_share(ticks_before, cpu::user_sys_ticks(std::process::id()));
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
    report.stalled_ended = sh.stalled_ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.stalled_rcvbuf = Some(sh.stalled_rcvbuf.load(Relaxed)).filter(|b| *b > 0);
    Ok(report)
}

/// The connection tasks' runtime (`--client-threads` workers), apart from the one the main task
/// and its HTTP requests run on. Shut down without waiting when dropped: a runtime may not be
/// dropped in another one's async context.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn new(threads: usize) -> anyhow::Result<ClientRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("bench-conn")
            .enable_all()
            .build()
            .context("cannot start the connections' runtime")?;
        Ok(ClientRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs [`sustained`] on an OS thread of its own, with a current-thread runtime and an HTTP
/// client of its own, so that the connection tasks (on their runtime's workers) cannot delay
/// the notifier; this task's thread waits meanwhile (`block_in_place`).
#[allow(clippy::too_many_arguments)]
fn notifier_thread(
    args: &BenchArgs,
    base: &reqwest::Url,
    notify_token: &str,
    cs: &ConnSetup,
    sh: &Arc<Shared>,
    subs_per_topic: &[u64],
    planned: u64,
) -> anyhow::Result<Sustained> {
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let notifier = std::thread::Builder::new()
                .name("bench-notifier".into())
                .spawn_scoped(s, || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot start the notifier's runtime")?;
                    rt.block_on(async {
                        let http = http_client(args.notify_concurrency as usize + 2)?;
                        let director = davpush_client::DirectorClient::with_http(base.clone(), http.clone())
                            .notify_token(notify_token);
                        let target = Arc::new(Target { base: base.clone(), http, director });
                        Ok(sustained(args, &target, cs, sh, subs_per_topic, planned).await)
                    })
                })
                .context("cannot start the notifier thread")?;
            notifier.join().map_err(|_| anyhow!("the notifier thread panicked"))?
        })
    })
}

/// A grant for each topic, signed with `--grant-key-file` (none without it).
fn grants_for(args: &BenchArgs, topics: &[String]) -> anyhow::Result<Box<[Option<String>]>> {
    Ok(match &args.grant_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let keys = davpush_proto::GrantKeys::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            // Valid for the setup phase; subscriptions outlive their grant.
            let until = davpush_core::unix_now() + 3600;
            topics.iter().map(|t| Some(keys.sign([t.as_str()], until))).collect()
        }
        None => topics.iter().map(|_| None).collect(),
    })
}

/// The WebSocket request and settings every connection uses.
fn connection_setup(
    args: &BenchArgs,
    target: &Target,
    server: SocketAddr,
    source_addrs: Vec<IpAddr>,
    sub_token: Option<&str>,
    topics: Box<[String]>,
    grants: Box<[Option<String>]>,
) -> anyhow::Result<ConnSetup> {
    let ws_url = target.endpoint("ws")?;
    let host = ws_url.host_str().ok_or_else(|| anyhow!("{ws_url} has no host"))?;
    let port = ws_url.port_or_known_default().unwrap_or(80);
    let target_path = match ws_url.query() {
        Some(q) => format!("{}?{q}", ws_url.path()),
        None => ws_url.path().to_owned(),
    };
    let authorization = sub_token.map(|t| format!("Bearer {t}"));
    if authorization.as_deref().is_some_and(|a| a.bytes().any(|b| b.is_ascii_control())) {
        bail!("the subscription token cannot be sent in a header");
    }
    Ok(ConnSetup {
        server,
        source_addrs,
        upgrade: wire::Upgrade {
            host: format!("{host}:{port}"),
            target: target_path,
            protocol: SUBPROTOCOL,
            authorization,
        },
        read_buffer: args.read_buffer as usize,
        stalled_rcvbuf: args.stalled_rcvbuf,
        stalled_all_topics: args.stalled_all_topics,
        topics,
        grants,
        limit: Semaphore::new(args.connect_concurrency as usize),
    })
}

/// The connection tasks, their wake-ups, and how many subscribed to each topic.
struct Connected {
    tasks: JoinSet<()>,
    wakes: Vec<Arc<Notify>>,
    subs_per_topic: Vec<u64>,
}

/// Phase 2: opens and subscribes `--connections` WebSockets (the first alone, so that a bad
/// token or an unreachable /ws fails fast), recording setup time and failures in `report`.
async fn connect_all(
    args: &BenchArgs,
    cs: &Arc<ConnSetup>,
    sh: &Arc<Shared>,
    rt: &tokio::runtime::Handle,
    report: &mut Report,
) -> anyhow::Result<Connected> {
    let n = u64::from(args.connections);
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    let mut wakes: Vec<Arc<Notify>> = Vec::with_capacity(args.connections as usize);
    // The first connection alone: a bad token or an unreachable /ws fails fast and clearly.
    let (tx, mut rx) = mpsc::channel::<Result<usize, SetupError>>(1024);
    {
        let wake = Arc::new(Notify::new());
        wakes.push(wake.clone());
        tasks.spawn_on(connection(0, false, cs.clone(), sh.clone(), wake, tx.clone()), rt);
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
        let stalled = is_stalled(idx, args.connections, args.stalled);
        tasks.spawn_on(connection(idx, stalled, cs.clone(), sh.clone(), wake, tx.clone()), rt);
    }
    drop(tx);
    let mut last_progress = Instant::now();
    let mut done = 1u64;
    while done < n {
        let Some(res) = rx.recv().await else { break };
        done += 1;
        match res {
            Ok(idx) => {
                connected += 1;
                // A stalled connection reads nothing: no frame is expected of it.
                if is_stalled(idx, args.connections, args.stalled) {
                    report.stalled += 1;
                } else {
                    subs_per_topic[cs.topic_of(idx)] += 1;
                }
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
    Ok(Connected { tasks, wakes, subs_per_topic })
}

/// Phase 4: `--fanout-rounds` notifies of every topic, each waited for until its frames arrived
/// (or `--drain-secs` passed).
async fn fanout_rounds(
    args: &BenchArgs,
    target: &Target,
    cs: &ConnSetup,
    sh: &Shared,
    expected_fanout: u64,
) -> anyhow::Result<Vec<FanoutRound>> {
    let drain = Duration::from_secs(args.drain_secs);
    let mut rounds = Vec::with_capacity(args.fanout_rounds as usize);
    for r in 0..args.fanout_rounds as usize {
        let round = &sh.rounds[r];
        let token = format!("F{r}");
        let bodies: Vec<Vec<u8>> = cs
            .topics
            .chunks(args.batch_max as usize)
            .map(|c| notify_body(c.iter().map(|t| (t.clone(), token.clone())).collect()))
            .collect();
        let cpu_before = args.server_pid.and_then(cpu::cpu_ns);
        let start = sh.now_ns();
        round.start_ns.store(start, Relaxed);
        let mut addressed = 0;
        for body in bodies {
            let resp = target.director.notify_bytes(body).await.map_err(|e| anyhow!("fan-out: POST /notify: {e}"))?;
            addressed += resp.addressed;
        }
        let response_ms = (sh.now_ns() - start) as f64 / 1e6;
        let end = wait_for(expected_fanout, drain, || round.hist.count()).await;
        // Read once the last frame is in (or waiting gave up): the server spent this on the
        // notify request and the round's frames; its idle threads add next to nothing.
        let server_cpu_ns = cpu::spent(cpu_before, args.server_pid.and_then(cpu::cpu_ns));
        let received = round.hist.count();
        let last = round.last_ns.load(Relaxed);
        let fr = FanoutRound {
            expected: expected_fanout,
            received,
            addressed,
            response_ms,
            last_frame_ms: (last > 0).then(|| (last.saturating_sub(start)) as f64 / 1e6),
            latency: round.hist.summary(),
            server_cpu_ns,
        };
        progress!(
            "fan-out round {}: {received}/{expected_fanout} frames ({}), last after {}{}",
            r + 1,
            end.describe(),
            opt_ms(fr.last_frame_ms),
            fr.cpu_per_frame_us().map_or_else(String::new, |us| format!(", server CPU {us:.2} µs/frame"))
        );
        rounds.push(fr);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(rounds)
}

/// Start of the sustained phase (the send instant of sequence 0).
pub(super) fn st_start_ns(sh: &Shared) -> u64 {
    sh.sent_ns.first().map_or(0, |s| s.load(Relaxed))
}

/// Sends `planned` notifications at `--rate` for at most `--duration` seconds; returns the
/// sending side of the report (frames are counted by the connection tasks).
pub(super) async fn sustained(
    args: &BenchArgs,
    target: &Arc<Target>,
    cs: &ConnSetup,
    sh: &Arc<Shared>,
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
    // Each request's round trip (sent → answered, µs): the Director answers once every
    // recipient is routed and its WebSocket frames written, so it tells the server's part of
    // the latency from the delivery's and the client's.
    let rtt = Arc::new(Histogram::new());
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
            sent += count;
            st.requests += 1;
            if count > 1 {
                st.batched_requests += 1;
            }
            let (target, rtt, sh) = (target.clone(), rtt.clone(), sh.clone());
            inflight.spawn(async move {
                // Stamped as the request goes out (not when it was built: the task's own wait
                // for the notifier's thread is the tool's, not the server's).
                let now_ns = sh.now_ns();
                for seq in first..first + count {
                    sh.sent_ns[seq as usize].store(now_ns, Relaxed);
                }
                let sent = Instant::now();
                let r = target.director.notify_bytes(body).await;
                rtt.record(sent.elapsed().as_micros() as u64);
                drop(permit);
                match r {
                    Ok(resp) => Outcome { expected, addressed: resp.addressed, error: None },
                    Err(e) => Outcome { expected: 0, addressed: 0, error: Some(format!("POST /notify: {e}")) },
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
    st.notify_rtt = rtt.summary();
    st
}

/// How long the load tool waits for a Director started with it.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Waits (at most [`STARTUP_WAIT`]) until every one of `files` exists.
async fn wait_for_files<'a>(files: impl Iterator<Item = &'a std::path::PathBuf>) {
    let files: Vec<&std::path::PathBuf> = files.collect();
    let missing = || files.iter().find(|f| !f.exists()).copied();
    let Some(first) = missing() else { return };
    progress!(
        "waiting up to {} s for {} (the Director writes it on its first start)",
        STARTUP_WAIT.as_secs(),
        first.display()
    );
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    while missing().is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most [`STARTUP_WAIT`]) until `server` accepts connections; the first request then
/// reports what is wrong if it still does not.
async fn wait_for_listener(server: SocketAddr) {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    while tokio::net::TcpStream::connect(server).await.is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
