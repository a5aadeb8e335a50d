//! `[cluster]`: scale-out over Redis pub/sub (see `docs/scale-out.md`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// `redis://host:port[/db]` linking the nodes; empty: a single node.
    pub redis_url: String,
    /// This node's id, unique in the cluster; empty: random at each start.
    pub node_id: String,
    /// Prefix of the Redis channel names (clusters sharing one Redis need different prefixes).
    pub channel_prefix: String,
    /// Messages queued for publishing (and received ones waiting to be applied).
    pub queue: usize,
    /// Seconds between `PING`s on the idle publishing connection (a connection Redis dropped is
    /// replaced before a message needs it).
    pub ping_interval_secs: u64,
    /// Seconds a message that could not be published is tried again on new connections before
    /// it is given up (counted `failed`).
    pub publish_retry_secs: u64,
    /// Seconds a node's record of its WebSocket topics stays current without renewal (renewed
    /// every third of it); also how long a node watches before it calls a topic unheard.
    pub presence_ttl_secs: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            redis_url: String::new(),
            node_id: String::new(),
            channel_prefix: "davpush".into(),
            queue: 4096,
            ping_interval_secs: 1,
            publish_retry_secs: 30,
            presence_ttl_secs: 15,
        }
    }
}

/// Validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://…`
    pub redis_url: String,
    /// This node's id.
    pub node_id: String,
    /// Channel name prefix.
    pub channel_prefix: String,
    /// Queue length.
    pub queue: usize,
    /// Interval of the idle publishing connection's `PING`.
    pub ping_interval: Duration,
    /// How long an unpublished message is tried again.
    pub publish_retry: Duration,
    /// How long a node's presence record stays current without renewal.
    pub presence_ttl: Duration,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `None` for a single node. A cluster needs a store every node shares (`shared_store`).
pub(super) fn cluster_config(c: &RawCluster, shared_store: bool) -> Result<Option<ClusterConfig>, ConfigError> {
    if c.redis_url.is_empty() {
        return Ok(None);
    }
    if !c.redis_url.starts_with("redis://") {
        return Err(invalid("cluster.redis_url", "must be a redis:// URL (or empty for a single node)"));
    }
    if !shared_store {
        return Err(invalid(
            "cluster.redis_url",
            "a cluster needs a store all nodes share: set store.url to a postgres:// URL",
        ));
    }
    let node_id = if c.node_id.is_empty() { davpush_core::ids::random_token(6) } else { c.node_id.clone() };
    if !is_name(&node_id) {
        return Err(invalid("cluster.node_id", "must be 1 to 64 characters of A-Z a-z 0-9 - _ ."));
    }
    if !is_name(&c.channel_prefix) {
        return Err(invalid("cluster.channel_prefix", "must be 1 to 64 characters of A-Z a-z 0-9 - _ ."));
    }
    if c.queue == 0 {
        return Err(invalid("cluster.queue", "must be at least 1"));
    }
    if !(1..=3600).contains(&c.ping_interval_secs) {
        return Err(invalid("cluster.ping_interval_secs", "must be 1 to 3600"));
    }
    if c.publish_retry_secs > 3600 {
        return Err(invalid("cluster.publish_retry_secs", "must be 0 to 3600"));
    }
    if !(1..=3600).contains(&c.presence_ttl_secs) {
        return Err(invalid("cluster.presence_ttl_secs", "must be 1 to 3600"));
    }
    Ok(Some(ClusterConfig {
        redis_url: c.redis_url.clone(),
        node_id,
        channel_prefix: c.channel_prefix.clone(),
        queue: c.queue,
        ping_interval: Duration::from_secs(c.ping_interval_secs),
        publish_retry: Duration::from_secs(c.publish_retry_secs),
        presence_ttl: Duration::from_secs(c.presence_ttl_secs),
    }))
}

/// `url` with the password of its user info replaced by `***`.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split_once(':').map_or(user, |(n, _)| n);
            format!("{scheme}://{name}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_are_checked_and_named() {
        assert_eq!(cluster_config(&RawCluster::default(), false).unwrap(), None);
        let raw =
            |url: &str, node: &str| RawCluster { redis_url: url.into(), node_id: node.into(), ..RawCluster::default() };
        let e = cluster_config(&raw("http://x", ""), true).unwrap_err().to_string();
        assert!(e.contains("cluster.redis_url"), "{e}");
        let e = cluster_config(&raw("redis://127.0.0.1", ""), false).unwrap_err().to_string();
        assert!(e.contains("cluster.redis_url") && e.contains("postgres"), "{e}");
        let e = cluster_config(&raw("redis://127.0.0.1", "a b"), true).unwrap_err().to_string();
        assert!(e.contains("cluster.node_id"), "{e}");
        let c = cluster_config(&raw("redis://127.0.0.1", ""), true).unwrap().unwrap();
        assert!(is_name(&c.node_id), "a random node id is generated: {}", c.node_id);
        assert_eq!(c.channel_prefix, "davpush");
        assert_eq!((c.ping_interval, c.publish_retry), (Duration::from_secs(1), Duration::from_secs(30)));
        let e = cluster_config(&RawCluster { ping_interval_secs: 0, ..raw("redis://127.0.0.1", "") }, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.ping_interval_secs"), "{e}");
        let e = cluster_config(&RawCluster { publish_retry_secs: 86_400, ..raw("redis://127.0.0.1", "") }, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.publish_retry_secs"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(redact_url("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///tmp/x"), "sqlite:///tmp/x");
    }
}
