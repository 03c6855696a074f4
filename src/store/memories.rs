//! Agent memories in Postgres (the durable copy of their vectors).

use indexer::Lsn;
use schema::memory::ValidMemory;
use schema::{Memory, MemoryFields, MemoryKind};
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

pub async fn create(pool: &PgPool, tenant: Uuid, fields: MemoryFields) -> Result<(Memory, Lsn)> {
    let m: ValidMemory = fields.validate()?;
    let sql = format!(
        "INSERT INTO memories (tenant_id, agent_id, subject_id, session_id, kind, content, importance,
                               embedding, metadata, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(tenant)
        .bind(&m.agent_id)
        .bind(&m.subject_id)
        .bind(&m.session_id)
        .bind(m.kind.as_str())
        .bind(&m.content)
        .bind(m.importance)
        .bind(m.embedding.map(pgvector::Vector::from))
        .bind(&m.metadata)
        .bind(m.expires_at)
        .fetch_one(pool)
        .await?;
    Ok((from_row(&row)?, write_position(pool).await?))
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
