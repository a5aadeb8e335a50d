//! Bearer-token checks for the Notify API (always) and the Subscription API (unless `none`).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::{Secret, SubscriptionAuth};

/// The bearer token of a request: `Authorization: Bearer …`, else the `access_token` query
/// parameter (RFC 6750 §2.3; browsers cannot set headers on a WebSocket).
pub(crate) fn bearer<'a>(headers: &'a HeaderMap, access_token: Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    access_token
}

/// Checks `given` against every accepted token in constant time (per token; all are compared,
/// so the position of a match does not show in the timing either).
pub(crate) fn check(accepted: &[Secret], given: Option<&str>) -> Result<(), ApiError> {
    let given = given.ok_or(ApiError::MissingToken)?;
    let mut ok = subtle::Choice::from(0);
    for t in accepted {
        ok |= t.expose().as_bytes().ct_eq(given.as_bytes());
    }
    if bool::from(ok) { Ok(()) } else { Err(ApiError::BadToken) }
}

/// Checks a Subscription API / WebSocket request: `headers` (for bearer tokens and, in WebDAV
/// mode, the whole `Authorization`), and the `access_token` query parameter.
pub(crate) async fn check_subscription(
    auth: &SubscriptionAuth,
    headers: &HeaderMap,
    access_token: Option<&str>,
) -> Result<(), ApiError> {
    match auth {
        SubscriptionAuth::None => Ok(()),
        SubscriptionAuth::Tokens(t) => check(t, bearer(headers, access_token)),
        SubscriptionAuth::Webdav(verifier, tokens) => {
            if let Some(token) = bearer(headers, access_token)
                && !tokens.is_empty()
                && check(tokens, Some(token)).is_ok()
            {
                return Ok(());
            }
            match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                Some(h) => verifier.check(h).await,
                None => Err(ApiError::MissingToken),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h, Some("q")), Some("q"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h, Some("q")), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h, Some("q")), None, "a non-bearer Authorization is not a token");
    }
}
