//! Issue 16 end to end, against an independent server that pushes by itself: Xandikos
//! (`xandikos serve --webdav-push`, PyPI) sends RFC 8030 Web Push — encrypted and
//! VAPID-signed by `pywebpush` — to the Director acting as push service (over TLS, a test CA:
//! Xandikos only pushes to https), and `davpush listen --push-service` prints the change with
//! the topic Xandikos advertises.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Director of `toml`, running.
async fn director(toml: &str) -> davpush_director::Running {
    let raw =
        davpush_director::RawConfig::from_toml(toml, &std::collections::BTreeMap::new(), &Default::default()).unwrap();
    davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap()
}

/// What [`setup`] started.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) toml: String,
    pub(crate) director: Option<davpush_director::Running>,
    pub(crate) tls_port: u16,
    pub(crate) ca: std::path::PathBuf,
    pub(crate) xlog: std::path::PathBuf,
    pub(crate) calendar: String,
    pub(crate) topic: String,
    pub(crate) http: reqwest::Client,
    _xandikos: Killed,
}

/// The Director behind a TLS proxy, and Xandikos pushing to it; `None` when Xandikos is
/// missing and skipping was chosen.
pub(crate) async fn setup() -> Option<Setup> {
    let py = davpush_testkit::python::python_with(&["xandikos", "pywebpush", "py_vapid"])?;
    let dir = tempfile::tempdir().unwrap();

    // The Director, reached by Xandikos at https://localhost:<tls>/push/… through a TLS proxy.
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_port = tls.local_addr().unwrap().port();
    let dport = davpush_testkit::free_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{dport}\"\ndata_dir = {:?}\n[subscription]\nauth = \"none\"\n\
         [push_service]\nenabled = true\npublic_url = \"https://localhost:{tls_port}\"\n",
        dir.path().join("director").display().to_string()
    );
    let director = director(&toml).await;
    let ca_pem = davpush_testkit::tls_proxy::rustls_proxy(tls, director.addr);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();

    // Xandikos with WebDAV-Push, allowed to push to loopback, trusting the test CA. Xandikos
    // sends with a `requests` session that ignores the environment (`trust_env = False`, so
    // `REQUESTS_CA_BUNDLE` is not read): a `sitecustomize` makes the CA `requests`' default
    // bundle instead, without touching Xandikos.
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("sitecustomize.py"),
        format!(
            "import requests.adapters, requests.utils\nrequests.adapters.DEFAULT_CA_BUNDLE_PATH = {ca:?}\n\
             requests.utils.DEFAULT_CA_BUNDLE_PATH = {ca:?}\n",
            ca = ca.display().to_string()
        ),
    )
    .unwrap();
    let xport = davpush_testkit::free_port();
    let xlog = dir.path().join("xandikos.log");
    let out = std::fs::File::create(&xlog).unwrap();
    let xandikos = Command::new(&py)
        .args(["-m", "xandikos", "serve", "--defaults", "--webdav-push", "--no-detect-systemd", "-l", "127.0.0.1"])
        .args(["-p", &xport.to_string(), "-d"])
        .arg(dir.path().join("xandikos"))
        .arg("--state-dir")
        .arg(dir.path().join("xandikos-state"))
        .env("XANDIKOS_ALLOW_INTERNAL_PUSH_RESOURCE", "1")
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("PYTHONPATH", &site)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let _xandikos = Killed(xandikos);
    let http = reqwest::Client::new();
    let calendar = format!("http://127.0.0.1:{xport}/user/calendars/calendar/");
    // Python starts slowly on a loaded machine (two Xandikos at once took over 10 s): up to 60 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !http.request(reqwest::Method::OPTIONS, &calendar).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(tokio::time::Instant::now() < deadline, "Xandikos did not answer within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let propfind = http
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &calendar)
        .header("depth", "0")
        .header("content-type", "application/xml")
        .body(r#"<d:propfind xmlns:d="DAV:" xmlns:p="https://bitfire.at/webdav-push"><d:prop><p:topic/></d:prop></d:propfind>"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let topic = propfind.split("topic>").nth(1).and_then(|t| t.split('<').next()).unwrap_or_default().to_owned();
    assert!(!topic.is_empty(), "Xandikos advertises a topic: {propfind}");

    Some(Setup { dir, toml, director: Some(director), tls_port, ca, xlog, calendar, topic, http, _xandikos })
}

