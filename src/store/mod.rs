//! Data access: the SQL behind the write API. No HTTP here.

pub mod companies;
pub mod contacts;
pub mod copy;
pub mod memories;

use indexer::Lsn;
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::db::write_position;
use crate::error::{Error, Result};

/// A table the write API serves: its name, the columns every read returns
/// (in the order of `from_row`), the columns a write sets, and what a
/// person calls one row.
pub struct TableSpec<T: 'static> {
    pub table: &'static str,
    pub columns: &'static std::sync::LazyLock<String>,
    pub write_columns: &'static std::sync::LazyLock<Vec<&'static str>>,
    pub what: &'static str,
    pub from_row: fn(&PgRow) -> Result<T, sqlx::Error>,
}

impl<T> TableSpec<T> {
    /// `INSERT ... VALUES ($1 = tenant, $2.. = write columns) RETURNING columns`.
    pub fn insert_sql(&self) -> String {
        let placeholders: Vec<String> = (2..=self.write_columns.len() + 1)
            .map(|i| format!("${i}"))
            .collect();
        format!(
            "INSERT INTO {} (tenant_id, {}) VALUES ($1, {}) RETURNING {}",
            self.table,
            self.write_columns.join(", "),
            placeholders.join(", "),
            self.columns.as_str()
        )
    }

    /// `UPDATE ... SET write columns = $3.. WHERE id = $1 AND tenant_id = $2 RETURNING columns`.
    pub fn update_sql(&self) -> String {
        let sets: Vec<String> = self
            .write_columns
            .iter()
            .enumerate()
            .map(|(i, col)| format!("{col} = ${}", i + 3))
            .collect();
        format!(
            "UPDATE {} SET {} WHERE id = $1 AND tenant_id = $2 RETURNING {}",
            self.table,
            sets.join(", "),
            self.columns.as_str()
        )
    }

    /// One row of the tenant by id (locked for update when `lock`); 404 when
    /// the tenant has none.
    pub async fn fetch<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        executor: E,
        tenant: Uuid,
        id: Uuid,
        lock: bool,
    ) -> Result<T> {
        let lock = if lock { " FOR UPDATE" } else { "" };
        let sql = format!(
            "SELECT {} FROM {} WHERE id = $1 AND tenant_id = $2{lock}",
            self.columns.as_str(),
            self.table
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(executor)
            .await?;
        row.as_ref()
            .map(self.from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found(self.what))
    }

    /// Deletes one row of the tenant by id; 404 when the tenant has none.
    pub async fn delete(&self, pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Lsn> {
        let sql = format!(
            "DELETE FROM {} WHERE id = $1 AND tenant_id = $2",
            self.table
        );
        let res = sqlx::query(&sql)
            .bind(id)
            .bind(tenant)
            .execute(pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(self.what));
        }
        Ok(write_position(pool).await?)
    }
}

/// Columns that only Postgres writes: the key, names derived by triggers,
/// timestamps.
const SERVER_COLUMNS: &[&str] = &["id", "company_name", "created_at", "updated_at"];

/// A bulk upsert of `table` by `external_id` from `source` (a FROM item
/// with the `columns`), answering how many rows were inserted and updated.
/// `$1` is the tenant.
pub fn bulk_upsert_sql(table: &str, columns: &[&str], source: &str) -> String {
    let cols = columns.join(", ");
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| **c != "external_id")
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    format!(
        "WITH up AS (
            INSERT INTO {table} (tenant_id, {cols})
            SELECT $1, {cols} FROM {source}
            ON CONFLICT (tenant_id, external_id) DO UPDATE SET {}
            RETURNING (xmax = 0) AS inserted)
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up",
        updates.join(", ")
    )
}

/// The columns a write sets, in the record's column order (the order the
/// store's `bind` functions bind them in).
pub fn writable(columns: &'static [&'static str]) -> Vec<&'static str> {
    columns
        .iter()
        .copied()
        .filter(|c| !SERVER_COLUMNS.contains(c))
        .collect()
}

/// The writable fields of a stored record with a JSON merge patch applied,
/// checked like a request body.
pub fn merged<F: serde::de::DeserializeOwned>(
    base: serde_json::Value,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<F> {
    let mut doc = base;
    merge_record(&mut doc, patch);
    serde_path_to_error::deserialize(doc).map_err(crate::api::extract::json_error)
}

/// RFC 7386/7396 JSON merge patch: `patch` over `base`; `null` removes.
pub fn merge_patch(base: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(patch) => {
            if !base.is_object() {
                *base = Value::Object(Default::default());
            }
            let Value::Object(target) = base else { return };
            for (key, value) in patch {
                if value.is_null() {
                    target.insert(key, Value::Null);
                } else {
                    merge_patch(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::String(_)
        | Value::Array(_)) => *base = other,
    }
}

/// Like [`merge_patch`] but for the nested objects below the top level,
/// where a `null` member is removed rather than kept as a value.
pub fn merge_record(
    base: &mut serde_json::Value,
    patch: serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value;
    let Value::Object(target) = base else { return };
    for (key, value) in patch {
        match (target.get_mut(&key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(inner)) => {
                merge_patch(existing, Value::Object(inner));
                strip_nulls(existing);
            }
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}

fn strip_nulls(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn merge_record_replaces_fields_and_merges_objects() {
        let mut base = json!({"a": 1, "l": [1, 2], "custom": {"x": 1, "y": 2}});
        let patch = json!({"a": null, "l": [3], "custom": {"y": null, "z": 3}});
        super::merge_record(&mut base, patch.as_object().unwrap().clone());
        assert_eq!(
            base,
            json!({"a": null, "l": [3], "custom": {"x": 1, "z": 3}})
        );
    }
}

#[cfg(test)]
mod column_tests {
    /// `bind` functions bind in this order: a change of the column lists
    /// must change them too.
    #[test]
    fn write_columns_keep_their_bind_order() {
        assert_eq!(
            super::writable(schema::contact::CONTACT_COLUMNS),
            [
                "external_id",
                "first_name",
                "last_name",
                "emails",
                "phones",
                "phones_normalized",
                "title",
                "company_id",
                "city",
                "region",
                "country",
                "lifecycle_stage",
                "owner_id",
                "tags",
                "notes",
                "custom",
            ]
        );
        assert_eq!(
            super::writable(schema::company::COMPANY_COLUMNS),
            [
                "external_id",
                "name",
                "domain",
                "industry",
                "city",
                "region",
                "country",
                "tags",
                "notes",
                "custom"
            ]
        );
    }
}
