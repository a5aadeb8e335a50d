//! RFC 8292 VAPID: the Director's P-256 key pair, persisted once, and the
//! `Authorization: vapid t=<ES256 JWT>, k=<public key>` header, cached per push-service origin.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Lifetime of a token (RFC 8292 allows at most 24 hours).
const TOKEN_LIFETIME: i64 = 12 * 3600;
/// A cached token is renewed when it has less than this left.
const RENEW_BEFORE: i64 = 3600;

/// The key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    /// Reading or writing the file failed.
    #[error("VAPID key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a P-256 PKCS#8 private key.
    #[error("VAPID key file {0} does not hold a P-256 private key (PKCS#8 PEM)")]
    BadKey(String),
}

/// The Director's VAPID key pair.
pub struct VapidKey {
    encoding: EncodingKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

impl VapidKey {
    /// From a PKCS#8 DER private key.
    pub fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).ok()?;
        let public = pair.public_key().as_ref().to_vec();
        Some(VapidKey { encoding: EncodingKey::from_ec_der(der), public })
    }

    /// Reads the key at `path` (PKCS#8 PEM).
    pub fn load(path: &Path) -> Result<Self, VapidError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|source| VapidError::Io { path: path.display().to_string(), source })?;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(b64.trim()).map_err(|_| VapidError::BadKey(path.display().to_string()))?;
        Self::from_pkcs8(&der).ok_or_else(|| VapidError::BadKey(path.display().to_string()))
    }

    /// Reads the key at `path`, or generates one there (PEM, mode 0600). Returns whether it
    /// was generated.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), VapidError> {
        let io = |source| VapidError::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = STANDARD.decode(b64.trim()).map_err(|_| VapidError::BadKey(path.display().to_string()))?;
                let key = Self::from_pkcs8(&der).ok_or_else(|| VapidError::BadKey(path.display().to_string()))?;
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, pem) = Self::generate_pem().map_err(io)?;
                davpush_core::secrets::write_private(path, &pem).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// From a PKCS#8 PEM text (as kept in the store).
    pub fn from_pem(pem: &str) -> Option<Self> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        Self::from_pkcs8(&STANDARD.decode(b64.trim()).ok()?)
    }

    /// A new key pair and its PKCS#8 PEM.
    pub fn generate_pem() -> std::io::Result<(Self, String)> {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| std::io::Error::other("key generation failed"))?;
        let der = doc.as_ref();
        let b64 = STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let key = Self::from_pkcs8(der).ok_or_else(|| std::io::Error::other("generated key does not parse"))?;
        Ok((key, pem))
    }

    /// The key's id: 16 base64url characters of the SHA-256 of the public key. Subscriptions
    /// record it (`vapid_key`); a retired key is kept as `vapid-keys/<id>.pem`. Public.
    pub fn id(&self) -> String {
        let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.public);
        URL_SAFE_NO_PAD.encode(&h.as_ref()[..12])
    }

    /// The public key as clients expect it: uncompressed point, base64url without padding
    /// (the spec's `vapid-public-key`, a browser's `applicationServerKey`).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.public)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

/// Signs and caches `Authorization` headers.
#[derive(Debug)]
pub struct Vapid {
    key: Arc<VapidKey>,
    subject: String,
    cache: Mutex<HashMap<String, (Arc<str>, i64)>>,
}

impl Vapid {
    /// Signs with `key`; `subject` is the `sub` claim (`mailto:` or `https:` contact).
    pub fn new(key: Arc<VapidKey>, subject: String) -> Self {
        Vapid { key, subject, cache: Mutex::default() }
    }

    /// The key pair.
    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// The `Authorization` header value for a push service at `origin` (`https://host[:port]`).
    pub fn authorization(&self, origin: &str, now: i64) -> Arc<str> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h, exp)) = cache.get(origin)
            && *exp - now > RENEW_BEFORE
        {
            return h.clone();
        }
        let exp = now + TOKEN_LIFETIME;
        let header: Arc<str> = Arc::from(self.sign(origin, exp));
        if cache.len() > 10_000 {
            cache.clear(); // bounded: origins are few in practice
        }
        cache.insert(origin.to_owned(), (header.clone(), exp));
        header
    }

    /// A newly signed `Authorization` header value for `origin`, valid until `exp` (no cache:
    /// each call makes another token, ECDSA signatures being randomized).
    pub fn sign(&self, origin: &str, exp: i64) -> String {
        let claims = Claims { aud: origin, exp, sub: &self.subject };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key.encoding)
            .expect("signing with a valid P-256 key does not fail");
        format!("vapid t={jwt}, k={}", self.key.public_key())
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    use super::*;

    /// RFC 8292 §2.4, Figure 1 (the token expired in 2016; it is a format reference).
    const RFC_T: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQiLCJleHAiOjE0NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDquptFOepC9GAu_HLGkMlMuCGSK2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA";
    const RFC_K: &str = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs";

    /// Verifies an `Authorization: vapid` header the way a push service does; returns the claims.
    fn verify_header(h: &str) -> Option<serde_json::Value> {
        let (t, k) = h.strip_prefix("vapid t=")?.split_once(", k=")?;
        let (signed, sig) = t.rsplit_once('.')?;
        let pubkey = URL_SAFE_NO_PAD.decode(k).ok()?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &pubkey)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).ok()?)
            .ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signed.split('.').nth(1)?).ok()?).ok()
    }

    #[test]
    fn rfc8292_example_verifies_and_our_tokens_have_its_shape() {
        let claims = verify_header(&format!("vapid t={RFC_T}, k={RFC_K}")).expect("the RFC's example verifies");
        assert_eq!(
            claims,
            serde_json::json!({"aud": "https://push.example.net", "exp": 1453523768, "sub": "mailto:push@example.com"})
        );
        assert!(verify_header(&format!("vapid t={}x, k={RFC_K}", RFC_T)).is_none(), "a changed signature fails");
        // Our header and claims serialize to exactly the RFC's first two segments.
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let key = VapidKey::from_pkcs8(der.as_ref()).unwrap();
        let ours = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &Claims { aud: "https://push.example.net", exp: 1453523768, sub: "mailto:push@example.com" },
            &key.encoding,
        )
        .unwrap();
        let prefix = |t: &str| t.rsplit_once('.').unwrap().0.to_owned();
        assert_eq!(prefix(&ours), prefix(RFC_T));
    }

    #[test]
    fn key_is_persisted_and_header_verifies() {
        let dir = std::env::temp_dir().join(format!("davpush-vapid-{}", davpush_core::ids::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vapid.pem");
        let (k1, created) = VapidKey::load_or_create(&path).unwrap();
        assert!(created);
        let (k2, created) = VapidKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key(), k2.public_key());
        assert_eq!(URL_SAFE_NO_PAD.decode(k1.public_key()).unwrap().len(), 65);

        let vapid = Vapid::new(Arc::new(k2), "mailto:ops@example.org".into());
        let h = vapid.authorization("https://push.example.net", 1_000_000);
        assert!(Arc::ptr_eq(&h, &vapid.authorization("https://push.example.net", 1_000_000 + 3600)), "cached");
        assert!(!Arc::ptr_eq(&h, &vapid.authorization("https://push.example.net", 1_000_000 + 12 * 3600)), "renewed");
        assert!(h.ends_with(&format!(", k={}", k1.public_key())));
        let claims = verify_header(&h).expect("ES256 signature verifies with the advertised key");
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], 1_000_000 + 12 * 3600);
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
