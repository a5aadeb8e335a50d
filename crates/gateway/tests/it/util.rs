//! One stack per test: Radicale ← gateway → Director → local push service.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use davpush_director::config::{Overrides, RawConfig};
use davpush_gateway::{GatewayConfig, RawGatewayConfig, RunningGateway};
use davpush_testkit::fake_push::FakePush;
use davpush_testkit::radicale::Radicale;
use reqwest::Method;
use serde_json::Value;

pub(crate) struct Stack {
    pub(crate) radicale: Radicale,
    pub(crate) director: davpush_director::Running,
    pub(crate) gateway: RunningGateway,
    pub(crate) push: FakePush,
    pub(crate) http: reqwest::Client,
    pub(crate) data: tempfile::TempDir,
    director_toml: String,
}

pub(crate) fn basic(user: &str) -> String {
    let pw = davpush_testkit::radicale::USERS.iter().find(|(u, _)| *u == user).map(|(_, p)| *p).unwrap_or("wrong");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

/// Starts the stack; `None` if Radicale is unavailable outside CI.
pub(crate) async fn stack(director_extra: &str) -> Option<Stack> {
    let radicale = Radicale::start(&[])?;
    let upstream = radicale.url.clone();
    stack_on(radicale, &upstream, director_extra).await
}

/// A stack whose gateway fronts `upstream` instead of Radicale (Radicale still runs, unused).
pub(crate) async fn stack_with_upstream(upstream: &str) -> Option<Stack> {
    let radicale = Radicale::start(&[])?;
    stack_on(radicale, upstream, "").await
}

/// `{radicale}` in `director_extra` stands for Radicale's URL.
/// A stack whose gateway is published under `path` (e.g. `/dav/`) in front of Radicale at `/`.
pub(crate) async fn stack_with_public_path(path: &str) -> Option<Stack> {
    let radicale = Radicale::start(&[])?;
    let upstream = radicale.url.clone();
    stack_at(radicale, &upstream, "", Some(path)).await
}

async fn stack_on(radicale: Radicale, upstream: &str, director_extra: &str) -> Option<Stack> {
    stack_at(radicale, upstream, director_extra, None).await
}

async fn stack_at(
    radicale: Radicale,
    upstream: &str,
    director_extra: &str,
    public_path: Option<&str>,
) -> Option<Stack> {
    let director_extra = director_extra.replace("{radicale}", &radicale.url);
    let data = tempfile::tempdir().unwrap();
    // The fake push service's loopback port is allow-listed, over plain http.
    let push = FakePush::start().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\n{director_extra}",
        data.path().display().to_string(),
        push.addr.port()
    );
    let director = spawn_director(&toml).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = listener.local_addr().unwrap();
    let cfg = GatewayConfig::from_raw(RawGatewayConfig {
        listen: gw_addr.to_string(),
        public_url: public_path.map(|p| format!("http://{gw_addr}{p}")).unwrap_or_default(),
        upstream: upstream.to_owned(),
        director_url: director.url(),
        data_dir: data.path().to_owned(),
        ..Default::default()
    })
    .unwrap();
    let gateway = davpush_gateway::spawn(cfg, listener).await.unwrap();
    Some(Stack { radicale, director, gateway, push, http: reqwest::Client::new(), data, director_toml: toml })
}

pub(crate) async fn spawn_director(toml: &str) -> davpush_director::Running {
    let raw = RawConfig::from_toml(toml, &BTreeMap::new(), &Overrides::default()).unwrap();
    davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap()
}

