//! Agent memories in Postgres (the durable copy of their vectors).

use indexer::Lsn;
use schema::memory::ValidMemory;
use schema::{Memory, MemoryKind};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::db::write_position;
use crate::error::Result;

pub const COLUMNS: &str = "id, agent_id, subject_id, session_id, kind, content, importance, \
    embedding IS NOT NULL, metadata, expires_at, created_at, updated_at";

pub fn from_row(row: &PgRow) -> Result<Memory, sqlx::Error> {
    let kind: String = row.try_get(4)?;
    Ok(Memory {
        id: row.try_get(0)?,
        agent_id: row.try_get(1)?,
        subject_id: row.try_get(2)?,
        session_id: row.try_get(3)?,
        kind: MemoryKind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("memory kind {kind}").into()))?,
        content: row.try_get(5)?,
        importance: row.try_get(6)?,
        has_embedding: row.try_get(7)?,
        metadata: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
    })
}

/// A memory written: the stored record, the position to read it at, and
/// the memory it was merged into when it was a near-duplicate.
#[derive(Debug)]
pub struct Created {
    pub record: Memory,
    pub lsn: Lsn,
    pub deduplicated_into: Option<Uuid>,
}

/// Writes a memory whose embedding the caller computed (or the client sent;
/// unit length). A memory of the same tenant, agent and subject at cosine
/// ≥ `dedup_threshold` is updated instead: content and embedding become
/// the new ones, metadata is merged (new keys win), the higher importance
/// is kept, `updated_at` moves. Writers of one (agent, subject) are
/// serialised by an advisory lock so two near-duplicates cannot both land.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    m: ValidMemory,
    embedding: Vec<f32>,
    dedup_threshold: f32,
) -> Result<Created> {
    let vector = pgvector::Vector::from(embedding);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2 || '/' || coalesce($3, ''), 7))")
        .bind(tenant)
        .bind(&m.agent_id)
        .bind(&m.subject_id)
        .execute(&mut *tx)
        .await?;
    // `+ 0` keeps the planner off the HNSW index: an exact answer within
    // the (agent, subject) is wanted, not an approximate one across the tenant
    let nearest: Option<(Uuid, f64)> = sqlx::query_as(
        "SELECT id, 1 - (embedding <=> $4) FROM memories
          WHERE tenant_id = $1 AND agent_id = $2 AND subject_id IS NOT DISTINCT FROM $3
            AND embedding IS NOT NULL AND (expires_at IS NULL OR expires_at > now())
          ORDER BY (embedding <=> $4) + 0 LIMIT 1",
    )
    .bind(tenant)
    .bind(&m.agent_id)
    .bind(&m.subject_id)
    .bind(&vector)
    .fetch_optional(&mut *tx)
    .await?;
    let duplicate = nearest
        .filter(|(_, sim)| *sim >= f64::from(dedup_threshold))
        .map(|(id, _)| id);
    let row = match duplicate {
        Some(id) => {
            let sql = format!(
                "UPDATE memories SET content = $3, embedding = $4, kind = $5, session_id = coalesce($6, session_id),
                        importance = greatest(importance, $7), metadata = metadata || $8,
                        expires_at = $9, updated_at = now()
                  WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
            );
            sqlx::query(&sql)
                .bind(tenant)
                .bind(id)
                .bind(&m.content)
                .bind(&vector)
                .bind(m.kind.as_str())
                .bind(&m.session_id)
                .bind(m.importance)
                .bind(&m.metadata)
                .bind(m.expires_at)
                .fetch_one(&mut *tx)
                .await?
        }
        None => {
            let sql = format!(
                "INSERT INTO memories (tenant_id, agent_id, subject_id, session_id, kind, content, importance,
                                       embedding, metadata, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
            );
            sqlx::query(&sql)
                .bind(tenant)
                .bind(&m.agent_id)
                .bind(&m.subject_id)
                .bind(&m.session_id)
                .bind(m.kind.as_str())
                .bind(&m.content)
                .bind(m.importance)
                .bind(&vector)
                .bind(&m.metadata)
                .bind(m.expires_at)
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let record = from_row(&row)?;
    tx.commit().await?;
    Ok(Created {
        record,
        lsn: write_position(pool).await?,
        deduplicated_into: duplicate,
    })
}

static READ_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| COLUMNS.to_owned());

/// (memories are inserted by their own statement and never updated)
static NO_WRITE_COLUMNS: std::sync::LazyLock<Vec<&str>> = std::sync::LazyLock::new(Vec::new);

static SPEC: super::TableSpec<Memory> = super::TableSpec {
    table: "memories",
    columns: &READ_COLUMNS,
    write_columns: &NO_WRITE_COLUMNS,
    what: "memory",
    from_row,
};

pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Memory> {
    SPEC.fetch(pool, tenant, id, false).await
}

pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Lsn> {
    SPEC.delete(pool, tenant, id).await
}
