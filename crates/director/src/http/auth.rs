//! Bearer-token checks for the Notify API (always) and the Subscription API (unless `none`).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use davpush_core::Principal;
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
/// mode, the whole `Authorization`), and the `access_token` query parameter. Returns who it is,
/// for the per-token subscription limit: the token, or the WebDAV user.
pub(crate) async fn check_subscription(
    auth: &SubscriptionAuth,
    headers: &HeaderMap,
    access_token: Option<&str>,
) -> Result<Principal, ApiError> {
    match auth {
        SubscriptionAuth::None => Ok(Principal::of(b"")),
        SubscriptionAuth::Tokens(t) => {
            let given = bearer(headers, access_token);
            check(t, given)?;
            Ok(Principal::of(given.unwrap_or_default().as_bytes()))
        }
        SubscriptionAuth::Webdav(verifier, tokens) => {
            if let Some(token) = bearer(headers, access_token)
                && !tokens.is_empty()
                && check(tokens, Some(token)).is_ok()
            {
                return Ok(Principal::of(token.as_bytes()));
            }
            match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                Some(h) => verifier.check(h).await.map(|()| webdav_principal(h)),
                None => Err(ApiError::MissingToken),
            }
        }
    }
}

/// The WebDAV user of an accepted `Authorization` header: the user name of `Basic`
/// credentials (so a changed password is the same user), else the whole header.
fn webdav_principal(authorization: &str) -> Principal {
    let basic = authorization
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok());
    match basic.as_deref().and_then(|d| d.split(|b| *b == b':').next()) {
        Some(user) => Principal::of(&[b"webdav-user:", user].concat()),
        None => Principal::of(authorization.as_bytes()),
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

    #[test]
    fn issue_9_a_webdav_user_is_one_principal_whatever_its_password() {
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert_eq!(webdav_principal(&basic("alice:one")), webdav_principal(&basic("alice:two")));
        assert_ne!(webdav_principal(&basic("alice:one")), webdav_principal(&basic("bob:one")));
        assert_ne!(webdav_principal("Bearer a"), webdav_principal("Bearer b"));
    }
}
