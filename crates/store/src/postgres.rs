//! The PostgreSQL store: one database shared by every Director node of a cluster.
//!
//! The schema lives in the connection's `search_path` (usually `public`; tests and shared
//! databases may pick a schema with `?options=-csearch_path%3Dname` in the URL). Migrations run in
//! one transaction under a transaction-scoped advisory lock, so nodes that start together apply
//! each migration once; `davpush_schema_version` records how far.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::{
    OutboxLease, Page, PendingDelivery, StoreError, StoredSubscription, StoredVapidKey, SubscriptionStore,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{err, rows};

mod owned;

/// The schema, in order. Entry `i` brings the database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_subscriptions.sql"),
    include_str!("../migrations/postgres/0002_outbox.sql"),
    include_str!("../migrations/postgres/0003_outbox_owner.sql"),
    include_str!("../migrations/postgres/0004_topic_index.sql"),
    include_str!("../migrations/postgres/0005_vapid_key_index.sql"),
    include_str!("../migrations/postgres/0006_id_byte_order.sql"),
];

/// Key of the advisory lock taken while migrating ("davpush" in ASCII).
const MIGRATION_LOCK: i64 = 0x0064_6176_7075_7368;

/// Deletes at most `$2` subscriptions expired at `$1`, found through the index on `expires`.
const PURGE_EXPIRED: &str = "DELETE FROM subscriptions WHERE ctid = ANY(ARRAY(\
                             SELECT ctid FROM subscriptions WHERE expires <= $1 ORDER BY expires LIMIT $2))";

/// The VAPID keys Web Push subscriptions are bound to, through the index on them (migration 5).
const VAPID_KEYS_IN_USE: &str = "SELECT DISTINCT (target::jsonb) ->> 'vapid_key' FROM subscriptions \
                                 WHERE service IN ('web_push', 'unified_push') \
                                 AND ((target::jsonb) ->> 'vapid_key') IS NOT NULL";

/// Binds the Web Push subscriptions without a VAPID key to key `$1`, found through the same index.
const ASSIGN_VAPID_KEY: &str = "UPDATE subscriptions \
                                SET target = (target::jsonb || jsonb_build_object('vapid_key', $1::text))::text \
                                WHERE service IN ('web_push', 'unified_push') \
                                AND ((target::jsonb) ->> 'vapid_key') IS NULL";

