//! Contact writes and reads: `/v1/contacts`, `/v1/contacts/{id}`, `/v1/contacts/bulk`.

use crate::store::contacts::BulkOutcome;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use indexer::Lsn;
use schema::{Contact, ContactFields};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{SearchKey, WriteKey};
use super::extract::{Id, Json, body_bytes};
use crate::error::{Code, Error, Result};
use crate::ingest::{self, Format};
use crate::store::contacts;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read, update, remove))
}

/// The bulk route, with its own (larger) body limit.
pub fn bulk_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bulk))
}

/// A JSON merge patch of a contact's fields (RFC 7396): fields given are
/// set, `null` clears one; `company_name` or `company_external_id` name the
/// company instead of `company_id`.
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code, reason = "describes a request body read as a JSON object")]
pub struct ContactPatch(serde_json::Map<String, serde_json::Value>);

/// A written record and the position to pass back as `min_lsn`.
#[derive(Serialize, ToSchema)]
pub struct Written<T> {
    #[serde(flatten)]
    pub record: T,
    #[schema(value_type = String)]
    pub lsn: Lsn,
}

/// Creates a contact.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = ContactFields,
    responses((status = 201, description = "created; `lsn` for read-your-writes", body = Written<Contact>,
        headers(("Location" = String, description = "the contact's path")))))]
async fn create(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Json(fields): Json<ContactFields>,
) -> Result<impl IntoResponse> {
    let (record, lsn) = contacts::create(st.db()?, p.tenant_id, fields).await?;
    Ok(super::created(
        format!("/v1/contacts/{}", record.id),
        Written { record, lsn },
    ))
}

/// A contact of the key's tenant.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = Uuid, Path, description = "the contact's id")),
    responses((status = 200, description = "the contact", body = Contact)))]
async fn read(
    State(st): State<AppState>,
    SearchKey(p): SearchKey,
    Id(id): Id,
) -> Result<axum::Json<Contact>> {
    Ok(axum::Json(contacts::get(st.db()?, p.tenant_id, id).await?))
}

/// Changes a contact by JSON merge patch.
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", request_body = ContactPatch,
    params(("id" = Uuid, Path, description = "the contact's id")),
    responses((status = 200, description = "the contact as changed", body = Written<Contact>)))]
async fn update(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Id(id): Id,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<Written<Contact>>> {
    let (record, lsn) = contacts::patch(st.db()?, p.tenant_id, id, patch).await?;
    Ok(axum::Json(Written { record, lsn }))
}

/// Deletes a contact.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = Uuid, Path, description = "the contact's id")),
    responses((status = 200, description = "deleted", body = super::openapi::Deleted)))]
async fn remove(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    let lsn = contacts::delete(st.db()?, p.tenant_id, id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true, "lsn": lsn})))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BulkParams {
    /// `ndjson` or `csv`; else taken from Content-Type (NDJSON by default).
    #[serde(default, deserialize_with = "super::search::empty_as_none")]
    #[param(pattern = "^(ndjson|jsonl|csv)$")]
    format: Option<String>,
}

fn bulk_format(params: &BulkParams, content_type: Option<&str>) -> Result<Format> {
    let pick = |s: &str| -> Option<Format> {
        let s = s.to_ascii_lowercase();
        if s.contains("csv") {
            Some(Format::Csv)
        } else if s.contains("ndjson")
            || s.contains("jsonl")
            || s.contains("json")
            || s.starts_with("text/plain")
        {
            Some(Format::Ndjson)
        } else {
            None
        }
    };
    match (&params.format, content_type) {
        (Some(f), _) => pick(f).ok_or_else(|| {
            Error::user(
                Code::InvalidQuery,
                format!("`format` must be `ndjson` or `csv`, not `{f}`"),
            )
        }),
        (None, Some(ct)) => pick(ct).ok_or_else(|| {
            Error::user(
                Code::UnsupportedMediaType,
                format!("bulk takes application/x-ndjson or text/csv, not `{ct}`"),
            )
        }),
        (None, None) => Ok(Format::Ndjson),
    }
}

/// A bulk request's format and body (not empty).
pub(super) async fn bulk_body(
    st: &AppState,
    params: Result<Query<BulkParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
    one: &str,
) -> Result<(Format, Bytes)> {
    let Query(params) = params.map_err(|e| Error::user(Code::InvalidQuery, e.body_text()))?;
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let format = bulk_format(&params, content_type.as_deref())?;
    let body: Bytes = body_bytes(req, st).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::user(
            Code::InvalidBody,
            format!("the body is empty; send one {one} per line"),
        ));
    }
    Ok((format, body))
}

/// Upserts contacts by `external_id` from NDJSON (one contact a line) or
/// CSV with a header row; bad lines are reported, the rest load.
#[utoipa::path(post, path = "/v1/contacts/bulk", tag = "contacts", params(BulkParams),
    request_body(description = "NDJSON (`application/x-ndjson`) or CSV (`text/csv`)",
        content((String = "application/x-ndjson"), (String = "text/csv"))),
    responses((status = 200, description = "what loaded and which lines failed", body = BulkOutcome)))]
async fn bulk(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    params: Result<Query<BulkParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<impl IntoResponse> {
    let (format, body) = bulk_body(&st, params, req, "contact").await?;
    let (good, bad) = super::cpu::run_bulk(move || ingest::parse(format, &body))
        .await
        .map_err(anyhow::Error::from)??;
    let outcome = contacts::bulk_upsert(st.db()?, p.tenant_id, good, bad).await?;
    tracing::info!(
        tenant = %p.tenant_id,
        inserted = outcome.inserted,
        updated = outcome.updated,
        failed = outcome.failed.len(),
        "bulk load"
    );
    Ok(axum::Json(outcome))
}
