//! The mapper stage: row changes into index operations; rows with
//! unchanged TOAST values are re-read from Postgres.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::{Batch, Change, Shared, SourceMsg};
use crate::Lsn;
use crate::rows;
use crate::store::{IndexStore, Op};

/// Maps transactions to index operations. `replay_guard`: transactions that
/// committed at or before it may already be in the index (the snapshot of a
/// rebuild); after it, an INSERT is a row the index has never seen — the
/// index holds exactly the transactions up to the position the stream
/// resumes from, and the committer drops transactions it has applied.
///
/// A change that cannot be mapped (a row the schema rejects) is counted and
/// logged, not retried: it would fail the same way after any restart. The
/// stage ends when the source is done (stop) or the committer is gone.
pub(super) async fn run_mapper(
    sh: Arc<Shared>,
    mut rx: mpsc::Receiver<SourceMsg>,
    tx: mpsc::Sender<Batch>,
) -> Result<()> {
    let (store, pool, progress) = (&sh.store, &sh.pool, &sh.progress);
    while let Some(msg) = rx.recv().await {
        let batch = match msg {
            SourceMsg::Progress(lsn) => Batch {
                ops: Vec::new(),
                lsn,
                commit_time: None,
            },
            SourceMsg::Txn {
                end_lsn,
                commit_time,
                changes,
            } => {
                let mut ops = Vec::with_capacity(changes.len());
                for change in changes {
                    match map_change(
                        store,
                        pool,
                        change,
                        end_lsn.0 > progress.replay_guard.load(Ordering::Acquire),
                        end_lsn,
                    )
                    .await
                    {
                        Ok(op) => ops.extend(op),
                        Err(e) => {
                            metrics::counter!("crmsearch_cdc_map_errors_total").increment(1);
                            tracing::error!(error = %format!("{e:#}"), lsn = %end_lsn, "cannot index a change");
                        }
                    }
                }
                Batch {
                    ops,
                    lsn: end_lsn,
                    commit_time,
                }
            }
        };
        if tx.send(batch).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// `fresh_inserts`: an INSERT of this transaction cannot be in the index yet
/// (see [`run_mapper`]); `lsn`: the transaction's commit position.
async fn map_change(
    store: &IndexStore,
    pool: &PgPool,
    change: Change,
    fresh_inserts: bool,
    lsn: Lsn,
) -> Result<Vec<Op>> {
    Ok(match change {
        Change::Upsert(table, tuple, _) if tuple.has_unchanged_toast() => {
            // the stream left out a large value that did not change: read
            // the row as it is now (later changes replay on top of it)
            let id = schema::pgtext::uuid(&tuple, "id").map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut backoff = Duration::from_millis(50);
            // never skip the change: wait for Postgres as long as it takes
            // (the stream is down meanwhile too)
            let row = loop {
                match rows::read_row(pool, table, id).await {
                    Ok(row) => break row,
                    Err(e) => {
                        tracing::warn!(error = %e, "re-reading a row failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            match row {
                Some(row) => vec![table.upsert(&store.schema, &row, false, lsn)?],
                None => vec![Op::Delete { id }],
            }
        }
        Change::Upsert(table, tuple, insert) => {
            vec![table.upsert(&store.schema, &tuple, insert && fresh_inserts, lsn)?]
        }
        Change::Delete(id) => vec![Op::Delete { id }],
        Change::Truncate(tables) => tables
            .into_iter()
            .map(|t| Op::DeleteAll(t.doc_type()))
            .collect(),
    })
}
