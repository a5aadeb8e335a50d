//! VAPID key rotation while the Director runs (issue 15), on one node (SQLite) and on two
//! (PostgreSQL + Redis, each node with a data directory of its own), and the outbox's owners:
//! each rotation message is sent once, by one node; the retries a dead node held are taken over
//! when its lease ends. Messages are checked by Python's http_ece and py_vapid.

use std::collections::BTreeMap;

use davpush_core::PendingDelivery;
use davpush_director::config::Overrides;
use davpush_director::{Config, RawConfig};
use davpush_testkit::fake_push::{Captured, FakePush};
use davpush_testkit::services::{postgres_schema, redis_url, unique_suffix};
use serde_json::{Value, json};

use crate::util::*;
use crate::vapid_rotation::check;
use crate::webpush::{ua_keys, web_push_params};

const ROTATION_MESSAGE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<push-message \
     xmlns=\"https://bitfire.at/webdav-push\" xmlns:D=\"DAV:\"><property-update><D:prop><transports/></D:prop>\
     </property-update></push-message>";

fn config_of(d: &TestDirector) -> Config {
    Config::from_raw(RawConfig::from_toml(d.toml(), &BTreeMap::new(), &Overrides::default()).unwrap()).unwrap()
}

/// `davpush vapid rotate` as the CLI runs it: its own process's view of the configuration and
/// its own handle on the store, while the Director runs.
async fn rotate(d: &TestDirector) -> davpush_director::vapid::Rotated {
    let config = config_of(d);
    let startup = config.prepare().unwrap();
    let store = davpush_store::open(&config.store_url).await.unwrap();
    let r = davpush_director::vapid::rotate(&config, &startup, store.as_ref()).await.unwrap();
    store.close().await;
    r
}

/// `davpush vapid list` likewise.
async fn list(d: &TestDirector) -> Vec<String> {
    let config = config_of(d);
    let startup = config.prepare().unwrap();
    let store = davpush_store::open(&config.store_url).await.unwrap();
    let lines = davpush_director::vapid::list(&config, &startup, store.as_ref()).await.unwrap();
    store.close().await;
    lines
}

async fn advertised(d: &TestDirector) -> String {
    let info: Value = d.http.get(d.url("/info")).send().await.unwrap().json().await.unwrap();
    info["vapid_public_key"].as_str().unwrap().to_owned()
}

fn retired_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("vapid-keys")).map(|e| e.count()).unwrap_or(0)
}

