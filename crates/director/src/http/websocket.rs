//! `GET /ws`: authenticates, negotiates the protocol version, upgrades, and hands the socket to
//! [`crate::ws::run`].
//!
//! The upgrade is answered here rather than by axum's `WebSocketUpgrade`, whose socket hides
//! the TCP stream: the connection's task needs the stream itself, so that the fan-out can write
//! notifications straight into it ([`crate::ws::gate`]). The checks are RFC 6455 §4.2.1's, in
//! the order (and with the messages) axum uses.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use davpush_proto::SUBPROTOCOL;
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use tungstenite::protocol::WebSocketConfig;

use super::auth;
use super::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    access_token: Option<String>,
}

pub(crate) async fn upgrade(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let token = query.as_ref().ok().and_then(|q| q.access_token.as_deref());
    auth::check_subscription(&st.startup.subscription_auth, &headers, token).await.inspect_err(|_| {
        st.service.metrics().reject("websocket_unauthorized");
    })?;
    let (key, on_upgrade) = handshake(&mut request)
        .map_err(|e| ApiError::InvalidShape(format!("expected a WebSocket upgrade request: {e}")))?;
    let (any_offered, ours_offered) = {
        let mut offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        let first = offered.next();
        (first.is_some(), first == Some(SUBPROTOCOL) || offered.any(|p| p == SUBPROTOCOL))
    };
    if any_offered && !ours_offered {
        return Err(ApiError::UnsupportedVersion(SUBPROTOCOL));
    }
    let cfg = &st.config.websocket;
    if st.hub.len() >= cfg.max_connections {
        return Err(ApiError::Unavailable(format!(
            "the server has reached its limit of {} WebSocket connections",
            cfg.max_connections
        )));
    }
    // Our frames are ~100 bytes; library defaults (128 KiB buffers) would cost that much per
    // idle connection. Client frames are bounded by max_message_bytes.
    let config = WebSocketConfig::default()
        .read_buffer_size(128)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes));
    tokio::spawn(crate::ws::accept(on_upgrade, config, st));
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()))
        .body(Body::empty())
        .expect("a valid response");
    if ours_offered {
        response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    Ok(response)
}

/// Checks an HTTP/1.1 upgrade request (RFC 6455 §4.2.1) and takes its `Sec-WebSocket-Key` and
/// the connection's upgrade.
fn handshake(request: &mut Request) -> Result<(HeaderValue, OnUpgrade), &'static str> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err("Request method must be `GET`");
    }
    let has = |name: HeaderName, token: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains(token))
    };
    let is = |name: HeaderName, value: &str| {
        headers.get(name).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    if !has(header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'");
    }
    if !is(header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'");
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or("`Sec-WebSocket-Key` header missing")?.clone();
    if !is(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err("`Sec-WebSocket-Version` header did not include '13'");
    }
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or("WebSocket request couldn't be upgraded since no upgrade state was present")?;
    Ok((key, on_upgrade))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let b64 = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
    HeaderValue::from_str(&b64).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_is_rfc_6455s() {
        // RFC 6455 §1.3.
        assert_eq!(super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
