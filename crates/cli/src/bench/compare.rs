//! `davpush bench fanout`: the Director's fan-out next to a naive broadcast server's
//! ([`super::baseline`]), measured the same way in the same run (issue 17).
//!
//! Each run starts both servers in turn as their own processes (the Director on a fresh data
//! directory with its default settings), pinned with `taskset` to `--server-cpus` while this
//! process moves to `--client-cpus`, and drives each with the load tool's own connect, idle and
//! fan-out phases (one topic, so that one notify reaches every connection). The load tool reads
//! the server's on-CPU time, all threads, from /proc before each notify and after its last
//! frame arrived ([`super::cpu`]), so teardown and setup are not counted. The client is the
//! bottleneck on a small machine: frames/s mostly measures it, CPU per frame the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::*;

/// Options of `davpush bench fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    /// WebSocket connections, all subscribed to one topic.
    #[arg(long, short = 'n', default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Fan-out rounds per server and run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Runs (each server once per run, alternately); medians over runs are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Seconds to hold the connections idle before measuring memory.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    idle_secs: u64,
    /// A fresh directory for the servers' data and logs (created).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// CPUs for the servers (a `taskset` list, e.g. 0); default 0 on a machine with two or more
    /// cores when `taskset` is installed, else unpinned.
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<String>,
    /// CPUs for this load tool (default: the others).
    #[arg(long, value_name = "LIST")]
    client_cpus: Option<String>,
    /// Spread client sockets over 127.0.0.1..127.0.0.K (beyond ~28,000 connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    source_addrs: u8,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

const TOKEN: &str = "bench-fanout-token-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Davpush,
    Baseline,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Davpush => "davpush",
            Server::Baseline => "baseline",
        }
    }
}

/// One server's figures of one run.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    cpu_us_per_frame: Option<f64>,
    bytes_per_conn: Option<f64>,
    last_frame_ms: Option<f64>,
    frames_per_s: Option<f64>,
    received: u64,
    expected: u64,
}

pub(crate) async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let dir = args.data_dir.canonicalize()?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty: give a fresh directory", dir.display());
    }
    let (server_cpus, client_cpus) = pinning(&args);
    match (&server_cpus, &client_cpus) {
        (Some(s), Some(c)) => {
            progress!("fanout: servers pinned to CPU(s) {s}, this load tool to CPU(s) {c}");
            let pid = std::process::id().to_string();
            let ok = Command::new("taskset").args(["-a", "-p", "-c", c, &pid]).stdout(Stdio::null()).status()?;
            if !ok.success() {
                bail!("taskset could not pin this process to CPU(s) {c}");
            }
        }
        _ => progress!("fanout: not pinned (no taskset, or one core): server and client share the CPUs"),
    }
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build()?;
    let mut results: Vec<(Server, Figures)> = Vec::new();
    for run in 1..=args.runs {
        for server in [Server::Davpush, Server::Baseline] {
            let sdir = dir.join(format!("{}-{run}", server.name()));
            std::fs::create_dir_all(&sdir)?;
            progress!("fanout: run {run}/{}, {}", args.runs, server.name());
            let mut child = start(server, &sdir, server_cpus.as_deref(), &args)?;
            let measured = async {
                let base = until_ready(&http, &sdir, &mut child).await?;
                let report = bench(load_args(&args, base, child.id())).await?;
                Ok::<_, anyhow::Error>(figures(&report))
            }
            .await;
            // Our own child, by its id.
            let _ = child.kill();
            let _ = child.wait();
            results.push((server, measured?));
        }
    }
    let summary = Summary::new(&args, &results, server_cpus.as_deref());
    if args.json {
        eprint!("{}", summary.human());
        println!("{}", summary.json());
    } else {
        print!("{}", summary.human());
    }
    Ok(())
}

