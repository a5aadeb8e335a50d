//! Every error the HTTP APIs answer with, mapped to a status and a JSON body in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use davpush_core::ServiceError;
use davpush_core::index::LimitReached;
use davpush_proto::ErrorBody;

/// An API error. Handlers return `Result<_, ApiError>` and use `?`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` (or `access_token`) was given.
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// A token was given but is not accepted.
    #[error("the bearer token is not accepted")]
    BadToken,
    /// The body is not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds the limit.
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The body could not be read.
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    /// The body is not well-formed JSON.
    #[error("malformed JSON: {0}")]
    InvalidJson(String),
    /// The JSON does not have the expected shape (unknown or missing field, wrong type).
    #[error("{0}")]
    InvalidShape(String),
    /// Unknown route.
    #[error("no such resource")]
    NotFound,
    /// Known route, wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A WebSocket client asked only for protocol versions we do not speak.
    #[error("none of the requested WebSocket protocols is supported; this server speaks {0}")]
    UnsupportedVersion(&'static str),
    /// The server is at a capacity limit.
    #[error("{0}")]
    Unavailable(String),
    /// The domain refused the request.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidShape(_)
            | ApiError::UnsupportedVersion(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Service(e) => match e {
                ServiceError::Invalid { .. }
                | ServiceError::UnknownService(_)
                | ServiceError::ServiceDisabled(_)
                | ServiceError::InvalidTarget { .. } => StatusCode::BAD_REQUEST,
                ServiceError::LimitReached(LimitReached::PerClient(_)) => StatusCode::CONFLICT,
                ServiceError::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::Grant(_) => StatusCode::FORBIDDEN,
                ServiceError::NotFound => StatusCode::NOT_FOUND,
                ServiceError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// The stable error code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken | ApiError::BadToken => "unauthorized",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::BadBody(_) => "bad_body",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidShape(_) => "invalid_request",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UnsupportedVersion(_) => "unsupported_version",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Service(e) => e.code(),
        }
    }

    fn body(&self) -> ErrorBody {
        let message = match self {
            // Never echo store internals to clients; they are logged instead.
            ApiError::Service(ServiceError::Store(_)) => "the subscription store is unavailable, try again".into(),
            other => other.to_string(),
        };
        let field = match self {
            ApiError::Service(e) => e.field(),
            _ => None,
        };
        ErrorBody { error: self.code().into(), message, field }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Service(ServiceError::Store(e)) = &self {
            tracing::error!(error = %e, "store failure while handling a request");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        match self {
            ApiError::MissingToken => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"davpush\""));
            }
            ApiError::BadToken => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"davpush\", error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        resp
    }
}
