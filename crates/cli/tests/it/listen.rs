//! `davpush listen` against Radicale behind the gateway, with a real Director: JSON lines,
//! `--exec` coalescing, reconnects after a Director restart, and exit codes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use davpush_testkit::radicale::Radicale;
use serde_json::Value;

use crate::procs::{ALICE, basic};

struct Stack {
    radicale: Radicale,
    director: Option<davpush_director::Running>,
    director_toml: String,
    gateway: davpush_gateway::RunningGateway,
    http: reqwest::Client,
    data: tempfile::TempDir,
}

async fn spawn_director(toml: &str) -> davpush_director::Running {
    let raw = davpush_director::RawConfig::from_toml(toml, &BTreeMap::new(), &Default::default()).unwrap();
    davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap()
}

async fn stack() -> Option<Stack> {
    let radicale = Radicale::start(&[])?;
    let data = tempfile::tempdir().unwrap();
    let director_toml =
        format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n", data.path().display().to_string());
    let director = spawn_director(&director_toml).await;
    let director_toml = director_toml.replace("127.0.0.1:0", &director.addr.to_string());
    let gateway = gateway(&radicale, &data, &director.url(), None).await;
    Some(Stack { radicale, director: Some(director), director_toml, gateway, http: reqwest::Client::new(), data })
}

async fn gateway(
    radicale: &Radicale,
    data: &tempfile::TempDir,
    director: &str,
    director_public: Option<&str>,
) -> davpush_gateway::RunningGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = davpush_gateway::GatewayConfig::from_raw(davpush_gateway::RawGatewayConfig {
        listen: listener.local_addr().unwrap().to_string(),
        upstream: radicale.url.clone(),
        director_url: director.to_owned(),
        director_public_url: director_public.unwrap_or_default().to_owned(),
        data_dir: data.path().to_owned(),
        ..Default::default()
    })
    .unwrap();
    davpush_gateway::spawn(cfg, listener).await.unwrap()
}

impl Stack {
    async fn dav(&self, method: &str, path: &str, body: String) -> u16 {
        self.http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.gateway.url()))
            .header("Authorization", basic(ALICE.0, ALICE.1))
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn put_event(&self, cal: &str, uid: &str) {
        let ics = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//listen test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nSUMMARY:{uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        );
        let s = self.dav("PUT", &format!("{cal}{uid}.ics"), ics).await;
        assert!(s == 201 || s == 204, "PUT {uid}: {s}");
    }

    /// The sync-token Radicale has now (asked directly).
    async fn sync_token(&self, cal: &str) -> String {
        let body = r#"<propfind xmlns="DAV:"><prop><sync-token/></prop></propfind>"#;
        crate::procs::alice_prop(&format!("{}{}", self.radicale.url, &cal[1..]), body, "sync-token").await
    }

    async fn restart_director(&mut self) {
        self.director.take().unwrap().shutdown().await.unwrap();
        self.director = Some(spawn_director(&self.director_toml).await);
    }
}

