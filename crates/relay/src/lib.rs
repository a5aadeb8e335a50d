//! The davpush FCM relay (`davpush relay`): the draft's "FCM redirector" that a client vendor
//! hosts. It holds the vendor's FCM credentials and forwards push requests from Push Directors
//! it has never met, so that a self-hosted Director can wake the vendor's app without the
//! vendor's FCM key. Threat model and API: `docs/relay.md`.
//!
//! # Layout
//! - [`config`]: the TOML file, validated with errors naming the key.
//! - [`keys`]: installation keys (issued, revocable, stored hashed) and pseudo-public app keys.
//! - [`limit`]: bounded keyed token buckets (per address, per key, per push token).
//! - [`metrics`]: forwarded and refused requests (the abuse signals).
//! - [`http`]: `POST /v1/push`, `POST /v1/membership`, `/healthz`, `/metrics`.
//!
//! The choice a reader may question: the relay accepts **only a topic** (and a token) and
//! builds the FCM message itself. A relay that forwarded arbitrary payloads would let anyone
//! with the app key send any notification to the vendor's users; this one can at most wake an
//! app to sync a collection, at a limited rate per token.

pub mod config;
pub mod http;
pub mod keys;
pub mod limit;
pub mod metrics;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use davpush_delivery::fcm::FcmClient;
use tokio::net::TcpListener;

pub use config::{RawRelayConfig, RelayConfig};
pub use keys::Keys;
pub use metrics::RelayMetrics;

use crate::limit::KeyedLimiter;

/// Starting the relay failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The keys file is unusable.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] davpush_delivery::fcm::client::HttpError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct RelayState {
    /// FCM.
    pub client: FcmClient,
    /// Accepted keys.
    pub keys: Keys,
    /// Metrics.
    pub metrics: RelayMetrics,
    pub(crate) limit_ip: KeyedLimiter<IpAddr>,
    pub(crate) limit_key: KeyedLimiter<String>,
    pub(crate) limit_app: KeyedLimiter<IpAddr>,
    pub(crate) limit_token: KeyedLimiter<String>,
    pub(crate) topic_prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) trust_forwarded_for: bool,
    pub(crate) serve_metrics: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_membership_tokens: usize,
    pub(crate) reload: Duration,
    pub(crate) connections: davpush_serve::Limits,
}

/// Builds the state from a validated configuration.
pub fn build(config: RelayConfig) -> Result<Arc<RelayState>, StartError> {
    let keys = Keys::load(Some(config.keys_file.clone()), config.app_keys.iter().map(|k| k.0.clone()).collect())?;
    let l = &config.limits;
    let prefix = config.fcm.topic_prefix.clone();
    let client = FcmClient::new(config.account, &config.fcm)?;
    Ok(Arc::new(RelayState {
        client,
        keys,
        metrics: RelayMetrics::default(),
        limit_ip: KeyedLimiter::new(l.ip, l.max_tracked),
        limit_key: KeyedLimiter::new(l.key, l.max_tracked),
        limit_app: KeyedLimiter::new(l.app_key, l.max_tracked),
        limit_token: KeyedLimiter::new(l.token, l.max_tracked),
        topic_prefix: prefix,
        ttl: config.ttl,
        trust_forwarded_for: config.trust_forwarded_for,
        serve_metrics: config.metrics,
        max_body_bytes: config.max_body_bytes,
        max_membership_tokens: l.max_membership_tokens,
        reload: config.reload,
        connections: config.connections,
    }))
}

/// The routes.
pub fn router(state: Arc<RelayState>) -> Router {
    let max = state.max_body_bytes;
    Router::new()
        .route("/v1/push", post(http::push))
        .route("/v1/membership", post(http::membership))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .fallback(http::not_found)
        .layer(DefaultBodyLimit::max(max))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(davpush_serve::trace::request_span::<axum::body::Body>),
        )
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves; re-reads the keys file when it changes.
/// Connections are limited by `server.header_read_timeout_secs`, `server.idle_timeout_secs` and
/// `server.max_pending_connections` (see `davpush_serve`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<RelayState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reload = tokio::spawn({
        let st = Arc::downgrade(&state);
        let every = state.reload;
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(st) = st.upgrade() else { return };
                match st.keys.reload() {
                    Ok(true) => tracing::info!("relay keys file reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "relay keys file could not be reloaded; keeping the last good one")
                    }
                }
            }
        }
    });
    // Handlers get `ConnectInfo<SocketAddr>` from davpush-serve. Connections closed by its limits
    // (issue 9) are counted in `davpush_relay_refused_total{reason}`.
    let st = state.clone();
    let server = davpush_serve::Server::new(state.connections).on_refusal(move |why| {
        st.metrics.refused.get_or_create(&metrics::Reason { reason: why.as_str() }).inc();
    });
    let r = server.serve(listener, router(state), shutdown).await;
    reload.abort();
    r
}

/// A relay running in this process.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<RelayState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops and waits.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Builds and serves `config` on `config.listen` (port 0: a free one) in a task.
pub async fn spawn(config: RelayConfig) -> Result<Running, StartError> {
    let addr = config.listen;
    let state = build(config)?;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Ok(Running { addr, state, stop: Some(tx), task })
}