/// `(server, client)` CPU lists, when pinning is possible.
fn pinning(args: &FanoutArgs) -> (Option<String>, Option<String>) {
    let cores = machine_cores().unwrap_or(1);
    let taskset = Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !taskset || (cores < 2 && args.server_cpus.is_none()) {
        return (None, None);
    }
    let server = args.server_cpus.clone().unwrap_or_else(|| "0".into());
    let client = args.client_cpus.clone().unwrap_or_else(|| {
        if args.server_cpus.is_none() { format!("1-{}", cores - 1) } else { format!("0-{}", cores - 1) }
    });
    (Some(server), Some(client))
}

/// The load tool's options for one server: connect, idle, fan-out; no sustained phase.
fn load_args(args: &FanoutArgs, base: String, pid: u32) -> BenchArgs {
    BenchArgs {
        command: None,
        url: base,
        notify_token: Some(TOKEN.into()),
        notify_token_file: None,
        subscription_token: Some(TOKEN.into()),
        subscription_token_file: None,
        grant_key_file: None,
        connections: args.connections,
        topics: 1,
        rate: 0.0,
        duration: 1,
        source_addrs: args.source_addrs,
        connect_concurrency: 128,
        idle_secs: args.idle_secs,
        fanout_rounds: args.rounds,
        batch_ms: 10,
        batch_max: 1000,
        notify_concurrency: 4,
        drain_secs: 30,
        read_buffer: 2048,
        client_threads: None,
        stalled: 0,
        stalled_rcvbuf: None,
        stalled_all_topics: false,
        json: false,
        server_pid: Some(pid),
    }
}

fn figures(r: &Report) -> Figures {
    Figures {
        cpu_us_per_frame: r.fanout_cpu_per_frame_us(),
        bytes_per_conn: r.bytes_per_connection(),
        last_frame_ms: r.fanout_median_ms(),
        frames_per_s: r.fanout_median_rate(),
        received: r.fanout.iter().map(|f| f.received).sum(),
        expected: r.fanout.iter().map(|f| f.expected).sum(),
    }
}

/// Starts one server, its stderr in `server.log` of `dir`.
fn start(server: Server, dir: &Path, cpus: Option<&str>, args: &FanoutArgs) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    match server {
        Server::Davpush => {
            let config = dir.join("davpush.toml");
            let max = u64::from(args.connections) + 1000;
            std::fs::write(
                &config,
                format!(
                    // Port 0: the Director binds a free port and logs it.
                    "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {dir:?}\n\
                     [notify]\ntokens = [{TOKEN:?}]\n\
                     [subscription]\ntokens = [{TOKEN:?}]\ngrants = \"off\"\n\
                     [websocket]\nmax_connections = {max}\n",
                    dir = dir.display().to_string()
                ),
            )?;
            cmd.args(["serve", "--config"]).arg(config);
        }
        Server::Baseline => {
            cmd.args(["bench", "baseline-server", "--listen", "127.0.0.1:0"]);
        }
    }
    let log = std::fs::File::create(dir.join("server.log"))?;
    cmd.env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    cmd.spawn().with_context(|| format!("cannot start the {} server", server.name()))
}

