//! Real processes for end-to-end tests, started as an operator starts them: `davpush serve`,
//! `davpush gateway` (the binary under test) and Radicale (from `$DAVPUSH_PYTHON`). Each is
//! killed when dropped; its stderr is kept for assertion messages.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The binary under test.
pub(crate) const DAVPUSH: &str = env!("CARGO_BIN_EXE_davpush");

/// `davpush` without the test harness's own `DAVPUSH_*` variables (they are not the
/// configuration of what a test starts).
pub(crate) fn davpush() -> Command {
    let mut cmd = Command::new(DAVPUSH);
    clean_env(&mut cmd);
    cmd
}

pub(crate) fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")) {
        cmd.env_remove(k);
    }
}

/// `PATH` with the directory of the binary under test first, so that a documented `davpush …`
/// command runs it.
pub(crate) fn path_with_davpush() -> String {
    let dir = Path::new(DAVPUSH).parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// A running child process whose stderr lines are collected.
pub(crate) struct Proc {
    child: Child,
    /// Its stderr, without terminal colour codes.
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
    /// The address it logged that it listens on.
    pub(crate) addr: SocketAddr,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Proc {
    /// Starts `cmd` and waits until it logs `marker` with `addr=<address>` (at most 60 s).
    pub(crate) fn start(mut cmd: Command, marker: &'static str) -> Proc {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if line.contains(marker)
                    && let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))
                {
                    let _ = tx.try_send(addr.parse::<SocketAddr>().unwrap());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut proc = Proc { child, stderr, addr: "0.0.0.0:0".parse().unwrap() };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => proc.addr = addr,
            Err(_) => panic!("no `{marker}` within 60 s: {:?}", proc.stderr.lock().unwrap()),
        }
        proc
    }

    /// `http://<addr>/`
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `davpush serve` with `data_dir` on a free port.
pub(crate) fn director(data_dir: &Path) -> Proc {
    director_on(data_dir, "127.0.0.1:0")
}

/// `davpush serve` with `data_dir` on `listen`.
pub(crate) fn director_on(data_dir: &Path, listen: &str) -> Proc {
    let mut cmd = davpush();
    cmd.args(["serve", "--listen", listen, "--data-dir"]).arg(data_dir);
    Proc::start(cmd, "Push Director listening")
}

/// `davpush gateway` in front of `upstream` with `data_dir`, on a free port.
pub(crate) fn gateway(data_dir: &Path, upstream: &str, director: &str) -> Proc {
    let mut cmd = davpush();
    cmd.args(["gateway", "--listen", "127.0.0.1:0", "--upstream", upstream, "--director", director, "--data-dir"])
        .arg(data_dir);
    Proc::start(cmd, "WebDAV gateway listening")
}

/// The test users of [`radicale`].
pub(crate) const ALICE: (&str, &str) = ("alice", "alice-password");

/// A Radicale started with `config` (a configuration file's text) plus users and a port on
/// the command line, with `env` added to its environment. `None`: skipped (no Radicale).
pub(crate) struct Radicale {
    child: Child,
    /// `http://127.0.0.1:<port>/`
    pub(crate) url: String,
    log: std::path::PathBuf,
}

impl Radicale {
    pub(crate) fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Option<Radicale> {
        let py = davpush_testkit::python::python_with(&["radicale"])?;
        let port = crate::documented::free_port();
        let users = dir.join("radicale-users");
        std::fs::write(&users, format!("{}:{}\n", ALICE.0, ALICE.1)).unwrap();
        let config_file = dir.join("radicale-config");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join("radicale.log");
        let mut cmd = Command::new(py);
        clean_env(&mut cmd);
        cmd.args(["-m", "radicale", "--config"])
            .arg(&config_file)
            .args(["--server-hosts", &format!("127.0.0.1:{port}")])
            .args(["--auth-type", "htpasswd", "--auth-htpasswd-encryption", "plain", "--auth-htpasswd-filename"])
            .arg(&users)
            .args(["--rights-type", "owner_only", "--logging-level", "warning"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let r = Radicale { child, url: format!("http://127.0.0.1:{port}/"), log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Radicale did not start within 30 s: {}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }

    /// What Radicale logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A WebDAV request as alice; the status.
pub(crate) async fn dav(method: &str, url: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("Authorization", basic(ALICE.0, ALICE.1))
        .header("Content-Type", "text/calendar; charset=utf-8")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A one-event calendar object.
pub(crate) fn event(uid: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n\
         DTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nSUMMARY:{uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

/// The push topic the gateway advertises for `url` (PROPFIND as alice).
pub(crate) async fn advertised_topic(url: &str) -> String {
    let body = r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><P:topic/></prop></propfind>"#;
    alice_prop(url, body, "topic").await
}

/// The text of the first `element` in alice's `PROPFIND Depth: 0` of `url` with `body`.
pub(crate) async fn alice_prop(url: &str, body: &str, element: &str) -> String {
    let text = reqwest::Client::new()
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), url)
        .header("Authorization", basic(ALICE.0, ALICE.1))
        .header("Depth", "0")
        // Xandikos refuses a PROPFIND body without it (415).
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open = format!("{element}>");
    let start = text.find(&open).unwrap_or_else(|| panic!("no {element} for {url}: {text}")) + open.len();
    text[start..start + text[start..].find('<').unwrap()].to_owned()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the gateway (`/.davpush/ws`, authenticated as alice) subscribed to
/// `collection` (a path), whose topic is `topic`.
pub(crate) async fn subscribe_through_gateway(gateway: &Proc, collection: &str, topic: &str) -> Ws {
    let mut req = format!("ws://{}/.davpush/ws", gateway.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", basic(ALICE.0, ALICE.1).parse().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", "davpush.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "hello");
    let subscribe = json!({"type": "subscribe", "id": "s1", "topic": topic, "collection": collection});
    ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let answer = next_frame(&mut ws).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    ws
}

/// The next JSON frame (at most 15 s).
pub(crate) async fn next_frame(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("no frame within 15 s").unwrap().unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The fenced block of `lang` in `markdown` whose text contains `needle` (exactly one).
pub(crate) fn fenced_block(markdown: &str, lang: &str, needle: &str) -> String {
    let open = format!("```{lang}\n");
    let blocks: Vec<&str> = markdown
        .split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(b, _)| b))
        .filter(|b| b.contains(needle))
        .collect();
    assert_eq!(blocks.len(), 1, "exactly one ```{lang} block with `{needle}`: {blocks:?}");
    format!("{}\n", blocks[0])
}

/// The repository's file `path`.
pub(crate) fn repo_file(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../").to_owned() + path).unwrap()
}
