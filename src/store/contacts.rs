//! Contacts in Postgres: single-row writes, reads and the bulk upsert.

use std::collections::{HashMap, HashSet};

use indexer::Lsn;
use schema::contact::ValidContact;
use schema::{Contact, ContactFields};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::copy::CopyRow;
use crate::db::write_position;
use crate::error::{Code, Error, Result};

/// The columns every read returns, in the order of [`from_row`].
pub static COLUMNS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| schema::contact::CONTACT_COLUMNS.join(", "));

/// The columns a write sets, in the order `bind` binds them.
static WRITE_COLUMNS: std::sync::LazyLock<Vec<&str>> =
    std::sync::LazyLock::new(|| super::writable(schema::contact::CONTACT_COLUMNS));

pub fn from_row(row: &PgRow) -> Result<Contact, sqlx::Error> {
    Ok(Contact {
        id: row.try_get(0)?,
        external_id: row.try_get(1)?,
        first_name: row.try_get(2)?,
        last_name: row.try_get(3)?,
        emails: row.try_get(4)?,
        phones: row.try_get(5)?,
        phones_normalized: row.try_get(6)?,
        title: row.try_get(7)?,
        company_id: row.try_get(8)?,
        company_name: row.try_get(9)?,
        city: row.try_get(10)?,
        region: row.try_get(11)?,
        country: row.try_get(12)?,
        lifecycle_stage: row.try_get(13)?,
        owner_id: row.try_get(14)?,
        tags: row.try_get(15)?,
        notes: row.try_get(16)?,
        custom: row.try_get(17)?,
        created_at: row.try_get(18)?,
        updated_at: row.try_get(19)?,
    })
}

/// Resolves `company_external_id` or `company_name` to the id of the
/// tenant's company (a name with no company creates one).
async fn resolve_company(
    conn: &mut PgConnection,
    tenant: Uuid,
    c: &mut ValidContact,
) -> Result<()> {
    if let Some(ext) = c.company_external_id.take() {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM companies WHERE tenant_id = $1 AND external_id = $2",
        )
        .bind(tenant)
        .bind(&ext)
        .fetch_optional(&mut *conn)
        .await?;
        c.company_id = Some(id.ok_or_else(|| {
            Error::user(
                Code::InvalidValue,
                format!("`company_external_id` `{ext}` names no company of your tenant"),
            )
        })?);
    }
    if let Some(name) = c.company_name.take() {
        let ids = companies_by_name(conn, tenant, [name.as_str()]).await?;
        c.company_id = ids.get(&name_key(&name)).copied();
    }
    Ok(())
}

/// How a company's name is matched: case and surrounding spaces aside
/// (the expression of the index `companies_tenant_name`).
fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The tenant's company of each name (by [`name_key`]), creating those the
/// tenant has none of. Several companies of one name: the oldest. Creation
/// holds a lock of the tenant's names for the transaction, so two loads
/// naming the same new company make it once.
async fn companies_by_name<'a>(
    conn: &mut PgConnection,
    tenant: Uuid,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, Uuid>> {
    let mut wanted: HashMap<String, &str> = HashMap::new();
    for n in names {
        wanted.entry(name_key(n)).or_insert_with(|| n.trim());
    }
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('crmsearch.company_names:' || $1::text, 0))",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    let keys: Vec<&str> = wanted.keys().map(String::as_str).collect();
    let mut found: HashMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
        "SELECT DISTINCT ON (lower(btrim(name))) lower(btrim(name)), id FROM companies
         WHERE tenant_id = $1 AND lower(btrim(name)) = ANY($2)
         ORDER BY lower(btrim(name)), created_at, id",
    )
    .bind(tenant)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(k, _)| !found.contains_key(*k))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        let made: Vec<(String, Uuid)> = sqlx::query_as(
            "INSERT INTO companies (tenant_id, name) SELECT $1, n FROM unnest($2::text[]) AS n
             RETURNING lower(btrim(name)), id",
        )
        .bind(tenant)
        .bind(&missing)
        .fetch_all(&mut *tx)
        .await?;
        found.extend(made);
    }
    tx.commit().await?;
    Ok(found)
}

fn bind_contact<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    c: &'q ValidContact,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&c.external_id)
        .bind(&c.first_name)
        .bind(&c.last_name)
        .bind(&c.emails)
        .bind(&c.phones)
        .bind(&c.phones_normalized)
        .bind(&c.title)
        .bind(c.company_id)
        .bind(&c.city)
        .bind(&c.region)
        .bind(&c.country)
        .bind(&c.lifecycle_stage)
        .bind(&c.owner_id)
        .bind(&c.tags)
        .bind(&c.notes)
        .bind(&c.custom)
}

