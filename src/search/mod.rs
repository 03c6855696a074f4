//! Query building and ranking over the index. No HTTP here.
//!
//! For now: exact-term contact search (every word must match some field)
//! and the empty-query listing, with exact totals and offset/limit windows.
//! Typo tolerance, prefixes, facets and highlights come with the search
//! issue.

use indexer::IndexStore;
use schema::index::{CONTACT_TEXT_FIELDS, DocType};
use serde::Serialize;
use tantivy::collector::sort_key::{SortByStaticFastValue, SortByString};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};
use uuid::Uuid;

/// Longest `q` considered (characters); the rest is ignored.
pub const MAX_QUERY_CHARS: usize = 512;
/// Most words of `q` considered.
pub const MAX_QUERY_WORDS: usize = 16;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone)]
pub struct ContactSearch {
    pub q: String,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub contact: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    pub total: usize,
}

/// The words of `q` as the index analysed them.
pub fn query_terms(store: &IndexStore, q: &str) -> Vec<String> {
    let q: String = q.chars().take(MAX_QUERY_CHARS).collect();
    let Some(mut analyzer) = store.index.tokenizers().get("default") else {
        return Vec::new();
    };
    let mut stream = analyzer.token_stream(&q);
    let mut words = Vec::new();
    while let Some(t) = stream.next() {
        if words.len() == MAX_QUERY_WORDS {
            break;
        }
        if !words.contains(&t.text) {
            words.push(t.text.clone());
        }
    }
    words
}

fn term(field: tantivy::schema::Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::WithFreqs,
    ))
}

/// Everything of this tenant and type.
fn scope(store: &IndexStore, tenant: Uuid, t: DocType) -> Vec<(Occur, Box<dyn Query>)> {
    let f = &store.schema.fields;
    let filter = |field, text: &str| -> (Occur, Box<dyn Query>) {
        let q = TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic);
        (
            Occur::Must,
            Box::new(ConstScoreQuery::new(Box::new(q), 0.0)),
        )
    };
    vec![
        filter(f.tenant_id, &tenant.to_string()),
        filter(f.doc_type, t.as_str()),
    ]
}

pub fn search_contacts(
    store: &IndexStore,
    tenant: Uuid,
    req: &ContactSearch,
) -> anyhow::Result<SearchResult> {
    let searcher = store.reader.searcher();
    let words = query_terms(store, &req.q);
    let mut clauses = scope(store, tenant, DocType::Contact);
    let schema = &store.index.schema();
    for w in &words {
        let per_field: Vec<Box<dyn Query>> = CONTACT_TEXT_FIELDS
            .iter()
            .filter_map(|name| schema.get_field(name).ok())
            .map(|field| term(field, w))
            .collect();
        clauses.push((Occur::Must, Box::new(BooleanQuery::union(per_field))));
    }
    if words.is_empty() {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    let query = BooleanQuery::new(clauses);
    let limit = req.limit.min(MAX_LIMIT);
    let total = searcher.search(&query, &Count)?;
    if limit == 0 || req.offset >= total {
        return Ok(SearchResult {
            hits: Vec::new(),
            total,
        });
    }
    let top = TopDocs::with_limit(limit).and_offset(req.offset);
    let docs: Vec<(f32, DocAddress)> = if words.is_empty() {
        // newest first; ties by id, so windows never overlap or skip
        let by_date = top.order_by((
            (
                SortByStaticFastValue::<tantivy::DateTime>::for_field("updated_at"),
                Order::Desc,
            ),
            (SortByString::for_field("id"), Order::Asc),
        ));
        searcher
            .search(&query, &by_date)?
            .into_iter()
            .map(|(_, d)| (0.0, d))
            .collect()
    } else {
        searcher.search(&query, &top.order_by_score())?
    };
    let hits = docs
        .into_iter()
        .map(|(score, addr)| hit(store, &searcher, score, addr))
        .collect::<anyhow::Result<_>>()?;
    Ok(SearchResult { hits, total })
}

fn hit(
    store: &IndexStore,
    searcher: &Searcher,
    score: f32,
    addr: DocAddress,
) -> anyhow::Result<Hit> {
    let doc: TantivyDocument = searcher.doc(addr)?;
    let f = &store.schema.fields;
    let id = doc
        .get_first(f.id)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let source = doc
        .get_first(f.source)
        .and_then(|v| v.as_str())
        .unwrap_or("{}");
    Ok(Hit {
        id,
        score,
        contact: serde_json::from_str(source)?,
    })
}
