//! Search endpoints: `POST|GET /v1/contacts/search`,
//! `GET /v1/contacts/autocomplete`, `GET /v1/contacts/stats`,
//! `POST|GET /v1/companies/search`. They translate HTTP to
//! [`crate::search`] and back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use indexer::{IndexStore, Indexer, Lsn};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::SearchKey;
use super::extract::Json;
use crate::cache;
use crate::error::{Code, Error, Result};
use crate::search::{self, Request, Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(contacts_get, contacts_post))
        .routes(routes!(companies_get, companies_post))
        .routes(routes!(autocomplete))
        .routes(routes!(stats))
        .routes(routes!(super::export::export))
}

/// One hit: its id, score, the record (`contact` or `company`, as `GET`
/// returns it) and, when asked, the highlighted fields.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct HitAnswer {
    id: String,
    score: f32,
    #[schema(value_type = Option<Object>)]
    contact: Option<Value>,
    #[schema(value_type = Option<Object>)]
    company: Option<Value>,
    /// Field → its text with `<em>` around what matched.
    #[schema(value_type = Option<Object>)]
    highlights: Option<Value>,
}

/// A window of the results, the exact total, facet counts, and a cursor.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct SearchAnswer {
    took_ms: f64,
    /// The position the index served at.
    index_lsn: String,
    hits: Vec<HitAnswer>,
    /// Exact, however many.
    total: u64,
    offset: u64,
    limit: u64,
    facets: BTreeMap<String, Vec<search::FacetValue>>,
    next_cursor: Option<String>,
    /// How a query that found nothing was widened, if it was.
    #[schema(value_type = Option<Object>)]
    fallback: Option<Value>,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct AutocompleteAnswer {
    took_ms: f64,
    /// `{"text", "kind": "contact"|"company", "id", "highlight"}`, best first.
    #[schema(value_type = Vec<Object>)]
    suggestions: Vec<Value>,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct StatsAnswer {
    total: u64,
    facets: BTreeMap<String, Vec<search::FacetValue>>,
    took_ms: f64,
    index_lsn: String,
}

/// `sort` as one string or a list of one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum SortParam {
    One(String),
    List(Vec<String>),
}

/// A search request body. Unknown fields are refused by name.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    #[serde(default)]
    q: String,
    /// Field → value(s) or range, e.g. `{"tags": ["vip"], "created_at": {"gte": "2025-01-01"}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    #[serde(default)]
    facets: Vec<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    facet_size: Option<usize>,
    #[serde(default)]
    sort: Option<SortParam>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    #[schema(maximum = 1000)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    highlight: Option<bool>,
    #[serde(default)]
    typo_tolerance: Option<bool>,
    /// Wait until the index has applied this position (read-your-writes).
    #[serde(default)]
    min_lsn: Option<String>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// The same as query parameters: `facets` and `sort` comma-separated,
/// `filter` as JSON.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    /// The filter as JSON, e.g. `{"tags":["vip"]}`.
    #[serde(default, deserialize_with = "empty_as_none")]
    filter: Option<String>,
    /// Comma-separated facet fields.
    facets: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    facet_size: Option<usize>,
    /// `_relevance` or `field:asc|desc`.
    #[serde(default, deserialize_with = "empty_as_none")]
    sort: Option<String>,
    offset: Option<usize>,
    #[param(maximum = 1000)]
    limit: Option<usize>,
    #[serde(default, deserialize_with = "empty_as_none")]
    cursor: Option<String>,
    highlight: Option<bool>,
    typo_tolerance: Option<bool>,
    #[serde(default, deserialize_with = "empty_as_none")]
    min_lsn: Option<String>,
    wait_ms: Option<u64>,
}

/// The `filter` query parameter: the filter as JSON.
pub(super) fn filter_param(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::user(
            Code::InvalidFilter,
            format!("`filter` must be a JSON object ({e})"),
        )
    })
}

