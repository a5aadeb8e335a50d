//! The push-service endpoints (RFC 8030 §5, the subset Web Push senders use):
//! `POST /push/<id>` accepts an encrypted message, `DELETE /push/<id>` ends the subscription.
//! The domain is [`davpush_core::pushsvc`]; here are the headers, VAPID (RFC 8292) and status codes.
//!
//! The body is never decrypted, logged or stored: it is base64url-encoded into the client's
//! frame as it came.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use davpush_core::pushsvc::{Message, PushError, Sender, Urgency, valid_topic};
use davpush_proto::ErrorBody;

use crate::state::AppState;

/// Largest message body (RFC 8030 §7.2 asks push services to accept at least 4096 bytes).
pub(crate) const MAX_BODY: usize = 4096;

/// How a push request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushApiError {
    #[error(transparent)]
    Domain(#[from] PushError),
    #[error("this Director is not a push service")]
    Disabled,
    #[error("the message body exceeds {MAX_BODY} bytes")]
    TooLarge,
    #[error("Content-Encoding must be aes128gcm (RFC 8291)")]
    Encoding,
    #[error("{0}")]
    BadHeader(&'static str),
    #[error("this push subscription is restricted: send `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292)")]
    VapidMissing,
    #[error("VAPID authentication failed: {0}")]
    VapidInvalid(&'static str),
    #[error("send `Authorization: Bearer <secret>` with the subscription's secret")]
    SecretMissing,
}

impl PushApiError {
    fn status(&self) -> StatusCode {
        match self {
            PushApiError::Domain(e) => match e {
                PushError::NotFound => StatusCode::NOT_FOUND,
                PushError::Gone => StatusCode::GONE,
                PushError::Forbidden => StatusCode::FORBIDDEN,
                PushError::BadKey => StatusCode::BAD_REQUEST,
                PushError::Full => StatusCode::SERVICE_UNAVAILABLE,
                PushError::TooManyForConnection => StatusCode::CONFLICT,
                PushError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                PushError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            },
            PushApiError::Disabled => StatusCode::NOT_FOUND,
            PushApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PushApiError::Encoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PushApiError::BadHeader(_) => StatusCode::BAD_REQUEST,
            PushApiError::VapidMissing | PushApiError::SecretMissing => StatusCode::UNAUTHORIZED,
            PushApiError::VapidInvalid(_) => StatusCode::FORBIDDEN,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PushApiError::Domain(e) => e.code(),
            PushApiError::Disabled => "not_found",
            PushApiError::TooLarge => "payload_too_large",
            PushApiError::Encoding => "unsupported_media_type",
            PushApiError::BadHeader(_) => "invalid_request",
            PushApiError::VapidMissing | PushApiError::SecretMissing => "unauthorized",
            PushApiError::VapidInvalid(_) => "forbidden",
        }
    }
}

impl IntoResponse for PushApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code().into(), message: self.to_string(), field: None };
        let mut resp = (self.status(), Json(body)).into_response();
        if let PushApiError::Domain(PushError::RateLimited(secs)) = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /push/<id>`.
pub(crate) async fn push(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    match accept(&st, &id, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn accept(st: &AppState, id: &str, req: Request) -> Result<Response, PushApiError> {
    let eps = st.service.push_endpoints().ok_or(PushApiError::Disabled)?;
    let now = davpush_core::unix_now();
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(p)| p.ip());
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let (route, key) = eps.route(id, now).await?;
    // The per-sender limit counts a verified application-server key, else the address.
    let sender_key = match key {
        Some(key) => {
            verify_vapid(&st.vapid_tokens, headers, &key, eps.origin(), now)?;
            Some(key)
        }
        None => verified_key(&st.vapid_tokens, headers, eps.origin(), now),
    };
    let trusted = st.config.push_service.as_ref().map(|p| &p.trusted_proxies);
    let sender = match (sender_key, peer) {
        (Some(k), _) => Some(Sender::Key(k)),
        (None, Some(ip)) => Some(Sender::Address(trusted.map_or(ip, |t| t.client(ip, headers)))),
        (None, None) => None,
    };
    if let Some(sender) = sender {
        eps.check_sender(sender, now)?;
    }
    let ttl = header_str(headers, "ttl")
        .ok_or(PushApiError::BadHeader("the TTL header is required (RFC 8030 §5.2)"))?
        .trim()
        .parse::<u64>()
        .map_err(|_| PushApiError::BadHeader("TTL must be a number of seconds"))?;
    let urgency = match header_str(headers, "urgency") {
        None => Urgency::Normal,
        Some(u) => Urgency::parse(u).ok_or(PushApiError::BadHeader("Urgency must be very-low, low, normal or high"))?,
    };
    let topic = match header_str(headers, "topic") {
        None => None,
        Some(t) if valid_topic(t) => Some(t.to_owned()),
        Some(_) => return Err(PushApiError::BadHeader("Topic must be at most 32 base64url characters")),
    };
    if let Some(len) = header_str(headers, "content-length").and_then(|l| l.parse::<u64>().ok())
        && len > MAX_BODY as u64
    {
        return Err(PushApiError::TooLarge);
    }
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY).await.map_err(|_| PushApiError::TooLarge)?;
    if !body.is_empty()
        && !header_str(headers, "content-encoding").is_some_and(|e| e.trim().eq_ignore_ascii_case("aes128gcm"))
    {
        return Err(PushApiError::Encoding);
    }
    let ttl = ttl.min(i64::MAX as u64) as i64;
    let done = eps.deliver(id, route, Message { topic, urgency, ttl, body }, now).await?;
    let location = format!("{}/messages/{}", eps.endpoint(id), done.message_id);
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert("ttl", HeaderValue::from(done.ttl));
    Ok(resp)
}

/// `DELETE /push/<id>` with `Authorization: Bearer <secret>`.
pub(crate) async fn delete(State(st): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let run = async {
        let eps = st.service.push_endpoints().ok_or(PushApiError::Disabled)?;
        let secret = header_str(&headers, "authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or(PushApiError::SecretMissing)?;
        eps.unsubscribe(&id, secret.trim(), davpush_core::unix_now()).await?;
        Ok::<_, PushApiError>(StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The token and key of a VAPID `Authorization` header: `vapid t=<JWT>, k=<key>` (RFC 8292
/// §3), or the draft form `WebPush <JWT>` with `Crypto-Key: p256ecdsa=<key>`.
fn vapid_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let auth = header_str(headers, "authorization")?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("vapid") {
        let (mut t, mut k) = (None, None);
        for param in rest.split(',') {
            match param.trim().split_once('=') {
                Some(("t", v)) => t = Some(v.trim().to_owned()),
                Some(("k", v)) => k = Some(v.trim().trim_end_matches('=').to_owned()),
                _ => {}
            }
        }
        return Some((t?, k?));
    }
    if scheme.eq_ignore_ascii_case("webpush") {
        let crypto_key = header_str(headers, "crypto-key")?;
        let k = crypto_key.split([';', ',']).find_map(|p| p.trim().strip_prefix("p256ecdsa="))?;
        return Some((rest.trim().to_owned(), k.trim_end_matches('=').to_owned()));
    }
    None
}

/// The application-server key of a VAPID `Authorization` that verifies (for an unrestricted
/// subscription, where it only names the sender).
fn verified_key(tokens: &VerifiedTokens, headers: &HeaderMap, origin: &str, now: i64) -> Option<Vec<u8>> {
    let (_, k) = vapid_credentials(headers)?;
    let k = URL_SAFE_NO_PAD.decode(k).ok()?;
    verify_vapid(tokens, headers, &k, origin, now).ok().map(|()| k)
}

/// What a VAPID token's signature and parsing established: the key it verified with and its
/// `aud` and `exp` claims. The claims are checked against the request on every use.
#[derive(Debug)]
struct Verified {
    key: Box<[u8]>,
    aud: Box<str>,
    exp: i64,
}

/// The VAPID tokens whose ES256 signature verified, by the token's text: a sender reuses its
/// token for many messages (RFC 8292 §2 lets it, up to 24 hours), and an ECDSA verification
/// costs about as much as the rest of a push. Verification is a function of the token and the
/// key alone, so a token seen before with the same key is known good; a token with another key
/// is verified afresh. Bounded: expired entries go when it is full, and all of them if that is
/// not enough (the next request of each sender verifies again).
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<Box<str>, Verified>>,
}

impl VerifiedTokens {
    /// Tokens kept at most (each ~300–500 bytes).
    const MAX: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The claims of `token` if it verified with `key` before.
    fn get(&self, token: &str, key: &[u8]) -> Option<(Box<str>, i64)> {
        let map = self.lock();
        let v = map.get(token).filter(|v| *v.key == *key)?;
        Some((v.aud.clone(), v.exp))
    }

    fn insert(&self, token: &str, key: &[u8], aud: &str, exp: i64, now: i64) {
        let mut map = self.lock();
        if map.len() >= Self::MAX {
            map.retain(|_, v| v.exp + 60 >= now);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(token.into(), Verified { key: key.into(), aud: aud.into(), exp });
    }

    /// Tokens held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Checks the sender's VAPID token against the application-server `key` the subscription is
/// restricted to (RFC 8292 §4.2): same key, valid ES256 signature, `aud` this push service's
/// origin, `exp` in the future and at most 24 hours away.
fn verify_vapid(
    tokens: &VerifiedTokens,
    headers: &HeaderMap,
    key: &[u8],
    origin: &str,
    now: i64,
) -> Result<(), PushApiError> {
    let (token, k) = vapid_credentials(headers).ok_or(PushApiError::VapidMissing)?;
    let k = URL_SAFE_NO_PAD.decode(k).map_err(|_| PushApiError::VapidInvalid("`k` is not base64url"))?;
    if k != key {
        return Err(PushApiError::VapidInvalid("the key is not the one the subscription is restricted to"));
    }
    let (aud, exp) = match tokens.get(&token, key) {
        Some(known) => known,
        None => {
            let (aud, exp) = verify_token(&token, key)?;
            tokens.insert(&token, key, &aud, exp, now);
            (aud, exp)
        }
    };
    if aud.trim_end_matches('/') != origin {
        return Err(PushApiError::VapidInvalid("`aud` is not this push service's origin"));
    }
    // A minute of clock skew either way.
    if exp + 60 < now {
        return Err(PushApiError::VapidInvalid("the JWT has expired"));
    }
    if exp > now + 86400 + 60 {
        return Err(PushApiError::VapidInvalid("`exp` is more than 24 hours away"));
    }
    Ok(())
}

/// Verifies `token`'s ES256 signature with `key` and reads its `aud` and `exp` claims.
fn verify_token(token: &str, key: &[u8]) -> Result<(Box<str>, i64), PushApiError> {
    let (signed, sig) = token.rsplit_once('.').ok_or(PushApiError::VapidInvalid("malformed JWT"))?;
    let (head, claims) = signed.split_once('.').ok_or(PushApiError::VapidInvalid("malformed JWT"))?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| PushApiError::VapidInvalid("malformed JWT"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| PushApiError::VapidInvalid("the signature does not verify"))?;
    let json =
        |part: &str| -> Option<serde_json::Value> { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok() };
    let head = json(head).ok_or(PushApiError::VapidInvalid("malformed JWT header"))?;
    if head.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err(PushApiError::VapidInvalid("the JWT must be signed with ES256"));
    }
    let claims = json(claims).ok_or(PushApiError::VapidInvalid("malformed JWT claims"))?;
    let aud = claims.get("aud").and_then(|a| a.as_str()).unwrap_or_default();
    let exp = claims.get("exp").and_then(|e| e.as_i64()).ok_or(PushApiError::VapidInvalid("`exp` is missing"))?;
    Ok((aud.into(), exp))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use davpush_delivery::webpush::vapid::{Vapid, VapidKey};

    use super::*;

    const NOW: i64 = 1_900_000_000;
    const ORIGIN: &str = "https://push.example";

    fn sender() -> (Vapid, Vec<u8>) {
        let (key, _) = VapidKey::generate_pem().unwrap();
        let raw = URL_SAFE_NO_PAD.decode(key.public_key()).unwrap();
        (Vapid::new(Arc::new(key), "mailto:ops@example.invalid".into()), raw)
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        h
    }

    fn refused(r: Result<(), PushApiError>) -> &'static str {
        match r {
            Err(PushApiError::VapidInvalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_known_token_skips_the_signature_but_not_the_claims() {
        let (vapid, key) = sender();
        let h = headers(&vapid.authorization(ORIGIN, NOW));
        let tokens = VerifiedTokens::default();
        verify_vapid(&tokens, &h, &key, ORIGIN, NOW).unwrap();
        assert_eq!(tokens.len(), 1);
        // Known now: accepted again, and still checked against the request.
        verify_vapid(&tokens, &h, &key, ORIGIN, NOW + 10).unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(
            refused(verify_vapid(&tokens, &h, &key, "https://other.example", NOW)),
            "`aud` is not this push service's origin"
        );
        assert_eq!(refused(verify_vapid(&tokens, &h, &key, ORIGIN, NOW + 13 * 3600)), "the JWT has expired");
        // A token issued far ahead of this clock is refused from the cache as well.
        assert_eq!(
            refused(verify_vapid(&tokens, &h, &key, ORIGIN, NOW - 13 * 3600)),
            "`exp` is more than 24 hours away"
        );
    }

    #[test]
    fn a_known_token_with_another_key_or_a_changed_signature_is_verified_again() {
        let (vapid, key) = sender();
        let auth = vapid.authorization(ORIGIN, NOW);
        let tokens = VerifiedTokens::default();
        verify_vapid(&tokens, &headers(&auth), &key, ORIGIN, NOW).unwrap();
        // The same token text presented with another key does not verify with that key.
        let (other, other_key) = sender();
        let token = auth.strip_prefix("vapid t=").and_then(|r| r.split_once(", k=")).unwrap().0;
        let borrowed = format!("vapid t={token}, k={}", other.key().public_key());
        assert_eq!(
            refused(verify_vapid(&tokens, &headers(&borrowed), &other_key, ORIGIN, NOW)),
            "the signature does not verify"
        );
        // A changed signature is another token: verified, refused, not kept.
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[10] ^= 1;
        let tampered = format!("vapid t={signed}.{}, k={}", URL_SAFE_NO_PAD.encode(&sig), vapid.key().public_key());
        assert_eq!(
            refused(verify_vapid(&tokens, &headers(&tampered), &key, ORIGIN, NOW)),
            "the signature does not verify"
        );
        assert_eq!(tokens.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let tokens = VerifiedTokens::default();
        for i in 0..VerifiedTokens::MAX + 100 {
            tokens.insert(&format!("token-{i}"), &[4; 65], ORIGIN, NOW + 3600, NOW);
        }
        assert!(tokens.len() <= VerifiedTokens::MAX);
        // Expired entries go first when it is full.
        let tokens = VerifiedTokens::default();
        for i in 0..VerifiedTokens::MAX - 1 {
            tokens.insert(&format!("old-{i}"), &[4; 65], ORIGIN, NOW - 3600, NOW - 7200);
        }
        tokens.insert("fresh", &[4; 65], ORIGIN, NOW + 3600, NOW);
        tokens.insert("fresher", &[4; 65], ORIGIN, NOW + 3600, NOW);
        assert_eq!(tokens.len(), 2);
        assert!(tokens.get("fresh", &[4; 65]).is_some());
    }
}
