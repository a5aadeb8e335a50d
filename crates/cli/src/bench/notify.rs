//! Notify requests of the load tool.

use super::*;

// ---------------------------------------------------------------------------------------------
// Notify requests.

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
