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
/// position at or after the commit of every transaction the snapshot saw,
/// and, for a `shard` (unless `only`), the tenants the snapshot read: the
/// shard's as of that snapshot.
pub(crate) async fn snapshot(
    pool: &PgPool,
    store: &Arc<Generation>,
    consistent: Lsn,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    only: Option<Uuid>,
    shard: Option<&str>,
) -> Result<(Lsn, Option<Vec<Uuid>>)> {
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
    // a shard's tenants, as of the same snapshot (None: every tenant)
    let members: Option<Vec<Uuid>> = match (shard, only) {
        (Some(s), None) => Some(
            sqlx::query_scalar(
                "SELECT tenant_id FROM crmsearch_tenant_shards WHERE shard = $1 OR also_on = $1",
            )
            .bind(s)
            .fetch_all(&mut *tx)
            .await?,
        ),
        _ => None,
    };
    const WHERE: &str = "WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid[] IS NULL OR tenant_id = ANY($2))";
    let mut expected = 0u64;
    if progress.is_some() {
        for table in [Table::Companies, Table::Contacts, Table::Memories] {
            let n: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM {} {WHERE}", table.name()))
                    .bind(only)
                    .bind(&members)
                    .fetch_one(&mut *tx)
                    .await?;
            expected += n as u64;
        }
    }
    let mut total = 0u64;
    for table in [Table::Companies, Table::Contacts, Table::Memories] {
        let sql = format!("{} {WHERE}", table.select_text());
        let mut rows = sqlx::query(&sql).bind(only).bind(&members).fetch(&mut *tx);
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
    Ok((seen, members))
}
