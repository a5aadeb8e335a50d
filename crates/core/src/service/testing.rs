//! Fakes shared by the service's unit tests.

use std::sync::{Arc, Mutex};

use crate::transport::{Dispatched, TargetError, Transport};
use crate::{PushMessage, RemoteTarget, ServiceKind, Subscription, Target};

/// A topic-mode transport that records membership changes.
#[derive(Default)]
pub(super) struct Members {
    pub(super) log: Mutex<Vec<(&'static str, String, String)>>,
}

#[async_trait::async_trait]
impl Transport for Members {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Fcm
    }
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        Ok(Target::Remote(RemoteTarget::new(ServiceKind::Fcm, params.to_string())))
    }
    fn dispatch(&self, _m: &Arc<PushMessage>, _r: &[Arc<Subscription>]) -> Dispatched {
        Dispatched::default()
    }
    fn tracks_membership(&self) -> bool {
        true
    }
    async fn added(&self, sub: &Arc<Subscription>) {
        self.log.lock().unwrap().push(("add", sub.topic.to_string(), sub.target.to_json()));
    }
    async fn removed(&self, sub: &Arc<Subscription>) {
        self.log.lock().unwrap().push(("remove", sub.topic.to_string(), sub.target.to_json()));
    }
}

/// A transport of `kind` (targets: their parameters' JSON) that records every recipient it is
/// handed: its client id and target.
pub(super) struct Recording {
    pub(super) kind: ServiceKind,
    pub(super) log: Mutex<Vec<(String, String)>>,
    /// Each recipient's client id and the message's sync-token, in the order handed over.
    pub(super) tokens: Mutex<Vec<(String, Option<String>)>>,
}

impl Recording {
    pub(super) fn new(kind: ServiceKind) -> Arc<Self> {
        Arc::new(Recording { kind, log: Mutex::default(), tokens: Mutex::default() })
    }

    /// What was handed over so far, sorted.
    pub(super) fn taken(&self) -> Vec<(String, String)> {
        let mut log = self.log.lock().unwrap().clone();
        log.sort();
        log
    }
}

#[async_trait::async_trait]
impl Transport for Recording {
    fn kind(&self) -> ServiceKind {
        self.kind
    }
    fn parse_target(&self, params: &serde_json::Value) -> Result<Target, TargetError> {
        Ok(Target::Remote(RemoteTarget::new(self.kind, params.to_string())))
    }
    fn dispatch(&self, m: &Arc<PushMessage>, r: &[Arc<Subscription>]) -> Dispatched {
        let mut log = self.log.lock().unwrap();
        let mut tokens = self.tokens.lock().unwrap();
        for s in r {
            assert!(!s.target.is_stored_only(), "handed over with its target");
            log.push((s.client_id.to_string(), s.target.to_json()));
            tokens.push((s.client_id.to_string(), m.notification.sync_token.clone()));
        }
        Dispatched { queued: r.len() as u64, ..Dispatched::default() }
    }
}
