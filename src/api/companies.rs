//! Company writes and reads: `/v1/companies`, `/v1/companies/{id}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use schema::{Company, CompanyFields};
use serde_json::json;

use super::AppState;
use super::contacts::Written;
use super::extract::{Id, Json};
use crate::auth::{Principal, Role};
use crate::error::Result;
use crate::store::companies;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/companies", post(create))
        .route("/v1/companies/{id}", get(read).patch(update).delete(remove))
}

async fn create(
    State(st): State<AppState>,
    p: Principal,
    Json(fields): Json<CompanyFields>,
) -> Result<impl IntoResponse> {
    p.require(Role::Write)?;
    let (record, lsn) = companies::create(&st.pool, p.tenant_id, fields).await?;
    Ok((StatusCode::CREATED, axum::Json(Written { record, lsn })))
}

async fn read(State(st): State<AppState>, p: Principal, Id(id): Id) -> Result<axum::Json<Company>> {
    p.require(Role::Search)?;
    Ok(axum::Json(companies::get(&st.pool, p.tenant_id, id).await?))
}

async fn update(
    State(st): State<AppState>,
    p: Principal,
    Id(id): Id,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<Written<Company>>> {
    p.require(Role::Write)?;
    let (record, lsn) = companies::patch(&st.pool, p.tenant_id, id, patch).await?;
    Ok(axum::Json(Written { record, lsn }))
}

async fn remove(State(st): State<AppState>, p: Principal, Id(id): Id) -> Result<impl IntoResponse> {
    p.require(Role::Write)?;
    let lsn = companies::delete(&st.pool, p.tenant_id, id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true, "lsn": lsn})))
}
