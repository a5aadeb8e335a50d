//! The WebSocket protocol (`docs/protocol.md` §4): one client frame in, one server frame out.
//!
//! It knows no socket: the Director's connection task moves frames between the socket and
//! [`handle`], and decides alone about transport matters (pings, close codes, timeouts). So the
//! protocol is tested here without a socket. Subscriptions made over a connection belong to the
//! connection itself (its id is their client id) and end with it.

use std::sync::Arc;

use davpush_proto::{ClientFrame, PROTOCOL_VERSION, ServerFrame};

use crate::history::Position;
use crate::live::Connection;
use crate::notification::Framing;
use crate::{ClientId, PushService, ServiceKind, Target, Topic};

/// A data frame from the client, as the socket delivered it.
#[derive(Debug, Clone, Copy)]
pub enum Inbound<'a> {
    /// A text frame (UTF-8 checked by the socket).
    Text(&'a str),
    /// A binary frame: not part of the protocol.
    Binary,
}

/// The first frame of every connection; `position` is the history's newest
/// ([`PushService::history_head`]), read before the connection can subscribe.
pub fn hello(conn: &Connection, ping_interval_secs: u64, position: Option<&Position>) -> ServerFrame {
    ServerFrame::Hello {
        version: PROTOCOL_VERSION,
        connection_id: conn.id().to_owned(),
        ping_interval: ping_interval_secs,
        position: position.map(ToString::to_string),
    }
}

/// Queues for `conn` what `topics` missed since the position `since` (replayed notifications in
/// order, or a `resync` for those the history cannot account for). Call it after `conn` is
/// subscribed to `topics`, so that nothing falls between the replay and live notifications.
pub async fn replay(service: &PushService, conn: &Connection, topics: &[Topic], since: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let r = service.replay(topics, since, now_ms).await;
    let resync = (!r.resync.is_empty())
        .then(|| (crate::notification::resync_frame(conn.framing(), &r.resync, r.head.as_ref()), r.head.as_ref()));
    service.metrics().replayed(r.messages.len() as u64, r.resync.len() as u64);
    conn.replay(topics, &r.messages, resync, r.head.as_ref());
}

/// An `error` frame.
pub fn error(id: Option<String>, code: &str, message: &str) -> ServerFrame {
    ServerFrame::Error { id, error: code.into(), message: message.into() }
}

