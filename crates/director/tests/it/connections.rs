//! Connection limits (issue 9, item 2: unauthenticated DoS by idle or half-sent connections):
//! the header-read timeout, the cap on connections without a request, the idle timeout of
//! keep-alive connections, and WebSockets outliving it.

use std::time::Duration;

use davpush_testkit::sockets::{half_sent_request, idle_connections, keep_alive_get, wait_closed_by_server};
use serde_json::json;

use crate::util::*;

const BOUND: Duration = Duration::from_secs(30);

/// A client on a connection of its own (no pooled connection that might be one of the
/// server's idle closes).
fn fresh() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn metrics(d: &TestDirector) -> String {
    fresh().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn issue_9_half_sent_request_head_is_closed_after_the_header_read_timeout() {
    let d = start("[server]\nheader_read_timeout_secs = 1\n").await;
    let mut half = half_sent_request(d.running.addr).await;
    let mut silent = idle_connections(d.running.addr, 1).await.remove(0);
    wait_closed_by_server(&mut half, BOUND).await;
    wait_closed_by_server(&mut silent, BOUND).await;
    let m = metrics(&d).await;
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"header_timeout\"}"), 2.0, "{m}");
    // A complete request on a new connection is still served.
    assert_eq!(fresh().get(d.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn issue_9_idle_connections_beyond_the_pending_cap_do_not_lock_out_healthz_or_notify() {
    let d = start("[server]\nmax_pending_connections = 50\nheader_read_timeout_secs = 300\n").await;
    let mut idle = idle_connections(d.running.addr, 200).await;
    let r = fresh().get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = fresh().post(d.url("/notify")).bearer_auth(NOTIFY_TOKEN).json(&json!({"topic": "t"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // The oldest idle connections made room: they were closed by the server, and counted.
    wait_closed_by_server(&mut idle[0], BOUND).await;
    wait_closed_by_server(&mut idle[149], BOUND).await;
    let m = metrics(&d).await;
    assert!(metric(&m, "davpush_requests_rejected_total{reason=\"pending_limit\"}") >= 150.0, "{m}");
    assert_eq!(metric(&m, "davpush_requests_rejected_total{reason=\"header_timeout\"}"), 0.0, "{m}");
}

#[tokio::test]
async fn issue_9_websocket_outlives_the_idle_timeout_that_closes_keep_alive_connections() {
    let d = start("[server]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 1\n").await;
    let (mut ws, conn) = d.ws().await;
    let r = fresh()
        .post(d.url("/subscribe"))
        .bearer_auth(SUB_TOKEN)
        .json(&json!({"client_id": "c", "topic": "t", "push_services": {"websocket": {"connection_id": conn}}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // A keep-alive connection that made one request, opened after the WebSocket: once the
    // server has closed it for idleness, the WebSocket has been idle (as HTTP) longer still.
    let mut keep_alive = tokio::net::TcpStream::connect(d.running.addr).await.unwrap();
    let head = keep_alive_get(&mut keep_alive, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_closed_by_server(&mut keep_alive, BOUND).await;
    let r = fresh().post(d.url("/notify")).bearer_auth(NOTIFY_TOKEN).json(&json!({"topic": "t"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["topic"], "t", "{frame}");
}

#[tokio::test]
async fn issue_9_a_keep_alive_connection_serves_several_requests_within_the_idle_timeout() {
    let d = start("[server]\nidle_timeout_secs = 300\nheader_read_timeout_secs = 300\n").await;
    let mut s = tokio::net::TcpStream::connect(d.running.addr).await.unwrap();
    for _ in 0..3 {
        let head = keep_alive_get(&mut s, "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
}

#[tokio::test]
async fn issue_9_connection_limits_must_be_positive() {
    for key in ["header_read_timeout_secs", "idle_timeout_secs", "max_pending_connections"] {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!("[server]\ndata_dir = {:?}\n{key} = 0\n", dir.path().display().to_string());
        let raw = davpush_director::config::RawConfig::from_toml(
            &toml,
            &Default::default(),
            &davpush_director::config::Overrides::default(),
        )
        .unwrap();
        let e = davpush_director::Config::from_raw(raw).unwrap_err().to_string();
        assert!(e.contains(&format!("server.{key}")), "{e}");
    }
}
