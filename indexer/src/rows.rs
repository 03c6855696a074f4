//! Reading rows from Postgres in the text format the replication stream
//! uses, so one mapping (schema::pgtext) serves the stream, the snapshot and
//! the re-reads of rows with unchanged TOAST values.

use std::collections::HashMap;
use std::sync::LazyLock;

use schema::index::{DocType, IndexSchema};
use schema::pgtext::{self, TextRow};
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

use crate::Lsn;
use crate::store::Op;
use crate::vectors::{self, Point};

/// The tables the index follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Contacts,
    Companies,
    Memories,
}

impl Table {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "contacts" => Some(Table::Contacts),
            "companies" => Some(Table::Companies),
            "memories" => Some(Table::Memories),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Contacts => "contacts",
            Table::Companies => "companies",
            Table::Memories => "memories",
        }
    }

    pub fn doc_type(self) -> DocType {
        match self {
            Table::Contacts => DocType::Contact,
            Table::Companies => DocType::Company,
            Table::Memories => DocType::Memory,
        }
    }

    /// The tenant and the record's columns.
    pub fn columns(self) -> &'static [&'static str] {
        static CONTACTS: LazyLock<Vec<&str>> =
            LazyLock::new(|| with_tenant(schema::contact::CONTACT_COLUMNS));
        static COMPANIES: LazyLock<Vec<&str>> =
            LazyLock::new(|| with_tenant(schema::company::COMPANY_COLUMNS));
        static MEMORIES: LazyLock<Vec<&str>> =
            LazyLock::new(|| with_tenant(schema::memory::MEMORY_COLUMNS));
        match self {
            Table::Contacts => &CONTACTS,
            Table::Companies => &COMPANIES,
            Table::Memories => &MEMORIES,
        }
    }

    /// `SELECT col::text AS col, ... FROM table` with timestamps in UTC.
    pub fn select_text(self) -> String {
        let cols: Vec<String> = self
            .columns()
            .iter()
            .map(|c| match *c {
                "created_at" | "updated_at" | "expires_at" => format!(
                    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS {c}"
                ),
                _ => format!("{c}::text AS {c}"),
            })
            .collect();
        format!("SELECT {} FROM {}", cols.join(", "), self.name())
    }

    /// The index operation for one row of this table (`fresh`: see
    /// [`Op::Upsert`]; `lsn`: the commit position of this row version).
    pub fn upsert(
        self,
        schema: &IndexSchema,
        row: &dyn TextRow,
        fresh: bool,
        lsn: Lsn,
    ) -> Result<Op, pgtext::RowError> {
        match self {
            Table::Contacts => {
                let (tenant, c) = pgtext::contact(row)?;
                Ok(Op::Upsert {
                    id: c.id,
                    doc: Box::new(schema.contact_doc(tenant, &c)),
                    fresh,
                    point: None,
                })
            }
            Table::Companies => {
                let (tenant, c) = pgtext::company(row)?;
                Ok(Op::Upsert {
                    id: c.id,
                    doc: Box::new(schema.company_doc(tenant, &c)),
                    fresh,
                    point: None,
                })
            }
            Table::Memories => {
                let (tenant, m, embedding) = pgtext::memory(row)?;
                let point = embedding.and_then(|v| {
                    let v = vectors::normalize(v);
                    if v.is_none() {
                        tracing::warn!(id = %m.id, "a memory's embedding is zero: kept for keyword search only");
                    }
                    v
                });
                let point = point.map(|vector| Box::new(point_of(tenant, &m, vector)));
                Ok(Op::Upsert {
                    id: m.id,
                    doc: Box::new(schema.memory_doc(tenant, &m, lsn.0)),
                    fresh,
                    point,
                })
            }
        }
    }
}

/// A memory's point in its tenant's vector collection.
pub fn point_of(tenant: Uuid, m: &schema::Memory, vector: Vec<f32>) -> Point {
    Point {
        id: m.id,
        tenant,
        agent: m.agent_id.clone(),
        subject: m.subject_id.clone(),
        session: m.session_id.clone(),
        kind: vectors::KINDS
            .iter()
            .position(|k| *k == m.kind.as_str())
            .unwrap_or(0) as u8,
        created_micros: m.created_at.timestamp_micros(),
        expires_micros: m.expires_at.map(|t| t.timestamp_micros()),
        vector,
    }
}

