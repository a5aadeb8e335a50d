//! `POST /subscribe` and `POST /unsubscribe` (Subscription API).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use davpush_core::{ServiceError, ServiceKind};
use davpush_proto::{SubscribeRequest, SubscribeResponse, SubscriptionInfo, UnsubscribeRequest, UnsubscribeResponse};

use super::auth;
use super::error::ApiError;
use super::json::JsonBody;
use crate::state::AppState;

async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<davpush_core::Principal, ApiError> {
    auth::check_subscription(&st.startup.subscription_auth, headers, None).await.inspect_err(|_| {
        st.service.metrics().reject("subscription_unauthorized");
    })
}

pub(crate) async fn subscribe(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<SubscribeRequest>, ApiError>,
) -> Result<(StatusCode, Json<SubscribeResponse>), ApiError> {
    let principal = authenticate(&st, &headers).await?;
    let JsonBody(req) = body?;
    let svc = &st.service;
    let client = svc.client_id(&req.client_id)?;
    let topic = svc.topic("topic", &req.topic)?;
    // Counted under the user the grant names (a gateway's users share its token), else the token.
    let principal = svc.authorize(&topic, req.grant.as_deref(), davpush_core::unix_now())?.unwrap_or(principal);
    let targets = svc.parse_targets(&req.push_services).await?;
    let triggers = match &req.triggers {
        None => davpush_core::Triggers::ALL,
        Some(list) => davpush_core::Triggers::from_list(list).ok_or_else(|| ServiceError::Invalid {
            field: "triggers".into(),
            message: "must name at least one of `content`, `property`".into(),
        })?,
    };
    super::ops::until_ready(&st).await?;
    let now = davpush_core::unix_now();
    let done = svc.subscribe_with(client, topic, targets, req.expires, triggers, Some(principal), now).await?;
    let created = done.subscriptions.iter().any(|(_, c)| *c);
    let subscriptions = done
        .subscriptions
        .iter()
        .map(|(s, created)| SubscriptionInfo {
            id: s.id.to_string(),
            push_service: s.kind().as_str().to_owned(),
            created: *created,
        })
        .collect();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(SubscribeResponse { expires: done.expires, subscriptions })))
}

pub(crate) async fn unsubscribe(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<UnsubscribeRequest>, ApiError>,
) -> Result<Json<UnsubscribeResponse>, ApiError> {
    authenticate(&st, &headers).await?;
    let JsonBody(req) = body?;
    let svc = &st.service;
    let client = svc.client_id(&req.client_id)?;
    let topic = req.topic.as_deref().map(|t| svc.topic("topic", t)).transpose()?;
    let kinds = req
        .push_services
        .as_ref()
        .map(|names| {
            names.iter().map(|n| n.parse::<ServiceKind>().map_err(ServiceError::from)).collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    super::ops::until_ready(&st).await?;
    let removed = svc.unsubscribe(&client, topic.as_ref(), kinds.as_deref()).await?;
    Ok(Json(UnsubscribeResponse { removed }))
}
