//! The relay's HTTP API (`docs/relay.md`): `POST /v1/push`, `POST /v1/membership`,
//! `GET /healthz`, `GET /metrics`. Every refusal is a JSON error with a stable code.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use davpush_delivery::Outcome;
use davpush_delivery::auth::{is_push_token, topic_hash};
use davpush_delivery::fcm::{Recipient, topic_name};
use davpush_delivery::membership::{Op, TokenResult};
use serde::Deserialize;
use serde_json::json;

use crate::RelayState;
use crate::keys::{Caller, Refusal};
use crate::metrics::{CallerKind, Forwarded};

/// Largest `POST /v1/push` body: a topic and a token fit many times over.
pub const MAX_PUSH_BODY: usize = 8 * 1024;
/// Longest topic, bytes (as the Director's default).
pub const MAX_TOPIC_LEN: usize = 256;

/// A refusal.
#[derive(Debug)]
pub struct RelayError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<Duration>,
    /// For `rate_limited`: `address`, `key` or `token`.
    scope: Option<&'static str>,
}

impl RelayError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RelayError { status, code, message: message.into(), field: None, retry_after: None, scope: None }
    }

    fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        RelayError::new(StatusCode::BAD_REQUEST, "invalid_request", message).field(field)
    }

    fn limited(scope: &'static str, wait: Duration) -> Self {
        RelayError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!("too many requests for this {scope}; retry later"),
            field: None,
            retry_after: Some(wait),
            scope: Some(scope),
        }
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(f) = &self.field {
            body["field"] = f.as_str().into();
        }
        if let Some(s) = self.scope {
            body["scope"] = s.into();
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"davpush-relay\""));
        }
        resp
    }
}

fn client_ip(st: &RelayState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    // Behind a trusted proxy: the last entry of the last header, the one the proxy appended.
    let forwarded = || -> Option<IpAddr> {
        let last = headers.get_all("x-forwarded-for").iter().next_back()?;
        last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
    };
    let ip = match st.trust_forwarded_for.then(forwarded).flatten() {
        Some(ip) => ip,
        None => peer.ip(),
    };
    limit_key(ip)
}

