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

/// The bulk route, with its own (larger) body limit.
pub fn bulk_router() -> Router<AppState> {
    Router::new().route("/v1/companies/bulk", post(bulk))
}

/// NDJSON or CSV companies, upserted by `external_id`; bad lines reported.
async fn bulk(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    params: Result<
        axum::extract::Query<super::contacts::BulkParams>,
        axum::extract::rejection::QueryRejection,
    >,
    req: axum::extract::Request,
) -> Result<impl IntoResponse> {
    let (format, body) = super::contacts::bulk_body(&st, params, req, "company").await?;
    let (good, bad) =
        tokio::task::spawn_blocking(move || crate::ingest::parse_companies(format, &body))
            .await
            .map_err(anyhow::Error::from)??;
    let outcome = companies::bulk_upsert(&st.pool, p.tenant_id, good, bad).await?;
    tracing::info!(
        tenant = %p.tenant_id,
        inserted = outcome.inserted,
        updated = outcome.updated,
        failed = outcome.failed.len(),
        "company bulk load"
    );
    Ok(axum::Json(outcome))
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
