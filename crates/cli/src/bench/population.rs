//! `davpush bench population`: issue 11's durable population. It starts its own
//! `davpush serve` on a fresh data directory, subscribes `--count` durable subscriptions over the
//! Subscription API (Web Push 60 %, FCM 20 %, APNs 20 %, realistic sizes; `--topics` topics plus
//! one of `--big-topic`), and measures: subscribe/s and each subscribe's round trip (p50, p99,
//! max), the largest SQLite write-ahead log during
//! the storm and its size after a graceful stop, resident memory per subscription (while running
//! and after a restart), restart-to-ready, the notify of the big topic until it is handed to the
//! delivery engine, and the purge of `--expired` expired rows in batches.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

/// Options of `davpush bench population`.
#[derive(Debug, clap::Args)]
pub(crate) struct PopulationArgs {
    /// Durable subscriptions to create.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    count: u64,
    /// Topics besides the big one.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    topics: u64,
    /// Subscribers of the big topic (the first ones created).
    #[arg(long, default_value_t = 10_000)]
    big_topic: u64,
    /// Subscribe requests in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Expired rows to write into the store (with the Director stopped) and purge in batches.
    #[arg(long, default_value_t = 0)]
    expired: u64,
    /// Notifies of the big topic while running, and restarts (each followed by a notify).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// A fresh data directory for the Director this bench starts (created).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The store (default: SQLite in the data directory), e.g. a PostgreSQL URL.
    #[arg(long)]
    store_url: Option<String>,
}

const TOKEN: &str = "bench-population-token-0123456789";
/// A valid P-256 public key and auth secret (RFC 8291's example): the sizes of real ones.
const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const BIG: &str = "bench-big-topic-9f0c1d2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f";

