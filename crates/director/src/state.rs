//! [`AppState`]: what every handler and connection task shares. Built by [`crate::build`].

use std::sync::Arc;

use davpush_core::PushService;
use davpush_core::live::Hub;

use crate::config::Config;
use crate::startup::Startup;

/// Shared state of all handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The routing core.
    pub service: Arc<PushService>,
    /// WebSocket connections of this process.
    pub hub: Arc<Hub>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Its secrets, keys and verifier, made at start-up.
    pub startup: Arc<Startup>,
    /// The admin view, when `admin.enabled`.
    pub admin: Option<Arc<crate::http::admin::AdminView>>,
    /// The VAPID keys in use (advertised and retired), when Web Push is on; replaced when the
    /// store's keys change.
    pub vapid: Option<Arc<davpush_delivery::webpush::keyring::LiveRing>>,
    /// The push service's VAPID tokens whose signature verified (senders reuse a token for
    /// many messages; the time and audience claims are still checked on every request).
    pub vapid_tokens: Arc<crate::http::push::VerifiedTokens>,
}
