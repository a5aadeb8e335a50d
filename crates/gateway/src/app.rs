//! The gateway's request handling: a transparent reverse proxy, plus the push properties in
//! PROPFIND and OPTIONS, registrations (`POST push-register`, `DELETE` of registration URLs), and
//! change notifications after successful writes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use davpush_proto::{DirectorInfo, SubscribeRequest, Trigger, UnsubscribeRequest};
use futures_util::TryStreamExt;
use tokio::net::TcpListener;

use crate::config::GatewayConfig;
use crate::dav::{self, PropfindKind, PushValues, RegisterError};
use crate::director::{DirectorClient, DirectorError};
use crate::notifier::{Change, Job, Notifier, NotifierParts};
use crate::registration::{self, DontNotify, Registration};
use crate::topic::{canonical_path, parent_path};

/// Shared state of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayState {
    pub(crate) cfg: Arc<GatewayConfig>,
    upstream: reqwest::Client,
    director: DirectorClient,
    notifier: Notifier,
    info: Arc<RwLock<Option<DirectorInfo>>>,
    /// Proxied browser WebSockets per user (owner hash), bounded by `max_sockets_per_user`.
    pub(crate) sockets: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// Starting failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, skip_length: bool) {
    let named_in_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for (k, v) in from {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name)
            || named_in_connection.iter().any(|c| c == name)
            || (skip_length && k == header::CONTENT_LENGTH)
        {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

/// Request headers through which a client could tell the upstream where the request came from,
/// under which path or host the server is published, who the user is, or which method to run
/// instead. A client that could set them might make the upstream resolve paths or users
/// differently from the gateway (Radicale's `X-Script-Name` moved a PROPFIND's hrefs, and so its
/// topics, into another user's collection; a server trusting `X-Remote-User` from the gateway's
/// address would take the client's word for who it is), so the gateway removes them and sets its
/// own (`upstream_headers`).
const CLIENT_ROUTING: &[&str] = &[
    "forwarded",
    "x-script-name",
    "script-name",
    "x-remote-user",
    "remote-user",
    "x-remote-addr",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-authenticated-user",
    "x-webauth-user",
    "x-user",
    "x-email",
];
/// Prefixes of such headers (`X-Forwarded-For`, `-Host`, `-Proto`, `-Prefix`, `-User`, …,
/// `X-Auth-Request-User`, `X-Remote-*`).
const CLIENT_ROUTING_PREFIXES: &[&str] = &["x-forwarded-", "x-auth-request-", "x-remote-", "x-proxy-"];

/// Whether `name` is a routing or identity header that only the gateway may set upstream.
pub(crate) fn is_client_routing(name: &str) -> bool {
    CLIENT_ROUTING.contains(&name) || CLIENT_ROUTING_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Removes the client's routing and identity headers and sets the configured ones.
fn upstream_identity(cfg: &GatewayConfig, headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| is_client_routing(k.as_str())).cloned().collect();
    for n in names {
        headers.remove(n);
    }
    for (n, v) in &cfg.upstream_headers {
        headers.insert(n.clone(), v.clone());
    }
}

pub(crate) fn plain(status: StatusCode, msg: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.to_owned()).into_response()
}

