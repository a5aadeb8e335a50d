//! The publisher task: sends each queued message with one `PUBLISH` over one connection of its
//! own, and keeps that connection known to work.
//!
//! - An idle connection is checked with a `PING` every `ping_interval`, so that a connection
//!   Redis dropped (a restart, a failover) is replaced before the next message needs it, not
//!   when that message fails.
//! - A message whose `PUBLISH` fails is not dropped: the connection is dropped instead, and the
//!   message is sent again on a new one (backoff 100 ms doubling to 10 s), until it is
//!   `publish_retry` old. Only then is it counted `failed`. Messages behind it wait in the bounded
//!   queue, so their order is kept; a full queue drops new ones (`dropped`).
//! - A `PUBLISH` whose answer was lost may have reached Redis: after a lost connection a message
//!   can arrive twice. Both channels carry idempotent updates (a repeated notification makes
//!   clients sync once more; a repeated subscription change is applied again to the same state).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use davpush_core::{Channel, ClusterEvent, ClusterMessage, Metrics};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::history::HistoryKeys;
use crate::{IO_TIMEOUT, MIN_BACKOFF, Received, next_backoff};

/// A message waiting to be published.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) channel: Channel,
    pub(crate) payload: Bytes,
    /// A notify message to add to the history first ([`crate::history::NOTIFY`]).
    pub(crate) positioned: Option<ClusterMessage>,
    /// When [`davpush_core::Fanout::publish`] queued it (its retries end `publish_retry` later).
    pub(crate) queued: Instant,
}

/// See the module documentation.
pub(crate) struct Publisher {
    /// The cluster's history, if notify messages are positioned.
    pub(crate) history: Option<HistoryKeys>,
    /// Where positioned messages that could not be published go (this node's own delivery).
    pub(crate) unpublished: mpsc::Sender<Received>,
    pub(crate) client: redis::Client,
    /// The channels' names, by [`Channel`].
    pub(crate) names: [String; 2],
    /// `CLIENT SETNAME` of the connection (`<prefix>:<node>:publisher`), to tell it apart in
    /// `CLIENT LIST`.
    pub(crate) client_name: String,
    pub(crate) outgoing: mpsc::Receiver<Outgoing>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) ping_interval: Duration,
    pub(crate) publish_retry: Duration,
}

/// The connection and when to look at it next.
struct State {
    conn: Option<MultiplexedConnection>,
    /// Without a connection: when to try connecting; with one: when to `PING` it (idle since).
    next_check: Instant,
    /// Wait after the next failure; back to the minimum after a command succeeds.
    backoff: Duration,
    /// The connection is broken since the last warning (logged once per outage).
    failing: bool,
    /// Messages are given up since the last warning (logged once per outage).
    dropping: bool,
}

impl Publisher {
    /// Connects at once, then publishes what comes, until this node stops.
    pub(crate) async fn run(mut self) {
        let mut st =
            State { conn: None, next_check: Instant::now(), backoff: MIN_BACKOFF, failing: false, dropping: false };
        loop {
            tokio::select! {
                m = self.outgoing.recv() => match m {
                    Some(m) => if !self.send(&mut st, m).await { return },
                    None => return,
                },
                _ = tokio::time::sleep_until(st.next_check) => self.check(&mut st).await,
                _ = self.stop.changed() => return,
            }
        }
    }

