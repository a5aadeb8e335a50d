//! Registrations (WebDAV-Push spec §1.3): `POST push-register` to a collection creates or updates
//! a Director subscription; `DELETE` of the registration URL ends it.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use davpush_proto::{SubscribeRequest, Trigger, UnsubscribeRequest};

use crate::dav::{self, RegisterError};
use crate::error::GatewayError;
use crate::registration::{self, Registration};
use crate::state::{GatewayState, unix_now};
use crate::topic::canonical_path;
use crate::upstream::check_read;
use davpush_client::DirectorError;

pub(crate) async fn register(
    st: &GatewayState,
    parts: &Parts,
    up_path: &str,
    root: &crate::xml::Element,
) -> Result<Response, GatewayError> {
    let auth = parts.headers.get(header::AUTHORIZATION);
    check_read(st, up_path, auth).await?;
    let reg = dav::parse_push_register(root).map_err(|e| match e {
        RegisterError::NoSupportedTrigger => {
            GatewayError::precondition("no-supported-trigger", "neither content-update nor property-update requested")
        }
        RegisterError::InvalidSubscription(m) => GatewayError::precondition("invalid-subscription", m),
        RegisterError::Malformed(m) => GatewayError::BadRequest(m),
    })?;
    let canonical = canonical_path(up_path).ok_or_else(|| GatewayError::BadRequest("bad path".into()))?;
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
            GatewayError::precondition("push-not-available", "Web Push is not enabled on this server")
        }
        DirectorError::Refused { status: 400, body } => {
            GatewayError::precondition("invalid-subscription", body.message)
        }
        DirectorError::Refused { status: 409 | 429, body } => {
            GatewayError::precondition("push-not-available", body.message)
        }
        other => {
            tracing::error!(error = %other, "registration failed at the Director");
            GatewayError::Unavailable { message: "push is temporarily unavailable", retry_after: None }
        }
    })?;
    let sub = answer
        .subscriptions
        .first()
        .ok_or_else(|| GatewayError::BadGateway("the Director answered no subscription".into()))?;
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
    if created {
        st.metrics.registration("created");
    }
    let h = out.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(location.as_str()).map_err(|_| GatewayError::Internal("bad Location"))?,
    );
    h.insert(
        header::EXPIRES,
        HeaderValue::from_str(&httpdate::fmt_http_date(expires_at)).expect("IMF-fixdate is ASCII"),
    );
    Ok(out)
}

pub(crate) async fn registration_request(
    st: &GatewayState,
    req: Request,
    token: &str,
) -> Result<Response, GatewayError> {
    if req.method() != Method::DELETE {
        return Err(GatewayError::MethodNotAllowed {
            message: "a registration can only be deleted",
            allow: Some("DELETE"),
        });
    }
    let Some(reg) = Registration::decode(token, &st.cfg.topic_key) else {
        return Err(GatewayError::NotFound("no such registration"));
    };
    let auth = req.headers().get(header::AUTHORIZATION);
    check_read(st, &reg.path, auth).await?;
    if registration::owner_hash(&registration::user_key(auth.and_then(|a| a.to_str().ok()))) != reg.owner {
        return Err(GatewayError::Forbidden("this registration belongs to another user"));
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
            GatewayError::Unavailable { message: "push is temporarily unavailable", retry_after: None }
        })?;
    if removed {
        st.metrics.registration("deleted");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(GatewayError::NotFound("no such registration"))
    }
}
