//! Contact and company search over the index: query building, ranking,
//! filters, disjunctive facets, highlights, windows and cursors,
//! autocomplete and stats. No HTTP here — the API translates.
//!
//! - [`query`]: from `q` to words and one clause per word;
//! - [`matcher`]: one word in one field, scored by the kind of match;
//! - [`collect`]: every match in order, any window of it, facet counts;
//! - [`ordinals`]: one number per value of a string fast field across
//!   segments (sorts and facets merge by it);
//! - [`highlight`]: the matched spans of a record.

pub mod collect;
pub mod highlight;
pub mod matcher;
pub mod ordinals;
pub mod query;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use indexer::IndexStore;
use schema::index::{
    COMPANY_FACETS, COMPANY_SORTS, CONTACT_FACETS, CONTACT_SORTS, DATE_FIELDS, DocType, Fields,
};
use serde::{Deserialize, Serialize};
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::{Searcher, TantivyDocument, Term};
use uuid::Uuid;

use collect::{AfterKey, FacetCounter, Sort, SortKind};
pub use query::{MAX_QUERY_CHARS, MAX_QUERY_WORDS, Scope, Typos};

pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 20;
pub const DEFAULT_FACET_SIZE: usize = 10;
pub const MAX_FACET_SIZE: usize = 100;
/// Most values one filter may list.
pub const MAX_FILTER_VALUES: usize = 100;
/// Most suggestions autocomplete returns.
pub const MAX_SUGGESTIONS: usize = 50;

/// What was wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Filter,
    Facet,
    Sort,
    Cursor,
    Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{message}")]
    Invalid { what: Invalid, message: String },
    #[error(transparent)]
    Index(#[from] tantivy::TantivyError),
}

fn invalid(what: Invalid, message: impl Into<String>) -> SearchError {
    SearchError::Invalid {
        what,
        message: message.into(),
    }
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

/// A filter on one field: any of some values, or a date range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    AnyOf(Vec<String>),
    Range {
        gte: Option<DateTime<Utc>>,
        lt: Option<DateTime<Utc>>,
    },
}

/// A search request, as the engine takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub q: String,
    pub filter: Vec<(String, Condition)>,
    pub facets: Vec<String>,
    pub facet_size: usize,
    /// `_relevance`, `field`, `field:asc` or `field:desc`; `None`: relevance
    /// when `q` has words, else newest first.
    pub sort: Option<String>,
    pub offset: usize,
    pub limit: usize,
    pub cursor: Option<String>,
    pub highlight: bool,
    pub typo_tolerance: bool,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            q: String::new(),
            filter: Vec::new(),
            facets: Vec::new(),
            facet_size: DEFAULT_FACET_SIZE,
            sort: None,
            offset: 0,
            limit: DEFAULT_LIMIT,
            cursor: None,
            highlight: false,
            typo_tolerance: true,
        }
    }
}

/// A record of a hit: `{"contact": {...}}` or `{"company": {...}}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Contact(serde_json::Value),
    Company(serde_json::Value),
}

