//! Meilisearch's search API over our contacts and companies:
//! `POST /indexes/{contacts|companies}/search` and `POST /multi-search`,
//! with the request and answer shapes Meilisearch's clients send and read
//! (`@meilisearch/instant-meilisearch` drives the console through them).
//!
//! The same engine, cache and coalescing as `/v1/.../search`: a request is
//! translated to a [`search::Request`] and the answer reshaped. What is
//! covered (and refused by name otherwise):
//! - `q`; `filter` in Meilisearch's syntax, as a string or nested arrays
//!   (outer AND, inner OR), for `=`, `IN [...]`, `OR` between values of one
//!   field, `AND`, parentheses, and `>`, `>=`, `<`, `<=`, `TO` on the date
//!   fields (Unix seconds or RFC 3339);
//! - `facets` (`["*"]`: every facet field) → `facetDistribution`;
//! - `attributesToHighlight`, `highlightPreTag`, `highlightPostTag` →
//!   `_formatted`; `attributesToRetrieve`;
//! - `offset`/`limit` (→ `estimatedTotalHits`) or `page`/`hitsPerPage`
//!   (→ `totalPages`); `totalHits` is in both and always exact;
//! - `sort` by one field (`["last_name:asc"]`).
//!
//! Errors answer `{"message", "code", "type"}` as Meilisearch's do
//! ([`errors`] rewrites ours on these routes).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::SearchKey;
use super::extract::Json;
use super::search::{ready_index, search_cached, took};
use crate::error::{Code, Error, Result};
use crate::search::{self, Condition, Request as SearchRequest, Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index_search))
        .routes(routes!(multi_search))
}

/// Whether a path is one of these routes (their errors take Meilisearch's
/// shape).
pub fn is_meili_path(path: &str) -> bool {
    path == "/multi-search" || path.starts_with("/indexes/")
}

/// Most queries one `/multi-search` may carry.
const MAX_QUERIES: usize = 20;

/// One search, as Meilisearch takes it. Unknown parameters are refused by
/// name.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeiliQuery {
    /// The index (`contacts` or `companies`): in `/multi-search` only.
    #[serde(default)]
    index_uid: Option<String>,
    #[serde(default)]
    q: Option<String>,
    /// Meilisearch's filter: a string such as
    /// `(lifecycle_stage = lead OR lifecycle_stage = customer) AND country = PL`,
    /// or an array of them (AND) whose items may be arrays (OR).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    #[serde(default)]
    facets: Option<Vec<String>>,
    #[serde(default)]
    attributes_to_retrieve: Option<Vec<String>>,
    #[serde(default)]
    attributes_to_highlight: Option<Vec<String>>,
    #[serde(default)]
    highlight_pre_tag: Option<String>,
    #[serde(default)]
    highlight_post_tag: Option<String>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    #[schema(maximum = 1000)]
    limit: Option<usize>,
    #[serde(default)]
    #[schema(minimum = 1)]
    page: Option<usize>,
    #[serde(default)]
    #[schema(maximum = 1000)]
    hits_per_page: Option<usize>,
    /// One sort key, e.g. `["last_name:asc"]`.
    #[serde(default)]
    sort: Option<Vec<String>>,
}

/// `/multi-search`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MultiSearch {
    queries: Vec<MeiliQuery>,
}

/// One search's answer, as Meilisearch gives it.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
#[schema(rename_all = "camelCase")]
struct MeiliAnswer {
    /// In `/multi-search` answers.
    index_uid: Option<String>,
    /// The records, their fields at the top level, with `_formatted` when
    /// highlights were asked for.
    #[schema(value_type = Vec<Object>)]
    hits: Vec<Value>,
    query: String,
    processing_time_ms: u64,
    /// Exact, however many.
    total_hits: u64,
    estimated_total_hits: Option<u64>,
    offset: Option<u64>,
    limit: Option<u64>,
    page: Option<u64>,
    hits_per_page: Option<u64>,
    total_pages: Option<u64>,
    /// Field → value → count.
    #[schema(value_type = Option<Object>)]
    facet_distribution: Option<Value>,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct MultiAnswer {
    results: Vec<MeiliAnswer>,
}

/// A search in one index (`contacts` or `companies`), in Meilisearch's
/// request and answer shapes.
#[utoipa::path(post, path = "/indexes/{index_uid}/search", tag = "meilisearch",
    params(("index_uid" = String, Path, description = "`contacts` or `companies`")),
    request_body = MeiliQuery,
    responses((status = 200, description = "the results", body = MeiliAnswer)))]