/// An empty query parameter (`?filter=`) is one not given, as a form sends it.
pub(super) fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(de)?.filter(|s| !s.trim().is_empty()))
}

pub(super) type Params<T> = std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub(super) fn params<T>(p: Params<T>) -> Result<T> {
    p.map(|Query(p)| p)
        .map_err(|e| Error::user(Code::InvalidQuery, e.body_text()))
}

impl TryFrom<SearchParams> for SearchBody {
    type Error = Error;

    fn try_from(p: SearchParams) -> Result<Self> {
        let filter = p.filter.as_deref().map(filter_param).transpose()?;
        let list = |s: Option<String>| -> Vec<String> {
            s.map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
        };
        Ok(SearchBody {
            q: p.q,
            filter,
            facets: list(p.facets),
            facet_size: p.facet_size,
            sort: p.sort.map(|s| SortParam::List(list(Some(s)))),
            offset: p.offset,
            limit: p.limit,
            cursor: p.cursor,
            highlight: p.highlight,
            typo_tolerance: p.typo_tolerance,
            min_lsn: p.min_lsn,
            wait_ms: p.wait_ms,
        })
    }
}

/// Longest `wait_ms` accepted.
const MAX_WAIT_MS: u64 = 30_000;

/// How long a request may wait for its `min_lsn` (default 1 s); more than
/// [`MAX_WAIT_MS`] is refused, not cut.
pub(super) fn max_wait(wait_ms: Option<u64>) -> Result<Duration> {
    match wait_ms {
        Some(ms) if ms > MAX_WAIT_MS => Err(Error::user(
            Code::InvalidValue,
            format!(
                "`wait_ms` is at most {MAX_WAIT_MS} (30 s), not {ms}; to wait longer, ask again with the same `min_lsn`"
            ),
        )),
        ms => Ok(Duration::from_millis(ms.unwrap_or(1000))),
    }
}

/// The index, once it has applied `min_lsn` (503 `index_behind` after
/// `wait_ms`), and the position it serves at.
pub(super) async fn ready_index(
    st: &AppState,
    min_lsn: Option<&str>,
    wait_ms: Option<u64>,
) -> Result<(Arc<Indexer>, Lsn)> {
    let wait = max_wait(wait_ms)?;
    let indexer = st.indexer()?.clone();
    if let Some(min) = min_lsn {
        let min: Lsn = min.parse().map_err(|e: indexer::lsn::ParseLsnError| {
            Error::user(Code::InvalidValue, format!("`min_lsn`: {e}"))
        })?;
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
    let lsn = indexer.progress.visible();
    Ok((indexer, lsn))
}

/// Runs CPU work off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> search::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(super::cpu::run(f).await.map_err(anyhow::Error::from)??)
}

