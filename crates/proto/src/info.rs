//! `GET /info`: what a Director offers, for gateways and clients that discover it
//! (the draft's *Service detection*: push services, their details, authentication).

use serde::{Deserialize, Serialize};

/// Body of `GET /info` (public, no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorInfo {
    /// Protocol version (of the WebSocket protocol and the APIs).
    pub version: u32,
    /// Enabled push services, by their `push_services` names.
    pub services: Vec<String>,
    /// How the Subscription API and `/ws` authenticate: `token`, `webdav` or `none`.
    pub subscription_auth: String,
    /// The VAPID public key (uncompressed P-256, base64url) when Web Push is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapid_public_key: Option<String>,
    /// The WebSocket endpoint's path when WebSockets are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_path: Option<String>,
    /// `required` when every subscription needs a grant ([`crate::grant`]), else `off`.
    #[serde(default = "grants_off")]
    pub grants: String,
}

fn grants_off() -> String {
    "off".into()
}