async fn index_search(
    State(st): State<AppState>,
    key: SearchKey,
    Path(uid): Path<String>,
    Json(q): Json<MeiliQuery>,
) -> Result<Response> {
    if q.index_uid.is_some() {
        return Err(Error::user(
            Code::UnknownField,
            "unknown field `indexUid`: the index is in the path here; `indexUid` belongs in `/multi-search` queries",
        ));
    }
    let answer = one(&st, &key, &uid, q).await?;
    Ok(axum::Json(answer).into_response())
}

/// Several searches at once (`{"queries": [...]}`, each with its
/// `indexUid`): what InstantSearch sends for a page with facets.
#[utoipa::path(post, path = "/multi-search", tag = "meilisearch", request_body = MultiSearch,
    responses((status = 200, description = "one answer per query, in order", body = MultiAnswer)))]
async fn multi_search(
    State(st): State<AppState>,
    key: SearchKey,
    Json(body): Json<MultiSearch>,
) -> Result<Response> {
    if body.queries.len() > MAX_QUERIES {
        return Err(Error::user(
            Code::InvalidValue,
            format!("at most {MAX_QUERIES} queries per `/multi-search`"),
        ));
    }
    // the queries at once (InstantSearch sends the hits and one query per
    // disjunctive facet): the answer waits for the slowest, not the sum
    let searches = body.queries.into_iter().enumerate().map(|(i, mut q)| {
        let (st, key) = (&st, &key);
        async move {
            let uid = q.index_uid.take().ok_or_else(|| {
                Error::user(
                    Code::MissingField,
                    format!("`queries[{i}].indexUid` is missing: give `contacts` or `companies`"),
                )
            })?;
            let mut answer = one(st, key, &uid, q).await.map_err(|e| in_query(e, i))?;
            answer.insert("indexUid".into(), Value::String(uid));
            Ok::<_, Error>(Value::Object(answer))
        }
    });
    let results = futures_util::future::try_join_all(searches).await?;
    Ok(axum::Json(json!({ "results": results })).into_response())
}

/// An error of the `i`th query of a `/multi-search`, saying which.
fn in_query(e: Error, i: usize) -> Error {
    match e {
        Error::User {
            code,
            message,
            retry_after_secs,
        } => Error::User {
            code,
            message: format!("inside `.queries[{i}]`: {message}"),
            retry_after_secs,
        },
        e => e,
    }
}

/// The scope of an index uid.
fn scope_of(uid: &str) -> Result<Scope> {
    match uid {
        "contacts" => Ok(Scope::Contacts),
        "companies" => Ok(Scope::Companies),
        other => Err(Error::user(
            Code::NotFound,
            format!("index `{other}` not found: the indexes are `contacts` and `companies`"),
        )),
    }
}

/// How a request asked to page.
enum Paging {
    Offset { offset: usize, limit: usize },
    Page { page: usize, per_page: usize },
}

