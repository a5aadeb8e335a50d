//! The SQLite store.
//!
//! # The write-ahead log stays small
//! In WAL mode every commit appends to `<db>-wal`; SQLite's own automatic checkpoint (PASSIVE)
//! copies pages back but never waits, so under a steady stream of writes from several
//! connections it rarely finds a moment to *restart* the log, which then grows without bound
//! (16 GB after 756k subscribes, issue 11). One place checkpoints instead: a task started at
//! open looks at the log's size every [`CHECKPOINT_EVERY`] and, above [`CHECKPOINT_ABOVE`],
//! runs `PRAGMA wal_checkpoint(TRUNCATE)`, which waits (busy timeout) for the writer and the
//! readers in flight and leaves a 0-byte log. `journal_size_limit` caps what a log that could
//! only be restarted keeps on disk, and [`SubscriptionStore::close`] truncates it at a graceful
//! stop, so a stopped Director leaves no log to replay.
//!
//! # Group commit
//! A subscribe's row must be on disk before its `201` (it survives SIGKILL), but a transaction
//! per request makes the disk's sync rate the subscribe rate. Upserts therefore go to one
//! writer task that takes all that are waiting (up to `GROUP_COMMIT_MAX`), writes them in one
//! transaction and answers each after the commit: under load a commit carries many
//! subscribes, alone it carries one, with no added wait.
//!
//! A commit costs about the same whatever it carries (issue 11, counted on a slow machine: one
//! row 0.7–1.4 ms, 16–31 rows 1.9–2.8 ms), and 32 clients each waiting for their `201` come back
//! a few at a time: the writer then committed a third of its batches with one row. So after a
//! commit of [`FILL_FROM`] writes or more, a smaller batch waits up to [`FILL_WAIT`] until it is
//! as large as that commit was (`gather`); under load the commits stay full, and a write that
//! comes alone (the last commit was small) still waits for nothing.
//!
//! # One writer
//! The outbox's rows (deliveries waiting for a retry, [`SubscriptionStore::save_pending`] and
//! [`SubscriptionStore::delete_pending`]) go through the same writer task, in the same group
//! commits. Written from the delivery engine's workers on connections of their own, they
//! contended for SQLite's one write lock, whose busy handler *sleeps* (1, 2, 5… ms) while
//! holding a pool connection: the first notify of a big topic, whose dozens of first
//! deliveries failed at once, made the target reads of the same notify wait for a connection
//! (issue 11). With one writer, the other connections are the readers'.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::{
    OutboxLease, Page, PendingDelivery, StoreError, StoredSubscription, StoredVapidKey, SubscriptionStore,
};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::{err, rows};

mod owned;

/// How often the checkpoint task looks at the write-ahead log.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Log size above which the checkpoint task truncates it.
pub const CHECKPOINT_ABOVE: u64 = 8 << 20;
/// `PRAGMA journal_size_limit`: what SQLite keeps of a log it restarted.
const JOURNAL_SIZE_LIMIT: u64 = 32 << 20;

/// Writes (upserts, outbox writes) in one transaction at most.
const GROUP_COMMIT_MAX: usize = 512;
/// Writes waiting for the writer at most (beyond, `upsert` and the outbox's writes wait for
/// room).
const GROUP_COMMIT_QUEUE: usize = 4_096;

/// A commit of at least this many writes makes the writer wait for the next batch to fill.
pub const FILL_FROM: usize = 8;
/// How long the writer waits at most for a batch to fill (see "Group commit" in the module
/// documentation).
pub const FILL_WAIT: Duration = Duration::from_millis(1);

/// Ids deleted per transaction by [`SubscriptionStore::delete`].
const DELETE_BATCH: usize = 1_000;

/// The rowids of at most `?2` subscriptions expired at `?1`, found through the index on `expires`.
const EXPIRED_ROWIDS: &str = "SELECT rowid FROM subscriptions WHERE expires <= ?1 LIMIT ?2";

/// A page of subscriptions at start, as one row: a JSON array of
/// `[id, client_id, topic, service, target, expires, created, triggers]`, and the page's last
/// rowid (the cursor). sqlx hands every row from its SQLite worker thread to the caller one by
/// one; a row per page instead of a row per subscription took most of that cost out of a start
/// with a million (issue 11). Rows are read in table (rowid) order: the table's pages one after
/// the other, not in the order of the primary key's index (which visited them at random).
const LOAD_PAGE: &str = "SELECT json_group_array(json_array(id, client_id, topic, service, target, expires, created, \
                         triggers)), max(rowid) FROM (SELECT rowid, * FROM subscriptions WHERE rowid > ?1 AND \
                         expires > ?2 ORDER BY rowid LIMIT ?3)";

/// One element of a [`LOAD_PAGE`] array.
type PageRow = (String, String, String, String, String, i64, i64, i64);

/// [`LOAD_PAGE`] without the target: `[id, client_id, topic, service, expires, created,
/// triggers]` (start-up holds only the routing in memory, issue 11).
const LOAD_ROUTES_PAGE: &str = "SELECT json_group_array(json_array(id, client_id, topic, service, expires, created, \
                                triggers)), max(rowid) FROM (SELECT rowid, * FROM subscriptions WHERE rowid > ?1 \
                                AND expires > ?2 ORDER BY rowid LIMIT ?3)";

/// One element of a [`LOAD_ROUTES_PAGE`] array.
type RouteRow = (String, String, String, String, i64, i64, i64);

/// The targets of the unexpired subscriptions whose ids are in the JSON array `?1`, found
/// through the primary key, as one row (a JSON array of `[id, target]`; see [`LOAD_PAGE`]).
const LOAD_TARGETS: &str = "SELECT json_group_array(json_array(id, target)) FROM subscriptions \
                            WHERE id IN (SELECT value FROM json_each(?1)) AND expires > ?2";

