//! Memory writes and retrieval: `/v1/memories`, `/v1/memories/{id}`,
//! `/v1/memories/search`, and `/v1/contacts/{id}/context`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use indexer::Lsn;
use schema::{Memory, MemoryFields};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::AgentKey;
use super::extract::{Id, Json};
use crate::auth::Principal;
use crate::embed::Embedder;
use crate::error::{Code, Error, Result};
use crate::retrieve::{self, MemoryQuery, Retrieval};
use crate::store::{self, memories};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(search))
        .routes(routes!(read, remove))
        .routes(routes!(context))
}

/// A written memory: the memory, the commit position, and the memory it
/// was merged into when it was a near-duplicate of one (then 200, not 201).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct WrittenMemory {
    #[schema(inline)]
    #[serde(flatten)]
    memory: Memory,
    lsn: String,
    deduplicated_into: Option<Uuid>,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct BulkMemoriesAnswer {
    written: usize,
    /// `{"index", "id", "deduplicated_into"}` per memory written.
    #[schema(value_type = Vec<Object>)]
    results: Vec<Value>,
    /// `{"index", "error"}` per memory refused.
    #[schema(value_type = Vec<Object>)]
    failed: Vec<Value>,
    lsn: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct MemorySearchAnswer {
    memories: Vec<retrieve::Retrieved>,
    tokens_used: usize,
    /// `index`, or `postgres` (a strong read the index could not serve yet).
    source: String,
    took_ms: f64,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct ContextAnswer {
    contact: schema::Contact,
    company: Option<schema::Company>,
    memories: Vec<retrieve::Retrieved>,
    tokens_used: usize,
    /// The card and the memories as one block for an LLM prompt.
    prompt: String,
    took_ms: f64,
}

/// The agent a request acts for: the key's own when it is bound to one
/// (asking for another is 403), else the one asked for.
fn agent_scope(p: &Principal, asked: Option<String>) -> Result<Option<String>> {
    match (&p.agent_id, asked) {
        (None, asked) => Ok(asked),
        (Some(own), None) => Ok(Some(own.clone())),
        (Some(own), Some(asked)) if *own == asked => Ok(Some(asked)),
        (Some(own), Some(asked)) => Err(Error::user(
            Code::Forbidden,
            format!(
                "this key belongs to the agent `{own}`; it cannot use the memories of `{asked}`"
            ),
        )),
    }
}

/// A memory the key may see: another agent's is "not found" to a bound key.
fn visible(p: &Principal, m: &Memory) -> Result<()> {
    match &p.agent_id {
        Some(own) if *own != m.agent_id => {
            Err(Error::user(Code::NotFound, "no memory with this id"))
        }
        _ => Ok(()),
    }
}

/// The bulk route, with the larger body limit of bulk requests.
pub fn bulk_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bulk))
}

/// Runs the model off the async workers; the same text asked at once is
/// embedded once.
async fn embed(st: &AppState, embedder: &Arc<Embedder>, text: String) -> Result<Arc<[f32]>> {
    let e = embedder.clone();
    let key = text.clone();
    let work = move || async move {
        super::cpu::run(move || e.embed_query(&text))
            .await
            .map_err(|e| Arc::new(Error::Internal(e.into())))?
            .map_err(|e| Arc::new(Error::Internal(e)))
    };
    st.embeddings
        .run(key, work)
        .await
        .map_err(|e| Error::shared(&e))
}

/// Writes a memory; without `embedding` the built-in model embeds
/// `content`. A near-duplicate of the same agent and subject updates that
/// memory instead (200 and `deduplicated_into`).
#[utoipa::path(post, path = "/v1/memories", tag = "memories", request_body = MemoryFields,
    responses(
        (status = 201, description = "written", body = WrittenMemory,
            headers(("Location" = String, description = "the memory's path"))),
        (status = 200, description = "merged into a near-duplicate", body = WrittenMemory)))]
