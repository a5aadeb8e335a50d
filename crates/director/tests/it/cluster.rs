//! Scale-out: two Director nodes in this process sharing one PostgreSQL schema and one Redis
//! (channels of their own per test), as in `docs/scale-out.md`.

use davpush_core::ServiceKind;
use davpush_testkit::redis_server::RedisServer;
use davpush_testkit::services::{PgSchema, postgres_schema, redis_url, unique_suffix};
use serde_json::json;

use crate::events::Sse;
use crate::util::*;
use crate::webpush::{ua_keys, web_push_params};
use davpush_testkit::fake_push::FakePush;

struct Cluster {
    a: TestDirector,
    b: TestDirector,
    schema: PgSchema,
    _shared: tempfile::TempDir,
    /// The channel names' prefix.
    prefix: String,
}

/// Nodes `a` and `b` on the shared test Redis.
async fn cluster() -> Option<Cluster> {
    cluster_pushing_to(None).await
}

/// Like [`cluster`], with `push`'s port allow-listed for Web Push.
async fn cluster_pushing_to(push: Option<&FakePush>) -> Option<Cluster> {
    let redis = redis_url().await?;
    cluster_at(&redis, push).await
}

/// Nodes `a` and `b` on the Redis at `redis`.
async fn cluster_on(redis: &str) -> Option<Cluster> {
    cluster_at(redis, None).await
}

/// Nodes `a` and `b`, started one after the other (`a` generates the VAPID key both use).
async fn cluster_at(redis: &str, push: Option<&FakePush>) -> Option<Cluster> {
    let allow = push.map(|p| format!("\"127.0.0.1:{}\"", p.addr.port())).unwrap_or_default();
    let schema = postgres_schema().await?;
    let prefix = format!("davpush-test-{}", unique_suffix());
    let shared = tempfile::tempdir().unwrap();
    let vapid = shared.path().join("vapid-key.pem").display().to_string();
    let conf = |node: &str| {
        format!(
            "[store]\nurl = {:?}\n[cluster]\nredis_url = {redis:?}\nnode_id = {node:?}\nchannel_prefix = {prefix:?}\n\
             presence_ttl_secs = 1\n\
             [web_push]\nallow_hosts = [{allow}]\nallow_http = true\nvapid_key_file = {vapid:?}\n",
            schema.url()
        )
    };
    let a = start(&conf("node-a")).await;
    let b = start(&conf("node-b")).await;
    Some(Cluster { a, b, schema, _shared: shared, prefix })
}

impl Cluster {
    async fn stop(self) {
        self.a.running.shutdown().await.unwrap();
        self.b.running.shutdown().await.unwrap();
        self.schema.drop_schema().await;
    }
}

fn web_push_count(d: &TestDirector) -> usize {
    d.running.state.service.index().counts()[ServiceKind::WebPush.index()]
}