async fn one(
    st: &AppState,
    key: &SearchKey,
    uid: &str,
    q: MeiliQuery,
) -> Result<Map<String, Value>> {
    let started = Instant::now();
    let scope = scope_of(uid)?;
    let paging = match (q.page, q.hits_per_page) {
        (None, None) => Paging::Offset {
            offset: q.offset.unwrap_or(0),
            limit: q.limit.unwrap_or(search::DEFAULT_LIMIT),
        },
        _ if q.offset.is_some() || q.limit.is_some() => {
            return Err(Error::user(
                Code::InvalidValue,
                "page with `offset`/`limit` or with `page`/`hitsPerPage`, not both",
            ));
        }
        (page, per_page) => Paging::Page {
            page: page.unwrap_or(1),
            per_page: per_page.unwrap_or(search::DEFAULT_LIMIT),
        },
    };
    let (offset, limit) = match paging {
        Paging::Offset { offset, limit } => (offset, limit),
        Paging::Page { page: 0, .. } => {
            return Err(Error::user(Code::InvalidValue, "`page` counts from 1"));
        }
        Paging::Page { page, per_page } => ((page - 1).saturating_mul(per_page), per_page),
    };
    let sort = match q.sort.as_deref() {
        None | Some([]) => None,
        Some([one]) => Some(one.clone()),
        Some(_) => {
            return Err(Error::user(
                Code::InvalidSort,
                "sort by one field (ties are broken by id), e.g. [\"last_name:asc\"]",
            ));
        }
    };
    let facets = match q.facets {
        Some(f) if f.iter().any(|f| f == "*") => facet_names(scope),
        Some(f) => f,
        None => Vec::new(),
    };
    let highlight_fields = q.attributes_to_highlight.filter(|a| !a.is_empty());
    let filter = match &q.filter {
        None | Some(Value::Null) => Vec::new(),
        Some(f) => parse_filter(f).map_err(|m| Error::user(Code::InvalidFilter, m))?,
    };
    let text = q.q.unwrap_or_default();
    let req = SearchRequest {
        q: text.clone(),
        filter,
        facets,
        facet_size: search::MAX_FACET_SIZE,
        sort,
        offset,
        limit,
        cursor: None,
        highlight: highlight_fields.is_some(),
        typo_tolerance: true,
    };
    let (indexer, _) = ready_index(st, None, None).await?;
    let body = search_cached(st, &indexer, key.0.tenant_id, scope, req).await?;
    let ours: Value = serde_json::from_slice(&body).map_err(anyhow::Error::from)?;
    let total = ours["total"].as_u64().unwrap_or(0);
    let tags = Tags {
        pre: q.highlight_pre_tag.as_deref().unwrap_or("<em>"),
        post: q.highlight_post_tag.as_deref().unwrap_or("</em>"),
    };
    let hits: Vec<Value> = ours["hits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| {
            hit(
                h,
                q.attributes_to_retrieve.as_deref(),
                highlight_fields.as_deref(),
                &tags,
            )
        })
        .collect();
    let mut out = Map::new();
    out.insert("hits".into(), Value::Array(hits));
    out.insert("query".into(), Value::String(text));
    out.insert(
        "processingTimeMs".into(),
        json!(took(started).round() as u64),
    );
    match paging {
        Paging::Offset { offset, limit } => {
            out.insert("offset".into(), json!(offset));
            out.insert("limit".into(), json!(limit));
            out.insert("estimatedTotalHits".into(), json!(total));
        }
        Paging::Page { page, per_page } => {
            out.insert("page".into(), json!(page));
            out.insert("hitsPerPage".into(), json!(per_page));
            let pages = if per_page == 0 {
                0
            } else {
                total.div_ceil(per_page as u64)
            };
            out.insert("totalPages".into(), json!(pages));
        }
    }
    out.insert("totalHits".into(), json!(total));
    if let Some(facets) = ours["facets"].as_object()
        && !facets.is_empty()
    {
        let dist: Map<String, Value> = facets
            .iter()
            .map(|(field, values)| {
                let counts: Map<String, Value> = values
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| Some((v["value"].as_str()?.to_owned(), v["count"].clone())))
                    .collect();
                (field.clone(), Value::Object(counts))
            })
            .collect();
        out.insert("facetDistribution".into(), Value::Object(dist));
    }
    Ok(out)
}

fn facet_names(scope: Scope) -> Vec<String> {
    let list = match scope {
        Scope::Contacts | Scope::ContactNames => schema::index::CONTACT_FACETS,
        Scope::Companies | Scope::CompanyNames => schema::index::COMPANY_FACETS,
    };
    list.iter().map(|(name, _)| (*name).to_owned()).collect()
}

struct Tags<'a> {
    pre: &'a str,
    post: &'a str,
}

