//! Verify and repair: every id and version (`updated_at`) of every followed
//! table in Postgres against the text index and the vector collections.
//!
//! Concurrent writes are not drift: the comparison runs once the index has
//! passed the position Postgres was read at, and every difference is checked
//! again, row by row, after the index has passed a later position. What
//! still differs is reported (missing, stale, ghost) and, with `repair`,
//! re-applied from Postgres.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use schema::index::DocType;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tantivy::Term;
use tantivy::collector::DocSetCollector;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use uuid::Uuid;

use crate::rows::{self, Table};
use crate::store::{IndexStore, Op};
use crate::{Indexer, Lsn};

/// What differs in one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableDrift {
    pub table: String,
    pub checked: usize,
    /// In Postgres, not in the index.
    pub missing: Vec<Uuid>,
    /// In both, at another version.
    pub stale: Vec<Uuid>,
    /// In the index, not in Postgres.
    pub ghost: Vec<Uuid>,
    /// Memories with an embedding whose vector is not in the collection, or
    /// points whose memory is gone.
    pub vectors_missing: Vec<Uuid>,
    pub vectors_ghost: Vec<Uuid>,
}

impl TableDrift {
    pub fn drifted(&self) -> usize {
        self.missing.len()
            + self.stale.len()
            + self.ghost.len()
            + self.vectors_missing.len()
            + self.vectors_ghost.len()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub tenant: Option<Uuid>,
    pub lsn: Lsn,
    pub tables: Vec<TableDrift>,
    pub repaired: usize,
}

impl Report {
    pub fn drifted(&self) -> usize {
        self.tables.iter().map(TableDrift::drifted).sum()
    }
}

/// (tenant, updated_at in µs) of each id.
type Versions = HashMap<Uuid, (Uuid, i64)>;

/// Versions in Postgres of a tenant's rows (all tenants: `None`), or of
/// some ids; and which of them have an embedding.
async fn pg_versions(
    pool: &PgPool,
    table: Table,
    tenant: Option<Uuid>,
    ids: Option<&[Uuid]>,
) -> Result<(Versions, HashSet<Uuid>)> {
    let vector = if table == Table::Memories {
        "embedding IS NOT NULL"
    } else {
        "false"
    };
    let rows: Vec<(Uuid, Uuid, i64, bool)> = sqlx::query_as(&format!(
        "SELECT id, tenant_id, (extract(epoch FROM updated_at) * 1000000)::bigint, {vector}
           FROM {} WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid[] IS NULL OR id = ANY($2))",
        table.name()
    ))
    .bind(tenant)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let with_vectors = rows.iter().filter(|r| r.3).map(|r| r.0).collect();
    Ok((
        rows.into_iter().map(|(id, t, v, _)| (id, (t, v))).collect(),
        with_vectors,
    ))
}

fn index_versions(store: &IndexStore, t: DocType, tenant: Option<Uuid>) -> Result<Versions> {
    let searcher = store.searcher();
    let f = &store.schema.fields;
    let q = TermQuery::new(
        Term::from_field_text(f.doc_type, t.as_str()),
        IndexRecordOption::Basic,
    );
    let mut out = HashMap::new();
    let mut by_segment: HashMap<u32, Vec<u32>> = HashMap::new();
    for a in searcher.search(&q, &DocSetCollector)? {
        by_segment.entry(a.segment_ord).or_default().push(a.doc_id);
    }
    let (mut id_buf, mut tenant_buf) = (String::new(), String::new());
    for (seg, docs) in by_segment {
        let fast = searcher.segment_reader(seg).fast_fields();
        let ids = fast
            .str("id")?
            .ok_or_else(|| anyhow::anyhow!("no id column"))?;
        let tenants = fast
            .str("tenant_id")?
            .ok_or_else(|| anyhow::anyhow!("no tenant column"))?;
        let updated = fast.date("updated_at")?;
        for doc in docs {
            let (Some(i), Some(tn)) = (ids.term_ords(doc).next(), tenants.term_ords(doc).next())
            else {
                continue;
            };
            id_buf.clear();
            tenant_buf.clear();
            ids.ord_to_str(i, &mut id_buf)?;
            tenants.ord_to_str(tn, &mut tenant_buf)?;
            let (Ok(id), Ok(doc_tenant)) = (id_buf.parse::<Uuid>(), tenant_buf.parse::<Uuid>())
            else {
                continue;
            };
            if tenant.is_some_and(|t| t != doc_tenant) {
                continue;
            }
            let v = updated.first(doc).map_or(0, |d| d.into_timestamp_micros());
            out.insert(id, (doc_tenant, v));
        }
    }
    Ok(out)
}