fn dav_error(status: StatusCode, precondition: &str, description: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], dav::dav_error(precondition, description))
        .into_response()
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

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
        let director = DirectorClient::new(
            cfg.director_url.clone(),
            cfg.notify_token.clone(),
            cfg.subscription_token.clone(),
            cfg.timeout,
        )?;
        let notifier = Notifier::start(
            NotifierParts {
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
        };
        state.refresh_info().await;
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let known = s.info.read().unwrap_or_else(|e| e.into_inner()).is_some();
                tokio::time::sleep(Duration::from_secs(if known { 300 } else { 10 })).await;
                s.refresh_info().await;
            }
        });
        Ok(state)
    }

    async fn refresh_info(&self) {
        match self.director.info().await {
            Ok(i) => *self.info.write().unwrap_or_else(|e| e.into_inner()) = Some(i),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Director's /info; push properties are incomplete until it answers")
            }
        }
    }

    fn push_values(&self, topic: String) -> PushValues {
        let info = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
        let director = self.cfg.director_public_url.to_string();
        let (services, auth, vapid, ws) = match info {
            Some(i) => {
                let ws = i.websocket_path.as_ref().map(|p| {
                    let mut u = self.cfg.director_public_url.clone();
                    let _ = u.set_scheme(if u.scheme() == "https" { "wss" } else { "ws" });
                    u.set_path(p);
                    u.to_string()
                });
                let vapid = if i.services.iter().any(|s| s == "web_push") { i.vapid_public_key } else { None };
                (i.services, i.subscription_auth, vapid, ws)
            }
            None => (Vec::new(), "token".into(), None, None),
        };
        PushValues {
            topic,
            vapid_public_key: vapid,
            director,
            services,
            subscription_auth: auth,
            websocket_url: ws,
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

    fn web_prefix(&self) -> String {
        format!("{}/.davpush/", self.cfg.public_prefix().trim_end_matches('/'))
    }

    fn registration_prefix(&self) -> String {
        let p = self.cfg.public_prefix().trim_end_matches('/');
        format!("{p}{}", self.cfg.registration_path)
    }

    fn upstream_url(&self, path: &str, query: Option<&str>) -> url::Url {
        let mut u = self.cfg.upstream.clone();
        u.set_path(path);
        u.set_query(query);
        u
    }

    /// Sends a request to the upstream with the client's headers (hop-by-hop removed,
    /// `Destination` mapped).
    async fn forward(
        &self,
        parts: &Parts,
        path: &str,
        body: Option<reqwest::Body>,
        skip: &[HeaderName],
    ) -> Result<reqwest::Response, Response> {
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|_| plain(StatusCode::METHOD_NOT_ALLOWED, "unsupported method"))?;
        let mut headers = HeaderMap::new();
        copy_headers(&parts.headers, &mut headers, false);
        upstream_identity(&self.cfg, &mut headers);
        for h in skip {
            headers.remove(h);
        }
        if self.maps_hrefs() {
            // Multistatus answers are rewritten then: they must come uncompressed.
            headers.remove(header::ACCEPT_ENCODING);
        }
        if let Some(dest) = parts.headers.get("destination") {
            let dest = dest.to_str().map_err(|_| plain(StatusCode::BAD_REQUEST, "Destination is not valid text"))?;
            match self.map_destination(dest) {
                Some(d) => {
                    headers.insert(
                        "destination",
                        HeaderValue::from_str(&d).map_err(|_| plain(StatusCode::BAD_REQUEST, "bad Destination"))?,
                    );
                }
                None => {
                    return Err(plain(
                        StatusCode::BAD_GATEWAY,
                        "Destination is outside this server, or not a safe path",
                    ));
                }
            }
        }
        let mut req = self.upstream.request(method, self.upstream_url(path, parts.uri.query())).headers(headers);
        if let Some(body) = body {
            req = req.body(body);
        }
        req.send().await.map_err(|e| {
            tracing::warn!(error = %e, "upstream request failed");
            plain(StatusCode::BAD_GATEWAY, "the WebDAV server behind this gateway did not answer")
        })
    }

    /// The upstream form of a `Destination` header (absolute URL or path).
    fn map_destination(&self, dest: &str) -> Option<String> {
        let path = match url::Url::parse(dest) {
            Ok(u) => u.path().to_owned(),
            Err(_) => dest.to_owned(),
        };
        let up = self.cfg.to_upstream_path(&path)?;
        Some(self.upstream_url(&up, None).to_string())
    }

    /// Turns an upstream response into ours: status, headers (hop-by-hop removed, `Location`
    /// mapped back), body streamed.
    async fn respond(&self, resp: reqwest::Response) -> Response {
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = HeaderMap::new();
        if status == StatusCode::MULTI_STATUS && self.maps_hrefs() {
            // The upstream's hrefs are in its URL space: map them to ours (whole body needed).
            copy_headers(resp.headers(), &mut headers, true);
            self.map_location(&mut headers);
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(_) => return plain(StatusCode::BAD_GATEWAY, "the upstream's answer broke off"),
            };
            let mapped = std::str::from_utf8(&body).ok().and_then(|t| self.map_body_hrefs(t));
            return match mapped {
                Some(m) => (status, headers, m).into_response(),
                None => (status, headers, body).into_response(),
            };
        }
        copy_headers(resp.headers(), &mut headers, false);
        self.map_location(&mut headers);
        let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
        let mut out = Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    }

    /// Whether the upstream's URL space differs from ours, so hrefs in bodies need mapping.
    fn maps_hrefs(&self) -> bool {
        self.cfg.public_prefix() != self.cfg.upstream_prefix()
    }

    /// The public form of an upstream href (a path, or an absolute URL of the upstream).
    fn public_href(&self, href: &str) -> Option<String> {
        match url::Url::parse(href) {
            Ok(u) if u.origin() == self.cfg.upstream.origin() => self.cfg.to_public_path(u.path()).map(|p| {
                let mut pu = self.cfg.public_url.clone();
                pu.set_path(&p);
                pu.set_query(u.query());
                pu.to_string()
            }),
            Ok(_) => None,
            Err(_) => self.cfg.to_public_path(href),
        }
    }

    fn map_body_hrefs(&self, body: &str) -> Option<String> {
        match dav::map_hrefs(body, |h| self.public_href(h)) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "upstream multistatus could not be parsed; hrefs not mapped");
                None
            }
        }
    }

    fn map_location(&self, headers: &mut HeaderMap) {
        let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else { return };
        if let Some(m) = self.public_href(loc).and_then(|m| HeaderValue::from_str(&m).ok()) {
            headers.insert(header::LOCATION, m);
        }
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large for this gateway"))
}

