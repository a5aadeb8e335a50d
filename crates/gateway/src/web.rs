//! What browsers need from the gateway, under `<public_url>.davpush/`:
//!
//! - `client/davpush.js`: the dependency-free ES module (`web/davpush.js` in the repository),
//!   and `client/webpush.js`, which it imports (Web Push decryption with Web Crypto);
//! - `demo/`: the live web calendar (`web/demo/`), with its own icon (`demo/favicon.svg`, linked
//!   from the page, so browsers do not ask the upstream for `/favicon.ico`);
//! - `POST ticket`: a short-lived WebSocket ticket for a user the upstream accepts;
//! - `GET ws?ticket=…`: a WebSocket proxied to the Director's `/ws`.
//!
//! Why a proxy: browsers cannot put an `Authorization` header on a WebSocket, and a page should
//! not carry the Director's subscription token. A page that is logged in to the WebDAV server
//! (it sends the user's credentials with its `fetch` requests) asks for a ticket for the
//! collections it wants to watch; the gateway checks with the upstream that the user may read
//! each, and signs the user's hash, an expiry and their topics under the installation's secret
//! (nothing is stored). The page opens the WebSocket on its own origin with it, and the gateway
//! forwards a `subscribe` only for a topic the ticket names, with a grant for it (the Director
//! subscribes nobody without one); a native client that authenticates
//! with its credentials instead names the collection in each `subscribe` (`"collection"`), which
//! is checked the same way. So the socket never carries changes of collections the user may
//! not read. The gateway connects to the Director with its own
//! subscription token, as it does for registrations, and moves frames both ways. Closing either
//! side closes the other with the same code, so a Director restart (1001) reaches the page.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_proto::{ClientFrame, SUBPROTOCOL, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::error::GatewayError;
use crate::registration;
use crate::state::{GatewayState, unix_now};
use crate::upstream::check_read;

/// The browser module.
pub const DAVPUSH_JS: &str = include_str!("../../../web/davpush.js");
/// Web Push decryption with Web Crypto, imported by `davpush.js` (`web/webpush.js`).
pub const WEBPUSH_JS: &str = include_str!("../../../web/webpush.js");
const DEMO_HTML: &str = include_str!("../../../web/demo/index.html");
const DEMO_JS: &str = include_str!("../../../web/demo/calendar.js");
const DEMO_CSS: &str = include_str!("../../../web/demo/calendar.css");
const DEMO_ICON: &str = include_str!("../../../web/demo/favicon.svg");

/// The policy of every page and asset under `.davpush/`: scripts, styles, images and
/// connections (`fetch`, the WebSocket) from this origin only, no inline script or style, no
/// plugins, and no framing (the page takes a password).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const TICKET_LABEL: &str = "davpush-ws-ticket";
/// How long a ticket opens WebSockets, seconds.
const TICKET_SECS: i64 = 60;
/// How often the gateway pings a proxied browser connection until the Director's `hello`
/// names its own interval, which the gateway then uses (so one reverse-proxy read timeout above
/// `websocket.ping_interval_secs` fits both WebSockets).
const BROWSER_PING: Duration = Duration::from_secs(30);
/// How long the gateway waits for the Director's WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Ticket {
    /// Owner hash of the user.
    u: String,
    /// Expiry, unix seconds.
    e: i64,
    /// Topics the user may subscribe to (their collections were readable when it was issued).
    #[serde(default)]
    t: Vec<String>,
}

/// `POST ticket` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    /// Collections (paths or URLs under the gateway) the page wants to watch.
    #[serde(default)]
    collections: Vec<String>,
}

/// What a proxied WebSocket may subscribe to.
#[derive(Debug, Clone)]
enum Access {
    /// The topics of a ticket.
    Topics(std::collections::HashSet<String>),
    /// A native client's credentials: each `subscribe` names its collection, checked upstream.
    Credentials(HeaderValue),
}

/// The answer to `POST ticket`.
#[derive(Debug, Serialize)]
struct TicketAnswer {
    ticket: String,
    expires_in: i64,
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response();
    secure(&mut r);
    r
}

