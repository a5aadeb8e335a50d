//! `GET /healthz`, `GET /metrics`, and the JSON fallbacks for unknown routes and methods.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

pub(crate) async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    match st.service.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "store unavailable" })))
        }
    }
}

pub(crate) async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if !st.config.metrics {
        return Err(ApiError::NotFound);
    }
    let counts = st.service.index().counts();
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
        vapid_public_key: st.startup.vapid_key.as_ref().map(|k| k.public_key()),
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