pub(crate) async fn run(args: PopulationArgs) -> anyhow::Result<()> {
    let dir = super::fresh_data_dir(&args.data_dir)?;
    let config = write_config(&dir, &args)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let wal = dir.join("davpush.sqlite-wal");

    progress!("population: starting the Director in {}", dir.display());
    let (mut serve, from) = start(&config, &dir)?;
    let base = until_ready(&http, &dir, from, &mut serve).await?;
    let baseline = rss(serve.id()).unwrap_or(0);

    progress!("population: subscribing {} ({} at a time)", args.count, args.concurrency);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(super::Histogram::new());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (http, url, next, failed) = (http.clone(), format!("{base}/subscribe"), next.clone(), failed.clone());
        let (count, topics, big, latency) = (args.count, args.topics, args.big_topic, latency.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= count {
                    return;
                }
                let sent = Instant::now();
                let ok = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&body(n, topics, big))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 201);
                latency.record(sent.elapsed().as_micros() as u64);
                if !ok {
                    failed.fetch_add(1, Relaxed);
                }
            }
        });
    }
    let mut wal_max = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_report = Instant::now();
    while !tasks.is_empty() {
        tokio::select! {
            _ = tick.tick() => {
                wal_max = wal_max.max(file_len(&wal));
                if last_report.elapsed() > Duration::from_secs(10) {
                    last_report = Instant::now();
                    progress!("population: {} sent, WAL {} MB", next.load(Relaxed).min(args.count), file_len(&wal) >> 20);
                }
            }
            Some(done) = tasks.join_next() => done?,
        }
    }
    let storm = started.elapsed();
    wal_max = wal_max.max(file_len(&wal));
    let running_rss = rss(serve.id()).unwrap_or(0);

    // The big topic's notify, `--rounds` times: answered once every recipient is routed;
    // durable targets are then read from the store and handed to the delivery engine by a task
    // of their own, which records how long that took (`davpush_target_fetch_last_microseconds`).
    let mut running = Vec::new();
    for _ in 0..args.rounds {
        running.push(handover(&http, &base).await?);
    }
    stop(&mut serve)?;
    let wal_after_stop = file_len(&wal);

    // Restarts, each followed by the big topic's notify (SQLite's page cache cold again).
    let mut restarts = Vec::new();
    let mut restart_cpu = Vec::new();
    let mut after_restart = Vec::new();
    let mut restarted_rss = 0;
    let mut loaded = 0;
    for i in 0..args.rounds {
        progress!("population: restart {} of {}", i + 1, args.rounds);
        let t = Instant::now();
        let (mut serve, from) = start(&config, &dir)?;
        let base = until_ready(&http, &dir, from, &mut serve).await?;
        restarts.push(t.elapsed().as_secs_f64());
        restart_cpu.push(cpu_secs(serve.id()).unwrap_or(0.0));
        restarted_rss = restarted_rss.max(rss(serve.id()).unwrap_or(0));
        loaded = reqwest_json(&http, &format!("{base}/readyz")).await?["subscriptions"].as_u64().unwrap_or(0);
        after_restart.push(handover(&http, &base).await?);
        stop(&mut serve)?;
    }

    let purge = if args.expired > 0 { Some(purge(&args, &dir).await?) } else { None };

    let per = |rss: u64| rss.saturating_sub(baseline) as f64 / args.count as f64;
    let failed = failed.load(Relaxed);
    println!("davpush bench population: {} durable subscriptions ({} failed)", args.count, failed);
    println!(
        "  subscribe:        {:.0}/s over {:.1} s, {} concurrent",
        args.count as f64 / storm.as_secs_f64(),
        storm.as_secs_f64(),
        args.concurrency
    );
    let l = latency.summary();
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    println!(
        "  subscribe round trip: p50 {} ms, p99 {} ms, max {} ms (request sent until 201 read)",
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.max_ms)
    );
    println!(
        "  WAL:              max {:.1} MB during the storm, {} bytes after a graceful stop",
        wal_max as f64 / 1048576.0,
        wal_after_stop
    );
    println!(
        "  memory:           {:.0} bytes per subscription running, {:.0} after restart (baseline {} MB)",
        per(running_rss),
        per(restarted_rss),
        baseline >> 20
    );
    println!(
        "  restart to ready: median {:.2} s of {} ({}; {loaded} subscriptions loaded), the Director's CPU until \
         then: median {:.2} s ({})",
        median(&restarts),
        restarts.len(),
        list(&restarts, "s"),
        median(&restart_cpu),
        list(&restart_cpu, "s")
    );
    let addressed = running.iter().chain(&after_restart).map(|h| h.addressed).max().unwrap_or(0);
    for (when, h) in [("running", &running), ("after a restart", &after_restart)] {
        let answered: Vec<f64> = h.iter().map(|h| h.answered_ms).collect();
        let handed: Vec<f64> = h.iter().map(|h| h.handed_ms).collect();
        println!(
            "  notify big topic ({when}): median {:.1} ms until answered (all routed), median {:.1} ms until \
             handed to the engine with targets read from the store ({}; {addressed} addressed)",
            median(&answered),
            median(&handed),
            list(&handed, "ms")
        );
    }
    if let Some((rows, total, batches, max)) = purge {
        println!("  purge:            {rows} expired rows in {total:.2} s, {batches} statements, longest {max:.1} ms");
    }
    if failed > 0 {
        bail!("{failed} subscribe requests failed");
    }
    Ok(())
}

/// One notify of the big topic: how long until it was answered and until its durable
/// deliveries were handed to the delivery engine.
struct Handover {
    answered_ms: f64,
    handed_ms: f64,
    addressed: u64,
}

/// Notifies the big topic and waits until every addressed delivery was handed to a delivery
/// engine; then a second of rest, so that the next figure does not share the CPU with this
/// one's (failing, retried) deliveries.
async fn handover(http: &reqwest::Client, base: &str) -> anyhow::Result<Handover> {
    let handed_before = handed_over(&reqwest_text(http, &format!("{base}/metrics")).await?);
    let t = Instant::now();
    let r = http.post(format!("{base}/notify")).bearer_auth(TOKEN).json(&json!({"topic": BIG})).send().await?;
    let answered_ms = t.elapsed().as_secs_f64() * 1e3;
    let addressed = r.json::<serde_json::Value>().await?["addressed"].as_u64().unwrap_or(0);
    let handed_ms = loop {
        let m = reqwest_text(http, &format!("{base}/metrics")).await?;
        if handed_over(&m) >= handed_before + addressed as f64 {
            break series(&m, "davpush_target_fetch_last_microseconds") / 1e3;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the big topic's deliveries did not reach the engine within 60 s");
        }
        // The figure is the Director's own (its metric), not this loop's: polling more often
        // would only take CPU from the hand-over it measures (each poll renders /metrics).
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Handover { answered_ms, handed_ms, addressed })
}

