//! Issue 15, "Server-Sent Events with resume": `GET /events` streams notifications as SSE with
//! positions (`id:`), and a client that comes back with `Last-Event-ID` gets exactly what it
//! missed, or one `resync`; the WebSocket's `subscribe` with `since` does the same
//! (docs/protocol.md §4.5, §4.6).

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use davpush_proto::GrantKeys;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::util::*;

/// One SSE block: an event, a comment or a field-only block (`retry:`/`id:`).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Block {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) comment: Option<String>,
    pub(crate) retry: Option<u64>,
}

impl Block {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("an event with data")).unwrap()
    }
}

/// An open `GET /events` response, read block by block.
pub(crate) struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
    /// The last `id:` seen (what a browser would send as `Last-Event-ID`).
    pub(crate) last_id: Option<String>,
}

/// `GET /events?<query>` with the subscription token (header), and `Last-Event-ID` if given.
pub(crate) async fn request(base: &str, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{base}/events?{query}")).bearer_auth(SUB_TOKEN);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.unwrap()
}

impl Sse {
    pub(crate) async fn open(base: &str, query: &str, last_event_id: Option<&str>) -> Sse {
        let resp = request(base, query, last_event_id).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        Sse { body: Box::pin(resp.bytes_stream()), buf: String::new(), last_id: last_event_id.map(str::to_owned) }
    }

    /// The next block, within 5 s.
    pub(crate) async fn next(&mut self) -> Block {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let text: String = self.buf.drain(..end + 2).collect();
                let mut b = Block::default();
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        b.comment = Some(c.trim().to_owned());
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v).to_owned();
                        match k {
                            "id" => b.id = Some(v),
                            "event" => b.event = Some(v),
                            "data" => b.data = Some(v),
                            "retry" => b.retry = Some(v.parse().unwrap()),
                            other => panic!("unknown field {other}"),
                        }
                    }
                }
                if b.id.is_some() {
                    self.last_id.clone_from(&b.id);
                }
                return b;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.body.next())
                .await
                .expect("no SSE data within 15 s (a loaded debug build)")
                .expect("the stream ended")
                .expect("stream error");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event (comments and field-only blocks skipped).
    pub(crate) async fn event(&mut self) -> Block {
        loop {
            let b = self.next().await;
            if b.event.is_some() {
                return b;
            }
        }
    }

    /// Reads the opening blocks: `retry:` and, on a first stream, the `id:` to resume from.
    pub(crate) async fn opened(&mut self) -> Block {
        let b = self.next().await;
        assert_eq!(b.retry, Some(1000), "{b:?}");
        b
    }

    /// Whether the stream ends within 5 s (data before the end is skipped).
    pub(crate) async fn ends(&mut self) -> bool {
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.body.next().await {
                    None | Some(Err(_)) => return true,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        r.unwrap_or(false)
    }

    /// Asserts no event arrives within `ms` (keep-alive comments are ignored).
    pub(crate) async fn assert_silent(&mut self, ms: u64) {
        if let Ok(b) = tokio::time::timeout(Duration::from_millis(ms), self.event()).await {
            panic!("unexpected event {b:?}");
        }
    }
}

fn notify_of(topic: &str, token: &str) -> Value {
    json!({"type": "notify", "topic": topic, "sync_token": token})
}

/// The next events' (event type, data) pairs.
async fn events(s: &mut Sse, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let b = s.event().await;
        assert!(b.id.is_some(), "every event has an id: {b:?}");
        out.push((b.event.clone().unwrap(), b.json()));
    }
    out
}

fn notified(list: &[(&str, &str)]) -> Vec<(String, Value)> {
    list.iter().map(|(t, s)| ("notify".to_owned(), notify_of(t, s))).collect()
}

