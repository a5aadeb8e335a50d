//! [`RedisPresence`]: which topics each node holds WebSocket subscriptions of, in Redis, so that
//! a node can tell an application server that nobody anywhere listens to a topic
//! (`docs/scale-out.md`, "Topics nobody listens to").
//!
//! Keys (all under the cluster's `channel_prefix`):
//! - `<prefix>:presence:nodes`, a sorted set: each node, scored with the unix time (ms) until
//!   which its record is current. A node renews it every third of `ttl`. It is there only while
//!   its record is complete: it is added after a full rewrite of the node's hash.
//! - `<prefix>:presence:node:<node_id>`, a hash: topic → this node's WebSocket subscriptions of
//!   it. One writer task per node keeps it: a change is queued ([`Presence::changed`]), the task
//!   writes the topic's current count (read from the index, so writes converge however changes
//!   interleave), and a `subscribe` waits ([`Presence::recorded`], at most 1 s) until that write
//!   is acknowledged. After a failure, or when the node finds its own registration gone (a Redis
//!   restart), it rewrites its hash whole (into a new key, then `RENAME`) before registering again.
//!
//! A node answers "unheard" only when it can vouch for every live node: its own registration
//! is current, it has watched the registry for a full `ttl` since it (re)registered (every live
//! node renews within a third of that, so one whose record was lost has re-registered), and
//! Redis answered. Otherwise the answer is "unknown".

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use davpush_core::{LocalTopics, NodeStatus, Presence, RemotePage, Topic};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::IO_TIMEOUT;

/// How long a `subscribe` waits for its presence to be written.
const RECORD_WAIT: Duration = Duration::from_secs(1);
/// Topics per `HSET` of a full rewrite.
const CHUNK: usize = 1000;

/// Where and how long a node's presence is kept.
#[derive(Debug, Clone)]
pub struct PresenceSettings {
    /// `redis://…`
    pub redis_url: String,
    /// This node's id.
    pub node_id: String,
    /// The cluster's key prefix.
    pub prefix: String,
    /// How long a node's record is current without renewal (renewed every third of it).
    pub ttl: Duration,
}

#[derive(Default)]
struct Dirty {
    topics: HashSet<Topic>,
    /// Tickets handed out so far.
    issued: u64,
}

