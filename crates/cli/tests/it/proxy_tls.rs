//! Issue 13: TLS reverse proxies in front of the gateway and the Director, as docs/operations.md
//! ("Behind a reverse proxy (TLS)") ships them. Real nginx and Caddy run the files of
//! `packaging/proxy/` as printed, with only the documented substitutions (ports, certificate
//! and log paths, upstream addresses; for Caddy the host and `tls` line, after a global options
//! block of the test's own), in front of `davpush serve`, `davpush gateway` (with the docs'
//! `public_url`/`director_public_url`, host replaced) and Radicale, with a test CA. The public
//! origin is `https://localhost:<port>`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use davpush_testkit::browser::Browser;
use davpush_testkit::tls_proxy::{self, Kind, PUBLIC_HOST, Proxy, TestCa};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::procs::{self, ALICE, Proc, Radicale, basic};

const NGINX_CONF: &str = "packaging/proxy/nginx/davpush.conf";
const CADDYFILE: &str = "packaging/proxy/caddy/Caddyfile";
const OPERATIONS: &str = "docs/operations.md";
/// The documented `davpush listen` through a proxy with a private CA.
pub(crate) const LISTEN: &str =
    "davpush listen https://dav.example.org/alice/calendar/ --user alice --password-file pw --ca-file ca.pem";
/// The calendar the tests watch.
const CAL: &str = "/alice/calendar/";
/// The Director's WebSocket ping interval in these tests, seconds (short, so that several pings
/// pass through the proxy quickly).
const PING_SECS: u64 = 1;

/// The proxy in front of the Director, the gateway and Radicale.
struct Stack {
    dir: tempfile::TempDir,
    ca: TestCa,
    proxy: Proxy,
    _gateway: Proc,
    director: Proc,
    _radicale: Radicale,
}

impl Stack {
    /// `https://localhost:<port><path>`
    fn public(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.origin())
    }

    fn data(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("data").join(file)).unwrap().trim().to_owned()
    }

    /// A request through the proxy as alice.
    async fn dav(&self, method: &str, path_or_url: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with("https://") { path_or_url.to_owned() } else { self.public(path_or_url) };
        let mut req = self
            .ca
            .http()
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .header("Authorization", basic(ALICE.0, ALICE.1))
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn put_event(&self, uid: &str) {
        let ty = [("Content-Type", "text/calendar; charset=utf-8")];
        let st = self.dav("PUT", &format!("{CAL}{uid}.ics"), &ty, &procs::event(uid)).await.status().as_u16();
        assert_eq!(st, 201, "PUT {uid} through the proxy");
    }
}