/// One of our hits (`{"id", "score", "contact"|"company": {...},
/// "highlights"}`) as Meilisearch's: the record's fields, and `_formatted`
/// (the record with the highlighted fields marked by `tags`) when
/// highlights were asked for.
fn hit(
    ours: &Value,
    retrieve: Option<&[String]>,
    highlight: Option<&[String]>,
    tags: &Tags,
) -> Value {
    let record = ours
        .get("contact")
        .or_else(|| ours.get("company"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let wanted =
        |field: &str| retrieve.is_none_or(|list| list.iter().any(|a| a == "*" || a == field));
    let mut doc: Map<String, Value> = record.into_iter().filter(|(k, _)| wanted(k)).collect();
    if let Some(fields) = highlight {
        let marked = ours.get("highlights").and_then(Value::as_object);
        let mut formatted = doc.clone();
        for (field, value) in formatted.iter_mut() {
            if !fields.iter().any(|a| a == "*" || a == field) {
                continue;
            }
            let Some(h) = marked.and_then(|m| m.get(field)) else {
                continue;
            };
            *value = match (value.take(), h) {
                (_, Value::String(s)) => Value::String(retag(s, tags)),
                // a list field: each value that matched, marked in place
                (Value::Array(items), Value::Array(hs)) => {
                    let hs: Vec<String> = hs
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| retag(s, tags))
                        .collect();
                    let plain: Vec<String> = hs
                        .iter()
                        .map(|s| s.replace(tags.pre, "").replace(tags.post, ""))
                        .collect();
                    Value::Array(
                        items
                            .into_iter()
                            .map(|item| {
                                match item
                                    .as_str()
                                    .and_then(|s| plain.iter().position(|p| p == s))
                                {
                                    Some(i) => Value::String(hs[i].clone()),
                                    None => item,
                                }
                            })
                            .collect(),
                    )
                }
                (v, _) => v,
            };
        }
        doc.insert("_formatted".into(), Value::Object(formatted));
    }
    Value::Object(doc)
}

/// Our highlight (HTML-escaped, `<em>` marks) as Meilisearch's: the text as
/// it is, marked by the caller's tags.
fn retag(marked: &str, tags: &Tags) -> String {
    let mut out = String::with_capacity(marked.len());
    let mut rest = marked;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (text, len) = [
            ("<em>", tags.pre),
            ("</em>", tags.post),
            ("&amp;", "&"),
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&quot;", "\""),
            ("&#39;", "'"),
        ]
        .iter()
        .find(|(from, _)| rest.starts_with(from))
        .map(|(from, to)| (*to, from.len()))
        .unwrap_or((&rest[..1], 1));
        out.push_str(text);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

// ---- filters ----

/// Meilisearch's filter (a string, or an array of strings and arrays of
/// strings) as ours: an AND of conditions, each any of some values of one
/// field or a date range. What cannot be said that way is refused with a
/// sentence saying what can.
fn parse_filter(value: &Value) -> std::result::Result<Vec<(String, Condition)>, String> {
    let expr = match value {
        Value::String(s) => parse_expr(s)?,
        Value::Array(items) => {
            let mut all = Vec::new();
            for item in items {
                all.push(match item {
                    Value::String(s) => parse_expr(s)?,
                    Value::Array(any) => {
                        let mut ors = Vec::new();
                        for s in any {
                            let Value::String(s) = s else {
                                return Err(filter_shape());
                            };
                            ors.push(parse_expr(s)?);
                        }
                        Expr::Or(ors)
                    }
                    Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => {
                        return Err(filter_shape());
                    }
                });
            }
            Expr::And(all)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => {
            return Err(filter_shape());
        }
    };
    let mut out = Vec::new();
    conjuncts(expr, &mut out)?;
    Ok(out)
}

fn filter_shape() -> String {
    "`filter` is a string, or an array of strings and arrays of strings (outer AND, inner OR)"
        .into()
}

const FILTER_CAN: &str = "crmsearch filters by an AND of conditions, each `field = value`, \
    `field IN [a, b]` or an OR of values of one field, or a range on created_at/updated_at";

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not,
    /// `field = value` / `field IN [...]`.
    Eq(String, Vec<String>),
    /// `field > value` etc.; `TO` is two of them.
    Cmp(String, &'static str, String),
}

/// Flattens an AND into `out`.
fn conjuncts(e: Expr, out: &mut Vec<(String, Condition)>) -> std::result::Result<(), String> {
    match e {
        Expr::And(items) => {
            for i in items {
                conjuncts(i, out)?;
            }
            Ok(())
        }
        Expr::Eq(field, values) => {
            out.push((field, Condition::AnyOf(values)));
            Ok(())
        }
        Expr::Cmp(field, op, value) => {
            out.push((field.clone(), range(&field, op, &value)?));
            Ok(())
        }
        Expr::Or(items) => {
            // an OR of values of one field
            let mut field: Option<String> = None;
            let mut values = Vec::new();
            let mut leaves = Vec::new();
            flatten_or(items, &mut leaves);
            for leaf in leaves {
                match leaf {
                    Expr::Eq(f, vs) if field.as_ref().is_none_or(|x| *x == f) => {
                        field = Some(f);
                        values.extend(vs);
                    }
                    Expr::Eq(..) => {
                        return Err(format!(
                            "OR between different fields is not supported: {FILTER_CAN}"
                        ));
                    }
                    Expr::And(_) | Expr::Or(_) | Expr::Not | Expr::Cmp(..) => {
                        return Err(format!(
                            "OR of ranges, groups or NOT is not supported: {FILTER_CAN}"
                        ));
                    }
                }
            }
            match field {
                Some(f) => {
                    out.push((f, Condition::AnyOf(values)));
                    Ok(())
                }
                None => Err(format!("an empty OR: {FILTER_CAN}")),
            }
        }
        Expr::Not => Err(format!("NOT and != are not supported: {FILTER_CAN}")),
    }
}

fn flatten_or(items: Vec<Expr>, out: &mut Vec<Expr>) {
    for i in items {
        match i {
            Expr::Or(inner) => flatten_or(inner, out),
            // `(a = 1)` inside an OR: an AND of one
            Expr::And(mut one) if one.len() == 1 => flatten_or(vec![one.remove(0)], out),
            other @ (Expr::And(_) | Expr::Not | Expr::Eq(..) | Expr::Cmp(..)) => out.push(other),
        }
    }
}

/// A date bound: Unix seconds (as Meilisearch compares numbers) or a date
/// (YYYY-MM-DD or RFC 3339).
fn range(field: &str, op: &str, value: &str) -> std::result::Result<Condition, String> {
    let at = match value.parse::<i64>() {
        Ok(secs) => chrono::DateTime::from_timestamp(secs, 0),
        Err(_) => search::parse_date(value),
    }
    .ok_or_else(|| {
        format!("`{field} {op} {value}`: compare dates with Unix seconds or a date (2025-01-31 or RFC 3339)")
    })?;
    let next = at + chrono::Duration::microseconds(1);
    let (gte, lt) = match op {
        ">=" => (Some(at), None),
        ">" => (Some(next), None),
        "<" => (None, Some(at)),
        "<=" => (None, Some(next)),
        _ => return Err(format!("`{op}` is not supported: {FILTER_CAN}")),
    };
    Ok(Condition::Range { gte, lt })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Op(&'static str),
    Open,
    Close,
    OpenList,
    CloseList,
    Comma,
}

fn tokens(s: &str) -> std::result::Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    '[' => Tok::OpenList,
                    ']' => Tok::CloseList,
                    _ => Tok::Comma,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, d)) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                text.push(e);
                            }
                        }
                        d if d == c => {
                            closed = true;
                            break;
                        }
                        d => text.push(d),
                    }
                }
                if !closed {
                    return Err(format!("unclosed quote at character {i} of the filter"));
                }
                out.push(Tok::Quoted(text));
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let eq = chars.next_if(|&(_, d)| d == '=').is_some();
                out.push(Tok::Op(match (c, eq) {
                    ('=', _) => "=",
                    ('!', true) => "!=",
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    _ => return Err(format!("unexpected `!` at character {i} of the filter")),
                }));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_whitespace() || "()[],=!<>\"'".contains(d) {
                        break;
                    }
                    word.push(d);
                    chars.next();
                }
                out.push(Tok::Word(word));
            }
        }
    }
    Ok(out)
}

