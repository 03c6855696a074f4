//! Company writes and reads: `/v1/companies`, `/v1/companies/{id}`.

use axum::extract::State;
use axum::response::IntoResponse;
use schema::{Company, CompanyFields};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{SearchKey, WriteKey};
use super::contacts::Written;
use super::extract::{Id, Json};
use crate::error::Result;
use crate::store::companies;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read, update, remove))
}

/// The bulk route, with its own (larger) body limit.
pub fn bulk_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bulk))
}

/// A JSON merge patch of a company's fields (RFC 7396).
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code, reason = "describes a request body read as a JSON object")]
pub struct CompanyPatch(serde_json::Map<String, serde_json::Value>);

/// Upserts companies by `external_id` from NDJSON or CSV; bad lines are
/// reported, the rest load.
#[utoipa::path(post, path = "/v1/companies/bulk", tag = "companies",
    params(super::contacts::BulkParams),
    request_body(description = "NDJSON (`application/x-ndjson`) or CSV (`text/csv`)",
        content((String = "application/x-ndjson"), (String = "text/csv"))),
    responses((status = 200, description = "what loaded and which lines failed",
        body = crate::store::contacts::BulkOutcome)))]
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
    let (good, bad) = super::cpu::run_bulk(move || crate::ingest::parse_companies(format, &body))
        .await
        .map_err(anyhow::Error::from)??;
    let outcome = companies::bulk_upsert(st.db()?, p.tenant_id, good, bad).await?;
    tracing::info!(
        tenant = %p.tenant_id,
        inserted = outcome.inserted,
        updated = outcome.updated,
        failed = outcome.failed.len(),
        "company bulk load"
    );
    Ok(axum::Json(outcome))
}

/// Creates a company.
#[utoipa::path(post, path = "/v1/companies", tag = "companies", request_body = CompanyFields,
    responses((status = 201, description = "created; `lsn` for read-your-writes", body = Written<Company>,
        headers(("Location" = String, description = "the company's path")))))]
async fn create(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Json(fields): Json<CompanyFields>,
) -> Result<impl IntoResponse> {
    let (record, lsn) = companies::create(st.db()?, p.tenant_id, fields).await?;
    Ok(super::created(
        format!("/v1/companies/{}", record.id),
        Written { record, lsn },
    ))
}

/// A company of the key's tenant.
#[utoipa::path(get, path = "/v1/companies/{id}", tag = "companies",
    params(("id" = Uuid, Path, description = "the company's id")),
    responses((status = 200, description = "the company", body = Company)))]
async fn read(
    State(st): State<AppState>,
    SearchKey(p): SearchKey,
    Id(id): Id,
) -> Result<axum::Json<Company>> {
    Ok(axum::Json(companies::get(st.db()?, p.tenant_id, id).await?))
}

/// Changes a company by JSON merge patch; its contacts carry a new name.
#[utoipa::path(patch, path = "/v1/companies/{id}", tag = "companies", request_body = CompanyPatch,
    params(("id" = Uuid, Path, description = "the company's id")),
    responses((status = 200, description = "the company as changed", body = Written<Company>)))]
async fn update(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Id(id): Id,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<Written<Company>>> {
    let (record, lsn) = companies::patch(st.db()?, p.tenant_id, id, patch).await?;
    Ok(axum::Json(Written { record, lsn }))
}

/// Deletes a company; its contacts stay, without it.
#[utoipa::path(delete, path = "/v1/companies/{id}", tag = "companies",
    params(("id" = Uuid, Path, description = "the company's id")),
    responses((status = 200, description = "deleted", body = super::openapi::Deleted)))]
async fn remove(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    let lsn = companies::delete(st.db()?, p.tenant_id, id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true, "lsn": lsn})))
}