/// Starts Radicale, the Director (pinging every [`PING_SECS`]), the gateway configured as the
/// docs say, and the proxy of `kind` with its shipped configuration. `None`: skipped.
async fn stack(kind: Kind) -> Option<Stack> {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let storage = dir.path().join("collections");
    let radicale =
        Radicale::start(dir.path(), &format!("[storage]\nfilesystem_folder = {}\n", storage.display()), &[])?;
    let data = dir.path().join("data");
    let port = davpush_testkit::free_port();
    let public_host = format!("localhost:{port}");
    let mut serve = procs::davpush();
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("DAVPUSH_WEBSOCKET__PING_INTERVAL_SECS", PING_SECS.to_string())
        // The push service behind the proxy, as the proxy files' comments say.
        .env("DAVPUSH_PUSH_SERVICE__ENABLED", "true")
        .env("DAVPUSH_PUSH_SERVICE__PUBLIC_URL", format!("https://{public_host}/.davpush/director"))
        .env("DAVPUSH_PUSH_SERVICE__TRUSTED_PROXIES", r#"["127.0.0.1"]"#)
        .env("DAVPUSH_PUSH_SERVICE__PER_SENDER_PER_MINUTE", "2")
        // The push-register test's endpoint (never delivered to: the registration is deleted).
        .env("DAVPUSH_WEB_PUSH__ALLOW_HOSTS", r#"["127.0.0.1:9"]"#)
        .env("DAVPUSH_WEB_PUSH__ALLOW_HTTP", "true");
    let director = Proc::start(serve, "Push Director listening");

    // The gateway's keys as docs/operations.md prints them, with the test's public host.
    let keys = procs::fenced_block(&procs::repo_file(OPERATIONS), "toml", "director_public_url");
    let gateway_toml = dir.path().join("gateway.toml");
    std::fs::write(&gateway_toml, keys.replace(PUBLIC_HOST, &public_host)).unwrap();
    let mut cmd = procs::davpush();
    cmd.args(["gateway", "--config"])
        .arg(&gateway_toml)
        .args(["--listen", "127.0.0.1:0", "--upstream", &radicale.url, "--director", &director.url(), "--data-dir"])
        .arg(&data);
    let gateway = Proc::start(cmd, "WebDAV gateway listening");

    let proxy_dir = dir.path().join(format!("{kind:?}").to_lowercase());
    std::fs::create_dir_all(&proxy_dir).unwrap();
    let http_port = davpush_testkit::free_port().to_string();
    let (cert, key) = (ca.cert_file.display().to_string(), ca.key_file.display().to_string());
    let proxy = match kind {
        Kind::Nginx => {
            let site = tls_proxy::render(
                &procs::repo_file(NGINX_CONF),
                &[
                    ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
                    ("listen 443 ssl http2;", format!("listen 127.0.0.1:{port} ssl http2;")),
                    ("/etc/letsencrypt/live/dav.example.org/fullchain.pem", cert),
                    ("/etc/letsencrypt/live/dav.example.org/privkey.pem", key),
                    ("/var/log/nginx/davpush.access.log", proxy_dir.join("access.log").display().to_string()),
                    ("server 127.0.0.1:8080;", format!("server {};", director.addr)),
                    ("server 127.0.0.1:8081;", format!("server {};", gateway.addr)),
                ],
            );
            Proxy::nginx(&proxy_dir, &site, port)?
        }
        Kind::Caddy => {
            let site = tls_proxy::render(
                &procs::repo_file(CADDYFILE),
                &[
                    ("dav.example.org {", format!("{public_host} {{")),
                    ("# tls /etc/ssl/davpush/fullchain.pem /etc/ssl/davpush/privkey.pem", format!("tls {cert} {key}")),
                    ("reverse_proxy 127.0.0.1:8080", format!("reverse_proxy {}", director.addr)),
                    ("reverse_proxy 127.0.0.1:8081", format!("reverse_proxy {}", gateway.addr)),
                ],
            );
            let global = format!("{{\n\tadmin off\n\thttp_port {http_port}\n}}\n\n");
            Proxy::caddy(&proxy_dir, &format!("{global}{site}"), port)?
        }
    };
    let s = Stack { dir, ca, proxy, _gateway: gateway, director, _radicale: radicale };
    let st = s.dav("MKCALENDAR", CAL, &[], "").await.status().as_u16();
    assert_eq!(st, 201, "MKCALENDAR through the proxy: {}", s.proxy.log());
    Some(s)
}

const DISCOVERY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<d:propfind xmlns:d="DAV:" xmlns:p="https://bitfire.at/webdav-push" xmlns:x="urn:davpush:1"><d:prop>"#,
    "<p:topic/><p:transports/><x:director/><x:websocket-url/><x:gateway-websocket-url/><x:grant/>",
    "</d:prop></d:propfind>"
);

/// The text of the first `<…element>` in `xml` (empty when absent or empty).
fn text_of(xml: &str, element: &str) -> String {
    let open = format!(":{element}>");
    let Some(start) = xml.find(&open).map(|i| i + open.len()) else { return String::new() };
    xml[start..start + xml[start..].find('<').unwrap_or(0)].to_owned()
}

/// PROPFIND of the push properties through the proxy, once the gateway has heard from the
/// Director (until then it advertises no WebSocket).
async fn discover(s: &Stack) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.dav("PROPFIND", CAL, &[("Depth", "0"), ("Content-Type", "application/xml")], DISCOVERY).await;
        assert_eq!(r.status().as_u16(), 207);
        let xml = r.text().await.unwrap();
        if !text_of(&xml, "websocket-url").is_empty() {
            return xml;
        }
        assert!(Instant::now() < deadline, "the gateway never advertised the Director's WebSocket: {xml}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the proxy (`wss://`, trusting the test CA) with `authorization`; its
/// `hello` frame.
async fn open_wss(s: &Stack, url: &str, authorization: &str) -> (Wss, Value) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", authorization.parse().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", "davpush.v1".parse().unwrap());
    let connector = tokio_tungstenite::Connector::Rustls(s.ca.rustls_client());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
        .await
        .unwrap_or_else(|e| panic!("WebSocket {url} through the proxy: {e}: {}", s.proxy.log()));
    let hello = next_text(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

/// The next text frame, as JSON (answering pings meanwhile; at most 15 s).
async fn next_text(ws: &mut Wss) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("no frame within 15 s");
        match msg.expect("the WebSocket closed").expect("a frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("the WebSocket was closed: {f:?}"),
            _ => {}
        }
    }
}

