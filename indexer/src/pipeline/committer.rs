//! The committer stage: the one writer. Applies operations, makes them
//! visible with a soft commit as soon as the channel is drained, and makes
//! them durable (fsync, LSN in the commit payload) on its own trigger: an
//! interval or a number of documents. Postgres is acknowledged only up to
//! the last durable commit (the source reads [`Progress::durable`]).
//!
//! Merges (the policy's while writes arrive, the idle compaction after) are
//! only in memory until a durable commit names their segments: when the
//! durable interval passes with nothing to write and the segments differ
//! from those of the last durable commit, an empty durable commit names
//! them, so a restart after a bulk load opens the merged index instead of
//! merging it all again.
//!
//! An error applying or committing ends the stage with it: the index's
//! state in memory is then unknown, and the supervisor reopens it from its
//! durable commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{Batch, Shared};
use crate::Lsn;
use crate::store::{IndexStore, Op};

/// Take at most about this many operations into one commit.
const MAX_OPS_PER_COMMIT: usize = 20_000;

pub(super) async fn run_committer(sh: Arc<Shared>, mut rx: mpsc::Receiver<Batch>) -> Result<()> {
    let (store, progress) = (&sh.store, &sh.progress);
    let durable_interval = sh.cfg.durable_interval;
    // the written generation holds every transaction up to here
    let mut applied = progress.written();
    let mut uncommitted_ops = 0usize;
    let mut docs_since_durable = 0usize;
    let mut last_durable = Instant::now();
    let mut last_commit_time = None;
    let mut last_change = Instant::now();
    let mut compaction: Option<tokio::task::JoinHandle<()>> = None;
    // the segments the last durable commit named (as opened: the durable one)
    let mut durable_segments = store.segment_ids();
    loop {
        let durable_due = last_durable + durable_interval;
        let first = tokio::select! {
            b = rx.recv() => b,
            () = tokio::time::sleep_until(durable_due.into()) => None,
        };
        let closed = first.is_none() && rx.is_closed() && rx.is_empty();
        // take whatever else is ready: one commit for all of it
        let mut batches: Vec<Batch> = first.into_iter().collect();
        while batches.iter().map(|b| b.ops.len()).sum::<usize>() < MAX_OPS_PER_COMMIT {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let mut txns: Vec<(Vec<Op>, Lsn)> = Vec::new();
        for b in batches {
            // a transaction sent again after a reconnect: already applied
            if b.lsn <= applied {
                continue;
            }
            applied = b.lsn;
            last_commit_time = b.commit_time.or(last_commit_time);
            if !b.ops.is_empty() {
                txns.push((b.ops, b.lsn));
            }
        }
        let n: usize = txns.iter().map(|(ops, _)| ops.len()).sum();
        if n > 0 {
            metrics::histogram!("crmsearch_batch_ops").record(n as f64);
            apply(store, txns, applied, n).await?;
            uncommitted_ops += n;
            docs_since_durable += n;
            last_change = Instant::now();
        }
        if let Some(t) = last_commit_time {
            progress.set_last_commit(t);
        }
        let durable = closed
            || docs_since_durable >= sh.cfg.durable_docs
            || (Instant::now() >= durable_due && progress.durable() < applied);
        // a generation catching up replaces the serving one at a commit
        let caught_up = store.catching_up_to().is_some_and(|to| applied >= to);
        if uncommitted_ops > 0 || durable || caught_up {
            let took = commit(store, applied, durable).await?;
            let kind = if durable { "durable" } else { "visible" };
            metrics::histogram!("crmsearch_commit_seconds", "kind" => kind)
                .record(took.as_secs_f64());
            tracing::debug!(lsn = %applied, ops = uncommitted_ops, kind, ms = took.as_secs_f64() * 1e3, "committed");
            uncommitted_ops = 0;
            progress.set_written(applied);
            // a generation catching up after a restart shows nothing older
            // than what searches already saw
            progress.set_visible(applied);
            if durable {
                progress.durable.fetch_max(applied.0, Ordering::AcqRel);
                docs_since_durable = 0;
                last_durable = Instant::now();
                durable_segments = store.segment_ids();
            }
        } else {
            // nothing to write: progress markers move the position at once
            progress.set_written(applied);
            progress.set_visible(applied);
            if Instant::now() >= durable_due {
                let segments = store.segment_ids();
                if segments != durable_segments && progress.durable() >= applied {
                    // merged since: name the merged segments durably
                    commit(store, applied, true).await?;
                    tracing::debug!(lsn = %applied, segments = segments.len(), "merges made durable");
                    durable_segments = store.segment_ids();
                }
                last_durable = Instant::now();
            }
        }
        if closed {
            return Ok(());
        }
        if n == 0
            && last_change.elapsed() >= sh.cfg.compact_idle
            && compaction.as_ref().is_none_or(|c| c.is_finished())
            && store.compaction_due()
        {
            compaction = Some(tokio::task::spawn_blocking(compact(store.clone())));
        }
    }
}

/// Merges the index into one segment (see [`crate::merging`]) while the
/// committer goes on. A failed merge is not an error of the index: the
/// segments it would have replaced stay, and the next idle moment retries.
fn compact(store: Arc<IndexStore>) -> impl FnOnce() {
    move || {
        let started = Instant::now();
        let before = store.segments();
        match store.compact() {
            Ok(true) => tracing::info!(
                segments = before,
                secs = started.elapsed().as_secs_f64(),
                "index compacted into one segment while idle"
            ),
            Ok(false) => {}
            // e.g. a merge the policy started holds some of the segments
            Err(e) => tracing::debug!(error = %e, "idle compaction did not run"),
        }
    }
}

async fn apply(
    store: &Arc<IndexStore>,
    txns: Vec<(Vec<Op>, Lsn)>,
    to: Lsn,
    ops: usize,
) -> Result<()> {
    let span = tracing::debug_span!("apply", lsn = %to, ops);
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        for (ops, lsn) in txns {
            s.apply(ops, lsn)?;
        }
        anyhow::Ok(())
    })
    .instrument(span)
    .await
    .context("the apply task panicked")?
    .context("applying to the index failed")
}

