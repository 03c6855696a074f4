//! `GET /v1/contacts/export`: every contact of the tenant that a search
//! with the same `q` and `filter` finds, streamed as NDJSON (each line the
//! contact as `GET /v1/contacts/{id}` returns it) or CSV (the columns
//! `POST /v1/contacts/bulk` reads, so that an export loads back).
//!
//! The rows come from the index a page of [`PAGE`] at a time, oldest first
//! (`created_at`, then id), each page walked on from the last by cursor: a
//! row is written at most once, and a contact written during the export may
//! or may not be in it. A `write` key is needed (an export is a bulk read).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use super::auth::WriteKey;
use super::search::{Params, params};
use crate::error::{Code, Error, Result};
use crate::ingest::Format;
use crate::search::{self, Request, Scope};

/// Contacts per page read from the index.
const PAGE: usize = 1_000;

/// The CSV columns, in order: what the bulk import reads (`id`,
/// `created_at` and `updated_at` are read-only there), with `custom` as one
/// JSON object.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "external_id",
    "first_name",
    "last_name",
    "emails",
    "phones",
    "title",
    "company_name",
    "city",
    "region",
    "country",
    "lifecycle_stage",
    "owner_id",
    "tags",
    "notes",
    "custom",
    "created_at",
    "updated_at",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `ndjson` (default) or `csv`.
    #[serde(default, deserialize_with = "super::search::empty_as_none")]
    #[param(pattern = "^(ndjson|jsonl|csv)$")]
    format: Option<String>,
    #[serde(default)]
    q: String,
    /// The search filter, as JSON.
    #[serde(default, deserialize_with = "super::search::empty_as_none")]
    filter: Option<String>,
    typo_tolerance: Option<bool>,
    #[serde(default, deserialize_with = "super::search::empty_as_none")]
    min_lsn: Option<String>,
    wait_ms: Option<u64>,
}

/// Streams every contact the search's `q` and `filter` find, oldest first,
/// as NDJSON or CSV (the columns the bulk import reads).
#[utoipa::path(get, path = "/v1/contacts/export", tag = "contacts", params(ExportParams),
    responses((status = 200, description = "the contacts, streamed",
        content((String = "application/x-ndjson"), (String = "text/csv")))))]
pub async fn export(
    State(st): State<AppState>,
    WriteKey(p): WriteKey,
    query: Params<ExportParams>,
) -> Result<Response> {
    let q = params(query)?;
    let format = match q.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("ndjson" | "jsonl") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(Error::user(
                Code::InvalidQuery,
                format!("`format` must be `ndjson` or `csv`, not `{other}`"),
            ));
        }
    };
    let filter = match q.filter.as_deref().map(super::search::filter_param) {
        Some(value) => search::parse_filter(&value?)?,
        None => Vec::new(),
    };
    let req = Request {
        q: q.q,
        filter,
        sort: Some("created_at:asc".to_owned()),
        limit: PAGE,
        typo_tolerance: q.typo_tolerance.unwrap_or(true),
        ..Request::default()
    };
    search::check(Scope::Contacts, &req)?;
    let (indexer, _) = super::search::ready_index(&st, q.min_lsn.as_deref(), q.wait_ms).await?;
    let tenant = p.tenant_id;
    // the first page before the answer starts: a bad query is a 4xx, not a
    // broken stream
    let store = indexer.store.clone();
    let first = {
        let req = req.clone();
        super::search::blocking(move || search::search(&store, tenant, Scope::Contacts, &req))
            .await?
    };
    let (content_type, head) = match format {
        Format::Ndjson => ("application/x-ndjson", Vec::new()),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(CSV_COLUMNS);
            (
                "text/csv; charset=utf-8",
                w.into_inner().unwrap_or_default(),
            )
        }
    };
    let state = Page {
        head: Some(head),
        result: Some(first),
        req,
        tenant,
    };
    // fused: a reader may poll past the end (the compression layer does),
    // which an unfold must not see
    let stream =
        futures_util::StreamExt::fuse(futures_util::stream::unfold(state, move |mut page| {
            let store = indexer.store.clone();
            async move { page.next(&store, format).await.map(|b| (b, page)) }
        }));
    let name = match format {
        Format::Ndjson => "contacts.ndjson",
        Format::Csv => "contacts.csv",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Where an export is: the header still to send, the page in hand, and the
/// request that reads the next one.
struct Page {
    head: Option<Vec<u8>>,
    result: Option<search::SearchResult>,
    req: Request,
    tenant: Uuid,
}

impl Page {
    /// The next chunk of the answer; `None` at the end. A failure ends the
    /// answer early (the client sees a cut body) and is logged.
    async fn next(
        &mut self,
        store: &std::sync::Arc<indexer::IndexStore>,
        format: Format,
    ) -> Option<std::result::Result<Bytes, std::io::Error>> {
        let mut out = self.head.take().unwrap_or_default();
        let result = match self.result.take() {
            Some(r) => r,
            None => {
                // no cursor: the last page was the end
                self.req.cursor.as_ref()?;
                let (store, req, tenant) = (store.clone(), self.req.clone(), self.tenant);
                match super::search::blocking(move || {
                    search::search(&store, tenant, Scope::Contacts, &req)
                })
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(tenant = %self.tenant, error = %e, "export stopped");
                        self.req.cursor = None;
                        return Some(Err(std::io::Error::other(e.to_string())));
                    }
                }
            }
        };
        self.req.cursor = if result.hits.len() < PAGE {
            None
        } else {
            result.next_cursor.clone()
        };
        match format {
            Format::Ndjson => {
                for hit in &result.hits {
                    if serde_json::to_writer(&mut out, hit.record.value()).is_ok() {
                        out.push(b'\n');
                    }
                }
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                for hit in &result.hits {
                    let contact = hit.record.value();
                    // writing to a Vec cannot fail
                    let _ =
                        w.write_record(CSV_COLUMNS.iter().map(|c| cell(contact, c).into_owned()));
                }
                out = w.into_inner().unwrap_or_default();
            }
        }
        if out.is_empty() && self.req.cursor.is_none() {
            return None;
        }
        Some(Ok(Bytes::from(out)))
    }
}

/// A contact's column as a CSV cell: lists joined by `;`, `custom` as JSON.
fn cell<'a>(contact: &'a Value, column: &str) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    match contact.get(column) {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(items)) => Cow::Owned(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(";"),
        ),
        Some(Value::Object(o)) if o.is_empty() => Cow::Borrowed(""),
        Some(other) => Cow::Owned(other.to_string()),
    }
}
