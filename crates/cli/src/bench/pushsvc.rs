//! `davpush bench push-service`: issue 16's push-service load. It starts its own `davpush serve`
//! on a fresh data directory with the push service on (rate limits raised so that they do not
//! cap the measurement), opens `--clients` WebSocket clients that each make one unrestricted push
//! subscription (`push_subscribe`), and has `--senders` HTTP senders `POST` an opaque
//! `aes128gcm` body of `--body-bytes` to the endpoints, round-robin, over keep-alive connections.
//!
//! Phase 1 (saturated): every sender posts as fast as answers come, for `--secs`; the report gives
//! accepted (201) pushes/s and `push` frames received/s. Phase 2 (paced): `--rate` pushes/s (by
//! default half the saturated rate), each sender on its own schedule, for `--secs`; latency =
//! frame read − request sent, for every frame. The first 8 body bytes carry the push's sequence
//! number, which is how a frame is matched to its send instant (the Director forwards the body
//! as it came, base64url-encoded).

use super::*;

use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use davpush_delivery::webpush::vapid::{Vapid, VapidKey};

/// Options of `davpush bench push-service`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushServiceArgs {
    /// Connected WebSocket clients, one push subscription each.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    clients: u32,
    /// Concurrent HTTP senders (one keep-alive connection each).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    senders: u32,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    secs: u64,
    /// Phase 2's pushes per second; 0 = half the saturated rate of phase 1.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Size of the (opaque) message body, bytes; at most 4096.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(8..=4096))]
    body_bytes: u32,
    /// A fresh data directory for the Director this bench starts (created).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// VAPID (RFC 8292): `off` = unrestricted subscriptions, unsigned pushes; `reuse` = every
    /// subscription restricted to one application-server key, each sender signing one token and
    /// sending it with every push (as senders that cache their header do); `per-push` = the
    /// same, with a token signed for every push (as pywebpush does).
    #[arg(long, value_enum, default_value_t = VapidMode::Off)]
    vapid: VapidMode,
    /// Run the Director under `taskset -c <CPUS>` (e.g. 0; start the bench itself under
    /// `taskset -c 1`), so that the server and the load generator do not share cores.
    #[arg(long, value_name = "CPUS")]
    server_cpus: Option<String>,
}

/// How the senders authenticate (`--vapid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum VapidMode {
    Off,
    Reuse,
    PerPush,
}

/// The push service's origin, as the Director this bench starts is configured (`public_url`):
/// the `aud` of the senders' tokens.
const ORIGIN: &str = "http://127.0.0.1";

/// The senders' application-server key and how they use it.
struct Signer {
    vapid: Vapid,
    mode: VapidMode,
    /// The header of `reuse`, signed once.
    reused: String,
}

impl Signer {
    fn new(mode: VapidMode) -> anyhow::Result<Option<Arc<Signer>>> {
        if mode == VapidMode::Off {
            return Ok(None);
        }
        let (key, _) = VapidKey::generate_pem()?;
        let vapid = Vapid::new(Arc::new(key), "mailto:bench@example.invalid".into());
        let reused = vapid.sign(ORIGIN, davpush_core::unix_now() + 12 * 3600);
        Ok(Some(Arc::new(Signer { vapid, mode, reused })))
    }

    fn public_key(&self) -> String {
        self.vapid.key().public_key()
    }

    fn authorization(&self) -> String {
        match self.mode {
            VapidMode::PerPush => self.vapid.sign(ORIGIN, davpush_core::unix_now() + 12 * 3600),
            VapidMode::Off | VapidMode::Reuse => self.reused.clone(),
        }
    }
}

const TOKEN: &str = "bench-push-service-token-0123456789";
/// Pushes tracked per second of sending (8 bytes each); the senders stop beyond.
const MAX_PUSHES_PER_SEC: u64 = 200_000;

/// What the senders and the clients share.
struct State {
    epoch: Instant,
    /// Send instant (ns since `epoch`, 0 = not sent) of each push.
    sent_ns: Box<[AtomicU64]>,
    next: AtomicU64,
    /// Sequence numbers from here on belong to phase 2 (u64::MAX while phase 1 runs).
    phase2_from: AtomicU64,
    stop: AtomicU8,
    accepted: [AtomicU64; 2],
    refused: Mutex<BTreeMap<String, u64>>,
    frames: [AtomicU64; 2],
    /// Frames whose body did not carry a sequence number this run sent.
    unknown: AtomicU64,
    latency: Histogram,
    /// `--vapid`: the senders' key (and the key every subscription is restricted to).
    signer: Option<Arc<Signer>>,
}

