//! Companies in Postgres. Renames and deletes reach the contacts that carry
//! the company's name through the triggers of the first migration.

use indexer::Lsn;
use schema::company::ValidCompany;
use schema::{Company, CompanyFields};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::db::write_position;
use crate::error::{Error, Result};

pub const COLUMNS: &str = "id, external_id, name, domain, industry, city, region, country, tags, notes, custom, created_at, updated_at";

const WRITE_COLUMNS: [&str; 10] = [
    "external_id",
    "name",
    "domain",
    "industry",
    "city",
    "region",
    "country",
    "tags",
    "notes",
    "custom",
];

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

pub async fn create(pool: &PgPool, tenant: Uuid, fields: CompanyFields) -> Result<(Company, Lsn)> {
    let c = fields.validate()?;
    let placeholders: Vec<String> = (2..=WRITE_COLUMNS.len() + 1)
        .map(|i| format!("${i}"))
        .collect();
    let sql = format!(
        "INSERT INTO companies (tenant_id, {}) VALUES ($1, {}) RETURNING {COLUMNS}",
        WRITE_COLUMNS.join(", "),
        placeholders.join(", ")
    );
    let row = bind(sqlx::query(&sql).bind(tenant), &c)
        .fetch_one(pool)
        .await?;
    Ok((from_row(&row)?, write_position(pool).await?))
}

pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Company> {
    super::get_row(pool, "companies", COLUMNS, tenant, id, "company", from_row).await
}

pub async fn patch(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<(Company, Lsn)> {
    let mut tx = pool.begin().await?;
    let sql =
        format!("SELECT {COLUMNS} FROM companies WHERE id = $1 AND tenant_id = $2 FOR UPDATE");
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
    let current = row
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| Error::not_found("company"))?;
    let mut doc = serde_json::to_value(current.fields()).map_err(anyhow::Error::from)?;
    super::merge_record(&mut doc, patch);
    let fields: CompanyFields =
        serde_path_to_error::deserialize(doc).map_err(crate::api::extract::json_error)?;
    let c = fields.validate()?;
    let sets: Vec<String> = WRITE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, col)| format!("{col} = ${}", i + 3))
        .collect();
    let sql = format!(
        "UPDATE companies SET {} WHERE id = $1 AND tenant_id = $2 RETURNING {COLUMNS}",
        sets.join(", ")
    );
    let row = bind(sqlx::query(&sql).bind(id).bind(tenant), &c)
        .fetch_one(&mut *tx)
        .await?;
    let company = from_row(&row)?;
    tx.commit().await?;
    Ok((company, write_position(pool).await?))
}

/// Deletes the company; its contacts keep existing without it.
pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Lsn> {
    super::delete_row(pool, "companies", tenant, id, "company").await
}
