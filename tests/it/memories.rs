//! Agent memories against the real model, a real Postgres with pgvector and
//! the CDC-fed index: embeddings equal to the reference, writes with dedup,
//! retrieval by meaning, keyword and both, filters and isolation, deletes
//! and expiry, token budgets, strong reads answered from Postgres, contact
//! context, restarts that load the vector dump, and the paraphrase set.

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use crmsearch::embed::{self, Embedder};
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error, test_config};

fn model() -> std::sync::Arc<Embedder> {
    embed::shared(None).expect("the model: run scripts/setup")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The int8 model against an independent fp64 implementation of the fp32
/// model (`fixtures/embeddings/reference.py`): the bar is 0.99.
#[test]
fn embeddings_match_the_reference_implementation() {
    let e = model();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/embeddings/reference.json"
    ))
    .unwrap();
    let reference: Vec<Value> = serde_json::from_str(&text).unwrap();
    let texts: Vec<&str> = reference
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    // in one embed_many (batched by length) and one by one
    let batch = e.embed_many(&texts).unwrap();
    let padded = e.embed_batch(&texts).unwrap();
    for ((r, got), padded) in reference.iter().zip(&batch).zip(&padded) {
        let want: Vec<f32> = r["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), 384);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        let single = e.embed_query(r["text"].as_str().unwrap()).unwrap();
        for (how, v) in [
            ("embed_many", &got[..]),
            ("alone", &single[..]),
            ("padded to 256", &padded[..]),
        ] {
            let c = cosine(v, &want);
            assert!(
                c >= 0.99,
                "{:?} {how}: cosine {c} to the reference",
                r["text"]
            );
        }
        // activations are quantised per batch: neighbours move a vector a little
        assert!(
            cosine(&single, got) >= 0.99,
            "a batch must not change an embedding much"
        );
    }
    assert!(e.count_tokens("Anna prefers email") >= 3);
    assert!(e.count_tokens(texts[6]) > 256, "counting does not truncate");
}

