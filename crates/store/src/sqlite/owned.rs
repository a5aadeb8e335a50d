//! The SQLite side of the outbox's ownership and of the VAPID keys (see `crate::owned`). One
//! Director uses a SQLite file, but `davpush vapid rotate` may write to it while the Director
//! runs: its rows carry no owner and are claimed. SQLite runs one writer at a time: the claim's
//! statement is the claim, with no row locks.

crate::owned::queries!(sqlx::SqlitePool, sqlx::SqliteConnection, "");
