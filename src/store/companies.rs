//! Companies in Postgres. Renames and deletes reach the contacts that carry
//! the company's name through the triggers of the first migration.

use indexer::Lsn;
use schema::company::ValidCompany;
use schema::{Company, CompanyFields};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::contacts::{BulkOutcome, LineError, dedupe_external_ids};
use crate::db::write_position;
use crate::error::Result;

/// The columns every read returns, in the order of [`from_row`].
pub static COLUMNS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| schema::company::COMPANY_COLUMNS.join(", "));

/// The columns a write sets, in the order `bind` binds them.
static WRITE_COLUMNS: std::sync::LazyLock<Vec<&str>> =
    std::sync::LazyLock::new(|| super::writable(schema::company::COMPANY_COLUMNS));

pub fn from_row(row: &PgRow) -> Result<Company, sqlx::Error> {
    Ok(Company {
        id: row.try_get(0)?,
        external_id: row.try_get(1)?,
        name: row.try_get(2)?,
        domain: row.try_get(3)?,
        industry: row.try_get(4)?,
        city: row.try_get(5)?,
        region: row.try_get(6)?,
        country: row.try_get(7)?,
        tags: row.try_get(8)?,
        notes: row.try_get(9)?,
        custom: row.try_get(10)?,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
    })
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    c: &'q ValidCompany,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&c.external_id)
        .bind(&c.name)
        .bind(&c.domain)
        .bind(&c.industry)
        .bind(&c.city)
        .bind(&c.region)
        .bind(&c.country)
        .bind(&c.tags)
        .bind(&c.notes)
        .bind(&c.custom)
}

static SPEC: super::TableSpec<Company> = super::TableSpec {
    table: "companies",
    columns: &COLUMNS,
    write_columns: &WRITE_COLUMNS,
    what: "company",
    from_row,
};

pub async fn create(pool: &PgPool, tenant: Uuid, fields: CompanyFields) -> Result<(Company, Lsn)> {
    let c = fields.validate()?;
    let row = bind(sqlx::query(&SPEC.insert_sql()).bind(tenant), &c)
        .fetch_one(pool)
        .await?;
    Ok((from_row(&row)?, write_position(pool).await?))
}

pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Company> {
    SPEC.fetch(pool, tenant, id, false).await
}

pub async fn patch(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<(Company, Lsn)> {
    let mut tx = pool.begin().await?;
    let current = SPEC.fetch(&mut *tx, tenant, id, true).await?;
    let base = serde_json::to_value(current.fields()).map_err(anyhow::Error::from)?;
    let c = super::merged::<CompanyFields>(base, patch)?.validate()?;
    let row = bind(sqlx::query(&SPEC.update_sql()).bind(id).bind(tenant), &c)
        .fetch_one(&mut *tx)
        .await?;
    let company = from_row(&row)?;
    tx.commit().await?;
    Ok((company, write_position(pool).await?))
}

/// Deletes the company; its contacts keep existing without it.
pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Lsn> {
    SPEC.delete(pool, tenant, id).await
}

/// Rows per statement of a bulk load.
const BULK_CHUNK: usize = 5_000;

/// Upserts validated lines by `external_id` (lines without one are
/// inserted) in one transaction, [`BULK_CHUNK`] rows a statement; the later
/// of two lines with one `external_id` wins, as in contacts' bulk load.
pub async fn bulk_upsert(
    pool: &PgPool,
    tenant: Uuid,
    lines: Vec<(u64, ValidCompany)>,
    failed: Vec<LineError>,
) -> Result<BulkOutcome> {
    let (lines, duplicates) = dedupe_external_ids(lines, |c| c.external_id.as_deref());
    if lines.is_empty() {
        return Ok(BulkOutcome {
            inserted: 0,
            updated: duplicates,
            failed,
            lsn: None,
        });
    }
    let sql = super::bulk_upsert_sql(
        "companies",
        &WRITE_COLUMNS,
        "jsonb_to_recordset($2) AS x(external_id text, name text, domain text, industry text, \
         city text, region text, country text, tags text[], notes text, custom jsonb)",
    );
    let (mut inserted, mut updated) = (0u64, duplicates);
    let mut tx = pool.begin().await?;
    for chunk in lines.chunks(BULK_CHUNK) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|(_, c)| {
                serde_json::json!({
                    "external_id": c.external_id, "name": c.name, "domain": c.domain,
                    "industry": c.industry, "city": c.city, "region": c.region,
                    "country": c.country, "tags": c.tags, "notes": c.notes, "custom": c.custom,
                })
            })
            .collect();
        let (i, u): (i64, i64) = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(serde_json::Value::Array(rows))
            .fetch_one(&mut *tx)
            .await?;
        inserted += i as u64;
        updated += u as u64;
    }
    tx.commit().await?;
    Ok(BulkOutcome {
        inserted,
        updated,
        failed,
        lsn: Some(write_position(pool).await?),
    })
}
