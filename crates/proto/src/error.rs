//! The JSON error body.

use serde::{Deserialize, Serialize};

/// Body of every 4xx/5xx answer of the Director: `{"error": "code", "message": "…", "field": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_json`, `unauthorized`, `payload_too_large`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field the error is about, where there is one (`topic`, `push_services.fcm`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
