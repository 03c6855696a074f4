//! Memory retrieval at scale against pgvector, same data, same run (release
//! build, embedded Postgres on the same 2 cores).
//!
//! `cargo bench --bench memories` (env: MEM_N=200000 memories of 384 dims in
//! one tenant, MEM_QUERIES=200). Vectors are clustered unit vectors
//! (seeded; computing real embeddings of MEM_N texts would take hours on
//! this CPU); query texts go through the real model. Writes
//! `target/bench-results/memories.json` (its section of BENCHMARKS.md).
//!
//! - ingest: rows committed into Postgres (multi-row INSERTs), through the
//!   CDC stream, applied to the index and searchable (the exact-scan tail
//!   serves new points at once); then the background hnsw_rs build.
//! - search: the engine call (`retrieve::from_index` / `VectorStore`),
//!   HTTP excluded; pgvector: the query's round trip.
//! - recall@10 against an exact scan of the same vectors.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::vecs::{CLUSTERS, DIM, clustered, truth, unit};
use common::{Results, env, pct, time, time_pg};
use crmsearch::db;
use crmsearch::retrieve::{self, MemoryQuery, Mode};
use indexer::Indexer;
use indexer::vectors::Filter;
use rand::SeedableRng;
use rand::rngs::StdRng;
use uuid::Uuid;

const TOPICS: &[&str] = &[
    "prefers email over phone calls",
    "asked for a discount on the annual plan",
    "renewal is due next quarter",
    "met at the trade fair and liked the demo",
    "the CFO signs off on budgets",
    "wants a one-page summary instead of slides",
    "is travelling to Japan in spring",
    "complained about slow support response times",
    "plays tennis on weekends",
    "moved the team to a new office",
];

