//! Company writes and reads: `/v1/companies`, `/v1/companies/{id}`.

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use schema::{Company, CompanyFields};
use serde_json::json;

use super::AppState;
use super::auth::{SearchKey, WriteKey};
use super::contacts::Written;
use super::extract::{Id, Json};
use crate::error::Result;
use crate::store::companies;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/companies", post(create))
        .route("/v1/companies/{id}", get(read).patch(update).delete(remove))
}

async fn create(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Json(fields): Json<CompanyFields>,
) -> Result<impl IntoResponse> {
    let (record, lsn) = companies::create(&st.pool, p.tenant_id, fields).await?;
    Ok(super::created(
        format!("/v1/companies/{}", record.id),
        Written { record, lsn },
    ))
}

async fn read(
    State(st): State<AppState>,
    SearchKey(p): SearchKey,
    Id(id): Id,
) -> Result<axum::Json<Company>> {
    Ok(axum::Json(companies::get(&st.pool, p.tenant_id, id).await?))
}

async fn update(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Id(id): Id,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<Written<Company>>> {
    let (record, lsn) = companies::patch(&st.pool, p.tenant_id, id, patch).await?;
    Ok(axum::Json(Written { record, lsn }))
}

async fn remove(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    let lsn = companies::delete(&st.pool, p.tenant_id, id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true, "lsn": lsn})))
}
