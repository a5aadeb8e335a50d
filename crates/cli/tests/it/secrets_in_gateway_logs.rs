//! Issue 12, item 4, for the gateway: a full run of the Director and the gateway in front of
//! Radicale, both at `RUST_LOG=debug`, writes none of the secrets it handled into either log:
//! the WebDAV password (plain or as Basic credentials), the Director's tokens, the grant key and
//! topic secret, the grants the gateway signed and the WebSocket ticket it issued.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Logged {
    fn spawn(mut cmd: Command) -> Logged {
        let mut child = cmd
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Logged { child, lines, reader: Some(reader) }
    }

    /// Stops the process (SIGTERM, as an operator would) and returns its whole log.
    fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(port: u16, who: &mut Logged) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = who.child.try_wait() {
            panic!("exited {s}:\n{}", who.lines.lock().unwrap().join("\n"));
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn issue_12_the_gateways_and_directors_debug_logs_hold_no_secret() {
    let Some(radicale) = davpush_testkit::radicale::Radicale::start(&[]) else { return };
    let (alice, password) = davpush_testkit::radicale::USERS[0];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (dport, gport) = (crate::documented::free_port(), crate::documented::free_port());
    let config = dir.path().join("davpush.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:{dport}\"\ndata_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_davpush");
    let mut serve = Command::new(bin);
    serve.args(["serve", "--config"]).arg(&config);
    let mut director = Logged::spawn(serve);
    wait_for(dport, &mut director);
    let mut gw = Command::new(bin);
    gw.args(["gateway", "--upstream", &radicale.url, "--listen", &format!("127.0.0.1:{gport}")])
        .args(["--director", &format!("http://127.0.0.1:{dport}")])
        .arg("--data-dir")
        .arg(&data);
    let mut gateway = Logged::spawn(gw);
    wait_for(gport, &mut gateway);

    let base = format!("http://127.0.0.1:{gport}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let cal = format!("{base}/{alice}/cal/");
    let r = http
        .request(reqwest::Method::from_bytes(b"MKCALENDAR").unwrap(), &cal)
        .basic_auth(alice, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The push properties with a grant, asked for by name.
    let body = r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push" xmlns:G="urn:davpush:1"><prop><P:topic/><G:grant/></prop></propfind>"#;
    let r = http
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &cal)
        .basic_auth(alice, Some(password))
        .header("Depth", "0")
        .header("Content-Type", "application/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let text = r.text().await.unwrap();
    let between = |open: &str| -> String {
        let start = text.find(open).map(|i| i + open.len()).unwrap_or_else(|| panic!("no {open} in {text}"));
        let start = start + text[start..].find('>').unwrap() + 1;
        text[start..start + text[start..].find('<').unwrap()].trim().to_owned()
    };
    let topic = between(":topic");
    let grant = between(":grant");
    assert!(grant.contains('.'), "{text}");

    // A ticket for the web client, and its WebSocket through the gateway.
    let r = http
        .post(format!("{base}/.davpush/ticket"))
        .basic_auth(alice, Some(password))
        .json(&json!({"collections": [format!("/{alice}/cal/")]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let ticket: serde_json::Value = r.json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{gport}/.davpush/ws?ticket={ticket}")).await.unwrap();
    let _hello = crate::secrets_in_logs::next_text(&mut ws).await;
    ws.send(Message::Text(json!({"type": "subscribe", "topic": topic}).to_string().into())).await.unwrap();
    let answer = crate::secrets_in_logs::next_text(&mut ws).await;
    assert!(answer.contains("subscribed"), "{answer}");

    // A write through the gateway: the Director is told with the notify token.
    let event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//test//EN\r\nBEGIN:VEVENT\r\nUID:1@test\r\n\
                 DTSTAMP:20260101T000000Z\r\nDTSTART:20260101T100000Z\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let r = http
        .put(format!("{cal}1.ics"))
        .basic_auth(alice, Some(password))
        .header("Content-Type", "text/calendar")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let frame = crate::secrets_in_logs::next_text(&mut ws).await;
    assert!(frame.contains("notify") && frame.contains(&topic), "{frame}");
    // A wrong password is refused and logged as a refusal, not by its value.
    let r = http.get(&cal).basic_auth(alice, Some("wrong-password-never-logged")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A registration URL stands for its registration: its token is not logged.
    let registration = "/.davpush/registrations/a-registration-token-never-logged";
    let r = http.delete(format!("{base}{registration}")).basic_auth(alice, Some(password)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    drop(ws);

    let glog = gateway.stop();
    let dlog = director.stop();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{alice}:{password}"));
    let file = |name: &str| std::fs::read_to_string(data.join(name)).unwrap().trim().to_owned();
    let mut secrets = vec![
        ("password", password.to_owned()),
        ("wrong password", "wrong-password-never-logged".to_owned()),
        ("Basic credentials", basic),
        ("notify token", file("notify-token")),
        ("subscription token", file("subscription-token")),
        ("grant", grant.clone()),
        ("grant signature", grant.split_once('.').unwrap().1.to_owned()),
        ("ticket", ticket.clone()),
        ("registration token", "a-registration-token-never-logged".to_owned()),
    ];
    for key in file("grant-key").lines().chain(file("topic-secret").lines()) {
        // Each key line; the value part is what must never show.
        let value = key.rsplit([' ', ':', '=']).next().unwrap_or(key).trim();
        if value.len() >= 16 {
            secrets.push(("key", value.to_owned()));
        }
    }
    // Issue 13: one access line per request, with the user's name alone.
    let access: Vec<&str> = glog.lines().filter(|l| l.contains("davpush_gateway::access")).collect();
    let line = |method: &str, path: &str, status: u16| {
        let fields = format!("method={method} path={path} status={status} ");
        access
            .iter()
            .find(|l| l.contains(&fields))
            .unwrap_or_else(|| panic!("no access line {fields}in\n{glog}"))
            .to_owned()
    };
    assert!(line("PUT", &format!("/{alice}/cal/1.ics"), 201).ends_with(&format!("user={alice}")), "{glog}");
    assert!(line("GET", &format!("/{alice}/cal/"), 401).ends_with(&format!("user={alice}")), "{glog}");
    assert!(line("GET", "/.davpush/ws", 101).ends_with("user=-"), "{glog}");
    assert!(line("DELETE", "/.davpush/registrations/***", 404).contains("duration_ms="), "{glog}");
    assert!(!glog.contains("ticket="), "a query string is in the gateway's log:\n{glog}");
    for (who, log) in [("gateway", &glog), ("Director", &dlog)] {
        assert!(!log.is_empty(), "the {who} logged nothing at debug");
        for (what, secret) in &secrets {
            assert!(!log.contains(secret.as_str()), "the {what} is in the {who}'s debug log:\n{log}");
        }
    }
}
