//! What the nodes of a cluster share about push subscriptions (`docs/protocol.md` §10.4): the
//! [`PushDirectory`] a cluster implements (`davpush_cluster::RedisPushDirectory`), and what it
//! stores and carries between nodes.
//!
//! A [`SharedRecord`] per push subscription says which node holds the client's connection (or
//! last held it), the restriction and a digest of the secret; messages for an offline client
//! wait in the directory ([`Waiting`], ciphertext only) so that whichever node the client
//! re-attaches on hands them over; a message accepted by another node is [`Forwarded`] to the
//! holding node. Nothing here is ever plaintext: the frames carry the body as the sender
//! encrypted it.

use serde::{Deserialize, Serialize};

/// A push subscription as every node of the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRecord {
    /// SHA-256 of the secret, base64url (the secret itself is never stored).
    pub secret_digest: String,
    /// The application-server key it is restricted to (base64url), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapid_key: Option<String>,
    /// When it ends unless re-attached (Unix seconds); the record lives until then.
    pub expires: i64,
    /// Deleted: pushes get `410` until `expires`.
    #[serde(default)]
    pub gone: bool,
    /// The node holding (or last holding) the client's connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A message waiting for its client, or on its way to the node holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The mailbox key (a newer message with the same key replaces a queued older one).
    pub key: String,
    /// The `Topic` header, if any (a newer waiting message with the same topic replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The client's `push` frame (JSON), the body in it still encrypted.
    pub frame: String,
    /// When its TTL ends (Unix seconds).
    pub expires: i64,
}

/// What one node tells the node holding a push subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// The push subscription.
    pub push_id: String,
    /// What happened.
    #[serde(flatten)]
    pub what: ForwardKind,
}

/// See [`Forwarded`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardKind {
    /// A message another node accepted: hand it to the connection, or keep it waiting.
    Deliver {
        /// The message.
        message: Waiting,
        /// Times it was forwarded already (it is forwarded at most twice).
        #[serde(default)]
        hops: u8,
    },
    /// The subscription was deleted on another node: answer `410` from now on.
    Ended,
    /// The client re-attached on another node: forget the local copy.
    Moved,
}

/// The directory could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the cluster's push directory: {0}")]
pub struct DirectoryError(pub String);

/// Push subscriptions known cluster-wide (see the module documentation).
#[async_trait::async_trait]
pub trait PushDirectory: Send + Sync + std::fmt::Debug + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The record of `push_id`, if there is one.
    async fn get(&self, push_id: &str) -> Result<Option<SharedRecord>, DirectoryError>;
    /// Writes the record of `push_id`; it lives until `record.expires`.
    async fn put(&self, push_id: &str, record: &SharedRecord) -> Result<(), DirectoryError>;
    /// Keeps `message` waiting for `push_id` until it expires: messages expired by `now` and
    /// one with the same topic go, and at most `max_pending` (the newest) stay.
    async fn queue(&self, push_id: &str, message: &Waiting, max_pending: usize, now: i64)
    -> Result<(), DirectoryError>;
    /// How many messages wait for `push_id`.
    async fn waiting(&self, push_id: &str) -> Result<usize, DirectoryError>;
    /// Takes (removes and returns, oldest first) the messages waiting for `push_id`.
    async fn take(&self, push_id: &str) -> Result<Vec<Waiting>, DirectoryError>;
    /// Tells `node` (which holds the subscription) what happened.
    async fn forward(&self, node: &str, forwarded: &Forwarded) -> Result<(), DirectoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_messages_round_trip() {
        let f = Forwarded {
            push_id: "p".into(),
            what: ForwardKind::Deliver {
                message: Waiting { key: "push:p:t".into(), topic: Some("t".into()), frame: "{}".into(), expires: 9 },
                hops: 1,
            },
        };
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"kind\":\"deliver\""), "{json}");
        assert_eq!(serde_json::from_str::<Forwarded>(&json).unwrap(), f);
        let ended: Forwarded = serde_json::from_str(r#"{"push_id":"p","kind":"ended"}"#).unwrap();
        assert_eq!(ended.what, ForwardKind::Ended);
    }
}