/// A recursive-descent parser of one filter string.
struct Parser {
    toks: Vec<Tok>,
    at: usize,
    depth: usize,
}

fn parse_expr(s: &str) -> std::result::Result<Expr, String> {
    let mut p = Parser {
        toks: tokens(s)?,
        at: 0,
        depth: 0,
    };
    if p.toks.is_empty() {
        return Ok(Expr::And(Vec::new()));
    }
    let e = p.or()?;
    match p.toks.get(p.at) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {} in the filter `{s}`", show(t))),
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Quoted(q) => format!("`\"{q}\"`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
        Tok::OpenList => "`[`".into(),
        Tok::CloseList => "`]`".into(),
        Tok::Comma => "`,`".into(),
    }
}

impl Parser {
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.at), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> std::result::Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.peek_keyword("OR") {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> std::result::Result<Expr, String> {
        let mut items = vec![self.not()?];
        while self.peek_keyword("AND") {
            self.at += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn not(&mut self) -> std::result::Result<Expr, String> {
        if self.peek_keyword("NOT") {
            self.at += 1;
            self.not()?;
            return Ok(Expr::Not);
        }
        self.primary()
    }

    fn primary(&mut self) -> std::result::Result<Expr, String> {
        if self.toks.get(self.at) == Some(&Tok::Open) {
            self.at += 1;
            self.depth += 1;
            if self.depth > 32 {
                return Err("the filter nests too deeply".into());
            }
            let e = self.or()?;
            self.depth -= 1;
            return match self.next() {
                Some(Tok::Close) => Ok(match e {
                    Expr::And(_) => e,
                    other @ (Expr::Or(_) | Expr::Not | Expr::Eq(..) | Expr::Cmp(..)) => {
                        Expr::And(vec![other])
                    }
                }),
                _ => Err("a `(` in the filter is not closed".into()),
            };
        }
        let field = self.value("a field name")?;
        match self.next() {
            Some(Tok::Op("=")) => Ok(Expr::Eq(field, vec![self.value("a value")?])),
            Some(Tok::Op("!=")) => {
                self.value("a value")?;
                Ok(Expr::Not)
            }
            Some(Tok::Op(op)) => Ok(Expr::Cmp(field, op, self.value("a value")?)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IN") => Ok(Expr::Eq(field, self.list()?)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("NOT") => Ok(Expr::Not),
            Some(Tok::Word(w))
                if [
                    "EXISTS",
                    "IS",
                    "_geoRadius",
                    "_geoBoundingBox",
                    "CONTAINS",
                    "STARTS",
                ]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                Err(format!("`{w}` is not supported: {FILTER_CAN}"))
            }
            Some(Tok::Word(from)) | Some(Tok::Quoted(from)) if self.peek_keyword("TO") => {
                self.at += 1;
                let to = self.value("a value")?;
                Ok(Expr::And(vec![
                    Expr::Cmp(field.clone(), ">=", from),
                    Expr::Cmp(field, "<=", to),
                ]))
            }
            Some(t) => Err(format!(
                "after `{field}` the filter expects `=`, `IN [...]`, a comparison or `a TO b`, not {}",
                show(&t)
            )),
            None => Err(format!("the filter ends after `{field}`")),
        }
    }

    fn value(&mut self, what: &str) -> std::result::Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) if !w.is_empty() => Ok(w),
            Some(Tok::Quoted(q)) => Ok(q),
            Some(t) => Err(format!("the filter expects {what}, not {}", show(&t))),
            None => Err(format!("the filter ends where it expects {what}")),
        }
    }

    fn list(&mut self) -> std::result::Result<Vec<String>, String> {
        if self.next() != Some(Tok::OpenList) {
            return Err("`IN` takes a list: `field IN [a, b]`".into());
        }
        let mut out = Vec::new();
        loop {
            if self.toks.get(self.at) == Some(&Tok::CloseList) {
                self.at += 1;
                return Ok(out);
            }
            out.push(self.value("a value")?);
            match self.next() {
                Some(Tok::Comma) => {}
                Some(Tok::CloseList) => return Ok(out),
                _ => return Err("a list in the filter is not closed with `]`".into()),
            }
        }
    }
}