impl Record {
    pub fn value(&self) -> &serde_json::Value {
        match self {
            Record::Contact(v) | Record::Company(v) => v,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    #[serde(flatten)]
    pub record: Record,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highlights: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One facet value and how many documents have it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    pub total: usize,
    pub facets: BTreeMap<String, Vec<FacetValue>>,
    pub next_cursor: Option<String>,
    /// How the query was widened because as typed it found nothing.
    pub fallback: Option<Fallback>,
}

/// How a query that found nothing was widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// One more typo per word (1 from 3 letters, 2 from 6).
    MoreTypos,
    /// Any word instead of every word, more words ranking higher.
    AnyWord,
}

/// The filters of a request body: `{"field": "value" | ["v1", "v2"] |
/// {"gte": date, "gt": date, "lte": date, "lt": date}}`.
pub fn parse_filter(value: &serde_json::Value) -> Result<Vec<(String, Condition)>> {
    use serde_json::Value;
    let Value::Object(map) = value else {
        return Err(invalid(
            Invalid::Filter,
            "`filter` must be an object of field → value(s), e.g. {\"tags\": [\"vip\"]}",
        ));
    };
    let mut out = Vec::new();
    for (field, v) in map {
        let cond = match v {
            Value::String(s) => Condition::AnyOf(vec![s.clone()]),
            Value::Array(items) => {
                let values: Option<Vec<String>> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect();
                let values = values.ok_or_else(|| {
                    invalid(
                        Invalid::Filter,
                        format!("filter `{field}`: list only strings"),
                    )
                })?;
                if values.len() > MAX_FILTER_VALUES {
                    return Err(invalid(
                        Invalid::Filter,
                        format!("filter `{field}`: at most {MAX_FILTER_VALUES} values"),
                    ));
                }
                Condition::AnyOf(values)
            }
            Value::Object(bounds) => {
                let mut gte = None;
                let mut lt = None;
                for (op, b) in bounds {
                    let d = b.as_str().and_then(parse_date).ok_or_else(|| {
                        invalid(
                            Invalid::Filter,
                            format!(
                                "filter `{field}.{op}`: give a date as YYYY-MM-DD or RFC 3339 (2025-01-31T12:00:00Z)"
                            ),
                        )
                    })?;
                    let next = d + chrono::Duration::microseconds(1);
                    match op.as_str() {
                        "gte" => gte = Some(d),
                        "gt" => gte = Some(next),
                        "lt" => lt = Some(d),
                        "lte" => lt = Some(next),
                        other => {
                            return Err(invalid(
                                Invalid::Filter,
                                format!(
                                    "filter `{field}`: unknown bound `{other}`; use gte, gt, lte or lt"
                                ),
                            ));
                        }
                    }
                }
                Condition::Range { gte, lt }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {
                return Err(invalid(
                    Invalid::Filter,
                    format!(
                        "filter `{field}`: give a string, a list of strings, or a date range object"
                    ),
                ));
            }
        };
        out.push((field.clone(), cond));
    }
    Ok(out)
}

/// A date as YYYY-MM-DD (midnight UTC) or RFC 3339.
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

fn facets_of(scope: Scope) -> &'static [(&'static str, &'static str)] {
    match scope {
        Scope::Contacts | Scope::ContactNames => CONTACT_FACETS,
        Scope::Companies | Scope::CompanyNames => COMPANY_FACETS,
    }
}

fn sorts_of(scope: Scope) -> &'static [(&'static str, &'static str)] {
    match scope {
        Scope::Contacts | Scope::ContactNames => CONTACT_SORTS,
        Scope::Companies | Scope::CompanyNames => COMPANY_SORTS,
    }
}

fn names(list: &[(&str, &str)]) -> String {
    list.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The index field of an API facet or filter name.
fn facet_field(scope: Scope, name: &str, what: Invalid) -> Result<&'static str> {
    facets_of(scope)
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let dates = DATE_FIELDS.join(", ");
            let noun = if what == Invalid::Facet {
                "facet"
            } else {
                "filter"
            };
            let extra = if what == Invalid::Filter {
                format!(", or a date range on {dates}")
            } else {
                String::new()
            };
            invalid(
                what,
                format!(
                    "unknown {noun} field `{name}`; use one of {}{extra}",
                    names(facets_of(scope))
                ),
            )
        })
}

/// The order of a request, and its canonical name (what cursors carry).
fn resolve_sort(scope: Scope, sort: Option<&str>, empty_q: bool) -> Result<(Sort, String)> {
    let spec = match sort {
        Some(s) => s.trim().to_owned(),
        None if empty_q => "updated_at:desc".to_owned(),
        None => "_relevance".to_owned(),
    };
    if spec == "_relevance" {
        return Ok((
            Sort {
                kind: SortKind::Relevance,
                desc: false,
            },
            spec,
        ));
    }
    let (name, dir) = spec.split_once(':').unwrap_or((spec.as_str(), "asc"));
    let desc = match dir {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(invalid(
                Invalid::Sort,
                format!("sort `{spec}`: direction `{other}` is not asc or desc"),
            ));
        }
    };
    let (_, field) = sorts_of(scope)
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| {
            invalid(
                Invalid::Sort,
                format!(
                    "cannot sort by `{name}`; use _relevance or one of {} (with :asc or :desc)",
                    names(sorts_of(scope))
                ),
            )
        })?;
    let kind = if DATE_FIELDS.contains(field) {
        SortKind::Date(field)
    } else {
        SortKind::Text(field)
    };
    Ok((Sort { kind, desc }, format!("{name}:{dir}")))
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// The sort it belongs to.
    s: String,
    k: AfterKey,
    t: u64,
}

