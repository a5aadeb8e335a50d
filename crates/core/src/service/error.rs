//! [`ServiceError`]: why the service refused a request, with the request field it is about and
//! the stable error code clients see (in JSON bodies and WebSocket `error` frames alike).

use davpush_proto::GrantError;

use crate::ServiceKind;
use crate::ids::IdError;
use crate::index::LimitReached;
use crate::kind::UnknownService;
use crate::store::StoreError;
use crate::transport::TargetError;

/// Why a request was refused. Each variant maps to one HTTP status in the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field is malformed.
    #[error("`{field}` {message}")]
    Invalid {
        /// Which field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// `push_services` names a service this software does not know.
    #[error("{0}")]
    UnknownService(#[from] UnknownService),
    /// `push_services` names a service that is not enabled on this Director.
    #[error("push service `{0}` is not enabled on this Director")]
    ServiceDisabled(ServiceKind),
    /// A service's parameters were refused.
    #[error("push_services.{service}: {source}")]
    InvalidTarget {
        /// Which service.
        service: ServiceKind,
        /// Why.
        source: TargetError,
    },
    /// The client holds as many subscriptions as allowed.
    #[error(transparent)]
    LimitReached(#[from] LimitReached),
    /// The subscriber did not prove that it may read the topic's collection (no grant, or one
    /// that is invalid, expired or for other topics).
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// Nothing matched (unsubscribe).
    #[error("no matching subscription")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub(super) fn invalid(field: impl Into<String>, e: IdError) -> Self {
        ServiceError::Invalid { field: field.into(), message: e.to_string() }
    }

    /// The stable error code clients see: `error` of a JSON error body and of a WebSocket
    /// `error` frame alike.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Invalid { .. } => "invalid_request",
            ServiceError::UnknownService(_) => "unknown_push_service",
            ServiceError::ServiceDisabled(_) => "push_service_disabled",
            ServiceError::InvalidTarget { .. } => "invalid_push_service",
            ServiceError::LimitReached(LimitReached::PerClient(_)) => "too_many_subscriptions",
            ServiceError::LimitReached(LimitReached::PerPrincipal(_)) => "too_many_subscriptions_per_token",
            ServiceError::LimitReached(LimitReached::Total(_)) => "too_many_subscriptions_in_total",
            ServiceError::Grant(GrantError::Missing) => "grant_required",
            ServiceError::Grant(_) => "grant_invalid",
            ServiceError::NotFound => "not_found",
            ServiceError::Store(_) => "unavailable",
        }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<String> {
        match self {
            ServiceError::Invalid { field, .. } => Some(field.clone()),
            ServiceError::UnknownService(u) => Some(format!("push_services.{}", u.0)),
            ServiceError::ServiceDisabled(k) => Some(format!("push_services.{k}")),
            ServiceError::InvalidTarget { service, source } => Some(match source.field {
                Some(f) => format!("push_services.{service}.{f}"),
                None => format!("push_services.{service}"),
            }),
            ServiceError::Grant(_) => Some("grant".into()),
            _ => None,
        }
    }
}
