//! JWT checks for the fakes, done the way a push service does them: split the compact JWS,
//! verify the signature with the *public* key through aws-lc-rs's verification API (a code
//! path independent of the signing side, which uses jsonwebtoken or aws-lc-rs signing), then
//! decode header and claims.

use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;

/// Verifies `jwt` with `public_key`; returns (header, claims).
pub fn verify(jwt: &str, alg: &'static dyn VerificationAlgorithm, public_key: &[u8]) -> Result<(Value, Value), String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("not a compact JWS".into());
    };
    let sig = B64.decode(s).map_err(|_| "signature is not base64url")?;
    UnparsedPublicKey::new(alg, public_key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "signature does not verify")?;
    let decode = |p: &str| -> Result<Value, String> {
        serde_json::from_slice(&B64.decode(p).map_err(|_| "segment is not base64url")?).map_err(|e| e.to_string())
    };
    Ok((decode(h)?, decode(c)?))
}

/// The Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