impl State {
    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    fn phase_of(&self, seq: u64) -> usize {
        usize::from(seq >= self.phase2_from.load(Relaxed))
    }
}

/// The part of a `push` frame the clients read.
#[derive(Deserialize)]
struct PushHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    data: Option<&'a str>,
}

pub(crate) async fn run(args: PushServiceArgs) -> anyhow::Result<()> {
    let dir = super::fresh_data_dir(&args.data_dir)?;
    raise_fd_limit(u64::from(args.clients + args.senders) + 256);
    let config = write_config(&dir, &args)?;
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .pool_max_idle_per_host(args.senders as usize)
        .tcp_nodelay(true)
        .build()?;
    progress!("push-service: starting the Director in {}", dir.display());
    let mut serve = start(&config, &dir, args.server_cpus.as_deref())?;
    let result = measure(&args, &http, &dir, &mut serve).await;
    let stopped = population::stop(&mut serve);
    let report = result?;
    stopped?;
    print!("{report}");
    Ok(())
}

async fn measure(
    args: &PushServiceArgs,
    http: &reqwest::Client,
    dir: &Path,
    serve: &mut Child,
) -> anyhow::Result<String> {
    let base = population::until_ready(http, dir, 0, serve).await?;
    let st = Arc::new(State {
        epoch: Instant::now(),
        sent_ns: (0..MAX_PUSHES_PER_SEC * 2 * args.secs).map(|_| AtomicU64::new(0)).collect(),
        next: AtomicU64::new(0),
        phase2_from: AtomicU64::new(u64::MAX),
        stop: AtomicU8::new(0),
        accepted: Default::default(),
        refused: Mutex::default(),
        frames: Default::default(),
        unknown: AtomicU64::new(0),
        latency: Histogram::new(),
        signer: Signer::new(args.vapid)?,
    });

    progress!("push-service: connecting {} clients", args.clients);
    let endpoints = Arc::new(connect_clients(args, &base, &st).await?);

    // Phase 1: saturated.
    progress!("push-service: phase 1, {} senders as fast as they are answered, {} s", args.senders, args.secs);
    let template = Arc::new(vec![0xA5u8; args.body_bytes as usize]);
    let phase = Duration::from_secs(args.secs);
    let (server, me) = (serve.id(), std::process::id());
    let (server_before, me_before) = (cpu::cpu_ns(server), cpu::cpu_ns(me));
    let t1 = Instant::now();
    let mut senders = JoinSet::new();
    for _ in 0..args.senders {
        let (http, eps, st, body) = (http.clone(), endpoints.clone(), st.clone(), template.clone());
        senders.spawn(async move {
            while st.stop.load(Relaxed) == 0 {
                send_one(&http, &eps, &st, &body).await;
            }
        });
    }
    tokio::time::sleep(phase).await;
    let frames_in_1 = st.frames[0].load(Relaxed);
    let accepted_in_1 = st.accepted[0].load(Relaxed);
    let secs1 = t1.elapsed().as_secs_f64();
    let server_ns = cpu::spent(server_before, cpu::cpu_ns(server));
    let me_ns = cpu::spent(me_before, cpu::cpu_ns(me));
    st.stop.store(1, Relaxed);
    while senders.join_next().await.is_some() {}
    let sent1 = st.next.load(Relaxed);
    drain(&st, 0, Duration::from_secs(5)).await;
    let saturated = accepted_in_1 as f64 / secs1;

    // Phase 2: paced at half the saturated rate (or --rate).
    let rate = if args.rate > 0.0 { args.rate } else { (saturated / 2.0).max(1.0) };
    progress!("push-service: phase 2, {rate:.0} pushes/s paced over {} senders, {} s", args.senders, args.secs);
    st.phase2_from.store(sent1, Relaxed);
    st.stop.store(0, Relaxed);
    let total2 = (rate * args.secs as f64).round() as u64;
    let to_send = Arc::new(AtomicU64::new(0));
    let t2 = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(args.senders as f64 / rate);
    let mut lag_max = Duration::ZERO;
    let mut paced = JoinSet::new();
    for i in 0..args.senders {
        let (http, eps, st, body, to_send) =
            (http.clone(), endpoints.clone(), st.clone(), template.clone(), to_send.clone());
        let offset = interval.mul_f64(f64::from(i) / f64::from(args.senders));
        paced.spawn(async move {
            let mut due = t2 + offset;
            let mut lag = Duration::ZERO;
            while to_send.fetch_add(1, Relaxed) < total2 {
                tokio::time::sleep_until(due).await;
                lag = lag.max(tokio::time::Instant::now() - due);
                send_one(&http, &eps, &st, &body).await;
                due += interval;
            }
            lag
        });
    }
    while let Some(done) = paced.join_next().await {
        lag_max = lag_max.max(done?);
    }
    let secs2 = t2.elapsed().as_secs_f64();
    drain(&st, 1, Duration::from_secs(5)).await;
    let sent2 = st.next.load(Relaxed) - sent1;

    let per_push = |ns: Option<u64>| {
        ns.filter(|_| accepted_in_1 > 0).map_or_else(
            || "-".to_owned(),
            |ns| {
                format!(
                    "{:.1} µs per accepted push ({:.0} % of a core)",
                    ns as f64 / 1e3 / accepted_in_1 as f64,
                    ns as f64 / 1e7 / secs1
                )
            },
        )
    };
    let refused = st.refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (a1, a2) = (st.accepted[0].load(Relaxed), st.accepted[1].load(Relaxed));
    let (f1, f2) = (st.frames[0].load(Relaxed), st.frames[1].load(Relaxed));
    let lat = st.latency.summary();
    let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"));
    let mut out = format!(
        "davpush bench push-service: {} clients, {} senders, {}-byte bodies, {} s per phase, VAPID {}\n",
        args.clients,
        args.senders,
        args.body_bytes,
        args.secs,
        match args.vapid {
            VapidMode::Off => "off",
            VapidMode::Reuse => "on (tokens reused)",
            VapidMode::PerPush => "on (a token per push)",
        }
    );
    out += &format!(
        "  saturated:  {saturated:.0} accepted/s, {:.0} frames/s ({sent1} sent, {a1} accepted, {f1} frames, {} lost)\n",
        frames_in_1 as f64 / secs1,
        a1.saturating_sub(f1)
    );
    out += &format!("  CPU:        server {}; load tool {}\n", per_push(server_ns), per_push(me_ns));
    out += &format!(
        "  paced:      {:.0}/s asked, {:.0}/s sent ({sent2} sent, {a2} accepted, {f2} frames, {} lost), sender lag max {:.1} ms\n",
        rate,
        sent2 as f64 / secs2,
        a2.saturating_sub(f2),
        lag_max.as_secs_f64() * 1e3
    );
    out += &format!(
        "  latency:    POST sent -> frame read p50 {}, p99 {}, max {} ({} frames)\n",
        ms(lat.p50_ms),
        ms(lat.p99_ms),
        ms(lat.max_ms),
        st.latency.count()
    );
    let refused_text = if refused.is_empty() {
        "none".to_owned()
    } else {
        refused.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
    };
    out += &format!("  refused:    {refused_text}; unknown frames {}\n", st.unknown.load(Relaxed));
    st.stop.store(2, Relaxed);
    Ok(out)
}