/// A page of a topic's targets of one service as one row of text, through the index on
/// `(topic, service, id)`: `id` US `target` for each row, RS between rows (ASCII's unit and
/// record separators, which neither an id nor a target's JSON text holds: JSON escapes control
/// characters). Unlike a JSON array, nothing is escaped by SQLite and unescaped again here.
const LOAD_TOPIC_TARGETS: &str = "SELECT group_concat(id || char(31) || target, char(30)) FROM (SELECT id, target \
                                  FROM subscriptions WHERE topic = ?1 AND service = ?2 AND id > ?3 AND expires > ?4 \
                                  ORDER BY id LIMIT ?5)";

/// The rows of a [`LOAD_TOPIC_TARGETS`] page.
fn separated_rows(page: &str) -> Result<Vec<(String, String)>, StoreError> {
    if page.is_empty() {
        return Ok(Vec::new());
    }
    page.split('\u{1e}')
        .map(|row| {
            row.split_once('\u{1f}').map(|(id, target)| (id.to_owned(), target.to_owned())).ok_or_else(|| StoreError {
                op: "read the targets of a topic",
                source: "a row without its separator".into(),
            })
        })
        .collect()
}

/// The VAPID keys Web Push subscriptions are bound to, through the index on them (migration 6).
const VAPID_KEYS_IN_USE: &str = "SELECT DISTINCT json_extract(target, '$.vapid_key') FROM subscriptions \
                                 WHERE service IN ('web_push', 'unified_push') AND json_extract(target, '$.vapid_key') \
                                 IS NOT NULL";

/// Binds the Web Push subscriptions without a VAPID key to key `?`, found through the same index.
const ASSIGN_VAPID_KEY: &str = "UPDATE subscriptions SET target = json_set(target, '$.vapid_key', ?) \
                                WHERE service IN ('web_push', 'unified_push') AND json_extract(target, '$.vapid_key') \
                                IS NULL";

/// Each connection's page cache, KiB (as `PRAGMA cache_size` takes it: negative).
const CACHE_KIB: i64 = -8192;

/// Subscriptions in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// This handle's identity as an outbox owner.
    lease: Arc<OutboxLease>,
    /// The `-wal` file (`None` for an in-memory database).
    wal: Option<PathBuf>,
    /// The group-commit writer's queue (its task ends with the last clone of the store).
    writer: mpsc::Sender<Write>,
    /// Ends the checkpoint task when the last clone of the store is dropped.
    _checkpointer: Option<Arc<AbortOnDrop>>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Outcome of one `PRAGMA wal_checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The checkpoint could not complete (a reader or the writer held on past the busy timeout).
    pub busy: bool,
    /// Frames in the log before.
    pub log_frames: i64,
    /// Frames copied into the database.
    pub checkpointed_frames: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`),
    /// in WAL mode, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(err("parse the database URL"))?
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string())
            // 8 MiB of pages per connection (SQLite's default is 2): a notification of a topic of
            // 10,000 durable subscribers reads ~5 MB of their rows, which then stay cached for
            // the next one instead of being copied in from the OS again (issue 11: 40 → 33 ms at
            // a million, for ~20 MB more at most).
            .pragma("cache_size", CACHE_KIB.to_string())
            .foreign_keys(true);
        let wal = (!memory).then(|| {
            let mut name = opts.get_filename().as_os_str().to_owned();
            name.push("-wal");
            PathBuf::from(name)
        });
        let pool = SqlitePoolOptions::new()
            // Every connection to `:memory:` would be a database of its own.
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if memory { None } else { Some(Duration::from_secs(3600)) })
            .connect_with(opts)
            .await
            .map_err(err("open the database"))?;
        let (writer, jobs) = mpsc::channel(GROUP_COMMIT_QUEUE);
        tokio::spawn(write_loop(pool.clone(), jobs));
        let mut store = SqliteStore { pool, lease: Arc::default(), wal, writer, _checkpointer: None };
        store.migrate().await?;
        if store.wal.is_some() {
            let task = tokio::spawn(checkpoints(store.clone()));
            store._checkpointer = Some(Arc::new(AbortOnDrop(task)));
        }
        Ok(store)
    }

    /// Runs `PRAGMA wal_checkpoint(TRUNCATE)`: copies the log into the database and truncates
    /// it to 0 bytes, waiting up to the busy timeout for readers and the writer.
    pub async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let (busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
            .map_err(err("checkpoint the write-ahead log"))?;
        Ok(Checkpoint { busy: busy != 0, log_frames: log, checkpointed_frames: done })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("begin migration"))?;
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await.map_err(err("read schema version"))?;
        for (i, sql) in crate::MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(err("apply a migration"))?;
            // PRAGMA takes no bind parameters; `i` is our own integer.
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1)))
                .execute(&mut *tx)
                .await
                .map_err(err("record schema version"))?;
            tracing::info!(version = i + 1, "database schema migrated");
        }
        tx.commit().await.map_err(err("commit migration"))
    }
}

/// The checkpoint task (see the module documentation). It holds a clone of the store, so the
/// store's [`AbortOnDrop`] is not what ends it: it ends when the pool is closed, or is aborted
/// with the last other clone.
async fn checkpoints(store: SqliteStore) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let store = SqliteStore { _checkpointer: None, ..store };
    loop {
        tick.tick().await;
        if store.pool.is_closed() {
            return;
        }
        if store.wal_bytes().unwrap_or(0) <= CHECKPOINT_ABOVE {
            continue;
        }
        match store.checkpoint().await {
            Ok(c) if c.busy => tracing::debug!(frames = c.log_frames, "write-ahead log checkpoint busy, retrying"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "write-ahead log checkpoint failed"),
        }
    }
}

/// An upsert waiting for its group commit, and who waits for its answer.
type Job = (StoredSubscription, oneshot::Sender<Result<String, StoreError>>);