fn recall(got: &[Vec<Uuid>], truth: &[Vec<usize>], ids: &[Uuid]) -> f64 {
    let mut found = 0;
    for (g, t) in got.iter().zip(truth) {
        let want: HashSet<Uuid> = t.iter().map(|i| ids[*i]).collect();
        found += g.iter().filter(|id| want.contains(id)).count();
    }
    found as f64 / (10 * truth.len()) as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let n = env("MEM_N", 200_000usize);
    let nq = env("MEM_QUERIES", 200usize);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-memories");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let (pg, url, pool) = common::database(&root.join("pg"), 4).await?;
    // the HNSW index is built after the load (as pgvector advises), below
    sqlx::query("DROP INDEX memories_embedding")
        .execute(&pool)
        .await?;
    let (tenant, _) = crmsearch::auth::create_tenant(&pool, "bench")
        .await
        .map_err(crmsearch::cli::anyhow_of)?;
    let cfg = common::indexer_config(&root, &url);
    let ix = Indexer::start(cfg, pool.clone()).await?;

    let mut rng = StdRng::seed_from_u64(42);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS).map(|_| unit(&mut rng)).collect();
    let vectors = clustered(&mut rng, &centres, n);
    // the bench's own copy of the vectors is not the index's memory
    let rss_before = common::rss_mib("self").0;
    let agents = ["sales-bot", "support-bot", "research-bot", "ops-bot"];
    println!("loading {n} memories");
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for (c, chunk) in vectors.chunks(2_000).enumerate() {
        let k = chunk.len();
        let base = c * 2_000;
        let agent: Vec<&str> = (0..k).map(|i| agents[(base + i) % agents.len()]).collect();
        let subject: Vec<String> = (0..k)
            .map(|i| format!("contact-{}", (base + i) % 20_000))
            .collect();
        let content: Vec<String> = (0..k)
            .map(|i| {
                format!(
                    "Contact {} {} (note {})",
                    (base + i) % 20_000,
                    TOPICS[(base + i) % TOPICS.len()],
                    base + i
                )
            })
            .collect();
        let importance: Vec<f32> = (0..k).map(|i| ((base + i) % 10) as f32 / 10.0).collect();
        let emb: Vec<pgvector::Vector> = chunk
            .iter()
            .map(|v| pgvector::Vector::from(v.clone()))
            .collect();
        let rows: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO memories (tenant_id, agent_id, subject_id, kind, content, importance, embedding,
                                   created_at, updated_at)
             SELECT $1, a, s, 'fact', c, i, e, now() - (random() * interval '700 days'), now()
               FROM unnest($2::text[], $3::text[], $4::text[], $5::real[], $6::vector[]) AS t(a, s, c, i, e)
             RETURNING id",
        )
        .bind(tenant)
        .bind(&agent)
        .bind(&subject)
        .bind(&content)
        .bind(&importance)
        .bind(&emb)
        .fetch_all(&pool)
        .await?;
        ids.extend(rows);
    }
    let pg_load = started.elapsed().as_secs_f64();
    ix.wait_for(db::write_position(&pool).await?, Duration::from_secs(3_600))
        .await;
    let searchable = started.elapsed().as_secs_f64();
    println!("{n} rows in Postgres after {pg_load:.1} s, searchable after {searchable:.1} s");
    let store = ix.store.clone();
    // the background build: wait until every point is in the graph
    let built_from = Instant::now();
    loop {
        let s = store.vectors().stats();
        // small collections are scanned exactly and get no graph
        if n < indexer::vectors::VectorConfig::default().exact_below
            || s.get(&tenant).is_some_and(|c| c.indexed >= n)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let build = built_from.elapsed().as_secs_f64() + 0.0;
    let rss_after = common::rss_mib("self").0;
    println!("hnsw_rs build finished {build:.1} s after the last row was searchable");

    // queries: near the data, and text through the model
    let queries = clustered(&mut rng, &centres, nq);
    let truth_all = truth(&vectors, &queries);
    let none = Filter {
        now_micros: chrono::Utc::now().timestamp_micros(),
        ..Filter::default()
    };
    let mut got = Vec::new();
    let ours = time(&queries, |q| {
        got.push(
            store
                .vectors()
                .search(tenant, q, 10, &none)
                .into_iter()
                .map(|h| h.id)
                .collect::<Vec<_>>(),
        );
    });
    let ours_recall = recall(&got, &truth_all, &ids);
    // the agent filter (a quarter of the points) through the same walk
    let by_agent = Filter {
        agent: Some("sales-bot".into()),
        ..none.clone()
    };
    let agent_ours = time(&queries, |q| {
        std::hint::black_box(store.vectors().search(tenant, q, 10, &by_agent));
    });
    let embedder = crmsearch::embed::shared(None).expect("the model: run scripts/setup");
    let texts: Vec<String> = (0..nq)
        .map(|i| format!("who {} ({i})", TOPICS[i % TOPICS.len()]))
        .collect();
    let text_ours = time(&texts, |t| {
        let q = MemoryQuery {
            query: Some(t.clone()),
            mode: Mode::Semantic,
            ..MemoryQuery::default()
        };
        let v = embedder.embed_query(t).expect("embed");
        std::hint::black_box(
            retrieve::from_index(&store, tenant, &q, Some(&v), &|s| s.len() / 4).expect("search"),
        );
    });
    let hybrid_ours = time(&texts, |t| {
        let q = MemoryQuery {
            query: Some(t.clone()),
            ..MemoryQuery::default()
        };
        let v = embedder.embed_query(t).expect("embed"); // cached by the run above
        std::hint::black_box(
            retrieve::from_index(&store, tenant, &q, Some(&v), &|s| s.len() / 4).expect("search"),
        );
    });

    // pgvector on the same rows
    let started = Instant::now();
    sqlx::query("SET maintenance_work_mem = '2GB'")
        .execute(&pool)
        .await
        .ok();
    let mut conn = pool.acquire().await?;
    sqlx::query("SET maintenance_work_mem = '2GB'")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET max_parallel_maintenance_workers = 1")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 100)")
        .execute(&mut *conn)
        .await?;
    let pg_build = started.elapsed().as_secs_f64();
    drop(conn);
    let mut pg_rows = Vec::new();
    let mut pg_runs = Vec::new();
    for ef in [10, 20, 40, 100, 200] {
        let mut got = Vec::new();
        let mut conn = pool.acquire().await?;
        sqlx::query(&format!("SET hnsw.ef_search = {ef}"))
            .execute(&mut *conn)
            .await?;
        let t = time_pg(&queries, async |q| {
            let ids: Vec<Uuid> = sqlx::query_scalar(
                // one tenant: no tenant condition, so the planner takes the HNSW index
                "SELECT id FROM memories ORDER BY embedding <=> $1 LIMIT 10",
            )
            .bind(pgvector::Vector::from(q.clone()))
            .fetch_all(&mut *conn)
            .await?;
            got.push(ids);
            Ok(())
        })
        .await?;
        let r = recall(&got, &truth_all, &ids);
        let qps = t.len() as f64 / (t.iter().sum::<f64>() / 1e3);
        pg_rows.push((ef, r, pct(&t, 0.5), pct(&t, 0.99), qps));
        pg_runs.push(t);
    }

    let ingest_rate = n as f64 / searchable;
    let mut report = format!(
        "## Memories: vectors against pgvector (`cargo bench --bench memories`)\n\n\
         {n} memories × {DIM} dims in one tenant, four agents: clustered unit vectors ({CLUSTERS} centres, \
         seeded; real embeddings of this many texts would take the model hours here), written into \
         Postgres by multi-row INSERTs while the indexer follows; {nq} queries near the data; query texts \
         through the real model. pgvector is the same Postgres, HNSW `m = 16, ef_construction = 100` \
         built after the load (as pgvector advises), queried without a tenant condition (one tenant) so \
         the planner takes the index. Ours is the engine call (`VectorStore::search` / \
         `retrieve::from_index`); pgvector a round trip on a local connection.\n\n\
         | measure | ours (tantivy + hnsw_rs) | pgvector |\n|---|---|---|\n\
         | load: INSERT into Postgres, 2,000 rows a statement | {pg_load:.1} s ({:.0}/s) | (same rows) |\n\
         | ingest: commit → searchable through CDC | {searchable:.1} s, **{ingest_rate:.0}/s** | — |\n\
         | HNSW build (M 16, ef_construction 100) | {build:.1} s after the last row ({:.0}/s, 2 cores, in the background) | {pg_build:.1} s ({:.0}/s) |\n\
         | RSS of the process (index, vectors, graph) | {:.0} MiB more after ingest and build | (Postgres process) |\n",
        n as f64 / pg_load,
        n as f64 / build.max(1e-9),
        n as f64 / pg_build,
        rss_after - rss_before,
    );
    report.push_str(&format!(
        "\n| search, top 10 | n | p50 / p99 | recall@10 |\n|---|---|---|---|\n\
         | ours, vector given (ef 100) | {nq} | {:.2} / {:.2} ms | {ours_recall:.3} |\n\
         | ours, vector given, agent filter (¼ of points) | {nq} | {:.2} / {:.2} ms | — |\n\
         | ours, text (model + search), semantic | {nq} | {:.2} / {:.2} ms | — |\n\
         | ours, text, hybrid (RRF with BM25, recency, importance; query vector cached) | {nq} | {:.2} / {:.2} ms | — |\n",
        pct(&ours, 0.5),
        pct(&ours, 0.99),
        pct(&agent_ours, 0.5),
        pct(&agent_ours, 0.99),
        pct(&text_ours, 0.5),
        pct(&text_ours, 0.99),
        pct(&hybrid_ours, 0.5),
        pct(&hybrid_ours, 0.99),
    ));
    for (ef, r, p50, p99, _) in &pg_rows {
        report.push_str(&format!(
            "| pgvector HNSW, ef_search {ef} | {nq} | {p50:.2} / {p99:.2} ms | {r:.3} |\n"
        ));
    }
    let (o50, o99) = (pct(&ours, 0.5), pct(&ours, 0.99));
    let mut r = Results::new(
        "memories",
        format!("MEM_N={n} MEM_QUERIES={nq} cargo bench --bench memories"),
    );
    // pgvector at the smallest ef_search reaching our recall (within 0.01)
    if let Some((ef, rc, p50, p99, _)) = pg_rows
        .iter()
        .find(|(_, rc, _, _, _)| *rc >= ours_recall - 0.01)
        .or(pg_rows.last())
    {
        report.push_str(&format!(
            "\nAt equal recall (ours {ours_recall:.3}, pgvector {rc:.3} at ef_search {ef}): pgvector ÷ ours = \
             **{} at p50, {} at p99**. Goals: vector p99 ≤ 5 ms — {o99:.2} ms ({}); ingest ≥ 5,000/s — \
             {ingest_rate:.0}/s ({}); text p99 ≤ 15 ms — {:.1} ms ({}).\n\n{NOTES}",
            common::ratio(*p50, o50),
            common::ratio(*p99, o99),
            if o99 <= 5.0 { "met" } else { "missed" },
            if ingest_rate >= 5000.0 { "met" } else { "missed" },
            pct(&text_ours, 0.99),
            if pct(&text_ours, 0.99) <= 15.0 { "met" } else { "missed" },
        ));
        r.metric(
            "peer_ratio.vector top 10 vs pgvector at equal recall",
            p99 / o99,
        );
    }
    r.metric("vector_p99_ms", o99);
    r.metric("ingest_per_s", ingest_rate);
    r.cdf(
        "memories-vector-cdf",
        "Vector top 10: latency",
        "crmsearch (hnsw_rs, ef 100)",
        &ours,
    );
    for (i, (ef, ..)) in pg_rows.iter().enumerate() {
        if *ef == 40 || *ef == 100 {
            r.cdf(
                "memories-vector-cdf",
                "",
                &format!("pgvector ef_search {ef}"),
                &pg_runs[i],
            );
        }
    }
    r.xy(
        "memories-recall-qps",
        &format!("Recall@10 against queries/s, one connection ({n} clustered vectors)"),
        ("recall@10", "queries/s"),
        "pgvector HNSW (ef_search 10–200)",
        pg_rows.iter().map(|p| (p.1, p.4)).collect(),
    );
    r.xy(
        "memories-recall-qps",
        "",
        ("", ""),
        "crmsearch (ef 100)",
        vec![(
            ours_recall,
            ours.len() as f64 / (ours.iter().sum::<f64>() / 1e3),
        )],
    );
    r.md = report;
    r.write()?;
    ix.shutdown().await;
    drop(pg);
    Ok(())
}

const NOTES: &str = "\
A query text costs the model before the search (see the embedding bench
below: the encoder is int8 through ONNX Runtime, one core per query). A filter matching a quarter of the points over-fetches a
walk that checks only tombstones and filters after, instead of checking the
filter inside hnsw_rs's walk (13 ms against 3 ms at 200K when measured).

Why hnsw_rs is not faster than pgvector here (and half as fast as hnswlib in
the ANN bench): hnsw_rs ends a walk early only when no filter is given; with
one (ours always passes the tombstone check) it goes on through every
candidate it reaches, and it tracks visited points in a hash map of `Arc`s.
A walk without the filter, over-fetched and checked after, measured 2,980
against 1,546 queries/s at recall ≥ 0.95 on 100K vectors (two runs of the ANN
bench, 2026-12-01), but on tighter
clusters (the unit test's 4,000 points in 40 clusters) it reached recall@10
0.945 at ef 100 where the filtered walk reaches 0.973, and needed ef 200 — no
faster than the filtered walk — to match. Left as is; a graph with a flat
visited bitset (a different crate or our own) is the way to close it.
";
