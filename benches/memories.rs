//! Memory retrieval at scale against pgvector, same data, same run (release
//! build, embedded Postgres on the same 2 cores).
//!
//! `cargo bench --bench memories` (env: MEM_N=200000 memories of 384 dims,
//! MEM_TENANTS=1 tenants sharing them evenly, MEM_QUERIES=200). Vectors are
//! clustered unit vectors
//! (seeded; computing real embeddings of MEM_N texts would take hours on
//! this CPU); query texts go through the real model. Writes
//! `target/bench-results/memories.json` (its section of BENCHMARKS.md).
//!
//! - ingest: rows committed into Postgres (multi-row INSERTs), through the
//!   CDC stream, applied to the index and searchable (the exact-scan tail
//!   serves new points at once); then the background usearch build.
//! - filters: agents holding 1 %, 10 % and 50 % of the points, each searched
//!   with its exact filtered truth.
//! - restart: the collections dumped and loaded again (what a restart reads).
//! - search: the engine call (`retrieve::from_index` / `VectorStore`),
//!   HTTP excluded; pgvector: the query's round trip.
//! - recall@10 against an exact scan of the same vectors.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::vecs::{CLUSTERS, DIM, clustered, unit};
use common::{Results, env, pct, time, time_pg};
use crmsearch::db;
use crmsearch::retrieve::{self, MemoryQuery};
use indexer::Indexer;
use indexer::vectors::{Filter, Plan};
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

/// The agents of the points: they hold 1 %, 10 %, 50 % and 39 % of them.
const AGENTS: [&str; 4] = ["agent-1pct", "agent-10pct", "agent-50pct", "agent-rest"];

/// The agent of a tenant's `i`-th point.
fn agent_of(i: usize) -> &'static str {
    match i % 100 {
        0 => AGENTS[0],
        1..=10 => AGENTS[1],
        11..=60 => AGENTS[2],
        _ => AGENTS[3],
    }
}

