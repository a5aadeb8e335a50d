//! Local stand-ins for the mobile push services: Google's OAuth and FCM HTTP v1 with Instance
//! ID ([`fcm`]), the APNs provider API over HTTP/2 and TLS ([`apns`]), Huawei's OAuth and Push
//! Kit ([`hms`]). Each verifies what the real service verifies (credentials, signatures,
//! message shape), answers with the real service's error bodies, records what it accepted and
//! can be scripted to answer with a given error next.
//!
//! They serve on 127.0.0.1 with a free port, in the test's runtime. Their checks of signed
//! tokens ([`jwt`]) use aws-lc-rs's verification API, a code path independent of the signing
//! side in `davpush-delivery`.

pub mod apns;
pub mod fcm;
pub mod hms;
pub mod jwt;

/// A fresh random access-token text (base64url of 16 random bytes).
pub(crate) fn random_token() -> String {
    use base64::Engine as _;
    let mut buf = [0u8; 16];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
