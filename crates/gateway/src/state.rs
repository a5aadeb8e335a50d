//! The gateway's shared state and its start-up: the configuration, the HTTP clients of the
//! upstream and the Director, the notifier, and what the Director's `/info` said.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use davpush_proto::DirectorInfo;

use crate::config::GatewayConfig;
use crate::dav::PushValues;
use crate::metrics::GatewayMetrics;
use crate::notifier::{Notifier, NotifierParts};
use crate::ops::ReadyCache;
use davpush_client::DirectorClient;

/// Shared state of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayState {
    pub(crate) cfg: Arc<GatewayConfig>,
    pub(crate) upstream: reqwest::Client,
    pub(crate) director: DirectorClient,
    pub(crate) notifier: Notifier,
    info: Arc<RwLock<Option<DirectorInfo>>>,
    /// Proxied browser WebSockets per user (owner hash), bounded by `max_sockets_per_user`.
    pub(crate) sockets: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// The gateway's metrics.
    pub(crate) metrics: Arc<GatewayMetrics>,
    /// The client of the readiness checks of the Director.
    pub(crate) probe: reqwest::Client,
    /// The last readiness check.
    pub(crate) ready: Arc<ReadyCache>,
}

/// Starting failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The Director's client could not be set up.
    #[error(transparent)]
    Director(davpush_client::DirectorError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// How long a grant the gateway signs may be used to subscribe, seconds. Only subscribing
/// needs it: a client asks again (and its access is checked again) when it subscribes anew.
pub(crate) const GRANT_SECS: i64 = 300;

pub(crate) use davpush_proto::unix_now;

impl GatewayState {
    /// Builds the clients, starts the notifier and the refresh of the Director's info.
    pub async fn build(cfg: GatewayConfig) -> Result<GatewayState, StartError> {
        let upstream = reqwest::Client::builder()
            // The gateway's own requests (permission checks, sync-token look-ups) carry the
            // configured identity headers too; forwarded requests set them explicitly.
            .default_headers(cfg.upstream_headers.iter().cloned().collect())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        let director = DirectorClient::new(cfg.director_url.clone(), cfg.timeout)
            .map_err(|e| match e {
                davpush_client::DirectorError::Unreachable(e) => StartError::Http(e),
                other => StartError::Director(other),
            })?
            .notify_token(cfg.notify_token.expose())
            .subscription_token(cfg.subscription_token.expose());
        let metrics = Arc::new(GatewayMetrics::default());
        let notifier = Notifier::start(
            NotifierParts {
                metrics: metrics.clone(),
                upstream_http: upstream.clone(),
                upstream: cfg.upstream.clone(),
                director: director.clone(),
                topics: cfg.topic_key.clone(),
                attempts: cfg.notify_attempts,
                sync_token_lookup: cfg.sync_token_lookup,
            },
            cfg.notify_queue,
        );
        let state = GatewayState {
            cfg: Arc::new(cfg),
            upstream,
            director,
            notifier,
            info: Arc::default(),
            sockets: Arc::default(),
            metrics,
            probe: crate::ops::probe_client()?,
            ready: Arc::default(),
        };
        state.refresh_info(true).await;
        let s = state.clone();
        tokio::spawn(async move {
            // Until the Director answers (it may be starting with the gateway), ask again soon:
            // 0.25 s, doubling to 10 s; then every 30 s, so that a rotated VAPID key is advertised
            // within about 40 s of the rotation (the Directors re-read their keys every 10 s).
            let mut retry = Duration::from_millis(250);
            loop {
                let known = s.info.read().unwrap_or_else(|e| e.into_inner()).is_some();
                let wait = if known { Duration::from_secs(30) } else { retry };
                tokio::time::sleep(wait).await;
                retry = (retry * 2).min(Duration::from_secs(10));
                s.refresh_info(retry == Duration::from_secs(10)).await;
            }
        });
        Ok(state)
    }

    /// Asks the Director's `/info`; a failure is a warning when `loud`, else a debug line.
    async fn refresh_info(&self, loud: bool) {
        match self.director.info().await {
            Ok(i) => {
                let services = i.services.join(",");
                let before = self.info.write().unwrap_or_else(|e| e.into_inner()).replace(i);
                if before.is_none() {
                    tracing::info!(%services, "the Director's /info answered; push properties are complete");
                }
            }
            Err(e) if loud => {
                tracing::warn!(error = %e, "cannot read the Director's /info; push properties are incomplete until it answers")
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the Director's /info yet"),
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    pub(crate) fn push_values(&self, topic: String) -> PushValues {
        let info = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
        let director = self.cfg.director_public_url.to_string();
        let (services, auth, vapid, ws) = match info {
            Some(i) => {
                let ws = i.websocket_path.as_ref().map(|p| {
                    let mut u = self.cfg.director_public_url.clone();
                    let _ = u.set_scheme(if u.scheme() == "https" { "wss" } else { "ws" });
                    // Under the public URL's path: a reverse proxy may publish the Director
                    // under a prefix (`https://dav.example.org/.davpush/director/` → `…/ws`).
                    let prefix = u.path().trim_end_matches('/').to_owned();
                    u.set_path(&format!("{prefix}{p}"));
                    u.to_string()
                });
                let vapid = if i.services.iter().any(|s| s == "web_push") { i.vapid_public_key } else { None };
                (i.services, i.subscription_auth, vapid, ws)
            }
            None => (Vec::new(), "token".into(), None, None),
        };
        let gateway_websocket_url = (self.cfg.web_clients && ws.is_some()).then(|| {
            let mut u = self.cfg.public_url.clone();
            let _ = u.set_scheme(if u.scheme() == "https" { "wss" } else { "ws" });
            u.set_path(&format!("{}ws", self.web_prefix()));
            u.to_string()
        });
        PushValues {
            topic,
            vapid_public_key: vapid,
            director,
            services,
            subscription_auth: auth,
            websocket_url: ws,
            gateway_websocket_url,
            grant: None,
        }
    }

    /// A grant for `topics`, whose collections the requester was just found to be allowed to
    /// read (docs/protocol.md §3.3).
    /// The grant names the user (`owner`, a hash), under whom the Director counts subscriptions.
    pub(crate) fn grant(&self, owner: &str, topics: &[&str]) -> String {
        self.cfg.grant_keys.sign_for(Some(owner), topics.iter().copied(), unix_now() + GRANT_SECS)
    }

    /// The Director's WebSocket path (from its `/info`; `/ws` until it answered).
    pub(crate) fn websocket_path(&self) -> String {
        let info = self.info.read().unwrap_or_else(|e| e.into_inner());
        info.as_ref().and_then(|i| i.websocket_path.clone()).unwrap_or_else(|| "/ws".to_owned())
    }

    pub(crate) fn web_prefix(&self) -> String {
        format!("{}/.davpush/", self.cfg.public_prefix().trim_end_matches('/'))
    }

    pub(crate) fn registration_prefix(&self) -> String {
        let p = self.cfg.public_prefix().trim_end_matches('/');
        format!("{p}{}", self.cfg.registration_path)
    }

    pub(crate) fn upstream_url(&self, path: &str, query: Option<&str>) -> url::Url {
        let mut u = self.cfg.upstream.clone();
        u.set_path(path);
        u.set_query(query);
        u
    }
}