pub(super) fn took(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

async fn run(st: AppState, key: SearchKey, scope: Scope, body: SearchBody) -> Result<Response> {
    let started = Instant::now();
    let sort = match body.sort {
        None => None,
        Some(SortParam::One(s)) => Some(s),
        Some(SortParam::List(mut l)) => match l.len() {
            0 => None,
            1 => l.pop(),
            _ => {
                return Err(Error::user(
                    Code::InvalidSort,
                    "sort by one key (ties are broken by id); e.g. [\"last_name:asc\"]",
                ));
            }
        },
    };
    let filter = match &body.filter {
        Some(f) => search::parse_filter(f)?,
        None => Vec::new(),
    };
    let req = Request {
        q: body.q,
        filter,
        facets: body.facets,
        facet_size: body.facet_size.unwrap_or(search::DEFAULT_FACET_SIZE),
        sort,
        offset: body.offset.unwrap_or(0),
        limit: body.limit.unwrap_or(search::DEFAULT_LIMIT),
        cursor: body.cursor,
        highlight: body.highlight.unwrap_or(false),
        typo_tolerance: body.typo_tolerance.unwrap_or(true),
    };
    // a bad request is refused at once, not after waiting for the index
    search::check(scope, &req)?;
    let (indexer, index_lsn) = ready_index(&st, body.min_lsn.as_deref(), body.wait_ms).await?;
    let body = search_cached(&st, &indexer, key.0.tenant_id, scope, req).await?;
    Ok(answer(
        &body,
        json!({"took_ms": took(started), "index_lsn": index_lsn}),
    ))
}

/// A search's answer (without its per-request fields) through the result
/// cache: what `/v1/.../search` answers, and what the Meilisearch routes
/// reshape.
pub(super) async fn search_cached(
    st: &AppState,
    indexer: &Indexer,
    tenant: uuid::Uuid,
    scope: Scope,
    req: Request,
) -> Result<Bytes> {
    let (offset, limit) = (req.offset, req.limit);
    let store = indexer.store.clone();
    cached(
        st,
        &indexer.store,
        tenant,
        cache::Query::Search(scope, req.clone()),
        move || {
            let r = search::search(&store, tenant, scope, &req)?;
            Ok(json!({
                "hits": r.hits,
                "total": r.total,
                "offset": offset,
                "limit": limit,
                "facets": r.facets,
                "next_cursor": r.next_cursor,
                "fallback": r.fallback,
            }))
        },
    )
    .await
}

/// The answer to `query`: from the result cache while the tenant's documents
/// are as they were when it was computed (in the process, then in Redis),
/// else computed by `f` (on a core) and kept in both; identical searches in
/// flight at once are computed once. The JSON object without its
/// per-request fields.
async fn cached(
    st: &AppState,
    store: &IndexStore,
    tenant: uuid::Uuid,
    query: cache::Query,
    f: impl FnOnce() -> search::Result<Value> + Send + 'static,
) -> Result<Bytes> {
    // the version before the searcher: the answer is at least as new
    let version = store.version(tenant);
    let (hit, key) = st.results.get(tenant, query, version);
    if let Some(body) = hit {
        return Ok(body);
    }
    let work = || async {
        let shared = st
            .shared_results
            .as_ref()
            .map(|s| (s, cache::SharedCache::name(&key, version.position())));
        if let Some((s, name)) = &shared
            && let Some(body) = s.get(name).await
        {
            st.results.put(key.clone(), version, body.clone());
            return Ok(body);
        }
        let value = blocking(f).await.map_err(Arc::new)?;
        let body = Bytes::from(
            serde_json::to_vec(&value).map_err(|e| Arc::new(anyhow::Error::from(e).into()))?,
        );
        st.results.put(key.clone(), version, body.clone());
        if let Some((s, name)) = shared {
            s.put(name, body.clone());
        }
        Ok(body)
    };
    st.searches
        .run((key.clone(), version), work)
        .await
        .map_err(|e| Error::shared(&e))
}

/// `body` (a JSON object) with the fields of `front` (an object) in front.
fn answer(body: &[u8], front: Value) -> Response {
    let mut out = serde_json::to_vec(&front).unwrap_or_else(|_| b"{}".to_vec());
    let rest = body.strip_prefix(b"{").unwrap_or(body);
    if out.len() > 2 && rest != b"}" {
        out.pop(); // `}`
        out.push(b',');
    } else {
        out.truncate(out.len().saturating_sub(1));
    }
    out.extend_from_slice(rest);
    ([(CONTENT_TYPE, "application/json")], out).into_response()
}

/// Contacts that match `q` (typo-tolerant, prefixes as you type) under
/// `filter`, with facets, highlights, any window and an exact total.
#[utoipa::path(get, path = "/v1/contacts/search", tag = "search", params(SearchParams),
    responses((status = 200, description = "the results", body = SearchAnswer)))]
async fn contacts_get(
    State(st): State<AppState>,
    key: SearchKey,
    p: Params<SearchParams>,
) -> Result<Response> {
    run(st, key, Scope::Contacts, params(p)?.try_into()?).await
}

