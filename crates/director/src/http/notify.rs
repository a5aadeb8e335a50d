//! `POST /notify` (Notify API).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use davpush_core::ServiceKind;
use davpush_proto::{NotifyRequest, NotifyResponse};

use super::auth;
use super::error::ApiError;
use super::json::JsonBody;
use crate::state::AppState;

pub(crate) async fn notify(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<NotifyRequest>, ApiError>,
) -> Result<(StatusCode, Json<NotifyResponse>), ApiError> {
    // Authentication first: an unauthenticated caller learns nothing about the body's validity.
    if let Err(e) = auth::check(&st.startup.notify_tokens, auth::bearer(&headers, None)) {
        st.service.metrics().reject("notify_unauthorized");
        return Err(e);
    }
    let JsonBody(req) = body?;
    let (notifications, exclude) = st.service.parse_notify(req)?;
    // During start-up a notify waits until every durable subscription is routable.
    super::ops::until_ready(&st).await?;
    let report = st.service.notify(notifications, &exclude, davpush_core::unix_now());
    let services: BTreeMap<String, u64> = ServiceKind::ALL
        .iter()
        .zip(report.addressed)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.as_str().to_owned(), n))
        .collect();
    Ok((StatusCode::ACCEPTED, Json(NotifyResponse { topics: report.topics, addressed: report.total(), services })))
}
