//! FCM HTTP v1 answers classified as engine outcomes (Firebase "FCM error codes").

use std::time::Duration;

use crate::engine::Outcome;

/// The parts of an FCM error body we act on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FcmError {
    /// `error.status` (`NOT_FOUND`, `INVALID_ARGUMENT`, …).
    pub status: String,
    /// `error.details[].errorCode` of the `FcmError` detail (`UNREGISTERED`, …).
    pub error_code: String,
    /// `error.message`.
    pub message: String,
}

impl FcmError {
    /// Parses `{"error": {"code", "message", "status", "details": [{"@type", "errorCode"}]}}`.
    pub fn parse(body: &str) -> FcmError {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let e = &v["error"];
        let error_code = e["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError")))
            .and_then(|d| d["errorCode"].as_str())
            .unwrap_or_default()
            .to_owned();
        FcmError {
            status: e["status"].as_str().unwrap_or_default().to_owned(),
            error_code,
            message: e["message"].as_str().unwrap_or_default().chars().take(200).collect(),
        }
    }

    /// The most specific code.
    pub fn code(&self) -> &str {
        if self.error_code.is_empty() { &self.status } else { &self.error_code }
    }
}

/// What an FCM answer means for the delivery. `UNAUTHENTICATED` (our access token expired or
/// was revoked) is handled by the client before this: it refreshes the token once.
pub fn classify(status: u16, retry: Option<Duration>, body: &str) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Delivered;
    }
    let e = FcmError::parse(body);
    let detail = format!("HTTP {status} {}: {}", e.code(), e.message);
    match (status, e.code()) {
        (_, "UNREGISTERED") | (404, _) => Outcome::Gone(detail),
        (_, "SENDER_ID_MISMATCH") => Outcome::Gone(detail),
        (400, "INVALID_ARGUMENT") if e.message.contains("not a valid FCM registration token") => Outcome::Gone(detail),
        (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") | (429 | 500..=599, _) => {
            Outcome::Retry { after: retry, reason: detail }
        }
        _ => Outcome::Rejected(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: u16, status: &str, error_code: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": message, "status": status, "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]}})
        .to_string()
    }

    #[test]
    fn fcm_errors_are_classified() {
        assert_eq!(classify(200, None, r#"{"name":"projects/p/messages/1"}"#), Outcome::Delivered);
        assert!(matches!(classify(404, None, &body(404, "NOT_FOUND", "UNREGISTERED", "x")), Outcome::Gone(_)));
        assert!(matches!(
            classify(
                400,
                None,
                &body(
                    400,
                    "INVALID_ARGUMENT",
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token"
                )
            ),
            Outcome::Gone(_)
        ));
        assert!(matches!(
            classify(400, None, &body(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "bad ttl")),
            Outcome::Rejected(_)
        ));
        assert!(matches!(
            classify(403, None, &body(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "x")),
            Outcome::Gone(_)
        ));
        let r = classify(429, Some(Duration::from_secs(9)), &body(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "x"));
        assert!(matches!(r, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(9)), "{r:?}");
        assert!(matches!(classify(503, None, &body(503, "UNAVAILABLE", "UNAVAILABLE", "x")), Outcome::Retry { .. }));
        assert!(matches!(classify(500, None, "not json"), Outcome::Retry { .. }));
        assert!(matches!(
            classify(401, None, &body(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "x")),
            Outcome::Rejected(_)
        ));
    }
}
