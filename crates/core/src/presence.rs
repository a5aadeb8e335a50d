//! The seam through which the nodes of a cluster know each other's WebSocket subscriptions
//! (`docs/scale-out.md`, "Topics nobody listens to").
//!
//! Durable subscriptions are in every node's [`crate::Index`]; WebSocket subscriptions only in
//! the index of the node holding the connection. To tell an application server that *nobody*
//! listens to a topic, a node must know whether another node has a WebSocket subscriber of it.
//! A [`Presence`] records how many WebSocket subscriptions this node has per topic where every
//! node can look ([`Presence::changed`], awaited through [`Presence::recorded`] before a
//! `subscribe` is acknowledged), and answers which topics have such subscribers on other nodes
//! ([`Presence::heard_elsewhere`]) — or that it cannot tell (`None`), in which case nothing may
//! be called unheard.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Index, ServiceKind, Topic};

/// What a [`Presence`] reads of this node: its WebSocket subscriptions per topic.
pub trait LocalTopics: Send + Sync + 'static {
    /// Number of this node's WebSocket subscriptions of `topic`.
    fn websocket_count(&self, topic: &str) -> usize;
    /// Number of pages [`LocalTopics::websocket_topics`] has.
    fn pages(&self) -> usize;
    /// The topics of page `page` with WebSocket subscriptions, and their counts (one shard
    /// of the index: never the whole index at once).
    fn websocket_topics(&self, page: usize) -> Vec<(Topic, usize)>;
}

impl LocalTopics for Index {
    fn websocket_count(&self, topic: &str) -> usize {
        self.topic_counts(topic)[ServiceKind::WebSocket.index()]
    }

    fn pages(&self) -> usize {
        Index::SHARDS
    }

    fn websocket_topics(&self, page: usize) -> Vec<(Topic, usize)> {
        self.topics_page(page, "", usize::MAX, |k| k == ServiceKind::WebSocket)
            .into_iter()
            .map(|(t, c)| (t, c[ServiceKind::WebSocket.index()]))
            .collect()
    }
}

/// A node of the cluster as the presence registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// Its `cluster.node_id`.
    pub node: String,
    /// Whether its registration is current (it renewed it within the presence TTL).
    pub live: bool,
    /// Seconds since it last renewed its registration.
    pub seen_secs_ago: u64,
    /// Topics it holds WebSocket subscriptions of (its own report).
    pub websocket_topics: u64,
    /// This node.
    pub this: bool,
}

/// One page of the topics other nodes hold WebSocket subscriptions of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePage {
    /// `(topic, node, count)`.
    pub entries: Vec<(String, String, u64)>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<String>,
}

/// See the module documentation.
#[async_trait]
pub trait Presence: Send + Sync + std::fmt::Debug + 'static {
    /// Starts recording this node's WebSocket subscriptions, read from `local`.
    fn attach(&self, local: Arc<dyn LocalTopics>);
    /// The number of WebSocket subscriptions of `topic` on this node changed. Never blocks;
    /// returns a ticket for [`Presence::recorded`].
    fn changed(&self, topic: &Topic) -> u64;
    /// Waits (bounded) until the change with `ticket` is recorded where other nodes look; at
    /// once if the registry is unreachable (the change is recorded when it is back).
    async fn recorded(&self, ticket: u64);
    /// For each topic, whether another node has a WebSocket subscriber of it; `None` when this
    /// node cannot tell (registry unreachable, or not yet watched for a full TTL).
    async fn heard_elsewhere(&self, topics: &[Topic]) -> Option<Vec<bool>>;
    /// The nodes of the cluster (those registered recently); `None` when unreachable.
    async fn nodes(&self) -> Option<Vec<NodeStatus>>;
    /// A page of at most about `limit` topics held by other live nodes, from `cursor` (`None`:
    /// the first page). `None` when unreachable or the cursor is not one of ours.
    async fn remote_topics(&self, cursor: Option<&str>, limit: usize) -> Option<RemotePage>;
    /// This node stops: its record is removed, so that others stop counting its connections.
    async fn leave(&self) {}
}
