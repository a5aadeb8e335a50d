//! The receiving side of Web Push (for a client that uses the Director as its push service,
//! docs/protocol.md §10): the RFC 8291 key pair and auth secret, decryption of `aes128gcm`
//! (RFC 8188) messages, the WebDAV-Push `push-register` body and the `push-message` a server
//! sends.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A message could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// Shorter than its header says, or a record too short.
    #[error("truncated aes128gcm message")]
    Truncated,
    /// The sender's key is not a P-256 point, or the keys do not agree.
    #[error("bad sender key")]
    BadKey,
    /// A record does not authenticate (wrong keys, or tampered with).
    #[error("the message does not authenticate")]
    Auth,
    /// A record's padding delimiter is missing.
    #[error("bad record padding")]
    Padding,
}

/// The user agent's keys (RFC 8291 §2): a P-256 key pair and a 16-byte auth secret.
pub struct ReceiverKeys {
    private: PrivateKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

impl std::fmt::Debug for ReceiverKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverKeys").field("p256dh", &self.p256dh()).finish_non_exhaustive()
    }
}

impl ReceiverKeys {
    /// Fresh keys.
    pub fn generate() -> ReceiverKeys {
        let private = PrivateKey::generate(&ECDH_P256).expect("P-256 key generation does not fail");
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).expect("the OS random number generator failed");
        ReceiverKeys::from_parts(private, auth)
    }

    /// From a raw private scalar (32 bytes) and an auth secret.
    pub fn from_raw(private: &[u8], auth: [u8; 16]) -> Option<ReceiverKeys> {
        let private = PrivateKey::from_private_key(&ECDH_P256, private).ok()?;
        Some(ReceiverKeys::from_parts(private, auth))
    }

    fn from_parts(private: PrivateKey, auth: [u8; 16]) -> ReceiverKeys {
        let public = private.compute_public_key().expect("a valid key has a public key").as_ref().to_vec();
        ReceiverKeys { private, public, auth }
    }

    /// The public key, base64url (`subscription-public-key`, `p256dh`).
    pub fn p256dh(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.public)
    }

    /// The auth secret, base64url (`auth-secret`, `auth`).
    pub fn auth(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.auth)
    }

    /// Decrypts an `aes128gcm` message encrypted for these keys.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if body.len() < 21 {
            return Err(DecryptError::Truncated);
        }
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        let idlen = body[20] as usize;
        if rs < 18 || body.len() < 21 + idlen {
            return Err(DecryptError::Truncated);
        }
        let sender = &body[21..21 + idlen];
        let mut ikm = [0u8; 32];
        agreement::agree(&self.private, UnparsedPublicKey::new(&ECDH_P256, sender), DecryptError::BadKey, |secret| {
            hkdf(&self.auth, secret, &[b"WebPush: info\0", &self.public, sender], &mut ikm)
        })?;
        let mut cek = [0u8; 16];
        let mut nonce = [0u8; 12];
        hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
        hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], &mut nonce)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| DecryptError::BadKey)?);
        let mut out = Vec::new();
        let records: Vec<&[u8]> = body[21 + idlen..].chunks(rs).collect();
        for (seq, record) in records.iter().enumerate() {
            let mut n = nonce;
            for (i, b) in (seq as u64).to_be_bytes().iter().enumerate() {
                n[4 + i] ^= b;
            }
            let mut buf = record.to_vec();
            let plain = key
                .open_in_place(Nonce::assume_unique_for_key(n), Aad::empty(), &mut buf)
                .map_err(|_| DecryptError::Auth)?;
            // Padding: the delimiter is the last non-zero byte, 2 in the last record, else 1.
            let end = plain.iter().rposition(|&b| b != 0).ok_or(DecryptError::Padding)?;
            let last = seq + 1 == records.len();
            if plain[end] != if last { 2 } else { 1 } {
                return Err(DecryptError::Padding);
            }
            out.extend_from_slice(&plain[..end]);
        }
        Ok(out)
    }
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), DecryptError> {
    Salt::new(HKDF_SHA256, salt)
        .extract(ikm)
        .expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| DecryptError::BadKey)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The WebDAV-Push `push-register` body for a Web Push subscription at `endpoint` with `keys`,
/// for changes of the collection's members (`content-update`, depth 1).
pub fn push_register_body(endpoint: &str, keys: &ReceiverKeys) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<push-register xmlns="https://bitfire.at/webdav-push" xmlns:D="DAV:"><subscription><web-push-subscription>"#,
            "<push-resource>{}</push-resource><content-encoding>aes128gcm</content-encoding>",
            r#"<subscription-public-key type="p256dh">{}</subscription-public-key><auth-secret>{}</auth-secret>"#,
            "</web-push-subscription></subscription>",
            "<trigger><content-update><D:depth>1</D:depth></content-update></trigger></push-register>"
        ),
        xml_escape(endpoint),
        keys.p256dh(),
        keys.auth()
    )
}

/// What a WebDAV-Push `push-message` says: the topic, and the new sync-token when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The collection's topic.
    pub topic: Option<String>,
    /// `content-update/sync-token`.
    pub sync_token: Option<String>,
}

/// Parses a decrypted `push-message`.
pub fn parse_push_message(xml: &str) -> PushMessage {
    use quick_xml::Reader;
    use quick_xml::events::Event;
    let mut reader = Reader::from_str(xml);
    let (mut topic, mut sync_token) = (None, None);
    let mut current: Option<String> = None;
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                current = Some(e.local_name().as_ref().to_owned());
                text.clear();
            }
            Ok(Event::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) => text.push_str(match &*r {
                "amp" => "&",
                "lt" => "<",
                "gt" => ">",
                "quot" => "\"",
                "apos" => "'",
                _ => "",
            }),
            Ok(Event::End(_)) => {
                let value = text.trim().to_owned();
                match current.take().as_deref() {
                    Some("topic") if !value.is_empty() => topic = Some(value),
                    Some("sync-token") if !value.is_empty() => sync_token = Some(value),
                    _ => {}
                }
                text.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    PushMessage { topic, sync_token }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A: the user agent's side.
    #[test]
    fn rfc8291_example_decrypts() {
        let auth: [u8; 16] = d("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let keys = ReceiverKeys::from_raw(&d("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), auth).unwrap();
        assert_eq!(
            keys.p256dh(),
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
        );
        let body = d(concat!(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6P",
            "Bru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        ));
        assert_eq!(keys.decrypt(&body).unwrap(), b"When I grow up, I want to be a watermelon");
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(keys.decrypt(&tampered), Err(DecryptError::Auth));
        assert_eq!(ReceiverKeys::generate().decrypt(&body), Err(DecryptError::Auth), "other keys");
        assert_eq!(keys.decrypt(&body[..10]), Err(DecryptError::Truncated));
    }

    #[test]
    fn push_messages_and_registrations() {
        let m = parse_push_message(
            r#"<?xml version="1.0"?><P:push-message xmlns:D="DAV:" xmlns:P="https://bitfire.at/webdav-push"><P:topic>abc</P:topic><P:content-update><D:sync-token>http://x/sync/7?a=1&amp;b=2</D:sync-token></P:content-update></P:push-message>"#,
        );
        assert_eq!(m, PushMessage { topic: Some("abc".into()), sync_token: Some("http://x/sync/7?a=1&b=2".into()) });
        let keys = ReceiverKeys::generate();
        let body = push_register_body("https://push.example/push/a&b", &keys);
        assert!(body.contains("<push-resource>https://push.example/push/a&amp;b</push-resource>"), "{body}");
        assert!(body.contains(&keys.auth()) && body.contains(&keys.p256dh()));
    }
}
