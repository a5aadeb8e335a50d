//! Wiring: [`build`] prepares a [`Config`] (secrets, keys: [`Config::prepare`]) and turns it into
//! an [`AppState`], [`router`] makes the routes, and
//! [`serve`] runs them on a bound listener until a shutdown future resolves. [`spawn`] does all
//! three on `127.0.0.1:0` for tests and embedding.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use davpush_cluster::{ClusterSettings, PresenceSettings, Received, RedisFanout, RedisPresence};
use davpush_core::feedback::{Feedback, FeedbackReceiver};
use davpush_core::live::{CloseReason, Hub, WebSocketTransport};
use davpush_core::{Metrics, PushService, SubscriptionStore, Transports};
use davpush_delivery::apns::{ApnsSender, ApnsTransport};
use davpush_delivery::fcm::{FcmClient, FcmSender, FcmTransport, RelayClient, Upstream};
use davpush_delivery::hms::{HmsSender, HmsTransport};
use davpush_delivery::webpush::keyring::{LiveRing, VapidRing};
use davpush_delivery::webpush::{WebPushSender, WebPushTransport};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{Config, ConfigError, FcmUpstream, SubscriptionAuth};
use crate::http;
use crate::startup::Startup;
use crate::state::AppState;

/// Starting failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Start-up could not create the data directory or a secret.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] davpush_core::StoreError),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] davpush_cluster::ClusterError),
    /// The HTTP client for push services could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(reqwest::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Prepares `config` ([`Config::prepare`]), then [`build_prepared`].
pub async fn build(config: Config) -> Result<AppState, StartError> {
    let startup = config.prepare()?;
    build_prepared(config, startup).await
}

/// Opens the store `store.url` names (SQLite or PostgreSQL), joins the cluster if
/// `cluster.redis_url` is set, enables the transports and rebuilds the index.
pub async fn build_prepared(config: Config, startup: Startup) -> Result<AppState, StartError> {
    let store = davpush_store::open(&config.store_url).await?;
    build_with_store(config, startup, store).await
}

