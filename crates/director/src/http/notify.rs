//! `POST /notify` (Notify API) and `GET /topics/active`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use davpush_core::{ServiceKind, Unheard};
use davpush_proto::{ActiveTopic, ActiveTopics, NotifyRequest, NotifyResponse};

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
    let now = davpush_core::unix_now();
    // Taken before delivering, asked of the other nodes after: see docs/scale-out.md.
    let here = st.service.unheard_here(&notifications, now);
    let report = st.service.notify(notifications, &exclude, now);
    let (unheard, unheard_unknown) = match st.service.unheard(here).await {
        Unheard::Known(topics) => (topics.iter().map(ToString::to_string).collect(), false),
        Unheard::Unknown => (Vec::new(), true),
    };
    let services: BTreeMap<String, u64> = ServiceKind::ALL
        .iter()
        .zip(report.addressed)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.as_str().to_owned(), n))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(NotifyResponse { topics: report.topics, addressed: report.total(), services, unheard, unheard_unknown }),
    ))
}

/// Query of `GET /topics/active`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActiveQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Largest page of `GET /topics/active`.
const MAX_PAGE: usize = 10_000;
/// Default page of `GET /topics/active`.
const DEFAULT_PAGE: usize = 1_000;

/// Where a page of `GET /topics/active` starts.
#[derive(Debug, PartialEq, Eq)]
enum Cursor {
    /// This node's index: shard, and the last topic listed in it.
    Local(usize, String),
    /// Other nodes' WebSocket topics (the presence registry's cursor; `None`: its first page).
    Remote(Option<String>),
}

impl Cursor {
    fn encode(&self) -> String {
        use base64::Engine as _;
        let raw = match self {
            Cursor::Local(shard, after) => format!("l\n{shard}\n{after}"),
            Cursor::Remote(c) => format!("r\n{}", c.as_deref().unwrap_or("")),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(s: &str) -> Option<Cursor> {
        use base64::Engine as _;
        let raw = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.splitn(3, '\n');
        match (parts.next()?, parts.next()?, parts.next()) {
            ("l", shard, Some(after)) => Some(Cursor::Local(shard.parse().ok()?, after.to_owned())),
            ("r", c, None) => Some(Cursor::Remote((!c.is_empty()).then(|| c.to_owned()))),
            _ => None,
        }
    }
}

/// `GET /topics/active` (notify token): the topics with subscribers and their counts, a page of
/// at most `limit` (default 1,000, at most 10,000) at a time, in the order of the index's shards.
/// In a cluster, the other nodes' WebSocket topics follow, one entry per node (`node`).
pub(crate) async fn active(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ActiveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ActiveTopics>, ApiError> {
    if let Err(e) = auth::check(&st.startup.notify_tokens, auth::bearer(&headers, None)) {
        st.service.metrics().reject("notify_unauthorized");
        return Err(e);
    }
    let axum::extract::Query(q) = query.map_err(|e| ApiError::InvalidShape(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let bad_cursor = || {
        ApiError::Service(davpush_core::ServiceError::Invalid {
            field: "cursor".into(),
            message: "is not a cursor of this endpoint".into(),
        })
    };
    let mut cursor = match q.cursor.as_deref() {
        None => Cursor::Local(0, String::new()),
        Some(c) => Cursor::decode(c).ok_or_else(bad_cursor)?,
    };
    super::ops::until_ready(&st).await?;
    let index = st.service.index();
    let mut page = ActiveTopics::default();
    while let Cursor::Local(shard, after) = &cursor {
        if *shard >= davpush_core::Index::SHARDS {
            cursor = Cursor::Remote(None);
            break;
        }
        let room = limit - page.topics.len();
        let found = index.topics_page(*shard, after, room, |_| true);
        let full = found.len() == room;
        let last = found.last().map(|(t, _)| t.to_string());
        page.topics.extend(found.into_iter().map(|(topic, counts)| entry(topic.to_string(), &counts, None)));
        cursor = match (full, last) {
            (true, Some(last)) => {
                page.next = Some(Cursor::Local(*shard, last).encode());
                return Ok(Json(page));
            }
            _ => Cursor::Local(shard + 1, String::new()),
        };
    }
    let Cursor::Remote(remote) = cursor else { unreachable!("the loop ends on a remote cursor") };
    let Some(presence) = st.service.presence() else { return Ok(Json(page)) };
    if page.topics.len() == limit {
        page.next = Some(Cursor::Remote(None).encode());
        return Ok(Json(page));
    }
    match presence.remote_topics(remote.as_deref(), limit - page.topics.len()).await {
        Some(r) => {
            let ws = ServiceKind::WebSocket.index();
            for (topic, node, n) in r.entries {
                let mut counts = [0usize; ServiceKind::ALL.len()];
                counts[ws] = n as usize;
                page.topics.push(entry(topic, &counts, Some(node)));
            }
            page.next = r.next.map(|c| Cursor::Remote(Some(c)).encode());
        }
        None => page.incomplete = true,
    }
    Ok(Json(page))
}

fn entry(topic: String, counts: &[usize], node: Option<String>) -> ActiveTopic {
    let services: BTreeMap<String, u64> = ServiceKind::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.as_str().to_owned(), *n as u64))
        .collect();
    ActiveTopic { topic, subscriptions: services.values().sum(), services, node }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        for c in [
            Cursor::Local(0, String::new()),
            Cursor::Local(15, "a\nb:c".into()),
            Cursor::Remote(None),
            Cursor::Remote(Some("bm9kZQow".into())),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::decode("not base64!"), None);
        assert_eq!(Cursor::decode("eA"), None, "`x` is no cursor");
    }
}
