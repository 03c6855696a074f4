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

use crate::store::Op;

/// The tables the index follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Contacts,
    Companies,
}

impl Table {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "contacts" => Some(Table::Contacts),
            "companies" => Some(Table::Companies),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Contacts => "contacts",
            Table::Companies => "companies",
        }
    }

    pub fn doc_type(self) -> DocType {
        match self {
            Table::Contacts => DocType::Contact,
            Table::Companies => DocType::Company,
        }
    }

    /// The tenant and the record's columns.
    pub fn columns(self) -> &'static [&'static str] {
        static CONTACTS: LazyLock<Vec<&str>> =
            LazyLock::new(|| with_tenant(schema::contact::CONTACT_COLUMNS));
        static COMPANIES: LazyLock<Vec<&str>> =
            LazyLock::new(|| with_tenant(schema::company::COMPANY_COLUMNS));
        match self {
            Table::Contacts => &CONTACTS,
            Table::Companies => &COMPANIES,
        }
    }

    /// `SELECT col::text AS col, ... FROM table` with timestamps in UTC.
    pub fn select_text(self) -> String {
        let cols: Vec<String> = self
            .columns()
            .iter()
            .map(|c| match *c {
                "created_at" | "updated_at" => format!(
                    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS {c}"
                ),
                _ => format!("{c}::text AS {c}"),
            })
            .collect();
        format!("SELECT {} FROM {}", cols.join(", "), self.name())
    }

    /// The index operation for one row of this table (`fresh`: see [`Op::Upsert`]).
    pub fn upsert(
        self,
        schema: &IndexSchema,
        row: &dyn TextRow,
        fresh: bool,
    ) -> Result<Op, pgtext::RowError> {
        match self {
            Table::Contacts => {
                let (tenant, c) = pgtext::contact(row)?;
                Ok(Op::Upsert {
                    id: c.id,
                    doc: Box::new(schema.contact_doc(tenant, &c)),
                    fresh,
                })
            }
            Table::Companies => {
                let (tenant, c) = pgtext::company(row)?;
                Ok(Op::Upsert {
                    id: c.id,
                    doc: Box::new(schema.company_doc(tenant, &c)),
                    fresh,
                })
            }
        }
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