/// The next request, with the key that signed it (checked independently) and its plaintext.
fn signed_by(py: &str, push: &FakePush, req: &Captured, keys: &Value) -> (String, String) {
    let c = check(py, push, req, keys);
    (c["vapid_key"].as_str().unwrap().to_owned(), c["plaintext"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn issue_15_rotate_while_the_director_runs() {
    let Some(py) = interop_python() else { return };
    let mut push = FakePush::start().await;
    let d = start(&format!(
        "[server]\npurge_interval_secs = 1\n[store]\noutbox_lease_secs = 3\n[web_push]\nallow_hosts = \
         [\"127.0.0.1:{}\"]\nallow_http = true\nsubject = \"mailto:ops@example.org\"\n",
        push.addr.port()
    ))
    .await;
    let old_key = advertised(&d).await;
    let (keys_a, keys_b, keys_c) = (ua_keys(Some(&py)), ua_keys(Some(&py)), ua_keys(Some(&py)));
    for (client, ep, keys) in [("a", "a", &keys_a), ("b", "b", &keys_b)] {
        let (s, b) = d
            .subscribe(json!({"client_id": client, "topic": "cal-1", "push_services": {"web_push": web_push_params(&push.endpoint(ep), keys, "webdav-push-xml")}}))
            .await;
        assert_eq!(s, 201, "{b}");
    }

    let rotated = rotate(&d).await;
    assert_eq!(rotated.queued, 2);
    assert_ne!(rotated.new_public_key, old_key);
    let new_key = rotated.new_public_key.clone();
    eventually("the running Director advertises the new key", || async { advertised(&d).await == new_key }).await;

    // One rotation message per subscription, signed with the old key, sent by the running Director.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = push.next().await;
        let keys = if req.path == "/push/a" { &keys_a } else { &keys_b };
        assert_eq!(signed_by(&py, &push, &req, keys), (old_key.clone(), ROTATION_MESSAGE.to_owned()), "{}", req.path);
        seen.push(req.path);
    }
    seen.sort();
    assert_eq!(seen, ["/push/a", "/push/b"]);
    push.assert_none(1500).await;

    // Old subscriptions are still signed with the old key; a new one is bound to the new key.
    let (s, _) = d
        .subscribe(json!({"client_id": "c", "topic": "cal-1", "push_services": {"web_push": web_push_params(&push.endpoint("c"), &keys_c, "webdav-push-xml")}}))
        .await;
    assert_eq!(s, 201);
    d.notify(json!({"topic": "cal-1", "sync_token": "s1"})).await;
    for _ in 0..3 {
        let req = push.next().await;
        let (keys, key) = match req.path.as_str() {
            "/push/a" => (&keys_a, &old_key),
            "/push/b" => (&keys_b, &old_key),
            _ => (&keys_c, &new_key),
        };
        assert_eq!(&signed_by(&py, &push, &req, keys).0, key, "{}", req.path);
    }
    let lines = list(&d).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with(&format!("advertised {new_key}")) && lines[1].contains("retired, in use"), "{lines:?}");

    // Client b registers again with the key it now reads; then client a goes, and nothing uses
    // the old key: it leaves the store, the ring and the disk without a restart.
    d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "b"})).await;
    let keys_b2 = ua_keys(Some(&py));
    let (s, _) = d
        .subscribe(json!({"client_id": "b", "topic": "cal-2", "push_services": {"web_push": web_push_params(&push.endpoint("b2"), &keys_b2, "webdav-push-xml")}}))
        .await;
    assert_eq!(s, 201);
    d.notify(json!({"topic": "cal-2", "sync_token": "s2"})).await;
    let req = push.next().await;
    assert_eq!((req.path.as_str(), signed_by(&py, &push, &req, &keys_b2).0), ("/push/b2", new_key.clone()));
    assert_eq!(retired_files(d.data_dir()), 1, "client a still uses the old key");
    d.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": "a"})).await;
    eventually("the old key file goes", || async { retired_files(d.data_dir()) == 0 }).await;
    let lines = list(&d).await;
    assert_eq!(lines, [format!("{} advertised {new_key}", rotated.new_id)]);
    let ring = d.running.state.vapid.clone().unwrap();
    eventually("the ring drops the old key", || async { ring.get().ids() == [rotated.new_id.clone()] }).await;
    d.running.shutdown().await.unwrap();
}

/// Two nodes on one PostgreSQL schema and one Redis, each with its own data directory (no
/// shared filesystem).
async fn two_nodes(push: &FakePush) -> Option<(TestDirector, TestDirector, davpush_testkit::services::PgSchema)> {
    let redis = redis_url().await?;
    let schema = postgres_schema().await?;
    let prefix = format!("davpush-test-{}", unique_suffix());
    let conf = |node: &str| {
        format!(
            "[server]\npurge_interval_secs = 1\n[store]\nurl = {:?}\noutbox_lease_secs = 3\n[cluster]\n\
             redis_url = {redis:?}\nnode_id = {node:?}\nchannel_prefix = {prefix:?}\npresence_ttl_secs = 1\n\
             [web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\nsubject = \"mailto:ops@example.org\"\n",
            schema.url(),
            push.addr.port()
        )
    };
    let a = start(&conf("node-a")).await;
    let b = start(&conf("node-b")).await;
    Some((a, b, schema))
}

