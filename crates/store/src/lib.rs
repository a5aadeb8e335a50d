//! Subscription stores of the davpush Push Director.
//!
//! # Layout
//! - [`sqlite`]: [`SqliteStore`], the embedded default (one file, WAL mode).
//! - [`postgres`] (feature `postgres`): [`PostgresStore`], shared by the nodes of a cluster.
//! - [`open`]: picks the store from the URL's scheme, once at start.
//! - `owned`: the outbox's ownership and the VAPID keys, one text for both databases.
//! - `migrations/`: the SQLite schema, applied in order at open; `PRAGMA user_version` records
//!   how far. `migrations/postgres/`: the PostgreSQL schema (`davpush_schema_version`).
//!
//! The choice a reader may question: migrations are applied by a dozen lines here instead of
//! `sqlx::migrate!`, which needs sqlx's macro stack; the schema is small and linear.

use std::sync::Arc;

use davpush_core::{StoreError, SubscriptionStore};

#[cfg(test)]
mod contract;
mod owned;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The schema, in order. Entry `i` brings the database from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_subscriptions.sql"),
    include_str!("../migrations/0002_outbox.sql"),
    include_str!("../migrations/0003_triggers.sql"),
    include_str!("../migrations/0004_outbox_owner.sql"),
    include_str!("../migrations/0005_topic_index.sql"),
    include_str!("../migrations/0006_vapid_key_index.sql"),
];

/// The statement of [`SubscriptionStore::count`] (SQLite and PostgreSQL alike).
pub(crate) const COUNT: &str = "SELECT count(*) FROM subscriptions";

/// The answer of [`COUNT`] as [`SubscriptionStore::count`] gives it.
pub(crate) fn counted(n: Result<i64, sqlx::Error>) -> Result<Option<u64>, StoreError> {
    n.map(|n| Some(n.max(0) as u64)).map_err(err("count subscriptions"))
}

pub(crate) fn err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError { op, source: Box::new(e) }
}

/// The URL names no store this build supports.
#[derive(Debug, thiserror::Error)]
#[error("unsupported store URL scheme in `{0}` (supported: {SUPPORTED})")]
pub struct UnsupportedUrl(String);

#[cfg(feature = "postgres")]
const SUPPORTED: &str = "sqlite:, postgres://";
#[cfg(not(feature = "postgres"))]
const SUPPORTED: &str = "sqlite:";

/// Which store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `sqlite:…`
    Sqlite,
    /// `postgres://…` or `postgresql://…`
    Postgres,
}

impl StoreKind {
    /// The kind of `url`, if this build supports it.
    pub fn from_url(url: &str) -> Result<StoreKind, UnsupportedUrl> {
        if url.starts_with("sqlite:") {
            return Ok(StoreKind::Sqlite);
        }
        if cfg!(feature = "postgres") && (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Ok(StoreKind::Postgres);
        }
        // Never echo a URL that may carry a password.
        Err(UnsupportedUrl(url.split_once(':').map_or("", |(scheme, _)| scheme).to_owned() + ":…"))
    }
}

/// Opens the store `url` names (see [`StoreKind::from_url`]).
pub async fn open(url: &str) -> Result<Arc<dyn SubscriptionStore>, StoreError> {
    let kind = StoreKind::from_url(url).map_err(|e| StoreError { op: "pick the store", source: Box::new(e) })?;
    Ok(match kind {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(url).await?),
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => Arc::new(PostgresStore::open(url).await?),
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres => unreachable!("from_url refuses postgres URLs without the feature"),
    })
}