// ---- errors ----

/// Errors on these routes in Meilisearch's shape: `{"message", "code",
/// "type"}`, the status and headers as ours (so a client that knows
/// Meilisearch reads them, and `Retry-After` still says when to retry).
pub async fn errors(req: Request, next: Next) -> Response {
    if !is_meili_path(req.uri().path()) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    if resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let ours: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let code = ours["error"]["code"].as_str().unwrap_or("internal");
    let message = ours["error"]["message"]
        .as_str()
        .unwrap_or("an error occurred");
    let status = parts.status;
    let kind = if status.as_u16() == 401 || status.as_u16() == 403 {
        "auth"
    } else if status.is_server_error() {
        if status.as_u16() == 503 {
            "system"
        } else {
            "internal"
        }
    } else {
        "invalid_request"
    };
    let body = json!({
        "message": message,
        "code": meili_code(code),
        "type": kind,
    });
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// Meilisearch's name for one of our codes, where it has one.
fn meili_code(ours: &str) -> &str {
    match ours {
        "invalid_filter" => "invalid_search_filter",
        "invalid_facet" => "invalid_search_facets",
        "invalid_sort" => "invalid_search_sort",
        "missing_api_key" => "missing_authorization_header",
        "not_found" => "index_not_found",
        "malformed_json" | "invalid_encoding" => "malformed_payload",
        "unsupported_media_type" => "invalid_content_type",
        "unknown_field" | "missing_field" | "invalid_body" | "invalid_value" => "bad_request",
        other => other,
    }
}

/// The error body these routes answer with (for the OpenAPI document).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
pub struct MeiliError {
    pub message: String,
    /// Meilisearch's code where it has one (`invalid_search_filter`,
    /// `bad_request`, `invalid_api_key`, …), else ours (`rate_limited`, …).
    pub code: String,
    /// `invalid_request`, `auth`, `system` or `internal`.
    #[schema(rename = "type")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> std::result::Result<Vec<(String, Condition)>, String> {
        parse_filter(&Value::String(s.into()))
    }

    fn any(field: &str, values: &[&str]) -> (String, Condition) {
        (
            field.into(),
            Condition::AnyOf(values.iter().map(|v| (*v).to_owned()).collect()),
        )
    }

    #[test]
    fn filters_in_meilisearch_syntax_become_ours() {
        assert_eq!(f("country = PL").unwrap(), vec![any("country", &["PL"])]);
        assert_eq!(
            f("(lifecycle_stage = \"lead\" OR lifecycle_stage = 'customer') AND country = PL")
                .unwrap(),
            vec![
                any("lifecycle_stage", &["lead", "customer"]),
                any("country", &["PL"])
            ]
        );
        assert_eq!(
            f("tags IN [vip, \"key account\"] and city = \"São Paulo\"").unwrap(),
            vec![
                any("tags", &["vip", "key account"]),
                any("city", &["São Paulo"])
            ]
        );
        // instant-meilisearch's shape: quoted names, nested arrays
        let nested = json!([
            [
                "\"lifecycle_stage\"=\"lead\"",
                "\"lifecycle_stage\"=\"customer\""
            ],
            "\"country\"=\"P\\\"L\""
        ]);
        assert_eq!(
            parse_filter(&nested).unwrap(),
            vec![
                any("lifecycle_stage", &["lead", "customer"]),
                any("country", &["P\"L"])
            ]
        );
        let r = f("created_at >= 1700000000 AND created_at 1700000000 TO 1800000000").unwrap();
        assert_eq!(r.len(), 3);
        assert!(
            matches!(&r[0], (n, Condition::Range { gte: Some(_), lt: None }) if n == "created_at")
        );
        assert!(f("updated_at < 2025-01-31").is_ok());
        assert_eq!(f("").unwrap(), vec![]);
    }

    #[test]
    fn what_our_filters_cannot_say_is_refused_by_name() {
        for (filter, says) in [
            ("country = PL OR city = Lodz", "different fields"),
            ("NOT country = PL", "NOT"),
            ("country != PL", "NOT"),
            ("country EXISTS", "EXISTS"),
            ("country = ", "ends"),
            ("country = 'PL", "unclosed"),
            ("(country = PL", "not closed"),
            ("country IN [PL, DE", "not closed"),
            ("created_at > yesterday", "Unix seconds"),
            ("country = PL extra", "unexpected"),
            ("created_at > 1 OR created_at < 0", "ranges"),
        ] {
            let e = f(filter).unwrap_err();
            assert!(e.contains(says), "{filter}: {e}");
        }
        assert!(parse_filter(&json!(3)).unwrap_err().contains("array"));
        assert!(f(&"(".repeat(100)).unwrap_err().contains("deeply"));
    }

    #[test]
    fn highlights_take_the_callers_tags_and_lose_the_escaping() {
        let tags = Tags {
            pre: "__ais__",
            post: "__/ais__",
        };
        assert_eq!(
            retag(
                "<em>Jo</em>hn &amp; &lt;b&gt; O&#39;Neil &quot;x&quot; &",
                &tags
            ),
            "__ais__Jo__/ais__hn & <b> O'Neil \"x\" &"
        );
        let ours = json!({"id": "1", "score": 2.0,
            "contact": {"id": "1", "first_name": "John", "emails": ["a@x.pl", "john@y.pl"], "city": "Lodz"},
            "highlights": {"first_name": "<em>Jo</em>hn", "emails": ["<em>john</em>@y.pl"]}});
        let h = hit(&ours, None, Some(&["*".into()]), &tags);
        assert_eq!(h["first_name"], "John");
        assert_eq!(h["_formatted"]["first_name"], "__ais__Jo__/ais__hn");
        assert_eq!(
            h["_formatted"]["emails"],
            json!(["a@x.pl", "__ais__john__/ais__@y.pl"])
        );
        assert_eq!(h["_formatted"]["city"], "Lodz");
        let h = hit(&ours, Some(&["first_name".into()]), None, &tags);
        assert_eq!(h, json!({"first_name": "John"}));
    }
}