async fn commit(store: &Arc<IndexStore>, lsn: Lsn, durable: bool) -> Result<Duration> {
    let span = tracing::debug_span!("commit", %lsn, durable);
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.commit(lsn, durable))
        .instrument(span)
        .await
        .context("the commit task panicked")?
        .with_context(|| {
            format!(
                "the {} index commit at {lsn} failed",
                if durable { "durable" } else { "visible" }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{contact_tuple, shared, temp_store};
    use super::*;
    use crate::rows::Table;
    use schema::index::DocType;
    use uuid::Uuid;

    fn upsert(store: &IndexStore, id: Uuid, name: &str) -> Op {
        Table::Contacts
            .upsert(&store.schema, &contact_tuple(id, name), false, Lsn(0))
            .unwrap()
    }

    #[tokio::test]
    async fn applies_once_moves_the_positions_and_ends_durable() {
        let t = temp_store();
        let sh = shared(&t.store);
        let (tx, rx) = mpsc::channel(8);
        let committer = tokio::spawn(run_committer(sh.clone(), rx));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = |lsn: u64, ops| Batch {
            ops,
            lsn: Lsn(lsn),
            commit_time: None,
        };
        tx.send(batch(10, vec![upsert(&t.store, a, "A")]))
            .await
            .unwrap();
        let mut visible = sh.progress.subscribe();
        visible.wait_for(|v| *v >= Lsn(10)).await.unwrap();
        assert_eq!(t.store.count(DocType::Contact), 1, "visible at once");
        assert_eq!(sh.progress.durable(), Lsn(0), "not durable yet");
        // sent again after a reconnect: dropped
        tx.send(batch(10, vec![upsert(&t.store, b, "B")]))
            .await
            .unwrap();
        tx.send(batch(20, vec![])).await.unwrap();
        visible.wait_for(|v| *v >= Lsn(20)).await.unwrap();
        assert_eq!(
            t.store.count(DocType::Contact),
            1,
            "a transaction applied once"
        );
        assert_eq!(
            sh.progress.written(),
            Lsn(20),
            "a marker moves the position"
        );
        drop(tx);
        committer.await.unwrap().unwrap();
        assert_eq!(sh.progress.durable(), Lsn(20), "the last commit is durable");
        assert_eq!(t.store.committed_lsn().unwrap(), Some(Lsn(20)));
    }

    /// Two contacts in two commits (LSN 10 and 20), each visible before the
    /// next: one segment each.
    async fn two_segments(
        store: &IndexStore,
        tx: &mpsc::Sender<Batch>,
        visible: &mut tokio::sync::watch::Receiver<Lsn>,
    ) {
        for lsn in [10, 20] {
            let op = upsert(store, Uuid::new_v4(), "A");
            tx.send(Batch {
                ops: vec![op],
                lsn: Lsn(lsn),
                commit_time: None,
            })
            .await
            .unwrap();
            visible.wait_for(|v| *v >= Lsn(lsn)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn merges_into_one_segment_once_writes_stop() {
        let t = temp_store();
        let sh = super::super::testing::shared_with(&t.store, Duration::from_millis(50));
        let (tx, rx) = mpsc::channel(8);
        let committer = tokio::spawn(run_committer(sh.clone(), rx));
        let mut visible = sh.progress.subscribe();
        // one segment per commit, too few for the merge policy
        two_segments(&t.store, &tx, &mut visible).await;
        assert_eq!(t.store.segments(), 2);
        let deadline = Instant::now() + Duration::from_secs(30);
        while t.store.segments() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(t.store.segments(), 1, "compacted once idle");
        assert_eq!(t.store.count(DocType::Contact), 2);
        drop(tx);
        committer.await.unwrap().unwrap();
    }

    /// Merged while idle, then killed without another write: the reopened
    /// index has the merged segment, not the two a restart would merge again.
    #[tokio::test]
    async fn a_merge_is_made_durable_without_another_write() {
        let root = std::env::temp_dir().join(format!("pipeline-{}", Uuid::new_v4()));
        let store = Arc::new(IndexStore::open(&root).unwrap());
        let sh = super::super::testing::shared_with(&store, Duration::from_millis(50));
        let (tx, rx) = mpsc::channel(8);
        let committer = tokio::spawn(run_committer(sh.clone(), rx));
        let mut visible = sh.progress.subscribe();
        two_segments(&store, &tx, &mut visible).await;
        // durable at 20 (the interval is short), then compacted while idle
        let deadline = Instant::now() + Duration::from_secs(30);
        while (store.segments() > 1 || sh.progress.durable() < Lsn(20)) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.segments(), 1, "compacted once idle");
        // until a durable commit names it: the meta.json on disk (soft
        // commits keep theirs in memory)
        let on_disk = || -> Option<usize> {
            let gens = std::fs::read_dir(&root).ok()?;
            gens.flatten().find_map(|g| {
                let meta = std::fs::read(g.path().join("meta.json")).ok()?;
                let v: serde_json::Value = serde_json::from_slice(&meta).ok()?;
                Some(v["segments"].as_array()?.len())
            })
        };
        while on_disk() != Some(1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // killed: no closing commit
        committer.abort();
        let _ = committer.await;
        drop((tx, sh, visible, store));
        let reopened = IndexStore::open(&root).unwrap();
        assert_eq!(reopened.count(DocType::Contact), 2);
        assert_eq!(reopened.segments(), 1, "the merge survives a kill");
        drop(reopened);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn a_failed_apply_ends_the_stage_with_the_error() {
        let t = temp_store();
        let sh = shared(&t.store);
        let (tx, rx) = mpsc::channel(8);
        let committer = tokio::spawn(run_committer(sh.clone(), rx));
        // a writer that is gone: what a failed indexing thread leaves
        t.store.current().close_writer_for_tests();
        tx.send(Batch {
            ops: vec![upsert(&t.store, Uuid::new_v4(), "A")],
            lsn: Lsn(10),
            commit_time: None,
        })
        .await
        .unwrap();
        let err = committer.await.unwrap().unwrap_err();
        assert!(
            format!("{err:#}").contains("applying to the index failed"),
            "{err:#}"
        );
        assert_eq!(sh.progress.visible(), Lsn(0), "nothing shown");
    }
}