/// PUTs an event into the calendar.
pub(crate) async fn put_event(s: &Setup, uid: &str) {
    let ics = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n\
         DTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nSUMMARY:pushed\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let put = s
        .http
        .put(format!("{}{uid}.ics", s.calendar))
        .header("content-type", "text/calendar")
        .body(ics)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_xandikos_pushes_through_the_director_to_davpush_listen() {
    let Some(mut s) = setup().await else { return };
    let (tls_port, ca, calendar, topic, xlog) = (s.tls_port, &s.ca, &s.calendar, &s.topic, &s.xlog);
    let mut listen = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["listen", "--push-service", &format!("wss://localhost:{tls_port}/ws"), "--ca-file"])
        .arg(ca)
        .arg(calendar)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = listen.stdout.take().unwrap();
    let stderr = listen.stderr.take().unwrap();
    let _listen = Killed(listen);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(format!("stderr: {l}"))))
    });
    let wait_for = |what: &str| -> String {
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => continue,
                Err(_) => {
                    panic!("no `{what}` from davpush listen; Xandikos log:\n{}", std::fs::read_to_string(xlog).unwrap())
                }
            }
        }
    };
    wait_for("subscribed 1 collection");

    put_event(&s, "push-1").await;
    let line = wait_for("\"update\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["collection"], calendar.as_str());
    assert_eq!(v["topic"], topic.as_str(), "the topic Xandikos advertises");
    assert!(v["sync_token"].is_string(), "Xandikos sends its new sync-token: {v}");
    s.director.take().unwrap().shutdown().await.unwrap();
}

/// The Director restarts (push subscriptions live in its memory only): the receiver reconnects,
/// finds its push subscription gone, makes a new one and registers it with Xandikos again, and
/// the next change arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_after_a_director_restart_the_receiver_registers_again() {
    use davpush_client::{ClientOptions, Credentials, DirectorAuth, Discovery, Event, WebPushReceiver};
    use futures_util::StreamExt;
    let Some(mut s) = setup().await else { return };
    let ca_pem = std::fs::read_to_string(&s.ca).unwrap();
    let url = url::Url::parse(&s.calendar).unwrap();
    let collection = Discovery::with_extra_ca(Some(&ca_pem)).unwrap().discover(&url, &Credentials::None).await.unwrap();
    assert!(collection.vapid_public_key.is_some(), "Xandikos advertises its VAPID key");
    let ws = url::Url::parse(&format!("wss://localhost:{}/ws", s.tls_port)).unwrap();
    let mut opts = ClientOptions::new(ws, DirectorAuth::None);
    opts.extra_ca_pem = Some(ca_pem);
    opts.min_backoff = Duration::from_millis(50);
    opts.max_backoff = Duration::from_millis(500);
    let mut rx = WebPushReceiver::start(opts, Credentials::None, vec![collection]).await.unwrap();
    let mut next = async |what: &str| loop {
        let e = tokio::time::timeout(Duration::from_secs(60), rx.next()).await.expect(what).expect("open");
        match (&e, what) {
            (Event::Update(_), "update") | (Event::Resync { .. }, "resync") => return e,
            _ => continue,
        }
    };
    put_event(&s, "before").await;
    let Event::Update(u) = next("update").await else { unreachable!() };
    assert_eq!(u.topic, s.topic);

    s.director.take().unwrap().shutdown().await.unwrap();
    s.director = Some(director(&s.toml).await);
    next("resync").await;
    put_event(&s, "after").await;
    let Event::Update(u) = next("update").await else { unreachable!() };
    assert_eq!((u.collection.as_str(), u.topic.as_str()), (s.calendar.as_str(), s.topic.as_str()));
    rx.close().await;
    let _ = &s.dir;
}