fn encode_cursor(sort: &str, key: AfterKey, tie: u64) -> String {
    let json = serde_json::to_vec(&Cursor {
        s: sort.to_owned(),
        k: key,
        t: tie,
    })
    .unwrap_or_default();
    hex::encode(json)
}

fn decode_cursor(cursor: &str, sort: &str) -> Result<(AfterKey, u64)> {
    let bad = || {
        invalid(
            Invalid::Cursor,
            "`cursor` is not one this service gave out; start again without it",
        )
    };
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if c.s != sort {
        return Err(invalid(
            Invalid::Cursor,
            format!(
                "`cursor` belongs to sort `{}`, not `{sort}`; pass the same sort or start again",
                c.s
            ),
        ));
    }
    let matches = matches!((&c.k, sort), (AfterKey::Score(_), "_relevance"))
        || !matches!(c.k, AfterKey::Score(_)) && sort != "_relevance";
    if !matches {
        return Err(bad());
    }
    Ok((c.k, c.t))
}

pub(crate) fn term_filter(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

pub(crate) fn must_filter(q: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0)))
}

/// A tenant's documents of one type.
pub(crate) fn scope_clauses(f: &Fields, tenant: Uuid, t: DocType) -> Vec<(Occur, Box<dyn Query>)> {
    vec![
        (
            Occur::Must,
            Box::new(ScopeFilter(Term::from_field_text(
                f.tenant_id,
                &tenant.to_string(),
            ))),
        ),
        (
            Occur::Must,
            Box::new(ScopeFilter(Term::from_field_text(f.doc_type, t.as_str()))),
        ),
    ]
}

/// The documents holding one term, scored 0 — or, in a segment where
/// every document holds it (a tenant alone in its segments, a segment of
/// contacts only), tantivy's match-all, which a conjunction drops instead
/// of stepping through a posting list as long as the segment.
#[derive(Debug, Clone)]
struct ScopeFilter(Term);