/// The median of `v` (the lower middle one of an even count), 0 if empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// `v` as "1.2 / 3.4 / 5.6 unit".
fn list(v: &[f64], unit: &str) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    format!("{} {unit}", parts.join(" / "))
}

/// The `n`-th subscribe request: client ids and topics of UUID size, a realistic target.
fn body(n: u64, topics: u64, big: u64) -> serde_json::Value {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let client = format!("{:08x}-{:04x}-4c5d-8e6f-{:012x}", n as u32, (h >> 48) as u16, h & 0xffff_ffff_ffff);
    let topic = if n < big {
        BIG.to_owned()
    } else {
        let t = n % topics;
        format!("{:08x}-3b4a-4c5d-8e6f-{:012x}", t as u32, t.wrapping_mul(0x2545_F491_4F6C_DD1D) & 0xffff_ffff_ffff)
    };
    let hex = format!("{h:016x}");
    let service = match n % 10 {
        0..=5 => json!({"web_push": {
            // ~150 characters, like FCM's and Mozilla's endpoints.
            "endpoint": format!("http://127.0.0.1:9/wpush/v2/gAAAAABk{}{}", hex.repeat(7), n),
            "p256dh": P256DH, "auth": AUTH,
        }}),
        6 | 7 => json!({"fcm": {"registration_token": format!("d{}:APA91bH{}", &hex[..10], hex.repeat(9))}}),
        _ => json!({"apns": {"device_token": hex.repeat(4)}}),
    };
    json!({"client_id": client, "topic": topic, "push_services": service})
}

fn write_config(dir: &Path, args: &PopulationArgs) -> anyhow::Result<PathBuf> {
    // An APNs signing key of the right kind (P-256, PKCS#8 PEM); nothing is ever sent with it.
    davpush_delivery::webpush::vapid::VapidKey::load_or_create(&dir.join("AuthKey_BENCH00001.p8"))?;
    std::fs::write(dir.join("relay-key"), "bench-relay-key-0123456789abcdef\n")?;
    let total = args.count + 1_000;
    let store = args.store_url.as_deref().map(|u| format!("[store]\nurl = {u:?}\n")).unwrap_or_default();
    let config = format!(
        // Port 0: the Director binds a free port and logs it (no port chosen here that another
        // process could take before the Director binds it).
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {dir:?}\n\
         [notify]\ntokens = [{TOKEN:?}]\n\
         [subscription]\ntokens = [{TOKEN:?}]\ngrants = \"off\"\nmax_per_token = {total}\nmax_total = {total}\n\
         {store}\
         [web_push]\nallow_hosts = [\"127.0.0.1:9\"]\nallow_http = true\n\
         [fcm]\nenabled = true\nrelay_url = \"http://127.0.0.1:9\"\nrelay_key_file = {relay:?}\n\
         [apns]\nenabled = true\nbase_url = \"http://127.0.0.1:9\"\nkey_file = {key:?}\nkey_id = \"BENCH00001\"\n\
         team_id = \"BENCHTEAM1\"\nbundle_id = \"org.example.bench\"\n",
        dir = dir.display().to_string(),
        relay = dir.join("relay-key").display().to_string(),
        key = dir.join("AuthKey_BENCH00001.p8").display().to_string(),
    );
    let path = dir.join("davpush.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Starts `davpush serve`, its log appended to `serve.log`; the log's length before it, where
/// this start's lines begin.
fn start(config: &Path, dir: &Path) -> anyhow::Result<(Child, u64)> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("serve.log"))?;
    let from = log.metadata()?.len();
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start davpush serve")?;
    Ok((child, from))
}

