//! [`RedisPushDirectory`]: the cluster's [`PushDirectory`] (`docs/protocol.md` §10.4).
//!
//! Keys, under the cluster's channel prefix:
//! - `<prefix>:push:<push_id>`: the [`SharedRecord`] (JSON), expiring with the subscription;
//! - `<prefix>:push:<push_id>:waiting`: a list of [`Waiting`] messages (JSON, ciphertext only),
//!   kept by one script ([`QUEUE`]) so that the topic replacement and the bound hold whichever
//!   node adds; it lives as long as its longest-lived message.
//!
//! Messages to a node travel on its channel `<prefix>:push:<node>`, which only that node's
//! subscriber listens to: a message is forwarded once, to the node that needs it.

use async_trait::async_trait;
use davpush_core::pushsvc::{DirectoryError, Forwarded, PushDirectory, SharedRecord, Waiting};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{ClusterError, IO_TIMEOUT};

/// Adds a waiting message. KEYS: the list. ARGV: topic (`""` for none), the message JSON,
/// the bound, now, the message's expiry (Unix seconds).
const QUEUE: &str = r#"
local list, topic, now = KEYS[1], ARGV[1], tonumber(ARGV[4])
for _, item in ipairs(redis.call('LRANGE', list, 0, -1)) do
  local w = cjson.decode(item)
  if (topic ~= '' and w.topic == topic) or tonumber(w.expires) < now then
    redis.call('LREM', list, 1, item)
  end
end
redis.call('RPUSH', list, ARGV[2])
redis.call('LTRIM', list, -tonumber(ARGV[3]), -1)
local want = tonumber(ARGV[5]) - now + 1
if redis.call('TTL', list) < want then
  redis.call('EXPIRE', list, want)
end
return 1
"#;

/// Takes the waiting messages. KEYS: the list.
const TAKE: &str = r#"
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items
"#;

/// The channel of `node`'s push messages.
pub(crate) fn push_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:push:{node}")
}

/// See the module documentation.
pub struct RedisPushDirectory {
    prefix: String,
    node_id: String,
    conn: ConnectionManager,
}

impl std::fmt::Debug for RedisPushDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPushDirectory").field("prefix", &self.prefix).field("node_id", &self.node_id).finish()
    }
}

impl RedisPushDirectory {
    /// The directory of the cluster on `redis_url` with channel prefix `prefix`, for node
    /// `node_id` (connects when first used, and again after a lost connection).
    pub fn new(redis_url: &str, prefix: &str, node_id: &str) -> Result<Self, ClusterError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisPushDirectory { prefix: prefix.to_owned(), node_id: node_id.to_owned(), conn })
    }

    fn record_key(&self, push_id: &str) -> String {
        format!("{}:push:{push_id}", self.prefix)
    }

    fn waiting_key(&self, push_id: &str) -> String {
        format!("{}:push:{push_id}:waiting", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, DirectoryError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(IO_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(|e| DirectoryError(e.to_string())),
            Err(_) => Err(DirectoryError("no answer from Redis in time".into())),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("directory entries always serialize")
}

fn eval(script: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

#[async_trait]
impl PushDirectory for RedisPushDirectory {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn get(&self, push_id: &str) -> Result<Option<SharedRecord>, DirectoryError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.record_key(push_id));
        let Some(raw) = self.run::<Option<String>>(cmd).await? else { return Ok(None) };
        serde_json::from_str(&raw).map(Some).map_err(|e| DirectoryError(format!("malformed record: {e}")))
    }

    async fn put(&self, push_id: &str, record: &SharedRecord) -> Result<(), DirectoryError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.record_key(push_id)).arg(json(record)).arg("EXAT").arg(record.expires.max(1));
        self.run::<()>(cmd).await
    }

    async fn queue(
        &self,
        push_id: &str,
        message: &Waiting,
        max_pending: usize,
        now: i64,
    ) -> Result<(), DirectoryError> {
        let mut cmd = eval(QUEUE, &self.waiting_key(push_id));
        cmd.arg(message.topic.as_deref().unwrap_or_default())
            .arg(json(message))
            .arg(max_pending.max(1))
            .arg(now)
            .arg(message.expires);
        self.run::<i64>(cmd).await.map(drop)
    }

    async fn waiting(&self, push_id: &str) -> Result<usize, DirectoryError> {
        let mut cmd = redis::cmd("LLEN");
        cmd.arg(self.waiting_key(push_id));
        self.run::<usize>(cmd).await
    }

    async fn take(&self, push_id: &str) -> Result<Vec<Waiting>, DirectoryError> {
        let items = self.run::<Vec<String>>(eval(TAKE, &self.waiting_key(push_id))).await?;
        Ok(items.iter().filter_map(|i| serde_json::from_str(i).ok()).collect())
    }

    async fn forward(&self, node: &str, forwarded: &Forwarded) -> Result<(), DirectoryError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(push_channel(&self.prefix, node)).arg(json(forwarded));
        self.run::<i64>(cmd).await.map(drop)
    }
}
