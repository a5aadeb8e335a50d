//! The cluster's notification history ([`davpush_core::history`]): one Redis stream,
//! `<prefix>:history`, that every node reads, so positions and replays are the same on every
//! node.
//!
//! A notify received by any node is added to the stream and published to the nodes by one
//! script ([`NOTIFY`]): Redis runs scripts one at a time, so the order of the stream ids is the
//! order in which every node's subscriber receives the messages, and every node (the sender
//! too) hands them to its live connections in that order, with those ids as positions. A
//! position is `<epoch>-<stream id>`; the epoch (`<prefix>:history:epoch`) is made anew whenever
//! the stream is found missing (Redis lost its data, or the key was deleted or evicted), so an
//! old position is never replayed from a new stream.
//!
//! Bounds: `MAXLEN ~ max_entries` and `MINID ~ now - max_age` at every addition (Redis's
//! approximate trimming: a little more may stay); `per_topic` is applied when replaying (a
//! topic that missed more re-syncs). What was trimmed shows in the stream's
//! `max-deleted-entry-id` (Redis 7): a position before it cannot be replayed from exactly, and
//! its topics re-sync.

use std::sync::Arc;

use davpush_core::fanout::WireNotification;
use davpush_core::history::{HistorySettings, Position, Replayed, Seq, SharedHistory, new_epoch};
use davpush_core::{Notification, PushMessage, Topic};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{ClusterError, IO_TIMEOUT};

/// Creates the stream (empty) and a new epoch when the stream is missing. KEYS: stream, epoch.
/// ARGV: a new epoch. Shared by the scripts below.
const ENSURE: &str = r#"
local stream, epochkey = KEYS[1], KEYS[2]
local epoch = redis.call('GET', epochkey)
if redis.call('EXISTS', stream) == 0 or not epoch then
  epoch = ARGV[1]
  redis.call('SET', epochkey, epoch)
  redis.call('XADD', stream, '*', 'init', '1')
  redis.call('XTRIM', stream, 'MAXLEN', 0)
end
local info = redis.call('XINFO', 'STREAM', stream)
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
"#;

/// Adds each notification to the stream and publishes the message with their ids: `<epoch>
/// <id>,<id>… <message JSON>`. KEYS: stream, epoch, channel. ARGV: a new epoch, max entries,
/// max age (ms), the message, then topic and notification JSON of each.
pub(crate) const NOTIFY: &str = r#"
local ids = {}
for i = 5, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 't', ARGV[i], 'n', ARGV[i + 1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', stream, 'MINID', '~', tostring(math.max(0, now - tonumber(ARGV[3]))))
redis.call('PUBLISH', KEYS[3], epoch .. ' ' .. table.concat(ids, ',') .. ' ' .. ARGV[4])
return #ids
"#;

/// The epoch, the newest id and the newest trimmed id. KEYS: stream, epoch. ARGV: a new epoch.
const HEAD: &str = r#"
return {epoch, last, deleted}
"#;

/// Like [`HEAD`], then the entries after ARGV[2] (exclusive), at most ARGV[3].
const REPLAY: &str = r#"
local entries = redis.call('XRANGE', stream, '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
return {epoch, last, deleted, entries}
"#;

/// An `EVAL` of the script `body` (after [`ENSURE`]) with `keys`. Sent whole every time (a
/// kilobyte; `EVALSHA` would need the `script` feature of the redis crate for nothing more).
pub(crate) fn eval(body: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(format!("{ENSURE}{body}")).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    cmd
}

/// The keys of a cluster's history.
#[derive(Debug, Clone)]
pub(crate) struct HistoryKeys {
    pub(crate) stream: String,
    pub(crate) epoch: String,
    pub(crate) settings: HistorySettings,
}

impl HistoryKeys {
    pub(crate) fn new(prefix: &str, settings: HistorySettings) -> Self {
        HistoryKeys { stream: format!("{prefix}:history"), epoch: format!("{prefix}:history:epoch"), settings }
    }
}

/// See the module documentation.
pub struct RedisHistory {
    keys: HistoryKeys,
    conn: ConnectionManager,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory").field("stream", &self.keys.stream).finish()
    }
}

/// Stream entries: id, then field names and values in turn.
type Entries = Vec<(String, Vec<String>)>;

impl RedisHistory {
    /// The history of the cluster on `redis_url` with channel prefix `prefix` (connects when
    /// first used, and again after a lost connection).
    pub fn new(redis_url: &str, prefix: &str, settings: HistorySettings) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Arc::new(RedisHistory { keys: HistoryKeys::new(prefix, settings), conn }))
    }

    fn position(epoch: &str, id: &str) -> Option<Position> {
        Position::parse(&format!("{epoch}-{id}"))
    }

    async fn read(&self, since: &Position) -> redis::RedisResult<(String, String, String, Entries)> {
        let mut conn = self.conn.clone();
        let limit = self.keys.settings.max_entries + 1;
        let mut cmd = eval(REPLAY, &[&self.keys.stream, &self.keys.epoch]);
        cmd.arg(&*new_epoch()).arg(since.seq.to_string()).arg(limit);
        let call = cmd.query_async(&mut conn);
        match tokio::time::timeout(IO_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "no answer from Redis in time"))),
        }
    }
}

