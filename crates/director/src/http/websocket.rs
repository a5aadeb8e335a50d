//! `GET /ws`: authenticates, negotiates the protocol version, upgrades, and hands the socket to
//! [`crate::ws::run`].

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use davpush_proto::SUBPROTOCOL;
use serde::Deserialize;

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
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = query.as_ref().ok().and_then(|q| q.access_token.as_deref());
    auth::check_subscription(&st.startup.subscription_auth, &headers, token).await.inspect_err(|_| {
        st.service.metrics().reject("websocket_unauthorized");
    })?;
    let ws = ws.map_err(|e| ApiError::InvalidShape(format!("expected a WebSocket upgrade request: {e}")))?;
    let (any_offered, ours_offered) = {
        let mut offered =
            ws.requested_protocols().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim);
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
    Ok(ws
        .protocols([SUBPROTOCOL])
        // Our frames are ~100 bytes; library defaults (128 KiB buffers) would cost that much per
        // idle connection. Client frames are bounded by max_message_bytes.
        .read_buffer_size(128)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .on_upgrade(move |socket| {
            let task = crate::ws::run(socket, st);
            debug_assert!(std::mem::size_of_val(&task) <= crate::ws::MAX_TASK_SIZE, "connection task grew");
            task
        }))
}
