//! The WebSocket protocol's request handling: one client frame in, one server frame out.
//! No socket here, so it is tested without one.

use std::sync::Arc;

use davpush_core::live::Connection;
use davpush_core::{ClientId, ServiceKind, Target};
use davpush_proto::{ClientFrame, ServerFrame};

use crate::app::AppState;
use crate::http::error::service_code;

/// An `error` frame.
pub(crate) fn error(id: Option<String>, code: &str, message: &str) -> ServerFrame {
    ServerFrame::Error { id, error: code.into(), message: message.into() }
}

/// Handles one text frame of `conn`.
pub(crate) async fn handle(st: &AppState, conn: &Arc<Connection>, text: &str) -> ServerFrame {
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let code = if e.is_data() { "invalid_request" } else { "invalid_json" };
            return error(None, code, &e.to_string());
        }
    };
    let svc = &st.service;
    // Subscriptions made over the socket belong to the connection itself.
    let client = match ClientId::parse(conn.id(), usize::MAX) {
        Ok(c) => c,
        Err(e) => return error(None, "internal", &e.to_string()),
    };
    match frame {
        ClientFrame::Ping { id } => ServerFrame::Pong { id },
        ClientFrame::Subscribe { id, topic, expires, grant } => {
            let topic_id = match svc.topic("topic", &topic) {
                Ok(t) => t,
                Err(e) => return error(id, service_code(&e), &e.to_string()),
            };
            if let Err(e) = svc.authorize(&topic_id, grant.as_deref(), davpush_core::unix_now()) {
                return error(id, service_code(&e), &e.to_string());
            }
            let targets = vec![Target::WebSocket(conn.clone())];
            match svc.subscribe(client, topic_id, targets, expires, davpush_core::unix_now()).await {
                Ok(done) => {
                    let (sub, _) = &done.subscriptions[0];
                    ServerFrame::Subscribed { id, topic, subscription_id: sub.id.to_string(), expires: done.expires }
                }
                Err(e) => error(id, service_code(&e), &e.to_string()),
            }
        }
        ClientFrame::Unsubscribe { id, topic } => {
            let topic_id = match svc.topic("topic", &topic) {
                Ok(t) => t,
                Err(e) => return error(id, service_code(&e), &e.to_string()),
            };
            match svc.unsubscribe(&client, Some(&topic_id), Some(&[ServiceKind::WebSocket])).await {
                Ok(_) => ServerFrame::Unsubscribed { id, topic },
                Err(e) => error(id, service_code(&e), &e.to_string()),
            }
        }
    }
}