impl Query for ScopeFilter {
    fn weight(
        &self,
        _: tantivy::query::EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl tantivy::query::Weight for ScopeFilter {
    fn scorer(
        &self,
        reader: &tantivy::SegmentReader,
        _boost: tantivy::Score,
    ) -> tantivy::Result<Box<dyn tantivy::query::Scorer>> {
        use tantivy::query::{AllScorer, ConstScorer, EmptyScorer};
        let inverted = reader.inverted_index(self.0.field())?;
        Ok(match inverted.get_term_info(&self.0)? {
            None => Box::new(EmptyScorer),
            Some(info) if info.doc_freq == reader.max_doc() => {
                Box::new(AllScorer::new(reader.max_doc()))
            }
            Some(info) => Box::new(ConstScorer::new(
                inverted.read_postings_from_terminfo(&info, IndexRecordOption::Basic)?,
                0.0,
            )),
        })
    }

    fn explain(
        &self,
        reader: &tantivy::SegmentReader,
        doc: tantivy::DocId,
    ) -> tantivy::Result<tantivy::query::Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(tantivy::query::Explanation::new("ScopeFilter", 0.0))
    }
}

/// Each filter as a query, with the index field it is on.
fn resolve_filters(
    store: &IndexStore,
    scope: Scope,
    filter: &[(String, Condition)],
) -> Result<Vec<(&'static str, Box<dyn Query>)>> {
    let schema = &store.schema.schema;
    let mut out: Vec<(&'static str, Box<dyn Query>)> = Vec::new();
    for (name, cond) in filter {
        let q: (&'static str, Box<dyn Query>) = match cond {
            Condition::AnyOf(values) => {
                let field_name = facet_field(scope, name, Invalid::Filter)?;
                let field = schema.get_field(field_name)?;
                let any: Vec<Box<dyn Query>> =
                    values.iter().map(|v| term_filter(field, v)).collect();
                (field_name, Box::new(BooleanQuery::union(any)))
            }
            Condition::Range { gte, lt } => {
                let field_name = range_field(name)?;
                let field = schema.get_field(field_name)?;
                let bound = |d: &Option<DateTime<Utc>>, lower: bool| match d {
                    Some(d) => {
                        let t = Term::from_field_date(
                            field,
                            tantivy::DateTime::from_timestamp_micros(d.timestamp_micros()),
                        );
                        if lower {
                            std::ops::Bound::Included(t)
                        } else {
                            std::ops::Bound::Excluded(t)
                        }
                    }
                    None => std::ops::Bound::Unbounded,
                };
                (
                    field_name,
                    Box::new(RangeQuery::new(bound(gte, true), bound(lt, false))),
                )
            }
        };
        out.push(q);
    }
    Ok(out)
}

/// For each word of `parsed`, whether it also matches as a prefix: a
/// finished word of 3+ letters that none of the tenant's documents of the
/// scope has whole in a name field (see [`query::Parsed::prefix_candidates`];
/// `all`: whatever they have). Looked up in the tenant's own documents, so
/// what other tenants hold never changes an answer.
fn word_prefixes(
    searcher: &Searcher,
    f: &Fields,
    tenant: Uuid,
    scope: Scope,
    parsed: &query::Parsed,
    all: bool,
) -> Result<Vec<bool>> {
    let mut out = vec![false; parsed.words.len()];
    let fields = scope.prefix_fields(f);
    for (i, word) in parsed.prefix_candidates() {
        out[i] = all || !matches_whole(searcher, f, tenant, scope, &fields, word)?;
    }
    Ok(out)
}

/// Whether a document of the tenant's scope has `word` (or its German
/// spelling) whole in one of `fields`; stops at the first.
fn matches_whole(
    searcher: &Searcher,
    f: &Fields,
    tenant: Uuid,
    scope: Scope,
    fields: &[Field],
    word: &str,
) -> tantivy::Result<bool> {
    let spellings: Vec<String> = std::iter::once(word.to_owned())
        .chain(schema::analysis::german_alternative(word))
        .collect();
    let terms: Vec<Box<dyn Query>> = fields
        .iter()
        .flat_map(|&field| spellings.iter().map(move |w| term_filter(field, w)))
        .collect();
    let mut clauses = scope_clauses(f, tenant, scope.doc_type());
    clauses.push((Occur::Must, Box::new(BooleanQuery::union(terms))));
    let weight = BooleanQuery::new(clauses).weight(
        tantivy::query::EnableScoring::disabled_from_searcher(searcher),
    )?;
    for seg in searcher.segment_readers() {
        let mut docs = weight.scorer(seg, 1.0)?;
        let alive = seg.alive_bitset();
        let mut doc = docs.doc();
        while doc != tantivy::TERMINATED {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                return Ok(true);
            }
            doc = docs.advance();
        }
    }
    Ok(false)
}

/// Refuses what no index could answer (limits, sort, cursor, facet and
/// filter names): the checks a request passes before it waits for the index
/// to reach its `min_lsn`. [`search`] makes them too.
pub fn check(scope: Scope, req: &Request) -> Result<()> {
    check_parsed(scope, req, &query::parse(&req.q))
}

/// [`check`] of a request whose `q` is parsed already.
fn check_parsed(scope: Scope, req: &Request, parsed: &query::Parsed) -> Result<()> {
    if req.limit > MAX_LIMIT {
        return Err(invalid(
            Invalid::Value,
            format!("`limit` is at most {MAX_LIMIT}; page with `offset` or `cursor`"),
        ));
    }
    if req.facet_size == 0 || req.facet_size > MAX_FACET_SIZE {
        return Err(invalid(
            Invalid::Value,
            format!("`facet_size` is from 1 to {MAX_FACET_SIZE}"),
        ));
    }
    let (_, sort_name) = resolve_sort(scope, req.sort.as_deref(), parsed.is_empty())?;
    if let Some(c) = &req.cursor {
        decode_cursor(c, &sort_name)?;
    }
    for name in &req.facets {
        facet_field(scope, name, Invalid::Facet)?;
    }
    for (name, cond) in &req.filter {
        match cond {
            Condition::AnyOf(_) => facet_field(scope, name, Invalid::Filter).map(drop)?,
            Condition::Range { .. } => range_field(name).map(drop)?,
        }
    }
    Ok(())
}

/// A date field a range filter applies to.
fn range_field(name: &str) -> Result<&'static str> {
    DATE_FIELDS
        .iter()
        .find(|d| **d == name)
        .copied()
        .ok_or_else(|| {
            invalid(
                Invalid::Filter,
                format!(
                    "filter `{name}`: ranges apply to {} only",
                    DATE_FIELDS.join(", ")
                ),
            )
        })
}

