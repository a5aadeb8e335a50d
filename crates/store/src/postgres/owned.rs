//! The PostgreSQL side of the outbox's ownership and of the VAPID keys (see `crate::owned`),
//! shared by the nodes of a cluster. `SKIP LOCKED`: nodes that claim at once take disjoint rows
//! without waiting for each other.

crate::owned::queries!(sqlx::PgPool, sqlx::PgConnection, " FOR UPDATE SKIP LOCKED");