/// See the module documentation.
pub struct RedisPresence {
    settings: PresenceSettings,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    local: Mutex<Option<Arc<dyn LocalTopics>>>,
    dirty: Mutex<Dirty>,
    wake: Arc<Notify>,
    /// Tickets whose change is written.
    flushed: watch::Sender<u64>,
    /// The last write succeeded.
    healthy: AtomicBool,
    /// Unix ms of the (re)registration the current one follows without a gap; 0: not registered.
    registered_since: AtomicU64,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").field("node", &self.settings.node_id).finish()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RedisPresence {
    /// Starts the writer task (it writes once [`Presence::attach`] gave it the index).
    pub fn start(settings: PresenceSettings) -> Result<Arc<Self>, crate::ClusterError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let p = Arc::new(RedisPresence {
            settings,
            client,
            conn: tokio::sync::Mutex::new(None),
            local: Mutex::new(None),
            dirty: Mutex::default(),
            wake: Arc::new(Notify::new()),
            flushed: watch::Sender::new(0),
            healthy: AtomicBool::new(false),
            registered_since: AtomicU64::new(0),
            stop: watch::Sender::new(false),
        });
        tokio::spawn(writer(Arc::downgrade(&p), p.stop.subscribe()));
        Ok(p)
    }

    /// Stops the writer and removes this node's record (best effort), so that other nodes stop
    /// counting its connections at once.
    async fn remove_record(&self) {
        let _ = self.stop.send(true);
        if let Some(mut c) = self.connection().await {
            let mut pipe = redis::pipe();
            pipe.zrem(self.nodes_key(), &self.settings.node_id)
                .ignore()
                .del(self.hash_key(&self.settings.node_id))
                .ignore();
            let _ = tokio::time::timeout(IO_TIMEOUT, pipe.query_async::<()>(&mut c)).await;
        }
    }

    fn nodes_key(&self) -> String {
        format!("{}:presence:nodes", self.settings.prefix)
    }

    fn hash_key(&self, node: &str) -> String {
        format!("{}:presence:node:{node}", self.settings.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.ttl.as_millis() as u64
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = &*guard {
            return Some(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(IO_TIMEOUT, self.client.get_connection_manager_with_config(config)).await {
            Ok(Ok(c)) => {
                *guard = Some(c.clone());
                Some(c)
            }
            _ => None,
        }
    }

    fn local(&self) -> Option<Arc<dyn LocalTopics>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes this node's whole hash anew and registers it. Returns the tickets it covers.
    async fn rewrite(&self, c: &mut ConnectionManager, local: &dyn LocalTopics) -> redis::RedisResult<u64> {
        // Changes queued until now are covered by what is read below.
        let covered = {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.topics.clear();
            d.issued
        };
        let hash = self.hash_key(&self.settings.node_id);
        let fresh = format!("{hash}:new");
        redis::cmd("DEL").arg(&fresh).query_async::<()>(c).await?;
        let mut written = false;
        for page in 0..local.pages() {
            for chunk in local.websocket_topics(page).chunks(CHUNK) {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&fresh);
                for (t, n) in chunk {
                    cmd.arg(t.as_str()).arg(*n as u64);
                }
                cmd.query_async::<()>(c).await?;
                written = true;
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if written {
            pipe.cmd("RENAME").arg(&fresh).arg(&hash).ignore();
        } else {
            pipe.del(&hash).ignore();
        }
        pipe.zadd(self.nodes_key(), &self.settings.node_id, unix_ms() + self.ttl_ms()).ignore();
        pipe.cmd("PEXPIRE").arg(&hash).arg(3 * self.ttl_ms()).ignore();
        pipe.query_async::<()>(c).await?;
        Ok(covered)
    }

    /// Writes the queued changes; on `renew` also renews the registration. Returns the tickets
    /// covered, and whether the registration had vanished (Redis lost it: rewrite).
    async fn flush(
        &self,
        c: &mut ConnectionManager,
        local: &dyn LocalTopics,
        renew: bool,
    ) -> redis::RedisResult<(u64, bool)> {
        let (topics, covered) = {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut d.topics), d.issued)
        };
        let hash = self.hash_key(&self.settings.node_id);
        let mut pipe = redis::pipe();
        for t in &topics {
            match local.websocket_count(t.as_str()) {
                0 => pipe.hdel(&hash, t.as_str()).ignore(),
                n => pipe.hset(&hash, t.as_str(), n as u64).ignore(),
            };
        }
        let mut lost = false;
        if renew {
            let now = unix_ms();
            // Renewed only if still there (`XX`): a registration Redis lost comes back only
            // with a complete hash, after a rewrite.
            pipe.atomic();
            pipe.zscore(self.nodes_key(), &self.settings.node_id);
            pipe.cmd("ZADD")
                .arg(self.nodes_key())
                .arg("XX")
                .arg(now + self.ttl_ms())
                .arg(&self.settings.node_id)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&hash).arg(3 * self.ttl_ms()).ignore();
            // Records of nodes gone for ten TTLs are forgotten (the admin view shows the others).
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(self.nodes_key())
                .arg("-inf")
                .arg(now.saturating_sub(10 * self.ttl_ms()))
                .ignore();
            let (score,): (Option<f64>,) = pipe.query_async(c).await?;
            lost = score.is_none();
        } else if !topics.is_empty() {
            pipe.query_async::<()>(c).await?;
        }
        Ok((covered, lost))
    }

    /// The live nodes' ids, if this node may vouch for them (see the module documentation).
    async fn live_nodes(&self, c: &mut ConnectionManager) -> Option<Vec<String>> {
        let since = self.registered_since.load(Ordering::Acquire);
        let now = unix_ms();
        if !self.healthy.load(Ordering::Acquire) || since == 0 || now < since + self.ttl_ms() {
            return None;
        }
        let live: Vec<String> = tokio::time::timeout(
            IO_TIMEOUT,
            redis::cmd("ZRANGEBYSCORE").arg(self.nodes_key()).arg(now).arg("+inf").query_async(c),
        )
        .await
        .ok()?
        .ok()?;
        // Without our own registration the registry was lost: others may not have re-registered.
        live.contains(&self.settings.node_id).then_some(live)
    }
}