/// The exact top 10 of query `j` among the points `i` with `keep(j, i)`.
fn filtered_truth(
    vectors: &[Vec<f32>],
    queries: &[Vec<f32>],
    keep: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Vec<Vec<usize>> {
    use rayon::prelude::*;
    queries
        .par_iter()
        .enumerate()
        .map(|(j, q)| {
            let mut d: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .filter(|(i, _)| keep(j, *i))
                .map(|(i, v)| (indexer::vectors::distance(q, v), i))
                .collect();
            if d.len() > 10 {
                d.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
                d.truncate(10);
            }
            d.into_iter().map(|x| x.1).collect()
        })
        .collect()
}

fn recall(got: &[Vec<Uuid>], truth: &[Vec<usize>], ids: &[Uuid]) -> f64 {
    let mut found = 0;
    for (g, t) in got.iter().zip(truth) {
        let want: HashSet<Uuid> = t.iter().map(|i| ids[*i]).collect();
        found += g.iter().filter(|id| want.contains(id)).count();
    }
    found as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64
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
    let n_tenants = env("MEM_TENANTS", 1usize).max(1);
    let mut tenants = vec![tenant];
    for t in 1..n_tenants {
        let (id, _) = crmsearch::auth::create_tenant(&pool, &format!("bench-{t}"))
            .await
            .map_err(crmsearch::cli::anyhow_of)?;
        tenants.push(id);
    }
    let tenant_of = |i: usize| tenants[i % n_tenants];
    println!("loading {n} memories into {n_tenants} tenant(s)");
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for (c, chunk) in vectors.chunks(2_000).enumerate() {
        let k = chunk.len();
        let base = c * 2_000;
        let agent: Vec<&str> = (0..k).map(|i| agent_of((base + i) / n_tenants)).collect();
        let tenant_ids: Vec<Uuid> = (0..k).map(|i| tenant_of(base + i)).collect();
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
             SELECT t, a, s, 'fact', c, i, e, now() - (random() * interval '700 days'), now()
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::real[], $6::vector[]) AS t(t, a, s, c, i, e)
             RETURNING id",
        )
        .bind(&tenant_ids)
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
    let per_tenant = n / n_tenants;
    let cfg = store.vectors().config().clone();
    let graphs = per_tenant >= cfg.exact_below;
    // the agents that get a graph of their own, in every tenant
    let agent_graphs = n_tenants
        * [0.01, 0.10, 0.50, 0.39]
            .iter()
            .filter(|share| {
                cfg.agent_graph((**share * per_tenant as f64) as usize, per_tenant, false)
            })
            .count();
    // the background build: wait until every point is in the graph
    let built_from = Instant::now();
    loop {
        let s = store.vectors().stats();
        // small collections are scanned exactly and get no graph
        let indexed = s.values().map(|c| c.indexed).sum::<usize>();
        let agents = s.values().map(|c| c.agent_graphs).sum::<usize>();
        if !graphs || (indexed >= n && agents >= agent_graphs) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let build = built_from.elapsed().as_secs_f64() + 0.0;
    let rss_after = common::rss_mib("self").0;
    let index_mib = store
        .vectors()
        .stats()
        .values()
        .map(|c| c.memory_bytes)
        .sum::<usize>() as f64
        / (1u64 << 20) as f64;
    println!("usearch build finished {build:.1} s after the last row was searchable");

    // restart: what a restart reads back (the dump of the collections)
    let dump_dir = root.join("vector-dump");
    let t = Instant::now();
    store.vectors().dump(&dump_dir, indexer::Lsn(1))?;
    let dump_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let reloaded = indexer::vectors::VectorStore::new(cfg.clone());
    reloaded.load(&dump_dir)?;
    let load_s = t.elapsed().as_secs_f64();
    drop(reloaded);
    let _ = std::fs::remove_dir_all(&dump_dir);

    // queries: near the data (each at one tenant), and text through the model
    let queries = clustered(&mut rng, &centres, nq);
    let at = |j: usize| tenant_of(j * 7919 % n);
    let in_tenant = |j: usize, i: usize| tenant_of(i) == at(j);
    let truth_all = filtered_truth(&vectors, &queries, &|j, i| in_tenant(j, i));
    let now = chrono::Utc::now().timestamp_micros();
    let none = Filter {
        now_micros: now,
        ..Filter::default()
    };
    // each query at its tenant, timed alone: the latencies and the ids found
    let run = |f: &Filter, plan: Plan| {
        let mut got = Vec::new();
        let mut j = 0;
        let t = time(&queries, |q| {
            got.push(
                store
                    .vectors()
                    .search_with(at(j), q, 10, f, plan)
                    .into_iter()
                    .map(|h| h.id)
                    .collect::<Vec<_>>(),
            );
            j += 1;
        });
        (t, got)
    };
    // one untouched pass first: the index's pages come in after the build
    let _ = run(&none, Plan::Auto);
    let (ours, got) = run(&none, Plan::Auto);
    let ours_recall = recall(&got, &truth_all, &ids);
    // the walk's width swept on the same index: recall against latency
    let default_ef = store.vectors().ef();
    let mut sweep = Vec::new();
    if graphs {
        for ef in EF_SWEEP {
            store.vectors().set_ef(ef);
            let (t, got) = run(&none, Plan::Auto);
            sweep.push((ef, recall(&got, &truth_all, &ids), t));
        }
        store.vectors().set_ef(default_ef);
    }
    // agents holding 1 %, 10 % and 50 % of the points
    let mut filtered = Vec::new();
    for (agent, share) in [(AGENTS[0], 0.01), (AGENTS[1], 0.10), (AGENTS[2], 0.50)] {
        let f = Filter {
            agent: Some(agent.into()),
            ..none.clone()
        };
        let want = filtered_truth(&vectors, &queries, &|j, i| {
            in_tenant(j, i) && agent_of(i / n_tenants) == agent
        });
        let mut runs = Vec::new();
        for plan in [Plan::Auto, Plan::Scan, Plan::Walk] {
            let (t, got) = run(&f, plan);
            runs.push((t, recall(&got, &want, &ids)));
        }
        filtered.push((share, runs));
    }
    let embedder = crmsearch::embed::shared(None).expect("the model: run scripts/setup");
    let texts: Vec<String> = (0..nq)
        .map(|i| format!("who {} ({i})", TOPICS[i % TOPICS.len()]))
        .collect();
    // what an agent asks: a new question (embedded now), hybrid, packed
    // into a token budget
    let text_ours = time(&texts, |t| {
        let q = MemoryQuery {
            query: Some(t.clone()),
            token_budget: Some(500),
            ..MemoryQuery::default()
        };
        let v = embedder.embed_query(t).expect("embed");
        std::hint::black_box(
            retrieve::from_index(&store, at(0), &q, Some(&v), &|s| s.len() / 4).expect("search"),
        );
    });
    let hybrid_ours = time(&texts, |t| {
        let q = MemoryQuery {
            query: Some(t.clone()),
            ..MemoryQuery::default()
        };
        let v = embedder.embed_query(t).expect("embed"); // cached by the run above
        std::hint::black_box(
            retrieve::from_index(&store, at(0), &q, Some(&v), &|s| s.len() / 4).expect("search"),
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
    let mut pg_rows: Vec<(String, f64, f64, f64, f64)> = Vec::new();
    let mut pg_runs = Vec::new();
    let order: Vec<usize> = (0..nq).collect();
    // several tenants: the tenant's condition, with pgvector's iterative
    // scan so the HNSW walk goes on until enough rows pass it; and the
    // exact answer through the b-tree on the tenant (no HNSW)
    let settings: Vec<(String, String)> = [10, 20, 40, 100, 200]
        .iter()
        .map(|ef| {
            (
                format!("HNSW, ef_search {ef}"),
                format!("SET hnsw.ef_search = {ef}; SET hnsw.iterative_scan = strict_order"),
            )
        })
        .chain((n_tenants > 1).then(|| {
            (
                "exact, b-tree on the tenant".to_owned(),
                "SET enable_indexscan = off".to_owned(),
            )
        }))
        .collect();
    for (name, set) in settings {
        let mut got = Vec::new();
        let mut conn = pool.acquire().await?;
        sqlx::raw_sql(&set).execute(&mut *conn).await?;
        let t = time_pg(&order, async |j| {
            let v = pgvector::Vector::from(queries[*j].clone());
            let ids: Vec<Uuid> = if n_tenants == 1 {
                // one tenant: no tenant condition, so the planner takes the HNSW index
                sqlx::query_scalar("SELECT id FROM memories ORDER BY embedding <=> $1 LIMIT 10")
                    .bind(v)
                    .fetch_all(&mut *conn)
                    .await?
            } else {
                sqlx::query_scalar(
                    "SELECT id FROM memories WHERE tenant_id = $2 ORDER BY embedding <=> $1 LIMIT 10",
                )
                .bind(v)
                .bind(at(*j))
                .fetch_all(&mut *conn)
                .await?
            };
            got.push(ids);
            Ok(())
        })
        .await?;
        drop(conn);
        let r = recall(&got, &truth_all, &ids);
        let qps = t.len() as f64 / (t.iter().sum::<f64>() / 1e3);
        pg_rows.push((name, r, pct(&t, 0.5), pct(&t, 0.99), qps));
        pg_runs.push(t);
    }

    let ingest_rate = n as f64 / searchable;
    let layout = if n_tenants == 1 {
        format!("{n} memories × {DIM} dims in one tenant")
    } else {
        format!("{n} memories × {DIM} dims in {n_tenants} tenants of {per_tenant}")
    };
    let pg_how = if n_tenants == 1 {
        "queried without a tenant condition (one tenant) so the planner takes the index"
    } else {
        "queried with the tenant's condition: HNSW with `hnsw.iterative_scan = strict_order` \
         (the walk goes on until enough rows pass), and exact through the b-tree on the tenant"
    };
    let graph = if graphs {
        format!(
            "usearch f16, M {}, ef_construction {}, ef {} (walked at {} at this size)",
            cfg.max_connections,
            cfg.ef_construction,
            cfg.ef_search,
            cfg.ef_for(cfg.ef_search, per_tenant)
        )
    } else {
        format!(
            "exact scans: collections under {} points get no graph",
            cfg.exact_below
        )
    };
    let mut report = format!(
        "## Memories: vectors against pgvector (`cargo bench --bench memories`, {layout})\n\n\
         {layout}; agents holding 1 %, 10 %, 50 % and 39 % of the points: clustered unit vectors \
         ({CLUSTERS} centres, seeded; real embeddings of this many texts would take the model hours \
         here), written into Postgres by multi-row INSERTs while the indexer follows; {nq} queries near \
         the data; query texts through the real model. pgvector is the same Postgres, HNSW \
         `m = 16, ef_construction = 100` built after the load (as pgvector advises), {pg_how}. Ours is \
         the engine call (`VectorStore::search` / `retrieve::from_index`; {graph}); pgvector a round \
         trip on a local connection.\n\n\
         | measure | ours (tantivy + usearch) | pgvector |\n|---|---|---|\n\
         | load: INSERT into Postgres, 2,000 rows a statement | {pg_load:.1} s ({:.0}/s) | (same rows) |\n\
         | ingest: commit → searchable through CDC | {searchable:.1} s, **{ingest_rate:.0}/s** | — |\n\
         | HNSW build (M 16, ef_construction 100) | {} | {pg_build:.1} s ({:.0}/s) |\n\
         | memory: RSS of the process / the collections' own count | {:.0} MiB more after ingest and build / {index_mib:.0} MiB ({:.0} bytes a vector) | (Postgres process) |\n\
         | restart: the collections dumped / loaded again | {dump_s:.2} s / **{load_s:.2} s** | — |\n",
        n as f64 / pg_load,
        if graphs {
            format!(
                "{build:.1} s after the last row ({:.0}/s, 2 cores, in the background)",
                n as f64 / build.max(1e-9)
            )
        } else {
            "none (exact scans)".into()
        },
        n as f64 / pg_build,
        rss_after - rss_before,
        index_mib * (1u64 << 20) as f64 / n as f64,
    );
    report.push_str(&format!(
        "\n| search, top 10 | n | p50 / p99 | recall@10 |\n|---|---|---|---|\n\
         | ours, vector given | {nq} | {:.2} / {:.2} ms | {ours_recall:.3} |\n",
        pct(&ours, 0.5),
        pct(&ours, 0.99),
    ));
    for (ef, rc, t) in &sweep {
        report.push_str(&format!(
            "| ours, vector given, ef {} | {nq} | {:.2} / {:.2} ms | {rc:.3} |\n",
            cfg.ef_for(*ef, per_tenant),
            pct(t, 0.5),
            pct(t, 0.99),
        ));
    }
    for (share, runs) in &filtered {
        for ((t, rc), how) in runs.iter().zip([
            "as planned",
            "exact scan",
            "walk of the tenant's graph, filter inside",
        ]) {
            report.push_str(&format!(
                "| ours, vector given, agent filter ({:.0} % of points), {how} | {nq} | {:.2} / {:.2} ms | {rc:.3} |\n",
                share * 100.0,
                pct(t, 0.5),
                pct(t, 0.99),
            ));
        }
    }
    report.push_str(&format!(
        "| ours, text: a new question embedded + hybrid + token budget of 500 | {nq} | {:.2} / {:.2} ms | — |\n\
         | ours, text, hybrid (RRF with BM25, recency, importance; query vector cached) | {nq} | {:.2} / {:.2} ms | — |\n",
        pct(&text_ours, 0.5),
        pct(&text_ours, 0.99),
        pct(&hybrid_ours, 0.5),
        pct(&hybrid_ours, 0.99),
    ));
    for (name, r, p50, p99, _) in &pg_rows {
        report.push_str(&format!(
            "| pgvector {name} | {nq} | {p50:.2} / {p99:.2} ms | {r:.3} |\n"
        ));
    }
    let (o50, o99) = (pct(&ours, 0.5), pct(&ours, 0.99));
    let mut r = Results::new(
        if n_tenants == 1 {
            "memories"
        } else {
            "memories-tenants"
        },
        format!("MEM_N={n} MEM_TENANTS={n_tenants} MEM_QUERIES={nq} cargo bench --bench memories"),
    );
    let one_pct = filtered.first().map_or(f64::NAN, |f| pct(&f.1[0].0, 0.99));
    // pgvector tuned to our recall: its fastest setting within 0.01 of it
    if let Some((name, rc, p50, p99, _)) = pg_rows
        .iter()
        .filter(|(_, rc, ..)| *rc >= ours_recall - 0.01)
        .min_by(|a, b| a.3.total_cmp(&b.3))
        .or(pg_rows.last())
    {
        report.push_str(&format!(
            "\nAt equal recall (ours {ours_recall:.3}, pgvector {rc:.3} with {name}): pgvector ÷ ours = \
             **{} at p50, {} at p99**. Goals: vector p99 ≤ 1 ms at recall ≥ 0.95 — {o99:.2} ms at \
             {ours_recall:.3} ({}); ≥ 5× pgvector — {} ({}); 1 % agent filter within 1.5× of none — \
             p99 {one_pct:.2} ms, {:.2}× ({}); ingest ≥ 5,000/s — {ingest_rate:.0}/s ({}); text \
             (model + hybrid + token budget) p99 ≤ 8 ms — {:.1} ms ({}).\n\n{NOTES}",
            common::ratio(*p50, o50),
            common::ratio(*p99, o99),
            if o99 <= 1.0 && ours_recall >= 0.95 { "met" } else { "missed" },
            common::ratio(*p99, o99),
            if p99 / o99 >= 5.0 { "met" } else { "missed" },
            one_pct / o99,
            if one_pct / o99 <= 1.5 { "met" } else { "missed" },
            if ingest_rate >= 5000.0 { "met" } else { "missed" },
            pct(&text_ours, 0.99),
            if pct(&text_ours, 0.99) <= 8.0 { "met" } else { "missed" },
        ));
        r.metric(
            "peer_ratio.vector top 10 vs pgvector at equal recall",
            p99 / o99,
        );
    }
    r.metric("vector_p99_ms", o99);
    r.metric("vector_recall", ours_recall);
    r.metric("filter_1pct_ratio", one_pct / o99);
    r.metric("text_p99_ms", pct(&text_ours, 0.99));
    r.metric("ingest_per_s", ingest_rate);
    r.metric("restart_load_s", load_s);
    r.metric("points", n as f64);
    r.cdf(
        "memories-vector-cdf",
        "Vector top 10: latency",
        "crmsearch (usearch f16)",
        &ours,
    );
    for (i, (name, ..)) in pg_rows.iter().enumerate() {
        if name.ends_with(" 40") || name.ends_with(" 100") || name.starts_with("exact") {
            r.cdf(
                "memories-vector-cdf",
                "",
                &format!("pgvector {name}"),
                &pg_runs[i],
            );
        }
    }
    r.xy(
        "memories-recall-qps",
        &format!("Recall@10 against queries/s, one connection ({n} clustered vectors)"),
        ("recall@10", "queries/s"),
        "pgvector (ef_search 10–200)",
        pg_rows.iter().map(|p| (p.1, p.4)).collect(),
    );
    let qps = |t: &[f64]| t.len() as f64 / (t.iter().sum::<f64>() / 1e3);
    r.xy(
        "memories-recall-qps",
        "",
        ("", ""),
        &format!(
            "crmsearch (ef {})",
            EF_SWEEP.map(|e| e.to_string()).join(", ")
        ),
        if sweep.is_empty() {
            vec![(ours_recall, qps(&ours))]
        } else {
            sweep.iter().map(|(_, rc, t)| (*rc, qps(t))).collect()
        },
    );
    r.md = report;
    r.write()?;
    ix.shutdown().await;
    drop(pg);
    Ok(())
}

/// The walk's widths the bench sweeps on the built index.
const EF_SWEEP: [usize; 6] = [32, 64, 128, 192, 256, 384];

const NOTES: &str = "\
The index is usearch's HNSW storing f16 (see the ANN bench for the choice):
no tombstones (a deleted point leaves the graph and a new one takes its
room), the filter checked inside the walk, and a filter that its agent's
posting list narrows enough is scanned exactly instead: 2,000 points or
fewer, or while the matches squared stay under 1,000 times the collection
(a walk passes about n / m points for each match; the planner in
`indexer::vectors`). An agent holding 5,000 points or more and at most a
quarter of its tenant has a graph of its own, walked instead (the
planned row of such a filter). The scan reads the stored halves and
computes in f16. The walk's width grows with the square root of a graph's
size above 400,000 points.
A query text costs the model before the search (see the embedding bench:
the encoder is int8 through ONNX Runtime, one core per query).
";
