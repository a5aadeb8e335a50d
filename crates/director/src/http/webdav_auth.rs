//! "Same authentication as for WebDAV" (the draft's Subscription API option): a client's
//! `Authorization` header is accepted if the WebDAV server accepts it. The check is a
//! `PROPFIND` with `Depth: 0` on the configured URL; a success is remembered for a short time
//! under the SHA-256 of the header (the credentials themselves are never stored).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use tokio::time::Instant;

use super::error::ApiError;

/// Remembered successes at most (bounded; the oldest are dropped).
const MAX_CACHED: usize = 10_000;

/// Verifies credentials against a WebDAV server.
#[derive(Debug)]
pub struct WebdavVerifier {
    url: url::Url,
    client: reqwest::Client,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
}

impl WebdavVerifier {
    /// Checks against `url`, remembering successes for `ttl`.
    pub fn new(url: url::Url, ttl: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(WebdavVerifier { url, client, ttl, cache: Mutex::default() })
    }

    /// The URL checked against.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// Accepts `authorization` if the WebDAV server does.
    pub(crate) async fn check(&self, authorization: &str) -> Result<(), ApiError> {
        let key: [u8; 32] = digest(&SHA256, authorization.as_bytes()).as_ref().try_into().expect("SHA-256 is 32 bytes");
        let now = Instant::now();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&key).is_some_and(|until| *until > now) {
                return Ok(());
            }
        }
        let resp = self
            .client
            .request(reqwest::Method::from_bytes(b"PROPFIND").expect("valid method"), self.url.clone())
            .header("Depth", "0")
            .header("Authorization", authorization)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(r#"<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>"#)
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "WebDAV server for authentication unreachable");
                ApiError::Unavailable("the WebDAV server that checks credentials is unreachable".into())
            })?;
        match resp.status().as_u16() {
            200..=299 => {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_CACHED {
                    cache.retain(|_, until| *until > now);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(key, now + self.ttl);
                Ok(())
            }
            401 | 403 => Err(ApiError::BadToken),
            other => {
                tracing::warn!(status = other, "unexpected answer of the WebDAV server to an authentication check");
                Err(ApiError::Unavailable("the WebDAV server that checks credentials answered unexpectedly".into()))
            }
        }
    }
}
