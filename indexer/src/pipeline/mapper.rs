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
                xid,
                commit_time,
                changes,
            } => {
                let mut ops = Vec::with_capacity(changes.len());
                for change in changes {
                    match map_change(
                        store,
                        pool,
                        sh.shard.as_deref(),
                        change,
                        end_lsn.0 > progress.replay_guard.load(Ordering::Acquire),
                        end_lsn,
                        xid,
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
/// (see [`run_mapper`]); `lsn`, `xid`: the transaction's commit position
/// and id.
async fn map_change(
    store: &IndexStore,
    pool: &PgPool,
    shard: Option<&super::shard::ShardState>,
    change: Change,
    fresh_inserts: bool,
    lsn: Lsn,
    xid: u32,
) -> Result<Vec<Op>> {
    Ok(match change {
        Change::Upsert(table, tuple, _) if tuple.has_unchanged_toast() => {
            // the stream left out a large value that did not change: read
            // the row as it is now, by a snapshot that sees this transaction
            // (later changes replay on top of it)
            let id = schema::pgtext::uuid(&tuple, "id").map_err(|e| anyhow::anyhow!("{e}"))?;
            let row = reread(pool, table, id, xid).await;
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
        // a tenant that leaves this shard leaves the index at this position
        Change::Placement(tenant, placement) => match shard {
            Some(s) if s.placed(pool, tenant, placement) => vec![Op::DeleteTenant(tenant)],
            _ => Vec::new(),
        },
    })
}

/// The row as a snapshot that sees transaction `xid` holds it. Never skips
/// the change: waits for Postgres as long as it takes (the stream waits
/// meanwhile), and says so once a wait for the transaction to become
/// visible lasts (a commit stuck waiting for a synchronous standby).
async fn reread(
    pool: &PgPool,
    table: rows::Table,
    id: uuid::Uuid,
    xid: u32,
) -> Option<rows::TextMap> {
    let mut backoff = Duration::from_millis(1);
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        match rows::read_row_seeing(pool, table, id, xid).await {
            Ok(rows::Reread::Row(row)) => return row,
            Ok(rows::Reread::NotYetVisible) => {
                metrics::counter!("crmsearch_cdc_invisible_rereads_total").increment(1);
                if !said && started.elapsed() > Duration::from_secs(5) {
                    said = true;
                    tracing::warn!(
                        xid,
                        table = table.name(),
                        "a committed transaction is not visible to other sessions yet (a commit waiting for a synchronous standby?); the index waits for it"
                    );
                }
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading a row failed; retrying");
                backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{contact_tuple, shared, temp_store};
    use super::*;
    use crate::rows::Table;
    use schema::index::DocType;
    use uuid::Uuid;

    #[tokio::test]
    async fn changes_become_operations_and_inserts_after_the_guard_are_fresh() {
        let t = temp_store();
        let sh = shared(&t.store);
        sh.progress.replay_guard.store(100, Ordering::Release);
        let (src_tx, src_rx) = mpsc::channel(8);
        let (batch_tx, mut batch_rx) = mpsc::channel(8);
        let mapper = tokio::spawn(run_mapper(sh.clone(), src_rx, batch_tx));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let txn = |lsn: u64, changes| SourceMsg::Txn {
            end_lsn: Lsn(lsn),
            xid: 1,
            commit_time: None,
            changes,
        };
        // at or before the guard an insert may be in a snapshot already
        src_tx
            .send(txn(
                100,
                vec![Change::Upsert(Table::Contacts, contact_tuple(a, "A"), true)],
            ))
            .await
            .unwrap();
        src_tx
            .send(txn(
                200,
                vec![
                    Change::Upsert(Table::Contacts, contact_tuple(b, "B"), true),
                    Change::Upsert(Table::Contacts, contact_tuple(a, "A2"), false),
                    Change::Delete(a),
                    // a row the schema rejects is counted and skipped
                    Change::Upsert(
                        Table::Contacts,
                        crate::pgoutput::Tuple {
                            values: Default::default(),
                        },
                        true,
                    ),
                    Change::Truncate(vec![Table::Memories]),
                ],
            ))
            .await
            .unwrap();
        src_tx.send(SourceMsg::Progress(Lsn(300))).await.unwrap();
        drop(src_tx);
        let fresh = |op: &Op| matches!(op, Op::Upsert { fresh: true, .. });
        let first = batch_rx.recv().await.unwrap();
        assert_eq!((first.lsn, first.ops.len()), (Lsn(100), 1));
        assert!(
            !fresh(&first.ops[0]),
            "at the guard: replaced, not assumed new"
        );
        let second = batch_rx.recv().await.unwrap();
        assert_eq!(second.lsn, Lsn(200));
        assert_eq!(second.ops.len(), 4, "{:?}", second.ops);
        assert!(fresh(&second.ops[0]), "after the guard an insert is new");
        assert!(!fresh(&second.ops[1]), "an update replaces");
        assert!(matches!(second.ops[2], Op::Delete { id } if id == a));
        assert!(matches!(second.ops[3], Op::DeleteAll(DocType::Memory)));
        let marker = batch_rx.recv().await.unwrap();
        assert_eq!((marker.lsn, marker.ops.len()), (Lsn(300), 0));
        mapper.await.unwrap().unwrap();
        assert!(batch_rx.recv().await.is_none(), "ends when the source does");
    }
}