/// One push: the next sequence number, its endpoint (round-robin) and body.
async fn send_one(http: &reqwest::Client, endpoints: &[String], st: &State, template: &[u8]) {
    let seq = st.next.fetch_add(1, Relaxed);
    let Some(slot) = st.sent_ns.get(seq as usize) else {
        st.stop.store(1, Relaxed);
        return;
    };
    let mut body = template.to_vec();
    body[..8].copy_from_slice(&seq.to_be_bytes());
    let url = &endpoints[seq as usize % endpoints.len()];
    slot.store(st.now_ns(), Relaxed);
    let mut request = http.post(url).header(header::CONTENT_ENCODING, "aes128gcm").header("ttl", "60");
    if let Some(signer) = &st.signer {
        request = request.header(header::AUTHORIZATION, signer.authorization());
    }
    let answer = request.body(body).send().await;
    let phase = st.phase_of(seq);
    match answer {
        Ok(r) if r.status().as_u16() == 201 => {
            st.accepted[phase].fetch_add(1, Relaxed);
        }
        Ok(r) => {
            let key = format!("HTTP {}", r.status().as_u16());
            *st.refused.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
        }
        Err(e) => {
            let key = if e.is_timeout() { "timeout".to_owned() } else { "connection error".to_owned() };
            *st.refused.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
        }
    }
}