/// The request body for the upstream: streamed, or none at all when the client sent none (a
/// chunked empty body would make e.g. MKCOL a request "with a body", which servers refuse).
fn streamed(parts: &Parts, body: Body) -> Option<reqwest::Body> {
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    has_body.then(|| reqwest::Body::wrap_stream(body.into_data_stream()))
}

/// The router: everything goes through [`handle`].
pub fn router(state: GatewayState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Handles one request.
pub async fn handle(State(st): State<GatewayState>, req: Request) -> Response {
    let from_script =
        req.headers().get("x-requested-with").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let mut resp = dispatch(&st, req).await;
    if from_script && resp.status() == StatusCode::UNAUTHORIZED {
        // A Basic challenge makes browsers show their own login dialog over a page's request
        // (or, headless, wait for one forever); a script that sent the user's credentials itself
        // handles the 401 (the convention of Nextcloud and ownCloud).
        let kept: Vec<HeaderValue> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter(|v| !v.as_bytes().get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"basic")))
            .cloned()
            .collect();
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
        for v in kept {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

async fn dispatch(st: &GatewayState, req: Request) -> Response {
    let st = st.clone();
    let path = req.uri().path().to_owned();
    let reg_prefix = st.registration_prefix();
    if let Some(token) = path.strip_prefix(&reg_prefix) {
        let token = token.to_owned();
        return registration_request(&st, req, &token).await.unwrap_or_else(|r| r);
    }
    if st.cfg.web_clients
        && let Some(rest) = path.strip_prefix(&st.web_prefix())
    {
        let rest = rest.to_owned();
        return crate::web::handle(&st, req, &rest).await;
    }
    if !crate::topic::path_is_safe(&path) {
        return plain(
            StatusCode::BAD_REQUEST,
            "paths with `.`/`..` segments, backslashes or encoded slashes are refused",
        );
    }
    let Some(up_path) = st.cfg.to_upstream_path(&path) else {
        return plain(StatusCode::NOT_FOUND, "not under this gateway's public URL");
    };
    let result = match req.method().as_str() {
        "PROPFIND" => propfind(&st, req, &up_path).await,
        "OPTIONS" => options(&st, req, &up_path).await,
        "POST" => post(&st, req, &up_path).await,
        "PUT" | "DELETE" | "MKCOL" | "MKCALENDAR" | "MOVE" | "COPY" | "PROPPATCH" => write(&st, req, &up_path).await,
        _ => {
            let (parts, body) = req.into_parts();
            match st.forward(&parts, &up_path, streamed(&parts, body), &[]).await {
                Ok(r) => Ok(st.respond(r).await),
                Err(e) => Err(e),
            }
        }
    };
    result.unwrap_or_else(|r| r)
}

async fn options(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let resp = st.forward(&parts, up_path, streamed(&parts, body), &[]).await?;
    let ok = resp.status().is_success();
    let mut out = st.respond(resp).await;
    let dav: Vec<HeaderValue> = out.headers().get_all("dav").iter().cloned().collect();
    if ok && up_path.ends_with('/') && !dav.is_empty() {
        let joined = dav.iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
        if !joined.split(',').any(|t| t.trim() == "webdav-push")
            && let Ok(v) = HeaderValue::from_str(&format!("{joined}, webdav-push"))
        {
            out.headers_mut().insert("dav", v);
        }
    }
    Ok(out)
}

async fn propfind(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, st.cfg.max_body_bytes).await?;
    let kind = dav::analyze_propfind(&bytes);
    let Some(kind) = kind.filter(PropfindKind::wants_push) else {
        let resp = st.forward(&parts, up_path, (!bytes.is_empty()).then(|| bytes.into()), &[]).await?;
        return Ok(st.respond(resp).await);
    };
    // We rewrite the answer: ask for it uncompressed.
    let resp =
        st.forward(&parts, up_path, (!bytes.is_empty()).then(|| bytes.into()), &[header::ACCEPT_ENCODING]).await?;
    if resp.status().as_u16() != 207 {
        return Ok(st.respond(resp).await);
    }
    let status = resp.status().as_u16();
    let mut headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut headers, true);
    let body = resp.bytes().await.map_err(|_| plain(StatusCode::BAD_GATEWAY, "the upstream's answer broke off"))?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok((StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), headers, body).into_response());
    };
    // Topics only for what the request asked about: the request path and what lies under it.
    // An href elsewhere (an upstream that was told another base path, or that lists other
    // users' collections) gets no push properties, so no topic of a collection the request
    // did not name.
    let Some(base) = canonical_path(up_path) else {
        return Ok((StatusCode::MULTI_STATUS, headers, body).into_response());
    };
    let authorization = parts.headers.get(header::AUTHORIZATION);
    let grant_ok = kind.wants_grant() && check_read(st, up_path, authorization).await.is_ok();
    let owner = registration::owner_hash(&registration::user_key(authorization.and_then(|a| a.to_str().ok())));
    let rewritten = dav::rewrite_multistatus(text, &kind, |href| {
        let path = match url::Url::parse(href) {
            Ok(u) if u.origin() == st.cfg.upstream.origin() => u.path().to_owned(),
            Ok(_) => return None,
            Err(_) => href.to_owned(),
        };
        let canonical = canonical_path(&path)?;
        if !canonical.starts_with(&base) {
            return None;
        }
        let topic = st.cfg.topic_key.topic_of_canonical(&canonical);
        let grant = (grant_ok && canonical == base).then(|| st.grant(&owner, &[&topic]));
        Some(PushValues { grant, ..st.push_values(topic) })
    });
    match rewritten {
        Ok(xml) => {
            let xml = if st.maps_hrefs() { st.map_body_hrefs(&xml).unwrap_or(xml) } else { xml };
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
            Ok((StatusCode::MULTI_STATUS, headers, xml).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream multistatus could not be parsed; passed through unchanged");
            Ok((StatusCode::MULTI_STATUS, headers, body).into_response())
        }
    }
}