impl Stack {
    /// Shuts the Director down gracefully (WebSockets closed with 1001) and starts it again on
    /// the same address with the same data directory.
    pub(crate) async fn restart_director(self) -> Stack {
        let Stack { radicale, director, gateway, push, http, data, director_toml } = self;
        let addr = director.addr;
        director.shutdown().await.unwrap();
        let toml = director_toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
        let director = spawn_director(&toml).await;
        Stack { radicale, director, gateway, push, http, data, director_toml }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    pub(crate) async fn dav(
        &self,
        method: &str,
        path: &str,
        user: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), self.url(path))
            .header("Authorization", basic(user))
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        (status, h, resp.text().await.unwrap())
    }

    /// MKCALENDAR through the gateway.
    pub(crate) async fn mkcalendar(&self, user: &str, name: &str) -> String {
        let path = format!("/{user}/{name}/");
        let (s, _, b) = self.dav("MKCALENDAR", &path, user, &[], "").await;
        assert_eq!(s, 201, "MKCALENDAR {path}: {b}");
        path
    }

    /// MKCALENDAR of the public path `path`; returns the upstream path.
    pub(crate) async fn mkcalendar_at(&self, path: &str, user: &str) -> String {
        let (s, _, b) = self.dav("MKCALENDAR", path, user, &[], "").await;
        assert_eq!(s, 201, "MKCALENDAR {path}: {b}");
        path.trim_start_matches("/dav").to_owned()
    }

    /// An address book through the gateway (extended MKCOL, RFC 5689).
    pub(crate) async fn mkaddressbook(&self, user: &str, name: &str) -> String {
        let path = format!("/{user}/{name}/");
        let body = r#"<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>
<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"#;
        let (s, _, b) = self.dav("MKCOL", &path, user, &[("Content-Type", "application/xml")], body).await;
        assert_eq!(s, 201, "MKCOL {path}: {b}");
        path
    }

    pub(crate) async fn put_event(
        &self,
        user: &str,
        path: &str,
        uid: &str,
        summary: &str,
        headers: &[(&str, &str)],
    ) -> u16 {
        let ics = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T100000Z\r\nDTEND:20261201T110000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        );
        let mut h = vec![("Content-Type", "text/calendar; charset=utf-8")];
        h.extend_from_slice(headers);
        self.dav("PUT", path, user, &h, &ics).await.0
    }

    /// The collection's sync-token, asked of Radicale directly (not through the gateway).
    pub(crate) async fn sync_token(&self, user: &str, path: &str) -> String {
        let body = r#"<propfind xmlns="DAV:"><prop><sync-token/></prop></propfind>"#;
        let resp = self
            .http
            .request(
                Method::from_bytes(b"PROPFIND").unwrap(),
                format!("{}{}", self.radicale.url.trim_end_matches('/'), path),
            )
            .header("Authorization", basic(user))
            .header("Depth", "0")
            .body(body)
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        let root = davpush_gateway::xml::parse(&text).unwrap();
        root.child(davpush_gateway::xml::DAV, "response")
            .and_then(|r| r.child(davpush_gateway::xml::DAV, "propstat"))
            .and_then(|p| p.child(davpush_gateway::xml::DAV, "prop"))
            .and_then(|p| p.child(davpush_gateway::xml::DAV, "sync-token"))
            .map(|t| t.text())
            .expect("Radicale offers sync-tokens")
    }

    /// A subscription grant for the collection at `path`, as the gateway issues it to `user` in
    /// PROPFIND (`None`: none issued).
    pub(crate) async fn grant(&self, user: &str, path: &str) -> Option<String> {
        let body = r#"<propfind xmlns="DAV:" xmlns:X="urn:davpush:1"><prop><X:grant/></prop></propfind>"#;
        let (_, _, text) =
            self.dav("PROPFIND", path, user, &[("Depth", "0"), ("Content-Type", "application/xml")], body).await;
        let root = davpush_gateway::xml::parse(&text).ok()?;
        let g = root.child(davpush_gateway::xml::DAV, "response")?.elements().find_map(|ps| {
            let ok = ps.child(davpush_gateway::xml::DAV, "status")?.text().contains(" 200 ");
            let g = ps.child(davpush_gateway::xml::DAV, "prop")?.child(davpush_gateway::xml::DAVPUSH, "grant")?;
            ok.then(|| g.text())
        })?;
        (!g.is_empty()).then_some(g)
    }

    /// A grant for `topic` signed with the Director's key, as an application server would.
    pub(crate) fn sign(&self, topic: &str) -> String {
        let text = std::fs::read_to_string(self.data.path().join("grant-key")).unwrap();
        davpush_proto::GrantKeys::parse(&text).unwrap().sign([topic], davpush_proto::unix_now() + 600)
    }

    /// The collection's topic, as the gateway advertises it in PROPFIND.
    pub(crate) async fn topic(&self, user: &str, path: &str) -> String {
        let body =
            r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><P:topic/></prop></propfind>"#;
        let (s, _, text) =
            self.dav("PROPFIND", path, user, &[("Depth", "0"), ("Content-Type", "application/xml")], body).await;
        assert_eq!(s, 207, "{text}");
        let root = davpush_gateway::xml::parse(&text).unwrap();
        let t = root
            .child(davpush_gateway::xml::DAV, "response")
            .into_iter()
            .flat_map(|r| r.elements().filter(|e| e.is(davpush_gateway::xml::DAV, "propstat")))
            .find_map(|ps| {
                ps.child(davpush_gateway::xml::DAV, "prop")?
                    .child(davpush_gateway::xml::PUSH, "topic")
                    .map(|t| t.text())
            })
            .expect("a topic");
        assert!(!t.is_empty());
        t
    }
}

/// Starts a stack whose gateway's raw configuration `tweak` adjusts (in front of `upstream`, or
/// Radicale when `None`).
pub(crate) async fn stack_configured(
    upstream: Option<&str>,
    director_extra: &str,
    tweak: impl FnOnce(&mut RawGatewayConfig),
) -> Option<Stack> {
    let radicale = Radicale::start(&[])?;
    let upstream = upstream.map(str::to_owned).unwrap_or_else(|| radicale.url.clone());
    let data = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[web_push]\nallow_hosts = [\"127.0.0.1\"]\nallow_http = true\n{}",
        data.path().display().to_string(),
        director_extra.replace("{radicale}", &radicale.url)
    );
    let director = spawn_director(&toml).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut raw = RawGatewayConfig {
        listen: listener.local_addr().unwrap().to_string(),
        upstream,
        director_url: director.url(),
        data_dir: data.path().to_owned(),
        ..Default::default()
    };
    tweak(&mut raw);
    let gateway = davpush_gateway::spawn(GatewayConfig::from_raw(raw).unwrap(), listener).await.unwrap();
    let push = FakePush::start().await;
    Some(Stack { radicale, director, gateway, push, http: reqwest::Client::new(), data, director_toml: toml })
}

/// Waits for a WebSocket notify frame.
pub(crate) async fn next_notify(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    use futures_util::StreamExt;
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("no frame in 10 s").unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "notify" {
                return v;
            }
        }
    }
}
