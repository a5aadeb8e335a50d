//! Subscription stores of the davpush Push Director.
//!
//! # Layout
//! - [`sqlite`]: [`SqliteStore`], the embedded default (one file, WAL mode).
//! - `migrations/`: the schema, applied in order at open; `PRAGMA user_version` records how far.
//!
//! The choice a reader may question: migrations are applied by a dozen lines here instead of
//! `sqlx::migrate!`, which needs sqlx's macro stack; the schema is small and linear.

pub mod sqlite;

pub use sqlite::SqliteStore;

/// The schema, in order. Entry `i` brings the database from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_subscriptions.sql"),
    include_str!("../migrations/0002_outbox.sql"),
    include_str!("../migrations/0003_triggers.sql"),
];
