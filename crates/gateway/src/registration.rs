//! Registration URLs and who owns them.
//!
//! A registration URL is `<public_url><registration_path><token>`, where the token carries the
//! Director subscription it stands for, the collection, and a hash of the registering user,
//! authenticated with an HMAC under the installation's secret. The gateway thus keeps no table
//! of registrations: the Director holds the subscriptions, and the token proves which one a URL
//! names and who made it. Only that user can delete it or name it in `Push-Dont-Notify`.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use crate::topic::TopicKey;

const LABEL: &str = "davpush-registration";

/// What a registration URL stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Director subscription id.
    #[serde(rename = "s")]
    pub subscription_id: String,
    /// Director client id.
    #[serde(rename = "c")]
    pub client_id: String,
    /// Topic.
    #[serde(rename = "t")]
    pub topic: String,
    /// Hash of the owner.
    #[serde(rename = "u")]
    pub owner: String,
    /// The collection's upstream path.
    #[serde(rename = "p")]
    pub path: String,
}

impl Registration {
    /// The token for a registration URL.
    pub fn encode(&self, key: &TopicKey) -> String {
        let payload = serde_json::to_vec(self).expect("serializes");
        let mac = key.mac(LABEL, &payload);
        format!("{}.{}", B64.encode(&payload), B64.encode(mac))
    }

    /// Reads and authenticates a token; `None` if forged, altered or malformed.
    pub fn decode(token: &str, key: &TopicKey) -> Option<Registration> {
        let (p, m) = token.split_once('.')?;
        let payload = B64.decode(p).ok()?;
        let mac = B64.decode(m).ok()?;
        if !key.verify(LABEL, &payload, &mac) {
            return None;
        }
        serde_json::from_slice(&payload).ok()
    }
}

fn h(label: &str, data: &[u8]) -> String {
    let mut buf = label.as_bytes().to_vec();
    buf.push(0);
    buf.extend_from_slice(data);
    B64.encode(&digest(&SHA256, &buf).as_ref()[..16])
}

/// Who is making a request, from its `Authorization` header: the user name for Basic, a hash of
/// the credentials otherwise. The upstream decides whether they are valid.
pub fn user_key(authorization: Option<&str>) -> String {
    match authorization {
        None => "anonymous".into(),
        Some(a) => match a.split_once(' ') {
            Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => STANDARD
                .decode(creds.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|s| s.split_once(':').map(|(u, _)| format!("basic:{u}")))
                .unwrap_or_else(|| format!("auth:{}", h("auth", a.as_bytes()))),
            _ => format!("auth:{}", h("auth", a.as_bytes())),
        },
    }
}

/// The owner hash stored in registration tokens.
pub fn owner_hash(user_key: &str) -> String {
    h("owner", user_key.as_bytes())
}

/// The Director client id of a registration: one per user and push resource, so that the same
/// push resource on the same collection by the same user updates instead of duplicating.
pub fn client_id(user_key: &str, push_resource: &str) -> String {
    format!("gw-{}", h("client", format!("{user_key}\0{push_resource}").as_bytes()))
}

/// Parses `Push-Dont-Notify`: `*`, or a list of quoted registration URLs.
pub fn parse_dont_notify(value: &str) -> DontNotify {
    let v = value.trim();
    if v == "*" {
        return DontNotify::All;
    }
    DontNotify::Urls(v.split(',').map(|s| s.trim().trim_matches('"').to_owned()).filter(|s| !s.is_empty()).collect())
}

/// A parsed `Push-Dont-Notify` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DontNotify {
    /// `*`: notify nobody.
    All,
    /// These registration URLs.
    Urls(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registration {
        Registration {
            subscription_id: "S1".into(),
            client_id: "gw-x".into(),
            topic: "T".into(),
            owner: owner_hash("basic:alice"),
            path: "/alice/cal/".into(),
        }
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let key = TopicKey::new(b"0123456789abcdef0123456789abcdef");
        let t = reg().encode(&key);
        assert_eq!(Registration::decode(&t, &key), Some(reg()));
        let other = TopicKey::new(b"another-secret-another-secret-xx");
        assert_eq!(Registration::decode(&t, &other), None);
        let mut forged = reg();
        forged.owner = owner_hash("basic:mallory");
        let (_, mac) = t.split_once('.').unwrap();
        let forged = format!("{}.{mac}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        assert_eq!(Registration::decode(&forged, &key), None);
        assert_eq!(Registration::decode("garbage", &key), None);
    }

    #[test]
    fn users_and_headers() {
        assert_eq!(user_key(Some("Basic YWxpY2U6c2VjcmV0")), "basic:alice");
        assert_eq!(user_key(Some("basic YWxpY2U6b3RoZXI=")), "basic:alice");
        assert!(user_key(Some("Bearer xyz")).starts_with("auth:"));
        assert_eq!(user_key(None), "anonymous");
        assert_ne!(client_id("basic:alice", "https://p/1"), client_id("basic:bob", "https://p/1"));
        assert_eq!(parse_dont_notify(" * "), DontNotify::All);
        assert_eq!(
            parse_dont_notify(r#""https://a/x/1", "https://a/x/2""#),
            DontNotify::Urls(vec!["https://a/x/1".into(), "https://a/x/2".into()])
        );
    }
}
