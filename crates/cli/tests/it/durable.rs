//! Issue 11 (a million durable subscriptions), at small sizes against a real `davpush serve`:
//! the SQLite write-ahead log is truncated at a graceful stop, durable subscribes survive
//! SIGKILL, and the subscriptions are loaded again at the next start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

const NOTIFY: &str = "notify-token-issue-11-0123456789";
const SUBSCRIBE: &str = "subscription-token-issue-11-0123456789";
/// A valid P-256 public key and auth secret (RFC 8291's example): every subscription may share it.
const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// A `davpush serve` process, killed when dropped.
struct Serve {
    child: std::process::Child,
    addr: String,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    fn start(config: &Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_davpush"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["fields"]["message"] == "Push Director listening"
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.try_send(addr.to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the Director did not start");
        Serve { child, addr, reader: Some(reader) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `signal` and waits for the process to end; returns whether it exited with success.
    fn stop(mut self, signal: &str) -> bool {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        status.success()
    }

    /// Waits until `/readyz` answers 200.
    async fn ready(&self) {
        let http = reqwest::Client::new();
        davpush_testkit::eventually("/readyz answers 200", || async {
            http.get(self.url("/readyz")).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// The `davpush_subscriptions{service="web_push"}` gauge.
    async fn web_push_count(&self) -> u64 {
        let text = reqwest::Client::new().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("davpush_subscriptions{service=\"web_push\"}")).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path) -> PathBuf {
    let config = dir.join("davpush.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[notify]\ntokens = [{NOTIFY:?}]\n\
             [subscription]\ntokens = [{SUBSCRIBE:?}]\ngrants = \"off\"\n\
             [web_push]\nallow_hosts = [\"127.0.0.1:9\"]\nallow_http = true\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    config
}

/// Subscribes clients `from..to` (each its own client id, ten topics), 16 requests at a time;
/// every answer must be 201.
async fn subscribe_many(serve: &Serve, from: usize, to: usize) {
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (from..to).collect::<Vec<_>>().chunks(to.saturating_sub(from).div_ceil(16).max(1)) {
        let (http, url, chunk) = (http.clone(), serve.url("/subscribe"), chunk.to_vec());
        tasks.spawn(async move {
            for n in chunk {
                let body = json!({
                    "client_id": format!("client-{n}"),
                    "topic": format!("topic-{}", n % 10),
                    "push_services": {"web_push": {
                        "endpoint": format!("http://127.0.0.1:9/p/{n}"), "p256dh": P256DH, "auth": AUTH
                    }}
                });
                let r = http.post(&url).bearer_auth(SUBSCRIBE).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn wal_len(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir.join("data/davpush.sqlite-wal")).ok().map(|m| m.len())
}

#[tokio::test]
async fn issue_11_a_graceful_stop_leaves_no_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let serve = Serve::start(&config);
    serve.ready().await;
    subscribe_many(&serve, 0, 300).await;
    assert!(wal_len(dir.path()).unwrap_or(0) > 0, "the subscribes went through the write-ahead log");
    let metrics = reqwest::get(serve.url("/metrics")).await.unwrap().text().await.unwrap();
    let wal_line = metrics.lines().find(|l| l.starts_with("davpush_store_wal_bytes ")).expect(&metrics);
    assert_ne!(wal_line, "davpush_store_wal_bytes 0", "/metrics shows the log's size");
    assert!(serve.stop("-TERM"), "a graceful stop exits with success");
    assert_eq!(wal_len(dir.path()).unwrap_or(0), 0, "the log is checkpointed and truncated at stop");

    let serve = Serve::start(&config);
    serve.ready().await;
    assert_eq!(serve.web_push_count().await, 300, "every subscription is loaded again");
}

#[tokio::test]
async fn issue_11_every_201_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let serve = Serve::start(&config);
    serve.ready().await;
    // 16 at a time: the writer commits them in groups; each 201 comes after its group's commit.
    subscribe_many(&serve, 0, 400).await;
    assert!(!serve.stop("-KILL"), "killed, not stopped");
    let serve = Serve::start(&config);
    serve.ready().await;
    assert_eq!(serve.web_push_count().await, 400, "every subscription answered 201 is there after SIGKILL");
}

/// The command the README's figures section tells users to type, run as printed (in a fresh
/// directory): its report is complete and consistent.
#[test]
fn issue_11_bench_population_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["bench", "population", "--count", "2000", "--topics", "100", "--big-topic", "200"])
        .args(["--expired", "5000", "--data-dir", "bench-population"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "2000 durable subscriptions (0 failed)",
        "subscribe round trip: p50 ",
        "0 bytes after a graceful stop",
        "; 2000 subscriptions loaded)",
        "; 200 addressed)",
        "median",
        "5000 expired rows",
        "3 statements",
    ] {
        assert!(text.contains(expected), "`{expected}` missing in:\n{text}");
    }
    let again = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["bench", "population", "--count", "10", "--data-dir", "bench-population"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success(), "a used data directory is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}