/// The security headers of the pages and assets (see [`CONTENT_SECURITY_POLICY`]).
fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Handles a request under `.davpush/` (`rest` is the path after it).
pub(crate) async fn handle(st: &GatewayState, req: Request, rest: &str) -> Result<Response, GatewayError> {
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    Ok(match rest {
        "client/davpush.js" if get => asset("text/javascript; charset=utf-8", DAVPUSH_JS),
        "client/webpush.js" if get => asset("text/javascript; charset=utf-8", WEBPUSH_JS),
        "demo" if get => {
            let q = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("demo/{q}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            secure(&mut r);
            r
        }
        "demo/" | "demo/index.html" if get => asset("text/html; charset=utf-8", DEMO_HTML),
        "demo/calendar.js" if get => asset("text/javascript; charset=utf-8", DEMO_JS),
        "demo/calendar.css" if get => asset("text/css; charset=utf-8", DEMO_CSS),
        "demo/favicon.svg" if get => asset("image/svg+xml", DEMO_ICON),
        "ticket" if method == Method::POST => ticket(st, req).await?,
        "ws" if method == Method::GET => proxy(st, req).await?,
        "client/davpush.js" | "client/webpush.js" | "demo/" | "demo/index.html" | "demo/calendar.js"
        | "demo/calendar.css" | "demo/favicon.svg" | "ticket" | "ws" => {
            return Err(GatewayError::MethodNotAllowed { message: "method not allowed", allow: None });
        }
        _ => return Err(GatewayError::NotFound("not found")),
    })
}

/// Who the upstream says the requester is: its root must be readable with the credentials.
async fn authenticate(st: &GatewayState, authorization: Option<&HeaderValue>) -> Result<String, GatewayError> {
    check_read(st, st.cfg.upstream_prefix(), authorization).await?;
    Ok(registration::owner_hash(&registration::user_key(authorization.and_then(|a| a.to_str().ok()))))
}

async fn ticket(st: &GatewayState, req: Request) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let auth = parts.headers.get(header::AUTHORIZATION);
    let owner = authenticate(st, auth).await?;
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| GatewayError::PayloadTooLarge("ticket request too large"))?;
    let wanted: TicketRequest = if body.is_empty() {
        TicketRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| GatewayError::BadRequest(format!("bad ticket request: {e}")))?
    };
    let mut topics = Vec::with_capacity(wanted.collections.len());
    for c in &wanted.collections {
        topics.push(readable_topic(st, c, auth).await?);
    }
    let payload = serde_json::to_vec(&Ticket { u: owner, e: unix_now() + TICKET_SECS, t: topics }).expect("serializes");
    let mac = st.cfg.topic_key.mac(TICKET_LABEL, &payload);
    let answer =
        TicketAnswer { ticket: format!("{}.{}", B64.encode(&payload), B64.encode(mac)), expires_in: TICKET_SECS };
    let mut r = axum::Json(answer).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The topic of `collection` (a path or URL under the gateway), if the upstream lets the holder
/// of `auth` read it.
async fn readable_topic(
    st: &GatewayState,
    collection: &str,
    auth: Option<&HeaderValue>,
) -> Result<String, GatewayError> {
    let path = url::Url::parse(collection).map(|u| u.path().to_owned()).unwrap_or_else(|_| collection.to_owned());
    let up = st
        .cfg
        .to_upstream_path(&path)
        .ok_or_else(|| GatewayError::BadRequest(format!("{collection} is not under this gateway")))?;
    check_read(st, &up, auth).await?;
    st.cfg.topic_key.topic(&up).ok_or_else(|| GatewayError::BadRequest(format!("{collection} is not a valid path")))
}