fn is_xml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let m = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            m == "application/xml" || m == "text/xml"
        })
        .unwrap_or(false)
}

async fn post(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, Response> {
    if !is_xml(req.headers()) {
        return write(st, req, up_path).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, st.cfg.max_body_bytes).await?;
    if let Some(root) = dav::is_push_register(&bytes) {
        return register(st, &parts, up_path, &root).await;
    }
    let resp = st.forward(&parts, up_path, (!bytes.is_empty()).then(|| bytes.into()), &[]).await?;
    if resp.status().is_success() {
        notify_after_write(st, &parts, up_path, None);
    }
    Ok(st.respond(resp).await)
}

async fn write(st: &GatewayState, req: Request, up_path: &str) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let dest = parts
        .headers
        .get("destination")
        .and_then(|v| v.to_str().ok())
        .and_then(|d| st.map_destination(d))
        .and_then(|u| url::Url::parse(&u).ok())
        .map(|u| u.path().to_owned());
    let resp = st.forward(&parts, up_path, streamed(&parts, body), &[]).await?;
    if resp.status().is_success() {
        notify_after_write(st, &parts, up_path, dest.as_deref());
    }
    Ok(st.respond(resp).await)
}

/// The collections a successful write changed, and what changed in them.
pub fn affected(method: &Method, path: &str, dest: Option<&str>) -> Vec<Change> {
    let content = |p: Option<String>| p.map(|path| Change { path, trigger: Trigger::Content });
    let property = |p: Option<String>| p.map(|path| Change { path, trigger: Trigger::Property });
    let mut v: Vec<Change> = match method.as_str() {
        "PUT" | "MKCOL" | "MKCALENDAR" => vec![content(parent_path(path))].into_iter().flatten().collect(),
        // Deleting a collection changes it and its parent; deleting a member, its parent.
        "DELETE" => [content(parent_path(path)), content(canonical_path(path))].into_iter().flatten().collect(),
        "MOVE" => [content(parent_path(path)), content(canonical_path(path)), content(dest.and_then(parent_path))]
            .into_iter()
            .flatten()
            .collect(),
        "COPY" => [content(dest.and_then(parent_path))].into_iter().flatten().collect(),
        "PROPPATCH" => [property(canonical_path(path)), property(parent_path(path))].into_iter().flatten().collect(),
        "POST" => [content(canonical_path(path))].into_iter().flatten().collect(),
        _ => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    v.retain(|c| seen.insert((c.path.clone(), c.trigger)));
    v
}

fn notify_after_write(st: &GatewayState, parts: &Parts, up_path: &str, dest: Option<&str>) {
    let authorization = parts.headers.get(header::AUTHORIZATION).cloned();
    let mut exclude = Vec::new();
    if let Some(v) = parts.headers.get("push-dont-notify").and_then(|v| v.to_str().ok()) {
        match registration::parse_dont_notify(v) {
            DontNotify::All => return,
            DontNotify::Urls(urls) => {
                let me = registration::owner_hash(&registration::user_key(
                    authorization.as_ref().and_then(|a| a.to_str().ok()),
                ));
                let prefix = st.registration_prefix();
                for u in urls {
                    let path = url::Url::parse(&u).map(|u| u.path().to_owned()).unwrap_or(u);
                    // Invalid values and other users' registrations are ignored (spec §1.5).
                    if let Some(reg) =
                        path.strip_prefix(&prefix).and_then(|t| Registration::decode(t, &st.cfg.topic_key))
                        && reg.owner == me
                    {
                        exclude.push(reg.subscription_id);
                    }
                }
            }
        }
    }
    let changes = affected(&parts.method, up_path, dest);
    st.notifier.submit(Job { changes, exclude, authorization });
}

/// May the requester read `up_path`? Asks the upstream with the requester's credentials.
pub(crate) async fn check_read(st: &GatewayState, up_path: &str, auth: Option<&HeaderValue>) -> Result<(), Response> {
    let mut req = st
        .upstream
        .request(reqwest::Method::from_bytes(b"PROPFIND").expect("valid"), st.upstream_url(up_path, None))
        .header("Depth", "0")
        .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
        .body(
            r#"<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>"#,
        );
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a.clone());
    }
    let resp = req.send().await.map_err(|_| plain(StatusCode::BAD_GATEWAY, "the WebDAV server did not answer"))?;
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        401 => {
            let mut out = plain(StatusCode::UNAUTHORIZED, "authentication required");
            for v in resp.headers().get_all(header::WWW_AUTHENTICATE) {
                out.headers_mut().append(header::WWW_AUTHENTICATE, v.clone());
            }
            Err(out)
        }
        403 | 404 => Err(dav_error(StatusCode::FORBIDDEN, "push-not-available", "you may not read this collection")),
        // The upstream refused the request itself (a malformed path, a method it does not allow
        // there): the client's error, passed on as such.
        s @ 400..=499 => Err(plain(
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
            &format!("the WebDAV server refused this request ({s})"),
        )),
        s => Err(plain(StatusCode::BAD_GATEWAY, &format!("the WebDAV server answered {s}"))),
    }
}