/// Waits until every accepted push of `phase` arrived, at most `max`.
async fn drain(st: &State, phase: usize, max: Duration) {
    let until = Instant::now() + max;
    while st.frames[phase].load(Relaxed) < st.accepted[phase].load(Relaxed) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens the clients (at most 128 at a time), each with one push subscription; their endpoints
/// (on the Director's actual address, whatever `public_url` says).
async fn connect_clients(args: &PushServiceArgs, base: &str, st: &Arc<State>) -> anyhow::Result<Vec<String>> {
    let ws_url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let mut request = ws_url.as_str().into_client_request().context("cannot build the WebSocket request")?;
    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    request.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {TOKEN}"))?);
    let limit = Arc::new(Semaphore::new(128));
    let mut tasks = JoinSet::new();
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<String>>(1024);
    for _ in 0..args.clients {
        let (request, limit, tx, st, base) = (request.clone(), limit.clone(), tx.clone(), st.clone(), base.to_owned());
        tasks.spawn(async move {
            let opened = {
                let _permit = limit.acquire().await;
                let key = st.signer.as_ref().map(|s| s.public_key());
                tokio::time::timeout(SETUP_TIMEOUT, open_client(request, key))
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("setup timed out")))
            };
            match opened {
                Ok((ws, push_id)) => {
                    let _ = tx.send(Ok(format!("{base}/push/{push_id}"))).await;
                    drop(tx);
                    read_frames(ws, &st).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
    }
    drop(tx);
    let mut endpoints = Vec::with_capacity(args.clients as usize);
    while let Some(r) = rx.recv().await {
        endpoints.push(r?);
    }
    // The readers run until the process ends (they hold nothing but their socket).
    tasks.detach_all();
    Ok(endpoints)
}

async fn open_client(mut req: Request, vapid_key: Option<String>) -> anyhow::Result<(Ws, String)> {
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&generate_key()).expect("a generated key is a valid header"),
    );
    let host = req.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let stream = TcpStream::connect(&host).await.context("connect")?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.context("WebSocket upgrade")?;
    next_text(&mut ws).await.map_err(|e| anyhow!("{e}"))?; // hello
    let frame = ClientFrame::PushSubscribe { id: None, vapid_key, push_id: None, secret: None };
    ws.send(Message::text(serde_json::to_string(&frame)?)).await?;
    loop {
        let text = next_text(&mut ws).await.map_err(|e| anyhow!("{e}"))?;
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::PushSubscribed { push_id, .. }) => return Ok((ws, push_id)),
            Ok(ServerFrame::Error { error, message, .. }) => bail!("push_subscribe refused: {error}: {message}"),
            Ok(_) | Err(_) => {}
        }
    }
}

/// Reads `push` frames until the bench stops: counts them and, in phase 2, records the latency.
async fn read_frames(mut ws: Ws, st: &State) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let now = st.now_ns();
        let Ok(head) = serde_json::from_str::<PushHead<'_>>(text.as_str()) else { continue };
        if head.kind != "push" {
            continue;
        }
        let seq = head
            .data
            .and_then(|d| d.get(..12))
            .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
            .and_then(|b| b.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()))
            .map(u64::from_be_bytes);
        let sent = seq.and_then(|s| st.sent_ns.get(s as usize)).map_or(0, |s| s.load(Relaxed));
        let (Some(seq), true) = (seq, sent > 0) else {
            st.unknown.fetch_add(1, Relaxed);
            continue;
        };
        let phase = st.phase_of(seq);
        st.frames[phase].fetch_add(1, Relaxed);
        if phase == 1 {
            st.latency.record(now.saturating_sub(sent) / 1000);
        }
        if st.stop.load(Relaxed) == 2 {
            break;
        }
    }
}

fn write_config(dir: &Path, args: &PushServiceArgs) -> anyhow::Result<PathBuf> {
    let n = args.clients + 1000;
    // Limits far above any rate this machine reaches, so that they do not cap the measurement:
    // every sender is 127.0.0.1 (one per-sender window), and each subscription gets
    // rate / clients × 60 messages a minute.
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {dir:?}\n\
         [notify]\ntokens = [{TOKEN:?}]\n\
         [subscription]\ntokens = [{TOKEN:?}]\ngrants = \"off\"\n\
         [websocket]\nmax_connections = {n}\n\
         [push_service]\nenabled = true\npublic_url = \"http://127.0.0.1\"\nmax_subscriptions = {n}\n\
         per_subscription_per_minute = 1000000000\nper_sender_per_minute = 1000000000\n",
        dir = dir.display().to_string(),
    );
    let path = dir.join("davpush.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Starts `davpush serve` (under `taskset -c <cpus>` when asked), its log in `serve.log`.
fn start(config: &Path, dir: &Path, cpus: Option<&str>) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start davpush serve")
}