/// The key an address is limited under: IPv6 by its /64 (one subscriber usually holds a whole
/// /64, and would otherwise have 2^64 fresh buckets), IPv4 (also mapped) as it is.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// Per-address limit (before anything else), then the key.
fn admit(st: &RelayState, ip: IpAddr, headers: &HeaderMap) -> Result<Caller, RelayError> {
    if let Err(wait) = st.limit_ip.check(&ip) {
        st.metrics.refuse("rate_limited_ip");
        return Err(RelayError::limited("address", wait));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(presented) = presented else {
        st.metrics.refuse("unauthorized");
        return Err(RelayError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required: send `Authorization: Bearer <relay key>`",
        ));
    };
    match st.keys.check(presented) {
        Ok(c) => {
            let caller = match c {
                Caller::Installation(_) => "installation",
                Caller::App => "app",
            };
            st.metrics.callers.get_or_create(&CallerKind { caller }).inc();
            Ok(c)
        }
        Err(Refusal::Unknown) => {
            st.metrics.refuse("unauthorized");
            Err(RelayError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the relay key is not accepted"))
        }
        Err(Refusal::Revoked) => {
            st.metrics.refuse("revoked");
            Err(RelayError::new(StatusCode::UNAUTHORIZED, "key_revoked", "this relay key has been revoked"))
        }
    }
}

fn limit_caller(st: &RelayState, caller: &Caller, ip: IpAddr) -> Result<(), RelayError> {
    let r = match caller {
        Caller::Installation(id) => st.limit_key.check(id),
        Caller::App => st.limit_app.check(&ip),
    };
    r.map_err(|wait| {
        st.metrics.refuse("rate_limited_key");
        RelayError::limited("key", wait)
    })
}

fn json_body<T: serde::de::DeserializeOwned>(
    st: &RelayState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<T, RelayError> {
    let too_large = || {
        st.metrics.refuse("payload_too_large");
        RelayError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body exceeds {max} bytes"))
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != "application/json" {
        st.metrics.refuse("unsupported_media_type");
        return Err(RelayError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            RelayError::new(StatusCode::BAD_REQUEST, "bad_body", format!("cannot read the body: {e}"))
        }
    })?;
    if body.len() > max {
        return Err(too_large());
    }
    serde_json::from_slice(&body).map_err(|e| {
        st.metrics.refuse("invalid_request");
        let mut err = RelayError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string());
        if let Some(f) = e.to_string().split('`').nth(1).filter(|_| e.to_string().starts_with("unknown field")) {
            err = err.field(f);
        }
        err
    })
}

fn check_topic(st: &RelayState, topic: &str) -> Result<(), RelayError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || !topic.bytes().all(|b| b.is_ascii_graphic()) {
        st.metrics.refuse("invalid_request");
        return Err(RelayError::invalid(
            "topic",
            format!("`topic` must be 1–{MAX_TOPIC_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

fn check_token(st: &RelayState, field: &str, token: &str) -> Result<(), RelayError> {
    if !is_push_token(token) {
        st.metrics.refuse("invalid_request");
        return Err(RelayError::invalid(field, format!("`{field}` is not an FCM registration token")));
    }
    Ok(())
}

/// `POST /v1/push`: exactly a topic, and a token unless it goes to the key's topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The davpush topic (the only payload forwarded).
    pub topic: String,
    /// One device; absent: every device that joined the topic through this key.
    #[serde(default)]
    pub token: Option<String>,
}

pub(crate) async fn push(
    State(st): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RelayError> {
    let ip = client_ip(&st, peer, &headers);
    let caller = admit(&st, ip, &headers)?;
    let req: PushRequest = json_body(&st, &headers, body, MAX_PUSH_BODY)?;
    check_topic(&st, &req.topic)?;
    if let Some(t) = &req.token {
        check_token(&st, "token", t)?;
    }
    let namespace = match (&caller, &req.token) {
        (Caller::Installation(id), _) => format!("{}.{id}", st.topic_prefix),
        (Caller::App, Some(_)) => String::new(),
        (Caller::App, None) => {
            st.metrics.refuse("forbidden");
            return Err(RelayError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "topic pushes need an installation key; the app key allows per-token pushes only",
            )
            .field("token"));
        }
    };
    limit_caller(&st, &caller, ip)?;
    if let Some(t) = &req.token
        && let Err(wait) = st.limit_token.check(t)
    {
        st.metrics.refuse("rate_limited_token");
        return Err(RelayError::limited("token", wait));
    }
    let mut data = serde_json::Map::new();
    data.insert("topic".into(), req.topic.as_str().into());
    let collapse = topic_hash(&req.topic);
    let outcome = match &req.token {
        Some(t) => st.client.send(Recipient::Token(t), &data, st.ttl, &collapse).await,
        None => {
            let name = topic_name(&namespace, &req.topic);
            st.client.send(Recipient::Topic(&name), &data, st.ttl, &collapse).await
        }
    };
    let label =
        |outcome: &'static str| st.metrics.forwarded.get_or_create(&Forwarded { endpoint: "push", outcome }).inc();
    Ok(match outcome {
        Outcome::Delivered => {
            label("delivered");
            (StatusCode::OK, Json(json!({"status": "delivered"}))).into_response()
        }
        Outcome::Gone(reason) => {
            label("gone");
            RelayError::new(StatusCode::NOT_FOUND, "unregistered", format!("FCM: {reason}")).into_response()
        }
        Outcome::Retry { after, reason } => {
            label("retry");
            let mut e =
                RelayError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable", format!("FCM: {reason}"));
            e.retry_after = after;
            e.into_response()
        }
        Outcome::Rejected(reason) => {
            label("rejected");
            RelayError::new(StatusCode::BAD_GATEWAY, "upstream_rejected", format!("FCM: {reason}")).into_response()
        }
    })
}

/// `POST /v1/membership`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    /// `add` or `remove`.
    pub op: String,
    /// The davpush topic.
    pub topic: String,
    /// Registration tokens.
    pub tokens: Vec<String>,
}

pub(crate) async fn membership(
    State(st): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RelayError> {
    let ip = client_ip(&st, peer, &headers);
    let caller = admit(&st, ip, &headers)?;
    let Caller::Installation(id) = &caller else {
        st.metrics.refuse("forbidden");
        return Err(RelayError::new(StatusCode::FORBIDDEN, "forbidden", "topic membership needs an installation key"));
    };
    let req: MembershipRequest = json_body(&st, &headers, body, st.max_body_bytes)?;
    let op = match req.op.as_str() {
        "add" => Op::Add,
        "remove" => Op::Remove,
        _ => {
            st.metrics.refuse("invalid_request");
            return Err(RelayError::invalid("op", "`op` must be `add` or `remove`"));
        }
    };
    check_topic(&st, &req.topic)?;
    if req.tokens.is_empty() || req.tokens.len() > st.max_membership_tokens {
        st.metrics.refuse("invalid_request");
        return Err(RelayError::invalid("tokens", format!("`tokens` must hold 1–{} tokens", st.max_membership_tokens)));
    }
    for (i, t) in req.tokens.iter().enumerate() {
        check_token(&st, &format!("tokens[{i}]"), t)?;
    }
    limit_caller(&st, &caller, ip)?;
    let name = topic_name(&format!("{}.{id}", st.topic_prefix), &req.topic);
    let label = |outcome: &'static str| {
        st.metrics.forwarded.get_or_create(&Forwarded { endpoint: "membership", outcome }).inc()
    };
    match st.client.membership(op, &name, &req.tokens).await {
        Ok(results) => {
            label("delivered");
            let results: Vec<serde_json::Value> = results
                .into_iter()
                .map(|r| match r {
                    TokenResult::Ok => json!({}),
                    TokenResult::Gone(e) | TokenResult::Failed(e) => json!({"error": e}),
                })
                .collect();
            Ok((StatusCode::OK, Json(json!({"results": results}))).into_response())
        }
        Err(e) if e.transient => {
            label("retry");
            Err(RelayError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable", e.message))
        }
        Err(e) => {
            label("rejected");
            Err(RelayError::new(StatusCode::BAD_GATEWAY, "upstream_rejected", e.message))
        }
    }
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn metrics(State(st): State<Arc<RelayState>>) -> Response {
    if !st.serve_metrics {
        return RelayError::new(StatusCode::NOT_FOUND, "not_found", "no such resource").into_response();
    }
    let (active, revoked) = st.keys.counts();
    st.metrics.keys_active.set(active as i64);
    st.metrics.keys_revoked.set(revoked as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.metrics.render()).into_response()
}

pub(crate) async fn not_found() -> RelayError {
    RelayError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

#[cfg(test)]
mod limit_key_tests {
    use super::*;

    #[test]
    fn ipv6_callers_are_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        assert_eq!(limit_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