#[tokio::test]
async fn a_notify_to_one_node_reaches_websockets_on_every_node_once() {
    let Some(c) = cluster().await else { return };
    let (mut on_b, conn_b) = c.b.ws().await;
    c.b.subscribe_ws("cb", "cal-1", &conn_b).await;
    let (mut on_a, conn_a) = c.a.ws().await;
    c.a.subscribe_ws("ca", "cal-1", &conn_a).await;

    let (s, _) = c.a.notify(json!({"topic": "cal-1", "sync_token": "http://dav.example/sync/7"})).await;
    assert_eq!(s, 202);
    let frame = json!({"type": "notify", "topic": "cal-1", "sync_token": "http://dav.example/sync/7"});
    assert_eq!(next_json(&mut on_b).await, frame, "the other node's connection gets it");
    assert_eq!(next_json(&mut on_a).await, frame, "the receiving node's own connection gets it");

    // The other direction, with a trigger; then nothing more: each frame arrived exactly once.
    c.b.notify(json!({"topic": "cal-1", "trigger": "property"})).await;
    let frame = json!({"type": "notify", "topic": "cal-1", "trigger": "property"});
    assert_eq!(next_json(&mut on_a).await, frame);
    assert_eq!(next_json(&mut on_b).await, frame);
    assert_silent(&mut on_a, 300).await;
    assert_silent(&mut on_b, 10).await;

    let m = c.a.metrics().await;
    assert_eq!(metric(&m, "davpush_cluster_messages_total{channel=\"notify\",outcome=\"published\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "davpush_cluster_messages_total{channel=\"notify\",outcome=\"received\"}"), 1.0, "{m}");
    c.stop().await;
}

#[tokio::test]
async fn a_web_push_subscription_made_on_one_node_is_delivered_once_by_the_notified_node() {
    let mut push = FakePush::start().await;
    let Some(c) = cluster_pushing_to(Some(&push)).await else { return };
    let keys = ua_keys(None);
    let (s, b) =
        c.b.subscribe(json!({
            "client_id": "phone", "topic": "cal-1",
            "push_services": {"web_push": web_push_params(&push.endpoint("a"), &keys, "topic-json")}
        }))
        .await;
    assert_eq!(s, 201, "{b}");
    eventually("node a learns the subscription", || async { web_push_count(&c.a) == 1 }).await;

    let (_, report) = c.a.notify(json!({"topic": "cal-1", "sync_token": "s1"})).await;
    assert_eq!(report["services"], json!({"web_push": 1}), "node a delivers it");
    let req = push.next().await;
    assert_eq!(req.path, "/push/a");
    push.assert_none(500).await;

    // Unsubscribing through node b stops node a.
    let (s, b) = c.b.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "phone", "topic": "cal-1"})).await;
    assert_eq!(s, 200, "{b}");
    eventually("node a forgets the subscription", || async { web_push_count(&c.a) == 0 }).await;
    let (_, report) = c.a.notify(json!({"topic": "cal-1", "sync_token": "s2"})).await;
    assert_eq!(report["services"], json!({}), "{report}");
    c.b.notify(json!({"topic": "cal-1", "sync_token": "s3"})).await;
    push.assert_none(500).await;
    c.stop().await;
}

#[tokio::test]
async fn a_node_started_later_loads_the_shared_subscriptions() {
    let mut push = FakePush::start().await;
    let Some(c) = cluster_pushing_to(Some(&push)).await else { return };
    let keys = ua_keys(None);
    let params = web_push_params(&push.endpoint("p"), &keys, "topic-json");
    let (s, _) = c.a.subscribe(json!({"client_id": "p", "topic": "t", "push_services": {"web_push": params}})).await;
    assert_eq!(s, 201);
    // Restarting node b: it reads the subscription from PostgreSQL, not from a message.
    let b = c.b.restart().await;
    assert_eq!(web_push_count(&b), 1);
    b.notify(json!({"topic": "t"})).await;
    assert_eq!(push.next().await.path, "/push/p");
    push.assert_none(500).await;
    let c = Cluster { b, ..c };
    c.stop().await;
}

/// Issue 9, item 10: after a Redis restart the publishing node used to find its connection broken
/// only at its next publish, and dropped that notification ("cannot publish to the cluster …
/// broken pipe"). Now the notification is sent again on a new connection.
#[tokio::test]
async fn issue_9_a_notification_sent_after_a_redis_restart_reaches_the_other_node() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let Some(c) = cluster_on(&redis.url()).await else { return };
    let (mut on_b, conn_b) = c.b.ws().await;
    c.b.subscribe_ws("cb", "cal-1", &conn_b).await;
    // Node a has published once (its publishing connection is open) before Redis goes away.
    let (s, _) = c.a.notify(json!({"topic": "cal-1", "sync_token": "before"})).await;
    assert_eq!(s, 202);
    assert_eq!(next_json(&mut on_b).await["sync_token"], "before");

    redis.restart().await;
    // Both nodes listen again (Redis pub/sub keeps nothing for absent subscribers).
    let channel = format!("{}:notify", c.prefix);
    eventually("both nodes subscribe again", || async { redis.subscribers(&channel).await == 2 }).await;

    let (s, _) = c.a.notify(json!({"topic": "cal-1", "sync_token": "after"})).await;
    assert_eq!(s, 202);
    let frame = json!({"type": "notify", "topic": "cal-1", "sync_token": "after"});
    assert_eq!(next_json(&mut on_b).await, frame, "the first notification after the restart is not lost");
    let m = c.a.metrics().await;
    assert_eq!(metric(&m, "davpush_cluster_messages_total{channel=\"notify\",outcome=\"failed\"}"), 0.0, "{m}");
    assert_eq!(metric(&m, "davpush_cluster_messages_total{channel=\"notify\",outcome=\"published\"}"), 2.0, "{m}");
    c.stop().await;
}

