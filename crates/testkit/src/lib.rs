//! Test helpers shared by the workspace's integration tests.
//!
//! # Layout
//! - [`apache`]: Apache httpd with mod_dav and the litmus WebDAV compliance suite.
//! - [`browser`]: headless Chromium driven by ChromeDriver (WebDriver over HTTP).
//! - [`config`]: the example configurations document every key of the configuration structs.
//! - [`dav_servers`]: the real WebDAV servers of the gateway's server matrix (Radicale, Xandikos,
//!   Apache mod_dav), each described by a [`dav_servers::DavServer`].
//! - [`davical`]: a real DAViCal (Apache + mod_php) with a PostgreSQL database of its own.
//! - [`fake_push`]: a local RFC 8030 push service that records requests and answers as scripted.
//! - [`fakes`]: local FCM (with Google OAuth and Instance ID), APNs (HTTP/2 over TLS) and HMS
//!   (with Huawei OAuth) that check requests as the real services do and answer with their errors.
//! - [`python`]: the Python interpreter with the independent tools (`http_ece`, `py_vapid`,
//!   `radicale`), and the Web Push oracle script.
//! - [`nginx_dav`]: nginx's WebDAV (with dav-ext) serving plain files.
//! - [`radicale`]: a real Radicale CalDAV/CardDAV server on loopback, per test.
//! - [`sabredav`]: a real SabreDAV (PHP's built-in server) mounted at `/dav.php/` like Baïkal.
//! - [`redis_server`]: a `redis-server` of the test's own, for tests that kill and restart Redis.
//! - [`services`]: the real PostgreSQL (a scratch schema per test) and Redis of the scale-out tests.
//! - [`sockets`]: raw TCP clients that connect and idle or send half a request (issue 9).
//! - [`tls_proxy`]: a test CA, and real nginx and Caddy terminating TLS with the shipped
//!   reverse-proxy configurations (issue 13).
//!
//! - [`require`]: what a test does when a tool it needs is missing (fails; skips only when chosen).
//!
//! Everything binds to 127.0.0.1 on free ports. A missing tool fails the test unless skipping was
//! chosen explicitly (`cargo xtask test --allow-skip`), never in CI.
// Test support: a failed set-up should stop the test at once, so `unwrap` is the right call.
#![allow(clippy::unwrap_used)]

pub mod apache;
pub mod browser;
pub mod config;
pub mod dav_servers;
pub mod davical;
pub mod fake_push;
pub mod fakes;
mod launch;
pub use launch::asset;
pub mod nginx_dav;
pub mod python;
pub mod radicale;
pub mod redis_server;
pub mod require;
pub mod sabredav;
pub mod services;
pub mod sockets;
pub mod tls_proxy;

/// A port free now for a process this test starts, which binds it a moment later. Taken below
/// the kernel's ephemeral range (32768–60999 here), so that the source ports of the many
/// connections other tests open meanwhile (the load tool's 10,000) cannot take it first.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
            ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Waits until `cond` holds, polling every 20 ms for at most 10 s; panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        if cond().await {
            return;
        }
    }
    panic!("condition not met within 10 s: {what}");
}