/// Subscriptions in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// This handle's identity as an outbox owner.
    lease: std::sync::Arc<OutboxLease>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(err("parse the database URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .connect_with(opts)
            .await
            .map_err(err("connect to the database"))?;
        let store = PostgresStore { pool, lease: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("begin migration"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err("lock the schema for migration"))?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS davpush_schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(err("create the schema version table"))?;
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM davpush_schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(err("read schema version"))?;
        let version = version.unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(err("apply a migration"))?;
            sqlx::query("INSERT INTO davpush_schema_version (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(err("record schema version"))?;
            tracing::info!(version = i + 1, "database schema migrated");
        }
        tx.commit().await.map_err(err("commit migration"))
    }
}

#[async_trait]
impl SubscriptionStore for PostgresStore {
    async fn upsert(&self, s: &StoredSubscription) -> Result<String, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO subscriptions (id, client_id, topic, service, target, expires, created, triggers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (client_id, topic, service) \
             DO UPDATE SET target = excluded.target, expires = excluded.expires, triggers = excluded.triggers \
             RETURNING id",
        )
        .bind(&s.id)
        .bind(&s.client_id)
        .bind(&s.topic)
        .bind(&s.service)
        .bind(&s.target)
        .bind(s.expires)
        .bind(s.created)
        .bind(i16::from(s.triggers))
        .fetch_one(&self.pool)
        .await
        .map_err(err("upsert a subscription"))
    }

    async fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        // Short statements: a purge of 100,000 never holds locks on all of them at once.
        for batch in ids.chunks(1_000) {
            n += sqlx::query("DELETE FROM subscriptions WHERE id = ANY($1)")
                .bind(batch)
                .execute(&self.pool)
                .await
                .map_err(err("delete subscriptions"))?
                .rows_affected();
        }
        Ok(n)
    }

    async fn load(&self, now: i64) -> Result<Vec<StoredSubscription>, StoreError> {
        // The columns of `rows::subscription`.
        let sql = "SELECT id, client_id, topic, service, target, expires, created, triggers FROM subscriptions \
                   WHERE expires > $1";
        let found = sqlx::query(sql).bind(now).fetch_all(&self.pool).await.map_err(err("load subscriptions"))?;
        found.iter().map(rows::subscription).collect::<Result<_, sqlx::Error>>().map_err(err("read a subscription row"))
    }

    async fn load_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        // The columns of `rows::subscription`; the primary key's index gives the order.
        let sql = "SELECT id, client_id, topic, service, target, expires, created, triggers FROM subscriptions \
                   WHERE id > $1 AND expires > $2 ORDER BY id LIMIT $3";
        let found = sqlx::query(sql)
            .bind(after)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(err("load subscriptions"))?;
        let rows: Vec<StoredSubscription> = found
            .iter()
            .map(rows::subscription)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(err("read a subscription row"))?;
        let next = rows.last().map_or_else(|| after.to_owned(), |r| r.id.clone());
        Ok(Page { rows, next })
    }

    async fn load_routes_page(&self, now: i64, after: &str, limit: usize) -> Result<Page, StoreError> {
        // As `load_page`, without the targets: only the routing is held in memory (issue 11).
        let sql = "SELECT id, client_id, topic, service, expires, created, triggers FROM subscriptions \
                   WHERE id > $1 AND expires > $2 ORDER BY id LIMIT $3";
        let found: Vec<(String, String, String, String, i64, i64, i16)> = sqlx::query_as(sql)
            .bind(after)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(err("load subscriptions"))?;
        let rows: Vec<StoredSubscription> = found
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
        let next = rows.last().map_or_else(|| after.to_owned(), |r| r.id.clone());
        Ok(Page { rows, next })
    }

    async fn load_targets(&self, ids: &[String], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Through the primary key's index, one statement per batch.
        sqlx::query_as("SELECT id, target FROM subscriptions WHERE id = ANY($1) AND expires > $2")
            .bind(ids)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(err("load targets"))
    }

    async fn load_topic_targets(
        &self,
        topic: &str,
        service: &str,
        after: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // A range of the index on (topic, service, id).
        sqlx::query_as(
            "SELECT id, target FROM subscriptions WHERE topic = $1 AND service = $2 AND id > $3 AND expires > $4 \
             ORDER BY id LIMIT $5",
        )
        .bind(topic)
        .bind(service)
        .bind(after)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(err("load a topic's targets"))
    }

    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError> {
        // At most `limit` rows, by their physical address, found through the index on `expires`.
        // `ORDER BY expires` keeps the planner on that index: with statistics from before the
        // rows expired it took a sequential scan from the table's start, through a million live
        // rows to the expired ones at its end (188 ms for one statement, issue 11).
        Ok(sqlx::query(PURGE_EXPIRED)
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
        crate::counted(sqlx::query_scalar(crate::COUNT).fetch_one(&self.pool).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("ping"))?;
        Ok(())
    }

    async fn save_pending(&self, rows: &[PendingDelivery]) -> Result<(), StoreError> {
        let until = self.lease.until(davpush_core::unix_now());
        let mut tx = self.pool.begin().await.map_err(err("begin outbox write"))?;
        owned::save_rows(&mut tx, rows, self.lease.owner(), until).await.map_err(err("save a pending delivery"))?;
        tx.commit().await.map_err(err("commit outbox write"))
    }

    async fn delete_pending(&self, subscription_ids: &[String]) -> Result<(), StoreError> {
        if subscription_ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE subscription_id = ANY($1)")
            .bind(subscription_ids)
            .execute(&self.pool)
            .await
            .map_err(err("delete pending deliveries"))?;
        Ok(())
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
}

#[cfg(test)]
mod tests;