/// A write waiting for the writer task (see "One writer" in the module documentation).
enum Write {
    /// An upsert, answered with the id kept.
    Upsert(Job),
    /// Outbox rows to save (or replace), with the owner and lease end they get.
    SavePending { rows: Vec<PendingDelivery>, owner: String, until: i64, done: oneshot::Sender<Result<(), StoreError>> },
    /// Outbox rows to delete, by subscription id.
    DeletePending { ids: Vec<String>, done: oneshot::Sender<Result<(), StoreError>> },
}

impl Write {
    fn upsert_row(&self) -> Option<&StoredSubscription> {
        match self {
            Write::Upsert((row, _)) => Some(row),
            _ => None,
        }
    }

    /// Answers the write: `id` is the upsert's.
    fn answer(self, result: Result<Option<String>, StoreError>) {
        match self {
            Write::Upsert((_, answer)) => {
                let missing = || StoreError { op: "upsert a subscription", source: "no id returned".into() };
                let _ = answer.send(result.and_then(|id| id.ok_or_else(missing)));
            }
            Write::SavePending { done, .. } | Write::DeletePending { done, .. } => {
                let _ = done.send(result.map(|_| ()));
            }
        }
    }
}

const UPSERT: &str = "INSERT INTO subscriptions (id, client_id, topic, service, target, expires, created, triggers) \
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                      ON CONFLICT (client_id, topic, service) \
                      DO UPDATE SET target = excluded.target, expires = excluded.expires, triggers = excluded.triggers \
                      RETURNING id";

async fn upsert_on<'c, E: sqlx::SqliteExecutor<'c>>(e: E, s: &StoredSubscription) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(UPSERT)
        .bind(&s.id)
        .bind(&s.client_id)
        .bind(&s.topic)
        .bind(&s.service)
        .bind(&s.target)
        .bind(s.expires)
        .bind(s.created)
        .bind(i64::from(s.triggers))
        .fetch_one(e)
        .await
}

/// The writer task (see the module documentation): takes every write that is waiting (at most
/// [`GROUP_COMMIT_MAX`]), writes them in one transaction, in their order, and answers each
/// only after the commit. If the transaction fails, each write is tried alone, so that one bad
/// row fails only its own request.
async fn write_loop(pool: SqlitePool, mut writes: mpsc::Receiver<Write>) {
    let mut batch: Vec<Write> = Vec::with_capacity(GROUP_COMMIT_MAX);
    let mut last = 0;
    while gather(&mut writes, &mut batch, last).await {
        last = batch.len();
        match commit_writes(&pool, &batch).await {
            Ok(ids) => {
                for (w, id) in batch.drain(..).zip(ids) {
                    w.answer(Ok(id));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, writes = batch.len(), "group commit failed; writing one by one");
                for w in batch.drain(..) {
                    let result = write_alone(&pool, &w).await;
                    w.answer(result);
                }
            }
        }
    }
}

/// Takes the writes waiting into `batch` (empty; at most [`GROUP_COMMIT_MAX`]), waiting for the
/// first. If the last commit carried `last` ≥ [`FILL_FROM`] writes and fewer are here, waits up
/// to [`FILL_WAIT`] more until there are `last` (see "Group commit" in the module
/// documentation). Returns `false` once every sender is gone and nothing is left.
async fn gather<T>(writes: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, last: usize) -> bool {
    if writes.recv_many(batch, GROUP_COMMIT_MAX).await == 0 {
        return false;
    }
    let want = last.min(GROUP_COMMIT_MAX);
    if last < FILL_FROM || batch.len() >= want {
        return true;
    }
    let deadline = tokio::time::Instant::now() + FILL_WAIT;
    while batch.len() < want {
        // `recv_many` is cancel-safe: a write it has not returned stays in the channel.
        match tokio::time::timeout_at(deadline, writes.recv_many(batch, GROUP_COMMIT_MAX - batch.len())).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    true
}

/// One write in a transaction of its own (after its group commit failed).
async fn write_alone(pool: &SqlitePool, w: &Write) -> Result<Option<String>, StoreError> {
    if let Some(row) = w.upsert_row() {
        return upsert_on(pool, row).await.map(Some).map_err(err("upsert a subscription"));
    }
    let op =
        if matches!(w, Write::SavePending { .. }) { "save pending deliveries" } else { "delete pending deliveries" };
    let mut tx = pool.begin().await.map_err(err(op))?;
    write_outbox(&mut tx, w).await.map_err(err(op))?;
    tx.commit().await.map_err(err(op))?;
    Ok(None)
}

/// The statements of an outbox write, in `tx`.
async fn write_outbox(tx: &mut sqlx::SqliteConnection, w: &Write) -> Result<(), sqlx::Error> {
    match w {
        Write::Upsert(_) => {}
        Write::SavePending { rows, owner, until, .. } => owned::save_rows(tx, rows, owner, *until).await?,
        Write::DeletePending { ids, .. } => {
            for id in ids {
                sqlx::query("DELETE FROM outbox WHERE subscription_id = ?").bind(id).execute(&mut *tx).await?;
            }
        }
    }
    Ok(())
}

/// Rows per multi-row `INSERT` of a group commit (8 parameters each: 800, under SQLite's
/// oldest limit of 999 host parameters).
const UPSERT_ROWS: usize = 100;

/// The multi-row form of [`UPSERT`] for `rows` rows. It returns each row's key with its id:
/// SQLite does not promise the order of `RETURNING` rows.
fn upsert_many_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO subscriptions (id, client_id, topic, service, target, expires, created, triggers) VALUES ",
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?, ?)" });
    }
    sql.push_str(
        " ON CONFLICT (client_id, topic, service) \
         DO UPDATE SET target = excluded.target, expires = excluded.expires, triggers = excluded.triggers \
         RETURNING id, client_id, topic, service",
    );
    sql
}