async fn create(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Json(fields): Json<MemoryFields>,
) -> Result<impl IntoResponse> {
    agent_scope(&p, Some(fields.agent_id.clone()))?;
    let m = fields.validate()?;
    // stored as sent (cosine does not care about length); the index scales it
    let vector = match &m.embedding {
        Some(v) if indexer::vectors::normalize(v.clone()).is_none() => {
            return Err(Error::user(
                Code::InvalidValue,
                "embedding: must not be all zeros; send a real vector or leave it out to embed `content`",
            ));
        }
        Some(v) => v.clone(),
        None => embed(&st, st.embedder()?, m.content.clone())
            .await?
            .to_vec(),
    };
    let created =
        memories::create(st.db()?, p.tenant_id, m, vector, st.cfg.dedup_threshold).await?;
    let status = if created.deduplicated_into.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = serde_json::to_value(&created.record).map_err(|e| Error::Internal(e.into()))?;
    body["lsn"] = json!(created.lsn);
    body["deduplicated_into"] = json!(created.deduplicated_into);
    if status == StatusCode::CREATED {
        return Ok(super::created(
            format!("/v1/memories/{}", created.record.id),
            body,
        ));
    }
    Ok((status, axum::Json(body)).into_response())
}

/// Most memories in one bulk request.
pub const MAX_BULK: usize = 1_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkMemories {
    /// 1 to 1,000 memories, each as `POST /v1/memories` takes it.
    #[schema(value_type = Vec<MemoryFields>, min_items = 1, max_items = 1000)]
    memories: Vec<Value>,
}

/// Many memories at once: each validated on its own (a bad one is reported
/// with its index, the rest are written), the missing embeddings computed
/// in batches on the rayon pool, then written one by one with dedup.
#[utoipa::path(post, path = "/v1/memories/bulk", tag = "memories", request_body = BulkMemories,
    responses((status = 200, description = "what was written and what was refused", body = BulkMemoriesAnswer)))]
async fn bulk(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Json(b): Json<BulkMemories>,
) -> Result<axum::Json<Value>> {
    if b.memories.is_empty() || b.memories.len() > MAX_BULK {
        return Err(Error::user(
            Code::InvalidValue,
            format!(
                "memories: send between 1 and {MAX_BULK} memories, got {}",
                b.memories.len()
            ),
        ));
    }
    let mut failed = Vec::new();
    let mut valid = Vec::new();
    for (i, v) in b.memories.into_iter().enumerate() {
        let parsed = serde_path_to_error::deserialize::<_, MemoryFields>(v)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                f.validate()
                    .map_err(|e| format!("{}: {}", e.field, e.message))
            });
        match parsed {
            Ok(m)
                if m.embedding
                    .as_ref()
                    .is_some_and(|v| indexer::vectors::normalize(v.clone()).is_none()) =>
            {
                failed.push(json!({"index": i, "error": "embedding: must not be all zeros"}));
            }
            Ok(m) if agent_scope(&p, Some(m.agent_id.clone())).is_err() => {
                failed.push(
                    json!({"index": i, "error": "agent_id: this key belongs to another agent"}),
                );
            }
            Ok(m) => valid.push((i, m)),
            Err(e) => failed.push(json!({"index": i, "error": e})),
        }
    }
    let texts: Vec<String> = valid
        .iter()
        .filter(|(_, m)| m.embedding.is_none())
        .map(|(_, m)| m.content.clone())
        .collect();
    let mut computed = if texts.is_empty() {
        Vec::new()
    } else {
        let e = st.embedder()?.clone();
        super::cpu::run_bulk(move || {
            e.embed_many(&texts.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .map_err(|e| Error::Internal(e.into()))?
        .map_err(Error::Internal)?
    }
    .into_iter();
    let mut results = Vec::with_capacity(valid.len());
    let mut lsn = None;
    for (i, mut m) in valid {
        let vector = match m.embedding.take() {
            Some(v) => v,
            None => computed
                .next()
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("an embedding is missing")))?,
        };
        let c = memories::create(st.db()?, p.tenant_id, m, vector, st.cfg.dedup_threshold).await?;
        lsn = Some(c.lsn);
        results
            .push(json!({"index": i, "id": c.record.id, "deduplicated_into": c.deduplicated_into}));
    }
    Ok(axum::Json(json!({
        "written": results.len(),
        "results": results,
        "failed": failed,
        "lsn": lsn,
    })))
}

