//! HMS Push Kit answers classified as engine outcomes. HMS puts a business code in the body
//! (`{"code":"80000000","msg":"Success","requestId":"…"}`) for HTTP 200 and 400 alike: branch on it.

use std::time::Duration;

use crate::engine::Outcome;

/// Success.
pub const SUCCESS: &str = "80000000";
/// Partial success; `msg` lists the `illegal_tokens`.
pub const PARTIAL: &str = "80100000";
/// All tokens invalid (or of another app).
pub const ALL_TOKENS_INVALID: &str = "80300007";
/// OAuth authentication error.
pub const AUTH_ERROR: &str = "80200001";
/// OAuth token expired.
pub const TOKEN_EXPIRED: &str = "80200003";

/// The body's business code and message.
pub fn parse(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let code = match &v["code"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    (code, v["msg"].as_str().unwrap_or_default().to_owned())
}

/// Whether the access token must be renewed (and the request tried once more).
pub fn needs_new_token(status: u16, code: &str) -> bool {
    status == 401 || code == AUTH_ERROR || code == TOKEN_EXPIRED
}

/// What an HMS answer means for a delivery to `token` (`None`: a topic message).
pub fn classify(status: u16, retry: Option<Duration>, body: &str, token: Option<&str>) -> Outcome {
    let (code, msg) = parse(body);
    let detail = || format!("HTTP {status} code {code}: {}", msg.chars().take(200).collect::<String>());
    match code.as_str() {
        SUCCESS if status == 200 => Outcome::Delivered,
        PARTIAL => {
            // `msg` is itself JSON: {"success":1,"failure":1,"illegal_tokens":["…"]}.
            let m: serde_json::Value = serde_json::from_str(&msg).unwrap_or_default();
            let illegal = m["illegal_tokens"].as_array().into_iter().flatten().filter_map(|t| t.as_str());
            match token {
                Some(t) if illegal.into_iter().any(|x| x == t) => Outcome::Gone(detail()),
                _ => Outcome::Delivered,
            }
        }
        ALL_TOKENS_INVALID if token.is_some() => Outcome::Gone(detail()),
        AUTH_ERROR | TOKEN_EXPIRED => Outcome::Retry { after: retry, reason: detail() },
        _ if status == 401 || status == 429 || status >= 500 => Outcome::Retry { after: retry, reason: detail() },
        _ => Outcome::Rejected(detail()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(code: &str, msg: &str) -> String {
        serde_json::json!({"code": code, "msg": msg, "requestId": "1"}).to_string()
    }

    #[test]
    fn hms_codes_are_classified() {
        assert_eq!(classify(200, None, &b(SUCCESS, "Success"), Some("t")), Outcome::Delivered);
        let partial = b(PARTIAL, r#"{"success":0,"failure":1,"illegal_tokens":["t"]}"#);
        assert!(matches!(classify(200, None, &partial, Some("t")), Outcome::Gone(_)));
        assert_eq!(classify(200, None, &partial, Some("other")), Outcome::Delivered);
        assert!(matches!(classify(400, None, &b(ALL_TOKENS_INVALID, "all invalid"), Some("t")), Outcome::Gone(_)));
        assert!(matches!(classify(400, None, &b(ALL_TOKENS_INVALID, "x"), None), Outcome::Rejected(_)));
        for c in ["80100003", "80300008", "80300010", "80300002"] {
            assert!(matches!(classify(400, None, &b(c, "x"), Some("t")), Outcome::Rejected(_)), "{c}");
        }
        assert!(matches!(classify(401, None, &b(TOKEN_EXPIRED, "x"), Some("t")), Outcome::Retry { .. }));
        let r = classify(503, Some(Duration::from_secs(3)), &b("81000001", "flow control"), Some("t"));
        assert!(matches!(r, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3)));
        assert!(matches!(classify(502, None, "", Some("t")), Outcome::Retry { .. }));
        assert!(needs_new_token(200, TOKEN_EXPIRED) && needs_new_token(401, "") && !needs_new_token(400, "80100003"));
    }
}
