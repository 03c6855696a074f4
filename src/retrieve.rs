//! Memory retrieval for agents: candidates by meaning (the vector
//! collections) and by keyword (BM25 over `content` in tantivy) under the
//! same filters, fused by reciprocal rank, then recency and importance,
//! optional MMR diversity, and a token budget. No HTTP here.
//!
//! When the in-process index is behind the position a caller must see
//! (`min_lsn`), the same ranking runs over Postgres: pgvector's HNSW index
//! (iterative scan) and full-text search on the durable copy.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use indexer::IndexStore;
use indexer::vectors::{self, Filter};
use schema::index::DocType;
use schema::{Memory, MemoryKind};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{TantivyDocument, Term};
use uuid::Uuid;

use crate::search::{must_filter, scope_clauses, term_filter};

/// Reciprocal-rank fusion's damping constant (the usual 60).
const RRF_K: f64 = 60.0;
pub const MAX_TOP_K: usize = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Semantic,
    Keyword,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    #[schema(minimum = 0, maximum = 10)]
    pub recency: f64,
    #[schema(minimum = 0, maximum = 10)]
    pub importance: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            recency: 0.1,
            importance: 0.1,
        }
    }
}

/// What an agent asks for (the body of `POST /v1/memories/search`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryQuery {
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub query: Option<String>,
    /// The query's vector instead of `query`: 384 finite numbers.
    #[serde(default)]
    #[schema(min_items = 384, max_items = 384)]
    pub embedding: Option<Vec<f32>>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub subject_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub kinds: Vec<MemoryKind>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    #[serde(default = "default_top_k")]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: usize,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub weights: Weights,
    #[serde(default = "default_half_life")]
    #[schema(exclusive_minimum = 0)]
    pub half_life_days: f64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub diversity: f64,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub token_budget: Option<usize>,
    /// Read at least this position (the `lsn` of a write): wait up to
    /// `wait_ms` for the index, then answer from Postgres.
    #[serde(default)]
    pub min_lsn: Option<String>,
    #[serde(default)]
    #[schema(maximum = 10000)]
    pub wait_ms: Option<u64>,
}

fn default_top_k() -> usize {
    10
}

fn default_half_life() -> f64 {
    30.0
}

