//! The demo page (`/.davpush/demo/`) as a phone and a careful browser see it (issue 12, item 9):
//! it fits a phone's screen, its sign-in errors name their cause and leave the header signed
//! out, it keeps to its own Content-Security-Policy, and it asks the upstream for no favicon.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use davpush_testkit::browser::Browser;
use serde_json::json;

use crate::browser::{WEEK, open_demo, put, shown};
use crate::util::*;

/// The phone of the tests: 375 x 740 CSS pixels.
const PHONE: (u32, u32) = (375, 740);

/// Records what the page reports about its layout, in CSS pixels of the layout viewport.
const LAYOUT: &str = r#"
const doc = document.scrollingElement;
const width = document.documentElement.clientWidth;
const inside = (id) => {
  const r = document.getElementById(id).getBoundingClientRect();
  return r.width > 0 && r.left >= 0 && r.right <= width && r.top >= 0;
};
const label = document.getElementById('week-label');
return {
  scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth,
  label: label.textContent, labelInside: inside('week-label'),
  labelClipped: label.scrollWidth > label.clientWidth,
  statusInside: inside('status'), logoutInside: inside('logout'), userInside: inside('user'),
  heads: [...document.querySelectorAll('.day-head')].map((h) => h.getBoundingClientRect().height),
};"#;

/// Signs in on the page at `url` (the login form is showing) as `user`.
async fn sign_in(b: &Browser, user: &str, password: &str) {
    b.wait_for("the login form", "return !document.getElementById('login').hidden;", Duration::from_secs(10)).await;
    b.eval(
        "document.getElementById('f-user').value = arguments[0];
         document.getElementById('f-password').value = arguments[1];
         document.getElementById('f-submit').click(); return true;",
        json!([user, password]),
    )
    .await;
}

#[tokio::test]
async fn the_demo_page_fits_a_phone_screen() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "a-calendar-with-a-rather-long-name").await;
    put(&s, &cal, "planning", "Sprint planning", "20261201T090000Z", "20261201T100000Z", "Room 1").await;
    b.phone_viewport(PHONE.0, PHONE.1).await;

    // The login form fits.
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}&week={WEEK}", s.gateway.url())).await;
    b.wait_for("the login form", "return !document.getElementById('login').hidden;", Duration::from_secs(10)).await;
    let l = b.eval(LAYOUT, json!([])).await;
    assert_eq!(l["clientWidth"], PHONE.0, "the phone's width: {l}");
    assert!(l["scrollWidth"].as_u64() <= l["clientWidth"].as_u64(), "no horizontal scrolling on the login form: {l}");

    // The signed-in week: a week across two months has the longest label.
    open_demo(&b, &s, &cal).await;
    let l = b.eval(LAYOUT, json!([])).await;
    assert_eq!(l["label"], "November – December 2026");
    assert!(l["scrollWidth"].as_u64() <= l["clientWidth"].as_u64(), "no horizontal scrolling: {l}");
    assert_eq!(
        (&l["labelInside"], &l["labelClipped"]),
        (&json!(true), &json!(false)),
        "the week label is fully visible: {l}"
    );
    assert_eq!(
        (&l["statusInside"], &l["userInside"], &l["logoutInside"]),
        (&json!(true), &json!(true), &json!(true)),
        "Live, the user and Sign out are on the screen: {l}"
    );
    assert_eq!(b.eval("return document.getElementById('status-text').textContent;", json!([])).await, "Live");
    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a screenshot");
    if std::env::var("DAVPUSH_WRITE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let path = concat!(env!("CARGO_TARGET_TMPDIR"), "/demo-calendar-phone.png");
        std::fs::write(path, png).unwrap();
        eprintln!("phone screenshot: {path}");
    }
    b.quit().await;
}

#[tokio::test]
async fn todays_column_head_is_as_high_as_the_others() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "today").await;
    // No `week=`: the page shows the current week, today's included.
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}", s.gateway.url())).await;
    sign_in(&b, "alice", "alice-password").await;
    b.wait_for("the week", "return document.querySelectorAll('.day-head').length === 7;", Duration::from_secs(10))
        .await;
    assert_eq!(b.eval("return document.querySelectorAll('.day.today').length;", json!([])).await, 1);
    let l = b.eval(LAYOUT, json!([])).await;
    let heads: Vec<f64> = l["heads"].as_array().unwrap().iter().map(|h| h.as_f64().unwrap()).collect();
    assert!(heads.iter().all(|h| *h == heads[0] && *h > 0.0), "all day heads equally high: {heads:?}");
    b.quit().await;
}

/// The sign-in error shown and the header's state after it.
async fn failed_sign_in(b: &Browser, s: &Stack, cal: &str, user: &str, password: &str) -> String {
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}", s.gateway.url())).await;
    sign_in(b, user, password).await;
    b.wait_for(
        "an error message",
        "return document.getElementById('login-error').textContent !== '';",
        Duration::from_secs(10),
    )
    .await;
    let header = b
        .eval(
            "return [document.getElementById('user').hidden, document.getElementById('logout').hidden,
                     document.getElementById('status').dataset.state, document.getElementById('login').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(header, json!([true, true, "offline", false]), "signed out, the login form showing");
    b.eval("return document.getElementById('login-error').textContent;", json!([])).await.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_errors_name_their_cause_and_leave_the_header_signed_out() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "private").await;

    let wrong = failed_sign_in(&b, &s, &cal, "alice", "wrong").await;
    assert_eq!(wrong, "Wrong user name or password.");
    let forbidden = failed_sign_in(&b, &s, &cal, "bob", "bob-password").await;
    assert_eq!(forbidden, format!("bob may not read the calendar {cal}."));
    let missing = failed_sign_in(&b, &s, "/alice/nothing-here/", "alice", "alice-password").await;
    assert_eq!(missing, "There is no calendar at /alice/nothing-here/.");

    // After the errors, the right password signs in, and the header says who.
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}", s.gateway.url())).await;
    sign_in(&b, "alice", "alice-password").await;
    b.wait_for("live", "return window.davpushDemo.state === 'live';", Duration::from_secs(10)).await;
    let header = b
        .eval(
            "return [document.getElementById('user').textContent, document.getElementById('logout').hidden,
                     document.getElementById('login-error').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(header, json!(["alice", false, ""]));
    b.quit().await;
}

