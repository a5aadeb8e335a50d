//! What operators watch, under the gateway's reserved namespace `<public_url>.davpush/` (like
//! the browser endpoints, so that no path of the WebDAV server behind it is hidden; also under
//! `/.davpush/` when the public URL has a path prefix):
//!
//! - `GET healthz`: the gateway answers (liveness), with the last readiness it found;
//! - `GET readyz`: 200 when the upstream and the Director both answer, else 503 naming what is
//!   down. The checks are cheap (`OPTIONS` of the upstream's root, the Director's `/healthz`),
//!   run by one probe at a time and cached for [`READY_CACHE`]: a storm of probes makes at most
//!   one request to each per interval;
//! - `GET metrics`: Prometheus text ([`crate::metrics`]; `metrics = false` turns it off);
//!
//! and the access log: one line per request at `info` on the target `davpush_gateway::access`
//! (method, path, status, duration, user name), which never holds a password, an
//! `Authorization` header, a query string (WebSocket tickets travel there) or a registration
//! URL's token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

use crate::error::GatewayError;
use crate::state::GatewayState;

/// How long a readiness result is reused.
pub const READY_CACHE: Duration = Duration::from_secs(1);
/// How long one readiness check waits for the upstream or the Director.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The paths the gateway answers itself under its `.davpush/` namespace.
pub(crate) const OPS_PATHS: &[&str] = &["healthz", "readyz", "metrics"];

/// One readiness check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// What is down: `upstream`, `director`.
    pub down: Vec<&'static str>,
    /// `ok`, or why each check failed.
    pub checks: Checks,
}

/// The result of each check.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// The WebDAV server behind the gateway.
    pub upstream: String,
    /// The Director.
    pub director: String,
}

impl Readiness {
    /// Both answered.
    pub fn is_ready(&self) -> bool {
        self.down.is_empty()
    }
}

/// The cached readiness, checked by one probe at a time.
#[derive(Debug, Default)]
pub(crate) struct ReadyCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Readiness>)>>,
    /// The last result, for `/healthz` (which never checks).
    pub(crate) known: std::sync::Mutex<Option<bool>>,
}

/// Handles `rest` (the path after `.davpush/`) if it is an operations path.
pub(crate) async fn handle(st: &GatewayState, method: &Method, rest: &str) -> Result<Response, GatewayError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed { message: "method not allowed", allow: Some("GET, HEAD") });
    }
    let mut resp = match rest {
        "healthz" => {
            let ready = *st.ready.known.lock().unwrap_or_else(|e| e.into_inner());
            Json(serde_json::json!({ "status": "ok", "ready": ready })).into_response()
        }
        "readyz" => {
            let r = readiness(st).await;
            let code = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (code, Json(&*r)).into_response()
        }
        "metrics" if st.cfg.metrics => {
            // davpush_gateway_ready is as fresh as the scrape (the check is cached): without it, a
            // gateway that no load balancer probes would stay "not ready" and alert
            // (DavpushGatewayNotReady, packaging/monitoring).
            readiness(st).await;
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
                st.metrics.render(),
            )
                .into_response()
        }
        _ => return Err(GatewayError::NotFound("not found")),
    };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The readiness, checked anew when the cached one is older than [`READY_CACHE`]. Probes that
/// arrive during a check wait for its result instead of checking again.
pub async fn readiness(st: &GatewayState) -> Arc<Readiness> {
    let mut last = st.ready.last.lock().await;
    if let Some((at, r)) = last.as_ref()
        && at.elapsed() < READY_CACHE
    {
        return r.clone();
    }
    let (upstream, director) = tokio::join!(check_upstream(st), check_director(st));
    let mut down = Vec::new();
    if upstream.is_err() {
        down.push("upstream");
    }
    if director.is_err() {
        down.push("director");
    }
    let text = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    let r = Arc::new(Readiness {
        status: if down.is_empty() { "ready" } else { "unavailable" },
        down,
        checks: Checks { upstream: text(upstream), director: text(director) },
    });
    let before = st.ready.known.lock().unwrap_or_else(|e| e.into_inner()).replace(r.is_ready());
    if before != Some(r.is_ready()) {
        if r.is_ready() {
            tracing::info!("ready: the upstream and the Director answer");
        } else {
            tracing::warn!(upstream = %r.checks.upstream, director = %r.checks.director, "not ready");
        }
    }
    st.metrics.ready.set(i64::from(r.is_ready()));
    *last = Some((Instant::now(), r.clone()));
    r
}