/// Waits until the server logged its address and answers `GET /readyz`; its base URL.
async fn until_ready(http: &reqwest::Client, dir: &Path, child: &mut Child) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut base: Option<String> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited with {status} (see {})", dir.join("server.log").display());
        }
        if Instant::now() > deadline {
            bail!("the server was not ready within 60 s (see {})", dir.join("server.log").display());
        }
        if base.is_none() {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            base = log.lines().find_map(|l| {
                let rest = &l[l.find("listening")?..];
                let addr = rest[rest.find("addr=")? + 5..].split_whitespace().next()?;
                Some(format!("http://{addr}"))
            });
        }
        if let Some(base) = &base
            && http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
        {
            return Ok(base.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Medians over runs, per server.
struct Summary {
    connections: u32,
    rounds: u32,
    runs: u32,
    pinned: Option<String>,
    davpush: Medians,
    baseline: Medians,
}

#[derive(Debug, Default)]
struct Medians {
    cpu_us_per_frame: Option<f64>,
    bytes_per_conn: Option<f64>,
    last_frame_ms: Option<f64>,
    frames_per_s: Option<f64>,
    received: u64,
    expected: u64,
    /// Each run's CPU per frame, in run order.
    cpu_runs: Vec<f64>,
}

impl Medians {
    fn of(results: &[(Server, Figures)], which: Server) -> Medians {
        let f: Vec<Figures> = results.iter().filter(|(s, _)| *s == which).map(|(_, f)| *f).collect();
        let m = |g: fn(&Figures) -> Option<f64>| median(f.iter().filter_map(g).collect());
        Medians {
            cpu_us_per_frame: m(|f| f.cpu_us_per_frame),
            bytes_per_conn: m(|f| f.bytes_per_conn),
            last_frame_ms: m(|f| f.last_frame_ms),
            frames_per_s: m(|f| f.frames_per_s),
            received: f.iter().map(|f| f.received).sum(),
            expected: f.iter().map(|f| f.expected).sum(),
            cpu_runs: f.iter().filter_map(|f| f.cpu_us_per_frame).collect(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "server_cpu_us_per_frame": self.cpu_us_per_frame,
            "server_cpu_us_per_frame_runs": self.cpu_runs,
            "bytes_per_idle_connection": self.bytes_per_conn,
            "fanout_last_frame_ms": self.last_frame_ms,
            "fanout_frames_per_s": self.frames_per_s,
            "frames_received": self.received,
            "frames_expected": self.expected,
        })
    }
}

impl Summary {
    fn new(args: &FanoutArgs, results: &[(Server, Figures)], pinned: Option<&str>) -> Summary {
        Summary {
            connections: args.connections,
            rounds: args.rounds,
            runs: args.runs,
            pinned: pinned.map(str::to_owned),
            davpush: Medians::of(results, Server::Davpush),
            baseline: Medians::of(results, Server::Baseline),
        }
    }

    fn ratio(&self) -> Option<f64> {
        Some(self.davpush.cpu_us_per_frame? / self.baseline.cpu_us_per_frame?)
    }

    fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\ndavpush bench fanout: {} connections on one topic, {} rounds × {} runs, medians over runs; {}",
            self.connections,
            self.rounds,
            self.runs,
            match &self.pinned {
                Some(c) => format!("servers pinned to CPU(s) {c}, the load tool to the others"),
                None => "not pinned".into(),
            }
        );
        let _ = writeln!(
            s,
            "  {:<10} {:>16} {:>14} {:>16} {:>12} {:>14}",
            "", "server CPU/frame", "memory/conn", "fan-out (last)", "frames/s", "frames"
        );
        for (name, m) in [("davpush", &self.davpush), ("baseline", &self.baseline)] {
            let frames = format!("{}/{}", m.received, m.expected);
            let _ = writeln!(
                s,
                "  {:<10} {:>16} {:>14} {:>16} {:>12} {:>14}",
                name,
                m.cpu_us_per_frame.map_or_else(|| "n/a".into(), |v| format!("{v:.2} µs")),
                m.bytes_per_conn.map_or_else(|| "n/a".into(), kib),
                opt_ms(m.last_frame_ms),
                m.frames_per_s.map_or_else(|| "n/a".into(), |v| format!("{v:.0}")),
                frames,
            );
        }
        if let Some(r) = self.ratio() {
            let _ = writeln!(s, "  davpush / baseline server CPU per frame: {r:.2}");
        }
        let _ = writeln!(
            s,
            "  (baseline: one broadcast channel per topic, each connection's task woken to write the frame \
             itself; same HTTP stack and WebSocket buffers; no mailbox, coalescing, history or timeouts)"
        );
        s
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections,
            "rounds": self.rounds,
            "runs": self.runs,
            "server_cpus": self.pinned,
            "davpush": self.davpush.json(),
            "baseline": self.baseline.json(),
            "cpu_ratio": self.ratio(),
        })
    }
}
