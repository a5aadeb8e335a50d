//! Notify requests of the load tool.

use super::*;

// ---------------------------------------------------------------------------------------------
// Notify requests.

/// A failed notify request.
#[derive(Debug)]
pub(super) enum NotifyError {
    Unauthorized(String),
    Status(u16, String),
    Transport(String),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Unauthorized(b) => write!(f, "the notify token is not accepted (401): {b}"),
            NotifyError::Status(s, b) => write!(f, "POST /notify answered {s}: {b}"),
            NotifyError::Transport(e) => write!(f, "POST /notify failed: {e}"),
        }
    }
}

pub(super) async fn post_notify(
    http: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
    body: Vec<u8>,
) -> Result<NotifyResponse, NotifyError> {
    let resp = http
        .post(url.clone())
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| NotifyError::Transport(error_chain(&e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let b = resp.text().await.unwrap_or_default();
        return Err(NotifyError::Unauthorized(b));
    }
    if !status.is_success() {
        let b = resp.text().await.unwrap_or_default();
        return Err(NotifyError::Status(status.as_u16(), b));
    }
    resp.json::<NotifyResponse>().await.map_err(|e| NotifyError::Transport(error_chain(&e)))
}

/// Body of a notify request for `(topic, sync_token)` pairs: the draft's single-topic form for
/// one, a `topics` batch for more.
pub(super) fn notify_body(entries: Vec<(String, String)>) -> Vec<u8> {
    let req = if entries.len() == 1 {
        let (topic, token) = entries.into_iter().next().expect("one entry");
        NotifyRequest { topic: Some(topic), sync_token: Some(token), ..NotifyRequest::default() }
    } else {
        NotifyRequest {
            topics: Some(
                entries
                    .into_iter()
                    .map(|(topic, sync_token)| {
                        NotifyTopic::Detailed(TopicEntry { topic, sync_token: Some(sync_token), trigger: None })
                    })
                    .collect(),
            ),
            ..NotifyRequest::default()
        }
    };
    serde_json::to_vec(&req).expect("a notify request always serializes")
}
