//! The admin view (`docs/operations.md`, "Admin view"): `/admin/` serves a page, a script and a
//! style sheet embedded in the binary (`web/admin/`; no build step, no CDN, a strict
//! Content-Security-Policy), and `/admin/events` a `text/event-stream` with one JSON snapshot
//! a second, behind the admin token: connections, subscriptions and pending retries per push
//! service, notifications and deliveries per second by outcome, the busiest topics, the nodes
//! of the cluster and the last errors per push service.
//!
//! Nothing it shows is a secret: topics are shown as a keyed hash (below), errors without
//! endpoint paths, tokens or credentials (`davpush_core::metrics::sanitize_reason`), and no
//! endpoint, client id or subscription id is shown at all. The page asks for the token and
//! sends it in an `Authorization` header of a streaming `fetch` (not `EventSource`, which
//! cannot set headers): it never appears in a URL or a log.
//!
//! Why hash topics that are already hashes: a topic is whatever the application server sends,
//! and in some deployments it is a collection's name or path (`my-calendar` in the README).
//! The view shows the first 12 hex digits of HMAC-SHA-256(first admin token, topic): stable
//! across restarts and nodes with the same token, not reversible by guessing names without
//! the token, and an operator holding the token can compute the hash of a topic to find it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use davpush_core::metrics::{DeliveryLabels, RecentError};
use davpush_core::{NodeStatus, ServiceKind};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::auth;
use super::error::ApiError;
use crate::config::Secret;
use crate::state::AppState;

const PAGE_HTML: &str = include_str!("../../../../web/admin/index.html");
const PAGE_JS: &str = include_str!("../../../../web/admin/admin.js");
const PAGE_CSS: &str = include_str!("../../../../web/admin/admin.css");

/// Scripts, styles and connections from this origin only; no inline script or style, no
/// plugins, no framing (the page takes a token).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Outcomes of deliveries the view shows rates of (`davpush_deliveries_total{outcome}`).
const OUTCOMES: [&str; 9] =
    ["queued", "coalesced", "dropped", "sent", "retry", "gone", "rejected", "failed", "overflow"];
/// How many of the busiest topics are shown.
const BUSIEST: usize = 10;
/// Time between two snapshots.
const INTERVAL: Duration = Duration::from_secs(1);

/// What the admin view needs besides the [`AppState`]: its tokens, the key of the topic hash,
/// and the end of its event streams at shutdown.
#[derive(Debug)]
pub struct AdminView {
    tokens: Vec<Secret>,
    topic_key: aws_lc_rs::hmac::Key,
    closing: watch::Sender<bool>,
    started: Instant,
}

