//! The vector upkeep stage, and the load of the vector collections at a
//! start: the in-process ANN indexes follow the text index's memories; they
//! are rebuilt in the background and dumped with their position.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use schema::index::DocType;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::Shared;
use crate::Lsn;
use crate::rows::{self, Table};
use crate::store::{IndexStore, Op};

/// Loads the vector collections from their dump and brings them to the
/// text index's position: memories the index holds at a later version than
/// the dump are read again from Postgres (the durable copy of the vectors),
/// and points the index no longer holds are dropped. Without a dump every
/// memory is read.
pub(super) async fn load_vectors(pool: &PgPool, store: &Arc<IndexStore>) -> Result<VectorLoad> {
    let started = Instant::now();
    let (s, d) = (store.clone(), store.current().vector_dir());
    let dumped = tokio::task::spawn_blocking(move || match s.vectors().load(&d) {
        Ok(lsn) => lsn,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot load the vector dump; reading every vector again");
            s.vectors().clear();
            None
        }
    })
    .await?;
    let since = dumped.unwrap_or_default();
    let s = store.clone();
    let (stale, gone) = tokio::task::spawn_blocking(move || memory_versions(&s, since)).await??;
    for id in &gone {
        store.vectors().delete(*id);
    }
    let sql = format!("{} WHERE id = ANY($1)", Table::Memories.select_text());
    for chunk in stale.chunks(5_000) {
        let rows = sqlx::query(&sql).bind(chunk).fetch_all(pool).await?;
        let mut found = std::collections::HashSet::with_capacity(chunk.len());
        for row in &rows {
            let map = rows::to_map(Table::Memories, row)?;
            match Table::Memories.upsert(&store.schema, &map, false, since) {
                Ok(Op::Upsert { id, point, .. }) => {
                    found.insert(id);
                    match point {
                        Some(p) => store.vectors().upsert(&p),
                        None => store.vectors().delete(id),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read a memory's vector"),
            }
        }
        for id in chunk.iter().filter(|id| !found.contains(*id)) {
            store.vectors().delete(*id);
        }
    }
    tracing::info!(
        dump = ?dumped,
        reread = stale.len(),
        dropped = gone.len(),
        secs = started.elapsed().as_secs_f64(),
        "vector collections loaded"
    );
    Ok(VectorLoad {
        dump: dumped,
        reread: stale.len(),
        dropped: gone.len(),
    })
}

/// What [`load_vectors`] did at a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorLoad {
    /// The position of the dump loaded (none: every vector was read again).
    pub dump: Option<Lsn>,
    /// Memories read again from Postgres (changed after the dump).
    pub reread: usize,
    /// Points dropped (deleted after the dump).
    pub dropped: usize,
}

/// The memories the text index holds at a version after `since`, and the
/// vector points it no longer holds.
fn memory_versions(store: &IndexStore, since: Lsn) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let searcher = store.searcher();
    let q = tantivy::query::TermQuery::new(
        tantivy::Term::from_field_text(store.schema.fields.doc_type, DocType::Memory.as_str()),
        tantivy::schema::IndexRecordOption::Basic,
    );
    let mut present = std::collections::HashSet::new();
    let mut stale = Vec::new();
    let docs = searcher.search(&q, &tantivy::collector::DocSetCollector)?;
    let mut by_segment: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for a in docs {
        by_segment.entry(a.segment_ord).or_default().push(a.doc_id);
    }
    for (seg, docs) in by_segment {
        let reader = searcher.segment_reader(seg);
        let ids = reader
            .fast_fields()
            .str("id")?
            .ok_or_else(|| anyhow::anyhow!("the index has no id column"))?;
        let lsns = reader.fast_fields().u64("lsn")?;
        let mut buf = String::new();
        for doc in docs {
            let Some(ord) = ids.term_ords(doc).next() else {
                continue;
            };
            buf.clear();
            ids.ord_to_str(ord, &mut buf)?;
            let Ok(id) = buf.parse::<Uuid>() else {
                continue;
            };
            present.insert(id);
            if lsns.first(doc).is_none_or(|l| l > since.0) {
                stale.push(id);
            }
        }
    }
    let gone = store
        .vectors()
        .ids()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !present.contains(id))
        .collect();
    Ok((stale, gone))
}

