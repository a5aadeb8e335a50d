//! `JsonBody<T>`: like axum's `Json`, but every rejection is one of our JSON errors
//! (415 wrong content type, 413 too large, 400 malformed or mis-shaped).
//!
//! A `Content-Length` over the limit is refused from the header, before any of the body is
//! read: a client announcing a gigabyte learns so at once instead of at the request timeout.
//! Handlers that authenticate first (the Notify API) take the extractor's `Result` and look at
//! it only after authentication, so the early 413 never comes before a 401.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::state::AppState;

/// A JSON request body of type `T`.
pub(crate) struct JsonBody<T>(pub(crate) T);

fn is_json(req: &Request) -> bool {
    let Some(ct) = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The body length the request announces, if it announces one that parses.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.config.max_body_bytes;
        if declared_length(&req).is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        // Without a usable Content-Length (chunked), the body limit layer counts while reading.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadBody(e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::InvalidShape(e.to_string()),
            _ => ApiError::InvalidJson(e.to_string()),
        })
    }
}
