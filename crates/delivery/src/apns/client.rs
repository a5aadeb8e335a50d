//! APNs token-based authentication and the HTTP/2 client.
//!
//! The provider token is an ES256 JWT (`kid` = key id; claims `iss` = team id, `iat`), signed
//! with the `.p8` key and reused for 50 minutes: APNs refuses tokens older than an hour
//! (`ExpiredProviderToken`) and renewals more often than every 20 minutes
//! (`TooManyProviderTokenUpdates`). Requests go over one long-lived HTTP/2 connection (ALPN
//! `h2`, negotiated in TLS; never prior knowledge), which reqwest's pool keeps and multiplexes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::settings::ApnsSettings;
use crate::auth::{CredentialError, api_client, pem_to_der};

/// How long a provider token is used (APNs accepts up to 60 minutes).
pub const TOKEN_LIFETIME: i64 = 50 * 60;

/// The signing key (`AuthKey_<kid>.p8`).
pub struct ApnsKey {
    encoding: EncodingKey,
}

impl std::fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApnsKey(***)")
    }
}

impl ApnsKey {
    /// From the PEM text of a `.p8` file (PKCS#8 P-256 private key).
    pub fn from_pem(pem: &str) -> Option<Self> {
        let der = pem_to_der(pem)?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).ok()?;
        Some(ApnsKey { encoding: EncodingKey::from_ec_der(&der) })
    }

    /// Reads a `.p8` file.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CredentialError::Io { path: path.display().to_string(), source })?;
        Self::from_pem(&text).ok_or_else(|| CredentialError::Invalid {
            path: path.display().to_string(),
            message: "not a P-256 private key in PKCS#8 PEM (an APNs .p8 key)".into(),
        })
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

/// Signs and caches the provider token.
pub struct ProviderToken {
    key: Arc<ApnsKey>,
    key_id: String,
    team_id: String,
    cache: Mutex<Option<(Arc<str>, i64)>>,
}

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cached token is a credential too.
        f.debug_struct("ProviderToken")
            .field("key", &self.key)
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ProviderToken {
    /// For key `key_id` of team `team_id`.
    pub fn new(key: Arc<ApnsKey>, key_id: String, team_id: String) -> Self {
        ProviderToken { key, key_id, team_id, cache: Mutex::new(None) }
    }

    /// The `authorization` header value at `now` (unix seconds): the cached token while it is
    /// younger than [`TOKEN_LIFETIME`], else a new one.
    pub fn header(&self, now: i64) -> Arc<str> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h, iat)) = &*c
            && now - *iat < TOKEN_LIFETIME
            && now >= *iat
        {
            return h.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = None;
        let jwt = jsonwebtoken::encode(&header, &Claims { iss: &self.team_id, iat: now }, &self.key.encoding)
            .expect("signing with a valid P-256 key does not fail");
        let h: Arc<str> = Arc::from(format!("bearer {jwt}"));
        *c = Some((h.clone(), now));
        h
    }

    /// Forgets `header` (APNs said `ExpiredProviderToken`), unless a newer one replaced it.
    pub fn invalidate(&self, header: &str) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.as_ref().is_some_and(|(h, _)| &**h == header) {
            *c = None;
        }
    }
}

/// The HTTP client for APNs: HTTP/2 through ALPN, the configured roots if any.
pub fn http_client(settings: &ApnsSettings) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = api_client(settings.timeout);
    if let Some(pem) = &settings.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)?;
        b = b.tls_certs_only(certs);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    #[test]
    fn provider_tokens_verify_and_are_renewed_before_an_hour() {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let pem =
            format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(doc.as_ref()));
        let p =
            ProviderToken::new(Arc::new(ApnsKey::from_pem(&pem).unwrap()), "ABC123DEFG".into(), "DEF123GHIJ".into());
        let t0 = 1_700_000_000;
        let h = p.header(t0);
        let jwt = h.strip_prefix("bearer ").unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("ES256 verifies with the key's public half");
        let part = |i: usize| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(input.split('.').nth(i).unwrap()).unwrap()).unwrap()
        };
        assert_eq!(part(0), serde_json::json!({"alg": "ES256", "kid": "ABC123DEFG"}));
        assert_eq!(part(1), serde_json::json!({"iss": "DEF123GHIJ", "iat": t0}));
        assert!(Arc::ptr_eq(&h, &p.header(t0 + 49 * 60)), "reused for 49 minutes");
        let renewed = p.header(t0 + 50 * 60);
        assert!(!Arc::ptr_eq(&h, &renewed), "renewed at 50 minutes, before APNs' hour");
        p.invalidate(&h);
        assert!(Arc::ptr_eq(&renewed, &p.header(t0 + 50 * 60 + 1)), "an old token does not evict the new one");
        assert!(ApnsKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_none());
        assert_eq!(format!("{p:?}").matches("***").count(), 1);
    }
}