/// Refuses an autocomplete `limit` out of range.
pub fn check_suggestions(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_SUGGESTIONS {
        return Err(invalid(
            Invalid::Value,
            format!("`limit` is from 1 to {MAX_SUGGESTIONS}"),
        ));
    }
    Ok(())
}

/// Contacts or companies matching a request.
pub fn search(
    store: &IndexStore,
    tenant: Uuid,
    scope: Scope,
    req: &Request,
) -> Result<SearchResult> {
    let parsed = query::parse(&req.q);
    check_parsed(scope, req, &parsed)?;
    let f = &store.schema.fields;
    let searcher = store.searcher();
    let (sort, sort_name) = resolve_sort(scope, req.sort.as_deref(), parsed.is_empty())?;
    let after = req
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, &sort_name))
        .transpose()?;
    let filters = resolve_filters(store, scope, &req.filter)?;
    let mut facet_fields: Vec<(&str, &'static str)> = Vec::new();
    for name in &req.facets {
        let field = facet_field(scope, name, Invalid::Facet)?;
        if !facet_fields.iter().any(|(n, _)| n == name) {
            facet_fields.push((name.as_str(), field));
        }
    }
    let filtered: Vec<&str> = filters.iter().map(|(field, _)| *field).collect();
    // a query that finds nothing is tried again with more typos, then with
    // any of its words instead of all
    let typos = if req.typo_tolerance {
        Typos::Normal
    } else {
        Typos::Off
    };
    let mut attempts = vec![(typos, Occur::Must, None)];
    if req.typo_tolerance && !parsed.is_empty() {
        attempts.push((Typos::Relaxed, Occur::Must, Some(Fallback::MoreTypos)));
    }
    if parsed.words.len() > 1 {
        attempts.push((
            attempts[attempts.len() - 1].0,
            Occur::Should,
            Some(Fallback::AnyWord),
        ));
    }
    let word_prefix = word_prefixes(&searcher, f, tenant, scope, &parsed, false)?;
    let every_prefix = word_prefixes(&searcher, f, tenant, scope, &parsed, true)?;
    let (rows, total, matchers, shared, own, fallback) = 'attempts: {
        let mut last = None;
        for (i, (typos, occur, fallback)) in attempts.iter().copied().enumerate() {
            // widened: every finished word of 3+ letters also as a prefix
            let prefixes = if typos == Typos::Relaxed {
                &every_prefix
            } else {
                &word_prefix
            };
            let (words, matchers) = query::build(&parsed, scope, f, typos, prefixes);
            // a word that matches no term empties every word being required:
            // on to the next attempt without expanding the others
            if occur == Occur::Must && i + 1 < attempts.len() && !matchers.may_match(&searcher)? {
                continue;
            }
            let boosts = query::local_boosts(&parsed, scope, f, typos);
            let query_without = |skip: Option<&str>| -> BooleanQuery {
                let mut clauses = scope_clauses(f, tenant, scope.doc_type());
                for (field, q) in &filters {
                    if Some(*field) != skip {
                        clauses.push(must_filter(q.box_clone()));
                    }
                }
                let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for w in &words {
                    any.push((occur, w.box_clone()));
                }
                // ranks only: a document matches by its words
                for b in &boosts {
                    any.push((Occur::Should, b.box_clone()));
                }
                match occur {
                    Occur::Should if !any.is_empty() => {
                        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
                    }
                    Occur::Should | Occur::Must | Occur::MustNot => clauses.extend(any),
                }
                if parsed.unsearchable {
                    clauses.push((Occur::Must, Box::new(tantivy::query::EmptyQuery)));
                }
                // no words: the scope alone (its clauses are all Must)
                BooleanQuery::new(clauses)
            };
            // disjunctive facets: a facet with a filter of its own counts without it
            let mut shared: Vec<FacetCounter> = Vec::new();
            let mut own: Vec<FacetCounter> = Vec::new();
            for (_, field) in &facet_fields {
                let counter = FacetCounter::new(&searcher, field)?;
                if filtered.contains(field) {
                    own.push(counter);
                } else {
                    shared.push(counter);
                }
            }
            let main = query_without(None);
            let mut shared_refs: Vec<&mut FacetCounter> = shared.iter_mut().collect();
            let after_ref = after.as_ref().map(|(k, t)| (k, *t));
            let (rows, total) = if req.limit == 0 && after.is_none() {
                // counts only: no sort keys to read
                (
                    collect::Matches::default(),
                    collect::count(&searcher, &main, &mut shared_refs)?,
                )
            } else {
                collect::gather(&searcher, &main, &sort, after_ref, &mut shared_refs)?
            };
            for counter in &mut own {
                let q = query_without(Some(counter.field));
                collect::count(&searcher, &q, &mut [counter])?;
            }
            let found = (rows, total, matchers, shared, own, fallback);
            if total > 0 || i + 1 == attempts.len() {
                break 'attempts found;
            }
            last = Some(found);
        }
        match last {
            Some(found) => found,
            None => unreachable!("at least one attempt runs"),
        }
    };
    let remaining = rows.len();
    let window = collect::window(&searcher, &rows, req.offset, req.limit)?;
    let hits = window
        .iter()
        .map(|row| hit(&searcher, f, scope, row, req.highlight.then_some(&matchers)))
        .collect::<Result<Vec<_>>>()?;
    let next_cursor = match window.last() {
        Some(last) if req.offset + window.len() < remaining => Some(encode_cursor(
            &sort_name,
            collect::after_key(&searcher, &sort, last)?,
            last.tie,
        )),
        Some(_) | None => None,
    };
    let mut facets = BTreeMap::new();
    for (name, field) in &facet_fields {
        let counter = shared
            .iter()
            .chain(own.iter())
            .find(|c| c.field == *field)
            .ok_or_else(|| invalid(Invalid::Facet, format!("facet `{name}`")))?;
        facets.insert((*name).to_owned(), facet_values(counter, req.facet_size)?);
    }
    Ok(SearchResult {
        hits,
        total,
        facets,
        next_cursor,
        // what was tried is not worth saying when nothing was found
        fallback: fallback.filter(|_| total > 0),
    })
}

