//! Issue 15's second unmeasured figure: the Redis memory of the cluster's presence registry
//! (`RedisPresence`, docs/scale-out.md) per active topic, with 100,000 topics held by one node.
//! The registry writes them as it does in production (attach, full rewrite, registration); then
//! Redis is asked `MEMORY USAGE <key> SAMPLES 0` (exact, for the node's hash and the nodes' set)
//! and `INFO memory`'s `used_memory` before and after (the whole server: noisy when others use
//! the same Redis). Topics are 22 characters (the gateway's), one subscription each.
//! Redis from `DAVPUSH_TEST_REDIS` (default `redis://127.0.0.1:6379`); keys under a fresh
//! prefix, removed at the end. `cargo bench -p davpush-cluster --bench presence_memory`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use davpush_cluster::{PresenceSettings, RedisPresence};
use davpush_core::{LocalTopics, Presence, Topic};

const TOPICS: usize = 100_000;
const PAGE: usize = 4096;

struct Fixed(Vec<(Topic, usize)>);

impl LocalTopics for Fixed {
    fn websocket_count(&self, topic: &str) -> usize {
        usize::from(self.0.iter().any(|(t, _)| t.as_str() == topic))
    }
    fn pages(&self) -> usize {
        self.0.len().div_ceil(PAGE)
    }
    fn websocket_topics(&self, page: usize) -> Vec<(Topic, usize)> {
        self.0.iter().skip(page * PAGE).take(PAGE).cloned().collect()
    }
}

async fn used_memory(c: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(c).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

async fn usage(c: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    let n: Option<i64> = redis::cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0).query_async(c).await.unwrap();
    n.unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = std::env::var("DAVPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url.as_str()).unwrap();
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            eprintln!("no Redis at {url}: nothing measured");
            std::process::exit(1);
        };
        let prefix = format!("davpush-bench-presence-{}-{}", std::process::id(), davpush_core::unix_now());
        let node = "node-1";
        let before = used_memory(&mut c).await;
        let presence = RedisPresence::start(PresenceSettings {
            redis_url: url.clone(),
            node_id: node.into(),
            prefix: prefix.clone(),
            ttl: Duration::from_secs(30),
        })
        .unwrap();
        let topics = (0..TOPICS).map(|t| (Topic::parse(&format!("{t:0>22}"), 64).unwrap(), 1)).collect::<Vec<_>>();
        presence.attach(Arc::new(Fixed(topics)));
        let hash = format!("{prefix}:presence:node:{node}");
        let nodes = format!("{prefix}:presence:nodes");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let len: i64 = redis::cmd("HLEN").arg(&hash).query_async(&mut c).await.unwrap();
            let registered: Option<f64> = redis::cmd("ZSCORE").arg(&nodes).arg(node).query_async(&mut c).await.unwrap();
            if len == TOPICS as i64 && registered.is_some() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the registry did not write {TOPICS} topics in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = used_memory(&mut c).await;
        let (h, z) = (usage(&mut c, &hash).await, usage(&mut c, &nodes).await);
        let encoding: String = redis::cmd("OBJECT").arg("ENCODING").arg(&hash).query_async(&mut c).await.unwrap();
        let version: String = redis::cmd("INFO").arg("server").query_async(&mut c).await.unwrap();
        let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_owned();
        println!("Redis presence registry, {TOPICS} active topics on one node (Redis {version}, hash as {encoding})");
        println!(
            "MEMORY USAGE (node hash + nodes set) {:>6.1} bytes per topic ({:.1} MB)",
            (h + z) as f64 / TOPICS as f64,
            (h + z) as f64 / 1e6
        );
        println!(
            "INFO used_memory delta               {:>6.1} bytes per topic ({:.1} MB; whole server)",
            (after - before) as f64 / TOPICS as f64,
            (after - before) as f64 / 1e6
        );
        presence.leave().await;
        let _: () =
            redis::cmd("DEL").arg(&hash).arg(&nodes).arg(format!("{hash}:new")).query_async(&mut c).await.unwrap();
    });
}