#[tokio::test]
async fn issue_15_rotation_in_a_cluster_sends_each_message_once_and_every_node_follows() {
    let Some(py) = interop_python() else { return };
    let mut push = FakePush::start().await;
    let Some((a, b, schema)) = two_nodes(&push).await else { return };
    let old_key = advertised(&a).await;
    assert_eq!(advertised(&b).await, old_key, "node b took the store's key, not the one it generated");
    let (keys_1, keys_2) = (ua_keys(Some(&py)), ua_keys(Some(&py)));
    for (client, topic, ep, keys) in
        [("p1", "cal-1", "e1", &keys_1), ("p1", "cal-2", "e1", &keys_1), ("p2", "cal-1", "e2", &keys_2)]
    {
        let (s, body) = b
            .subscribe(json!({"client_id": client, "topic": topic, "push_services": {"web_push": web_push_params(&push.endpoint(ep), keys, "webdav-push-xml")}}))
            .await;
        assert_eq!(s, 201, "{body}");
    }

    let rotated = rotate(&a).await;
    assert_eq!(rotated.queued, 2, "one per distinct endpoint");
    let new_key = rotated.new_public_key.clone();
    for d in [&a, &b] {
        eventually("every node advertises the new key", || async { advertised(d).await == new_key }).await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = push.next().await;
        let keys = if req.path == "/push/e1" { &keys_1 } else { &keys_2 };
        assert_eq!(signed_by(&py, &push, &req, keys), (old_key.clone(), ROTATION_MESSAGE.to_owned()), "{}", req.path);
        seen.push(req.path);
    }
    seen.sort();
    assert_eq!(seen, ["/push/e1", "/push/e2"]);
    // Both nodes look at the outbox every second: neither sends a message the other holds.
    push.assert_none(4000).await;
    for d in [&a, &b] {
        let on_disk = davpush_delivery::webpush::vapid::VapidKey::load(&d.data_dir().join("vapid-key.pem")).unwrap();
        assert_eq!(on_disk.public_key(), new_key, "each node's key file follows the store");
        assert_eq!(retired_files(d.data_dir()), 1);
    }

    // A notification through either node: old subscriptions keep the old key.
    a.notify(json!({"topic": "cal-1", "sync_token": "s1"})).await;
    for _ in 0..2 {
        let req = push.next().await;
        let keys = if req.path == "/push/e1" { &keys_1 } else { &keys_2 };
        assert_eq!(signed_by(&py, &push, &req, keys).0, old_key, "{}", req.path);
    }
    for client in ["p1", "p2"] {
        b.post("/unsubscribe", Some(SUB_TOKEN), json!({"client_id": client})).await;
    }
    for d in [&a, &b] {
        eventually("the unused old key goes from every node", || async { retired_files(d.data_dir()) == 0 }).await;
    }
    a.running.shutdown().await.unwrap();
    b.running.shutdown().await.unwrap();
    schema.drop_schema().await;
}

#[tokio::test]
async fn issue_15_the_retries_of_a_dead_node_are_taken_over_after_its_lease() {
    let mut push = FakePush::start().await;
    let Some((a, b, schema)) = two_nodes(&push).await else { return };
    let keys = ua_keys(None);
    let (s, body) = a
        .subscribe(json!({"client_id": "p", "topic": "cal-1", "push_services": {"web_push": web_push_params(&push.endpoint("x"), &keys, "topic-json")}}))
        .await;
    assert_eq!(s, 201, "{body}");
    let id = body["subscriptions"][0]["id"].as_str().unwrap().to_owned();

    // A third node held a retry for it and was killed: its row stays, owned, its lease running
    // out (what SIGKILL leaves: nobody renews or releases it).
    let dead = davpush_store::open(&schema.url()).await.unwrap();
    dead.set_outbox_lease(3);
    let now = davpush_core::unix_now();
    let row = PendingDelivery {
        subscription_id: id.clone(),
        topic: "cal-1".into(),
        sync_token: Some("s-dead".into()),
        trigger: Some("content".into()),
        attempt: 2,
        due: now,
        deadline: now + 600,
    };
    dead.save_pending(std::slice::from_ref(&row)).await.unwrap();
    drop(dead);
    // Neither live node touches it while the lease holds (claims run every second)…
    push.assert_none(1500).await;
    // …then exactly one of them sends it.
    let req = push.next().await;
    assert_eq!(req.path, "/push/x");
    push.assert_none(3000).await;
    let store = davpush_store::open(&schema.url()).await.unwrap();
    eventually("the delivered row leaves the outbox", || async { store.load_pending().await.unwrap().is_empty() })
        .await;
    store.close().await;
    a.running.shutdown().await.unwrap();
    b.running.shutdown().await.unwrap();
    schema.drop_schema().await;
}