/// `OPTIONS` of the upstream's root: any answer but a 5xx means it serves.
async fn check_upstream(st: &GatewayState) -> Result<(), String> {
    let url = st.upstream_url(st.cfg.upstream_prefix(), None);
    let resp = st.upstream.request(reqwest::Method::OPTIONS, url).timeout(CHECK_TIMEOUT).send().await;
    match resp {
        Ok(r) if r.status().is_server_error() => Err(format!("answered {}", r.status().as_u16())),
        Ok(_) => Ok(()),
        Err(e) => Err(cause(&e)),
    }
}

/// The Director's `/healthz` (it and its store answer).
async fn check_director(st: &GatewayState) -> Result<(), String> {
    let resp = st.probe.get(st.director.url("healthz")).send().await;
    match resp {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status().as_u16())),
        Err(e) => Err(cause(&e)),
    }
}

/// Why a request failed, without its URL (which may hold credentials).
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", CHECK_TIMEOUT.as_secs());
    }
    let mut innermost = None;
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        innermost = Some(s);
        next = s.source();
    }
    match innermost {
        Some(s) => format!("unreachable: {s}"),
        None => "unreachable".to_owned(),
    }
}

/// The client for the Director's `/healthz`.
pub(crate) fn probe_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .connect_timeout(CHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

/// What the access log says of a request, taken before it is handled.
#[derive(Debug)]
pub(crate) struct Access {
    started: Instant,
    method: Method,
    path: String,
    user: Option<String>,
}

impl Access {
    pub(crate) fn of(st: &GatewayState, req: &Request) -> Access {
        let path = req.uri().path();
        let prefix = st.registration_prefix();
        // A registration URL's token stands for the registration: not logged.
        let path = match path.strip_prefix(&prefix) {
            Some(token) if !token.is_empty() => format!("{prefix}***"),
            _ => path.to_owned(),
        };
        Access {
            started: Instant::now(),
            method: req.method().clone(),
            path,
            user: req.headers().get(header::AUTHORIZATION).and_then(user_name),
        }
    }

    /// Counts the request and writes its line.
    pub(crate) fn done(self, st: &GatewayState, status: StatusCode) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        st.metrics.request(self.method.as_str(), status.as_u16());
        tracing::info!(
            target: "davpush_gateway::access",
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            user = %self.user.as_deref().unwrap_or("-"),
        );
    }
}

/// The user name of Basic or Digest credentials; never the password, and nothing for other
/// schemes (bearer tokens) or Basic credentials without a `:` (a token on its own).
pub(crate) fn user_name(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?.trim();
    let (scheme, rest) = s.split_once(' ')?;
    let name = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        text.split_once(':')?.0.to_owned()
    } else if scheme.eq_ignore_ascii_case("digest") {
        digest_username(rest)?
    } else {
        return None;
    };
    let printable = !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control);
    printable.then_some(name)
}

/// `username="…"` of Digest credentials.
fn digest_username(params: &str) -> Option<String> {
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], &q[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        if key.trim().eq_ignore_ascii_case("username") {
            return Some(value.to_owned());
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn the_user_name_and_nothing_else_is_taken_from_credentials() {
        let basic = |s: &str| h(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s)));
        assert_eq!(user_name(&basic("alice:secret:with:colons")).as_deref(), Some("alice"));
        assert_eq!(user_name(&basic("a-token-without-colon")), None);
        assert_eq!(user_name(&basic(":only-a-password")), None);
        assert_eq!(user_name(&h("Bearer abcdefabcdef")), None);
        assert_eq!(user_name(&h("Basic !!!")), None);
        assert_eq!(
            user_name(&h(r#"Digest realm="x", username="bob", nonce="n", response="r""#)).as_deref(),
            Some("bob")
        );
        assert_eq!(user_name(&h(r#"Digest username=carol, realm="x""#)).as_deref(), Some("carol"));
        assert_eq!(user_name(&h(r#"Digest realm="x""#)), None);
    }
}
