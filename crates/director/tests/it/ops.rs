//! Operations endpoints.

use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn healthz_answers_ok() {
    let d = start("").await;
    let r = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"status": "ok", "ready": true}));
}

#[tokio::test]
async fn metrics_count_connections_subscriptions_notifications_and_deliveries() {
    let d = start("").await;
    let (mut ws, conn) = d.ws().await;
    d.subscribe_ws("c", "t", &conn).await;
    d.notify(json!({"topics": ["t", "u"]})).await;
    next_json(&mut ws).await;
    eventually("sent counted", || async {
        metric(&d.metrics().await, "davpush_deliveries_total{service=\"websocket\",outcome=\"sent\"}") == 1.0
    })
    .await;
    let m = d.metrics().await;
    assert_eq!(metric(&m, "davpush_websocket_connections"), 1.0, "{m}");
    assert_eq!(metric(&m, "davpush_subscriptions{service=\"websocket\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "davpush_notifications_total"), 2.0, "{m}");
    assert_eq!(metric(&m, "davpush_deliveries_total{service=\"websocket\",outcome=\"queued\"}"), 1.0, "{m}");
    assert!(metric(&m, "davpush_process_resident_memory_bytes") > 1e6, "{m}");
    assert!(!m.contains(NOTIFY_TOKEN) && !m.contains(SUB_TOKEN));
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let d = start("[server]\nmetrics = false\n").await;
    let r = d.http.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