fn ticket_valid(st: &GatewayState, ticket: &str) -> Option<Ticket> {
    let (p, m) = ticket.split_once('.')?;
    let (Ok(payload), Ok(mac)) = (B64.decode(p), B64.decode(m)) else { return None };
    if !st.cfg.topic_key.verify(TICKET_LABEL, &payload, &mac) {
        return None;
    }
    serde_json::from_slice::<Ticket>(&payload).ok().filter(|t| t.e >= unix_now())
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

type DirectorSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn proxy(st: &GatewayState, req: Request) -> Result<Response, GatewayError> {
    let (mut parts, _) = req.into_parts();
    let (owner, access) = match query_param(parts.uri.query(), "ticket") {
        // Tickets are base64url with a dot: nothing to percent-decode.
        Some(t) => match ticket_valid(st, t) {
            Some(t) => (t.u, Access::Topics(t.t.into_iter().collect())),
            None => {
                return Err(GatewayError::Unauthorized {
                    message: "the ticket is invalid or expired; ask for a new one",
                    challenges: Vec::new(),
                });
            }
        },
        None => {
            // Native clients (and browsers that send cached credentials) may authenticate directly.
            let auth = parts.headers.get(header::AUTHORIZATION).cloned();
            let owner = authenticate(st, auth.as_ref()).await?;
            match auth {
                Some(a) => (owner, Access::Credentials(a)),
                None => {
                    return Err(GatewayError::Unauthorized {
                        message: "authentication required",
                        challenges: Vec::new(),
                    });
                }
            }
        }
    };
    let slot = SocketSlot::take(st, owner.clone())
        .ok_or(GatewayError::TooManyRequests { message: "too many push connections for this user", retry_after: 30 })?;
    let state = st.clone();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, st)
        .await
        .map_err(|e| GatewayError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let director = connect_director(st).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot open a WebSocket to the Director for a browser");
        GatewayError::Unavailable { message: "push is temporarily unavailable", retry_after: Some(2) }
    })?;
    Ok(upgrade.protocols([SUBPROTOCOL]).max_message_size(64 * 1024).on_upgrade(move |socket| async move {
        let open = crate::metrics::OpenSocket::new(state.metrics.clone());
        pump(state, owner, access, socket, director).await;
        drop(open);
        drop(slot);
    }))
}

async fn connect_director(st: &GatewayState) -> Result<DirectorSocket, tungstenite::Error> {
    let mut url = st.cfg.director_url.clone();
    let _ = url.set_scheme(if url.scheme() == "https" { "wss" } else { "ws" });
    // Under director_url's path, as the Director's other endpoints are.
    let path = format!("{}{}", url.path().trim_end_matches('/'), st.websocket_path());
    url.set_path(&path);
    let mut request = url.as_str().into_client_request()?;
    let h = request.headers_mut();
    let bearer = HeaderValue::from_str(&format!("Bearer {}", st.cfg.subscription_token.expose()))
        .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
    h.insert(header::AUTHORIZATION, bearer);
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Ok(r) => r.map(|(ws, _)| ws),
        Err(_) => Err(tungstenite::Error::Io(std::io::Error::from(std::io::ErrorKind::TimedOut))),
    }
}

/// One user's claim on a proxied socket; released when dropped.
struct SocketSlot {
    sockets: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    owner: String,
}

impl SocketSlot {
    fn take(st: &GatewayState, owner: String) -> Option<SocketSlot> {
        let mut m = st.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(owner.clone()).or_insert(0);
        if *n >= st.cfg.max_sockets_per_user {
            return None;
        }
        *n += 1;
        Some(SocketSlot { sockets: st.sockets.clone(), owner })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut m = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.owner);
            }
        }
    }
}

/// What to do with a frame from the browser.
enum Verdict {
    /// Forward this text.
    Forward(String),
    /// Answer the browser with this frame instead.
    Deny(String),
}

