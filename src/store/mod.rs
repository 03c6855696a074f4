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

/// One row of a tenant's table by id; 404 when the tenant has none.
pub async fn get_row<T>(
    pool: &PgPool,
    table: &str,
    columns: &str,
    tenant: Uuid,
    id: Uuid,
    what: &str,
    from_row: fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<T> {
    let sql = format!("SELECT {columns} FROM {table} WHERE id = $1 AND tenant_id = $2");
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| Error::not_found(what))
}

/// Deletes one row of a tenant's table by id; 404 when the tenant has none.
pub async fn delete_row(
    pool: &PgPool,
    table: &str,
    tenant: Uuid,
    id: Uuid,
    what: &str,
) -> Result<Lsn> {
    let sql = format!("DELETE FROM {table} WHERE id = $1 AND tenant_id = $2");
    let res = sqlx::query(&sql)
        .bind(id)
        .bind(tenant)
        .execute(pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(Error::not_found(what));
    }
    Ok(write_position(pool).await?)
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