fn facet_values(counter: &FacetCounter, size: usize) -> Result<Vec<FacetValue>> {
    Ok(counter
        .top(size)?
        .into_iter()
        .map(|(value, count)| FacetValue { value, count })
        .collect())
}

fn hit(
    searcher: &Searcher,
    f: &Fields,
    scope: Scope,
    row: &collect::Row,
    matchers: Option<&query::Matchers>,
) -> Result<Hit> {
    let doc: TantivyDocument = searcher.doc(row.address())?;
    let id = doc
        .get_first(f.id)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let source = doc
        .get_first(f.source)
        .and_then(|v| v.as_str())
        .unwrap_or("{}");
    let value: serde_json::Value = serde_json::from_str(source)
        .map_err(|e| tantivy::TantivyError::InternalError(format!("stored record of {id}: {e}")))?;
    let highlights = matchers.map(|m| highlight::record(m, &value));
    let record = match scope {
        Scope::Contacts | Scope::ContactNames => Record::Contact(value),
        Scope::Companies | Scope::CompanyNames => Record::Company(value),
    };
    Ok(Hit {
        id,
        score: row.score,
        record,
        highlights,
    })
}

/// A suggestion of autocomplete.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub text: String,
    /// `contact`, `company` or `email`.
    pub kind: &'static str,
    pub id: String,
    pub highlight: String,
    #[serde(skip)]
    score: f32,
}