fn with_tenant(columns: &[&'static str]) -> Vec<&'static str> {
    std::iter::once("tenant_id")
        .chain(columns.iter().copied())
        .collect()
}

pub type TextMap = HashMap<String, Option<String>>;

pub fn to_map(table: Table, row: &PgRow) -> Result<TextMap, sqlx::Error> {
    let mut map = HashMap::with_capacity(table.columns().len());
    for (i, c) in table.columns().iter().enumerate() {
        map.insert((*c).to_owned(), row.try_get::<Option<String>, _>(i)?);
    }
    Ok(map)
}

/// What a re-read of a row found, from a snapshot taken now.
#[derive(Debug)]
pub enum Reread {
    /// The snapshot does not see the transaction yet: read again shortly.
    NotYetVisible,
    /// The row as it is now (`None`: deleted since).
    Row(Option<TextMap>),
}

/// The current row with this id, read by a snapshot that sees transaction
/// `xid` (a 32-bit id from the stream). Postgres sends a transaction to
/// logical replication once its commit is on disk, which can be a moment
/// before other sessions see it (or long before, while it waits for a
/// synchronous standby): reading right away could return the version before
/// it, and nothing later would repair the document. The snapshot and the row
/// come from one statement, so the answer holds for the row read.
pub async fn read_row_seeing<'e, E: Executor<'e, Database = Postgres>>(
    executor: E,
    table: Table,
    id: Uuid,
    xid: u32,
) -> Result<Reread, sqlx::Error> {
    let sql = format!(
        "SELECT r.*, pg_current_snapshot()::text FROM (VALUES (1)) AS one (x) \
         LEFT JOIN ({} WHERE id = $1) AS r ON true",
        table.select_text()
    );
    let row = sqlx::query(&sql).bind(id).fetch_one(executor).await?;
    let snapshot: String = row.try_get(table.columns().len())?;
    if !snapshot_sees(&snapshot, xid)
        .ok_or_else(|| sqlx::Error::Protocol(format!("unreadable snapshot {snapshot:?}")))?
    {
        return Ok(Reread::NotYetVisible);
    }
    let map = to_map(table, &row)?;
    Ok(Reread::Row(
        map.get("id").is_some_and(Option::is_some).then_some(map),
    ))
}

/// Whether a snapshot (`pg_current_snapshot()` as text, `xmin:xmax:xip,…`)
/// sees the committed transaction `xid`, a 32-bit id of the last 2³¹
/// transactions (a replication slot holds back wraparound, so a transaction
/// the stream sends is one of them). `None`: not a snapshot.
pub fn snapshot_sees(snapshot: &str, xid: u32) -> Option<bool> {
    let mut parts = snapshot.splitn(3, ':');
    let xmin: u64 = parts.next()?.parse().ok()?;
    let xmax: u64 = parts.next()?.parse().ok()?;
    let running = parts.next()?;
    // the full id: counted back from xmax by the 32-bit distance
    let behind = (xmax as u32).wrapping_sub(xid) as i32;
    if behind <= 0 {
        // at or after xmax: not started when the snapshot was taken
        return Some(false);
    }
    let full = xmax.checked_sub(behind as u64)?;
    if full < xmin {
        return Some(true);
    }
    for r in running.split(',').filter(|r| !r.is_empty()) {
        if r.parse::<u64>().ok()? == full {
            return Some(false);
        }
    }
    Some(true)
}

/// The current row with this id, if it still exists.
pub async fn read_row<'e, E: Executor<'e, Database = Postgres>>(
    executor: E,
    table: Table,
    id: Uuid,
) -> Result<Option<TextMap>, sqlx::Error> {
    let sql = format!("{} WHERE id = $1", table.select_text());
    let row = sqlx::query(&sql).bind(id).fetch_optional(executor).await?;
    row.as_ref().map(|r| to_map(table, r)).transpose()
}

#[cfg(test)]
mod tests {
    use super::snapshot_sees;

    #[test]
    fn a_snapshot_sees_what_finished_before_it_and_not_what_runs() {
        assert_eq!(snapshot_sees("100:105:100,103", 99), Some(true));
        assert_eq!(snapshot_sees("100:105:100,103", 100), Some(false));
        assert_eq!(snapshot_sees("100:105:100,103", 101), Some(true));
        assert_eq!(snapshot_sees("100:105:100,103", 103), Some(false));
        assert_eq!(snapshot_sees("100:105:", 105), Some(false));
        assert_eq!(snapshot_sees("100:105:", 106), Some(false));
        // a 32-bit id from before the epoch turned
        let epoch = 1u64 << 32;
        let snap = format!("{}:{}:", epoch + 2, epoch + 5);
        assert_eq!(snapshot_sees(&snap, u32::MAX), Some(true));
        let snap = format!("{}:{}:{}", epoch - 3, epoch + 5, epoch - 1);
        assert_eq!(snapshot_sees(&snap, u32::MAX), Some(false));
        assert_eq!(snapshot_sees(&snap, u32::MAX - 1), Some(true));
        assert_eq!(snapshot_sees("garbage", 1), None);
    }
}