    /// Sends `m`, on a new connection if needed, until it is `publish_retry` old. `false` when
    /// this node stops meanwhile.
    async fn send(&mut self, st: &mut State, m: Outgoing) -> bool {
        let deadline = m.queued + self.publish_retry;
        let name = self.names[m.channel as usize].clone();
        loop {
            if st.conn.is_none() {
                let wait = st.next_check.min(deadline);
                tokio::select! {
                    _ = tokio::time::sleep_until(wait) => {}
                    _ = self.stop.changed() => return false,
                }
                if Instant::now() >= deadline {
                    break;
                }
                self.connect(st).await;
                continue;
            }
            let Some(conn) = st.conn.as_mut() else { continue };
            let sent = match (&m.positioned, &self.history) {
                (Some(message), Some(keys)) => {
                    let mut call = crate::history::eval(crate::history::NOTIFY, &[&keys.stream, &keys.epoch, &name]);
                    call.arg(&*davpush_core::history::new_epoch())
                        .arg(keys.settings.max_entries)
                        .arg(keys.settings.max_age_ms)
                        .arg(m.payload.as_ref());
                    if let ClusterEvent::Notify { notifications, .. } = &message.event {
                        for n in notifications {
                            let json = serde_json::to_string(n).expect("a notification serializes");
                            call.arg(&n.topic).arg(json);
                        }
                    }
                    tokio::time::timeout(IO_TIMEOUT, call.query_async::<i64>(conn)).await
                }
                _ => {
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(&name).arg(m.payload.as_ref());
                    tokio::time::timeout(IO_TIMEOUT, publish.query_async::<i64>(conn)).await
                }
            };
            match sent {
                Ok(Ok(_)) => {
                    self.metrics.cluster(m.channel.as_str(), "published");
                    succeeded(st, self.ping_interval);
                    return true;
                }
                Ok(Err(e)) => lost(st, &e),
                Err(_) => lost(st, &"no answer within 3 s"),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.metrics.cluster(m.channel.as_str(), "failed");
        if let Some(message) = m.positioned {
            // This node's live connections get it at least (without a position).
            let _ = self.unpublished.try_send(Received::Unpublished(message));
        }
        if !std::mem::replace(&mut st.dropping, true) {
            tracing::warn!(
                channel = %name, retried_for = ?self.publish_retry,
                "cannot publish to the cluster; other nodes miss messages until Redis is back"
            );
        }
        true
    }

    /// Without a connection, tries to connect; with an idle one, checks it with a `PING`.
    async fn check(&self, st: &mut State) {
        let Some(conn) = st.conn.as_mut() else {
            self.connect(st).await;
            return;
        };
        match tokio::time::timeout(IO_TIMEOUT, redis::cmd("PING").query_async::<String>(conn)).await {
            Ok(Ok(_)) => succeeded(st, self.ping_interval),
            Ok(Err(e)) => lost(st, &e),
            Err(_) => lost(st, &"no answer to PING within 3 s"),
        }
    }

    /// One connection attempt; on failure the next one waits for the backoff.
    async fn connect(&self, st: &mut State) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT));
        let attempt = async {
            let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
            // Only a label for operators: a server that refuses it (ACLs) still gets messages.
            let _ = redis::cmd("CLIENT").arg("SETNAME").arg(&self.client_name).query_async::<()>(&mut conn).await;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(IO_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => {
                st.conn = Some(conn);
                st.next_check = Instant::now() + self.ping_interval;
                if std::mem::take(&mut st.failing) {
                    tracing::info!("connected to the cluster's Redis again for publishing");
                }
                return;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot connect to Redis to publish"),
            Err(_) => tracing::debug!("connecting to Redis to publish timed out"),
        }
        st.next_check = Instant::now() + st.backoff;
        st.backoff = next_backoff(st.backoff);
    }
}

/// A command went through: the connection works.
fn succeeded(st: &mut State, ping_interval: Duration) {
    st.backoff = MIN_BACKOFF;
    st.next_check = Instant::now() + ping_interval;
    st.dropping = false;
}

/// The connection failed: drop it and connect again after the backoff.
fn lost(st: &mut State, error: &dyn std::fmt::Display) {
    st.conn = None;
    st.next_check = Instant::now() + st.backoff;
    st.backoff = next_backoff(st.backoff);
    if !std::mem::replace(&mut st.failing, true) {
        tracing::warn!(%error, "lost the publishing connection to the cluster's Redis; reconnecting");
    }
}