/// Reads until `n` pings have arrived (each answered with a pong by the WebSocket library);
/// a text frame or a close meanwhile is a failure.
async fn pings(ws: &mut Wss, n: usize, what: &str) {
    let mut seen = 0;
    while seen < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a ping within 10 s");
        match msg.unwrap_or_else(|| panic!("{what}: closed after {seen} pings")) {
            Ok(Message::Ping(_)) => seen += 1,
            Ok(Message::Pong(_)) => {}
            other => panic!("{what}: after {seen} pings: {other:?}"),
        }
    }
}

/// The public URLs behind the proxy, a push registration, what is not published, and
/// WebSockets to the Director and the gateway across several pings.
async fn urls_registration_and_websockets(s: &Stack) {
    let origin = s.proxy.origin();
    let host = origin.strip_prefix("https://").unwrap();
    let xml = discover(s).await;
    assert_eq!(text_of(&xml, "websocket-url"), format!("wss://{host}/.davpush/director/ws"), "{xml}");
    assert_eq!(text_of(&xml, "gateway-websocket-url"), format!("wss://{host}/.davpush/ws"), "{xml}");
    assert_eq!(text_of(&xml, "director"), format!("{origin}/.davpush/director/"), "{xml}");
    assert!(xml.contains("web-push") && !text_of(&xml, "topic").is_empty(), "{xml}");
    for internal in ["127.0.0.1", "http://", "ws://"] {
        assert!(!xml.contains(internal), "no internal or plain-text URL is advertised ({internal}): {xml}");
    }

    // push-register: the registration URL is on the public https origin, and works there.
    let register = r#"<push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription>
      <push-resource>http://127.0.0.1:9/push/proxy-test</push-resource>
      <subscription-public-key type="p256dh">BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4</subscription-public-key>
      <auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret>
    </web-push-subscription></subscription></push-register>"#;
    let r = s.dav("POST", CAL, &[("Content-Type", "application/xml; charset=utf-8")], register).await;
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!(status, 201, "push-register: {}", r.text().await.unwrap());
    assert!(location.starts_with(&format!("{origin}/.davpush/registrations/")), "Location: {location}");
    assert_eq!(s.dav("DELETE", &location, &[], "").await.status().as_u16(), 204, "DELETE {location}");

    // The Director's public endpoints answer; its Notify API and monitoring are not published.
    let http = s.ca.http();
    let info: Value = http.get(s.public("/.davpush/director/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["websocket_path"], "/ws", "{info}");
    let anonymous = http.post(s.public("/.davpush/director/subscribe")).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401, "the Director's own answer to a subscribe without token");
    let notify = http
        .post(s.public("/.davpush/director/notify"))
        .bearer_auth(s.data("notify-token"))
        .json(&json!({"topic": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(notify.status().as_u16(), 404, "the Notify API is not published");
    for path in ["/.davpush/director/metrics", "/.davpush/director/healthz", "/.davpush/director/readyz"] {
        assert_eq!(http.get(s.public(path)).send().await.unwrap().status().as_u16(), 404, "{path}");
    }
    // …while the Director itself has them (the 404s are the proxy's).
    let direct = reqwest::Client::new().get(format!("{}metrics", s.director.url())).send().await.unwrap();
    assert_eq!(direct.status().as_u16(), 200);

    // The Director's WebSocket (subscription token, with the grant PROPFIND gave) and the
    // gateway's (WebDAV login), both through the proxy.
    let topic = text_of(&xml, "topic");
    let grant = text_of(&xml, "grant");
    let bearer = format!("Bearer {}", s.data("subscription-token"));
    let (mut direct, hello) = open_wss(s, &text_of(&xml, "websocket-url"), &bearer).await;
    assert_eq!(hello["ping_interval"], PING_SECS, "{hello}");
    let sub = json!({"type": "subscribe", "id": "d", "topic": topic, "grant": grant});
    direct.send(Message::Text(sub.to_string().into())).await.unwrap();
    let answer = next_text(&mut direct).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    let (mut via_gateway, _) = open_wss(s, &text_of(&xml, "gateway-websocket-url"), &basic(ALICE.0, ALICE.1)).await;
    let sub = json!({"type": "subscribe", "id": "g", "topic": topic, "collection": CAL});
    via_gateway.send(Message::Text(sub.to_string().into())).await.unwrap();
    let answer = next_text(&mut via_gateway).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");

    // Both stay open across several pings: the pings reach the client through the proxy and
    // the pongs the Director (a client silent for two intervals is dropped) and the gateway.
    tokio::join!(
        pings(&mut direct, 4, "the Director's WebSocket"),
        pings(&mut via_gateway, 4, "the gateway's WebSocket")
    );
    // And still deliver: a change made through the proxy reaches both.
    let (_, d, g) = tokio::join!(s.put_event("after-pings"), next_text(&mut direct), next_text(&mut via_gateway));
    for (frame, which) in [(d, "Director"), (g, "gateway")] {
        assert_eq!(
            (frame["type"].as_str(), frame["topic"].as_str()),
            (Some("notify"), Some(topic.as_str())),
            "{which}: {frame}"
        );
    }
    push_senders_are_told_apart(s, &mut direct).await;
}

/// The push service through the proxy: its endpoints are under the public URL, and its
/// per-sender limit (2 a minute here) counts the senders the proxy names in
/// `X-Forwarded-For`, not the proxy (`push_service.trusted_proxies`). The senders are two
/// loopback addresses of this host.
async fn push_senders_are_told_apart(s: &Stack, ws: &mut Wss) {
    ws.send(Message::Text(json!({"type": "push_subscribe", "id": "p"}).to_string().into())).await.unwrap();
    let sub = next_text(ws).await;
    assert_eq!(sub["type"], "push_subscribed", "{sub}");
    let endpoint = sub["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with(&s.public("/.davpush/director/push/")), "{endpoint}");
    let proxy: std::net::SocketAddr =
        format!("127.0.0.1:{}", s.proxy.origin().rsplit(':').next().unwrap()).parse().unwrap();
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .tls_certs_merge([reqwest::Certificate::from_pem(s.ca.ca_pem.as_bytes()).unwrap()])
            .no_proxy()
            .resolve("localhost", proxy)
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let post = |client: reqwest::Client| async move {
        let r = client.post(endpoint).header("TTL", "0").send().await.unwrap();
        r.status().as_u16()
    };
    let (first, second) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    // A fixed one-minute window may roll over once in between: post until refused.
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) && statuses.len() < 5 {
        statuses.push(post(first.clone()).await);
    }
    assert_eq!(statuses.last(), Some(&429), "127.0.0.2 is refused after 2: {statuses:?} {}", s.proxy.log());
    assert_eq!(post(second).await, 201, "127.0.0.3 is another sender: {}", s.proxy.log());
}

/// `proxy_read_timeout` of the shipped nginx file is above the Director's default ping
/// interval (what the docs promise; the running test uses a 1 s interval).
fn nginx_timeouts_exceed_the_ping_interval() {
    let conf = procs::repo_file(NGINX_CONF);
    let default_ping = davpush_director::RawConfig::default().websocket.ping_interval_secs;
    for key in ["proxy_read_timeout", "proxy_send_timeout"] {
        let line = conf.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        let secs: u64 =
            line.trim().trim_start_matches(key).trim().trim_end_matches(';').trim_end_matches('s').parse().unwrap();
        assert!(secs > default_ping, "{key} {secs}s must be above websocket.ping_interval_secs ({default_ping} s)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_nginx_with_tls_publishes_https_urls_keeps_websockets_and_hides_the_notify_api() {
    nginx_timeouts_exceed_the_ping_interval();
    let Some(s) = stack(Kind::Nginx).await else { return };
    urls_registration_and_websockets(&s).await;
    // The access log names the WebSocket requests (once closed) but not their query strings.
    let log = access_log(&s, &["GET /.davpush/ws ", "GET /.davpush/director/ws "]).await;
    assert!(!log.contains('?') && !log.contains(&s.data("subscription-token")), "{log}");
}

/// nginx's access log, once it has lines with each of `lines` (a WebSocket's is written when
/// it closes).
async fn access_log(s: &Stack, lines: &[&str]) -> String {
    let path = s.dir.path().join("nginx/access.log");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    davpush_testkit::eventually("the access log lines of the WebSockets", || async {
        let log = read();
        lines.iter().all(|l| log.contains(l))
    })
    .await;
    read()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_caddy_with_tls_publishes_https_urls_keeps_websockets_and_hides_the_notify_api() {
    let Some(s) = stack(Kind::Caddy).await else { return };
    urls_registration_and_websockets(&s).await;
}

/// Kills a child on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 30 s) until `cond` holds while `child` runs.
async fn wait_for(child: &mut Killed, stderr: &std::path::Path, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = || std::fs::read_to_string(stderr).unwrap_or_default();
    while !cond() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("davpush listen exited ({status}) before {what}: {}", log());
        }
        assert!(Instant::now() < deadline, "not within 30 s: {what}: {}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_the_documented_listen_command_receives_a_change_through_nginx_with_a_private_ca() {
    let Some(s) = stack(Kind::Nginx).await else { return };
    let block = procs::fenced_block(&procs::repo_file(OPERATIONS), "sh", "--ca-file");
    assert_eq!(block.trim(), LISTEN);
    let cwd = s.dir.path().join("home");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("pw"), format!("{}\n", ALICE.1)).unwrap();
    std::fs::copy(&s.ca.ca_file, cwd.join("ca.pem")).unwrap();
    let command = LISTEN.replace(PUBLIC_HOST, s.proxy.origin().strip_prefix("https://").unwrap());
    let (stdout_file, stderr_file) = (s.dir.path().join("listen.stdout"), s.dir.path().join("listen.stderr"));
    let mut sh = Command::new("sh");
    procs::clean_env(&mut sh);
    let child = sh
        .current_dir(&cwd)
        .env("PATH", procs::path_with_davpush())
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for(&mut child, &stderr_file, "subscribed", || read(&stderr_file).contains("subscribed 1 collection(s)"))
        .await;
    s.put_event("through-nginx").await;
    let collection = s.public(CAL);
    wait_for(&mut child, &stderr_file, "the update line", || read(&stdout_file).contains("\"update\"")).await;
    let update: Value = serde_json::from_str(read(&stdout_file).lines().next().unwrap()).unwrap();
    assert_eq!(update["collection"].as_str(), Some(collection.as_str()), "{update}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_the_demo_calendar_works_through_nginx_in_chromium() {
    let Some(s) = stack(Kind::Nginx).await else { return };
    let trust = format!("--ignore-certificate-errors-spki-list={}", s.ca.spki_sha256);
    let Some(b) = Browser::start_with_args(&[trust]).await else { return };
    b.goto(&s.public(&format!("/.davpush/demo/?calendar={CAL}&week=2026-11-30"))).await;
    b.wait_for("the login form", "return !document.getElementById('login').hidden;", Duration::from_secs(20)).await;
    b.eval(
        "document.getElementById('f-user').value = arguments[0];
         document.getElementById('f-password').value = arguments[1];
         document.getElementById('f-submit').click(); return true;",
        json!([ALICE.0, ALICE.1]),
    )
    .await;
    b.wait_for(
        "the page subscribed through nginx",
        "return window.davpushDemo.subscriptions >= 1 && window.davpushDemo.state === 'live';",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(b.eval("return location.protocol;", json!([])).await, "https:");
    // Another client's change (procs::event is on 2026-12-01, in the week shown) appears.
    s.put_event("seen-in-chromium").await;
    b.wait_for(
        "the event made through nginx appears",
        "return document.querySelector('.event[data-uid=\"seen-in-chromium\"]') !== null;",
        Duration::from_secs(20),
    )
    .await;
    let console = b.console().await;
    assert!(!console.iter().any(|l| l.contains("SEVERE")), "browser console: {console:?}");
    b.quit().await;
    // The page opened its WebSocket with a ticket in the query string, which is not logged.
    let log = access_log(&s, &["POST /.davpush/ticket ", "GET /.davpush/ws "]).await;
    assert!(!log.contains('?') && !log.contains("ticket="), "{log}");
}