impl AdminView {
    /// The view for these (non-empty) tokens.
    pub fn new(tokens: Vec<Secret>) -> Self {
        let first = tokens.first().map(|t| t.expose().as_bytes().to_vec()).unwrap_or_default();
        AdminView {
            topic_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &first),
            tokens,
            closing: watch::Sender::new(false),
            started: Instant::now(),
        }
    }

    /// Ends every event stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The topic as shown: 12 hex digits of its keyed hash.
    pub fn topic_hash(&self, topic: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.topic_key, topic.as_bytes());
        tag.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn asset(st: &AppState, content_type: &'static str, body: &'static str) -> Response {
    if st.admin.is_none() {
        return ApiError::NotFound.into_response();
    }
    secure(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// `GET /admin/`.
pub(crate) async fn page(State(st): State<AppState>) -> Response {
    asset(&st, "text/html; charset=utf-8", PAGE_HTML)
}

/// `GET /admin/admin.js`.
pub(crate) async fn script(State(st): State<AppState>) -> Response {
    asset(&st, "text/javascript; charset=utf-8", PAGE_JS)
}

/// `GET /admin/admin.css`.
pub(crate) async fn style(State(st): State<AppState>) -> Response {
    asset(&st, "text/css; charset=utf-8", PAGE_CSS)
}

/// `GET /admin`: to `/admin/`.
pub(crate) async fn redirect(State(st): State<AppState>) -> Response {
    if st.admin.is_none() {
        return ApiError::NotFound.into_response();
    }
    secure((StatusCode::FOUND, [(header::LOCATION, "/admin/")]).into_response())
}

/// One snapshot of the view.
#[derive(Debug, Serialize)]
struct Snapshot {
    node: Option<String>,
    at: i64,
    uptime_secs: u64,
    ready: bool,
    connections: usize,
    subscriptions: BTreeMap<&'static str, usize>,
    pending_retries: BTreeMap<&'static str, usize>,
    notifications_per_sec: f64,
    notifications_total: u64,
    deliveries_per_sec: BTreeMap<&'static str, BTreeMap<&'static str, f64>>,
    deliveries_total: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    busiest: Vec<Busy>,
    nodes: Option<Vec<NodeStatus>>,
    errors: BTreeMap<&'static str, Vec<RecentError>>,
}

#[derive(Debug, Serialize)]
struct Busy {
    topic: String,
    notifications: u64,
    subscribers: usize,
}

/// Counter values of the previous snapshot, for rates.
#[derive(Debug, Default)]
struct Previous {
    at: Option<Instant>,
    notifications: u64,
    deliveries: BTreeMap<(&'static str, &'static str), u64>,
}

async fn snapshot(st: &AppState, view: &AdminView, prev: &mut Previous) -> Snapshot {
    let svc = &st.service;
    let metrics = svc.metrics();
    let now = Instant::now();
    let secs = prev.at.map(|t| now.duration_since(t).as_secs_f64()).filter(|s| *s > 0.0);
    let rate = |now: u64, before: u64| secs.map_or(0.0, |s| (now.saturating_sub(before)) as f64 / s);
    let enabled: Vec<ServiceKind> = svc.transports().enabled().collect();
    let counts = svc.index().counts();
    let notifications = metrics.notifications.get();
    let mut deliveries_total: BTreeMap<&'static str, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut deliveries_per_sec: BTreeMap<&'static str, BTreeMap<&'static str, f64>> = BTreeMap::new();
    for kind in &enabled {
        let service = kind.as_str();
        for outcome in OUTCOMES {
            let n = metrics.deliveries.get_or_create(&DeliveryLabels { service, outcome }).get();
            if n == 0 {
                continue;
            }
            let before = prev.deliveries.insert((service, outcome), n).unwrap_or(n);
            deliveries_total.entry(service).or_default().insert(outcome, n);
            deliveries_per_sec.entry(service).or_default().insert(outcome, rate(n, before));
        }
    }
    let notifications_per_sec = rate(notifications, if prev.at.is_some() { prev.notifications } else { notifications });
    prev.at = Some(now);
    prev.notifications = notifications;
    let busiest = metrics
        .recent
        .busiest(BUSIEST)
        .into_iter()
        .map(|(topic, notifications)| Busy {
            subscribers: svc.index().topic_counts(topic.as_str()).iter().sum(),
            topic: view.topic_hash(topic.as_str()),
            notifications,
        })
        .collect();
    let nodes = match svc.presence() {
        Some(p) => p.nodes().await,
        None => None,
    };
    Snapshot {
        node: st.config.cluster.as_ref().map(|c| c.node_id.clone()),
        at: davpush_core::unix_now(),
        uptime_secs: view.started.elapsed().as_secs(),
        ready: svc.is_ready(),
        connections: st.hub.len(),
        subscriptions: enabled.iter().map(|k| (k.as_str(), counts[k.index()])).collect(),
        pending_retries: enabled
            .iter()
            .filter(|k| **k != ServiceKind::WebSocket)
            .map(|k| (k.as_str(), svc.transports().get(*k).map_or(0, |t| t.pending_retries())))
            .collect(),
        notifications_per_sec,
        notifications_total: notifications,
        deliveries_per_sec,
        deliveries_total,
        busiest,
        nodes,
        errors: enabled
            .iter()
            .filter(|k| **k != ServiceKind::WebSocket)
            .map(|k| (k.as_str(), metrics.recent.errors(*k)))
            .collect(),
    }
}

/// `GET /admin/events`: the admin token, then a snapshot at once and one a second.
pub(crate) async fn events(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(view) = st.admin.clone() else { return Err(ApiError::NotFound) };
    // The same handling as every token: all compared in constant time, 401 with a challenge,
    // counted; never logged.
    if let Err(e) = auth::check(&view.tokens, auth::bearer(&headers, None)) {
        st.service.metrics().reject("admin_unauthorized");
        return Err(e);
    }
    let closing = view.closing.subscribe();
    let start = (st, view, Previous::default(), closing, true);
    let stream = futures_util::stream::unfold(start, |(st, view, mut prev, mut closing, first)| async move {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = closing.wait_for(|c| *c) => return None,
            }
        }
        if *closing.borrow() {
            return None;
        }
        let snap = snapshot(&st, &view, &mut prev).await;
        let event = Event::default().event("snapshot").json_data(&snap).unwrap_or_else(|_| Event::default());
        Some((Ok::<_, Infallible>(event), (st, view, prev, closing, false)))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    let mut r = secure(sse.into_response());
    // Proxies (nginx) pass each event on at once.
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}
