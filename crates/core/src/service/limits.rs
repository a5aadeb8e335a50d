//! [`Limits`] on clients and application servers, and the checks of input against them.

use crate::index::LimitReached;
use crate::{ClientId, PushService, ServiceError, Topic};

/// Limits the Director enforces on clients and application servers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest topic, bytes.
    pub max_topic_len: usize,
    /// Longest client id, bytes.
    pub max_client_id_len: usize,
    /// Subscriptions one client (or one WebSocket connection) may hold.
    pub max_subscriptions_per_client: usize,
    /// Subscriptions one principal (subscription token or WebDAV user) may make, counted
    /// from what this process has seen since it started.
    pub max_subscriptions_per_principal: usize,
    /// Subscriptions this Director holds at most, in total.
    pub max_subscriptions: usize,
    /// Topics in one notify request.
    pub max_topics_per_notify: usize,
    /// Ids in one notify request's `exclude`.
    pub max_exclude: usize,
    /// Longest sync-token, bytes.
    pub max_sync_token_len: usize,
    /// Expiry granted when the client asks for none, seconds from now.
    pub default_expiry: i64,
    /// Shortest expiry granted, seconds from now.
    pub min_expiry: i64,
    /// Longest expiry granted, seconds from now.
    pub max_expiry: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_topic_len: 256,
            max_client_id_len: 256,
            max_subscriptions_per_client: 1000,
            max_subscriptions_per_principal: 10_000,
            max_subscriptions: 1_000_000,
            max_topics_per_notify: 1000,
            max_exclude: 100,
            max_sync_token_len: 1024,
            default_expiry: 3 * 24 * 3600,
            min_expiry: 3600,
            max_expiry: 30 * 24 * 3600,
        }
    }
}

impl Limits {
    /// The expiry granted at `now` for a requested one.
    pub fn grant_expiry(&self, requested: Option<i64>, now: i64) -> i64 {
        match requested {
            None => now + self.default_expiry,
            Some(t) => t.clamp(now + self.min_expiry, now + self.max_expiry),
        }
    }
}

impl PushService {
    /// Counts a subscription refused for a limit (`davpush_requests_rejected_total{reason}`).
    pub(super) fn refused(&self, limit: LimitReached) -> ServiceError {
        self.metrics.reject(match limit {
            LimitReached::PerClient(_) => "subscription_limit_per_client",
            LimitReached::PerPrincipal(_) => "subscription_limit_per_token",
            LimitReached::Total(_) => "subscription_limit_total",
        });
        limit.into()
    }

    /// Validates a topic.
    pub fn topic(&self, field: &str, s: &str) -> Result<Topic, ServiceError> {
        Topic::parse(s, self.limits.max_topic_len).map_err(|e| ServiceError::invalid(field, e))
    }

    /// Validates a client id.
    pub fn client_id(&self, s: &str) -> Result<ClientId, ServiceError> {
        ClientId::parse(s, self.limits.max_client_id_len).map_err(|e| ServiceError::invalid("client_id", e))
    }
}
