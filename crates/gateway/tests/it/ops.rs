//! Issue 13, gateway observability: `/.davpush/healthz`, `/.davpush/readyz` and
//! `/.davpush/metrics`, against a real Director, Radicale and a plain upstream that is stopped
//! and started again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::agreement::{ECDH_P256, EphemeralPrivateKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_gateway::{GatewayConfig, RawGatewayConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::util::*;

/// A value of the metrics text: the line `name` (with its labels) exactly, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `url` until its status is `want` (a minute at most, so that a bug cannot hang the
/// suite); returns the body.
async fn until_status(http: &reqwest::Client, url: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(http, url).await;
        if status == want {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "{url} stayed {status} ({body}), expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the metrics until `series` reaches `at_least`; returns the text.
async fn until_metric(http: &reqwest::Client, url: &str, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = get(http, url).await;
        assert_eq!(status, 200, "{text}");
        if metric(&text, series) >= at_least {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} stayed below {at_least}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn issue_13_health_readiness_and_metrics_live_under_davpush_and_shadow_nothing() {
    let Some(s) = stack_with_public_path("/dav/").await else { return };
    let http = &s.http;
    // Under the public prefix's .davpush/, and under /.davpush/ outside it.
    for path in ["/dav/.davpush/healthz", "/.davpush/healthz"] {
        let (status, body) = get(http, &s.url(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok", "{body}");
    }
    let ready = until_status(http, &s.url("/dav/.davpush/readyz"), 200).await;
    assert_eq!(ready, json!({"status": "ready", "down": [], "checks": {"upstream": "ok", "director": "ok"}}));
    let (_, health) = get(http, &s.url("/.davpush/healthz")).await;
    assert!(health.contains(r#""ready":true"#), "{health}");
    let (status, text) = get(http, &s.url("/.davpush/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "davpush_gateway_ready"), 1.0, "{text}");
    // A WebDAV resource called healthz is the upstream's, not the gateway's.
    let (status, _, body) = s.dav("PROPFIND", "/dav/healthz", "alice", &[("Depth", "0")], "").await;
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains("\"status\""), "the gateway answered a WebDAV path itself: {body}");
    // Only GET and HEAD.
    let r = http.post(s.url("/.davpush/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// A WebDAV server stand-in that answers 201 to PUT and 200 to anything else, counting the
/// requests it gets; it can be stopped and started again on the same port.
struct PlainUpstream {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PlainUpstream {
    async fn start(addr: std::net::SocketAddr, requests: Arc<AtomicUsize>) -> PlainUpstream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        let counted = requests.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if req.method() == axum::http::Method::PUT {
                    axum::http::StatusCode::CREATED
                } else {
                    axum::http::StatusCode::OK
                }
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        PlainUpstream { addr, requests, stop: Some(tx), task: Some(task) }
    }

    async fn stop(mut self) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        (self.addr, self.requests.clone())
    }
}

#[tokio::test]
async fn issue_13_readiness_follows_the_upstream_and_the_director_and_probes_are_cached() {
    let requests = Arc::new(AtomicUsize::new(0));
    let upstream = PlainUpstream::start("127.0.0.1:0".parse().unwrap(), requests.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let director_toml =
        format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n", data.path().display().to_string());
    let director = spawn_director(&director_toml).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw = RawGatewayConfig {
        listen: listener.local_addr().unwrap().to_string(),
        upstream: format!("http://{}/", upstream.addr),
        director_url: director.url(),
        data_dir: data.path().to_owned(),
        notify_attempts: 2,
        sync_token_lookup: false,
        ..Default::default()
    };
    let gateway = davpush_gateway::spawn(GatewayConfig::from_raw(raw).unwrap(), listener).await.unwrap();
    let http = reqwest::Client::new();
    let readyz = format!("{}/.davpush/readyz", gateway.url());
    let metrics = format!("{}/.davpush/metrics", gateway.url());
    until_status(&http, &readyz, 200).await;

    // A storm of probes: at most one check of the upstream per second of the cache (and one
    // more for a check that began before the storm's first second ended).
    let before = requests.load(Ordering::SeqCst);
    let started = Instant::now();
    let probes: Vec<_> = (0..50).map(|_| get(&http, &readyz)).collect();
    for (status, body) in futures_util::future::join_all(probes).await {
        assert_eq!(status, 200, "{body}");
    }
    let checks = requests.load(Ordering::SeqCst) - before;
    let bound = started.elapsed().as_secs_f64().ceil() as usize + 1;
    assert!(checks <= bound, "{checks} upstream checks for 50 probes in {:?}", started.elapsed());

    // The upstream stops: 503 naming it, and the gauge says 0.
    let (addr, requests) = upstream.stop().await;
    let down = until_status(&http, &readyz, 503).await;
    assert_eq!(down["down"], json!(["upstream"]), "{down}");
    assert_eq!(down["status"], "unavailable");
    assert_eq!(down["checks"]["director"], "ok", "{down}");
    assert!(down["checks"]["upstream"].as_str().unwrap().starts_with("unreachable"), "{down}");
    let (_, text) = get(&http, &metrics).await;
    assert_eq!(metric(&text, "davpush_gateway_ready"), 0.0, "{text}");
    let (_, health) = get(&http, &format!("{}/.davpush/healthz", gateway.url())).await;
    assert!(health.contains(r#""ready":false"#), "liveness still answers: {health}");

    // It comes back.
    let upstream = PlainUpstream::start(addr, requests).await;
    until_status(&http, &readyz, 200).await;

    // The Director stops: 503 naming it. A write meanwhile is retried, then dropped.
    let director_addr = director.addr;
    director.shutdown().await.unwrap();
    let down = until_status(&http, &readyz, 503).await;
    assert_eq!(down["down"], json!(["director"]), "{down}");
    assert_eq!(down["checks"]["upstream"], "ok", "{down}");
    let r = http.put(format!("{}/alice/cal/1.ics", gateway.url())).body("x").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let text = until_metric(&http, &metrics, r#"davpush_gateway_changes_total{outcome="dropped"}"#, 1.0).await;
    assert_eq!(metric(&text, r#"davpush_gateway_changes_total{outcome="queued"}"#), 1.0, "{text}");
    assert_eq!(metric(&text, r#"davpush_gateway_changes_total{outcome="retried"}"#), 1.0, "{text}");
    assert_eq!(metric(&text, r#"davpush_gateway_changes_total{outcome="sent"}"#), 0.0, "{text}");
    assert_eq!(metric(&text, r#"davpush_gateway_requests_total{method="PUT",status_class="2xx"}"#), 1.0);

    // It comes back on its address.
    let toml = director_toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{director_addr}\""));
    let director = spawn_director(&toml).await;
    let ready = until_status(&http, &readyz, 200).await;
    assert_eq!(ready["down"], json!([]));
    let (_, text) = get(&http, &metrics).await;
    assert_eq!(metric(&text, "davpush_gateway_ready"), 1.0, "{text}");
    gateway.shutdown().await.unwrap();
    director.shutdown().await.unwrap();
    upstream.stop().await;
}

/// A Web Push subscription's keys, as a browser or DAVx⁵ makes them.
fn ua_keys() -> (String, String) {
    let key = EphemeralPrivateKey::generate(&ECDH_P256, &aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let public = key.compute_public_key().unwrap();
    let mut auth = [0u8; 16];
    aws_lc_rs::rand::fill(&mut auth).unwrap();
    (B64.encode(public.as_ref()), B64.encode(auth))
}

#[tokio::test]
async fn issue_13_metrics_count_requests_registrations_websockets_and_changes() {
    let Some(s) = stack("").await else { return };
    let metrics = s.url("/.davpush/metrics");
    let cal = s.mkcalendar("alice", "cal").await;
    let (status, _, _) = s.dav("PROPFIND", &cal, "alice", &[("Depth", "0")], "").await;
    assert_eq!(status, 207);
    assert_eq!(s.put_event("alice", &format!("{cal}1.ics"), "1@test", "one", &[]).await, 201);
    // A PUT into a collection that does not exist: a 4xx.
    let missing = s.put_event("alice", "/alice/none/1.ics", "2@test", "two", &[]).await;
    assert!((400..500).contains(&missing), "{missing}");

    // A registration, created then deleted.
    let (p256dh, auth) = ua_keys();
    let body = format!(
        r#"<push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription>
        <push-resource>{}</push-resource><subscription-public-key type="p256dh">{p256dh}</subscription-public-key>
        <auth-secret>{auth}</auth-secret></web-push-subscription></subscription></push-register>"#,
        s.push.endpoint("metrics")
    );
    let (status, h, text) = s.dav("POST", &cal, "alice", &[("Content-Type", "application/xml")], &body).await;
    assert_eq!(status, 201, "{text}");
    let location = h.get("location").unwrap().to_str().unwrap().to_owned();
    let registration = url::Url::parse(&location).unwrap().path().to_owned();
    let (status, _, text) = s.dav("DELETE", &registration, "alice", &[], "").await;
    assert_eq!(status, 204, "{text}");

    // A proxied WebSocket, open, then closed.
    let r = s
        .http
        .post(s.url("/.davpush/ticket"))
        .header("Authorization", basic("alice"))
        .json(&json!({"collections": [cal]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ticket: Value = r.json().await.unwrap();
    let ws_url = format!("ws://{}/.davpush/ws?ticket={}", s.gateway.addr, ticket["ticket"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("hello"), "{hello:?}");
    let text = until_metric(&s.http, &metrics, "davpush_gateway_websockets", 1.0).await;
    assert_eq!(metric(&text, "davpush_gateway_websockets_opened_total"), 1.0, "{text}");
    drop(ws);

    // MKCALENDAR and the PUT: two change notifications, both sent.
    let text = until_metric(&s.http, &metrics, r#"davpush_gateway_changes_total{outcome="sent"}"#, 2.0).await;
    for (series, want) in [
        (r#"davpush_gateway_requests_total{method="MKCALENDAR",status_class="2xx"}"#, 1.0),
        (r#"davpush_gateway_requests_total{method="PROPFIND",status_class="2xx"}"#, 1.0),
        (r#"davpush_gateway_requests_total{method="PUT",status_class="2xx"}"#, 1.0),
        (r#"davpush_gateway_requests_total{method="PUT",status_class="4xx"}"#, 1.0),
        (r#"davpush_gateway_requests_total{method="POST",status_class="2xx"}"#, 2.0),
        (r#"davpush_gateway_requests_total{method="DELETE",status_class="2xx"}"#, 1.0),
        (r#"davpush_gateway_requests_total{method="GET",status_class="1xx"}"#, 1.0),
        (r#"davpush_gateway_registrations_total{action="created"}"#, 1.0),
        (r#"davpush_gateway_registrations_total{action="deleted"}"#, 1.0),
        (r#"davpush_gateway_changes_total{outcome="queued"}"#, 2.0),
        (r#"davpush_gateway_changes_total{outcome="sent"}"#, 2.0),
        (r#"davpush_gateway_changes_total{outcome="dropped"}"#, 0.0),
    ] {
        assert_eq!(metric(&text, series), want, "{series}:\n{text}");
    }
    assert!(metric(&text, "davpush_gateway_upstream_duration_seconds_count") >= 4.0, "{text}");
    assert!(metric(&text, "davpush_gateway_resident_memory_bytes") > 0.0, "{text}");
    // The socket's end is counted once its pump ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text) = get(&s.http, &metrics).await;
        if metric(&text, "davpush_gateway_websockets") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed socket is still counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No label names a path, user or topic.
    let (_, text) = get(&s.http, &metrics).await;
    assert!(!text.contains("alice") && !text.contains("/cal"), "{text}");
}

#[tokio::test]
async fn issue_13_metrics_can_be_turned_off() {
    let Some(s) = stack_configured(None, "", |raw| raw.metrics = false).await else { return };
    let (status, _) = get(&s.http, &s.url("/.davpush/metrics")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&s.http, &s.url("/.davpush/healthz")).await;
    assert_eq!(status, 200);
}
