//! `POST|GET /v1/contacts/search`.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use indexer::Lsn;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::SearchKey;
use super::extract::Json;
use crate::error::{Code, Error, Result};
use crate::search::{self, ContactSearch, Hit, MAX_LIMIT};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/contacts/search", get(search_get).post(search_post))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
    /// Wait until the index has applied this position (read-your-writes).
    #[serde(default)]
    min_lsn: Option<String>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

#[derive(Serialize)]
struct SearchResponse {
    hits: Vec<Hit>,
    total: usize,
    offset: usize,
    limit: usize,
    took_ms: f64,
    index_lsn: Lsn,
}

/// Longest `wait_ms` honoured.
const MAX_WAIT_MS: u64 = 30_000;

async fn search_get(
    st: State<AppState>,
    key: SearchKey,
    params: std::result::Result<Query<SearchRequest>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<serde_json::Value>> {
    let Query(req) = params.map_err(|e| Error::user(Code::InvalidQuery, e.body_text()))?;
    run(st, key, req).await
}

async fn search_post(
    st: State<AppState>,
    key: SearchKey,
    Json(req): Json<SearchRequest>,
) -> Result<axum::Json<serde_json::Value>> {
    run(st, key, req).await
}

async fn run(
    State(st): State<AppState>,
    SearchKey(p): SearchKey,
    req: SearchRequest,
) -> Result<axum::Json<serde_json::Value>> {
    let started = Instant::now();
    let limit = req.limit.unwrap_or(20);
    if limit > MAX_LIMIT {
        return Err(Error::user(
            Code::InvalidValue,
            format!("`limit` is at most {MAX_LIMIT}; page with `offset`"),
        ));
    }
    let indexer = st.indexer()?.clone();
    if let Some(min) = &req.min_lsn {
        let min: Lsn = min.parse().map_err(|e: indexer::lsn::ParseLsnError| {
            Error::user(Code::InvalidValue, format!("`min_lsn`: {e}"))
        })?;
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(1000).min(MAX_WAIT_MS));
        if !indexer.wait_for(min, wait).await {
            return Err(Error::User {
                code: Code::IndexBehind,
                message: format!(
                    "the index has not reached {min} yet (it is at {}); retry, or raise `wait_ms`",
                    indexer.progress.visible()
                ),
                retry_after_secs: Some(1),
            });
        }
    }
    let index_lsn = indexer.progress.visible();
    let query = ContactSearch {
        q: req.q,
        offset: req.offset.unwrap_or(0),
        limit,
    };
    let tenant = p.tenant_id;
    let result = tokio::task::spawn_blocking(move || {
        search::search_contacts(&indexer.store, tenant, &query)
    })
    .await
    .map_err(anyhow::Error::from)??;
    let resp = SearchResponse {
        hits: result.hits,
        total: result.total,
        offset: req.offset.unwrap_or(0),
        limit,
        took_ms: started.elapsed().as_secs_f64() * 1e3,
        index_lsn,
    };
    Ok(axum::Json(
        serde_json::to_value(resp).map_err(anyhow::Error::from)?,
    ))
}
