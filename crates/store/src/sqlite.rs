//! The SQLite store.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use davpush_core::{PendingDelivery, StoreError, StoredSubscription, SubscriptionStore};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{err, rows};

/// Subscriptions in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // Every connection to `:memory:` would be a database of its own.
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if memory { None } else { Some(Duration::from_secs(3600)) })
            .connect_with(opts)
            .await
            .map_err(err("open the database"))?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
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

#[async_trait]
impl SubscriptionStore for SqliteStore {
    async fn upsert(&self, s: &StoredSubscription) -> Result<String, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO subscriptions (id, client_id, topic, service, target, expires, created, triggers) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
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
        .bind(i64::from(s.triggers))
        .fetch_one(&self.pool)
        .await
        .map_err(err("upsert a subscription"))
    }

    async fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("begin delete"))?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query("DELETE FROM subscriptions WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err("delete a subscription"))?
                .rows_affected();
        }
        tx.commit().await.map_err(err("commit delete"))?;
        Ok(n)
    }

    async fn load(&self, now: i64) -> Result<Vec<StoredSubscription>, StoreError> {
        // The columns of `rows::subscription`.
        let sql = "SELECT id, client_id, topic, service, target, expires, created, triggers FROM subscriptions \
                   WHERE expires > ?";
        let found = sqlx::query(sql).bind(now).fetch_all(&self.pool).await.map_err(err("load subscriptions"))?;
        found.iter().map(rows::subscription).collect::<Result<_, sqlx::Error>>().map_err(err("read a subscription row"))
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM subscriptions WHERE expires <= ?")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(err("purge expired subscriptions"))?
            .rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("ping"))?;
        Ok(())
    }

    async fn save_pending(&self, rows: &[PendingDelivery]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("begin outbox write"))?;
        for r in rows {
            // A subscription deleted meanwhile has no row to refer to: nothing to keep then.
            sqlx::query(
                "INSERT INTO outbox (subscription_id, topic, sync_token, trigger_kind, attempt, due, deadline) \
                 SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = ?) \
                 ON CONFLICT (subscription_id) DO UPDATE SET topic = excluded.topic, \
                 sync_token = excluded.sync_token, trigger_kind = excluded.trigger_kind, \
                 attempt = excluded.attempt, due = excluded.due, deadline = excluded.deadline",
            )
            .bind(&r.subscription_id)
            .bind(&r.topic)
            .bind(&r.sync_token)
            .bind(&r.trigger)
            .bind(r.attempt as i64)
            .bind(r.due)
            .bind(r.deadline)
            .bind(&r.subscription_id)
            .execute(&mut *tx)
            .await
            .map_err(err("save a pending delivery"))?;
        }
        tx.commit().await.map_err(err("commit outbox write"))
    }

    async fn delete_pending(&self, subscription_ids: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("begin outbox delete"))?;
        for id in subscription_ids {
            sqlx::query("DELETE FROM outbox WHERE subscription_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err("delete a pending delivery"))?;
        }
        tx.commit().await.map_err(err("commit outbox delete"))
    }

    async fn load_pending(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        // The columns of `rows::pending`.
        let sql = "SELECT subscription_id, topic, sync_token, trigger_kind, attempt, due, deadline FROM outbox";
        let found = sqlx::query(sql).fetch_all(&self.pool).await.map_err(err("load pending deliveries"))?;
        found.iter().map(rows::pending).collect::<Result<_, sqlx::Error>>().map_err(err("read a pending delivery row"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, client: &str, topic: &str, expires: i64) -> StoredSubscription {
        StoredSubscription {
            id: id.into(),
            client_id: client.into(),
            topic: topic.into(),
            service: "web_push".into(),
            target: r#"{"endpoint":"https://push.example/1"}"#.into(),
            expires,
            created: 1,
            triggers: 3,
        }
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
        assert_eq!(store.purge_expired(60).await.unwrap(), 1);
        assert_eq!(store.delete(&["a".into(), "zz".into()]).await.unwrap(), 1);
        assert!(store.load(0).await.unwrap().is_empty());
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn outbox_rows_replace_each_other_and_die_with_their_subscription() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.upsert(&row("a", "c1", "t", 100)).await.unwrap();
        let p = |token: &str, attempt| PendingDelivery {
            subscription_id: "a".into(),
            topic: "t".into(),
            sync_token: Some(token.into()),
            trigger: None,
            attempt,
            due: 5,
            deadline: 50,
        };
        store.save_pending(&[p("s1", 1)]).await.unwrap();
        store.save_pending(&[p("s2", 2)]).await.unwrap();
        let mut orphan = p("x", 1);
        orphan.subscription_id = "no-such-subscription".into();
        store.save_pending(&[orphan]).await.unwrap();
        assert_eq!(store.load_pending().await.unwrap(), vec![p("s2", 2)]);
        store.delete(&["a".into()]).await.unwrap();
        assert!(store.load_pending().await.unwrap().is_empty(), "deleting a subscription deletes its outbox row");
    }

    #[tokio::test]
    async fn memory_database_works() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.upsert(&row("a", "c1", "t", 100)).await.unwrap();
        assert_eq!(store.load(0).await.unwrap().len(), 1);
    }
}