/// A memory (another agent's is not found to a key bound to one agent).
#[utoipa::path(get, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = Uuid, Path, description = "the memory's id")),
    responses((status = 200, description = "the memory", body = Memory)))]
async fn read(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Id(id): Id,
) -> Result<axum::Json<Memory>> {
    let m = memories::get(st.db()?, p.tenant_id, id).await?;
    visible(&p, &m)?;
    Ok(axum::Json(m))
}

/// Forgets a memory.
#[utoipa::path(delete, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = Uuid, Path, description = "the memory's id")),
    responses((status = 200, description = "deleted", body = super::openapi::Deleted)))]
async fn remove(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    if p.agent_id.is_some() {
        visible(&p, &memories::get(st.db()?, p.tenant_id, id).await?)?;
    }
    let lsn = memories::delete(st.db()?, p.tenant_id, id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true, "lsn": lsn})))
}

/// Retrieval as asked: the index when it has reached `min_lsn` (waiting up
/// to `wait_ms`), else Postgres.
async fn retrieve(st: &AppState, tenant: Uuid, q: &MemoryQuery) -> Result<Retrieval> {
    let given = q
        .check()
        .map_err(|e| Error::user(Code::InvalidValue, e.to_string()))?;
    let wait = super::search::max_wait(q.wait_ms)?;
    let query_vector: Option<Arc<[f32]>> = match (given, q.mode, q.query.as_deref().map(str::trim))
    {
        (Some(v), _, _) => Some(v.into()),
        (None, retrieve::Mode::Keyword, _) | (None, _, None | Some("")) => None,
        (None, _, Some(text)) => match &st.embedder {
            Some(e) => Some(embed(st, e, text.to_owned()).await?),
            // without a model, meaning cannot be searched: keywords still can
            None if q.mode == retrieve::Mode::Hybrid => None,
            None => {
                return Err(Error::user(
                    Code::EmbeddingModelMissing,
                    crate::embed::MODEL_MISSING,
                ));
            }
        },
    };
    let ix = st.indexer()?;
    let count = |t: &str| crate::embed::count_tokens(st.embedder.as_deref(), t);
    let behind = match q.min_lsn.as_deref() {
        Some(s) => {
            let lsn: Lsn = s.parse().map_err(|_| {
                Error::user(
                    Code::InvalidValue,
                    format!(
                        "min_lsn: `{s}` is not a position like 0/16B3748 (the `lsn` of a write)"
                    ),
                )
            })?;
            !ix.wait_for(lsn, wait).await
        }
        None => false,
    };
    if behind {
        metrics::counter!("crmsearch_memory_search_postgres_total").increment(1);
        return Ok(
            retrieve::from_postgres(st.db()?, tenant, q, query_vector.as_deref(), &count).await?,
        );
    }
    let (store, q2, e) = (ix.store.clone(), q.clone(), st.embedder.clone());
    super::cpu::run(move || {
        let count = |t: &str| crate::embed::count_tokens(e.as_deref(), t);
        retrieve::from_index(&store, tenant, &q2, query_vector.as_deref(), &count)
    })
    .await
    .map_err(|e| Error::Internal(e.into()))?
    .map_err(|e| Error::Internal(e.into()))
}

/// Memories by meaning, keyword or both, ranked with recency and
/// importance, diversified, packed into a token budget.
#[utoipa::path(post, path = "/v1/memories/search", tag = "memories", request_body = MemoryQuery,
    responses((status = 200, description = "the memories, best first", body = MemorySearchAnswer)))]