static SPEC: super::TableSpec<Contact> = super::TableSpec {
    table: "contacts",
    columns: &COLUMNS,
    write_columns: &WRITE_COLUMNS,
    what: "contact",
    from_row,
};

pub async fn create(pool: &PgPool, tenant: Uuid, fields: ContactFields) -> Result<(Contact, Lsn)> {
    let mut c = fields.validate()?;
    let mut tx = pool.begin().await?;
    resolve_company(&mut tx, tenant, &mut c).await?;
    let row = bind_contact(sqlx::query(&SPEC.insert_sql()).bind(tenant), &c)
        .fetch_one(&mut *tx)
        .await?;
    let contact = from_row(&row)?;
    tx.commit().await?;
    Ok((contact, write_position(pool).await?))
}

pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Contact> {
    SPEC.fetch(pool, tenant, id, false).await
}

/// Applies a JSON merge patch to the contact, under a row lock.
pub async fn patch(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<(Contact, Lsn)> {
    let mut tx = pool.begin().await?;
    let current = SPEC.fetch(&mut *tx, tenant, id, true).await?;
    let mut base = serde_json::to_value(current.fields()).map_err(anyhow::Error::from)?;
    if (patch.contains_key("company_external_id") || patch.contains_key("company_name"))
        && let Some(map) = base.as_object_mut()
    {
        map.remove("company_id");
    }
    let mut c = super::merged::<ContactFields>(base, patch)?.validate()?;
    resolve_company(&mut tx, tenant, &mut c).await?;
    let row = bind_contact(sqlx::query(&SPEC.update_sql()).bind(id).bind(tenant), &c)
        .fetch_one(&mut *tx)
        .await?;
    let contact = from_row(&row)?;
    tx.commit().await?;
    Ok((contact, write_position(pool).await?))
}

pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Lsn> {
    SPEC.delete(pool, tenant, id).await
}

/// One line of a bulk load that could not be loaded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LineError {
    pub line: u64,
    #[schema(value_type = String)]
    pub code: &'static str,
    pub error: String,
}

impl LineError {
    pub fn new(line: u64, e: &Error) -> Self {
        let error = match e {
            Error::User { message, .. } => message.clone(),
            Error::Internal(_) => "internal error".to_owned(),
        };
        Self {
            line,
            code: e.code().as_str(),
            error,
        }
    }
}

/// What a bulk load did: rows inserted and updated, the lines that failed,
/// and the commit position (none when nothing was written).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub failed: Vec<LineError>,
    #[schema(value_type = Option<String>)]
    pub lsn: Option<Lsn>,
}

/// Upserts validated lines by `external_id` in one transaction: COPY into a
/// staging table, then one `INSERT ... ON CONFLICT DO UPDATE`. Lines that
/// name an unknown company are reported and left out; the rest load. When
/// the same `external_id` appears twice, the later line wins (as if the lines
/// were applied in order) and the earlier counts as an update.
pub async fn bulk_upsert(
    pool: &PgPool,
    tenant: Uuid,
    lines: Vec<(u64, ValidContact)>,
    mut failed: Vec<LineError>,
) -> Result<BulkOutcome> {
    let mut conn = pool.acquire().await?;
    let (lines, duplicates) = dedupe_external_ids(lines, |c| c.external_id.as_deref());
    let lines = resolve_companies(&mut conn, tenant, lines, &mut failed).await?;
    failed.sort_by_key(|f| f.line);
    if lines.is_empty() {
        return Ok(BulkOutcome {
            inserted: 0,
            updated: duplicates,
            failed,
            lsn: None,
        });
    }

    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query(
        "CREATE TEMP TABLE contacts_stage (
            ord int, external_id text, first_name text, last_name text, emails text[],
            phones text[], phones_normalized text[], title text, company_id uuid, city text,
            region text, country text, lifecycle_stage text, owner_id text, tags text[],
            notes text, custom jsonb) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;
    let mut copy = tx.copy_in_raw("COPY contacts_stage FROM STDIN").await?;
    let mut buf = String::with_capacity(1 << 20);
    for (ord, (_, c)) in lines.iter().enumerate() {
        let mut row = CopyRow::new(buf);
        row.display(ord)
            .text(c.external_id.as_deref())
            .text(c.first_name.as_deref())
            .text(c.last_name.as_deref())
            .array(&c.emails)
            .array(&c.phones)
            .array(&c.phones_normalized)
            .text(c.title.as_deref());
        match c.company_id {
            Some(id) => row.display(id),
            None => row.null(),
        };
        row.text(c.city.as_deref())
            .text(c.region.as_deref())
            .text(c.country.as_deref())
            .text(c.lifecycle_stage.as_deref())
            .text(c.owner_id.as_deref())
            .array(&c.tags)
            .text(c.notes.as_deref())
            .json(&c.custom);
        buf = row.finish();
        if buf.len() > (1 << 20) {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes()).await?;
    }
    copy.finish().await?;

    let sql = super::bulk_upsert_sql("contacts", &WRITE_COLUMNS, "contacts_stage ORDER BY ord");
    let (inserted, updated): (i64, i64) = sqlx::query_as(&sql)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let lsn = write_position(&mut *conn).await?;
    Ok(BulkOutcome {
        inserted: inserted as u64,
        updated: updated as u64 + duplicates,
        failed,
        lsn: Some(lsn),
    })
}

