//! Issue 15: a real `EventSource` in headless Chromium (testkit::browser) reads `GET /events`
//! from a page of another origin (CORS), and across a Director restart reconnects by itself with
//! its `Last-Event-ID`: the restarted Director (a new history) answers with one `resync`, then
//! notifications go on. The same with `davpush.js` over the WebSocket (`subscribe` with
//! `since`), and its Web Crypto decryption of Web Push against RFC 8291's example.

use std::time::Duration;

use davpush_testkit::browser::Browser;
use serde_json::{Value, json};

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

/// Opens a `davpush.js` client straight to the Director (`arguments[0]`, the WebSocket URL;
/// `arguments[1]`, the token) watching two collections; what it reports is collected in
/// `window.__got` (`update`, `resync`), `window.__subscribed` and `window.__opens`.
const WATCH: &str = r#"
window.__got = []; window.__subscribed = 0; window.__opens = 0;
const push = window.davpush.PushClient.direct(arguments[0], { token: arguments[1], minBackoff: 4000, maxBackoff: 4000 });
push.addEventListener("update", (e) => window.__got.push(["update", e.detail.topic, e.detail.syncToken]));
push.addEventListener("resync", (e) => window.__got.push(["resync", e.detail.topic, e.detail.reason]));
push.addEventListener("subscribed", () => { window.__subscribed += 1; });
push.addEventListener("state", (e) => { if (e.detail.state === "open") window.__opens += 1; });
push.watch({ url: "/cal-1/", topic: "cal-1" });
push.watch({ url: "/cal-2/", topic: "cal-2" });
window.__push = push;
return true;
"#;

/// Issue 15 in `davpush.js`: the client remembers the last position and subscribes with it
/// after a reconnect. Cut connection, three notifications while it waits to reconnect: exactly
/// those three arrive afterwards, in order per collection, and no resync. Director restarted
/// (its history is gone): one `resync` per collection, then live updates again.
#[tokio::test]
async fn issue_15_davpush_js_gets_exactly_what_it_missed_and_a_resync_after_a_restart() {
    let Some(b) = Browser::start().await else { return };
    let port = davpush_testkit::free_port();
    let d = start(&format!("[server]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    b.goto(&format!("http://127.0.0.1:{port}/info")).await;
    b.import_davpush_js().await;
    b.eval(WATCH, json!([format!("ws://127.0.0.1:{port}/ws"), SUB_TOKEN])).await;
    b.wait_for("two subscriptions", "return window.__subscribed === 2;", Duration::from_secs(10)).await;
    d.notify(json!({"topic": "cal-1", "sync_token": "1"})).await;
    b.wait_for("a live update", "return window.__got.length === 1;", Duration::from_secs(5)).await;
    assert_eq!(b.eval("return window.__got;", json!([])).await, json!([["update", "cal-1", "1"]]));
    assert!(b.eval("return window.__push.position;", json!([])).await.is_string(), "a position is kept");

    // The connection is cut; while the client waits (2 to 4 s) to reconnect, three changes.
    d.running.state.hub.close_all(davpush_core::live::CloseReason::Timeout);
    b.wait_for("the client noticed", "return window.__push.state === 'waiting';", Duration::from_secs(5)).await;
    for (topic, token) in [("cal-1", "2"), ("cal-2", "3"), ("cal-1", "4")] {
        d.notify(json!({"topic": topic, "sync_token": token})).await;
    }
    assert_eq!(b.eval("return window.__push.state;", json!([])).await, "waiting", "sent while disconnected");
    b.wait_for("the missed changes", "return window.__got.length >= 4;", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = b.eval("return [window.__got, window.__opens];", json!([])).await;
    assert_eq!(got[1], 2, "one reconnect");
    let mut missed: Vec<Value> = got[0].as_array().unwrap()[1..].to_vec();
    let cal1: Vec<&Value> = missed.iter().filter(|e| e[1] == "cal-1").collect();
    assert_eq!(cal1, [&json!(["update", "cal-1", "2"]), &json!(["update", "cal-1", "4"])], "in order: {got}");
    missed.sort_by_key(|e| e.to_string());
    assert_eq!(
        missed,
        [json!(["update", "cal-1", "2"]), json!(["update", "cal-1", "4"]), json!(["update", "cal-2", "3"])],
        "exactly what was missed, no resync: {got}"
    );

    // A restart loses the in-memory history: the client is told to re-sync each collection.
    let d = d.restart().await;
    b.wait_for("two resyncs", "return window.__got.length === 6;", Duration::from_secs(20)).await;
    let mut resyncs: Vec<Value> = b.eval("return window.__got.slice(4);", json!([])).await.as_array().unwrap().clone();
    resyncs.sort_by_key(|e| e.to_string());
    assert_eq!(resyncs, [json!(["resync", "cal-1", "history"]), json!(["resync", "cal-2", "history"])]);
    d.notify(json!({"topic": "cal-2", "sync_token": "5"})).await;
    b.wait_for("a live update after the restart", "return window.__got.length === 7;", Duration::from_secs(5)).await;
    assert_eq!(b.eval("return window.__got[6];", json!([])).await, json!(["update", "cal-2", "5"]));
    b.eval("return window.__push.close().then(() => true);", json!([])).await;
    b.quit().await;
    d.running.shutdown().await.unwrap();
}

/// RFC 8291 Appendix A in `webpush.js` (Web Crypto in Chromium): the user agent's keys of the
/// example decrypt its message; a flipped bit, or other keys, do not.
#[tokio::test]
async fn issue_16_davpush_js_decrypts_the_rfc8291_example_with_web_crypto() {
    let Some(b) = Browser::start().await else { return };
    let port = davpush_testkit::free_port();
    let d = start(&format!("[server]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    // A secure context (http on 127.0.0.1), as Web Crypto requires.
    b.goto(&format!("http://127.0.0.1:{port}/info")).await;
    b.import_davpush_js().await;
    let got = b
        .eval(
            r#"return (async () => {
  const { importPushKeys, generatePushKeys, decryptPush, fromB64url, b64url } = window.davpush.webpush;
  const keys = await importPushKeys(
    "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
    "BTBZMqHH6r4Tts7J_aSIgg");
  const body = fromB64url(arguments[0]);
  const plain = new TextDecoder().decode(await decryptPush(keys, body));
  const tampered = body.slice(); tampered[tampered.length - 1] ^= 1;
  const refused = async (k, m) => decryptPush(k, m).then(() => "decrypted", (e) => "refused");
  const fresh = await generatePushKeys();
  return [plain, await refused(keys, tampered), await refused(fresh, body), await refused(keys, body.slice(0, 10)),
          fresh.publicKey.length, fresh.auth.length, b64url(keys.publicKey)];
})();"#,
            json!([concat!(
                "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6P",
                "Bru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
            )]),
        )
        .await;
    assert_eq!(
        got,
        json!([
            "When I grow up, I want to be a watermelon",
            "refused",
            "refused",
            "refused",
            65,
            16,
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
        ])
    );
    b.quit().await;
    d.running.shutdown().await.unwrap();
}
