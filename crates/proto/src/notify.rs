//! `POST /notify`: an Application Server tells the Director that collections changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What kind of change happened (the spec's triggers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A member of the collection was added, changed or removed.
    Content,
    /// A property of the collection itself changed.
    Property,
}

impl Trigger {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Content => "content",
            Trigger::Property => "property",
        }
    }
}

/// Body of `POST /notify`. Exactly the draft's `{"topic": "…"}`, plus optional extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The topic that changed (the draft's only field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A batch of topics; each may carry its own sync-token and trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<NotifyTopic>>,
    /// The collection's new sync-token (RFC 6578), passed on to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// What changed; absent means `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Subscription ids not to notify (the spec's `Push-Dont-Notify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// One entry of [`NotifyRequest::topics`]: a bare topic or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NotifyTopic {
    /// `"topic"`: inherits `sync_token` and `trigger` of the request.
    Plain(String),
    /// `{"topic": "…", "sync_token": "…", "trigger": "…"}`.
    Detailed(TopicEntry),
}

/// The object form of [`NotifyTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicEntry {
    /// The topic.
    pub topic: String,
    /// Its new sync-token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// What changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// Body of the `202 Accepted` answer to `POST /notify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyResponse {
    /// Number of topics in the request.
    pub topics: u64,
    /// Number of subscriptions the notification was handed to (after `exclude` and expiry).
    pub addressed: u64,
    /// The same count per push service, only services with subscribers appear.
    #[serde(default)]
    pub services: BTreeMap<String, u64>,
    /// The request's topics that had no subscriber on any node (each once; absent when none).
    /// An application server may skip them until it signs a new grant for them
    /// (`docs/protocol.md` §2.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unheard: Vec<String>,
    /// `true` when a cluster node could not tell which topics nobody listens to (its Redis
    /// did not answer): `unheard` is then empty, whatever the truth.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unheard_unknown: bool,
}

/// One entry of `GET /topics/active`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveTopic {
    /// The topic.
    pub topic: String,
    /// Its subscriptions (unexpired or not yet purged), in total.
    pub subscriptions: u64,
    /// The same per push service.
    pub services: BTreeMap<String, u64>,
    /// In a cluster, for WebSocket subscriptions held by another node: that node. A topic may
    /// then appear once per node; the counts add up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Body of `GET /topics/active`: one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveTopics {
    /// The topics of this page.
    pub topics: Vec<ActiveTopic>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `true` when a cluster node could not list the other nodes' WebSocket topics (its Redis
    /// did not answer): the list is then incomplete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}