/// Writes `batch` in its order and returns each upsert's id (`None` for the outbox's writes).
/// Upserts go a statement per [`UPSERT_ROWS`] rows rather than one per row: each statement is a
/// hand-off to sqlx's SQLite thread and back, which cost more than the row itself (issue 11's
/// subscribe profile: a third of the Director's CPU in thread wake-ups). A run of upserts that
/// names one subscription twice is written row by row, so that the later one wins as it would
/// alone.
async fn commit_writes(pool: &SqlitePool, batch: &[Write]) -> Result<Vec<Option<String>>, sqlx::Error> {
    let upserts: Vec<&StoredSubscription> = batch.iter().filter_map(Write::upsert_row).collect();
    if upserts.len() == batch.len() && upserts.len() <= UPSERT_ROWS && distinct(&upserts) {
        // One statement is its own transaction.
        return Ok(upsert_chunk(pool, &upserts).await?.into_iter().map(Some).collect());
    }
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|w| w.upsert_row().is_some()).count();
        if n == 0 {
            write_outbox(&mut tx, first).await?;
            ids.push(None);
            rest = &rest[1..];
            continue;
        }
        let rows: Vec<&StoredSubscription> = rest[..n].iter().filter_map(Write::upsert_row).collect();
        if distinct(&rows) {
            for chunk in rows.chunks(UPSERT_ROWS) {
                ids.extend(upsert_chunk(&mut *tx, chunk).await?.into_iter().map(Some));
            }
        } else {
            for row in rows {
                ids.push(Some(upsert_on(&mut *tx, row).await?));
            }
        }
        rest = &rest[n..];
    }
    tx.commit().await?;
    Ok(ids)
}

/// No two of `rows` name the same subscription (the upsert's conflict target).
fn distinct(rows: &[&StoredSubscription]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    rows.iter().all(|row| seen.insert(key_of(row)))
}

/// What a subscription is unique by (the upsert's conflict target).
fn key_of(s: &StoredSubscription) -> (String, String, String) {
    (s.client_id.clone(), s.topic.clone(), s.service.clone())
}

/// One multi-row upsert of `chunk` (distinct keys, at most [`UPSERT_ROWS`]); the ids in its order.
async fn upsert_chunk<'c, E: sqlx::SqliteExecutor<'c>>(
    e: E,
    chunk: &[&StoredSubscription],
) -> Result<Vec<String>, sqlx::Error> {
    // Built from constants only: no data in the text (the values are bound).
    let sql = sqlx::AssertSqlSafe(upsert_many_sql(chunk.len()));
    let mut q = sqlx::query_as::<_, (String, String, String, String)>(sql);
    for s in chunk {
        q = q
            .bind(&s.id)
            .bind(&s.client_id)
            .bind(&s.topic)
            .bind(&s.service)
            .bind(&s.target)
            .bind(s.expires)
            .bind(s.created)
            .bind(i64::from(s.triggers));
    }
    let mut returned: std::collections::HashMap<_, _> =
        q.fetch_all(e).await?.into_iter().map(|(id, c, t, svc)| ((c, t, svc), id)).collect();
    chunk.iter().map(|s| returned.remove(&key_of(s)).ok_or(sqlx::Error::RowNotFound)).collect()
}

impl SqliteStore {
    /// Hands an outbox write to the writer task and waits for its commit.
    async fn write(
        &self,
        write: Write,
        answer: oneshot::Receiver<Result<(), StoreError>>,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let closed = || StoreError { op, source: "the store is closed".into() };
        self.writer.send(write).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// A page read at start (`LOAD_PAGE`, `LOAD_ROUTES_PAGE`): the whole page comes back as one
    /// row holding a JSON array of rows `R`, and the cursor is a rowid. Returns the rows and the
    /// next cursor.
    async fn json_page<R: serde::de::DeserializeOwned>(
        &self,
        sql: &'static str,
        now: i64,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<R>, String), StoreError> {
        let after: i64 = match after {
            "" => 0,
            a => a.parse().map_err(|e| StoreError { op: "read the page cursor", source: Box::new(e) })?,
        };
        let (page, last): (String, Option<i64>) = sqlx::query_as(sql)
            .bind(after)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(err("load subscriptions"))?;
        let rows: Vec<R> = serde_json::from_str(&page)
            .map_err(|e| StoreError { op: "read a page of subscription rows", source: Box::new(e) })?;
        Ok((rows, last.unwrap_or(after).to_string()))
    }
}

#[async_trait]
impl SubscriptionStore for SqliteStore {
    async fn upsert(&self, s: &StoredSubscription) -> Result<String, StoreError> {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError { op: "upsert a subscription", source: "the store is closed".into() };
        self.writer.send(Write::Upsert((s.clone(), tx))).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        // One short transaction per batch: a purge of 100,000 never holds the writer for long.
        for batch in ids.chunks(DELETE_BATCH) {
            let mut tx = self.pool.begin().await.map_err(err("begin delete"))?;
            for id in batch {
                n += sqlx::query("DELETE FROM subscriptions WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("delete a subscription"))?
                    .rows_affected();
            }
            tx.commit().await.map_err(err("commit delete"))?;
        }
        Ok(n)
    }

    async fn load(&self, now: i64) -> Result<Vec<StoredSubscription>, StoreError> {
        // The columns of `rows::subscription`.
        let sql = "SELECT id, client_id, topic, service, target, expires, created, triggers FROM subscriptions \
                   WHERE expires > ?";
        let found = sqlx::query(sql).bind(now).fetch_all(&self.pool).await.map_err(err("load subscriptions"))?;
        found.iter().map(rows::subscription).collect::<Result<_, sqlx::Error>>().map_err(err("read a subscription row"))
    }

    async fn load_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        let (rows, next) = self.json_page::<PageRow>(LOAD_PAGE, now, after, limit).await?;
        let rows: Vec<StoredSubscription> = rows
            .into_iter()
            .map(|(id, client_id, topic, service, target, expires, created, triggers)| StoredSubscription {
                id,
                client_id,
                topic,
                service,
                target,
                expires,
                created,
                triggers: triggers.clamp(0, 255) as u8,
            })
            .collect();
        Ok(Page { rows, next })
    }

