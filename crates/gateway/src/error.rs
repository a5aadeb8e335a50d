//! The gateway's one error: every refusal it answers itself, mapped to a status, headers and a
//! body (plain text, or the WebDAV-Push spec's `DAV:error` XML for preconditions) in one place.
//! Handlers return `Result<Response, GatewayError>` and use `?`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A refusal of the gateway's own (the upstream's answers are passed through as they are).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401, with the upstream's challenges (none: the gateway's own refusal).
    #[error("{message}")]
    Unauthorized {
        /// What is wrong.
        message: &'static str,
        /// `WWW-Authenticate` values to pass on.
        challenges: Vec<HeaderValue>,
    },
    /// 403, plain.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 403 with a `DAV:error` body naming a WebDAV-Push precondition (spec §1.3).
    #[error("{description}")]
    Precondition {
        /// `push-not-available`, `invalid-subscription`, `no-supported-trigger`.
        precondition: &'static str,
        /// Human-readable detail.
        description: String,
    },
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405, with `Allow` when one method is.
    #[error("{message}")]
    MethodNotAllowed {
        /// What is wrong.
        message: &'static str,
        /// The one allowed method, if any.
        allow: Option<&'static str>,
    },
    /// 413.
    #[error("{0}")]
    PayloadTooLarge(&'static str),
    /// 429, with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        /// What is wrong.
        message: &'static str,
        /// Seconds.
        retry_after: u32,
    },
    /// A 4xx of the upstream to the gateway's own check (e.g. a path it refuses), passed on.
    #[error("the WebDAV server refused this request ({0})")]
    UpstreamRefused(StatusCode),
    /// 502: the upstream (or the Director) did not answer, or not usably.
    #[error("{0}")]
    BadGateway(String),
    /// 503, with `Retry-After` when known.
    #[error("{message}")]
    Unavailable {
        /// What is wrong.
        message: &'static str,
        /// Seconds.
        retry_after: Option<u32>,
    },
    /// 500.
    #[error("{0}")]
    Internal(&'static str),
}

impl GatewayError {
    /// The precondition error of the spec: 403 with `DAV:error`.
    pub fn precondition(precondition: &'static str, description: impl Into<String>) -> Self {
        GatewayError::Precondition { precondition, description: description.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) | GatewayError::Precondition { .. } => StatusCode::FORBIDDEN,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::UpstreamRefused(s) => *s,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = match &self {
            GatewayError::Precondition { precondition, description } => (
                status,
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                crate::dav::dav_error(precondition, description),
            )
                .into_response(),
            other => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], other.to_string()).into_response(),
        };
        let h = resp.headers_mut();
        match self {
            GatewayError::Unauthorized { challenges, .. } => {
                for c in challenges {
                    h.append(header::WWW_AUTHENTICATE, c);
                }
            }
            GatewayError::MethodNotAllowed { allow: Some(a), .. } => {
                h.insert(header::ALLOW, HeaderValue::from_static(a));
            }
            GatewayError::TooManyRequests { retry_after, .. }
            | GatewayError::Unavailable { retry_after: Some(retry_after), .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_headers_and_bodies() {
        let r = GatewayError::precondition("push-not-available", "no").into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/xml; charset=utf-8");
        let r = GatewayError::MethodNotAllowed { message: "m", allow: Some("DELETE") }.into_response();
        assert_eq!(
            (r.status(), r.headers()[header::ALLOW].to_str().unwrap()),
            (StatusCode::METHOD_NOT_ALLOWED, "DELETE")
        );
        let r = GatewayError::TooManyRequests { message: "m", retry_after: 30 }.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "30");
        let r = GatewayError::UpstreamRefused(StatusCode::BAD_REQUEST).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let challenge = HeaderValue::from_static("Basic realm=\"x\"");
        let r = GatewayError::Unauthorized { message: "m", challenges: vec![challenge.clone()] }.into_response();
        assert_eq!(r.headers().get_all(header::WWW_AUTHENTICATE).iter().collect::<Vec<_>>(), [&challenge]);
    }
}
