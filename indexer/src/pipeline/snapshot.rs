//! A snapshot into an emptied generation: every row as of a consistent
//! read, for a first start, a lost slot or a reindex.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Lsn;
use crate::rows::{self, Table};
use crate::store::Generation;

/// Indexes every row as of a snapshot taken after the slot's consistent
/// point; the stream then replays from that point, idempotently. Returns a
/// position at or after the commit of every transaction the snapshot saw.
pub(crate) async fn snapshot(
    pool: &PgPool,
    store: &Arc<Generation>,
    consistent: Lsn,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    only: Option<Uuid>,
) -> Result<Lsn> {
    use futures_util::TryStreamExt;
    let started = Instant::now();
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.bulk_writer()?;
        s.clear()
    })
    .await??;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // the first statement takes the snapshot; WAL inserted before it covers
    // the commit of everything it sees
    let seen = crate::wal::position(&mut *tx).await?;
    let mut expected = 0u64;
    if progress.is_some() {
        for table in [Table::Companies, Table::Contacts, Table::Memories] {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {} WHERE $1::uuid IS NULL OR tenant_id = $1",
                table.name()
            ))
            .bind(only)
            .fetch_one(&mut *tx)
            .await?;
            expected += n as u64;
        }
    }
    let mut total = 0u64;
    for table in [Table::Companies, Table::Contacts, Table::Memories] {
        let sql = format!(
            "{} WHERE $1::uuid IS NULL OR tenant_id = $1",
            table.select_text()
        );
        let mut rows = sqlx::query(&sql).bind(only).fetch(&mut *tx);
        let mut ops = Vec::with_capacity(4096);
        let mut n = 0u64;
        while let Some(row) = rows.try_next().await? {
            let map = rows::to_map(table, &row)?;
            // the index was emptied: nothing to replace
            match table.upsert(&store.schema, &map, true, consistent) {
                Ok(op) => ops.push(op),
                Err(e) => tracing::error!(table = table.name(), error = %e, "cannot index a row"),
            }
            n += 1;
            if ops.len() == 4096 {
                crate::failpoint::hit("snapshot")?;
                let s = store.clone();
                let batch = std::mem::replace(&mut ops, Vec::with_capacity(4096));
                tokio::task::spawn_blocking(move || s.apply(batch, Lsn(0))).await??;
            }
            if let Some(p) = progress
                && n.is_multiple_of(4096)
            {
                p(total + n, expected);
            }
            if n.is_multiple_of(50_000) {
                let rate = n as f64 / started.elapsed().as_secs_f64();
                tracing::info!(
                    table = table.name(),
                    rows = n,
                    rows_per_s = rate as u64,
                    "snapshot progress"
                );
            }
        }
        drop(rows);
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.apply(ops, Lsn(0))).await??;
        tracing::info!(table = table.name(), rows = n, "snapshot table indexed");
        total += n;
        if let Some(p) = progress {
            p(total, expected.max(total));
        }
    }
    tx.commit().await?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.commit(consistent, true)?;
        // one segment: every search pays per segment
        s.merge_all()?;
        s.commit(consistent, true)?;
        s.streaming_writer()
    })
    .await??;
    tracing::info!(rows = total, lsn = %consistent, secs = started.elapsed().as_secs_f64(), "snapshot indexed");
    Ok(seen)
}