/// The `unheard` of a notify of `topics` at `d`, or `None` when `d` cannot tell yet.
async fn unheard(d: &TestDirector, topics: &[&str]) -> Option<Vec<String>> {
    let (s, r) = d.notify(json!({ "topics": topics })).await;
    assert_eq!(s, 202, "{r}");
    if r.get("unheard_unknown") == Some(&json!(true)) {
        assert!(r.get("unheard").is_none(), "an unknown answer names no topic: {r}");
        return None;
    }
    Some(r.get("unheard").map(|u| serde_json::from_value(u.clone()).unwrap()).unwrap_or_default())
}

/// Issue 15: a node never calls a topic unheard while another node holds a WebSocket
/// subscription of it; the subscription counts from its acknowledgement on.
#[tokio::test]
async fn issue_15_a_topic_with_a_websocket_on_another_node_is_not_unheard() {
    let Some(c) = cluster().await else { return };
    // A node vouches for the others only after watching the registry for a full TTL.
    eventually("node a can tell", || async { unheard(&c.a, &["cal-1"]).await.is_some() }).await;
    assert_eq!(unheard(&c.a, &["cal-1", "nobody"]).await.unwrap(), ["cal-1", "nobody"]);

    let (mut on_b, conn_b) = c.b.ws().await;
    c.b.subscribe_ws("cb", "cal-1", &conn_b).await;
    let (_, r) = c.a.notify(json!({"topics": ["cal-1", "nobody"]})).await;
    assert_eq!(r["unheard"], json!(["nobody"]), "b's socket listens, from its acknowledgement on: {r}");
    assert_eq!(r["addressed"], 0, "node a itself addresses nobody: {r}");
    assert_eq!(next_json(&mut on_b).await["topic"], "cal-1");

    // Node a lists b's topic, with the node that holds it.
    let (s, page) = crate::topics::active(&c.a, "").await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(
        page,
        json!({"topics": [{"topic": "cal-1", "subscriptions": 1, "services": {"websocket": 1}, "node": "node-b"}]})
    );
    // Node b lists it as its own, without a node.
    let (_, page) = crate::topics::active(&c.b, "").await;
    assert_eq!(page, json!({"topics": [{"topic": "cal-1", "subscriptions": 1, "services": {"websocket": 1}}]}));

    // The socket closes: nobody listens any more.
    on_b.close(None).await.unwrap();
    eventually("cal-1 is unheard again", || async { unheard(&c.a, &["cal-1"]).await.is_some_and(|u| u == ["cal-1"]) })
        .await;

    // A node that stops takes its record with it.
    let (_on_b, conn_b) = c.b.ws().await;
    c.b.subscribe_ws("cb", "cal-2", &conn_b).await;
    assert_eq!(unheard(&c.a, &["cal-2"]).await.unwrap(), Vec::<String>::new());
    let Cluster { a, b, schema, .. } = c;
    b.running.shutdown().await.unwrap();
    assert_eq!(unheard(&a, &["cal-2"]).await.unwrap(), ["cal-2"], "a stopped node's sockets are gone");
    a.running.shutdown().await.unwrap();
    schema.drop_schema().await;
}

/// Issue 15: Redis restarts and forgets every record; a node then says "unknown" until the
/// others have recorded their topics again, and never calls a listened-to topic unheard.
#[tokio::test]
async fn issue_15_after_a_redis_restart_no_listened_topic_is_called_unheard() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let Some(c) = cluster_on(&redis.url()).await else { return };
    let (_on_b, conn_b) = c.b.ws().await;
    c.b.subscribe_ws("cb", "cal-1", &conn_b).await;
    eventually("node a can tell", || async { unheard(&c.a, &["cal-1"]).await.is_some() }).await;

    redis.restart().await;
    let unknown = std::cell::Cell::new(0);
    eventually("node a can tell again", || async {
        match unheard(&c.a, &["cal-1", "nobody"]).await {
            None => {
                unknown.set(unknown.get() + 1);
                false
            }
            Some(u) => {
                assert_eq!(u, ["nobody"], "b's socket still listens");
                // Only after the restart was noticed (the first answers may precede it).
                unknown.get() > 0
            }
        }
    })
    .await;
    c.stop().await;
}

