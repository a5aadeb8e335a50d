//! Issue 11: the Director answers while it loads its durable subscriptions. `/healthz` says
//! alive, `/readyz` 503 until the load is done, and a notify sent meanwhile waits and then
//! reaches every durable subscriber.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use davpush_core::{Page, PendingDelivery, StoreError, StoredSubscription, SubscriptionStore};
use davpush_director::Config;
use davpush_director::app::{build_with_store, serve};
use davpush_director::config::{Overrides, RawConfig};
use davpush_testkit::fake_push::FakePush;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::*;
use crate::webpush::{ua_keys, web_push_params};

/// A store whose start-up reads wait until the test opens the gate, and whose reads of
/// targets (at a notify) wait for `targets`.
struct Gated {
    inner: Arc<dyn SubscriptionStore>,
    gate: Semaphore,
    targets: Semaphore,
}

#[async_trait::async_trait]
impl SubscriptionStore for Gated {
    async fn upsert(&self, s: &StoredSubscription) -> Result<String, StoreError> {
        self.inner.upsert(s).await
    }
    async fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        self.inner.delete(ids).await
    }
    async fn load(&self, now: i64) -> Result<Vec<StoredSubscription>, StoreError> {
        self.inner.load(now).await
    }
    async fn load_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        let _open = self.gate.acquire().await.unwrap();
        self.inner.load_page(now, after, limit).await
    }
    async fn load_routes_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        let _open = self.gate.acquire().await.unwrap();
        self.inner.load_routes_page(now, after, limit).await
    }
    async fn load_targets(&self, ids: &[String], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let _open = self.targets.acquire().await.unwrap();
        self.inner.load_targets(ids, now).await
    }
    async fn load_topic_targets(
        &self,
        topic: &str,
        service: &str,
        after: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let _open = self.targets.acquire().await.unwrap();
        self.inner.load_topic_targets(topic, service, after, now, limit).await
    }
    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError> {
        self.inner.purge_expired(now, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn save_pending(&self, rows: &[PendingDelivery]) -> Result<(), StoreError> {
        self.inner.save_pending(rows).await
    }
    async fn delete_pending(&self, ids: &[String]) -> Result<(), StoreError> {
        self.inner.delete_pending(ids).await
    }
    async fn load_pending(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.inner.load_pending().await
    }
    async fn claim_pending(&self, now: i64, limit: usize) -> Result<Vec<PendingDelivery>, StoreError> {
        self.inner.claim_pending(now, limit).await
    }
    async fn renew_pending(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.renew_pending(now).await
    }
    async fn release_pending(&self) -> Result<u64, StoreError> {
        self.inner.release_pending().await
    }
    async fn vapid_keys(&self) -> Result<Vec<davpush_core::StoredVapidKey>, StoreError> {
        self.inner.vapid_keys().await
    }
    async fn add_vapid_keys(&self, keys: &[davpush_core::StoredVapidKey]) -> Result<(), StoreError> {
        self.inner.add_vapid_keys(keys).await
    }
    async fn retire_vapid_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        self.inner.retire_vapid_key(id, at).await
    }
    async fn delete_vapid_key(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_vapid_key(id).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A Director restarted on the data directory of one that had `N` Web Push subscribers of
/// `topic` (at `push`), its store behind a [`Gated`] with `gate` and `targets` permits, served
/// on a free port.
struct Restarted {
    push: FakePush,
    addr: std::net::SocketAddr,
    store: Arc<Gated>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

const N: usize = 20;

async fn restarted(topic: &str, gate: usize, targets: usize) -> Restarted {
    let push = FakePush::start().await;
    let d =
        start(&format!("[web_push]\nallow_hosts = [\"127.0.0.1:{}\"]\nallow_http = true\n", push.addr.port())).await;
    let keys = ua_keys(None);
    for i in 0..N {
        let params = web_push_params(&push.endpoint(&format!("s{i}")), &keys, "topic-json");
        let body = json!({"client_id": format!("c{i}"), "topic": topic, "push_services": {"web_push": params}});
        assert_eq!(d.subscribe(body).await.0, 201);
    }
    let (toml, dir) = d.stop().await;

    let raw = RawConfig::from_toml(&toml, &BTreeMap::new(), &Overrides::default()).unwrap();
    let config = Config::from_raw(raw).unwrap();
    let startup = config.prepare().unwrap();
    let inner = davpush_store::open(&config.store_url).await.unwrap();
    let store = Arc::new(Gated { inner, gate: Semaphore::new(gate), targets: Semaphore::new(targets) });
    let state = build_with_store(config, startup, store.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Restarted { push, addr, store, stop, server, _dir: dir }
}

impl Restarted {
    /// The `N` paths the push service was sent to next, each once.
    async fn pushed(&mut self) -> BTreeSet<String> {
        let mut reached = BTreeSet::new();
        for _ in 0..N {
            reached.insert(self.push.next().await.path);
        }
        reached
    }

    async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn issue_11_a_notify_during_loading_reaches_every_durable_subscriber() {
    // The store's start-up reads wait for the gate.
    let mut d = restarted("cal-load", 0, Semaphore::MAX_PERMITS).await;
    let base = format!("http://{}", d.addr);
    let http = reqwest::Client::new();

    let (status, health) = get(&http, format!("{base}/healthz")).await;
    assert_eq!((status, &health), (200, &json!({"status": "ok", "ready": false})), "alive, not ready");
    let (status, ready) = get(&http, format!("{base}/readyz")).await;
    assert_eq!((status, ready["status"].as_str(), ready["waiting"].as_u64()), (503, Some("loading"), Some(0)));

    let notify = {
        let (http, url) = (http.clone(), format!("{base}/notify"));
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(NOTIFY_TOKEN).json(&json!({"topic": "cal-load"})).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    // The notify is in, waiting for the load (not answered with 0 recipients).
    davpush_testkit::eventually("the notify waits for readiness", || async {
        get(&http, format!("{base}/readyz")).await.1["waiting"] == 1
    })
    .await;
    assert!(!notify.is_finished());

    d.store.gate.add_permits(1_000);
    let (status, body) = notify.await.unwrap();
    assert_eq!((status, &body["services"]), (202, &json!({"web_push": N})), "{body}");
    let reached = d.pushed().await;
    assert_eq!(reached.len(), N, "every durable subscriber got the push: {reached:?}");
    let (status, ready) = get(&http, format!("{base}/readyz")).await;
    assert_eq!((status, &ready), (200, &json!({"status": "ready", "subscriptions": N})));
    let (_, health) = get(&http, format!("{base}/healthz")).await;
    assert_eq!(health, json!({"status": "ok", "ready": true}));
    d.shutdown().await;
}

/// Issue 11, only the routing in memory: while a durable topic's targets are being read from
/// the store (held here until the test lets the read go), the same notify's WebSocket
/// subscriber of another topic has its frame already, and the notify is answered.
#[tokio::test]
async fn issue_11_websocket_fan_out_does_not_wait_for_the_read_of_durable_targets() {
    // The reads of targets wait for the test.
    let mut d = restarted("big", Semaphore::MAX_PERMITS, 0).await;
    let addr = d.addr;
    let http = reqwest::Client::new();
    davpush_testkit::eventually("loaded", || async { get(&http, format!("http://{addr}/readyz")).await.0 == 200 })
        .await;

    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {SUB_TOKEN}").parse().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", davpush_proto::SUBPROTOCOL.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let conn = next_json(&mut ws).await["connection_id"].as_str().unwrap().to_owned();
    let body = json!({"client_id": "live", "topic": "other", "push_services": {"websocket": {"connection_id": conn}}});
    let r = http.post(format!("http://{addr}/subscribe")).bearer_auth(SUB_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);

    let r = http
        .post(format!("http://{addr}/notify"))
        .bearer_auth(NOTIFY_TOKEN)
        .json(&json!({"topics": ["big", "other"], "sync_token": "s1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["services"], json!({"web_push": N, "websocket": 1}), "{body}");
    let frame = next_json(&mut ws).await;
    assert_eq!((frame["topic"].as_str(), frame["sync_token"].as_str()), (Some("other"), Some("s1")));
    // The durable read has not been let go: the frame did not wait for it.
    assert_eq!(d.store.targets.available_permits(), 0);

    d.store.targets.add_permits(Semaphore::MAX_PERMITS / 2);
    let reached = d.pushed().await;
    assert_eq!(reached.len(), N, "every durable subscriber got the push once its target was read: {reached:?}");
    d.shutdown().await;
}