/// Keeps the last line of each `external_id`; returns how many were dropped.
pub(super) fn dedupe_external_ids<T>(
    lines: Vec<(u64, T)>,
    external_id: impl Fn(&T) -> Option<&str>,
) -> (Vec<(u64, T)>, u64) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (_, c)) in lines.iter().enumerate() {
        if let Some(ext) = external_id(c) {
            last.insert(ext, i);
        }
    }
    let keep: Vec<bool> = lines
        .iter()
        .enumerate()
        .map(|(i, (_, c))| external_id(c).is_none_or(|ext| last[ext] == i))
        .collect();
    let dropped = keep.iter().filter(|k| !**k).count() as u64;
    let kept = lines
        .into_iter()
        .zip(keep)
        .filter_map(|(l, k)| k.then_some(l))
        .collect();
    (kept, dropped)
}

/// Checks `company_id`s and resolves `company_external_id`s against the
/// tenant's companies in two queries (lines naming none are reported), and
/// `company_name`s in two more (creating the companies the tenant lacks).
async fn resolve_companies(
    conn: &mut PgConnection,
    tenant: Uuid,
    lines: Vec<(u64, ValidContact)>,
    failed: &mut Vec<LineError>,
) -> Result<Vec<(u64, ValidContact)>> {
    let ids: HashSet<Uuid> = lines.iter().filter_map(|(_, c)| c.company_id).collect();
    let exts: HashSet<&str> = lines
        .iter()
        .filter_map(|(_, c)| c.company_external_id.as_deref())
        .collect();
    let known_ids: HashSet<Uuid> = if ids.is_empty() {
        HashSet::new()
    } else {
        let ids: Vec<Uuid> = ids.into_iter().collect();
        sqlx::query_scalar("SELECT id FROM companies WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    let by_ext: HashMap<String, Uuid> = if exts.is_empty() {
        HashMap::new()
    } else {
        let exts: Vec<&str> = exts.into_iter().collect();
        sqlx::query_as::<_, (String, Uuid)>(
            "SELECT external_id, id FROM companies WHERE tenant_id = $1 AND external_id = ANY($2)",
        )
        .bind(tenant)
        .bind(&exts)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    let names = lines.iter().filter_map(|(_, c)| c.company_name.as_deref());
    let by_name = companies_by_name(conn, tenant, names).await?;
    let mut out = Vec::with_capacity(lines.len());
    for (line, mut c) in lines {
        if let Some(id) = c.company_id
            && !known_ids.contains(&id)
        {
            let e = Error::user(
                Code::InvalidValue,
                format!("`company_id` {id} names no company of your tenant"),
            );
            failed.push(LineError::new(line, &e));
            continue;
        }
        if let Some(ext) = c.company_external_id.take() {
            match by_ext.get(&ext) {
                Some(id) => c.company_id = Some(*id),
                None => {
                    let e = Error::user(
                        Code::InvalidValue,
                        format!("`company_external_id` `{ext}` names no company of your tenant"),
                    );
                    failed.push(LineError::new(line, &e));
                    continue;
                }
            }
        }
        if let Some(name) = c.company_name.take() {
            c.company_id = by_name.get(&name_key(&name)).copied();
        }
        out.push((line, c));
    }
    Ok(out)
}