async fn register(
    st: &GatewayState,
    parts: &Parts,
    up_path: &str,
    root: &crate::xml::Element,
) -> Result<Response, Response> {
    let auth = parts.headers.get(header::AUTHORIZATION);
    check_read(st, up_path, auth).await?;
    let reg = dav::parse_push_register(root).map_err(|e| match e {
        RegisterError::NoSupportedTrigger => dav_error(
            StatusCode::FORBIDDEN,
            "no-supported-trigger",
            "neither content-update nor property-update requested",
        ),
        RegisterError::InvalidSubscription(m) => dav_error(StatusCode::FORBIDDEN, "invalid-subscription", &m),
        RegisterError::Malformed(m) => plain(StatusCode::BAD_REQUEST, &m),
    })?;
    let canonical = canonical_path(up_path).ok_or_else(|| plain(StatusCode::BAD_REQUEST, "bad path"))?;
    let topic = st.cfg.topic_key.topic_of_canonical(&canonical);
    let user = registration::user_key(auth.and_then(|a| a.to_str().ok()));
    let client_id = registration::client_id(&user, &reg.push_resource);
    let expires = reg.expires.unwrap_or(0).max(unix_now() + st.cfg.min_registration_secs);
    let params = serde_json::json!({
        "endpoint": reg.push_resource, "p256dh": reg.p256dh, "auth": reg.auth, "format": "webdav-push-xml"
    });
    let req = SubscribeRequest {
        grant: Some(st.grant(&registration::owner_hash(&user), &[&topic])),
        client_id: client_id.clone(),
        topic: topic.clone(),
        push_services: [("web_push".to_owned(), params)].into_iter().collect(),
        expires: Some(expires),
        triggers: Some(
            [(reg.content, Trigger::Content), (reg.property, Trigger::Property)]
                .into_iter()
                .filter_map(|(on, t)| on.then_some(t))
                .collect(),
        ),
    };
    let (created, answer) = st.director.subscribe(&req).await.map_err(|e| match e {
        DirectorError::Refused { status: 400, body } if body.error == "push_service_disabled" => {
            dav_error(StatusCode::FORBIDDEN, "push-not-available", "Web Push is not enabled on this server")
        }
        DirectorError::Refused { status: 400, body } => {
            dav_error(StatusCode::FORBIDDEN, "invalid-subscription", &body.message)
        }
        DirectorError::Refused { status: 409 | 429, body } => {
            dav_error(StatusCode::FORBIDDEN, "push-not-available", &body.message)
        }
        other => {
            tracing::error!(error = %other, "registration failed at the Director");
            plain(StatusCode::SERVICE_UNAVAILABLE, "push is temporarily unavailable")
        }
    })?;
    let sub = answer
        .subscriptions
        .first()
        .ok_or_else(|| plain(StatusCode::BAD_GATEWAY, "the Director answered no subscription"))?;
    let token = Registration {
        subscription_id: sub.id.clone(),
        client_id,
        topic,
        owner: registration::owner_hash(&user),
        path: canonical,
    }
    .encode(&st.cfg.topic_key);
    let mut location = st.cfg.public_url.clone();
    location.set_path(&format!("{}{token}", st.registration_prefix()));
    let expires_at = UNIX_EPOCH + Duration::from_secs(answer.expires.max(0) as u64);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT };
    let h = out.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(location.as_str())
            .map_err(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad Location"))?,
    );
    h.insert(
        header::EXPIRES,
        HeaderValue::from_str(&httpdate::fmt_http_date(expires_at)).expect("IMF-fixdate is ASCII"),
    );
    Ok(out)
}

