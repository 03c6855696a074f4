//! Rows in Postgres' text format (as logical replication sends them) to
//! domain records.

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use crate::{Company, Contact, EMBEDDING_DIM, Memory, MemoryKind};

/// A column lookup over one row: `None` for SQL NULL or a missing column.
pub trait TextRow {
    fn get(&self, column: &str) -> Option<&str>;
}

#[derive(Debug, PartialEq, Eq)]
pub struct RowError(pub String);

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RowError {}

type R<T> = Result<T, RowError>;

fn required<'a>(row: &'a dyn TextRow, col: &str) -> R<&'a str> {
    row.get(col)
        .ok_or_else(|| RowError(format!("column {col} is missing or null")))
}

pub fn uuid(row: &dyn TextRow, col: &str) -> R<Uuid> {
    let v = required(row, col)?;
    Uuid::parse_str(v).map_err(|_| RowError(format!("column {col}: `{v}` is not a uuid")))
}

fn opt_uuid(row: &dyn TextRow, col: &str) -> R<Option<Uuid>> {
    row.get(col)
        .map(|v| {
            Uuid::parse_str(v).map_err(|_| RowError(format!("column {col}: `{v}` is not a uuid")))
        })
        .transpose()
}

fn text(row: &dyn TextRow, col: &str) -> Option<String> {
    row.get(col).map(str::to_owned)
}

/// `2026-11-22 01:02:42.463533+00` (a session with TimeZone = UTC).
pub fn timestamptz(row: &dyn TextRow, col: &str) -> R<DateTime<Utc>> {
    let v = required(row, col)?;
    parse_timestamptz(v).ok_or_else(|| RowError(format!("column {col}: `{v}` is not a timestamp")))
}

pub fn parse_timestamptz(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// A one-dimensional `text[]` literal: `{a,"b c","d\"e",NULL}`.
pub fn parse_text_array(v: &str) -> R<Vec<String>> {
    let bad = || RowError(format!("`{v}` is not a text array"));
    let inner = v
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next().ok_or_else(bad)? {
                    '\\' => item.push(chars.next().ok_or_else(bad)?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            out.push(item);
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            if item != "NULL" {
                out.push(item);
            }
        }
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(_) => return Err(bad()),
        }
    }
}

fn array(row: &dyn TextRow, col: &str) -> R<Vec<String>> {
    row.get(col)
        .map(parse_text_array)
        .transpose()
        .map(Option::unwrap_or_default)
}

fn json(row: &dyn TextRow, col: &str) -> R<serde_json::Value> {
    match row.get(col) {
        None => Ok(serde_json::json!({})),
        Some(v) => serde_json::from_str(v).map_err(|e| RowError(format!("column {col}: {e}"))),
    }
}

/// A `vector` literal: `[0.1,-2e-05,...]`.
pub fn parse_vector(v: &str) -> R<Vec<f32>> {
    let bad = || {
        RowError(format!(
            "`{}` is not a vector",
            v.chars().take(40).collect::<String>()
        ))
    };
    let inner = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(bad)?;
    let mut out = Vec::with_capacity(EMBEDDING_DIM);
    for x in inner.split(',') {
        out.push(x.trim().parse::<f32>().map_err(|_| bad())?);
    }
    Ok(out)
}

fn opt_timestamptz(row: &dyn TextRow, col: &str) -> R<Option<DateTime<Utc>>> {
    row.get(col).map(|_| timestamptz(row, col)).transpose()
}

/// A `memories` row, its tenant and its embedding.
pub fn memory(row: &dyn TextRow) -> R<(Uuid, Memory, Option<Vec<f32>>)> {
    let kind = required(row, "kind")?;
    let importance = required(row, "importance")?;
    let embedding = row.get("embedding").map(parse_vector).transpose()?;
    Ok((
        uuid(row, "tenant_id")?,
        Memory {
            id: uuid(row, "id")?,
            agent_id: text(row, "agent_id").unwrap_or_default(),
            subject_id: text(row, "subject_id"),
            session_id: text(row, "session_id"),
            kind: MemoryKind::parse(kind)
                .ok_or_else(|| RowError(format!("column kind: `{kind}` is not a memory kind")))?,
            content: text(row, "content").unwrap_or_default(),
            importance: importance.parse().map_err(|_| {
                RowError(format!("column importance: `{importance}` is not a number"))
            })?,
            has_embedding: embedding.is_some(),
            metadata: json(row, "metadata")?,
            expires_at: opt_timestamptz(row, "expires_at")?,
            created_at: timestamptz(row, "created_at")?,
            updated_at: timestamptz(row, "updated_at")?,
        },
        embedding,
    ))
}

/// A `contacts` row, and its tenant.
pub fn contact(row: &dyn TextRow) -> R<(Uuid, Contact)> {
    Ok((
        uuid(row, "tenant_id")?,
        Contact {
            id: uuid(row, "id")?,
            external_id: text(row, "external_id"),
            first_name: text(row, "first_name"),
            last_name: text(row, "last_name"),
            emails: array(row, "emails")?,
            phones: array(row, "phones")?,
            phones_normalized: array(row, "phones_normalized")?,
            title: text(row, "title"),
            company_id: opt_uuid(row, "company_id")?,
            company_name: text(row, "company_name"),
            city: text(row, "city"),
            region: text(row, "region"),
            country: text(row, "country"),
            lifecycle_stage: text(row, "lifecycle_stage"),
            owner_id: text(row, "owner_id"),
            tags: array(row, "tags")?,
            notes: text(row, "notes"),
            custom: json(row, "custom")?,
            created_at: timestamptz(row, "created_at")?,
            updated_at: timestamptz(row, "updated_at")?,
        },
    ))
}

/// A `companies` row, and its tenant.
pub fn company(row: &dyn TextRow) -> R<(Uuid, Company)> {
    Ok((
        uuid(row, "tenant_id")?,
        Company {
            id: uuid(row, "id")?,
            external_id: text(row, "external_id"),
            name: text(row, "name").unwrap_or_default(),
            domain: text(row, "domain"),
            industry: text(row, "industry"),
            city: text(row, "city"),
            region: text(row, "region"),
            country: text(row, "country"),
            tags: array(row, "tags")?,
            notes: text(row, "notes"),
            custom: json(row, "custom")?,
            created_at: timestamptz(row, "created_at")?,
            updated_at: timestamptz(row, "updated_at")?,
        },
    ))
}

impl TextRow for std::collections::HashMap<String, Option<String>> {
    fn get(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(|v| v.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays() {
        assert_eq!(parse_text_array("{}").unwrap(), Vec::<String>::new());
        assert_eq!(parse_text_array("{a,b}").unwrap(), vec!["a", "b"]);
        assert_eq!(
            parse_text_array(r#"{"a b","c\"d","e\\f",NULL,"NULL"}"#).unwrap(),
            vec!["a b", "c\"d", "e\\f", "NULL"]
        );
        assert_eq!(parse_text_array(r#"{"x,y",z}"#).unwrap(), vec!["x,y", "z"]);
        assert!(parse_text_array("a,b").is_err());
        assert!(parse_text_array(r#"{"unterminated}"#).is_err());
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamptz("2026-11-22 01:02:42.463533+00").unwrap();
        assert_eq!(t.timestamp_micros() % 1_000_000, 463533);
        assert!(parse_timestamptz("2026-11-22 01:02:42+00").is_some());
        assert!(
            parse_timestamptz("2026-11-22 03:02:42+02").unwrap()
                == parse_timestamptz("2026-11-22 01:02:42+00").unwrap()
        );
    }
}
