//! The outbox's ownership (`davpush_core::store::outbox`) and the VAPID keys
//! (`davpush_core::store::vapid`), written once for both databases: their statements are the
//! same but for how the claim locks its rows. They use `$n` placeholders, which sqlx binds by
//! number in SQLite too.

/// Defines `save_rows`, `claim`, `renew`, `release`, `keys`, `add_keys`, `retire_key` and
/// `delete_key` on pool type `$pool` (connection type `$conn`); `$lock` ends the claim's inner
/// `SELECT` (PostgreSQL's row locks).
macro_rules! queries {
    ($pool:ty, $conn:ty, $lock:literal) => {
        use davpush_core::{OutboxLease, PendingDelivery, StoreError, StoredVapidKey};

        use crate::{err, rows};

        /// Saves (or replaces) outbox rows on `conn` (in the caller's transaction), owned by
        /// `owner` until `until`. A subscription deleted meanwhile has no row to refer to:
        /// nothing is kept for it then.
        pub(crate) async fn save_rows(
            conn: &mut $conn,
            rows: &[PendingDelivery],
            owner: &str,
            until: i64,
        ) -> Result<(), sqlx::Error> {
            for r in rows {
                sqlx::query(
                    "INSERT INTO outbox (subscription_id, topic, sync_token, trigger_kind, attempt, due, deadline, \
                     owner, lease_until) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                     WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = $1) \
                     ON CONFLICT (subscription_id) DO UPDATE SET topic = excluded.topic, \
                     sync_token = excluded.sync_token, trigger_kind = excluded.trigger_kind, \
                     attempt = excluded.attempt, due = excluded.due, deadline = excluded.deadline, \
                     owner = excluded.owner, lease_until = excluded.lease_until",
                )
                .bind(&r.subscription_id)
                .bind(&r.topic)
                .bind(&r.sync_token)
                .bind(&r.trigger)
                .bind(i64::from(r.attempt))
                .bind(r.due)
                .bind(r.deadline)
                .bind(owner)
                .bind(until)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        pub(super) async fn claim(
            pool: &$pool,
            lease: &OutboxLease,
            now: i64,
            limit: usize,
        ) -> Result<Vec<PendingDelivery>, StoreError> {
            // The columns of `rows::pending`.
            let sql = concat!(
                "UPDATE outbox SET owner = $1, lease_until = $2 WHERE subscription_id IN (SELECT subscription_id \
                 FROM outbox WHERE owner IS NULL OR (lease_until < $3 AND owner <> $1) ORDER BY due LIMIT $4",
                $lock,
                ") RETURNING subscription_id, topic, sync_token, trigger_kind, attempt, due, deadline"
            );
            let found = sqlx::query(sql)
                .bind(lease.owner())
                // The lease runs from the real clock; `now` only says whose leases have ended.
                .bind(lease.until(davpush_core::unix_now()))
                .bind(now)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await
                .map_err(err("claim pending deliveries"))?;
            found
                .iter()
                .map(rows::pending)
                .collect::<Result<_, sqlx::Error>>()
                .map_err(err("read a pending delivery row"))
        }

        pub(super) async fn renew(pool: &$pool, lease: &OutboxLease, now: i64) -> Result<u64, StoreError> {
            Ok(sqlx::query("UPDATE outbox SET lease_until = $2 WHERE owner = $1")
                .bind(lease.owner())
                .bind(lease.until(now))
                .execute(pool)
                .await
                .map_err(err("renew the outbox lease"))?
                .rows_affected())
        }

        pub(super) async fn release(pool: &$pool, lease: &OutboxLease) -> Result<u64, StoreError> {
            Ok(sqlx::query("UPDATE outbox SET owner = NULL, lease_until = 0 WHERE owner = $1")
                .bind(lease.owner())
                .execute(pool)
                .await
                .map_err(err("release the outbox rows"))?
                .rows_affected())
        }

        pub(super) async fn keys(pool: &$pool) -> Result<Vec<StoredVapidKey>, StoreError> {
            let found = sqlx::query("SELECT id, pem, created, retired FROM vapid_keys")
                .fetch_all(pool)
                .await
                .map_err(err("load the VAPID keys"))?;
            found.iter().map(rows::vapid_key).collect::<Result<_, sqlx::Error>>().map_err(err("read a VAPID key row"))
        }

        pub(super) async fn add_keys(pool: &$pool, keys: &[StoredVapidKey]) -> Result<(), StoreError> {
            let mut tx = pool.begin().await.map_err(err("begin VAPID key write"))?;
            for k in keys {
                sqlx::query(
                    "INSERT INTO vapid_keys (id, pem, created, retired) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&k.id)
                .bind(&k.pem)
                .bind(k.created)
                .bind(k.retired)
                .execute(&mut *tx)
                .await
                .map_err(err("add a VAPID key"))?;
            }
            tx.commit().await.map_err(err("commit VAPID key write"))
        }

        pub(super) async fn retire_key(pool: &$pool, id: &str, at: i64) -> Result<(), StoreError> {
            sqlx::query("UPDATE vapid_keys SET retired = $2 WHERE id = $1 AND retired IS NULL")
                .bind(id)
                .bind(at)
                .execute(pool)
                .await
                .map_err(err("retire a VAPID key"))?;
            Ok(())
        }

        pub(super) async fn delete_key(pool: &$pool, id: &str) -> Result<bool, StoreError> {
            Ok(sqlx::query("DELETE FROM vapid_keys WHERE id = $1 AND retired IS NOT NULL")
                .bind(id)
                .execute(pool)
                .await
                .map_err(err("delete a VAPID key"))?
                .rows_affected()
                > 0)
        }
    };
}

pub(crate) use queries;
