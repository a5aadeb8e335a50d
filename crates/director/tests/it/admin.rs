//! Issue 15: the admin view. Off unless configured; its own token, checked like every token; a
//! page under a strict Content-Security-Policy that shows the Director live in headless
//! Chromium without a topic name, an endpoint's path or a token.

use std::time::Duration;

use davpush_testkit::browser::Browser;
use davpush_testkit::fake_push::FakePush;
use serde_json::{Value, json};

use crate::util::*;
use crate::webpush::{ua_keys, web_push_params};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// The first snapshot of `/admin/events`.
async fn first_snapshot(d: &TestDirector, token: &str) -> Value {
    let mut resp = d.http.get(d.url("/admin/events")).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    while !buf.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.unwrap().unwrap().unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data = buf.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
    serde_json::from_str(data.trim()).unwrap()
}

#[tokio::test]
async fn issue_15_the_admin_view_is_off_unless_configured_and_needs_its_own_token() {
    let d = start("").await;
    for path in ["/admin/", "/admin/events", "/admin/admin.js"] {
        let resp = d.http.get(d.url(path)).bearer_auth(NOTIFY_TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path} while the view is off");
    }
    assert!(!d.data_dir().join("admin-token").exists(), "no admin token without the view");
    d.running.shutdown().await.unwrap();

    // On, without tokens: one is generated (mode 0600), like the other tokens.
    let d = start("[admin]\nenabled = true\n").await;
    let file = d.data_dir().join("admin-token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(token.len() >= 32);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    let page = d.http.get(d.url("/admin/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page itself holds no data");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from elsewhere (no CDN)");

    for wrong in [None, Some(NOTIFY_TOKEN), Some(SUB_TOKEN), Some("admin-token-but-wrong-0123456")] {
        let mut req = d.http.get(d.url("/admin/events"));
        if let Some(t) = wrong {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{wrong:?}");
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"admin_unauthorized\"}"), 4.0, "{m}");
    // The admin token opens nothing else.
    let (s, _) = d.post("/notify", Some(&token), json!({"topic": "t"})).await;
    assert_eq!(s, 401);

    let (_ws, conn) = d.ws().await;
    d.subscribe_ws("c", "t", &conn).await;
    let snap = first_snapshot(&d, &token).await;
    assert_eq!(snap["connections"], 1, "{snap}");
    assert_eq!(snap["subscriptions"]["websocket"], 1, "{snap}");
    assert_eq!(snap["nodes"], Value::Null, "a single node");
    d.running.shutdown().await.unwrap();
}

/// Notifies `topics` over and over until aborted: rates to show.
fn keep_notifying(d: &TestDirector, topics: Vec<&'static str>) -> tokio::task::JoinHandle<()> {
    let (http, url) = (d.http.clone(), d.url("/notify"));
    tokio::spawn(async move {
        for i in 0usize.. {
            let topic = topics[i % topics.len()];
            let _ = http.post(&url).bearer_auth(NOTIFY_TOKEN).json(&json!({"topic": topic})).send().await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    })
}

/// The page in headless Chromium: live numbers, the busiest topics as hashes, the last errors
/// without the endpoint's path; with `DAVPUSH_WRITE_SCREENSHOT=1` it regenerates
/// `docs/admin.png` (`DAVPUSH_WRITE_SCREENSHOT=1 cargo test -p davpush-director --test it admin::`).
#[tokio::test]
async fn issue_15_the_admin_page_shows_the_director_live_without_names_paths_or_tokens() {
    let Some(b) = Browser::start().await else { return };
    let push = FakePush::start().await;
    let closed = davpush_testkit::free_port();
    let d = start(&format!(
        "[admin]\nenabled = true\ntokens = [{ADMIN_TOKEN:?}]\n\
         [web_push]\nallow_hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{closed}\"]\nallow_http = true\nmin_backoff_ms = 200\n",
        push.addr.port()
    ))
    .await;
    // Topics that are names, as some application servers send them.
    let keys = ua_keys(None);
    let secret_path = "SECRET-capability-of-bob";
    for (client, topic, endpoint) in [
        ("phone-1", "alice-private-calendar", push.endpoint("alice-phone")),
        ("phone-2", "alice-private-calendar", push.endpoint("alice-tablet")),
        ("phone-3", "team-contacts", push.endpoint("carol-phone")),
        ("phone-4", "bob-diary", format!("http://127.0.0.1:{closed}/push/{secret_path}")),
    ] {
        let (s, r) = d
            .subscribe(json!({"client_id": client, "topic": topic,
                "push_services": {"web_push": web_push_params(&endpoint, &keys, "topic-json")}}))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    let mut sockets = Vec::new();
    for topic in ["alice-private-calendar", "team-contacts", "team-contacts"] {
        let (ws, conn) = d.ws().await;
        d.subscribe_ws(&conn.clone(), topic, &conn).await;
        sockets.push(ws);
    }
    let load =
        keep_notifying(&d, vec!["alice-private-calendar", "alice-private-calendar", "team-contacts", "bob-diary"]);

    b.goto(&d.url("/admin/")).await;
    b.eval(
        "document.getElementById('token').value = arguments[0]; document.getElementById('login').requestSubmit();",
        json!([ADMIN_TOKEN]),
    )
    .await;
    b.wait_for(
        "three connections shown",
        "return document.getElementById('connections').textContent === '3';",
        Duration::from_secs(10),
    )
    .await;
    let hash = d.running.state.admin.as_ref().unwrap().topic_hash("alice-private-calendar");
    b.wait_for(
        "the busiest topic, as its hash",
        &format!("return document.getElementById('busiest').textContent.includes('{hash}');"),
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(
        "the unreachable push service's error",
        "return document.getElementById('errors').textContent.includes('request failed');",
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(
        "deliveries per second",
        "return Number(document.getElementById('sent-rate').textContent) > 0;",
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(
        "a few snapshots of history in the sparkline",
        "return document.querySelector('#sent-spark polyline').getAttribute('points').split(' ').length >= 6;",
        Duration::from_secs(20),
    )
    .await;
    let text = b.eval("return document.body.innerText;", json!([])).await;
    let text = text.as_str().unwrap();
    let html = b.eval("return document.documentElement.outerHTML;", json!([])).await;
    for secret in ["alice-private-calendar", "team-contacts", "bob-diary", secret_path, "alice-phone", ADMIN_TOKEN] {
        assert!(!text.contains(secret) && !html.as_str().unwrap().contains(secret), "the page shows {secret}: {text}");
    }
    assert!(text.contains(&format!("127.0.0.1:{closed}")), "the failing host is named: {text}");
    assert!(text.contains("web_push"), "{text}");
    assert_eq!(b.eval("return document.getElementById('state').textContent;", json!([])).await, "live");
    let console = b.console().await;
    assert!(!console.iter().any(|l| l.contains("Content Security Policy")), "no CSP violation: {console:?}");

    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real screenshot ({} bytes)", png.len());
    if std::env::var("DAVPUSH_WRITE_SCREENSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin.png"), png).unwrap();
    }

    // A wrong token is refused on the page.
    b.eval("sessionStorage.clear();", json!([])).await;
    b.goto(&d.url("/admin/")).await;
    b.eval(
        "document.getElementById('token').value = 'not-the-admin-token-000'; document.getElementById('login').requestSubmit();",
        json!([]),
    )
    .await;
    b.wait_for(
        "the refusal",
        "return document.getElementById('login-error').textContent.includes('not accepted');",
        Duration::from_secs(10),
    )
    .await;
    load.abort();
    b.quit().await;
    drop(sockets);
    d.running.shutdown().await.unwrap();
}