#[tokio::test]
async fn issue_15_an_sse_stream_gets_each_notification_as_an_event_with_a_position() {
    let d = start("").await;
    let mut s = Sse::open(&d.running.url(), "topic=cal-1&topic=cal-2", None).await;
    let first = s.opened().await;
    let start_id = first.id.clone().expect("a first stream starts at the history's head");
    d.notify(json!({"topic": "cal-1", "sync_token": "s1"})).await;
    d.notify(json!({"topics": ["other", {"topic": "cal-2", "sync_token": "s2", "trigger": "property"}]})).await;
    let a = s.event().await;
    assert_eq!((a.event.as_deref(), a.json()), (Some("notify"), notify_of("cal-1", "s1")));
    let b = s.event().await;
    assert_eq!(b.json(), json!({"type": "notify", "topic": "cal-2", "sync_token": "s2", "trigger": "property"}));
    // Positions: <epoch>-<ms>-<n>, of one history, increasing.
    let parse = |id: &str| {
        let mut p = id.splitn(2, '-');
        let epoch = p.next().unwrap().to_owned();
        let (ms, n) = p.next().unwrap().split_once('-').unwrap();
        (epoch, ms.parse::<u64>().unwrap(), n.parse::<u64>().unwrap())
    };
    let (p0, p1, p2) = (parse(&start_id), parse(a.id.as_ref().unwrap()), parse(b.id.as_ref().unwrap()));
    assert!(p0.0 == p1.0 && p1.0 == p2.0, "one epoch: {start_id} {:?} {:?}", a.id, b.id);
    assert!((p0.1, p0.2) < (p1.1, p1.2) && (p1.1, p1.2) < (p2.1, p2.2), "increasing");
    s.assert_silent(200).await;
    let (_, report) = d.notify(json!({"topic": "cal-1"})).await;
    assert_eq!(report["services"], json!({"websocket": 1}), "a stream counts as a WebSocket subscriber");
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_sse_needs_the_subscription_token_and_a_grant_per_topic() {
    let d = start("[subscription]\ngrants = \"required\"\n").await;
    let keys = GrantKeys::parse(&std::fs::read_to_string(d.data_dir().join("grant-key")).unwrap()).unwrap();
    let url = d.running.url();
    let client = reqwest::Client::new();
    let r = client.get(format!("{url}/events?topic=a")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"davpush\"");
    let r = client.get(format!("{url}/events?topic=a&access_token=wrong-token-123456")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let soon = davpush_core::unix_now() + 300;
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned())
    };
    assert_eq!(code(request(&url, "topic=a", None).await).await, (403, "grant_required".into()));
    let only_a = keys.sign(["a"], soon);
    let r = request(&url, &format!("topic=a&topic=b&grant={only_a}"), None).await;
    assert_eq!(code(r).await, (403, "grant_invalid".into()), "a grant for a does not cover b");
    let foreign = GrantKeys::parse(&GrantKeys::generate_line()).unwrap().sign(["a"], soon);
    assert_eq!(code(request(&url, &format!("topic=a&grant={foreign}"), None).await).await.0, 403);
    assert_eq!(code(request(&url, "", None).await).await, (400, "invalid_request".into()));
    assert_eq!(code(request(&url, "topic=a&bogus=1", None).await).await, (400, "invalid_request".into()));

    // One grant naming both, or one grant each; the token as a query parameter (EventSource
    // cannot set headers).
    let both = keys.sign(["a", "b"], soon);
    let mut s = Sse::open(&url, &format!("topic=a&topic=b&grant={both}"), None).await;
    let only_b = keys.sign(["b"], soon);
    let r = client
        .get(format!("{url}/events?topic=a&topic=b&grant={only_a}&grant={only_b}&access_token={SUB_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.opened().await;
    d.notify(json!({"topic": "b", "sync_token": "1"})).await;
    assert_eq!(s.event().await.json(), notify_of("b", "1"));
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"grant_refused\"}"), 3.0, "{m}");
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_sse_streams_get_keep_alive_comments_at_the_ping_interval() {
    let d = start("[websocket]\nping_interval_secs = 1\n").await;
    let mut s = Sse::open(&d.running.url(), "topic=t", None).await;
    s.opened().await;
    // Several rounds: a stream that only receives is not dropped as silent after two.
    for _ in 0..3 {
        let b = s.next().await;
        assert_eq!(b.comment.as_deref(), Some("keep-alive"), "{b:?}");
    }
    d.notify(json!({"topic": "t", "sync_token": "after"})).await;
    assert_eq!(s.event().await.json(), notify_of("t", "after"));
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_last_event_id_replays_exactly_what_was_missed_in_order() {
    let d = start("").await;
    let url = d.running.url();
    let mut s = Sse::open(&url, "topic=a&topic=b", None).await;
    s.opened().await;
    d.notify(json!({"topic": "a", "sync_token": "a1"})).await;
    assert_eq!(s.event().await.json(), notify_of("a", "a1"));
    let seen = s.last_id.clone().unwrap();
    drop(s);
    eventually("the stream's subscriptions end", || async { d.running.state.service.index().is_empty() }).await;

    // Missed while away: a2, b1, a3 (and c, which the stream does not watch).
    for (t, tok) in [("a", "a2"), ("b", "b1"), ("c", "c1"), ("a", "a3")] {
        let (_, r) = d.notify(json!({"topic": t, "sync_token": tok})).await;
        assert_eq!(r["addressed"], 0, "nobody listens while the client is away");
    }
    let mut s = Sse::open(&url, "topic=a&topic=b", Some(&seen)).await;
    let opened = s.opened().await;
    assert_eq!(opened.id, None, "a resumed stream goes on from the client's own id");
    assert_eq!(events(&mut s, 3).await, notified(&[("a", "a2"), ("b", "b1"), ("a", "a3")]));
    d.notify(json!({"topic": "b", "sync_token": "b2"})).await;
    assert_eq!(s.event().await.json(), notify_of("b", "b2"), "then live, without duplicates");
    s.assert_silent(200).await;

    // The same through the query (reconnect by URL), from the replayed a2 on.
    let a2 = {
        let mut replay = Sse::open(&url, &format!("topic=a&lastEventId={seen}"), None).await;
        replay.opened().await;
        replay.event().await.id.unwrap()
    };
    let mut s3 = Sse::open(&url, &format!("topic=a&lastEventId={a2}"), None).await;
    s3.opened().await;
    assert_eq!(s3.event().await.json(), notify_of("a", "a3"));
    s3.assert_silent(100).await;
    let m = d.metrics().await;
    assert!(metric(&m, "davpush_resumed_total{reason=\"replayed\"}") >= 5.0, "{m}");
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_a_client_away_beyond_the_history_gets_one_resync() {
    let d = start("[history]\nper_topic = 2\n").await;
    let url = d.running.url();
    let mut s = Sse::open(&url, "topic=a&topic=b", None).await;
    let seen = s.opened().await.id.unwrap();
    drop(s);
    // a changes three times (one more than kept), b once.
    for (t, tok) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3")] {
        d.notify(json!({"topic": t, "sync_token": tok})).await;
    }
    let mut s = Sse::open(&url, "topic=a&topic=b", Some(&seen)).await;
    s.opened().await;
    let first = s.event().await;
    assert_eq!(first.json(), notify_of("b", "b1"), "b is replayed");
    let resync = s.event().await;
    assert_eq!(resync.event.as_deref(), Some("resync"));
    assert_eq!(resync.json(), json!({"type": "resync", "topics": ["a"], "position": resync.id.clone().unwrap()}));
    s.assert_silent(100).await;
    // Continuing from the resync's id there is nothing more to catch up.
    let mut s = Sse::open(&url, "topic=a&topic=b", resync.id.as_deref()).await;
    s.opened().await;
    s.assert_silent(100).await;
    // A position that is none of ours is a resync too, never a replay.
    let mut s = Sse::open(&url, "topic=a", Some("0123abcd-1-0")).await;
    s.opened().await;
    assert_eq!(s.event().await.event.as_deref(), Some("resync"));
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_after_a_director_restart_a_resumed_stream_gets_a_resync_never_a_wrong_replay() {
    let d = start("").await;
    let mut s = Sse::open(&d.running.url(), "topic=a&topic=b", None).await;
    s.opened().await;
    d.notify(json!({"topic": "a", "sync_token": "a1"})).await;
    s.event().await;
    let seen = s.last_id.clone().unwrap();
    drop(s);
    let d = d.restart().await;
    // The new history has positions too, likely with the same times: a replay from the old
    // position would be wrong. Its epoch differs, so the client re-syncs.
    d.notify(json!({"topic": "a", "sync_token": "a2"})).await;
    let mut s = Sse::open(&d.running.url(), "topic=a&topic=b", Some(&seen)).await;
    s.opened().await;
    let b = s.event().await;
    assert_eq!(b.event.as_deref(), Some("resync"));
    assert_eq!(b.json()["topics"], json!(["a", "b"]));
    assert_ne!(b.id.as_deref().unwrap().split('-').next(), seen.split('-').next(), "a new epoch");
    d.notify(json!({"topic": "b", "sync_token": "b1"})).await;
    assert_eq!(s.event().await.json(), notify_of("b", "b1"));
    d.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue_15_shutdown_ends_sse_streams() {
    let d = start("").await;
    let mut s = Sse::open(&d.running.url(), "topic=a", None).await;
    s.opened().await;
    let stop = tokio::spawn(d.running.shutdown());
    assert!(s.ends().await, "the stream ends (the browser reconnects)");
    stop.await.unwrap().unwrap();
}

#[tokio::test]
async fn issue_15_websocket_subscribe_with_since_replays_or_resyncs() {
    let d = start("[history]\nper_topic = 2\n").await;
    let (mut ws, _) = d.ws().await;
    // hello carries the position a first subscribe resumes from.
    let (mut ws0, hello) = {
        let req = d.ws_request(Some(SUB_TOKEN), &[davpush_proto::SUBPROTOCOL]);
        let (mut ws0, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let hello = next_json(&mut ws0).await;
        (ws0, hello)
    };
    let start_pos = hello["position"].as_str().expect("hello has a position").to_owned();
    send_json(&mut ws0, json!({"type": "subscribe", "id": "1", "topic": "a", "since": start_pos})).await;
    assert_eq!(next_json(&mut ws0).await["type"], "subscribed");
    // Without `since` frames are as version 1 had them.
    send_json(&mut ws, json!({"type": "subscribe", "topic": "a"})).await;
    next_json(&mut ws).await;
    d.notify(json!({"topic": "a", "sync_token": "a1"})).await;
    assert_eq!(next_json(&mut ws).await, notify_of("a", "a1"));
    let f = next_json(&mut ws0).await;
    let p1 = f["position"].as_str().expect("with since: positions").to_owned();
    assert_eq!(f, json!({"type": "notify", "topic": "a", "sync_token": "a1", "position": p1}));
    drop(ws0);

    for tok in ["a2", "a3"] {
        d.notify(json!({"topic": "a", "sync_token": tok})).await;
        assert_eq!(next_json(&mut ws).await, notify_of("a", tok));
    }
    d.notify(json!({"topic": "b", "sync_token": "b1"})).await;
    let (mut back, _) = d.ws().await;
    send_json(&mut back, json!({"type": "subscribe", "id": "1", "topic": "a", "since": p1})).await;
    assert_eq!(next_json(&mut back).await["type"], "subscribed", "the answer comes first");
    let a2 = next_json(&mut back).await;
    assert_eq!((a2["sync_token"].as_str(), a2["position"].is_string()), (Some("a2"), true));
    assert_eq!(next_json(&mut back).await["sync_token"], "a3");
    assert_silent(&mut back, 100).await;
    // b: three missed, two kept: a resync, with the position to continue from.
    for tok in ["b2", "b3"] {
        d.notify(json!({"topic": "b", "sync_token": tok})).await;
    }
    send_json(&mut back, json!({"type": "subscribe", "id": "2", "topic": "b", "since": p1})).await;
    assert_eq!(next_json(&mut back).await["type"], "subscribed");
    let r = next_json(&mut back).await;
    assert_eq!(r["type"], "resync");
    assert_eq!(r["topics"], json!(["b"]));
    assert!(r["position"].is_string());
    send_json(&mut back, json!({"type": "subscribe", "topic": "c", "since": "nonsense"})).await;
    assert_eq!(next_json(&mut back).await["type"], "subscribed");
    assert_eq!(next_json(&mut back).await["type"], "resync", "an unknown position is a resync");
    d.running.shutdown().await.unwrap();
}
