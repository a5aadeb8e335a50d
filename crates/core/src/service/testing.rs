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