/// Lets a `subscribe` through only for a topic the connection may read. Only frames that parse
/// as the protocol's client frames are forwarded, re-serialized from their typed form (so no
/// other JSON shape the Director might also accept slips past the check); `collection` is taken
/// off first (the Director's frames have no such field).
async fn check_frame(st: &GatewayState, owner: &str, access: &Access, text: &str) -> Verdict {
    let deny = |id: Option<String>, error: &str, message: &str| {
        Verdict::Deny(
            serde_json::to_string(&ServerFrame::Error { id, error: error.into(), message: message.into() })
                .expect("frames serialize"),
        )
    };
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(text) else {
        return deny(None, "invalid_json", "frames are JSON objects");
    };
    let collection = object.remove("collection");
    let frame: ClientFrame = match serde_json::from_value(serde_json::Value::Object(object)) {
        Ok(f) => f,
        Err(e) => return deny(None, "invalid_request", &e.to_string()),
    };
    if let ClientFrame::Subscribe { id, topic, .. } = &frame {
        let allowed = match access {
            Access::Topics(topics) => topics.contains(topic),
            Access::Credentials(auth) => match collection.as_ref().and_then(|c| c.as_str()) {
                Some(c) => readable_topic(st, c, Some(auth)).await.is_ok_and(|t| &t == topic),
                None => false,
            },
        };
        if !allowed {
            let message = match access {
                Access::Topics(_) => "this ticket does not cover that topic; ask for a ticket naming its collection",
                Access::Credentials(_) => "name a collection you may read (`collection`) whose topic this is",
            };
            return deny(id.clone(), "forbidden", message);
        }
    }
    // The gateway vouches for the check it made: the Director subscribes only with a grant.
    let frame = match frame {
        ClientFrame::Subscribe { id, topic, expires, since, .. } => {
            let grant = Some(st.grant(owner, &[&topic]));
            ClientFrame::Subscribe { id, topic, expires, grant, since }
        }
        other => other,
    };
    Verdict::Forward(serde_json::to_string(&frame).expect("frames serialize"))
}

/// Moves text frames both ways until either side ends; passes the close code on.
async fn pump(st: GatewayState, owner: String, access: Access, browser: WebSocket, director: DirectorSocket) {
    let (mut b_tx, mut b_rx) = browser.split();
    let (mut d_tx, mut d_rx) = director.split();
    // The Director sees the gateway answer its pings, not the browser: the gateway pings the
    // browser itself and ends a connection that stays silent (its pongs count), so that dead
    // browsers do not hold Director connections.
    let mut every = BROWSER_PING;
    let mut keepalive = tokio::time::interval(every);
    keepalive.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if heard.elapsed() > 2 * every + Duration::from_secs(5) {
                    let _ = b_tx.send(close(1001, "no answer to pings")).await;
                    let _ = d_tx.close().await;
                    return;
                }
                if b_tx.send(Message::Ping(Default::default())).await.is_err() {
                    let _ = d_tx.close().await;
                    return;
                }
            }
            m = b_rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    heard = tokio::time::Instant::now();
                    match check_frame(&st, &owner, &access, t.as_str()).await {
                        Verdict::Forward(text) => {
                            if d_tx.send(tungstenite::Message::Text(text.into())).await.is_err() {
                                let _ = b_tx.send(close(1001, "the push service went away")).await;
                                return;
                            }
                        }
                        Verdict::Deny(answer) => {
                            if b_tx.send(Message::Text(answer.into())).await.is_err() {
                                let _ = d_tx.close().await;
                                return;
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = b_tx.send(close(1003, "binary frames are not part of the protocol")).await;
                    let _ = d_tx.close().await;
                    return;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => heard = tokio::time::Instant::now(),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = d_tx.close().await;
                    return;
                }
            },
            m = d_rx.next() => match m {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    if let Some(secs) = hello_ping_interval(t.as_str())
                        && Duration::from_secs(secs) != every
                    {
                        every = Duration::from_secs(secs);
                        keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    }
                    if b_tx.send(Message::Text(t.as_str().into())).await.is_err() {
                        let _ = d_tx.close().await;
                        return;
                    }
                }
                Some(Ok(tungstenite::Message::Close(f))) => {
                    let (code, reason) = f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1001, String::new()));
                    let _ = b_tx.send(close(code, &reason)).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = b_tx.send(close(1001, "the push service went away")).await;
                    return;
                }
            },
        }
    }
}

/// The ping interval a Director's `hello` frame names (`None` for other frames, or 0).
fn hello_ping_interval(text: &str) -> Option<u64> {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Hello { ping_interval, .. }) if ping_interval > 0 => Some(ping_interval),
        _ => None,
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}