/// Contact names, company names and emails for a prefix being typed.
pub fn autocomplete(
    store: &IndexStore,
    tenant: Uuid,
    q: &str,
    limit: usize,
) -> Result<Vec<Suggestion>> {
    check_suggestions(limit)?;
    let parsed = query::parse(q);
    if parsed.is_empty() || parsed.unsearchable {
        return Ok(Vec::new());
    }
    let f = &store.schema.fields;
    let searcher = store.searcher();
    let sort = Sort {
        kind: SortKind::Relevance,
        desc: false,
    };
    let mut out: Vec<Suggestion> = Vec::new();
    for scope in [Scope::ContactNames, Scope::CompanyNames] {
        let prefixes = word_prefixes(&searcher, f, tenant, scope, &parsed, false)?;
        let (words, matchers) = query::build(&parsed, scope, f, Typos::Normal, &prefixes);
        let mut clauses = scope_clauses(f, tenant, scope.doc_type());
        clauses.extend(words.into_iter().map(|w| (Occur::Must, w)));
        let (rows, _) =
            collect::gather(&searcher, &BooleanQuery::new(clauses), &sort, None, &mut [])?;
        // repeated names take several rows: look a little further, reading
        // records only until the scope has its `limit` suggestions
        let found_before = out.len();
        for row in &collect::window(&searcher, &rows, 0, limit * 4)? {
            if out.len() - found_before >= limit {
                break;
            }
            let hit = hit(&searcher, f, scope, row, None)?;
            let v = hit.record.value();
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
            let (kind, text) = match scope {
                Scope::Companies | Scope::CompanyNames => ("company", s("name").to_owned()),
                Scope::Contacts | Scope::ContactNames => {
                    let name = format!("{} {}", s("first_name"), s("last_name"))
                        .trim()
                        .to_owned();
                    let name_hl = highlight::line(&matchers, &name);
                    let email = v
                        .get("emails")
                        .and_then(|e| e.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str())
                        .find(|e| {
                            highlight::line(&matchers, e).contains("<em>")
                                || e.starts_with(q.trim())
                        });
                    match email {
                        Some(e) if !name_hl.contains("<em>") || q.contains('@') => {
                            ("email", e.to_owned())
                        }
                        Some(_) | None => ("contact", name),
                    }
                }
            };
            if text.is_empty() {
                continue;
            }
            let key = schema::analysis::fold(&text);
            if out
                .iter()
                .any(|o| o.kind == kind && schema::analysis::fold(&o.text) == key)
            {
                continue;
            }
            let highlight = highlight::line(&matchers, &text);
            out.push(Suggestion {
                text,
                kind,
                id: hit.id,
                highlight,
                score: row.score,
            });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(limit);
    Ok(out)
}

/// Whole-tenant facet counts, for a dashboard.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub total: usize,
    pub facets: BTreeMap<String, Vec<FacetValue>>,
}

/// Whole-tenant facet counts, computed (no cache).
pub fn compute_stats(store: &IndexStore, tenant: Uuid, scope: Scope, size: usize) -> Result<Stats> {
    let req = Request {
        facets: facets_of(scope)
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect(),
        facet_size: size,
        limit: 0,
        ..Request::default()
    };
    let r = search(store, tenant, scope, &req)?;
    Ok(Stats {
        total: r.total,
        facets: r.facets,
    })
}

/// Stats are cached per tenant and index generation: a dashboard asks
/// often, and they change only with a commit.
type StatsCache =
    std::sync::Mutex<std::collections::HashMap<(Uuid, (u64, u64), usize), std::sync::Arc<Stats>>>;

pub fn stats(
    store: &IndexStore,
    tenant: Uuid,
    scope: Scope,
    size: usize,
) -> Result<std::sync::Arc<Stats>> {
    static CACHE: std::sync::OnceLock<StatsCache> = std::sync::OnceLock::new();
    let searcher = store.searcher();
    // the index generation (a reindex starts new searcher numbers) and the
    // searcher's
    let generation = (store.generation(), searcher.generation().generation_id());
    let key = (tenant, generation, size);
    let cache = CACHE.get_or_init(Default::default);
    if scope == Scope::Contacts
        && let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
    {
        return Ok(hit.clone());
    }
    let stats = std::sync::Arc::new(compute_stats(store, tenant, scope, size)?);
    if scope == Scope::Contacts {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        // entries of older generations are dead weight
        c.retain(|(_, g, _), _| *g == generation);
        c.insert(key, stats.clone());
    }
    Ok(stats)
}
