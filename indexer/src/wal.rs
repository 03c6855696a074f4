//! The one way this service reads the server's WAL position.
//!
//! `pg_current_wal_insert_lsn()`, on purpose, rather than
//! `pg_current_wal_lsn()` (the write position): a transaction is visible to
//! other sessions once its commit record is *inserted*, and with
//! `synchronous_commit = off` that can be before it is written. The insert
//! position is therefore at or after the end of every commit anyone can
//! see — the bound a write hands back as its `lsn`, a snapshot records as
//! what it saw, and lag and readiness are measured against. The stream may
//! lag the insert position by a record that is not flushed yet; waiting for
//! it ([`crate::Indexer::wait_for`]) writes a heartbeat, which Postgres
//! flushes, so the wait ends.

use crate::Lsn;

/// The end of all WAL inserted so far.
pub async fn position<'e, E: sqlx::PgExecutor<'e>>(executor: E) -> Result<Lsn, sqlx::Error> {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(executor)
        .await?;
    lsn.parse::<Lsn>()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
