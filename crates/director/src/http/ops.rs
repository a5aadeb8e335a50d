//! `GET /healthz`, `GET /metrics`, and the JSON fallbacks for unknown routes and methods.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`: alive (the store answers). `ready` tells whether the durable subscriptions
/// are loaded (see `/readyz`).
pub(crate) async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    match st.service.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok", "ready": st.service.is_ready() }))),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "store unavailable" })))
        }
    }
}

/// `GET /readyz`: 200 once the durable subscriptions are loaded from the store, 503 before.
pub(crate) async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    if st.service.is_ready() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ready", "subscriptions": st.service.index().len() })))
    } else {
        let svc = &st.service;
        let body =
            serde_json::json!({ "status": "loading", "loaded": svc.index().len(), "waiting": svc.waiting_for_ready() });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

/// Waits (at most 3/4 of `server.request_timeout_secs`) until the durable subscriptions are
/// loaded; after that, 503 `unavailable`: the caller retries, nothing is skipped silently.
pub(crate) async fn until_ready(st: &AppState) -> Result<(), ApiError> {
    if st.service.is_ready() {
        return Ok(());
    }
    let bound = std::time::Duration::from_secs(st.config.request_timeout_secs).mul_f64(0.75);
    if st.service.until_ready(bound).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable("the Director is still loading its subscriptions; try again".into()))
    }
}

pub(crate) async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if !st.config.metrics {
        return Err(ApiError::NotFound);
    }
    let counts = st.service.index().counts();
    if let Some(wal) = st.service.store().wal_bytes() {
        st.service.metrics().store_wal_bytes.set(wal.min(i64::MAX as u64) as i64);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.service.metrics().render(&counts)))
}

/// `GET /info`: public facts about this Director, for discovery.
pub(crate) async fn info(State(st): State<AppState>) -> Json<davpush_proto::DirectorInfo> {
    use crate::config::SubscriptionAuth;
    let services: Vec<String> = st.service.transports().enabled().map(|k| k.as_str().to_owned()).collect();
    let websocket = st.config.websocket.enabled;
    Json(davpush_proto::DirectorInfo {
        version: davpush_proto::PROTOCOL_VERSION,
        services,
        subscription_auth: match st.startup.subscription_auth {
            SubscriptionAuth::Tokens(_) => "token",
            SubscriptionAuth::Webdav(..) => "webdav",
            SubscriptionAuth::None => "none",
        }
        .into(),
        vapid_public_key: st.vapid.as_ref().map(|k| k.get().current_public_key()),
        websocket_path: websocket.then(|| "/ws".to_owned()),
        grants: if st.startup.grant_keys.is_some() { "required" } else { "off" }.into(),
    })
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// axum answers a known path with a wrong method by an empty 405 that carries `Allow`; give it
/// our JSON body and keep the headers.
pub(crate) async fn json_405(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    let mut json = ApiError::MethodNotAllowed.into_response();
    *json.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            json.headers_mut().insert(k, v.clone());
        }
    }
    json
}