/// Waits until the Director started by [`start`] has loaded its subscriptions; its base URL,
/// from the address it logs (`Push Director listening addr=…`).
pub(super) async fn until_ready(
    http: &reqwest::Client,
    dir: &Path,
    from: u64,
    serve: &mut Child,
) -> anyhow::Result<String> {
    let mut base: Option<String> = None;
    loop {
        if let Some(status) = serve.try_wait()? {
            bail!("davpush serve exited with {status} (see serve.log in the data directory)");
        }
        if base.is_none() {
            let log = std::fs::read(dir.join("serve.log"))?;
            let text = String::from_utf8_lossy(log.get(from as usize..).unwrap_or_default());
            base = text.lines().find_map(|l| {
                let rest = &l[l.find("Push Director listening")?..];
                let addr = rest[rest.find("addr=")? + 5..].split_whitespace().next()?;
                Some(format!("http://{addr}"))
            });
        }
        if let Some(base) = &base
            && http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().as_u16() == 200)
        {
            return Ok(base.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, then waits for the exit.
pub(super) fn stop(serve: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status()?;
    if !status.success() {
        bail!("cannot signal davpush serve");
    }
    let status = serve.wait()?;
    if !status.success() {
        bail!("davpush serve stopped with {status}");
    }
    Ok(())
}

async fn reqwest_text(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(http.get(url).send().await?.text().await?)
}

/// The value of one Prometheus series (the whole name with its labels), 0 if absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// Deliveries of the durable services handed to their engines so far (queued, coalesced or
/// dropped).
fn handed_over(metrics: &str) -> f64 {
    let mut n = 0.0;
    for service in ["web_push", "fcm", "apns"] {
        for outcome in ["queued", "coalesced", "dropped"] {
            n += series(metrics, &format!("davpush_deliveries_total{{service=\"{service}\",outcome=\"{outcome}\"}}"));
        }
    }
    n
}

async fn reqwest_json(http: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    Ok(http.get(url).send().await?.json().await?)
}

/// Writes `--expired` rows that expired long ago and purges them as the Director does; returns
/// (rows purged, seconds, statements, longest statement in ms).
async fn purge(args: &PopulationArgs, dir: &Path) -> anyhow::Result<(u64, f64, u64, f64)> {
    let url = match &args.store_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.join("davpush.sqlite").display()),
    };
    let store = davpush_store::open(&url).await?;
    progress!("population: writing {} expired rows", args.expired);
    let mut tasks = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..64 {
        let (store, next, expired) = (store.clone(), next.clone(), args.expired);
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= expired {
                    return Ok::<(), davpush_core::StoreError>(());
                }
                store
                    .upsert(&davpush_core::StoredSubscription {
                        id: format!("expired-{n:09}"),
                        client_id: format!("expired-client-{n:09}"),
                        topic: "bench-expired".into(),
                        service: "fcm".into(),
                        target: format!("{{\"registration_token\":\"expired{n:0150}\"}}"),
                        expires: 1,
                        created: 0,
                        triggers: 3,
                    })
                    .await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    progress!("population: purging");
    let now = davpush_core::unix_now();
    let (mut rows, mut statements, mut longest) = (0u64, 0u64, 0f64);
    let t = Instant::now();
    loop {
        let s = Instant::now();
        let n = store.purge_expired(now, davpush_core::PURGE_BATCH).await?;
        longest = longest.max(s.elapsed().as_secs_f64() * 1e3);
        statements += 1;
        rows += n;
        if n < davpush_core::PURGE_BATCH as u64 {
            break;
        }
    }
    let total = t.elapsed().as_secs_f64();
    store.close().await;
    Ok((rows, total, statements, longest))
}

/// CPU time process `pid` used so far (user and system, all threads, ended ones too), seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from the 3rd: utime is the 14th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // In USER_HZ, which Linux fixes at 100 for what it shows user space.
    Some(ticks / 100.0)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
