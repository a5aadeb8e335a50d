//! Connection limits of the gateway (issue 9, item 2): a half-sent request head is closed after
//! the header-read timeout, and idle connections beyond the pending cap do not lock out new
//! clients. The upstream here is a Director (it answers `GET /healthz`), so no Radicale is needed.

use std::collections::BTreeMap;
use std::time::Duration;

use davpush_director::config::{Overrides, RawConfig};
use davpush_gateway::{GatewayConfig, RawGatewayConfig};
use davpush_testkit::sockets::{half_sent_request, idle_connections, keep_alive_get, wait_closed_by_server};

const BOUND: Duration = Duration::from_secs(30);

async fn gateway(limits: &str) -> (davpush_director::Running, davpush_gateway::RunningGateway, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n", data.path().display().to_string());
    let raw = RawConfig::from_toml(&toml, &BTreeMap::new(), &Overrides::default()).unwrap();
    let director = davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut raw: RawGatewayConfig = toml::from_str(limits).unwrap();
    raw.listen = listener.local_addr().unwrap().to_string();
    raw.upstream = director.url();
    raw.director_url = director.url();
    raw.data_dir = data.path().to_owned();
    let gw = davpush_gateway::spawn(GatewayConfig::from_raw(raw).unwrap(), listener).await.unwrap();
    (director, gw, data)
}

fn fresh() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test]
async fn issue_9_gateway_closes_half_sent_heads_and_idle_keep_alive_connections() {
    let (_d, gw, _data) = gateway("header_read_timeout_secs = 1\nidle_timeout_secs = 1\n").await;
    let mut half = half_sent_request(gw.addr).await;
    wait_closed_by_server(&mut half, BOUND).await;
    let mut keep_alive = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = keep_alive_get(&mut keep_alive, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_closed_by_server(&mut keep_alive, BOUND).await;
}

#[tokio::test]
async fn issue_9_gateway_serves_new_clients_past_the_pending_cap() {
    let (_d, gw, _data) = gateway("max_pending_connections = 10\nheader_read_timeout_secs = 300\n").await;
    let mut idle = idle_connections(gw.addr, 60).await;
    let r = fresh().get(format!("{}/healthz", gw.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_closed_by_server(&mut idle[0], BOUND).await;
    wait_closed_by_server(&mut idle[49], BOUND).await;
}

#[test]
fn issue_9_gateway_connection_limits_must_be_positive() {
    for key in ["header_read_timeout_secs", "idle_timeout_secs", "max_pending_connections"] {
        let dir = tempfile::tempdir().unwrap();
        let raw: RawGatewayConfig = toml::from_str(&format!(
            "upstream = \"http://127.0.0.1:1/\"\ndata_dir = {:?}\n{key} = 0\n",
            dir.path().display().to_string()
        ))
        .unwrap();
        let e = GatewayConfig::from_raw(raw).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
}