/// Answers one frame of `conn` at `now` (unix seconds).
pub async fn handle(service: &PushService, conn: &Arc<Connection>, frame: Inbound<'_>, now: i64) -> ServerFrame {
    let text = match frame {
        Inbound::Text(text) => text,
        Inbound::Binary => {
            return error(
                None,
                "unsupported_frame",
                "binary frames are not part of the protocol; send JSON text frames",
            );
        }
    };
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let code = if e.is_data() { "invalid_request" } else { "invalid_json" };
            return error(None, code, &e.to_string());
        }
    };
    // Subscriptions made over the socket belong to the connection itself.
    let client = match ClientId::parse(conn.id(), usize::MAX) {
        Ok(c) => c,
        Err(e) => return error(None, "internal", &e.to_string()),
    };
    match frame {
        ClientFrame::Ping { id } => ServerFrame::Pong { id },
        ClientFrame::PushSubscribe { id, vapid_key, push_id, secret } => {
            let Some(eps) = service.push_endpoints() else {
                return error(id, "not_enabled", "this Director is not a push service (`push_service.enabled`)");
            };
            let done = match (push_id, secret) {
                (None, None) => eps.subscribe(conn, vapid_key.as_deref(), now).await,
                (Some(push_id), Some(secret)) => eps.reattach(&push_id, &secret, conn, now).await,
                _ => return error(id, "invalid_request", "`push_id` and `secret` go together"),
            };
            match done {
                Ok(c) => ServerFrame::PushSubscribed {
                    id,
                    push_id: c.push_id,
                    endpoint: c.endpoint,
                    secret: c.secret,
                    expires: c.expires,
                },
                Err(e) => error(id, e.code(), &e.to_string()),
            }
        }
        ClientFrame::PushUnsubscribe { id, push_id, secret } => {
            let Some(eps) = service.push_endpoints() else {
                return error(id, "not_enabled", "this Director is not a push service (`push_service.enabled`)");
            };
            match eps.unsubscribe(&push_id, &secret, now).await {
                Ok(()) => ServerFrame::PushUnsubscribed { id, push_id },
                Err(e) => error(id, e.code(), &e.to_string()),
            }
        }
        ClientFrame::Subscribe { id, topic, expires, grant, since } => {
            let topic_id = match service.topic("topic", &topic) {
                Ok(t) => t,
                Err(e) => return error(id, e.code(), &e.to_string()),
            };
            if let Err(e) = service.authorize(&topic_id, grant.as_deref(), now) {
                return error(id, e.code(), &e.to_string());
            }
            if since.is_some() && conn.framing() == Framing::WebSocket {
                conn.set_framing(Framing::WebSocketPositions);
            }
            let targets = vec![Target::WebSocket(conn.clone())];
            match service.subscribe(client, topic_id.clone(), targets, expires, now).await {
                Ok(done) => {
                    let (sub, _) = &done.subscriptions[0];
                    if let Some(since) = since {
                        // Queued: written after the `subscribed` answer.
                        replay(service, conn, std::slice::from_ref(&topic_id), &since).await;
                    }
                    ServerFrame::Subscribed { id, topic, subscription_id: sub.id.to_string(), expires: done.expires }
                }
                Err(e) => error(id, e.code(), &e.to_string()),
            }
        }
        ClientFrame::Unsubscribe { id, topic } => {
            let topic_id = match service.topic("topic", &topic) {
                Ok(t) => t,
                Err(e) => return error(id, e.code(), &e.to_string()),
            };
            match service.unsubscribe(&client, Some(&topic_id), Some(&[ServiceKind::WebSocket])).await {
                Ok(_) => ServerFrame::Unsubscribed { id, topic },
                Err(e) => error(id, e.code(), &e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use davpush_proto::GrantKeys;

    use super::*;
    use crate::live::{Hub, WebSocketTransport};
    use crate::{Limits, MemoryStore, Metrics, Transports};

    const NOW: i64 = 1_000_000;

    fn service(grants: Option<GrantKeys>) -> (PushService, Arc<Hub>) {
        let hub = Arc::new(Hub::new(8, 8));
        let transports = Transports::default().with(Arc::new(WebSocketTransport::new(hub.clone())));
        let limits = Limits { max_subscriptions_per_client: 1, ..Limits::default() };
        let svc = PushService::new(Arc::new(MemoryStore::default()), transports, limits, Arc::new(Metrics::default()));
        (
            match grants {
                Some(keys) => svc.with_grants(keys),
                None => svc,
            },
            hub,
        )
    }

    fn code(frame: &ServerFrame) -> &str {
        match frame {
            ServerFrame::Error { error, .. } => error,
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn subscribe_unsubscribe_and_ping_are_answered_with_their_ids() {
        let (svc, hub) = service(None);
        let conn = hub.open(NOW).unwrap();
        assert!(matches!(hello(&conn, 30, None), ServerFrame::Hello { connection_id, ping_interval: 30, .. }
            if connection_id == conn.id()));
        let text = Inbound::Text(r#"{"type":"subscribe","id":"1","topic":"t","expires":0}"#);
        let ServerFrame::Subscribed { id, topic, subscription_id, expires } = handle(&svc, &conn, text, NOW).await
        else {
            panic!("not subscribed")
        };
        assert_eq!((id.as_deref(), topic.as_str()), (Some("1"), "t"));
        assert_eq!(expires, NOW + svc.limits().min_expiry, "the requested expiry is clamped");
        assert_eq!(conn.subscription_count(), 1);
        assert_eq!(
            svc.index().get(&crate::SubscriptionId::parse(&subscription_id, 64).unwrap()).unwrap().client_id.as_str(),
            conn.id()
        );

        let ping = handle(&svc, &conn, Inbound::Text(r#"{"type":"ping","id":"p"}"#), NOW).await;
        assert_eq!(ping, ServerFrame::Pong { id: Some("p".into()) });
        let text = Inbound::Text(r#"{"type":"unsubscribe","id":"2","topic":"t"}"#);
        let done = handle(&svc, &conn, text, NOW).await;
        assert_eq!(done, ServerFrame::Unsubscribed { id: Some("2".into()), topic: "t".into() });
        assert_eq!(conn.subscription_count(), 0);
        assert!(svc.index().is_empty());
        let again = handle(&svc, &conn, text, NOW).await;
        assert_eq!(code(&again), "not_found");
    }

    #[tokio::test]
    async fn bad_frames_get_error_frames_with_the_services_codes() {
        let (svc, hub) = service(None);
        let conn = hub.open(NOW).unwrap();
        let answer = |text: &'static str| handle(&svc, &conn, Inbound::Text(text), NOW);
        assert_eq!(code(&answer("{").await), "invalid_json");
        assert_eq!(code(&answer(r#"{"type":"subscribe"}"#).await), "invalid_request");
        assert_eq!(code(&handle(&svc, &conn, Inbound::Binary, NOW).await), "unsupported_frame");
        let ServerFrame::Error { id, error, message } = answer(r#"{"type":"subscribe","id":"x","topic":""}"#).await
        else {
            panic!("an empty topic is refused")
        };
        assert_eq!((id.as_deref(), error.as_str()), (Some("x"), "invalid_request"));
        assert!(message.starts_with("`topic`"), "{message}");
        answer(r#"{"type":"subscribe","topic":"a"}"#).await;
        assert_eq!(code(&answer(r#"{"type":"subscribe","topic":"b"}"#).await), "too_many_subscriptions");
    }

    #[tokio::test]
    async fn subscriptions_need_a_grant_for_their_topic_when_grants_are_required() {
        let keys = GrantKeys::parse(&GrantKeys::generate_line()).unwrap();
        let (svc, hub) = service(Some(keys.clone()));
        let conn = hub.open(NOW).unwrap();
        let subscribe = |topic: &str, grant: Option<String>| {
            let frame = ClientFrame::Subscribe { id: None, topic: topic.into(), expires: None, grant, since: None };
            serde_json::to_string(&frame).unwrap()
        };
        let text = subscribe("t", None);
        assert_eq!(code(&handle(&svc, &conn, Inbound::Text(&text), NOW).await), "grant_required");
        let text = subscribe("t", Some(keys.sign(["other"], NOW + 60)));
        assert_eq!(code(&handle(&svc, &conn, Inbound::Text(&text), NOW).await), "grant_invalid");
        let text = subscribe("t", Some(keys.sign(["t"], NOW + 60)));
        assert!(matches!(handle(&svc, &conn, Inbound::Text(&text), NOW).await, ServerFrame::Subscribed { .. }));
    }
}