/// Like [`build_prepared`] with a given store.
pub async fn build_with_store(
    config: Config,
    startup: Startup,
    store: Arc<dyn SubscriptionStore>,
) -> Result<AppState, StartError> {
    let ws = &config.websocket;
    let hub = Arc::new(Hub::new(ws.queue_frames, ws.max_connections));
    let metrics = Arc::new(Metrics::default());
    let (feedback, gone) = Feedback::channel();
    let mut transports = Transports::default();
    if ws.enabled {
        transports = transports.with(Arc::new(WebSocketTransport::new(hub.clone())));
    }
    store.set_outbox_lease(config.outbox_lease_secs);
    let mut vapid = None;
    if let Some(wp) = config.web_push.as_ref().filter(|_| startup.vapid_key.is_some()) {
        // The store's keys (seeded from the files the first time), shared by every node.
        let keys = crate::vapid::sync_keys(store.as_ref(), &wp.vapid_key_file).await.map_err(key_error)?;
        let key = keys.current.clone();
        // Rows from before key rotation existed were made with the advertised key.
        let bound = store.assign_vapid_key(&key.id()).await?;
        if bound > 0 {
            tracing::info!(subscriptions = bound, vapid_key = %key.id(), "Web Push subscriptions bound to the VAPID key");
        }
        let keys = match crate::vapid::remove_unused(store.as_ref(), &wp.vapid_key_file).await {
            Ok(removed) => {
                for id in removed {
                    tracing::info!(vapid_key = %id, "retired VAPID key deleted: no subscription uses it any more");
                }
                crate::vapid::sync_keys(store.as_ref(), &wp.vapid_key_file).await.map_err(key_error)?
            }
            Err(e) => {
                tracing::error!(error = %e, "could not check the retired VAPID keys");
                keys
            }
        };
        let ring = Arc::new(LiveRing::new(VapidRing::new(keys.current, keys.retired, &wp.subject)));
        vapid = Some(ring.clone());
        let sender =
            Arc::new(WebPushSender::with_keys(ring, wp.policy.clone(), &wp.settings).map_err(StartError::Http)?);
        for kind in &wp.services {
            let t = WebPushTransport::start(
                *kind,
                sender.clone(),
                &wp.settings,
                feedback.clone(),
                metrics.clone(),
                store.clone(),
            );
            transports = transports.with(Arc::new(t));
        }
        tracing::info!(vapid_public_key = %key.public_key(), "Web Push enabled");
    }
    if let Some(f) = &config.fcm {
        let upstream = match &f.upstream {
            FcmUpstream::Direct(account) => {
                tracing::info!(project = %account.project_id, mode = ?f.settings.mode, "FCM enabled");
                Upstream::Direct(FcmClient::new(account.clone(), &f.settings).map_err(StartError::Http)?)
            }
            FcmUpstream::Relay { url, key } => {
                tracing::info!(relay = %url, mode = ?f.settings.mode, "FCM enabled through a relay");
                Upstream::Relay(RelayClient::new(url, key.clone(), f.settings.timeout).map_err(StartError::Http)?)
            }
        };
        let sender = Arc::new(FcmSender::new(upstream, f.settings.topic_prefix.clone()));
        let t = FcmTransport::start(sender, &f.settings, feedback.clone(), metrics.clone(), store.clone());
        transports = transports.with(Arc::new(t));
    }
    if let Some(a) = &config.apns {
        let sender = Arc::new(ApnsSender::new(a.key.clone(), &a.settings).map_err(StartError::Http)?);
        let t = ApnsTransport::start(sender, &a.settings, feedback.clone(), metrics.clone(), store.clone());
        transports = transports.with(Arc::new(t));
        tracing::info!(url = %a.settings.url(), bundle_id = %a.settings.bundle_id, "APNs enabled");
    }
    if let Some(h) = &config.hms {
        let sender = Arc::new(HmsSender::new(h.secret.clone(), &h.settings).map_err(StartError::Http)?);
        let t = HmsTransport::start(sender, &h.settings, feedback.clone(), metrics.clone(), store.clone());
        transports = transports.with(Arc::new(t));
        tracing::info!(app_id = %h.settings.app_id, topic_mode = h.settings.topic_mode, "HMS enabled");
    }
    if config.strict_privacy {
        tracing::info!("server.privacy = \"strict\": no public third-party push service is enabled");
    }
    if matches!(startup.subscription_auth, SubscriptionAuth::None) {
        tracing::warn!(
            "!!! subscription.auth = \"none\": ANYONE who can reach this Director may subscribe and open \
             WebSockets. Use this for development only. !!!"
        );
    }
    let mut service =
        PushService::new(store, transports, config.limits.clone(), metrics.clone()).with_history(config.history);
    if let Some(keys) = &startup.grant_keys {
        service = service.with_grants(keys.clone());
    }
    if let Some(p) = &config.push_service {
        let mut endpoints = davpush_core::pushsvc::PushEndpoints::new(&p.public_url, p.limits.clone());
        if let Some(c) = &config.cluster {
            // Any node accepts a push; the directory says which node holds the client.
            let directory = davpush_cluster::RedisPushDirectory::new(&c.redis_url, &c.channel_prefix, &c.node_id)?;
            endpoints = endpoints.with_directory(Arc::new(directory));
        }
        service = service.with_push_endpoints(Arc::new(endpoints));
        tracing::info!(public_url = %p.public_url, "push service enabled: endpoints are <public_url>/push/<id>");
    }
    // Join the cluster before reading the store, so that no change made meanwhile is missed.
    let mut inbound = None;
    if let Some(c) = &config.cluster {
        let settings = ClusterSettings {
            redis_url: c.redis_url.clone(),
            node_id: c.node_id.clone(),
            channel_prefix: c.channel_prefix.clone(),
            queue: c.queue,
            ready_timeout: Duration::from_secs(5),
            ping_interval: c.ping_interval,
            publish_retry: c.publish_retry,
            history: Some(config.history),
        };
        let (fanout, rx) = RedisFanout::start(settings, metrics).await?;
        let presence = RedisPresence::start(PresenceSettings {
            redis_url: c.redis_url.clone(),
            node_id: c.node_id.clone(),
            prefix: c.channel_prefix.clone(),
            ttl: c.presence_ttl,
        })?;
        let history = davpush_cluster::RedisHistory::new(&c.redis_url, &c.channel_prefix, config.history)?;
        service = service.with_fanout(fanout).with_presence(presence).with_shared_history(history);
        inbound = Some(rx);
    }
    let service = Arc::new(service);
    // The durable subscriptions are loaded while the server already answers: `/healthz` says
    // alive, `/readyz` says 503 until the load is done, and notify, subscribe and unsubscribe
    // wait for it (bounded), so that none of them misses a subscription still in the store.
    tokio::spawn(load(service.clone()));
    tokio::spawn(remove_gone(gone, Arc::downgrade(&service)));
    if let Some(rx) = inbound {
        tokio::spawn(apply_cluster(rx, Arc::downgrade(&service)));
    }
    let admin = startup.admin_tokens.clone().map(|t| Arc::new(http::admin::AdminView::new(t)));
    if admin.is_some() {
        service.metrics().recent.follow_topics();
        tracing::info!("admin view enabled at /admin/");
    }
    Ok(AppState {
        service,
        hub,
        config: Arc::new(config),
        startup: Arc::new(startup),
        admin,
        vapid,
        vapid_tokens: Arc::default(),
    })
}