#[async_trait::async_trait]
impl SharedHistory for RedisHistory {
    async fn head(&self) -> Option<Position> {
        let mut conn = self.conn.clone();
        let mut cmd = eval(HEAD, &[&self.keys.stream, &self.keys.epoch]);
        cmd.arg(&*new_epoch());
        let call = cmd.query_async::<(String, String, String)>(&mut conn);
        match tokio::time::timeout(IO_TIMEOUT, call).await {
            Ok(Ok((epoch, last, _))) => Self::position(&epoch, &last),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster's notification history");
                None
            }
            Err(_) => {
                tracing::warn!("no answer from Redis for the cluster's notification history");
                None
            }
        }
    }

    async fn replay(&self, topics: &[Topic], since: &str, _now_ms: u64) -> Replayed {
        let all = |head| Replayed { messages: Vec::new(), resync: topics.to_vec(), head };
        let Some(since) = Position::parse(since) else {
            return all(self.head().await);
        };
        let (epoch, last, deleted, entries) = match self.read(&since).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's notification history: clients re-sync");
                return all(None);
            }
        };
        let head = Self::position(&epoch, &last);
        let (Some(last), Some(deleted)) = (Seq::parse(&last), Seq::parse(&deleted)) else {
            return all(head);
        };
        // Another stream, an id it never gave, a trimmed stretch after `since`, or more than
        // the history holds: nothing can be replayed exactly.
        if *since.epoch != *epoch
            || since.seq > last
            || deleted > since.seq
            || entries.len() > self.keys.settings.max_entries
        {
            return all(head);
        }
        let mut out = Replayed { head, ..Replayed::default() };
        let mut counts = vec![0usize; topics.len()];
        for (id, fields) in entries {
            let field =
                |name: &str| fields.chunks(2).find(|kv| kv[0] == name).and_then(|kv| kv.get(1)).map(String::as_str);
            let Some(i) = field("t").and_then(|t| topics.iter().position(|x| x.as_str() == t)) else { continue };
            let Some(n) = field("n").and_then(|n| serde_json::from_str::<WireNotification>(n).ok()) else { continue };
            let Some(position) = Self::position(&epoch, &id) else { continue };
            counts[i] += 1;
            let note = Notification { topic: topics[i].clone(), sync_token: n.sync_token, trigger: n.trigger };
            out.messages.push(Arc::new(PushMessage::new(note).at(position)));
        }
        for (i, t) in topics.iter().enumerate() {
            if counts[i] > self.keys.settings.per_topic {
                out.resync.push(t.clone());
            }
        }
        out.messages.retain(|m| !out.resync.contains(&m.notification.topic));
        out
    }
}