    async fn load_routes_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        // As `load_page`, without the targets (see `LOAD_ROUTES_PAGE`).
        let (rows, next) = self.json_page::<RouteRow>(LOAD_ROUTES_PAGE, now, after, limit).await?;
        let rows: Vec<StoredSubscription> = rows
            .into_iter()
            .map(|(id, client_id, topic, service, expires, created, triggers)| StoredSubscription {
                id,
                client_id,
                topic,
                service,
                target: String::new(),
                expires,
                created,
                triggers: triggers.clamp(0, 255) as u8,
            })
            .collect();
        Ok(Page { rows, next })
    }

    async fn load_targets(&self, ids: &[String], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(ids)
            .map_err(|e| StoreError { op: "write the ids of a target fetch", source: Box::new(e) })?;
        let (found,): (String,) = sqlx::query_as(LOAD_TARGETS)
            .bind(ids)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(err("load targets"))?;
        serde_json::from_str(&found)
            .map_err(|e| StoreError { op: "read the targets of subscriptions", source: Box::new(e) })
    }

    async fn load_topic_targets(
        &self,
        topic: &str,
        service: &str,
        after: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (found,): (Option<String>,) = sqlx::query_as(LOAD_TOPIC_TARGETS)
            .bind(topic)
            .bind(service)
            .bind(after)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(err("load a topic's targets"))?;
        let mut rows = separated_rows(found.as_deref().unwrap_or_default())?;
        // The aggregate's order is not promised: the page's order is.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError> {
        // SQLite has no DELETE … LIMIT by default: the rowids come from the `expires` index.
        let sql = sqlx::AssertSqlSafe(format!("DELETE FROM subscriptions WHERE rowid IN ({EXPIRED_ROWIDS})"));
        Ok(sqlx::query(sql)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(err("purge expired subscriptions"))?
            .rows_affected())
    }

    async fn vapid_keys_in_use(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as(VAPID_KEYS_IN_USE).fetch_all(&self.pool).await.map_err(err("list the VAPID keys in use"))?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    async fn assign_vapid_key(&self, key: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(ASSIGN_VAPID_KEY)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(err("bind subscriptions to the VAPID key"))?
            .rows_affected())
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        // SQLite counts the rows of its smallest index (7-13 ms for a million, warm).
        crate::counted(sqlx::query_scalar(crate::COUNT).fetch_one(&self.pool).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("ping"))?;
        Ok(())
    }

    async fn save_pending(&self, rows: &[PendingDelivery]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let (owner, until) = (self.lease.owner().to_owned(), self.lease.until(davpush_core::unix_now()));
        let write = Write::SavePending { rows: rows.to_vec(), owner, until, done };
        self.write(write, answer, "save pending deliveries").await
    }

    async fn delete_pending(&self, subscription_ids: &[String]) -> Result<(), StoreError> {
        if subscription_ids.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let write = Write::DeletePending { ids: subscription_ids.to_vec(), done };
        self.write(write, answer, "delete pending deliveries").await
    }

    async fn load_pending(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        // The columns of `rows::pending`.
        let sql = "SELECT subscription_id, topic, sync_token, trigger_kind, attempt, due, deadline FROM outbox";
        let found = sqlx::query(sql).fetch_all(&self.pool).await.map_err(err("load pending deliveries"))?;
        found.iter().map(rows::pending).collect::<Result<_, sqlx::Error>>().map_err(err("read a pending delivery row"))
    }

    async fn claim_pending(&self, now: i64, limit: usize) -> Result<Vec<PendingDelivery>, StoreError> {
        owned::claim(&self.pool, &self.lease, now, limit).await
    }

    async fn renew_pending(&self, now: i64) -> Result<u64, StoreError> {
        owned::renew(&self.pool, &self.lease, now).await
    }

    async fn release_pending(&self) -> Result<u64, StoreError> {
        owned::release(&self.pool, &self.lease).await
    }

    fn set_outbox_lease(&self, secs: u64) {
        self.lease.set_secs(secs);
    }

    async fn vapid_keys(&self) -> Result<Vec<StoredVapidKey>, StoreError> {
        owned::keys(&self.pool).await
    }

    async fn add_vapid_keys(&self, keys: &[StoredVapidKey]) -> Result<(), StoreError> {
        owned::add_keys(&self.pool, keys).await
    }