fn key_error(e: crate::vapid::RotateError) -> StartError {
    match e {
        crate::vapid::RotateError::Store(e) => StartError::Store(e),
        e => StartError::Config(crate::config::ConfigError::Invalid {
            key: "web_push.vapid_key_file".into(),
            message: e.to_string(),
        }),
    }
}

/// Deletes the retired VAPID keys no subscription is bound to any more (after each purge).
async fn remove_unused_vapid_keys(st: &AppState) {
    let Some(wp) = &st.config.web_push else { return };
    match crate::vapid::remove_unused(st.service.store().as_ref(), &wp.vapid_key_file).await {
        Ok(ids) => {
            for id in ids {
                tracing::info!(vapid_key = %id, "retired VAPID key deleted: no subscription uses it any more");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not check the retired VAPID keys"),
    }
}

/// Reads the keys from the store and, when they changed (`davpush vapid rotate`, a key deleted
/// by any node), replaces the ring: new subscriptions are bound to the new advertised key,
/// `/info` advertises it, old subscriptions keep their key.
async fn refresh_vapid_keys(st: &AppState) {
    let (Some(wp), Some(live)) = (&st.config.web_push, &st.vapid) else { return };
    let keys = match crate::vapid::sync_keys(st.service.store().as_ref(), &wp.vapid_key_file).await {
        Ok(k) => k,
        Err(e) => return tracing::error!(error = %e, "could not read the VAPID keys"),
    };
    let ring = VapidRing::new(keys.current, keys.retired, &wp.subject);
    if ring.ids() != live.get().ids() {
        tracing::info!(vapid_key = %ring.current_id(), keys = ring.ids().len(), "VAPID keys changed: now advertising");
        live.set(ring);
    }
}

/// Renews this node's lease on its outbox rows and claims the free ones (queued by `davpush
/// vapid rotate`, or left by a node that died), once the subscriptions are loaded.
async fn tend_outbox(st: &AppState) {
    if !st.service.is_ready() {
        return;
    }
    let now = davpush_core::unix_now();
    if let Err(e) = st.service.renew_pending(now).await {
        tracing::error!(error = %e, "could not renew the outbox lease");
    }
    if let Err(e) = st.service.claim_pending(now).await {
        tracing::error!(error = %e, "could not claim outbox rows");
    }
}

/// Loads the durable subscriptions (see [`PushService::load`]).
async fn load(service: Arc<PushService>) {
    let started = tokio::time::Instant::now();
    // aws-lc seeds its random generator on first use, once per process, by sampling CPU
    // jitter: ~40 ms of CPU (`jent_*` in a profile) that the first APNs token, Web Push
    // encryption or TLS handshake would pay on a runtime worker, in the middle of the first
    // notification's deliveries (issue 11: a third of the first big topic's hand-over). Paid
    // here on a blocking thread, while the subscriptions load.
    let seeded = tokio::task::spawn_blocking(|| aws_lc_rs::rand::fill(&mut [0u8; 16]).is_ok());
    let loaded = service.load(davpush_core::unix_now()).await;
    if !seeded.await.unwrap_or(false) {
        tracing::warn!("the random generator could not be seeded at start");
    }
    match loaded {
        Ok(n) => tracing::info!(
            subscriptions = n,
            ms = started.elapsed().as_millis() as u64,
            "subscriptions loaded from the store: ready"
        ),
        // Not ready, ever: `/readyz` keeps answering 503 and the log says why.
        Err(e) => tracing::error!(error = %e, "cannot load the subscriptions from the store: not ready"),
    }
}

/// Applies what the other nodes of the cluster report.
async fn apply_cluster(mut inbound: davpush_cluster::Inbound, service: std::sync::Weak<PushService>) {
    while let Some(received) = inbound.recv().await {
        let Some(service) = service.upgrade() else { return };
        match received {
            Received::Message(m) => service.apply(m, davpush_core::unix_now()),
            Received::Unpublished(m) => service.apply_unpublished(m, davpush_core::unix_now()),
            Received::Push(f) => {
                if let Some(eps) = service.push_endpoints() {
                    eps.receive(f, davpush_core::unix_now()).await;
                }
            }
            Received::Resubscribed => match service.resync(davpush_core::unix_now()).await {
                Ok(n) => tracing::info!(changed = n, "subscriptions re-read from the store after a cluster outage"),
                Err(e) => tracing::error!(error = %e, "could not re-read subscriptions after a cluster outage"),
            },
        }
    }
}

/// Removes the subscriptions that push services report as gone.
async fn remove_gone(mut gone: FeedbackReceiver, service: std::sync::Weak<PushService>) {
    while let Some(id) = gone.recv().await {
        let Some(service) = service.upgrade() else { return };
        match service.remove_gone(&id).await {
            Ok(_) => tracing::info!(subscription = %id, "subscription removed: its push service no longer knows it"),
            Err(e) => tracing::error!(error = %e, subscription = %id, "could not remove a gone subscription"),
        }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let mut router = Router::new();
    if state.config.sse {
        router = router.route("/events", get(http::events::events));
    }
    router
        .route("/notify", post(http::notify::notify))
        .route("/topics/active", get(http::notify::active))
        .route("/subscribe", post(http::subscription::subscribe))
        .route("/unsubscribe", post(http::subscription::unsubscribe))
        .route("/ws", get(http::websocket::upgrade))
        .route("/push/{id}", post(http::push::push).delete(http::push::delete))
        .route("/healthz", get(http::ops::healthz))
        .route("/readyz", get(http::ops::readyz))
        .route("/info", get(http::ops::info))
        .route("/metrics", get(http::ops::metrics))
        .route("/admin", get(http::admin::redirect))
        .route("/admin/", get(http::admin::page))
        .route("/admin/admin.js", get(http::admin::script))
        .route("/admin/admin.css", get(http::admin::style))
        .route("/admin/events", get(http::admin::events))
        .fallback(http::ops::not_found)
        .layer(axum::middleware::map_response(http::ops::json_405))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(TraceLayer::new_for_http().make_span_with(davpush_serve::trace::request_span::<axum::body::Body>))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then closes WebSockets (code 1001)
/// and waits up to `server.shutdown_timeout_secs` for connections to finish. Connections are
/// limited by `server.header_read_timeout_secs`, `server.idle_timeout_secs` and
/// `server.max_pending_connections` (see `davpush_serve`); those closed for it are counted in
/// `davpush_requests_rejected_total{reason="header_timeout"|"pending_limit"|"fd_limit"}`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = tokio::spawn(background(state.clone(), stop_rx.clone()));
    let hub = state.hub.clone();
    let admin = state.admin.clone();
    let app = router(state.clone());
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: closing WebSocket connections");
        let _ = stop_tx.send(true);
        hub.close_all(CloseReason::Shutdown);
        if let Some(a) = admin {
            a.close();
        }
    };
    // Accepted sockets get TCP_NODELAY: frames are small and latency matters.
    let metrics = state.service.metrics().clone();
    davpush_serve::Server::new(state.config.connections)
        .on_refusal(move |why| metrics.reject(why.as_str()))
        .serve(listener, app, graceful)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(state.config.shutdown_timeout_secs);
    while !state.hub.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    background.abort();
    state.service.shutdown().await;
    Ok(())
}

/// Expiry purge and keep-alive sweeps.
async fn background(st: AppState, mut stop: watch::Receiver<bool>) {
    let ping = Duration::from_secs(st.config.websocket.ping_interval_secs);
    // The keep-alive sweeps one slice of the connections every 100 ms (issue 17: all at once,
    // 19,000 pings held up the notifications behind them).
    let slices = u32::try_from(ping.as_millis() / 100).unwrap_or(u32::MAX).max(1);
    let mut slice = 0;
    let mut ping_tick = tokio::time::interval(ping / slices);
    let mut purge_tick = tokio::time::interval(Duration::from_secs(st.config.purge_interval_secs));
    ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    purge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outbox_tick = tokio::time::interval(Duration::from_secs((st.config.outbox_lease_secs / 3).max(1)));
    outbox_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    outbox_tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = outbox_tick.tick() => {
                refresh_vapid_keys(&st).await;
                tend_outbox(&st).await;
            }
            _ = ping_tick.tick() => {
                let stale_before = davpush_core::unix_now() - 2 * ping.as_secs() as i64;
                let closed = st.hub.sweep_slice(stale_before, slice, slices);
                slice = (slice + 1) % slices;
                if closed > 0 {
                    tracing::info!(closed, "closed WebSocket connections that stopped answering pings");
                }
            }
            _ = purge_tick.tick() => {
                if let Some(eps) = st.service.push_endpoints() {
                    let n = eps.purge(davpush_core::unix_now());
                    if n > 0 {
                        tracing::info!(purged = n, "expired push subscriptions forgotten");
                    }
                }
                match st.service.purge_expired(davpush_core::unix_now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired subscriptions purged"),
                    Err(e) => tracing::error!(error = %e, "purging expired subscriptions failed"),
                }
                remove_unused_vapid_keys(&st).await;
            }
        }
    }
}

/// A Director running in this process (see [`spawn`]).
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (for inspection in tests).
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Base URL, `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down gracefully and waits for it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Builds and serves `config` on `config.listen` (port 0 picks a free port) in a task; returns
/// once the durable subscriptions are loaded (ready).
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let addr = config.listen;
    let state = build(config).await?;
    // Bounded: a store that cannot be read leaves the Director unready (its log says why).
    let mut ready = state.service.ready();
    let _ = tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Ok(Running { addr, state, stop: Some(tx), task })
}
