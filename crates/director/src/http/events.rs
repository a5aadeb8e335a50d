//! `GET /events`: the WebSocket push service as Server-Sent Events (`docs/protocol.md` §4.5),
//! for browsers, `curl` and proxies that do not pass WebSockets. Authenticates as `/ws` does,
//! checks a grant for every topic, subscribes a connection of the hub to them, queues what the
//! client missed since its `Last-Event-ID`, and hands the stream to [`crate::sse::run`].

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use davpush_core::live::CloseReason;
use davpush_core::{ClientId, Framing, Target, Topic};

use super::auth;
use super::error::ApiError;
use crate::state::AppState;

/// How long a browser waits before reconnecting a lost stream (SSE `retry:`), milliseconds.
const RETRY_MS: u64 = 1000;

/// What the query names.
#[derive(Debug, Default)]
struct EventsQuery {
    topics: Vec<String>,
    grants: Vec<String>,
    access_token: Option<String>,
    last_event_id: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<EventsQuery, ApiError> {
    let mut q = EventsQuery::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "topic" => q.topics.push(v.into_owned()),
            "grant" => q.grants.push(v.into_owned()),
            "access_token" => q.access_token = Some(v.into_owned()),
            "lastEventId" => q.last_event_id = Some(v.into_owned()),
            other => return Err(ApiError::InvalidShape(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(q)
}

/// The handler: every answer, errors included, may be read by a page of any origin (the
/// token is in the request, never a cookie: as with WebSockets, which know no CORS).
pub(crate) async fn events(State(st): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let mut resp = match open(st, &headers, raw.as_deref()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

async fn open(st: AppState, headers: &HeaderMap, raw: Option<&str>) -> Result<Response, ApiError> {
    let q = parse_query(raw)?;
    auth::check_subscription(&st.startup.subscription_auth, headers, q.access_token.as_deref()).await.inspect_err(
        |_| {
            st.service.metrics().reject("websocket_unauthorized");
        },
    )?;
    let service = &st.service;
    let max = service.limits().max_subscriptions_per_client;
    if q.topics.is_empty() {
        return Err(ApiError::InvalidShape("name at least one `topic`".into()));
    }
    if q.topics.len() > max {
        return Err(ApiError::InvalidShape(format!("at most {max} topics per stream (subscription.max_per_client)")));
    }
    let now = davpush_core::unix_now();
    let mut topics: Vec<Topic> = Vec::with_capacity(q.topics.len());
    for t in &q.topics {
        let topic = service.topic("topic", t)?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    // A topic is not a capability (§3.3): each needs a grant naming it; one grant may name all.
    for topic in &topics {
        service.authorize_any(topic, &q.grants, now)?;
    }
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.last_event_id)
        .filter(|s| !s.trim().is_empty());
    super::ops::until_ready(&st).await?;
    // Read before subscribing: whatever comes after it is either delivered live or replayed.
    let head = service.history_head().await;
    let conn = st.hub.open(now).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    conn.set_framing(Framing::Sse);
    let client = ClientId::parse(conn.id(), usize::MAX).map_err(|e| ApiError::InvalidShape(e.to_string()))?;
    let mut expires = i64::MAX;
    for topic in &topics {
        let targets = vec![Target::WebSocket(conn.clone())];
        match service.subscribe(client.clone(), topic.clone(), targets, Some(i64::MAX), now).await {
            Ok(done) => expires = expires.min(done.expires),
            Err(e) => {
                conn.close(CloseReason::Shutdown);
                service.connection_closed(&conn);
                st.hub.remove(conn.id());
                return Err(e.into());
            }
        }
    }
    // A first stream starts at the head: the browser then resumes from there even if no
    // notification came before it lost the connection (an `id:` without `data:` only sets
    // the browser's last event id).
    let first = match (&head, &since) {
        (Some(h), None) => format!("retry: {RETRY_MS}\nid: {h}\n\n"),
        _ => format!("retry: {RETRY_MS}\n\n"),
    };
    if let Some(since) = since.or_else(|| head.as_ref().map(ToString::to_string)) {
        davpush_core::session::replay(service, &conn, &topics, &since).await;
    }
    let body = crate::sse::run(conn, st.clone(), first, expires);
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_grants_repeat_and_unknown_parameters_are_refused() {
        let q = parse_query(Some("topic=a&topic=b%20c&grant=g&lastEventId=e-1-2&access_token=t")).unwrap();
        assert_eq!(q.topics, ["a", "b c"]);
        assert_eq!(q.grants, ["g"]);
        assert_eq!(q.last_event_id.as_deref(), Some("e-1-2"));
        assert!(parse_query(Some("topics=a")).is_err());
        assert!(parse_query(None).unwrap().topics.is_empty());
    }
}