async fn search(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Json(mut q): Json<MemoryQuery>,
) -> Result<axum::Json<Value>> {
    let started = Instant::now();
    q.agent_id = agent_scope(&p, q.agent_id.take())?;
    let r = retrieve(&st, p.tenant_id, &q).await?;
    Ok(axum::Json(json!({
        "memories": r.memories,
        "tokens_used": r.tokens_used,
        "source": r.source,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ContextParams {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 100000)]
    token_budget: Option<usize>,
    #[serde(default)]
    top_k: Option<usize>,
}

/// The contact card, its company, and its most relevant memories (about
/// the contact: `subject_id` = its id), packed into the token budget with
/// the card counted first; as JSON and as a prompt block.
#[utoipa::path(get, path = "/v1/contacts/{id}/context", tag = "memories",
    params(("id" = Uuid, Path, description = "the contact's id"), ContextParams),
    responses((status = 200, description = "the card, its company and memories", body = ContextAnswer)))]
async fn context(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Id(id): Id,
    params: super::search::Params<ContextParams>,
) -> Result<axum::Json<Value>> {
    let mut params = super::search::params(params)?;
    params.agent_id = agent_scope(&p, params.agent_id.take())?;
    let started = Instant::now();
    let budget = params.token_budget.unwrap_or(1_500);
    if budget == 0 || budget > 100_000 {
        return Err(Error::user(
            Code::InvalidValue,
            "token_budget: must be between 1 and 100000",
        ));
    }
    let contact = store::contacts::get(st.db()?, p.tenant_id, id).await?;
    let company = match contact.company_id {
        Some(c) => store::companies::get(st.db()?, p.tenant_id, c).await.ok(),
        None => None,
    };
    let mut card = vec![format!(
        "Contact: {}",
        [contact.first_name.as_deref(), contact.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    )];
    let mut line = |label: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            card.push(format!("{label}: {v}"));
        }
    };
    line("Title", contact.title.clone());
    line(
        "Company",
        contact
            .company_name
            .clone()
            .or_else(|| company.as_ref().map(|c| c.name.clone())),
    );
    line("Emails", Some(contact.emails.join(", ")));
    line("Phones", Some(contact.phones.join(", ")));
    line(
        "Location",
        Some(
            [contact.city.as_deref(), contact.country.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
        ),
    );
    line("Lifecycle stage", contact.lifecycle_stage.clone());
    line("Tags", Some(contact.tags.join(", ")));
    if let Some(c) = &company {
        line("Company industry", c.industry.clone());
        line("Company domain", c.domain.clone());
    }
    let card = card.join("\n");
    let count = |t: &str| crate::embed::count_tokens(st.embedder.as_deref(), t);
    let card_tokens = count(&card) + 8;
    let mut prompt = format!("## Contact\n{card}\n");
    let mut memories = Vec::new();
    let mut tokens_used = card_tokens.min(budget);
    if budget > card_tokens + 8 {
        let q = MemoryQuery {
            query: params.q.clone(),
            agent_id: params.agent_id.clone(),
            subject_id: Some(id.to_string()),
            top_k: params.top_k.unwrap_or(20).clamp(1, retrieve::MAX_TOP_K),
            // each memory line carries a few tokens of framing
            token_budget: Some(budget - card_tokens - 8),
            ..MemoryQuery::default()
        };
        let r = retrieve(&st, p.tenant_id, &q).await?;
        if !r.memories.is_empty() {
            prompt.push_str("\n## What we remember (most relevant first)\n");
            for m in &r.memories {
                prompt.push_str(&format!(
                    "- [{}, {}] {}\n",
                    m.kind.as_str(),
                    m.created_at.format("%Y-%m-%d"),
                    m.content
                ));
            }
        }
        tokens_used += r.tokens_used;
        memories = r.memories;
    }
    Ok(axum::Json(json!({
        "contact": contact,
        "company": company,
        "memories": memories,
        "tokens_used": tokens_used,
        "prompt": prompt,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}