/// The same search with a JSON body.
#[utoipa::path(post, path = "/v1/contacts/search", tag = "search", request_body = SearchBody,
    responses((status = 200, description = "the results", body = SearchAnswer)))]
async fn contacts_post(
    State(st): State<AppState>,
    key: SearchKey,
    Json(b): Json<SearchBody>,
) -> Result<Response> {
    run(st, key, Scope::Contacts, b).await
}

/// Companies, searched as contacts are.
#[utoipa::path(get, path = "/v1/companies/search", tag = "search", params(SearchParams),
    responses((status = 200, description = "the results", body = SearchAnswer)))]
async fn companies_get(
    State(st): State<AppState>,
    key: SearchKey,
    p: Params<SearchParams>,
) -> Result<Response> {
    run(st, key, Scope::Companies, params(p)?.try_into()?).await
}

/// The same search with a JSON body.
#[utoipa::path(post, path = "/v1/companies/search", tag = "search", request_body = SearchBody,
    responses((status = 200, description = "the results", body = SearchAnswer)))]
async fn companies_post(
    State(st): State<AppState>,
    key: SearchKey,
    Json(b): Json<SearchBody>,
) -> Result<Response> {
    run(st, key, Scope::Companies, b).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AutocompleteParams {
    #[serde(default)]
    q: String,
    #[param(minimum = 1, maximum = 50)]
    limit: Option<usize>,
    #[serde(default, deserialize_with = "empty_as_none")]
    min_lsn: Option<String>,
    wait_ms: Option<u64>,
}

/// Contact and company names completing `q`, for a search box.
#[utoipa::path(get, path = "/v1/contacts/autocomplete", tag = "search", params(AutocompleteParams),
    responses((status = 200, description = "suggestions, best first", body = AutocompleteAnswer)))]
async fn autocomplete(
    State(st): State<AppState>,
    key: SearchKey,
    p: Params<AutocompleteParams>,
) -> Result<Response> {
    let started = Instant::now();
    let p = params(p)?;
    let limit = p.limit.unwrap_or(8);
    search::check_suggestions(limit)?;
    let (indexer, _) = ready_index(&st, p.min_lsn.as_deref(), p.wait_ms).await?;
    let tenant = key.0.tenant_id;
    let query = cache::Query::Autocomplete {
        q: p.q.clone(),
        limit,
    };
    let store = indexer.store.clone();
    let body = cached(&st, &indexer.store, tenant, query, move || {
        let suggestions = search::autocomplete(&store, tenant, &p.q, limit)?;
        Ok(json!({ "suggestions": suggestions }))
    })
    .await?;
    Ok(answer(&body, json!({ "took_ms": took(started) })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    #[param(minimum = 1, maximum = 100)]
    size: Option<usize>,
    #[serde(default, deserialize_with = "empty_as_none")]
    min_lsn: Option<String>,
    wait_ms: Option<u64>,
}

/// Whole-tenant facet counts, for a dashboard.
#[utoipa::path(get, path = "/v1/contacts/stats", tag = "search", params(StatsParams),
    responses((status = 200, description = "counts per facet", body = StatsAnswer)))]
async fn stats(
    State(st): State<AppState>,
    key: SearchKey,
    p: Params<StatsParams>,
) -> Result<axum::Json<Value>> {
    let started = Instant::now();
    let p = params(p)?;
    let size = p.size.unwrap_or(20);
    search::check(
        Scope::Contacts,
        &Request {
            facet_size: size,
            ..Request::default()
        },
    )?;
    let (indexer, index_lsn) = ready_index(&st, p.min_lsn.as_deref(), p.wait_ms).await?;
    let tenant = key.0.tenant_id;
    let s = blocking(move || search::stats(&indexer.store, tenant, Scope::Contacts, size)).await?;
    let facets: BTreeMap<String, Value> = s
        .facets
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Ok(axum::Json(json!({
        "total": s.total,
        "facets": facets,
        "took_ms": took(started),
        "index_lsn": index_lsn,
    })))
}
