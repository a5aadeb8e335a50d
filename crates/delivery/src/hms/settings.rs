//! HMS Push Kit settings.

use std::time::Duration;

use crate::engine::EngineSettings;
use crate::membership::MembershipSettings;

/// HMS settings.
#[derive(Debug, Clone)]
pub struct HmsSettings {
    /// The app id (`/v1/{app_id}/messages:send`).
    pub app_id: String,
    /// The OAuth client id (usually the app id).
    pub client_id: String,
    /// Topic mode: one message per topic (HMS topic subscription) instead of one per token.
    pub topic_mode: bool,
    /// Push API base (`https://push-api.cloud.huawei.com`).
    pub base_url: String,
    /// OAuth token endpoint (`https://oauth-login.cloud.huawei.com/oauth2/v3/token`).
    pub token_url: String,
    /// Prefix of HMS topic names.
    pub topic_prefix: String,
    /// `android.urgency`: `HIGH` or `NORMAL`.
    pub urgency: String,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Engine limits.
    pub engine: EngineSettings,
    /// Topic-membership batching.
    pub membership: MembershipSettings,
}

impl Default for HmsSettings {
    fn default() -> Self {
        HmsSettings {
            app_id: String::new(),
            client_id: String::new(),
            topic_mode: false,
            base_url: "https://push-api.cloud.huawei.com".into(),
            token_url: "https://oauth-login.cloud.huawei.com/oauth2/v3/token".into(),
            topic_prefix: "davpush".into(),
            urgency: "HIGH".into(),
            timeout: Duration::from_secs(30),
            engine: EngineSettings::default(),
            membership: MembershipSettings::default(),
        }
    }
}