/// A running `davpush listen` whose stdout and stderr lines are collected.
struct Listen {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

fn listen(args: &[&str], token_file: &Path, password: &str) -> Listen {
    let mut child = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .arg("listen")
        .args(args)
        .args(["--user", ALICE.0, "--password-env", "LISTEN_TEST_PASSWORD"])
        .arg("--token-file")
        .arg(token_file)
        .env("LISTEN_TEST_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    Listen { child, stdout, stderr }
}

impl Listen {
    async fn wait_stderr(&mut self, what: &str, within: Duration) {
        let start = Instant::now();
        while !self.stderr.lock().unwrap().iter().any(|l| l.contains(what)) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("davpush listen exited ({status}) before `{what}`: {:?}", self.stderr.lock().unwrap());
            }
            assert!(start.elapsed() < within, "no `{what}` within {within:?}: {:?}", self.stderr.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn updates(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .filter(|v| v["type"] == "update")
            .collect()
    }

    /// Waits for the exit code (at most 30 s).
    async fn exit_code(mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "davpush listen did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_coalesced_and_never_concurrently_for_a_burst_of_100_changes() {
    let Some(s) = stack().await else { return };
    let cal = "/alice/burst/";
    assert_eq!(s.dav("MKCALENDAR", cal, String::new()).await, 201);
    let dir = tempfile::tempdir().unwrap();
    // Takes 1 s; notes its start, the sync-token it was given, and any overlap with itself.
    let cmd = format!(
        "d={d}; mkdir \"$d/lock\" 2>/dev/null || echo overlap >> \"$d/overlap\"; echo \"$DAVPUSH_SYNC_TOKEN\" >> \"$d/runs\"; sleep 1; rmdir \"$d/lock\"",
        d = dir.path().display()
    );
    let url = format!("{}{cal}", s.gateway.url());
    let mut l = listen(&[&url, "--exec", &cmd], &s.data.path().join("subscription-token"), ALICE.1);
    l.wait_stderr("subscribed 1 collection(s)", Duration::from_secs(20)).await;

    let burst = Instant::now();
    for i in 0..100 {
        s.put_event(cal, &format!("e{i}")).await;
    }
    let burst = burst.elapsed();
    let last = s.sync_token(cal).await;
    let runs = || std::fs::read_to_string(dir.path().join("runs")).unwrap_or_default();
    eventually("the last run sees the last change", Duration::from_secs(15), async || {
        runs().lines().last() == Some(last.as_str()) && !dir.path().join("lock").exists()
    })
    .await;
    let n = runs().lines().count();
    eprintln!("100 changes in {burst:?}: {} notify lines, the command ran {n} times", l.updates().len());
    assert!(!dir.path().join("overlap").exists(), "the command ran concurrently with itself");
    // The burst settles before the first run (300 ms quiet, at most 3 s), and a run takes 1 s:
    // once or twice for a burst shorter than 3 s.
    let bound = 2 + burst.as_secs() as usize / 3;
    assert!(n >= 1 && n <= bound, "{n} runs for a burst of {burst:?} (at most {bound})");
    assert_eq!(l.updates().last().unwrap()["sync_token"], last.as_str(), "the last change was printed");
    assert!(l.updates().iter().all(|u| u["collection"] == url.as_str() && u["trigger"] == "content"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reconnects_after_a_director_restart_and_keeps_reporting() {
    let Some(mut s) = stack().await else { return };
    let cal = "/alice/restart/";
    assert_eq!(s.dav("MKCALENDAR", cal, String::new()).await, 201);
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!("echo \"$DAVPUSH_SYNC_TOKEN\" >> {}/runs", dir.path().display());
    let url = format!("{}{cal}", s.gateway.url());
    let mut l = listen(&[&url, "--exec", &cmd], &s.data.path().join("subscription-token"), ALICE.1);
    l.wait_stderr("subscribed 1 collection(s)", Duration::from_secs(20)).await;
    s.put_event(cal, "before").await;
    let before = s.sync_token(cal).await;
    eventually("the change before the restart", Duration::from_secs(10), async || {
        l.updates().iter().any(|u| u["sync_token"] == before.as_str())
    })
    .await;

    s.restart_director().await;
    l.wait_stderr("disconnected", Duration::from_secs(10)).await;
    l.wait_stderr("reconnected", Duration::from_secs(20)).await;
    eventually("subscribed again", Duration::from_secs(10), async || {
        l.stderr.lock().unwrap().iter().filter(|x| x.contains("subscribed 1 collection(s)")).count() >= 2
    })
    .await;
    assert!(l.stdout.lock().unwrap().iter().any(|x| x.contains("\"resync\"")), "a resync line after the reconnect");

    let t0 = Instant::now();
    s.put_event(cal, "after").await;
    let after = s.sync_token(cal).await;
    eventually("the change after the restart is printed", Duration::from_secs(10), async || {
        l.updates().iter().any(|u| u["sync_token"] == after.as_str())
    })
    .await;
    eprintln!("after the Director restart, a change was printed {} ms after the PUT", t0.elapsed().as_millis());
    let runs = || std::fs::read_to_string(dir.path().join("runs")).unwrap_or_default();
    eventually("--exec ran for the change after the restart", Duration::from_secs(10), async || {
        runs().lines().any(|l| l == after)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_exit_codes_for_no_push_wrong_credentials_and_an_unreachable_director() {
    let Some(s) = stack().await else { return };
    let cal = "/alice/codes/";
    assert_eq!(s.dav("MKCALENDAR", cal, String::new()).await, 201);
    let token = s.data.path().join("subscription-token");

    // Straight at Radicale: no push properties.
    let direct = format!("{}{}", s.radicale.url, &cal[1..]);
    let l = listen(&[&direct], &token, ALICE.1);
    let err = l.stderr.clone();
    assert_eq!(l.exit_code().await, Some(65), "no push: {:?}", err.lock().unwrap());
    assert!(err.lock().unwrap().iter().any(|x| x.contains("does not offer WebDAV Push")), "{:?}", err.lock().unwrap());

    // Wrong password.
    let url = format!("{}{cal}", s.gateway.url());
    let l = listen(&[&url], &token, "wrong");
    let err = l.stderr.clone();
    assert_eq!(l.exit_code().await, Some(77), "{:?}", err.lock().unwrap());
    assert!(err.lock().unwrap().iter().any(|x| x.contains("refused the credentials")), "{:?}", err.lock().unwrap());

    // The gateway advertises a Director that nobody answers for.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = gateway(&s.radicale, &s.data, &s.director.as_ref().unwrap().url(), Some(&format!("http://{dead}/"))).await;
    let url = format!("{}{cal}", gw.url());
    let l = listen(&[&url], &token, ALICE.1);
    let err = l.stderr.clone();
    assert_eq!(l.exit_code().await, Some(69), "{:?}", err.lock().unwrap());
    assert!(err.lock().unwrap().iter().any(|x| x.contains("the Director")), "{:?}", err.lock().unwrap());
}

/// Issue 15: a short disconnect misses nothing. The Director drops the connection (as it does a
/// silent one), a change happens while `listen` waits to reconnect, and after reconnecting it
/// prints that change as an update (replayed from the Director's history), not a resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_listen_misses_nothing_across_a_short_disconnect() {
    let Some(s) = stack().await else { return };
    let cal = "/alice/resume/";
    assert_eq!(s.dav("MKCALENDAR", cal, String::new()).await, 201);
    let url = format!("{}{cal}", s.gateway.url());
    let mut l = listen(&[&url], &s.data.path().join("subscription-token"), ALICE.1);
    l.wait_stderr("subscribed 1 collection(s)", Duration::from_secs(20)).await;
    s.put_event(cal, "before").await;
    let before = s.sync_token(cal).await;
    eventually("the change before the disconnect", Duration::from_secs(10), async || {
        l.updates().iter().any(|u| u["sync_token"] == before.as_str())
    })
    .await;
    let topic = l.updates()[0]["topic"].as_str().unwrap().to_owned();

    let director = s.director.as_ref().unwrap();
    director.state.hub.close_all(davpush_core::live::CloseReason::Timeout);
    l.wait_stderr("disconnected", Duration::from_secs(10)).await;
    // listen waits out its backoff (at least 250 ms) before it reconnects: this change finds
    // nobody listening.
    let token = std::fs::read_to_string(s.data.path().join("notify-token")).unwrap();
    let r = s
        .http
        .post(format!("{}/notify", director.url()))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"topic": topic, "sync_token": "while-away"}))
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["addressed"], 0, "the change happened while listen was away: {report}");
    l.wait_stderr("reconnected", Duration::from_secs(20)).await;
    eventually("the change made while away is printed", Duration::from_secs(10), async || {
        l.updates().iter().any(|u| u["sync_token"] == "while-away")
    })
    .await;
    s.put_event(cal, "after").await;
    let after = s.sync_token(cal).await;
    eventually("and live changes after it", Duration::from_secs(10), async || {
        l.updates().iter().any(|u| u["sync_token"] == after.as_str())
    })
    .await;
    let stdout = l.stdout.lock().unwrap().clone();
    assert!(!stdout.iter().any(|x| x.contains("\"resync\"")), "nothing to re-sync: {stdout:?}");
    let tokens: Vec<String> = l.updates().iter().map(|u| u["sync_token"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tokens, [before, "while-away".to_owned(), after], "each change once, in order");
}