/// The writer task: see the module documentation.
async fn writer(presence: std::sync::Weak<RedisPresence>, mut stop: watch::Receiver<bool>) {
    let mut backoff = crate::MIN_BACKOFF;
    let mut need_rewrite = true;
    let mut next_renew = Instant::now();
    loop {
        let Some(p) = presence.upgrade() else { return };
        let renew_every = p.settings.ttl / 3;
        let local = p.local();
        let result = match (local, p.connection().await) {
            (Some(local), Some(mut c)) => {
                let renew = need_rewrite || Instant::now() >= next_renew;
                let step = async {
                    if need_rewrite {
                        let covered = p.rewrite(&mut c, &*local).await?;
                        Ok::<_, redis::RedisError>((covered, false))
                    } else {
                        p.flush(&mut c, &*local, renew).await
                    }
                };
                match tokio::time::timeout(IO_TIMEOUT * 2, step).await {
                    Ok(Ok((covered, lost))) => {
                        if renew {
                            next_renew = Instant::now() + renew_every;
                        }
                        if lost {
                            tracing::warn!("this node's presence record was lost (a Redis restart?): rewriting it");
                            p.registered_since.store(0, Ordering::Release);
                            need_rewrite = true;
                            p.wake.notify_one();
                        } else {
                            if need_rewrite {
                                let _ = p.registered_since.compare_exchange(
                                    0,
                                    unix_ms(),
                                    Ordering::AcqRel,
                                    Ordering::Acquire,
                                );
                                if !p.healthy.load(Ordering::Acquire) {
                                    tracing::info!("this node's WebSocket topics are recorded for the cluster");
                                }
                            }
                            need_rewrite = false;
                            p.healthy.store(true, Ordering::Release);
                            p.flushed.send_if_modified(|f| {
                                let grew = covered > *f;
                                *f = (*f).max(covered);
                                grew
                            });
                        }
                        backoff = crate::MIN_BACKOFF;
                        Some(true)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot record this node's WebSocket topics in Redis");
                        Some(false)
                    }
                    Err(_) => {
                        tracing::warn!("recording this node's WebSocket topics in Redis timed out");
                        Some(false)
                    }
                }
            }
            (Some(_), None) => Some(false),
            (None, _) => None,
        };
        if result == Some(false) {
            if p.healthy.swap(false, Ordering::AcqRel) {
                tracing::warn!(
                    "other nodes cannot tell which topics this node's WebSockets listen to until Redis answers"
                );
            }
            p.registered_since.store(0, Ordering::Release);
            need_rewrite = true;
        }
        let wait = match result {
            Some(false) => {
                let w = backoff;
                backoff = crate::next_backoff(backoff);
                w
            }
            Some(true) => next_renew.saturating_duration_since(Instant::now()),
            // Not attached yet: `attach` wakes the task.
            None => renew_every,
        };
        let wake = p.wake.clone();
        drop(p);
        tokio::select! {
            _ = wake.notified(), if result != Some(false) => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    fn attach(&self, local: Arc<dyn LocalTopics>) {
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = Some(local);
        self.wake.notify_one();
    }

    fn changed(&self, topic: &Topic) -> u64 {
        let ticket = {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.topics.insert(topic.clone());
            d.issued += 1;
            d.issued
        };
        self.wake.notify_one();
        ticket
    }

    async fn recorded(&self, ticket: u64) {
        if !self.healthy.load(Ordering::Acquire) {
            return;
        }
        let mut rx = self.flushed.subscribe();
        let _ = tokio::time::timeout(RECORD_WAIT, rx.wait_for(|f| *f >= ticket)).await;
    }

    async fn heard_elsewhere(&self, topics: &[Topic]) -> Option<Vec<bool>> {
        let mut c = self.connection().await?;
        let live = self.live_nodes(&mut c).await?;
        let others: Vec<_> = live.iter().filter(|n| **n != self.settings.node_id).collect();
        let mut heard = vec![false; topics.len()];
        if others.is_empty() {
            return Some(heard);
        }
        let mut pipe = redis::pipe();
        for n in &others {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.hash_key(n));
            for t in topics {
                cmd.arg(t.as_str());
            }
            pipe.add_command(cmd);
        }
        let answers: Vec<Vec<Option<u64>>> =
            tokio::time::timeout(IO_TIMEOUT, pipe.query_async(&mut c)).await.ok()?.ok()?;
        for counts in answers {
            for (h, n) in heard.iter_mut().zip(counts) {
                *h |= n.unwrap_or(0) > 0;
            }
        }
        Some(heard)
    }

    async fn nodes(&self) -> Option<Vec<NodeStatus>> {
        let mut c = self.connection().await?;
        let entries: Vec<(String, u64)> = tokio::time::timeout(
            IO_TIMEOUT,
            redis::cmd("ZRANGE").arg(self.nodes_key()).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut c),
        )
        .await
        .ok()?
        .ok()?;
        let mut pipe = redis::pipe();
        for (n, _) in &entries {
            pipe.cmd("HLEN").arg(self.hash_key(n));
        }
        let lens: Vec<u64> = if entries.is_empty() {
            Vec::new()
        } else {
            tokio::time::timeout(IO_TIMEOUT, pipe.query_async(&mut c)).await.ok()?.ok()?
        };
        let now = unix_ms();
        Some(
            entries
                .into_iter()
                .zip(lens)
                .map(|((node, until), topics)| NodeStatus {
                    this: node == self.settings.node_id,
                    live: until > now,
                    seen_secs_ago: (now + self.ttl_ms()).saturating_sub(until) / 1000,
                    websocket_topics: topics,
                    node,
                })
                .collect(),
        )
    }

    async fn leave(&self) {
        self.remove_record().await;
    }

    async fn remote_topics(&self, cursor: Option<&str>, limit: usize) -> Option<RemotePage> {
        // A cursor is `<node>\n<HSCAN cursor>`, base64url.
        let (mut node, mut scan) = match cursor {
            None => (String::new(), 0u64),
            Some(c) => {
                let raw = String::from_utf8(B64.decode(c).ok()?).ok()?;
                let (n, s) = raw.split_once('\n')?;
                (n.to_owned(), s.parse().ok()?)
            }
        };
        let mut c = self.connection().await?;
        let now = unix_ms();
        let mut live: Vec<String> = tokio::time::timeout(
            IO_TIMEOUT,
            redis::cmd("ZRANGEBYSCORE").arg(self.nodes_key()).arg(now).arg("+inf").query_async(&mut c),
        )
        .await
        .ok()?
        .ok()?;
        live.retain(|n| *n != self.settings.node_id);
        live.sort();
        let mut page = RemotePage::default();
        loop {
            // `scan != 0`: go on with `node`; else start the first live node after `node`.
            if scan != 0 && !live.contains(&node) {
                scan = 0;
            }
            let current = if scan != 0 {
                node.clone()
            } else {
                match live.iter().find(|n| **n > node) {
                    Some(n) => n.clone(),
                    None => return Some(page),
                }
            };
            let (next, flat): (u64, Vec<(String, u64)>) = tokio::time::timeout(
                IO_TIMEOUT,
                redis::cmd("HSCAN").arg(self.hash_key(&current)).arg(scan).arg("COUNT").arg(limit).query_async(&mut c),
            )
            .await
            .ok()?
            .ok()?;
            page.entries.extend(flat.into_iter().map(|(t, n)| (t, current.clone(), n)));
            (node, scan) = (current, next);
            let more = scan != 0 || live.iter().any(|n| *n > node);
            if !more {
                return Some(page);
            }
            if page.entries.len() >= limit {
                page.next = Some(B64.encode(format!("{node}\n{scan}")));
                return Some(page);
            }
        }
    }
}
