//! Serving an axum [`Router`] on a bound listener the way a public endpoint must: a client that
//! connects and sends nothing (or half a request head), or a keep-alive connection left idle,
//! does not hold a file descriptor for ever, and reaching the file-descriptor limit does not
//! stop the server from accepting. Used by the Director, the gateway and the relay.
//!
//! # Layout
//! - [`Limits`]: the header-read timeout, the idle timeout, the cap on pending connections.
//! - [`Server`]: the accept loop (this file).
//! - `registry`: which connections are pending, busy or idle, and which to close first.
//! - `conn`: one connection's task and the service that reports requests to the registry.
//! - [`trace`]: request spans that never log a credential of the URI.
//!
//! # Rules
//! - A connection is *pending* from `accept` until its first request head is complete. It is
//!   closed if that takes longer than `header_read_timeout`. When more than
//!   `max_pending_connections` are pending, the **oldest** is closed, so that a flood of idle
//!   connections cannot lock out new clients (who send their request right away).
//! - A keep-alive connection with no request in progress is closed `idle_timeout` after its last
//!   response was sent. An upgraded connection (a WebSocket) is no longer HTTP: neither timeout
//!   applies to it; it has its own keep-alive.
//! - When `accept` fails with `EMFILE`/`ENFILE`, the oldest pending (then longest-idle)
//!   connections are closed to free descriptors; if there are none, a reserved descriptor is
//!   released to accept and close one connection, so the backlog keeps moving. The loop then
//!   waits a little (1 ms, doubling to 100 ms) instead of spinning.
//!
//! The choice a reader may question: this is not `axum::serve`, which has neither timeout nor a
//! cap and sleeps a whole second after `EMFILE`; and hyper's own `header_read_timeout` is not
//! used because it also runs while a keep-alive connection is idle, so the idle timeout could
//! never be longer than it.

mod conn;
mod registry;
pub mod trace;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::Shared;
use crate::registry::Registry;

/// The connection limits (each server's config has them as `header_read_timeout_secs`,
/// `idle_timeout_secs` and `max_pending_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From `accept` until the first request head is complete.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Connections without a complete request yet; beyond it the oldest is closed.
    pub max_pending_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_pending_connections: 1024,
        }
    }
}

/// Why the server closed a connection before it had sent a (first) request, or an idle one to
/// free a file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No complete request head within `header_read_timeout`.
    HeaderTimeout,
    /// Closed as the oldest of more than `max_pending_connections` pending connections.
    PendingLimit,
    /// Closed (or accepted and closed at once) because the process ran out of descriptors.
    FdLimit,
}

impl Refusal {
    /// `header_timeout`, `pending_limit` or `fd_limit` (metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::PendingLimit => "pending_limit",
            Refusal::FdLimit => "fd_limit",
        }
    }
}

/// Called once per [`Refusal`] (for metrics).
pub type Observer = Arc<dyn Fn(Refusal) + Send + Sync>;

/// How many connections one `EMFILE` closes at most.
const SHED_BATCH: usize = 16;
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// An HTTP/1.1 server with [`Limits`]; see the crate documentation.
#[derive(Clone)]
pub struct Server {
    limits: Limits,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Server {
    /// A server with these limits.
    pub fn new(limits: Limits) -> Self {
        Server { limits, observer: None }
    }

    /// Calls `f` for every connection closed for one of the [`Refusal`] reasons.
    pub fn on_refusal(mut self, f: impl Fn(Refusal) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    /// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets the
    /// requests in progress finish (at most `idle_timeout` after they were asked to), closes the
    /// rest, and returns. Handlers can extract `ConnectInfo<SocketAddr>`. Accepted sockets get
    /// `TCP_NODELAY`.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = Arc::new(Shared {
            router,
            registry: Arc::new(Registry::new(self.limits.max_pending_connections)),
            limits: self.limits,
            observer: self.observer,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(());
        let mut reserve = reserve_fd();
        let mut backoff = Duration::ZERO;
        let mut at_fd_limit = false;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = listener.accept() => r,
            };
            let error = match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    if at_fd_limit {
                        at_fd_limit = false;
                        tracing::info!("accepting connections again");
                    }
                    let _ = stream.set_nodelay(true);
                    let (id, wake) = shared.registry.admit(Instant::now());
                    tokio::spawn(conn::run(stream, peer, id, wake, shared.clone(), stop_rx.clone(), done_rx.clone()));
                    if reserve.is_none() {
                        reserve = reserve_fd();
                    }
                    continue;
                }
                Err(e) => e,
            };
            if is_connection_error(&error) {
                continue;
            }
            if is_fd_limit(&error) {
                if !at_fd_limit {
                    at_fd_limit = true;
                    tracing::warn!(
                        error = %error,
                        "out of file descriptors: closing connections that sent no request yet or are idle; \
                         consider raising the limit (ulimit -n) or lowering max_pending_connections"
                    );
                }
                if shared.registry.shed_oldest(SHED_BATCH, Refusal::FdLimit) == 0
                    && let Some(fd) = reserve.take()
                {
                    drop(fd);
                    let refused = tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        r = listener.accept() => r,
                    };
                    if let Ok((stream, _)) = refused {
                        drop(stream);
                        shared.refused(Refusal::FdLimit);
                    }
                    reserve = reserve_fd();
                }
            } else {
                tracing::error!(error = %error, "accepting a connection failed");
            }
            backoff = (backoff * 2).clamp(Duration::from_millis(1), MAX_BACKOFF);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        drop(done_rx);
        done_tx.closed().await;
        Ok(())
    }
}

/// Errors about one connection, not the listener: accept the next one at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// `EMFILE` (the process's limit) or `ENFILE` (the system's); 24 and 23 on Linux, the BSDs and
/// macOS.
fn is_fd_limit(e: &std::io::Error) -> bool {
    cfg!(unix) && matches!(e.raw_os_error(), Some(23 | 24))
}

/// A descriptor held in reserve, released to accept-and-close when none is left.
fn reserve_fd() -> Option<std::fs::File> {
    if cfg!(unix) { std::fs::File::open("/dev/null").ok() } else { None }
}

/// The address a `listen` setting names: `127.0.0.1:8080`, `[::1]:8080`, or a host name with a
/// port (`localhost:8080`), resolved now; of several addresses the first IPv4 one is taken
/// (`localhost` means 127.0.0.1 to most people, and IPv6 may be off). The error says what was
/// wrong, for a message that names the key.
pub fn resolve_listen(value: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let addrs: Vec<std::net::SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| format!("`{value}` is not an address like 127.0.0.1:8080 or localhost:8080: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{value}` resolves to no address"))
}