/// The upstream requests a recording proxy in front of Radicale saw: `METHOD path`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    target: Arc<Mutex<String>>,
}

impl Recorder {
    /// Starts the proxy; it forwards to the target set later with [`Recorder::forward_to`].
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let me = self.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let me = me.clone();
            async move { me.forward(req).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn forward_to(&self, target: &str) {
        *self.target.lock().unwrap() = target.trim_end_matches('/').to_owned();
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    async fn forward(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
        self.seen.lock().unwrap().push(format!("{} {path}", parts.method));
        let target = self.target.lock().unwrap().clone();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let mut out = reqwest::Client::new().request(parts.method, format!("{target}{path}")).body(body);
        for (k, v) in &parts.headers {
            if k != "host" && k != "content-length" && k != "connection" {
                out = out.header(k, v);
            }
        }
        let resp = out.send().await.unwrap();
        let mut back = Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                back = back.header(k, v);
            }
        }
        back.body(Body::from(resp.bytes().await.unwrap())).unwrap()
    }
}

/// Collects the page's Content-Security-Policy violations in `window.__cspViolations`, from
/// before its first script.
const CSP_LISTENER: &str = "window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));";

#[tokio::test]
async fn the_demo_page_keeps_to_a_strict_policy_and_asks_the_upstream_for_no_favicon() {
    let recorder = Recorder::default();
    let upstream = recorder.start().await;
    let Some(s) = stack_with_upstream(&upstream).await else { return };
    recorder.forward_to(&s.radicale.url);
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "team").await;

    // The page and its assets carry the security headers.
    for asset in
        ["demo/", "demo/calendar.js", "demo/calendar.css", "demo/favicon.svg", "client/davpush.js", "client/webpush.js"]
    {
        let r = s.http.get(s.url(&format!("/.davpush/{asset}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let csp = h("content-security-policy");
        for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
            assert!(csp.split(';').any(|d| d.trim() == directive), "{asset}: {directive} in {csp:?}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{asset}: {csp}");
        assert_eq!((h("x-content-type-options"), h("referrer-policy")), ("nosniff".into(), "no-referrer".into()));
    }

    b.on_new_document(CSP_LISTENER).await;
    let _ = b.console().await;
    open_demo(&b, &s, &cal).await;
    // It works under the policy: scripts ran, fetch and the WebSocket connected, and a change
    // by another client arrives.
    put(&s, &cal, "review", "Design review", "20261202T140000Z", "20261202T150000Z", "").await;
    b.wait_for("the new event appears", &shown("review"), Duration::from_secs(5)).await;
    assert_eq!(b.eval("return window.__cspViolations;", json!([])).await, json!([]), "no CSP violation");
    let console = b.console().await;
    assert!(!console.iter().any(|l| l.contains("Content Security Policy")), "console: {console:?}");

    // A reload (with the session) and the same checks: still nothing for /favicon.ico upstream.
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}&week={WEEK}", s.gateway.url())).await;
    b.wait_for("live again", "return window.davpushDemo.state === 'live';", Duration::from_secs(10)).await;
    let seen = recorder.seen();
    assert!(
        seen.iter().any(|r| r.starts_with("PROPFIND /alice/team/")),
        "the recorder sees the page's requests: {seen:?}"
    );
    assert!(!seen.iter().any(|r| r.contains("favicon")), "no favicon request reached the upstream: {seen:?}");

    // The listener does catch a violation: an inline script is refused.
    b.eval(
        "const s = document.createElement('script'); s.textContent = 'window.__ran = 1;';
         document.body.append(s); return true;",
        json!([]),
    )
    .await;
    b.wait_for("the violation is reported", "return window.__cspViolations.length === 1;", Duration::from_secs(5))
        .await;
    assert_eq!(b.eval("return window.__ran === undefined;", json!([])).await, true, "the inline script did not run");
    let console = b.console().await;
    assert!(console.iter().any(|l| l.contains("Content Security Policy")), "the console reports it: {console:?}");
    b.quit().await;
}

#[tokio::test]
async fn a_server_out_of_reach_at_sign_in_is_one_clear_sentence() {
    let Some(s) = stack("").await else { return };
    let Some(b) = Browser::start().await else { return };
    let cal = s.mkcalendar("alice", "team").await;
    b.goto(&format!("{}/.davpush/demo/?calendar={cal}", s.gateway.url())).await;
    b.wait_for("the login form", "return !document.getElementById('login').hidden;", Duration::from_secs(10)).await;
    // The page is loaded; then its server goes away.
    s.gateway.shutdown().await.unwrap();
    sign_in(&b, "alice", "alice-password").await;
    b.wait_for(
        "an error message",
        "return document.getElementById('login-error').textContent !== '';",
        Duration::from_secs(10),
    )
    .await;
    let shown = b
        .eval(
            "return [document.getElementById('login-error').textContent, document.getElementById('user').hidden,
                     document.getElementById('logout').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(
        shown,
        json!(["The server could not be reached. Check the network connection and try again.", true, true])
    );
    b.quit().await;
}