/// Issue 15: the history lives in Redis, so a notification has the same position on every node
/// and a client that lost its stream resumes on any node, also after that node restarted.
#[tokio::test]
async fn issue_15_positions_are_the_same_on_every_node_and_a_client_resumes_on_another() {
    let Some(c) = cluster().await else { return };
    let mut on_a = Sse::open(&c.a.running.url(), "topic=t&topic=u", None).await;
    let mut on_b = Sse::open(&c.b.running.url(), "topic=t&topic=u", None).await;
    let (first_a, first_b) = (on_a.opened().await.id, on_b.opened().await.id);
    assert!(first_a.is_some() && first_b.is_some(), "a first stream starts at the history's head");
    let (_, report) = c.a.notify(json!({"topic": "t", "sync_token": "t1"})).await;
    assert_eq!(report["services"], json!({"websocket": 1}), "this node's stream is addressed (through Redis)");
    c.b.notify(json!({"topics": [{"topic": "u", "sync_token": "u1"}, {"topic": "t", "sync_token": "t2"}]})).await;
    c.a.notify(json!({"topic": "u", "sync_token": "u2"})).await;
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..4 {
        let (ea, eb) = (on_a.event().await, on_b.event().await);
        seen_a.push((ea.id.clone().unwrap(), ea.json()["sync_token"].clone()));
        seen_b.push((eb.id.clone().unwrap(), eb.json()["sync_token"].clone()));
    }
    assert_eq!(seen_a, seen_b, "both nodes: the same events, in the same order, with the same ids");
    let tokens: Vec<_> = seen_a.iter().map(|(_, t)| t.as_str().unwrap()).collect();
    assert_eq!(tokens, ["t1", "u1", "t2", "u2"]);
    on_a.assert_silent(200).await;

    // The client of node a goes away, misses two notifications and comes back on node b.
    let seen = on_a.last_id.clone().unwrap();
    drop(on_a);
    c.b.notify(json!({"topic": "t", "sync_token": "t3"})).await;
    c.a.notify(json!({"topic": "u", "sync_token": "u3"})).await;
    assert_eq!(on_b.event().await.json()["sync_token"], "t3");
    assert_eq!(on_b.event().await.json()["sync_token"], "u3");
    let mut back = Sse::open(&c.b.running.url(), "topic=t&topic=u", Some(&seen)).await;
    back.opened().await;
    assert_eq!(back.event().await.json()["sync_token"], "t3");
    assert_eq!(back.event().await.json()["sync_token"], "u3");
    back.assert_silent(200).await;

    // Node b restarts: the history is Redis's, so resuming from before still replays.
    let seen = back.last_id.clone().unwrap();
    drop((back, on_b));
    c.a.notify(json!({"topic": "t", "sync_token": "t4"})).await;
    let b = c.b.restart().await;
    let mut again = Sse::open(&b.running.url(), "topic=t&topic=u", Some(&seen)).await;
    again.opened().await;
    assert_eq!(again.event().await.json()["sync_token"], "t4");
    // A WebSocket on node a resumes the same way (subscribe with since).
    let (mut ws, _) = c.a.ws().await;
    send_json(&mut ws, json!({"type": "subscribe", "topic": "t", "since": seen})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    let f = next_json(&mut ws).await;
    assert_eq!(f["sync_token"], "t4");
    assert_eq!(Some(f["position"].as_str().unwrap()), again.last_id.as_deref(), "the same position on both nodes");
    let c = Cluster { b, ..c };
    c.stop().await;
}

/// Issue 15: when Redis loses the history (a restart without persistence), a position from
/// before is never replayed from: the client re-syncs.
#[tokio::test]
async fn issue_15_a_history_redis_lost_is_a_resync() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let Some(c) = cluster_on(&redis.url()).await else { return };
    let mut s = Sse::open(&c.a.running.url(), "topic=t", None).await;
    s.opened().await;
    c.b.notify(json!({"topic": "t", "sync_token": "t1"})).await;
    assert_eq!(s.event().await.json()["sync_token"], "t1");
    let seen = s.last_id.clone().unwrap();
    drop(s);
    redis.restart().await;
    let channel = format!("{}:notify", c.prefix);
    eventually("both nodes subscribe again", || async { redis.subscribers(&channel).await == 2 }).await;
    c.b.notify(json!({"topic": "t", "sync_token": "t2"})).await;
    let mut s = Sse::open(&c.a.running.url(), "topic=t", Some(&seen)).await;
    s.opened().await;
    let r = s.event().await;
    assert_eq!((r.event.as_deref(), r.json()["topics"].clone()), (Some("resync"), json!(["t"])));
    assert_ne!(r.id.unwrap().split('-').next(), seen.split('-').next(), "a new epoch");
    c.stop().await;
}
