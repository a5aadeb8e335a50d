//! Issue 16 in the browser: `davpush.js` in headless Chromium receives Xandikos's own Web Push
//! (`xandikos serve --webdav-push`) through the Director as push service. The page is one of
//! Xandikos's origin (the test imports `web/davpush.js` into it, as a web app hosted with the
//! server would load it), so discovery and `push-register` are same-origin requests; the page's
//! WebSocket goes to the Director. What runs for real: Xandikos discovers, registers, encrypts
//! and VAPID-signs (pywebpush); the Director passes the ciphertext on; the page generates its
//! RFC 8291 keys and decrypts with Web Crypto, renews the registration, and on `close` removes
//! it at Xandikos and ends the push subscription (its endpoint then answers 410).

use std::time::Duration;

use davpush_testkit::browser::Browser;
use serde_json::{Value, json};

use crate::xandikos_push::{put_event, setup};

/// Discovers `arguments[0]` and watches it through the Director at `arguments[1]`; collects
/// events in `window.__got` / `__subs` / `__unreg` / `__errors`, and every frame the page sends
/// in `window.__sent`.
const WATCH: &str = r#"
return (async () => {
  window.__got = []; window.__subs = []; window.__unreg = []; window.__errors = []; window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) { window.__sent.push(JSON.parse(data)); return send.call(this, data); };
  const cal = await window.davpush.discover(arguments[0]);
  const push = window.davpush.PushClient.direct(arguments[1], { maxRegistrationMs: 3000 });
  push.addEventListener("update", (e) => window.__got.push(e.detail));
  push.addEventListener("subscribed", (e) => window.__subs.push(e.detail));
  push.addEventListener("unregistered", (e) => window.__unreg.push(e.detail));
  push.addEventListener("error", (e) => window.__errors.push(e.detail));
  push.watch(cal);
  window.__push = push;
  return { topic: cal.topic, webPush: cal.webPush, vapid: cal.vapidPublicKey, director: cal.director };
})();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_davpush_js_in_chromium_receives_xandikos_web_push_through_the_director() {
    let Some(mut s) = setup().await else { return };
    let Some(b) = Browser::start().await else { return };
    let director = s.director.as_ref().unwrap().addr;
    let origin = s.calendar.split("/user/").next().unwrap().to_owned();
    b.goto(&format!("{origin}/")).await;
    b.import_davpush_js().await;
    let found = b.eval(WATCH, json!([s.calendar, format!("ws://{director}/ws")])).await;
    assert_eq!(found["topic"], s.topic.as_str(), "{found}");
    assert_eq!((found["webPush"].as_bool(), found["director"].as_str()), (Some(true), Some("")), "{found}");
    let vapid = found["vapid"].as_str().expect("Xandikos advertises its VAPID key").to_owned();
    let xlog = || std::fs::read_to_string(&s.xlog).unwrap_or_default();
    let errors = async || b.eval("return window.__errors;", json!([])).await;
    let within = Duration::from_secs(30);
    if tokio::time::timeout(within, b.wait_for("registered with Xandikos", "return window.__subs.length >= 1;", within))
        .await
        .is_err()
    {
        panic!("not registered: {}; Xandikos log:\n{}", errors().await, xlog());
    }
    let sub = b.eval("return window.__subs[0];", json!([])).await;
    assert_eq!(sub["mode"], "push-service", "{sub}");
    let sent = b.eval("return window.__sent.filter((f) => f.type === 'push_subscribe');", json!([])).await;
    assert_eq!(sent[0]["vapid_key"], vapid.as_str(), "a subscription restricted to Xandikos's key: {sent}");

    put_event(&s, "browser-1").await;
    b.wait_for("the first push, decrypted", "return window.__got.length >= 1;", Duration::from_secs(30)).await;
    let u = b.eval("return window.__got[0];", json!([])).await;
    assert_eq!((u["collection"].as_str(), u["topic"].as_str()), (Some(s.calendar.as_str()), Some(s.topic.as_str())));
    assert!(u["syncToken"].is_string(), "Xandikos sends its new sync-token: {u}");

    // Renewed (every 3 s here) at the same endpoint; pushes keep coming.
    b.wait_for("a renewal", "return window.__subs.length >= 2;", Duration::from_secs(10)).await;
    put_event(&s, "browser-2").await;
    b.wait_for("a push after the renewal", "return window.__got.length >= 2;", Duration::from_secs(30)).await;
    let tokens: Vec<Value> =
        b.eval("return window.__got.map((u) => u.syncToken);", json!([])).await.as_array().unwrap().clone();
    assert_ne!(tokens[0], tokens[1], "two changes, two sync-tokens");
    assert_eq!(errors().await, json!([]), "no errors");

    // Stopping removes the registration at Xandikos and ends the push subscription.
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    b.eval("return window.__push.close().then(() => true);", json!([])).await;
    let unreg = b.eval("return window.__unreg;", json!([])).await;
    let status = unreg[0]["status"].as_u64().unwrap_or(0);
    assert!((200..300).contains(&status), "the registration was removed at Xandikos: {unreg}");
    let path = endpoint.split_once("/push/").map(|(_, id)| format!("/push/{id}")).unwrap();
    let http = reqwest::Client::new();
    davpush_testkit::eventually("the endpoint answers 410", || async {
        let r = http.post(format!("http://{director}{path}")).header("TTL", "60").send().await;
        r.is_ok_and(|r| r.status().as_u16() == 410)
    })
    .await;
    b.quit().await;
    s.director.take().unwrap().shutdown().await.unwrap();
}
