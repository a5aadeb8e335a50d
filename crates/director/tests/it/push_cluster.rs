//! The push service across a cluster (issue 16, `docs/protocol.md` §10.4): two Directors on
//! real PostgreSQL and Redis, one public URL; the client's socket on one node, the sender
//! (Python `pywebpush`) posting to the other.

use davpush_testkit::services::{PgSchema, postgres_schema, redis_url, unique_suffix};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::push_service::{decrypt, oracle, push_subscribe, python, send};
use crate::util::{TestDirector, assert_silent, next_json, send_json, start};

struct PushCluster {
    a: TestDirector,
    b: TestDirector,
    schema: PgSchema,
}

/// Nodes `a` and `b` with the push service on; the public URL is `b`'s address (as if `b` were
/// the load balancer), so an endpoint reaches `b` as printed and `a` by its path.
async fn push_cluster() -> Option<PushCluster> {
    let redis = redis_url().await?;
    let schema = postgres_schema().await?;
    let prefix = format!("davpush-test-{}", unique_suffix());
    let public = davpush_testkit::free_port();
    let conf = |node: &str, port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = {:?}\n\
             [cluster]\nredis_url = {redis:?}\nnode_id = {node:?}\nchannel_prefix = {prefix:?}\n\
             [push_service]\nenabled = true\npublic_url = \"http://127.0.0.1:{public}\"\n",
            schema.url()
        )
    };
    let a = start(&conf("node-a", davpush_testkit::free_port())).await;
    let b = start(&conf("node-b", public)).await;
    Some(PushCluster { a, b, schema })
}

impl PushCluster {
    async fn stop(self) {
        self.a.running.shutdown().await.unwrap();
        self.b.running.shutdown().await.unwrap();
        self.schema.drop_schema().await;
    }
}

/// `endpoint` with `node`'s address.
fn on(node: &TestDirector, endpoint: &str) -> String {
    node.url(&endpoint[endpoint.find("/push/").unwrap()..])
}

async fn post_status(node: &TestDirector, endpoint: &str) -> StatusCode {
    node.http.post(on(node, endpoint)).header("TTL", "60").send().await.unwrap().status()
}

async fn waiting(node: &TestDirector, push_id: &str) -> usize {
    node.running.state.service.push_endpoints().unwrap().waiting(push_id).await.unwrap()
}

