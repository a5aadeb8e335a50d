//! APNs answers classified as engine outcomes (Apple, "Handling notification responses from APNs").

use std::time::Duration;

use crate::engine::Outcome;

/// The `reason` of an APNs error body `{"reason": "…", "timestamp": …}`.
pub fn reason(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["reason"].as_str().unwrap_or_default().chars().take(100).collect()
}

/// Whether the provider token must be renewed (and the request tried once more).
pub fn needs_new_token(status: u16, reason: &str) -> bool {
    status == 403 && reason == "ExpiredProviderToken"
}

/// What an APNs answer means for the delivery.
pub fn classify(status: u16, retry: Option<Duration>, body: &str) -> Outcome {
    if status == 200 {
        return Outcome::Delivered;
    }
    let r = reason(body);
    let detail = format!("HTTP {status} {r}");
    match (status, r.as_str()) {
        // The device token is dead, or not one of this app/environment.
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Outcome::Gone(detail),
        (429 | 500 | 503, _) | (403, "ExpiredProviderToken") => Outcome::Retry { after: retry, reason: detail },
        _ => Outcome::Rejected(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_errors_are_classified() {
        assert_eq!(classify(200, None, ""), Outcome::Delivered);
        for b in [r#"{"reason":"Unregistered","timestamp":1700000000000}"#, r#"{"reason":"ExpiredToken"}"#] {
            assert!(matches!(classify(410, None, b), Outcome::Gone(_)), "{b}");
        }
        assert!(matches!(classify(400, None, r#"{"reason":"BadDeviceToken"}"#), Outcome::Gone(_)));
        assert!(matches!(classify(400, None, r#"{"reason":"DeviceTokenNotForTopic"}"#), Outcome::Gone(_)));
        assert!(matches!(classify(400, None, r#"{"reason":"BadPriority"}"#), Outcome::Rejected(_)));
        assert!(matches!(classify(413, None, r#"{"reason":"PayloadTooLarge"}"#), Outcome::Rejected(_)));
        assert!(matches!(classify(403, None, r#"{"reason":"InvalidProviderToken"}"#), Outcome::Rejected(_)));
        for s in [429, 500, 503] {
            assert!(matches!(classify(s, None, r#"{"reason":"TooManyRequests"}"#), Outcome::Retry { .. }), "{s}");
        }
        assert!(needs_new_token(403, "ExpiredProviderToken"));
    }
}