async fn registration_request(st: &GatewayState, req: Request, token: &str) -> Result<Response, Response> {
    if req.method() != Method::DELETE {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "a registration can only be deleted");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("DELETE"));
        return Err(r);
    }
    let Some(reg) = Registration::decode(token, &st.cfg.topic_key) else {
        return Err(plain(StatusCode::NOT_FOUND, "no such registration"));
    };
    let auth = req.headers().get(header::AUTHORIZATION);
    check_read(st, &reg.path, auth).await?;
    if registration::owner_hash(&registration::user_key(auth.and_then(|a| a.to_str().ok()))) != reg.owner {
        return Err(plain(StatusCode::FORBIDDEN, "this registration belongs to another user"));
    }
    let removed = st
        .director
        .unsubscribe(&UnsubscribeRequest {
            client_id: reg.client_id,
            topic: Some(reg.topic),
            push_services: Some(vec!["web_push".into()]),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "unregistration failed at the Director");
            plain(StatusCode::SERVICE_UNAVAILABLE, "push is temporarily unavailable")
        })?;
    Ok(if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        plain(StatusCode::NOT_FOUND, "no such registration")
    })
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Header-read and idle timeouts, the pending-connection cap, surviving EMFILE: issue 9.
    let server = davpush_serve::Server::new(state.cfg.connections);
    server.serve(listener, router(state), shutdown).await
}

