//! Issue 15: a real `EventSource` in headless Chromium (testkit::browser) reads `GET /events`
//! from a page of another origin (CORS), and across a Director restart reconnects by itself with
//! its `Last-Event-ID`: the restarted Director (a new history) answers with one `resync`, then
//! notifications go on.

use std::time::Duration;

use davpush_testkit::browser::Browser;
use serde_json::json;

use crate::util::*;

/// Opens an `EventSource` on `url` in the page; its events are collected in `window.__ev`.
const OPEN: &str = r#"
window.__ev = []; window.__opens = 0; window.__errors = 0;
const es = new EventSource(arguments[0]);
es.onopen = () => { window.__opens += 1; };
es.onerror = () => { window.__errors += 1; };
for (const type of ['notify', 'resync']) {
  es.addEventListener(type, (e) => window.__ev.push({type, id: e.lastEventId, data: JSON.parse(e.data)}));
}
window.__es = es;
return true;
"#;

#[tokio::test]
async fn issue_15_an_event_source_in_chromium_resumes_across_a_director_restart() {
    let Some(b) = Browser::start().await else { return };
    let port = davpush_testkit::free_port();
    let d = start(&format!("[server]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    // A page of another origin (localhost, the stream is on 127.0.0.1): read through CORS.
    b.goto(&format!("http://localhost:{port}/info")).await;
    let url = format!("{}/events?topic=cal-1&topic=cal-2&access_token={SUB_TOKEN}", d.running.url());
    b.eval(OPEN, json!([url])).await;
    b.wait_for("the stream opens", "return window.__opens === 1;", Duration::from_secs(10)).await;
    d.notify(json!({"topic": "cal-1", "sync_token": "1"})).await;
    b.wait_for("the first event", "return window.__ev.length === 1;", Duration::from_secs(5)).await;
    let first = b.eval("return window.__ev[0];", json!([])).await;
    assert_eq!(first["type"], "notify");
    assert_eq!(first["data"], json!({"type": "notify", "topic": "cal-1", "sync_token": "1"}));
    let first_id = first["id"].as_str().unwrap().to_owned();

    let d = d.restart().await;
    b.wait_for("the browser reconnects by itself", "return window.__opens === 2;", Duration::from_secs(20)).await;
    b.wait_for("a resync", "return window.__ev.length === 2;", Duration::from_secs(5)).await;
    let resync = b.eval("return window.__ev[1];", json!([])).await;
    assert_eq!(resync["type"], "resync", "{resync}");
    assert_eq!(resync["data"]["topics"], json!(["cal-1", "cal-2"]), "the history was in the old process");
    let epoch = |id: &str| id.split('-').next().unwrap().to_owned();
    assert_ne!(epoch(resync["id"].as_str().unwrap()), epoch(&first_id));
    d.notify(json!({"topic": "cal-2", "sync_token": "2"})).await;
    b.wait_for("a notification after the restart", "return window.__ev.length === 3;", Duration::from_secs(5)).await;
    let third = b.eval("return window.__ev[2];", json!([])).await;
    assert_eq!(third["data"], json!({"type": "notify", "topic": "cal-2", "sync_token": "2"}));
    assert_eq!(epoch(third["id"].as_str().unwrap()), epoch(resync["id"].as_str().unwrap()));

    // A short loss without a restart: the browser resumes and gets what it missed, replayed.
    d.running.state.hub.close_all(davpush_core::live::CloseReason::Timeout);
    d.notify(json!({"topic": "cal-1", "sync_token": "3"})).await;
    b.wait_for("the missed notification", "return window.__ev.length === 4;", Duration::from_secs(20)).await;
    let fourth = b.eval("return [window.__ev[3], window.__opens];", json!([])).await;
    assert_eq!(fourth[0]["data"]["sync_token"], "3", "{fourth}");
    assert_eq!(fourth[1], 3, "it came with the third stream");
    b.quit().await;
    d.running.shutdown().await.unwrap();
}