impl Default for MemoryQuery {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

/// A request that cannot be answered as asked.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

impl MemoryQuery {
    /// Checks the numbers; returns the query vector the caller sent, unit length.
    pub fn check(&self) -> Result<Option<Vec<f32>>, Invalid> {
        if self.top_k == 0 || self.top_k > MAX_TOP_K {
            return Err(invalid(
                "top_k",
                format!("must be between 1 and {MAX_TOP_K}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.diversity) {
            return Err(invalid("diversity", "must be between 0 and 1"));
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return Err(invalid(
                "half_life_days",
                "must be a positive number of days",
            ));
        }
        for (name, w) in [
            ("weights.recency", self.weights.recency),
            ("weights.importance", self.weights.importance),
        ] {
            if !(w.is_finite() && (0.0..=10.0).contains(&w)) {
                return Err(invalid(name, "must be between 0 and 10"));
            }
        }
        if self.token_budget == Some(0) {
            return Err(invalid("token_budget", "must be at least 1 token"));
        }
        if self.wait_ms.is_some_and(|w| w > 10_000) {
            return Err(invalid("wait_ms", "must be at most 10000"));
        }
        if let Some(q) = &self.query
            && q.chars().count() > 4_000
        {
            return Err(invalid("query", "must be at most 4000 characters"));
        }
        if self.mode == Mode::Keyword && self.text().is_none() {
            return Err(invalid("query", "keyword mode needs a query text"));
        }
        match &self.embedding {
            None => Ok(None),
            Some(v) => {
                schema::memory::check_embedding("embedding", v)
                    .map_err(|e| invalid("embedding", e.message))?;
                vectors::normalize(v.clone())
                    .map(Some)
                    .ok_or_else(|| invalid("embedding", "must not be all zeros"))
            }
        }
    }

    fn filter(&self, now: DateTime<Utc>) -> Filter {
        Filter {
            agent: self.agent_id.clone(),
            subject: self.subject_id.clone(),
            session: self.session_id.clone(),
            kinds: self.kinds.iter().fold(0u8, |acc, k| {
                acc | 1
                    << vectors::KINDS
                        .iter()
                        .position(|n| *n == k.as_str())
                        .unwrap_or(0)
            }),
            since_micros: self.since.map(|t| t.timestamp_micros()),
            until_micros: self.until.map(|t| t.timestamp_micros()),
            now_micros: now.timestamp_micros(),
        }
    }

    /// How many candidates each side contributes.
    fn depth(&self) -> usize {
        (self.top_k * 5).clamp(50, 500)
    }

    fn text(&self) -> Option<&str> {
        self.query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
    }
}

/// How a memory's score was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Scores {
    /// Cosine similarity to the query, when the memory was a vector candidate.
    pub semantic: Option<f32>,
    /// BM25 of the query words, when it was a keyword candidate.
    pub keyword: Option<f32>,
    /// The fused relevance in [0, 1] (reciprocal rank, normalised).
    pub relevance: f64,
    /// `exp(−age / half_life)`, before its weight.
    pub recency: f64,
    pub importance: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Retrieved {
    pub id: Uuid,
    pub content: String,
    pub kind: MemoryKind,
    pub agent_id: String,
    pub subject_id: Option<String>,
    pub session_id: Option<String>,
    pub importance: f64,
    pub metadata: serde_json::Value,
    pub score: f64,
    pub scores: Scores,
    pub tokens: usize,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Retrieval {
    pub memories: Vec<Retrieved>,
    pub tokens_used: usize,
    /// `index` or `postgres` (a strong read the index could not serve yet).
    pub source: &'static str,
}

/// A memory found by either side, before ranking.
struct Candidate {
    memory: Memory,
    semantic: Option<(usize, f32)>,
    keyword: Option<(usize, f32)>,
    vector: Option<Vec<f32>>,
}

/// A stored `real` as the number it was written as (0.74, not
/// 0.7400000095367432): six decimals are more than a `real` holds.
fn importance_of(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

/// A keyword-side hit: onto the memory's candidate when the semantic side
/// found it too, else a new candidate.
fn add_keyword(
    cands: &mut Vec<Candidate>,
    at: &mut HashMap<Uuid, usize>,
    m: Memory,
    keyword: Option<(usize, f32)>,
) {
    match at.get(&m.id) {
        Some(i) => cands[*i].keyword = keyword,
        None => {
            at.insert(m.id, cands.len());
            cands.push(Candidate {
                memory: m,
                semantic: None,
                keyword,
                vector: None,
            });
        }
    }
}

/// Ranks candidates: fusion, recency, importance, MMR, token budget.
fn rank(
    q: &MemoryQuery,
    mut cands: Vec<Candidate>,
    now: DateTime<Utc>,
    count_tokens: &dyn Fn(&str) -> usize,
) -> (Vec<Retrieved>, usize) {
    let sides = f64::from(
        u8::from(cands.iter().any(|c| c.semantic.is_some()))
            + u8::from(cands.iter().any(|c| c.keyword.is_some())),
    );
    let best = sides.max(1.0) / (RRF_K + 1.0);
    let half_life = q.half_life_days * 86_400.0;
    let mut scored: Vec<(f64, Scores, Candidate)> = cands
        .drain(..)
        .map(|c| {
            let rrf = [c.semantic.map(|s| s.0), c.keyword.map(|k| k.0)]
                .into_iter()
                .flatten()
                .map(|rank| 1.0 / (RRF_K + 1.0 + rank as f64))
                .sum::<f64>();
            let relevance = rrf / best;
            let age = (now - c.memory.updated_at.max(c.memory.created_at))
                .num_milliseconds()
                .max(0) as f64
                / 1e3;
            let recency = (-age / half_life).exp();
            let importance = importance_of(c.memory.importance);
            let score = relevance + q.weights.recency * recency + q.weights.importance * importance;
            let scores = Scores {
                semantic: c.semantic.map(|s| s.1),
                keyword: c.keyword.map(|k| k.1),
                relevance,
                recency,
                importance,
            };
            (score, scores, c)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.memory.id.cmp(&b.2.memory.id)));
    if q.diversity > 0.0 {
        scored = mmr(scored, q.diversity, q.top_k.max(1) * 3);
    }
    let mut out = Vec::new();
    let mut used = 0usize;
    for (score, scores, c) in scored {
        if out.len() == q.top_k {
            break;
        }
        let tokens = count_tokens(&c.memory.content);
        if q.token_budget.is_some_and(|budget| used + tokens > budget) {
            continue;
        }
        used += tokens;
        let m = c.memory;
        out.push(Retrieved {
            id: m.id,
            content: m.content,
            kind: m.kind,
            agent_id: m.agent_id,
            subject_id: m.subject_id,
            session_id: m.session_id,
            importance: importance_of(m.importance),
            metadata: m.metadata,
            score,
            scores,
            tokens,
            created_at: m.created_at,
            updated_at: m.updated_at,
        });
    }
    (out, used)
}

/// Maximal marginal relevance: picks, one at a time, the candidate with the
/// best `(1 − diversity) · score − diversity · max similarity to those
/// picked` (scores scaled to [0, 1]); the first `keep` in that order.
fn mmr(
    mut rest: Vec<(f64, Scores, Candidate)>,
    diversity: f64,
    keep: usize,
) -> Vec<(f64, Scores, Candidate)> {
    let (lo, hi) = rest.iter().fold((f64::MAX, f64::MIN), |(lo, hi), s| {
        (lo.min(s.0), hi.max(s.0))
    });
    let span = (hi - lo).max(1e-9);
    let mut picked: Vec<(f64, Scores, Candidate)> = Vec::with_capacity(keep);
    while !rest.is_empty() && picked.len() < keep {
        let mut best = (f64::MIN, 0);
        for (i, (score, _, c)) in rest.iter().enumerate() {
            let redundancy = picked
                .iter()
                .filter_map(|p| {
                    Some(1.0 - vectors::distance(c.vector.as_deref()?, p.2.vector.as_deref()?))
                })
                .fold(0.0f32, f32::max);
            let v = (1.0 - diversity) * (score - lo) / span - diversity * f64::from(redundancy);
            if v > best.0 {
                best = (v, i);
            }
        }
        picked.push(rest.remove(best.1));
    }
    picked.extend(rest);
    picked
}

/// Retrieval from the in-process index. `query_vector`: the query's
/// embedding (unit length), when the semantic side runs.
pub fn from_index(
    store: &IndexStore,
    tenant: Uuid,
    q: &MemoryQuery,
    query_vector: Option<&[f32]>,
    count_tokens: &dyn Fn(&str) -> usize,
) -> tantivy::Result<Retrieval> {
    let now = Utc::now();
    let depth = q.depth();
    let filter = q.filter(now);
    let searcher = store.searcher();
    let f = &store.schema.fields;
    let mut cands: Vec<Candidate> = Vec::new();
    let mut at: HashMap<Uuid, usize> = HashMap::new();
    if q.mode != Mode::Keyword
        && let Some(v) = query_vector
    {
        let hits = store.vectors().search(tenant, v, depth, &filter);
        let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let docs = docs_by_id(&searcher, f, &ids)?;
        for (rank, h) in hits.iter().enumerate() {
            if let Some(m) = docs.get(&h.id) {
                at.insert(h.id, cands.len());
                cands.push(Candidate {
                    memory: m.clone(),
                    semantic: Some((rank, h.similarity)),
                    keyword: None,
                    vector: None,
                });
            }
        }
    }
    let text = q.text();
    if q.mode != Mode::Semantic || query_vector.is_none() {
        let filters = BooleanQuery::new(filter_clauses(f, tenant, q, now));
        let words: Vec<Box<dyn Query>> = keywords(text.unwrap_or_default())
            .into_iter()
            .map(|t| {
                Box::new(TermQuery::new(
                    Term::from_field_text(f.content, &t),
                    IndexRecordOption::WithFreqs,
                )) as Box<dyn Query>
            })
            .collect();
        let has_words = !words.is_empty();
        // without a text, the filters list memories; a text with nothing
        // searchable in it (symbols, a word longer than any kept) matches
        // no memory by keyword
        if has_words || (query_vector.is_none() && text.is_none()) {
            let top = if has_words {
                top_by_score(&searcher, &BooleanQuery::union(words), &filters, depth)?
            } else {
                searcher.search(&filters, &TopDocs::with_limit(depth).order_by_score())?
            };
            for (rank, (score, addr)) in top.into_iter().enumerate() {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let Some(m) = memory_of(&doc, f) else {
                    continue;
                };
                add_keyword(&mut cands, &mut at, m, has_words.then_some((rank, score)));
            }
        }
    }
    if q.diversity > 0.0 {
        let ids: Vec<Uuid> = cands.iter().map(|c| c.memory.id).collect();
        let mut vecs = store.vectors().vectors(tenant, &ids);
        for c in &mut cands {
            c.vector = vecs.remove(&c.memory.id);
        }
    }
    let (memories, tokens_used) = rank(q, cands, now, count_tokens);
    Ok(Retrieval {
        memories,
        tokens_used,
        source: "index",
    })
}

/// The `limit` best documents by `scored` (a union of terms) among those
/// `filter` matches, best first (ties by address, as `TopDocs`).
///
/// The filter is not a clause of the scored query: a boolean query with
/// required filter clauses scores every document its words match, while a
/// pure union of terms skips whole blocks that cannot enter the top
/// (block-max WAND). Common words ("contact", "note" in every CRM memory)
/// then cost a few blocks instead of the whole tenant. The filter is
/// checked on what the walk yields, in document order, by advancing its
/// own doc set.
fn top_by_score(
    searcher: &tantivy::Searcher,
    scored: &dyn Query,
    filter: &dyn Query,
    limit: usize,
) -> tantivy::Result<Vec<(tantivy::Score, tantivy::DocAddress)>> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;
    use tantivy::query::EnableScoring;
    use tantivy::{DocAddress, DocSet, Score};

    /// Lower is worse: a lower score, then a later address.
    struct Hit(Score, DocAddress);
    impl PartialEq for Hit {
        fn eq(&self, o: &Self) -> bool {
            self.cmp(o) == Ordering::Equal
        }
    }
    impl Eq for Hit {}
    impl PartialOrd for Hit {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Hit {
        fn cmp(&self, o: &Self) -> Ordering {
            self.0.total_cmp(&o.0).then_with(|| o.1.cmp(&self.1))
        }
    }

    if limit == 0 {
        return Ok(Vec::new());
    }
    let weight = scored.weight(EnableScoring::enabled_from_searcher(searcher))?;
    let filter = filter.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let mut heap: BinaryHeap<Reverse<Hit>> = BinaryHeap::with_capacity(limit + 1);
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        let mut passes = filter.scorer(reader, 1.0)?;
        let alive = reader.alive_bitset();
        let threshold = |heap: &BinaryHeap<Reverse<Hit>>| match heap.peek() {
            Some(Reverse(worst)) if heap.len() >= limit => worst.0,
            _ => Score::MIN,
        };
        let start = threshold(&heap);
        weight.for_each_pruning(start, reader, &mut |doc, score| {
            if passes.doc() < doc {
                passes.seek(doc);
            }
            if passes.doc() == doc && alive.is_none_or(|a| a.is_alive(doc)) {
                heap.push(Reverse(Hit(score, DocAddress::new(ord as u32, doc))));
                if heap.len() > limit {
                    heap.pop();
                }
            }
            threshold(&heap)
        })?;
    }
    let mut hits: Vec<Hit> = heap.into_iter().map(|Reverse(h)| h).collect();
    hits.sort_by(|a, b| b.cmp(a));
    Ok(hits.into_iter().map(|Hit(s, a)| (s, a)).collect())
}

/// English function words: a question's "how", "does", "the" match every
/// memory and would push real keyword matches out of the fused ranking.
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but",
    "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of",
    "on", "or", "our", "she", "should", "so", "some", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "us", "was", "we", "were", "what", "when",
    "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// The index terms of a query text without function words (all of them
/// when nothing else is left).
fn keywords(text: &str) -> Vec<String> {
    let all: Vec<String> = schema::analysis::index_tokens(text)
        .into_iter()
        .map(|t| t.text)
        .collect();
    let kept: Vec<String> = all
        .iter()
        .filter(|t| !STOP_WORDS.contains(&String::as_str(t)))
        .cloned()
        .collect();
    if kept.is_empty() { all } else { kept }
}

/// The tenant's memories that pass the request's filters (not expired).
fn filter_clauses(
    f: &schema::index::Fields,
    tenant: Uuid,
    q: &MemoryQuery,
    now: DateTime<Utc>,
) -> Vec<(Occur, Box<dyn Query>)> {
    let mut clauses = scope_clauses(f, tenant, DocType::Memory);
    for (field, v) in [
        (f.agent_id, &q.agent_id),
        (f.subject_id, &q.subject_id),
        (f.session_id, &q.session_id),
    ] {
        if let Some(v) = v {
            clauses.push(must_filter(term_filter(field, v)));
        }
    }
    if !q.kinds.is_empty() {
        let kinds: Vec<Box<dyn Query>> = q
            .kinds
            .iter()
            .map(|k| term_filter(f.kind, k.as_str()))
            .collect();
        clauses.push(must_filter(Box::new(BooleanQuery::union(kinds))));
    }
    let date = |t: DateTime<Utc>| tantivy::DateTime::from_timestamp_micros(t.timestamp_micros());
    let date_term = |field, t| Term::from_field_date(field, date(t));
    use std::ops::Bound::{Included, Unbounded};
    if q.since.is_some() || q.until.is_some() {
        clauses.push(must_filter(Box::new(RangeQuery::new(
            q.since
                .map_or(Unbounded, |t| Included(date_term(f.created_at, t))),
            q.until
                .map_or(Unbounded, |t| Included(date_term(f.created_at, t))),
        ))));
    }
    clauses.push((
        Occur::MustNot,
        Box::new(RangeQuery::new(
            Unbounded,
            Included(date_term(f.expires_at, now)),
        )),
    ));
    clauses
}

fn memory_of(doc: &TantivyDocument, f: &schema::index::Fields) -> Option<Memory> {
    let source = doc.get_first(f.source).and_then(|v| v.as_str())?;
    serde_json::from_str(source).ok()
}

/// The stored memories with these ids.
fn docs_by_id(
    searcher: &tantivy::Searcher,
    f: &schema::index::Fields,
    ids: &[Uuid],
) -> tantivy::Result<HashMap<Uuid, Memory>> {
    use tantivy::{DocAddress, DocSet, TERMINATED};
    // each id looked up in each segment's term dictionary: a term-set
    // query would stream the whole dictionary of ids instead (a million
    // terms for 50 ids)
    let terms: Vec<Term> = ids
        .iter()
        .map(|id| Term::from_field_text(f.id, &id.to_string()))
        .collect();
    let mut out = HashMap::with_capacity(ids.len());
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let inverted = segment.inverted_index(f.id)?;
        let alive = segment.alive_bitset();
        for term in &terms {
            let Some(mut postings) = inverted.read_postings(term, IndexRecordOption::Basic)? else {
                continue;
            };
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    let stored: TantivyDocument = searcher.doc(DocAddress::new(ord as u32, doc))?;
                    if let Some(m) = memory_of(&stored, f) {
                        out.insert(m.id, m);
                    }
                }
                doc = postings.advance();
            }
        }
    }
    Ok(out)
}

const SCOPE: &str = "tenant_id = $1 AND ($2::text IS NULL OR agent_id = $2) AND ($3::text IS NULL OR subject_id = $3)
    AND ($4::text IS NULL OR session_id = $4) AND (cardinality($5::text[]) = 0 OR kind = ANY($5))
    AND ($6::timestamptz IS NULL OR created_at >= $6) AND ($7::timestamptz IS NULL OR created_at <= $7)
    AND (expires_at IS NULL OR expires_at > now())";
const COLS: &str = crate::store::memories::COLUMNS;

/// The same retrieval over Postgres: pgvector's HNSW index with iterative
/// scans for meaning, full-text search for keywords.
pub async fn from_postgres(
    pool: &PgPool,
    tenant: Uuid,
    q: &MemoryQuery,
    query_vector: Option<&[f32]>,
    count_tokens: &(dyn Fn(&str) -> usize + Sync),
) -> Result<Retrieval, sqlx::Error> {
    let now = Utc::now();
    let depth = q.depth() as i64;
    let kinds: Vec<&str> = q.kinds.iter().map(|k| k.as_str()).collect();
    let mut cands: Vec<Candidate> = Vec::new();
    let mut at: HashMap<Uuid, usize> = HashMap::new();
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL hnsw.ef_search = 100")
        .execute(&mut *tx)
        .await?;
    let bind = |sql: &'static String| {
        sqlx::query(sql)
            .bind(tenant)
            .bind(&q.agent_id)
            .bind(&q.subject_id)
            .bind(&q.session_id)
            .bind(&kinds)
            .bind(q.since)
            .bind(q.until)
    };
    if q.mode != Mode::Keyword
        && let Some(v) = query_vector
    {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {COLS}, (1 - (embedding <=> $8))::real FROM memories WHERE {SCOPE} AND embedding IS NOT NULL
                 ORDER BY embedding <=> $8 LIMIT $9"
            )
        });
        let rows = bind(&SQL)
            .bind(pgvector::Vector::from(v.to_vec()))
            .bind(depth)
            .fetch_all(&mut *tx)
            .await?;
        for (rank, row) in rows.iter().enumerate() {
            let m = crate::store::memories::from_row(row)?;
            let sim: f32 = sqlx::Row::try_get(row, 12)?;
            at.insert(m.id, cands.len());
            cands.push(Candidate {
                memory: m,
                semantic: Some((rank, sim)),
                keyword: None,
                vector: None,
            });
        }
    }
    if let Some(text) = q
        .text()
        .filter(|_| q.mode != Mode::Semantic || query_vector.is_none())
    {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH q AS (SELECT to_tsquery('simple', string_agg(lexeme, ' | ')) AS q FROM unnest(to_tsvector('simple', $8)))
                 SELECT {COLS}, ts_rank(to_tsvector('simple', content), q.q)::real
                 FROM memories, q WHERE {SCOPE} AND to_tsvector('simple', content) @@ q.q
                 ORDER BY 13 DESC, id LIMIT $9"
            )
        });
        let rows = bind(&SQL)
            .bind(text)
            .bind(depth)
            .fetch_all(&mut *tx)
            .await?;
        for (rank, row) in rows.iter().enumerate() {
            let m = crate::store::memories::from_row(row)?;
            let score: f32 = sqlx::Row::try_get(row, 12)?;
            add_keyword(&mut cands, &mut at, m, Some((rank, score)));
        }
    }
    if query_vector.is_none() && q.text().is_none() {
        // no query: the filtered memories, newest first, ranked below
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {COLS} FROM memories WHERE {SCOPE} ORDER BY updated_at DESC, id LIMIT $8"
            )
        });
        for row in bind(&SQL).bind(depth).fetch_all(&mut *tx).await? {
            cands.push(Candidate {
                memory: crate::store::memories::from_row(&row)?,
                semantic: None,
                keyword: None,
                vector: None,
            });
        }
    }
    tx.commit().await?;
    let (memories, tokens_used) = rank(q, cands, now, count_tokens);
    Ok(Retrieval {
        memories,
        tokens_used,
        source: "postgres",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use tantivy::query::ConstScoreQuery;
    use tantivy::schema::{STRING, Schema, TEXT};
    use tantivy::{Index, IndexWriter, doc};

    /// Memories by id come from their live version, in whatever segment
    /// it is (an updated memory's old version is deleted, not gone).
    #[test]
    fn docs_by_id_reads_the_live_version_in_any_segment() {
        let s = schema::index::IndexSchema::new();
        let index = Index::create_in_ram(s.schema.clone());
        schema::analysis::register(&index);
        let mut w: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let tenant = Uuid::new_v4();
        let memory = |id: Uuid, content: &str| schema::memory::Memory {
            id,
            agent_id: "bot".into(),
            subject_id: None,
            session_id: None,
            kind: schema::memory::MemoryKind::Fact,
            content: content.into(),
            importance: 0.5,
            has_embedding: false,
            metadata: serde_json::json!({}),
            expires_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let ids: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            w.add_document(s.memory_doc(tenant, &memory(*id, &format!("first {i}")), 1))
                .unwrap();
            if i % 10 == 9 {
                w.commit().unwrap();
            }
        }
        // every third one updated: its old version deleted, the new one in
        // a later segment
        for (i, id) in ids.iter().enumerate().step_by(3) {
            w.delete_term(Term::from_field_text(s.fields.id, &id.to_string()));
            w.add_document(s.memory_doc(tenant, &memory(*id, &format!("second {i}")), 2))
                .unwrap();
        }
        // and one deleted for good
        w.delete_term(Term::from_field_text(s.fields.id, &ids[1].to_string()));
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert!(searcher.segment_readers().len() > 1);
        let mut asked = ids[..20].to_vec();
        asked.push(Uuid::new_v4()); // not there
        let got = docs_by_id(&searcher, &s.fields, &asked).unwrap();
        assert_eq!(got.len(), 19);
        assert!(!got.contains_key(&ids[1]), "a deleted memory");
        for (i, id) in ids[..20].iter().enumerate().filter(|(i, _)| *i != 1) {
            let want = if i % 3 == 0 { "second" } else { "first" };
            assert_eq!(got[id].content, format!("{want} {i}"));
        }
    }

    /// The filtered walk answers what the same words under required filter
    /// clauses answer, across segments and deletes.
    #[test]
    fn filtered_top_by_score_equals_the_boolean_query() {
        let mut schema = Schema::builder();
        let body = schema.add_text_field("body", TEXT);
        let group = schema.add_text_field("group", STRING);
        let index = Index::create_in_ram(schema.build());
        let mut w: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let words = [
            "contact", "note", "renewal", "pricing", "call", "churn", "demo",
        ];
        for segment in 0..3 {
            for i in 0..3_000 {
                let n = rng.random_range(1..12);
                let text: Vec<&str> = (0..n)
                    .map(|_| words[rng.random_range(0..words.len())])
                    .collect();
                let g = ["a", "b", "c"][(i + segment) % 3];
                w.add_document(doc!(body => text.join(" "), group => g))
                    .unwrap();
            }
            w.commit().unwrap();
        }
        w.delete_term(Term::from_field_text(body, "demo"));
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert!(searcher.segment_readers().len() > 1);
        let filter = || -> Box<dyn Query> {
            Box::new(BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(group, "b"),
                        IndexRecordOption::Basic,
                    )),
                ),
                (
                    Occur::MustNot,
                    Box::new(TermQuery::new(
                        Term::from_field_text(body, "churn"),
                        IndexRecordOption::Basic,
                    )),
                ),
            ]))
        };
        let union = |ws: &[&str]| {
            BooleanQuery::union(
                ws.iter()
                    .map(|t| {
                        Box::new(TermQuery::new(
                            Term::from_field_text(body, t),
                            IndexRecordOption::WithFreqs,
                        )) as Box<dyn Query>
                    })
                    .collect(),
            )
        };
        for (ws, limit) in [
            (&["contact", "pricing"][..], 10),
            (&["renewal"][..], 50),
            (&["note", "call", "contact"][..], 500),
            (&["nowhere"][..], 10),
        ] {
            let got = top_by_score(&searcher, &union(ws), &*filter(), limit).unwrap();
            let want = searcher
                .search(
                    &BooleanQuery::new(vec![
                        (
                            Occur::Must,
                            Box::new(ConstScoreQuery::new(filter(), 0.0)) as Box<dyn Query>,
                        ),
                        (Occur::Must, Box::new(union(ws))),
                    ]),
                    &TopDocs::with_limit(limit).order_by_score(),
                )
                .unwrap();
            assert_eq!(got.len(), want.len(), "{ws:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g.0 - w.0).abs() < 1e-4, "{ws:?}: {g:?} against {w:?}");
            }
            // the same documents (ties may order either way)
            let mut g: Vec<_> = got.iter().map(|h| h.1).collect();
            let mut w: Vec<_> = want.iter().map(|h| h.1).collect();
            if let (Some(last_g), Some(last_w)) = (got.last(), want.last())
                && (last_g.0 - last_w.0).abs() < 1e-6
            {
                // the last score's ties may be cut at a different document
                let cut = last_g.0;
                g.retain(|a| got.iter().any(|h| h.1 == *a && h.0 > cut + 1e-6));
                w.retain(|a| want.iter().any(|h| h.1 == *a && h.0 > cut + 1e-6));
            }
            g.sort();
            w.sort();
            assert_eq!(g, w, "{ws:?}");
        }
    }
}
