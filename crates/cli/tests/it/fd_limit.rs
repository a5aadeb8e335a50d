//! Issue 9, item 2: the `davpush serve` binary, started with a low file-descriptor limit
//! (`ulimit -n` in a child process), keeps answering `/healthz` and authenticated notifies on
//! fresh connections while far more idle connections than it has descriptors are open.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use davpush_testkit::sockets::{idle_connections, wait_closed_by_server};
use serde_json::{Value, json};

const TOKEN: &str = "notify-token-fd-limit-0123456789";
const FD_LIMIT: u32 = 128;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `davpush serve` under `ulimit -n FD_LIMIT`; returns it and its address (from its
/// JSON start-up log).
fn start(dir: &std::path::Path) -> (Killed, std::net::SocketAddr) {
    let config = dir.join("davpush.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nheader_read_timeout_secs = 300\n\
             max_pending_connections = 100000\n[notify]\ntokens = [{TOKEN:?}]\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new("sh")
        .args(["-c", &format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_davpush"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let (Some(addr), Some(t)) = (v["fields"]["addr"].as_str(), tx.as_ref())
                && v["fields"]["message"] == "Push Director listening"
            {
                let _ = t.send(addr.parse::<std::net::SocketAddr>().unwrap());
                tx = None;
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the Director did not start");
    (child, addr)
}

#[tokio::test]
async fn issue_9_at_the_descriptor_limit_healthz_and_notify_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, addr) = start(dir.path());
    // Ready (its durable subscriptions loaded, issue 11) before the descriptors run out: what is
    // tested is serving at the limit, not loading at it.
    let ready = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    davpush_testkit::eventually("the Director is ready", || async {
        ready.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Three times more idle connections than the process may hold descriptors.
    let mut idle = idle_connections(addr, 3 * FD_LIMIT as usize).await;
    // A bound so that a server that stopped accepting fails the test instead of hanging it.
    let fresh =
        || reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
    let url = format!("http://{addr}");
    let r = fresh().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = fresh().post(format!("{url}/notify")).bearer_auth(TOKEN).json(&json!({"topic": "t"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // The oldest idle connections were closed to free descriptors, and counted.
    wait_closed_by_server(&mut idle[0], Duration::from_secs(30)).await;
    let m = fresh().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let shed: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("davpush_requests_rejected_total{reason=\"fd_limit\"} "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0);
    assert!(shed >= FD_LIMIT as f64, "{m}");
}