/// A gateway running in this process.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Binds `listener` and serves `cfg` in a task.
pub async fn spawn(cfg: GatewayConfig, listener: TcpListener) -> Result<RunningGateway, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
    let state = GatewayState::build(cfg).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    Ok(RunningGateway { addr, stop: Some(tx), task })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: Vec<Change>) -> Vec<(String, Trigger)> {
        v.into_iter().map(|c| (c.path, c.trigger)).collect()
    }

    #[test]
    fn affected_collections_per_method() {
        let put = Method::PUT;
        assert_eq!(paths(affected(&put, "/a/cal/e.ics", None)), vec![("/a/cal/".into(), Trigger::Content)]);
        let mv = Method::from_bytes(b"MOVE").unwrap();
        assert_eq!(
            paths(affected(&mv, "/a/cal/e.ics", Some("/a/other/e.ics"))),
            vec![
                ("/a/cal/".into(), Trigger::Content),
                ("/a/cal/e.ics/".into(), Trigger::Content),
                ("/a/other/".into(), Trigger::Content)
            ]
        );
        let pp = Method::from_bytes(b"PROPPATCH").unwrap();
        assert_eq!(
            paths(affected(&pp, "/a/cal/", None)),
            vec![("/a/cal/".into(), Trigger::Property), ("/a/".into(), Trigger::Property)]
        );
        assert!(affected(&Method::GET, "/a/", None).is_empty());
    }
}