fn diff(
    table: Table,
    pg: &Versions,
    ix: &Versions,
    pg_vectors: &HashSet<Uuid>,
    points: &HashSet<Uuid>,
) -> TableDrift {
    let mut d = TableDrift {
        table: table.name().to_owned(),
        checked: pg.len(),
        ..TableDrift::default()
    };
    for (id, v) in pg {
        match ix.get(id) {
            None => d.missing.push(*id),
            Some(w) if w != v => d.stale.push(*id),
            Some(_) => {}
        }
    }
    d.ghost = ix
        .keys()
        .filter(|id| !pg.contains_key(id))
        .copied()
        .collect();
    if table == Table::Memories {
        d.vectors_missing = pg_vectors
            .iter()
            .filter(|id| !points.contains(id))
            .copied()
            .collect();
        d.vectors_ghost = points
            .iter()
            .filter(|id| !pg_vectors.contains(id))
            .copied()
            .collect();
    }
    for v in [
        &mut d.missing,
        &mut d.stale,
        &mut d.ghost,
        &mut d.vectors_missing,
        &mut d.vectors_ghost,
    ] {
        v.sort_unstable();
    }
    d
}

impl Indexer {
    /// Compares Postgres with this index (one tenant or all) and repairs the
    /// drift when asked.
    pub async fn verify(&self, tenant: Option<Uuid>, repair: bool) -> Result<Report> {
        let (store, pool) = (&*self.store, &self.pool);
        let wait = async |lsn: Lsn| self.wait_for(lsn, WAIT).await;
        let visible = || self.progress.visible();
        let mut report = Report {
            tenant,
            ..Report::default()
        };
        // a shard's index holds its tenants only: the others are not missing
        let held = self
            .shard
            .as_ref()
            .filter(|_| tenant.is_none())
            .map(|s| s.held());
        let ours =
            |(_, (t, _)): &(&Uuid, &(Uuid, i64))| held.as_ref().is_none_or(|h| h.contains(t));
        let only_ours =
            |v: Versions| -> Versions { v.iter().filter(ours).map(|(id, x)| (*id, *x)).collect() };
        for table in [Table::Companies, Table::Contacts, Table::Memories] {
            let (pg, pg_vectors) = pg_versions(pool, table, tenant, None).await?;
            let pg = only_ours(pg);
            let at = crate::wal::position(pool).await?;
            anyhow::ensure!(
                wait(at).await,
                "the index did not reach {at} within the wait; is the stream down?"
            );
            let points: HashSet<Uuid> = store
                .vectors()
                .ids()
                .into_iter()
                .filter(|(_, t)| tenant.is_none_or(|x| x == *t))
                .map(|(id, _)| id)
                .collect();
            let first = diff(
                table,
                &pg,
                &index_versions(store, table.doc_type(), tenant)?,
                &pg_vectors,
                &points,
            );
            if first.drifted() == 0 {
                report.tables.push(first);
                continue;
            }
            // changes in flight are not drift: look again, later, at those ids
            let suspects: Vec<Uuid> = [
                &first.missing,
                &first.stale,
                &first.ghost,
                &first.vectors_missing,
                &first.vectors_ghost,
            ]
            .into_iter()
            .flatten()
            .copied()
            .collect();
            let (pg2, pg_vectors2) = pg_versions(pool, table, None, Some(&suspects)).await?;
            let pg2 = only_ours(pg2);
            let at = crate::wal::position(pool).await?;
            anyhow::ensure!(
                wait(at).await,
                "the index did not reach {at} within the wait; is the stream down?"
            );
            let ix2: Versions = index_versions(store, table.doc_type(), tenant)?
                .into_iter()
                .filter(|(id, _)| suspects.contains(id))
                .collect();
            let points2: HashSet<Uuid> = store
                .vectors()
                .ids()
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| suspects.contains(id))
                .collect();
            let mut second = diff(table, &pg2, &ix2, &pg_vectors2, &points2);
            second.checked = first.checked;
            if repair && second.drifted() > 0 {
                report.repaired += repair_rows(store, pool, table, &second, visible()).await?;
            }
            report.tables.push(second);
        }
        report.lsn = visible();
        Ok(report)
    }
}

/// Re-applies the drifted rows from Postgres (ghosts are deleted), then
/// makes them visible.
async fn repair_rows(
    store: &IndexStore,
    pool: &PgPool,
    table: Table,
    d: &TableDrift,
    lsn: Lsn,
) -> Result<usize> {
    anyhow::ensure!(
        store.catching_up_to().is_none(),
        "the indexer is catching up after a restart of its pipeline; repair again in a few seconds"
    );
    let mut ops = Vec::new();
    for id in d.missing.iter().chain(&d.stale).chain(&d.vectors_missing) {
        match rows::read_row(pool, table, *id).await? {
            Some(row) => ops.push(table.upsert(&store.schema, &row, false, lsn)?),
            None => ops.push(Op::Delete { id: *id }),
        }
    }
    for id in &d.ghost {
        ops.push(Op::Delete { id: *id });
    }
    for id in &d.vectors_ghost {
        store.vectors().delete(*id);
    }
    let n = ops.len() + d.vectors_ghost.len();
    tracing::warn!(
        table = table.name(),
        rows = n,
        "repairing drift from Postgres"
    );
    store.apply(ops, lsn)?;
    store.commit_visible(lsn)?;
    Ok(n)
}

/// How long [`Indexer::verify`] waits for the index at each step.
pub const WAIT: Duration = Duration::from_secs(60);