#[test]
fn a_broken_model_file_is_an_error_that_says_what_to_do() {
    let dir = std::env::temp_dir().join(format!("crmsearch-bad-model-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        model().dir.join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.join("model.onnx"), b"not a model").unwrap();
    let err = format!(
        "{:#}",
        Embedder::load(&dir)
            .err()
            .expect("a broken model must not load")
    );
    assert!(
        err.contains("model.onnx") && err.contains("scripts/setup"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn remember(t: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    t.call(Method::POST, "/v1/memories", Some(key), Some(body))
        .await
}

async fn recall(t: &TestApp, key: &str, body: Value) -> Value {
    let (status, v) = t
        .call(
            Method::POST,
            "/v1/memories/search",
            Some(key),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}: {v}");
    v
}

fn contents(v: &Value) -> Vec<String> {
    v["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn write_dedup_search_isolate_delete_expire() {
    let t = TestApp::with_indexer().await;
    let key = t.a.key(Role::Agent).to_owned();
    let facts = [
        (
            "Anna prefers email over phone calls, never before 10am.",
            "preference",
            0.9,
        ),
        (
            "Anna's company renews its contract every June.",
            "fact",
            0.5,
        ),
        (
            "Met Anna at the Stockholm fintech fair; she liked the demo.",
            "episode",
            0.4,
        ),
        (
            "Anna has two kids and coaches football on Saturdays.",
            "fact",
            0.2,
        ),
        (
            "Budget for the pilot is 40k EUR, the CFO decides.",
            "fact",
            0.7,
        ),
    ];
    let mut ids = Vec::new();
    for (content, kind, importance) in facts {
        let (s, v) = remember(&t, &key, json!({"agent_id": "sales-bot", "subject_id": "anna", "kind": kind, "content": content, "importance": importance, "metadata": {"source": "call"}})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert!(v["deduplicated_into"].is_null());
        assert_eq!(v["has_embedding"], true);
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // a near-duplicate of the same agent and subject updates the first
    let (s, v) = remember(&t, &key, json!({"agent_id": "sales-bot", "subject_id": "anna", "kind": "preference", "content": "Anna prefers email over phone calls, never before 10 am.", "importance": 0.3, "metadata": {"channel": "email"}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deduplicated_into"], ids[0].as_str());
    assert_eq!(v["id"], ids[0].as_str());
    assert!(
        (v["importance"].as_f64().unwrap() - 0.9).abs() < 1e-6,
        "the higher importance is kept"
    );
    assert_eq!(v["metadata"], json!({"source": "call", "channel": "email"}));
    // the same text for another agent, another subject, another tenant: new memories
    for (k, agent, subject) in [(&key, "support-bot", "anna"), (&key, "sales-bot", "bob")] {
        let (s, v) = remember(&t, k, json!({"agent_id": agent, "subject_id": subject, "kind": "preference", "content": facts[0].0})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, _) = remember(&t, t.b.key(Role::Agent), json!({"agent_id": "sales-bot", "subject_id": "anna", "kind": "preference", "content": "Tenant B secret: Anna prefers carrier pigeons."})).await;
    assert_eq!(s, StatusCode::CREATED);
    // already expired, and one to delete
    let (_, expired) = remember(&t, &key, json!({"agent_id": "sales-bot", "subject_id": "anna", "kind": "fact", "content": "Anna is on holiday and prefers no contact this week.", "expires_at": "2020-01-01T00:00:00Z"})).await;
    let (_, doomed) = remember(&t, &key, json!({"agent_id": "sales-bot", "subject_id": "anna", "kind": "fact", "content": "Anna prefers phone calls on Fridays."})).await;
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/v1/memories/{}", doomed["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.caught_up().await;

    let base = json!({"query": "how does Anna like to be contacted", "agent_id": "sales-bot", "subject_id": "anna", "top_k": 10});
    // a text with nothing searchable in it finds nothing by keyword
    for text in ["🙂 !!", "\u{200b}", &"x".repeat(80)] {
        let v = recall(&t, &key, json!({"query": text, "mode": "keyword"})).await;
        assert_eq!(v["memories"], json!([]), "{text:?}: {v}");
    }
    for mode in ["hybrid", "semantic", "keyword"] {
        let mut q = base.clone();
        q["mode"] = json!(mode);
        let v = recall(&t, &key, q).await;
        let got = contents(&v);
        assert_eq!(v["source"], "index");
        if mode != "keyword" {
            assert_eq!(
                got[0], "Anna prefers email over phone calls, never before 10 am.",
                "{mode}: {got:?}"
            );
        }
        assert!(
            !got.iter()
                .any(|c| c.contains("Tenant B") || c.contains("holiday") || c.contains("Fridays")),
            "{mode}: {got:?}"
        );
        for m in v["memories"].as_array().unwrap() {
            assert_eq!(m["agent_id"], "sales-bot");
            assert_eq!(m["subject_id"], "anna");
            let s = &m["scores"];
            assert!(
                s["recency"].as_f64().unwrap() > 0.9
                    && s["importance"].is_number()
                    && s["relevance"].is_number(),
                "{m}"
            );
        }
        if mode == "hybrid" {
            assert!(v["memories"][0]["scores"]["semantic"].is_number());
        }
    }
    // filters: kinds, another agent, a subject nobody wrote about
    let v = recall(
        &t,
        &key,
        json!({"query": "Anna", "agent_id": "sales-bot", "kinds": ["episode"]}),
    )
    .await;
    assert_eq!(contents(&v), vec![facts[2].0.to_owned()]);
    let v = recall(
        &t,
        &key,
        json!({"query": "contact preferences", "agent_id": "support-bot"}),
    )
    .await;
    assert_eq!(contents(&v), vec![facts[0].0.to_owned()]);
    let v = recall(&t, &key, json!({"query": "Anna", "agent_id": "nobody"})).await;
    assert!(contents(&v).is_empty());
    // a token budget packs by score and never overflows
    let v = recall(
        &t,
        &key,
        json!({"query": "Anna", "agent_id": "sales-bot", "subject_id": "anna", "token_budget": 30}),
    )
    .await;
    let used = v["tokens_used"].as_u64().unwrap();
    let sum: u64 = v["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["tokens"].as_u64().unwrap())
        .sum();
    assert!(used <= 30 && used == sum && sum > 0, "{v}");
    // MMR keeps near-identical memories apart: the support-bot copy differs only by agent
    let v = recall(
        &t,
        &key,
        json!({"query": "email preferences", "diversity": 0.7, "top_k": 3}),
    )
    .await;
    let got = contents(&v);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().filter(|c| c.contains("prefers email")).count() < 3,
        "{got:?}"
    );
    // a strong read the index cannot serve in time is answered by Postgres
    let mut q = base.clone();
    q["min_lsn"] = json!("FFFFFFFF/0");
    q["wait_ms"] = json!(20);
    let v = recall(&t, &key, q).await;
    assert_eq!(v["source"], "postgres");
    assert_eq!(
        contents(&v)[0],
        "Anna prefers email over phone calls, never before 10 am."
    );
    assert!(
        !contents(&v)
            .iter()
            .any(|c| c.contains("holiday") || c.contains("Fridays"))
    );
    let mut q = base.clone();
    q["min_lsn"] = json!(doomed["lsn"]);
    assert_eq!(recall(&t, &key, q).await["source"], "index");
    // bad input: a clear 422, never a 5xx
    for bad in [
        json!({"query": "x", "top_k": 0}),
        json!({"query": "x", "top_k": 1000}),
        json!({"query": "x", "diversity": 2}),
        json!({"embedding": [1.0, 2.0]}),
        json!({"embedding": vec![0.0; 384]}),
        json!({"mode": "keyword"}),
        json!({"query": "x", "min_lsn": "yesterday"}),
    ] {
        let got = t
            .call(
                Method::POST,
                "/v1/memories/search",
                Some(&key),
                Some(bad.clone()),
            )
            .await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    }
    let got = remember(
        &t,
        &key,
        json!({"agent_id": "a", "kind": "fact", "content": "x", "embedding": vec![0.0; 384]}),
    )
    .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let _ = expired;

    // a key bound to one agent sees and writes only that agent's memories
    let (s, k) = t
        .call(
            Method::POST,
            "/v1/keys",
            Some(t.a.key(Role::Admin)),
            Some(json!({"role": "agent", "agent_id": "sales-bot"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let bound = k["key"].as_str().unwrap().to_owned();
    let v = recall(
        &t,
        &bound,
        json!({"query": "email preferences", "top_k": 20}),
    )
    .await;
    let agents: std::collections::BTreeSet<&str> = v["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        agents.into_iter().collect::<Vec<_>>(),
        vec!["sales-bot"],
        "{v}"
    );
    let got = t
        .call(
            Method::POST,
            "/v1/memories/search",
            Some(&bound),
            Some(json!({"query": "x", "agent_id": "support-bot"})),
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let got = remember(
        &t,
        &bound,
        json!({"agent_id": "support-bot", "kind": "fact", "content": "x"}),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let other: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM memories WHERE agent_id = 'support-bot'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    for method in [Method::GET, Method::DELETE] {
        let got = t
            .call(method, &format!("/v1/memories/{other}"), Some(&bound), None)
            .await;
        assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    }
    t.stop().await;
}

#[tokio::test]
async fn contact_context_packs_the_card_and_memories() {
    let t = TestApp::with_indexer().await;
    let (s, c) = t
        .call(Method::POST, "/v1/contacts", Some(t.a.key(Role::Write)), Some(json!({"first_name": "Anna", "last_name": "Svensson", "emails": ["anna@nordicvc.se"], "title": "CFO", "city": "Stockholm"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let key = t.a.key(Role::Agent).to_owned();
    for (content, importance) in [
        ("Prefers email, never calls before 10am.", 0.9),
        ("Asked for a one-page summary instead of slides.", 0.6),
        ("Mentioned a trip to Japan in spring.", 0.1),
    ] {
        let (s, v) = remember(&t, &key, json!({"agent_id": "sales-bot", "subject_id": id, "kind": "fact", "content": content, "importance": importance})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    t.caught_up().await;
    let (s, v) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{id}/context?agent_id=sales-bot&token_budget=400"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["contact"]["first_name"], "Anna");
    assert_eq!(v["memories"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["memories"][0]["content"], "Prefers email, never calls before 10am.",
        "importance orders memories without a query"
    );
    let prompt = v["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("Contact: Anna Svensson")
            && prompt.contains("Title: CFO")
            && prompt.contains("one-page summary"),
        "{prompt}"
    );
    assert!(v["tokens_used"].as_u64().unwrap() <= 400);
    // a budget that fits the card only
    let (_, v) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{id}/context?agent_id=sales-bot&token_budget=60"),
            Some(&key),
            None,
        )
        .await;
    assert!(v["tokens_used"].as_u64().unwrap() <= 60, "{v}");
    assert!(v["memories"].as_array().unwrap().len() < 3);
    // another tenant's key sees no such contact
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{id}/context"),
            Some(t.b.key(Role::Agent)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let got = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{id}/context?token_budget=0"),
            Some(&key),
            None,
        )
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    t.stop().await;
}

#[tokio::test]
async fn without_a_model_writes_need_an_embedding_and_keywords_still_work() {
    let mut cfg = test_config();
    let empty = std::env::temp_dir().join(format!("crmsearch-no-model-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&empty).unwrap();
    cfg.model_dir = Some(empty);
    let t = TestApp::with_config(cfg).await;
    let key = t.a.key(Role::Agent);
    let got = remember(
        &t,
        key,
        json!({"agent_id": "a", "kind": "fact", "content": "no vector"}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "embedding_model_missing",
    );
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scripts/setup")
    );
    let mut v = vec![0.0f32; 384];
    v[0] = 1.0;
    let (s, _) = remember(
        &t,
        key,
        json!({"agent_id": "a", "kind": "fact", "content": "with a vector", "embedding": v}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn a_restart_loads_the_vector_dump_and_applies_what_changed() {
    let mut t = TestApp::with_indexer().await;
    let tenant = t.a.id;
    let vector = |i: usize| {
        let mut v = vec![0.01f32; 384];
        v[i % 384] = 1.0;
        pgvector::Vector::from(v)
    };
    for i in 0..40 {
        sqlx::query("INSERT INTO memories (tenant_id, agent_id, kind, content, embedding) VALUES ($1, 'bot', 'fact', $2, $3)")
            .bind(tenant)
            .bind(format!("memory {i}"))
            .bind(vector(i))
            .execute(&t.pool)
            .await
            .unwrap();
    }
    t.caught_up().await;
    let ix = t.indexer.take().unwrap();
    ix.shutdown().await; // dumps the collections
    drop(ix);
    // while down: one new, one deleted
    sqlx::query("INSERT INTO memories (tenant_id, agent_id, kind, content, embedding) VALUES ($1, 'bot', 'fact', 'memory new', $2)")
        .bind(tenant)
        .bind(vector(200))
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM memories WHERE content = 'memory 3'")
        .execute(&t.pool)
        .await
        .unwrap();
    let icfg = t.index_cfg.clone().unwrap();
    let mut cfg = test_config();
    cfg.node = icfg.node.clone();
    t.start_indexer(icfg, cfg).await;
    let loaded = t.ix().vectors_loaded.expect("resumed");
    assert!(loaded.dump.is_some(), "the dump was loaded");
    assert_eq!(
        (loaded.reread, loaded.dropped),
        (0, 0),
        "the text index was at the dump's position: {loaded:?}"
    );
    t.caught_up().await;
    let stats = t.ix().store.vectors().stats();
    assert_eq!(stats[&tenant].points, 40, "40 + 1 new − 1 deleted");
    let mut q = vec![0.01f32; 384];
    q[200] = 1.0;
    let v = recall(
        &t,
        t.a.key(Role::Agent),
        json!({"embedding": q, "mode": "semantic", "top_k": 1}),
    )
    .await;
    assert_eq!(contents(&v), vec!["memory new"]);
    let mut q = vec![0.01f32; 384];
    q[3] = 1.0;
    let v = recall(
        &t,
        t.a.key(Role::Agent),
        json!({"embedding": q, "mode": "semantic", "top_k": 40}),
    )
    .await;
    assert!(!contents(&v).contains(&"memory 3".to_owned()));
    assert_eq!(contents(&v).len(), 40);
    t.stop().await;
}

#[tokio::test]
async fn paraphrases_are_found_by_meaning() {
    let t = TestApp::with_indexer().await;
    let key = t.a.key(Role::Agent).to_owned();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/memories/paraphrases.json"
    ))
    .unwrap();
    let set: Value = serde_json::from_str(&text).unwrap();
    let pairs = set["pairs"].as_array().unwrap();
    for p in pairs {
        let (s, v) = remember(&t, &key, json!({"agent_id": "bot", "subject_id": format!("s{}", p["id"]), "kind": "fact", "content": p["memory"]})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    t.caught_up().await;
    let mut hits = [0usize; 3];
    for p in pairs {
        for (i, mode) in ["hybrid", "semantic", "keyword"].iter().enumerate() {
            let v = recall(&t, &key, json!({"query": p["question"], "agent_id": "bot", "mode": mode, "top_k": 3, "weights": {"recency": 0, "importance": 0}})).await;
            if contents(&v)
                .iter()
                .any(|c| c == p["memory"].as_str().unwrap())
            {
                hits[i] += 1;
            }
        }
    }
    let n = pairs.len() as f64;
    let [hybrid, semantic, keyword] = hits.map(|h| h as f64 / n);
    println!(
        "paraphrase hit@3 over {n} questions: hybrid {hybrid:.3}, semantic {semantic:.3}, keyword {keyword:.3}"
    );
    assert!(semantic >= 0.8, "semantic hit@3 {semantic}");
    assert!(hybrid >= 0.8, "hybrid hit@3 {hybrid}");
    assert!(
        semantic > keyword,
        "meaning must beat shared words on paraphrases"
    );
    t.stop().await;
}

#[tokio::test]
async fn bulk_writes_embed_in_batches_and_report_bad_items() {
    let t = TestApp::new().await;
    let key = t.a.key(Role::Agent);
    let body = json!({"memories": [
        {"agent_id": "bot", "subject_id": "x", "kind": "fact", "content": "The client prefers invoices by post."},
        {"agent_id": "bot", "subject_id": "x", "kind": "opinion", "content": "bad kind"},
        {"agent_id": "bot", "subject_id": "x", "kind": "fact", "content": "The client prefers invoices by post!"},
        {"agent_id": "bot", "subject_id": "y", "kind": "episode", "content": "Lunch in Lisbon went well."},
    ]});
    let (s, v) = t
        .call(Method::POST, "/v1/memories/bulk", Some(key), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["written"], 3);
    assert_eq!(v["failed"][0]["index"], 1);
    assert!(
        v["failed"][0]["error"].as_str().unwrap().contains("kind"),
        "{v}"
    );
    let first = v["results"][0]["id"].clone();
    assert_eq!(v["results"][1]["index"], 2);
    assert_eq!(
        v["results"][1]["deduplicated_into"], first,
        "a near-duplicate within the batch merges"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM memories WHERE embedding IS NOT NULL")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let got = t
        .call(
            Method::POST,
            "/v1/memories/bulk",
            Some(key),
            Some(json!({"memories": []})),
        )
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
}