    async fn retire_vapid_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        owned::retire_key(&self.pool, id, at).await
    }

    async fn delete_vapid_key(&self, id: &str) -> Result<bool, StoreError> {
        owned::delete_key(&self.pool, id).await
    }

    fn wal_bytes(&self) -> Option<u64> {
        let wal = self.wal.as_ref()?;
        match std::fs::metadata(wal) {
            Ok(m) => Some(m.len()),
            // No log (yet, or any more after a truncating checkpoint by the last connection).
            Err(_) => Some(0),
        }
    }

    async fn close(&self) {
        if self.wal.is_some() {
            match self.checkpoint().await {
                Ok(c) if c.busy => tracing::warn!("write-ahead log not truncated at stop: the database is busy"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "write-ahead log not truncated at stop"),
            }
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::row;

    #[tokio::test]
    async fn outbox_owners_and_vapid_keys_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let (a, b, c) = (
            SqliteStore::open(&url).await.unwrap(),
            SqliteStore::open(&url).await.unwrap(),
            SqliteStore::open(&url).await.unwrap(),
        );
        crate::contract::outbox_owners_and_keys(&a, &b, &c).await;
    }

    #[tokio::test]
    async fn issue_11_routes_without_targets_and_targets_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        crate::contract::routes_and_targets(&SqliteStore::open(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn upsert_keeps_the_first_id_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(store.upsert(&row("a", "c1", "t", 100)).await.unwrap(), "a");
        let mut again = row("b", "c1", "t", 200);
        again.target = r#"{"endpoint":"https://push.example/2"}"#.into();
        again.triggers = 2;
        assert_eq!(store.upsert(&again).await.unwrap(), "a", "same client+topic+service updates");
        store.upsert(&row("c", "c2", "t", 50)).await.unwrap();
        drop(store);

        let store = SqliteStore::open(&url).await.unwrap();
        let mut rows = store.load(60).await.unwrap();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(rows.len(), 1, "expired rows are not loaded");
        assert_eq!(rows[0].expires, 200);
        assert_eq!(rows[0].triggers, 2, "triggers are kept and updated");
        assert!(rows[0].target.contains("/2"));
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.pool).await.unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(store.purge_expired(60, 1000).await.unwrap(), 1);
        assert_eq!(store.delete(&["a".into(), "zz".into()]).await.unwrap(), 1);
        assert!(store.load(0).await.unwrap().is_empty());
        store.ping().await.unwrap();
    }

    fn jobs(rows: Vec<StoredSubscription>) -> Vec<Write> {
        rows.into_iter().map(|r| Write::Upsert((r, oneshot::channel().0))).collect()
    }

    async fn commit_batch(pool: &SqlitePool, batch: &[Write]) -> Result<Vec<String>, sqlx::Error> {
        Ok(commit_writes(pool, batch).await?.into_iter().map(Option::unwrap).collect())
    }

    #[tokio::test]
    async fn issue_11_a_group_commit_answers_every_row_with_its_own_id() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        // Existing rows: their keys keep their ids when written again.
        for i in 0..10 {
            store.upsert(&row(&format!("old{i}"), &format!("c{i}"), "t", 100)).await.unwrap();
        }
        // 250 rows: three multi-row statements in one transaction, ten of them updates, in an
        // order that is not the table's.
        let rows: Vec<_> = (0..250).rev().map(|i| row(&format!("new{i}"), &format!("c{i}"), "t", 200)).collect();
        let ids = commit_batch(&store.pool, &jobs(rows.clone())).await.unwrap();
        for (r, id) in rows.iter().zip(&ids) {
            let n: usize = r.client_id[1..].parse().unwrap();
            let want = if n < 10 { format!("old{n}") } else { r.id.clone() };
            assert_eq!(*id, want, "the answer of {}", r.client_id);
        }
        assert_eq!(store.load(0).await.unwrap().len(), 250);
        // A batch of one statement, and a batch naming one subscription twice: the later row wins.
        let ids = commit_batch(&store.pool, &jobs(vec![row("x", "c300", "t", 300)])).await.unwrap();
        assert_eq!(ids, ["x"]);
        let mut second = row("z", "c301", "t", 400);
        second.triggers = 1;
        let batch = jobs(vec![row("y", "c301", "t", 300), row("q", "c302", "t", 300), second]);
        assert_eq!(commit_batch(&store.pool, &batch).await.unwrap(), ["y", "q", "y"]);
        let stored = store.load(0).await.unwrap().into_iter().find(|r| r.id == "y").unwrap();
        assert_eq!((stored.expires, stored.triggers), (400, 1));
    }

    #[tokio::test]
    async fn outbox_rows_replace_each_other_and_die_with_their_subscription() {
        crate::contract::outbox_rows(&SqliteStore::open("sqlite::memory:").await.unwrap()).await;
    }

    fn pending(id: &str, token: &str) -> PendingDelivery {
        PendingDelivery {
            subscription_id: id.into(),
            topic: "t".into(),
            sync_token: Some(token.into()),
            trigger: None,
            attempt: 1,
            due: 5,
            deadline: 50,
        }
    }

    #[tokio::test]
    async fn issue_11_upserts_and_outbox_writes_commit_together_in_their_order() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let save = |rows: Vec<PendingDelivery>| Write::SavePending {
            rows,
            owner: "me".into(),
            until: 9,
            done: oneshot::channel().0,
        };
        let delete = |ids: &[&str]| Write::DeletePending {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            done: oneshot::channel().0,
        };
        let batch = vec![
            Write::Upsert((row("a", "c1", "t", 100), oneshot::channel().0)),
            save(vec![pending("a", "s1")]),
            Write::Upsert((row("b", "c2", "t", 100), oneshot::channel().0)),
            // Replaces a's row, then goes; b's row comes after its subscription.
            save(vec![pending("a", "s2"), pending("b", "s1")]),
            delete(&["a"]),
        ];
        let ids = commit_writes(&store.pool, &batch).await.unwrap();
        assert_eq!(ids, [Some("a".to_owned()), None, Some("b".to_owned()), None, None]);
        assert_eq!(store.load_pending().await.unwrap(), vec![pending("b", "s1")]);
        let owner: String = sqlx::query_scalar("SELECT owner FROM outbox").fetch_one(&store.pool).await.unwrap();
        assert_eq!(owner, "me");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_11_concurrent_outbox_writes_take_one_connection_and_leave_the_rest_to_readers() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::open(&url).await.unwrap();
        for i in 0..64 {
            store.upsert(&row(&format!("id-{i}"), &format!("c{i}"), "t", 100)).await.unwrap();
        }
        let before = store.pool.size();
        // As a delivery engine whose 64 first deliveries failed at once.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.spawn(async move {
                let id = format!("id-{i}");
                store.save_pending(&[pending(&id, "s1")]).await.unwrap();
                if i % 2 == 0 {
                    store.delete_pending(&[id]).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(store.pool.size(), before, "the writer's connection did all the writes");
        let mut kept: Vec<String> =
            store.load_pending().await.unwrap().into_iter().map(|p| p.subscription_id).collect();
        kept.sort();
        let mut want: Vec<String> = (0..64).filter(|i| i % 2 == 1).map(|i| format!("id-{i}")).collect();
        want.sort();
        assert_eq!(kept, want);
    }

    #[tokio::test]
    async fn issue_11_expired_rows_are_purged_in_batches_through_the_expires_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {EXPIRED_ROWIDS}")))
                .bind(100)
                .bind(10)
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(plan.iter().any(|d| d.contains("USING COVERING INDEX subscriptions_expires")), "{plan:?}");
        assert!(!plan.iter().any(|d| d.starts_with("SCAN subscriptions")), "no full scan: {plan:?}");

        // 5,000 expired rows (expiry 1..=5000) and 10 that live on.
        let mut tx = store.pool.begin().await.unwrap();
        for i in 0..5_010i64 {
            let expires = if i < 5_000 { 1 + i } else { 1_000_000 };
            sqlx::query(
                "INSERT INTO subscriptions (id, client_id, topic, service, target, expires, created) \
                         VALUES (?, ?, 't', 'web_push', '{}', ?, 0)",
            )
            .bind(format!("id-{i}"))
            .bind(format!("c-{i}"))
            .bind(expires)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let mut batches = Vec::new();
        loop {
            let n = store.purge_expired(10_000, 2_000).await.unwrap();
            batches.push(n);
            if n < 2_000 {
                break;
            }
        }
        assert_eq!(batches, [2_000, 2_000, 1_000]);
        assert_eq!(store.load(0).await.unwrap().len(), 10, "the live rows stay");
        assert_eq!(store.purge_expired(10_000, 2_000).await.unwrap(), 0);
        // Deleting many ids goes in several transactions, and counts them all.
        let ids: Vec<String> = (5_000..5_010).map(|i| format!("id-{i}")).chain(["nope".to_owned()]).collect();
        assert_eq!(store.delete(&ids).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn issue_11_a_closed_store_leaves_an_empty_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&format!("sqlite://{}", path.display())).await.unwrap();
        for i in 0..50 {
            store.upsert(&row(&format!("id-{i}"), &format!("c{i}"), "t", 100)).await.unwrap();
        }
        assert!(store.wal_bytes().unwrap() > 0, "writes went to the log");
        let c = store.checkpoint().await.unwrap();
        assert!(!c.busy && c.log_frames == c.checkpointed_frames, "{c:?}");
        assert_eq!(store.wal_bytes(), Some(0), "TRUNCATE leaves 0 bytes");
        store.upsert(&row("late", "c-late", "t", 100)).await.unwrap();
        store.close().await;
        let wal = std::fs::metadata(dir.path().join("db.sqlite-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "closing checkpoints and truncates the log");
        let store = SqliteStore::open(&format!("sqlite://{}", path.display())).await.unwrap();
        assert_eq!(store.load(0).await.unwrap().len(), 51);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_11_concurrent_upserts_are_committed_together_and_each_answered() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let store = store.clone();
            // Clients 0..100 subscribe three times each (new ids, same key): one row each.
            tasks.spawn(async move {
                let r = row(&format!("id-{i}"), &format!("c{}", i % 100), "t", 100);
                (i % 100, store.upsert(&r).await.unwrap())
            });
        }
        let mut kept: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
        while let Some(done) = tasks.join_next().await {
            let (client, id) = done.unwrap();
            let first = kept.entry(client).or_insert_with(|| id.clone());
            assert_eq!(first, &id, "every upsert of one key answers the id that is kept");
        }
        assert_eq!(kept.len(), 100);
        drop(store);
        let store = SqliteStore::open(&url).await.unwrap();
        let rows = store.load(0).await.unwrap();
        assert_eq!(rows.len(), 100, "committed: visible after reopening");
        assert_eq!(store.count().await.unwrap(), Some(100), "the count start-up sizes its index with");
        for r in rows {
            assert_eq!(Some(&r.id), kept.get(&r.client_id[1..].parse::<usize>().unwrap()));
        }
    }

    /// The writer's batches (`gather`), on tokio's paused clock: what waits, for how long, and
    /// for how many.
    #[tokio::test(start_paused = true)]
    async fn issue_11_after_a_full_commit_the_next_batch_waits_briefly_to_fill_and_a_lone_write_never_waits() {
        use tokio::time::Instant;
        let (tx, mut rx) = mpsc::channel::<u32>(GROUP_COMMIT_QUEUE);
        let mut batch = Vec::new();

        // After a small commit (or none), whatever is waiting goes at once.
        tx.send(1).await.unwrap();
        let t = Instant::now();
        assert!(gather(&mut rx, &mut batch, FILL_FROM - 1).await);
        assert_eq!((batch.len(), t.elapsed()), (1, Duration::ZERO), "a lone write never waits");
        batch.clear();

        // After a full commit of 12, 3 waiting and nobody else coming: waits the whole
        // FILL_WAIT, then goes with the 3.
        for i in 0..3 {
            tx.send(i).await.unwrap();
        }
        let t = Instant::now();
        assert!(gather(&mut rx, &mut batch, 12).await);
        assert_eq!(batch, [0, 1, 2]);
        // (tokio's timers tick in milliseconds)
        let waited = t.elapsed();
        assert!(waited >= FILL_WAIT && waited <= FILL_WAIT + Duration::from_millis(1), "waited {waited:?}");
        batch.clear();

        // Writes that come one by one in the meantime fill it: it goes as soon as it holds 12
        // (no timer fired: the clock did not move).
        tx.send(100).await.unwrap();
        let late = tx.clone();
        let feeder = tokio::spawn(async move {
            for i in 101..112 {
                tokio::task::yield_now().await;
                late.send(i).await.unwrap();
            }
        });
        let t = Instant::now();
        assert!(gather(&mut rx, &mut batch, 12).await);
        assert_eq!(batch, (100..112).collect::<Vec<_>>(), "waited for the later writes, in their order");
        assert_eq!(t.elapsed(), Duration::ZERO, "went as soon as it held as many as the last commit");
        feeder.await.unwrap();
        batch.clear();

        // A batch that is already as large as the last commit does not wait.
        for i in 0..9 {
            tx.send(i).await.unwrap();
        }
        let t = Instant::now();
        assert!(gather(&mut rx, &mut batch, 9).await);
        assert_eq!((batch.len(), t.elapsed()), (9, Duration::ZERO));
        batch.clear();

        // A batch never exceeds GROUP_COMMIT_MAX, however large the last commit.
        for i in 0..GROUP_COMMIT_MAX as u32 + 5 {
            tx.send(i).await.unwrap();
        }
        let t = Instant::now();
        assert!(gather(&mut rx, &mut batch, 10 * GROUP_COMMIT_MAX).await);
        assert_eq!((batch.len(), t.elapsed()), (GROUP_COMMIT_MAX, Duration::ZERO));
        batch.clear();

        // Senders gone: what is left is still written, then the loop ends without waiting.
        drop(tx);
        let t = Instant::now();
        assert!(gather(&mut rx, &mut batch, 100).await);
        assert_eq!((batch.len(), t.elapsed()), (5, Duration::ZERO), "a closed channel ends the wait");
        batch.clear();
        assert!(!gather(&mut rx, &mut batch, 100).await);
    }

    #[tokio::test]
    async fn issue_11_pages_of_rows_come_back_whole_in_table_order() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let mut written = Vec::new();
        for i in 0..25 {
            let mut r = row(&format!("id-{i:02}"), &format!("c{i}"), &format!("topic-{}", i % 3), 100 + i);
            // Targets are JSON text with quotes, escapes and non-ASCII: they come back unchanged.
            r.target = format!(r#"{{"endpoint":"https://push.example/{i}?a=\"b\"&c=é\\","p256dh":"k{i}"}}"#);
            r.service = ["web_push", "fcm", "apns"][i as usize % 3].into();
            r.triggers = (i % 4) as u8;
            r.created = 7 * i;
            store.upsert(&r).await.unwrap();
            written.push(r);
        }
        // Expired at 110: id-00 ..= id-10.
        // An update keeps its row (and place); a row written later comes after it.
        let mut updated = written[12].clone();
        updated.target = r#"{"endpoint":"https://push.example/updated"}"#.into();
        updated.id = "zz-not-kept".into();
        store.upsert(&updated).await.unwrap();
        updated.id = written[12].id.clone();
        written[12] = updated;
        let mut pages = Vec::new();
        let mut after = String::new();
        loop {
            let page = store.load_page(110, &after, 4).await.unwrap();
            assert!(page.rows.len() <= 4);
            if page.rows.is_empty() {
                assert_eq!(page.next, after, "the end: the cursor stays");
                break;
            }
            after = page.next;
            pages.push(page.rows);
        }
        assert_eq!(pages.len(), 4, "14 rows in pages of 4");
        let loaded: Vec<StoredSubscription> = pages.into_iter().flatten().collect();
        let expected: Vec<StoredSubscription> = written.into_iter().filter(|r| r.expires > 110).collect();
        assert_eq!(loaded, expected);
        assert!(store.load_page(110, "not-a-cursor", 4).await.is_err(), "a bad cursor is an error");
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {LOAD_PAGE}")))
                .bind(0)
                .bind(110)
                .bind(4)
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(plan.iter().any(|d| d.contains("USING INTEGER PRIMARY KEY (rowid>?)")), "table order: {plan:?}");
    }

    #[tokio::test]
    async fn memory_database_works() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.upsert(&row("a", "c1", "t", 100)).await.unwrap();
        assert_eq!(store.load(0).await.unwrap().len(), 1);
    }

    /// Issue 15: rows from before key rotation get the advertised key; the keys in use are listed.
    #[tokio::test]
    async fn issue_15_vapid_keys_are_assigned_to_old_rows_and_listed() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let mut a = row("a", "c1", "t", 100);
        a.target = r#"{"endpoint":"https://push.example/1"}"#.into();
        store.upsert(&a).await.unwrap();
        let mut bound = row("b", "c2", "t", 100);
        bound.target = r#"{"endpoint":"https://push.example/2","vapid_key":"NEWKEY"}"#.into();
        store.upsert(&bound).await.unwrap();
        let mut fcm = row("c", "c3", "t", 100);
        fcm.service = "fcm".into();
        fcm.target = r#"{"token":"x"}"#.into();
        store.upsert(&fcm).await.unwrap();
        assert_eq!(store.vapid_keys_in_use().await.unwrap(), ["NEWKEY"]);
        assert_eq!(store.assign_vapid_key("OLDKEY").await.unwrap(), 1, "only the Web Push row without a key");
        assert_eq!(store.assign_vapid_key("OTHER").await.unwrap(), 0, "idempotent");
        let mut keys = store.vapid_keys_in_use().await.unwrap();
        keys.sort();
        assert_eq!(keys, ["NEWKEY", "OLDKEY"]);
        let rows = store.load(0).await.unwrap();
        let t: serde_json::Value = serde_json::from_str(&rows.iter().find(|r| r.id == "a").unwrap().target).unwrap();
        assert_eq!(t, serde_json::json!({"endpoint": "https://push.example/1", "vapid_key": "OLDKEY"}));
        assert!(!rows.iter().find(|r| r.id == "c").unwrap().target.contains("vapid_key"));
        store.delete(&["a".into()]).await.unwrap();
        assert_eq!(store.vapid_keys_in_use().await.unwrap(), ["NEWKEY"]);
        // Both read the index on the key, not every Web Push row's JSON (issue 11).
        for sql in [VAPID_KEYS_IN_USE, ASSIGN_VAPID_KEY] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("K")
                    .fetch_all(&store.pool)
                    .await
                    .unwrap();
            let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(plan.iter().any(|d| d.contains("INDEX subscriptions_vapid_key")), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|d| d.starts_with("SCAN")), "{sql}: {plan:?}");
        }
    }
}