/// Keeps the vector collections' approximate indexes built (in the
/// background, off the committer) and dumps them with their position every
/// few minutes when they changed, and at shutdown.
///
/// A failed dump is logged and tried again at the next turn (the previous
/// dump stays whole); a panic of the upkeep ends the stage.
pub(super) async fn run_vector_maintenance(
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let (store, progress) = (sh.store.clone(), sh.progress.clone());
    const DUMP_EVERY: Duration = Duration::from_secs(300);
    const DUMP_AFTER_BUILD: Duration = Duration::from_secs(30);
    let mut built_since_dump = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dumped_changes = u64::MAX;
    let mut last_dump = Instant::now();
    let dump = async |store: &Arc<IndexStore>, dumped_changes: &mut u64| {
        let changes = store.vectors().changes();
        if changes == *dumped_changes {
            return;
        }
        // every change up to the visible position is in the collections
        let lsn = progress.visible();
        let generation = store.current();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || {
            generation.vectors.dump(&generation.vector_dir(), lsn)
        })
        .await
        {
            Ok(Ok(())) => {
                *dumped_changes = changes;
                tracing::info!(%lsn, secs = started.elapsed().as_secs_f64(), "vector collections dumped");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot dump the vector collections")
            }
            Err(e) => tracing::warn!(error = %e, "vector dump task failed"),
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                dump(&store, &mut dumped_changes).await;
                return Ok(());
            }
        }
        let s = store.clone();
        let built = tokio::task::spawn_blocking(move || s.vectors().maintain())
            .await
            .context("the vector index upkeep panicked")?;
        // a build is dumped soon (a restart then loads it instead of
        // building again), but not after every turn of a bulk load: a dump
        // writes every vector
        built_since_dump |= built;
        let since = last_dump.elapsed();
        if (built_since_dump && since >= DUMP_AFTER_BUILD) || since >= DUMP_EVERY {
            dump(&store, &mut dumped_changes).await;
            last_dump = Instant::now();
            built_since_dump = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{temp_store, tuple};
    use super::*;

    fn memory(store: &IndexStore, id: Uuid, lsn: Lsn) -> Op {
        let v: Vec<&str> = (0..schema::EMBEDDING_DIM)
            .map(|i| if i == 0 { "1" } else { "0" })
            .collect();
        let row = tuple(&[
            ("id", &id.to_string()),
            ("tenant_id", &Uuid::nil().to_string()),
            ("agent_id", "a"),
            ("kind", "fact"),
            ("content", "likes tea"),
            ("importance", "0.5"),
            ("embedding", &format!("[{}]", v.join(","))),
            ("metadata", "{}"),
            ("created_at", "2026-01-01 00:00:00+00"),
            ("updated_at", "2026-01-01 00:00:00+00"),
        ]);
        Table::Memories
            .upsert(&store.schema, &row, true, lsn)
            .unwrap()
    }

    #[test]
    fn a_dump_is_brought_to_the_text_index() {
        let t = temp_store();
        let (old, changed, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        t.store
            .apply(
                vec![
                    memory(&t.store, old, Lsn(10)),
                    memory(&t.store, changed, Lsn(10)),
                    memory(&t.store, gone, Lsn(10)),
                ],
                Lsn(10),
            )
            .unwrap();
        t.store.commit(Lsn(10), true).unwrap();
        // the dump's position: 10; then `changed` changes, `gone` goes
        t.store
            .apply(vec![memory(&t.store, changed, Lsn(20))], Lsn(20))
            .unwrap();
        t.store
            .apply(vec![Op::Delete { id: gone }], Lsn(30))
            .unwrap();
        t.store.commit(Lsn(30), false).unwrap();
        // (a dump at 10 held all three points)
        let Op::Upsert { point: Some(p), .. } = memory(&t.store, gone, Lsn(10)) else {
            panic!("a memory with a vector")
        };
        t.store.vectors().upsert(&p);
        let (mut stale, gone_points) = memory_versions(&t.store, Lsn(10)).unwrap();
        stale.sort();
        assert_eq!(stale, vec![changed], "changed after the dump: read again");
        assert_eq!(gone_points, vec![gone], "deleted after the dump: dropped");
    }
}
