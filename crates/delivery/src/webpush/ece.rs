//! RFC 8291 message encryption for Web Push: `aes128gcm` (RFC 8188) with keys derived from an
//! ECDH between a fresh key pair and the user agent's, and the user agent's auth secret.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};

/// Record size announced in the header. One record holds our small messages.
const RECORD_SIZE: u32 = 4096;
/// Length of an uncompressed P-256 point.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of the auth secret.
pub const AUTH_LEN: usize = 16;
/// Largest plaintext we encrypt: one record minus delimiter and tag.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - 1 - 16;

/// Encryption failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// The user agent's public key is not a P-256 point.
    #[error("p256dh is not an uncompressed P-256 public key")]
    BadPublicKey,
    /// The auth secret does not have 16 bytes.
    #[error("auth must be 16 bytes")]
    BadAuth,
    /// The message does not fit one record.
    #[error("message too large to encrypt ({0} bytes)")]
    TooLarge(usize),
    /// The crypto library failed (should not happen).
    #[error("crypto failure")]
    Crypto,
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), EceError> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    prk.expand(info, Len(out.len())).and_then(|okm| okm.fill(out)).map_err(|_| EceError::Crypto)
}

/// Checks that `ua_public` is a usable P-256 public key: an uncompressed point on the curve
/// (P-256's cofactor is 1: every point on it but infinity, which has no such encoding, is in
/// the group). Parsing checks the curve equation; an agreement with a throwaway key (a key
/// generation and a scalar multiplication, ~100 µs) was a third of a subscribe's time
/// (issue 11).
pub fn check_public_key(ua_public: &[u8]) -> Result<(), EceError> {
    if ua_public.len() != PUBLIC_KEY_LEN || ua_public[0] != 0x04 {
        return Err(EceError::BadPublicKey);
    }
    agreement::ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, ua_public))
        .map(|_| ())
        .map_err(|_| EceError::BadPublicKey)
}

/// Encrypts `plaintext` for the user agent with a fresh key pair and salt.
pub fn encrypt(plaintext: &[u8], ua_public: &[u8], auth: &[u8]) -> Result<Vec<u8>, EceError> {
    let key = PrivateKey::generate(&ECDH_P256).map_err(|_| EceError::Crypto)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| EceError::Crypto)?;
    encrypt_with(plaintext, ua_public, auth, &key, &salt)
}

/// Encrypts with a given application-server key and salt (for the RFC's test vector).
pub fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    as_private: &PrivateKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge(plaintext.len()));
    }
    if auth.len() != AUTH_LEN {
        return Err(EceError::BadAuth);
    }
    if ua_public.len() != PUBLIC_KEY_LEN {
        return Err(EceError::BadPublicKey);
    }
    let as_public = as_private.compute_public_key().map_err(|_| EceError::Crypto)?;
    let as_public = as_public.as_ref();
    // IKM = HKDF(auth, ecdh_secret, "WebPush: info" 0x00 ua_public as_public, 32)
    let mut ikm = [0u8; 32];
    agreement::agree(as_private, UnparsedPublicKey::new(&ECDH_P256, ua_public), EceError::BadPublicKey, |secret| {
        hkdf(auth, secret, &[b"WebPush: info\0", ua_public, as_public], &mut ikm)
    })?;
    // CEK and nonce from HKDF(salt, IKM, …) as in RFC 8188.
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
    hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], &mut nonce)?;

    let mut out = Vec::with_capacity(16 + 4 + 1 + PUBLIC_KEY_LEN + plaintext.len() + 1 + 16);
    out.extend_from_slice(salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(PUBLIC_KEY_LEN as u8);
    out.extend_from_slice(as_public);
    let header_len = out.len();
    out.extend_from_slice(plaintext);
    out.push(0x02); // last-record delimiter, no padding
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EceError::Crypto)?);
    let mut record = out.split_off(header_len);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut record)
        .map_err(|_| EceError::Crypto)?;
    out.extend_from_slice(&record);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    fn d(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A, byte for byte.
    #[test]
    fn rfc8291_appendix_a() {
        let as_private =
            PrivateKey::from_private_key(&ECDH_P256, &d("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        assert_eq!(
            B64.encode(as_private.compute_public_key().unwrap().as_ref()),
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
        );
        let ua_public = d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let auth = d("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let plaintext = d("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24");
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
        let body = encrypt_with(&plaintext, &ua_public, &auth, &as_private, &salt).unwrap();
        assert_eq!(
            B64.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn fresh_encryptions_differ_and_bad_inputs_are_refused() {
        let ua_public = d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let auth = d("BTBZMqHH6r4Tts7J_aSIgg");
        let a = encrypt(b"x", &ua_public, &auth).unwrap();
        let b = encrypt(b"x", &ua_public, &auth).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 86 + 1 + 1 + 16);
        assert_eq!(encrypt(b"x", &ua_public, &auth[..15]), Err(EceError::BadAuth));
        let mut not_on_curve = ua_public.clone();
        not_on_curve[10] ^= 1;
        assert_eq!(check_public_key(&not_on_curve), Err(EceError::BadPublicKey));
        check_public_key(&ua_public).unwrap();
        // Coordinates beyond the field, the other y of the same x, another encoding: refused.
        let beyond: Vec<u8> = std::iter::once(0x04).chain([0xff; 64]).collect();
        assert_eq!(check_public_key(&beyond), Err(EceError::BadPublicKey));
        let mut other_y = ua_public.clone();
        other_y[64] ^= 1;
        assert_eq!(check_public_key(&other_y), Err(EceError::BadPublicKey));
        let mut compressed_tag = ua_public.clone();
        compressed_tag[0] = 0x02;
        assert_eq!(check_public_key(&compressed_tag), Err(EceError::BadPublicKey));
        assert!(matches!(encrypt(&vec![0; 5000], &ua_public, &auth), Err(EceError::TooLarge(_))));
    }
}