#[tokio::test]
async fn issue_16_a_push_to_any_node_reaches_the_client_wherever_it_is_attached() {
    let Some(py) = python() else { return };
    let Some(c) = push_cluster().await else { return };
    let keys = oracle(&py, "keys", &json!({}));

    // The client on node A, restricted to the sender's VAPID key; the sender posts to B.
    let (mut ws, _) = c.a.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe", "vapid_key": keys["vapid_key"]})).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    let push_id = sub["push_id"].as_str().unwrap().to_owned();
    assert!(endpoint.starts_with(&c.b.url("/push/")), "{endpoint}");
    let vapid = json!({"vapid_pem": keys["vapid_pem"], "topic": "cal1"});
    let sent = send(&py, &keys, &endpoint, "across the cluster", vapid).await;
    assert_eq!(sent["status"], 201, "{sent}");
    let frame = next_json(&mut ws).await;
    assert_eq!((frame["type"].as_str(), frame["push_id"].as_str()), (Some("push"), Some(push_id.as_str())));
    assert!(sent["location"].as_str().unwrap().ends_with(frame["message_id"].as_str().unwrap()));
    assert!(!frame.to_string().contains("across the cluster"), "forwarded still encrypted");
    assert_eq!(decrypt(&py, &keys, &frame["data"]), "across the cluster");

    // B checks the restriction it found in the directory.
    let other = oracle(&py, "keys", &json!({}));
    let forged = send(&py, &keys, &endpoint, "forged", json!({"vapid_pem": other["vapid_pem"]})).await;
    assert_eq!(forged["status"], 403, "{forged}");
    assert_eq!(send(&py, &keys, &endpoint, "unsigned", json!({})).await["status"], 401);
    assert_silent(&mut ws, 200).await;

    // Offline: what B accepts waits (A, the former holder, hands it to the directory), a newer
    // message with the same topic replacing the older.
    drop(ws);
    davpush_testkit::eventually("A saw the connection go", || async { c.a.running.state.hub.is_empty() }).await;
    for (data, topic) in [("first cal1", "cal1"), ("second cal1", "cal1"), ("other", "cal2")] {
        let extra = json!({"vapid_pem": keys["vapid_pem"], "topic": topic});
        assert_eq!(send(&py, &keys, &endpoint, data, extra).await["status"], 201);
    }
    davpush_testkit::eventually("two messages wait", || async { waiting(&c.a, &push_id).await == 2 }).await;
    // Posted to A by its own address, signed for the public origin.
    let public = c.b.url("");
    let zero = json!({"vapid_pem": keys["vapid_pem"], "ttl": 0, "aud": public});
    assert_eq!(send(&py, &keys, &on(&c.a, &endpoint), "ttl 0", zero).await["status"], 201);

    // The client re-attaches on B and gets them there.
    let (mut ws, _) = c.b.ws().await;
    let bad = json!({"type": "push_subscribe", "push_id": push_id, "secret": "not-the-secret"});
    send_json(&mut ws, bad).await;
    assert_eq!(next_json(&mut ws).await["error"], "forbidden");
    send_json(&mut ws, json!({"type": "push_subscribe", "push_id": push_id, "secret": sub["secret"]})).await;
    let got: Vec<Value> = [next_json(&mut ws).await, next_json(&mut ws).await, next_json(&mut ws).await].into();
    let answer = got.iter().find(|f| f["type"] == "push_subscribed").expect("re-attached on B");
    assert_eq!(answer["endpoint"], endpoint.as_str());
    let plain: Vec<String> =
        got.iter().filter(|f| f["type"] == "push").map(|f| decrypt(&py, &keys, &f["data"])).collect();
    assert_eq!(plain, ["second cal1", "other"]);
    assert_eq!(waiting(&c.b, &push_id).await, 0);

    // Now A forwards to B.
    let via_a = json!({"vapid_pem": keys["vapid_pem"], "aud": public});
    let sent = send(&py, &keys, &on(&c.a, &endpoint), "via A", via_a).await;
    assert_eq!(sent["status"], 201, "{sent}");
    assert_eq!(decrypt(&py, &keys, &next_json(&mut ws).await["data"]), "via A");

    // Unsubscribed on B: 410 on both nodes.
    send_json(&mut ws, json!({"type": "push_unsubscribe", "push_id": push_id, "secret": sub["secret"]})).await;
    assert_eq!(next_json(&mut ws).await["type"], "push_unsubscribed");
    assert_eq!(post_status(&c.a, &endpoint).await, StatusCode::GONE);
    assert_eq!(post_status(&c.b, &endpoint).await, StatusCode::GONE);
    c.stop().await;
}

#[tokio::test]
async fn issue_16_a_delete_on_another_node_ends_the_subscription_on_the_holder() {
    let Some(c) = push_cluster().await else { return };
    let (mut ws, _) = c.a.ws().await;
    let sub = push_subscribe(&mut ws, json!({"type": "push_subscribe"})).await;
    let endpoint = sub["endpoint"].as_str().unwrap().to_owned();
    assert_eq!(post_status(&c.a, &endpoint).await, StatusCode::CREATED);
    assert_eq!(next_json(&mut ws).await["type"], "push");
    let unknown = format!("{}/push/AAAAAAAAAAAAAAAAAAAAAAAA", c.b.url(""));
    assert_eq!(post_status(&c.a, &unknown).await, StatusCode::NOT_FOUND);

    let del = c.b.http.delete(on(&c.b, &endpoint));
    assert_eq!(del.try_clone().unwrap().bearer_auth("wrong").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(del.bearer_auth(sub["secret"].as_str().unwrap()).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(post_status(&c.b, &endpoint).await, StatusCode::GONE);
    // A, which holds the socket, learns of it from B.
    let push_id = sub["push_id"].as_str().unwrap();
    let eps = c.a.running.state.service.push_endpoints().unwrap().clone();
    davpush_testkit::eventually("A learnt of the DELETE", || async {
        matches!(eps.route(push_id, davpush_core::unix_now()).await, Err(davpush_core::pushsvc::PushError::Gone))
    })
    .await;
    assert_eq!(post_status(&c.a, &endpoint).await, StatusCode::GONE);
    assert_silent(&mut ws, 200).await;
    c.stop().await;
}
