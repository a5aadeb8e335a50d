//! One mapping from rows to [`StoredSubscription`] and [`PendingDelivery`] for both databases:
//! each backend only says how to read a column as text or as an integer (SQLite's integers are
//! 64-bit, PostgreSQL's `triggers` is a `SMALLINT`).

use davpush_core::{PendingDelivery, StoredSubscription, StoredVapidKey};

/// Reading one column of a row.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    /// An integer column.
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    /// A small integer column (`triggers`).
    fn small(&self, column: &str) -> Result<i64, sqlx::Error>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
}

/// A `vapid_keys` row.
pub(crate) fn vapid_key(r: &impl Columns) -> Result<StoredVapidKey, sqlx::Error> {
    Ok(StoredVapidKey {
        id: r.text("id")?,
        pem: r.text("pem")?,
        created: r.int("created")?,
        retired: r.opt_int("retired")?,
    })
}

/// A `subscriptions` row.
pub(crate) fn subscription(r: &impl Columns) -> Result<StoredSubscription, sqlx::Error> {
    Ok(StoredSubscription {
        id: r.text("id")?,
        client_id: r.text("client_id")?,
        topic: r.text("topic")?,
        service: r.text("service")?,
        target: r.text("target")?,
        expires: r.int("expires")?,
        created: r.int("created")?,
        triggers: r.small("triggers")?.clamp(0, 255) as u8,
    })
}

/// An `outbox` row.
pub(crate) fn pending(r: &impl Columns) -> Result<PendingDelivery, sqlx::Error> {
    Ok(PendingDelivery {
        subscription_id: r.text("subscription_id")?,
        topic: r.text("topic")?,
        sync_token: r.opt_text("sync_token")?,
        trigger: r.opt_text("trigger_kind")?,
        attempt: r.int("attempt")?.clamp(0, u32::MAX as i64) as u32,
        due: r.int("due")?,
        deadline: r.int("deadline")?,
    })
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn small(&self, column: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}

#[cfg(feature = "postgres")]
impl Columns for sqlx::postgres::PgRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
    fn small(&self, column: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get::<i16, _>(self, column).map(i64::from)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}
