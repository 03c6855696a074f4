//! Contact search at scale against Postgres with pg_trgm, same data, same
//! run (release build, embedded Postgres on the same 2 cores).
//!
//! `cargo bench --bench search` (env: SEARCH_CONTACTS=500000,
//! SEARCH_QUERIES=400). Data comes from the seed generator
//! (`crmsearch::seed`, seed 42) and is cached in `target/bench-search`
//! between runs (delete it to reload). Prints a table and writes
//! `target/bench-search/search.md`.
//!
//! Ours is timed around `search::search` / `autocomplete` / `stats` (what a
//! request spends in the engine, HTTP excluded); Postgres around the query's
//! round trip on a local connection (the wire adds ~0.1 ms).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{env, pct, time, time_pg};
use crmsearch::search::{self, Request, Scope};
use crmsearch::{db, seed};
use indexer::Indexer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schema::ContactFields;
use uuid::Uuid;

const COMPANIES: usize = 20_000;
/// Most queries of a kind sent to Postgres (its slow ones take seconds);
/// `SEARCH_PG=0` sends none (a quick run of ours alone).
fn pg_max() -> usize {
    env("SEARCH_PG", 100usize)
}
const SEED: u64 = 42;
/// The text Postgres searches with trigrams: names, emails, phones.
const PG_TEXT: &str = "lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' \
     || bench_join(emails) || ' ' || bench_join(phones))";
const PG_NAME: &str = "lower(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))";

/// Every keystroke prefix of a few full names: what a person types.
fn keystrokes(contacts: &[ContactFields], rng: &mut StdRng, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let c = &contacts[rng.random_range(0..contacts.len())];
        let name = format!(
            "{} {}",
            c.first_name.as_deref().unwrap_or(""),
            c.last_name.as_deref().unwrap_or("")
        );
        let chars: Vec<char> = name.trim().chars().collect();
        for end in 1..=chars.len() {
            if chars[end - 1] != ' ' {
                out.push(chars[..end].iter().collect());
            }
        }
    }
    out.truncate(n);
    out
}

struct Row {
    name: &'static str,
    goal: &'static str,
    ours: Vec<f64>,
    pg: Vec<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let n = env("SEARCH_CONTACTS", 500_000usize);
    let queries = env("SEARCH_QUERIES", 400usize);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-search");
    let marker = root.join(format!("loaded-{n}"));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&root);
    }
    std::fs::create_dir_all(&root)?;
    let (pg, url, pool) = common::database(&root.join("pg"), 4).await?;
    let cfg = common::indexer_config(&root, &url);
    let (tenant, contacts, load_secs) = if marker.exists() {
        let tenant: Uuid = std::fs::read_to_string(&marker)?.trim().parse()?;
        let companies = seed::companies(SEED, COMPANIES);
        (
            tenant,
            seed::contacts(SEED, n, &companies).collect::<Vec<_>>(),
            f64::NAN,
        )
    } else {
        let (tenant, _) = crmsearch::auth::create_tenant(&pool, "bench")
            .await
            .map_err(crmsearch::cli::anyhow_of)?;
        let t = Instant::now();
        let contacts =
            crmsearch::ops::seed::contacts(&pool, tenant, SEED, n, COMPANIES, true).await?;
        let secs = t.elapsed().as_secs_f64();
        for ddl in [
            "CREATE EXTENSION IF NOT EXISTS pg_trgm".to_owned(),
            // array_to_string is only stable; an index expression needs immutable
            "CREATE OR REPLACE FUNCTION bench_join(text[]) RETURNS text IMMUTABLE PARALLEL SAFE \
             LANGUAGE sql AS $$ SELECT array_to_string($1, ' ') $$"
                .to_owned(),
            format!("CREATE INDEX IF NOT EXISTS bench_text_trgm ON contacts USING gin (({PG_TEXT}) gin_trgm_ops)"),
            format!("CREATE INDEX IF NOT EXISTS bench_name_trgm ON contacts USING gin (({PG_NAME}) gin_trgm_ops)"),
            "CREATE INDEX IF NOT EXISTS bench_last_name ON contacts (tenant_id, lower(last_name), id)".to_owned(),
            "CREATE INDEX IF NOT EXISTS bench_company_trgm ON companies USING gin ((lower(name)) gin_trgm_ops)".to_owned(),
            "VACUUM ANALYZE contacts".to_owned(),
            "VACUUM ANALYZE companies".to_owned(),
        ] {
            sqlx::query(&ddl).execute(&pool).await?;
        }
        (tenant, contacts, secs)
    };
    let t = Instant::now();
    let ix = Indexer::start(cfg.clone(), pool.clone()).await?;
    let index_secs = t.elapsed().as_secs_f64();
    ix.wait_for(db::write_position(&pool).await?, Duration::from_secs(600))
        .await;
    std::fs::write(&marker, tenant.to_string())?;
    let store = ix.store.clone();
    let segments = store.searcher().segment_readers().len();
    let docs = store.searcher().num_docs();
    println!("{docs} documents in {segments} segments");

    let mut rng = StdRng::seed_from_u64(7);
    let rel = seed::relevance_queries(SEED, &contacts, queries * 5);
    let typo: Vec<&seed::RelevanceQuery> = rel
        .iter()
        .filter(|q| q.kind == "typo1" || q.kind == "typo2")
        .take(queries)
        .collect();
    let typing = keystrokes(&contacts, &mut rng, queries);
    let prefixes: Vec<String> = typing
        .iter()
        .filter(|q| q.chars().count() <= 6)
        .cloned()
        .collect();
    let deep: Vec<usize> = (0..queries / 4)
        .map(|_| 400_000.min(n.saturating_sub(1_100)) + rng.random_range(0..1000))
        .collect();
    let stats_runs: Vec<usize> = (0..queries / 4).collect();
    let facets = vec![
        "lifecycle_stage".to_owned(),
        "country".to_owned(),
        "owner_id".to_owned(),
    ];
    let run = |req: Request| search::search(&store, tenant, Scope::Contacts, &req).unwrap();

    let mut rows: Vec<Row> = Vec::new();
    // 1. two-word fuzzy query, 3 facets, exact total
    let ours = time(&typo, |q| {
        let r = run(Request {
            q: q.q.clone(),
            facets: facets.clone(),
            highlight: true,
            ..Request::default()
        });
        std::hint::black_box(r.total);
    });
    let fuzzy_sql = format!(
        "WITH m AS (SELECT id, lifecycle_stage, country, owner_id, similarity({PG_TEXT}, $2) AS s
                      FROM contacts WHERE tenant_id = $1 AND {PG_TEXT} % $2)
         SELECT (SELECT count(*) FROM m),
                (SELECT json_agg(x) FROM (SELECT lifecycle_stage, count(*) FROM m GROUP BY 1) x),
                (SELECT json_agg(x) FROM (SELECT country, count(*) FROM m GROUP BY 1) x),
                (SELECT json_agg(x) FROM (SELECT owner_id, count(*) FROM m GROUP BY 1) x),
                (SELECT json_agg(x) FROM (SELECT id FROM m ORDER BY s DESC, id LIMIT 20) x)"
    );
    let pg_fuzzy = time_pg(&typo[..typo.len().min(pg_max())], async |q| {
        sqlx::query(&fuzzy_sql)
            .bind(tenant)
            .bind(q.q.to_lowercase())
            .execute(&pool)
            .await?;
        Ok(())
    })
    .await?;
    rows.push(Row {
        name: "two-word fuzzy query, 3 facets, exact total",
        goal: "p99 ≤ 5 ms",
        ours,
        pg: pg_fuzzy,
    });

    // 2. as you type: every keystroke of full names
    let ours = time(&typing, |q| {
        let r = run(Request {
            q: q.clone(),
            highlight: true,
            ..Request::default()
        });
        std::hint::black_box(r.total);
    });
    // each word a LIKE on the trigram-indexed text (the GIN index serves it
    // from 3 letters on), the total, and the first 20 by last name
    let pg_typing = time_pg(&typing[..typing.len().min(pg_max())], async |q| {
        let words: Vec<String> = q
            .to_lowercase()
            .split_whitespace()
            .map(|w| format!("%{w}%"))
            .collect();
        let cond: Vec<String> = (0..words.len())
            .map(|i| format!("{PG_TEXT} LIKE ${}", i + 2))
            .collect();
        let sql = format!(
            "WITH m AS (SELECT id, last_name FROM contacts WHERE tenant_id = $1 AND {})
             SELECT (SELECT count(*) FROM m),
                    (SELECT json_agg(x) FROM (SELECT id FROM m ORDER BY lower(last_name), id LIMIT 20) x)",
            cond.join(" AND ")
        );
        let mut query = sqlx::query(&sql).bind(tenant);
        for w in words {
            query = query.bind(w);
        }
        query.execute(&pool).await?;
        Ok(())
    })
    .await?;
    rows.push(Row {
        name: "as-you-type (each keystroke of a name), exact total",
        goal: "",
        ours,
        pg: pg_typing,
    });

    // 3. autocomplete
    let ours = time(&prefixes, |q| {
        let r = search::autocomplete(&store, tenant, q, 8).unwrap();
        std::hint::black_box(r.len());
    });
    let ac_sql = format!(
        "(SELECT DISTINCT {PG_NAME} FROM contacts WHERE tenant_id = $1 AND (' ' || {PG_NAME}) LIKE $2 LIMIT 8)
         UNION ALL (SELECT DISTINCT lower(name) FROM companies WHERE tenant_id = $1 AND (' ' || lower(name)) LIKE $2 LIMIT 8)"
    );
    let pg_ac = time_pg(&prefixes[..prefixes.len().min(pg_max())], async |q| {
        let like = format!("% {}%", q.to_lowercase());
        sqlx::query(&ac_sql)
            .bind(tenant)
            .bind(like)
            .execute(&pool)
            .await?;
        Ok(())
    })
    .await?;
    rows.push(Row {
        name: "autocomplete (prefixes of 1–6 letters), 8 suggestions",
        goal: "p99 ≤ 2 ms",
        ours,
        pg: pg_ac,
    });

    // 4. stats
    let ours = time(&stats_runs, |_| {
        let r = search::compute_stats(&store, tenant, Scope::Contacts, 20).unwrap();
        std::hint::black_box(r.total);
    });
    let stats_sql = "SELECT (SELECT count(*) FROM contacts WHERE tenant_id = $1),
        (SELECT json_agg(x) FROM (SELECT lifecycle_stage, count(*) c FROM contacts WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x),
        (SELECT json_agg(x) FROM (SELECT owner_id, count(*) c FROM contacts WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x),
        (SELECT json_agg(x) FROM (SELECT t, count(*) c FROM contacts, unnest(tags) t WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x),
        (SELECT json_agg(x) FROM (SELECT city, count(*) c FROM contacts WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x),
        (SELECT json_agg(x) FROM (SELECT country, count(*) c FROM contacts WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x),
        (SELECT json_agg(x) FROM (SELECT company_name, count(*) c FROM contacts WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x),
        (SELECT json_agg(x) FROM (SELECT company_id, count(*) c FROM contacts WHERE tenant_id = $1 GROUP BY 1 ORDER BY c DESC LIMIT 20) x)";
    let pg_stats = time_pg(
        &stats_runs[..stats_runs.len().min(20).min(pg_max())],
        async |_| {
            sqlx::query(stats_sql).bind(tenant).execute(&pool).await?;
            Ok(())
        },
    )
    .await?;
    let cached = time(&stats_runs, |_| {
        let r = search::stats(&store, tenant, Scope::Contacts, 20).unwrap();
        std::hint::black_box(r.total);
    });
    rows.push(Row {
        name: "stats, cached for the index generation (as served)",
        goal: "p99 ≤ 20 ms",
        ours: cached,
        pg: pg_stats.clone(),
    });
    rows.push(Row {
        name: "stats: 7 whole-tenant facets, top 20 each, computed",
        goal: "p99 ≤ 20 ms",
        ours,
        pg: pg_stats,
    });

    // 5. a deep window sorted by last name
    let ours = time(&deep, |offset| {
        let r = run(Request {
            sort: Some("last_name:asc".into()),
            offset: *offset,
            limit: 100,
            ..Request::default()
        });
        assert_eq!(r.hits.len(), 100);
    });
    let deep_sql = "SELECT row_to_json(c) FROM contacts c WHERE tenant_id = $1 ORDER BY lower(last_name), id OFFSET $2 LIMIT 100";
    let pg_deep = time_pg(&deep[..deep.len().min(40).min(pg_max())], async |offset| {
        sqlx::query(deep_sql)
            .bind(tenant)
            .bind(*offset as i64)
            .execute(&pool)
            .await?;
        Ok(())
    })
    .await?;
    rows.push(Row {
        name: "100 rows at offset ~400,000 by last name",
        goal: "p99 ≤ 15 ms",
        ours,
        pg: pg_deep,
    });

    // relevance at this scale: success@1 and @10 by kind, ours and pg_trgm
    let mut by_kind: BTreeMap<&str, [usize; 5]> = BTreeMap::new();
    let ext_id_of = |v: &serde_json::Value| v["external_id"].as_str().unwrap_or("").to_owned();
    let rel_set: Vec<&seed::RelevanceQuery> = rel.iter().take(queries).collect();
    let pg_rel_sql = format!(
        "SELECT external_id FROM contacts WHERE tenant_id = $1 AND {PG_TEXT} % $2 ORDER BY similarity({PG_TEXT}, $2) DESC, id LIMIT 10"
    );
    for q in &rel_set {
        let expect: HashSet<&str> = q.expect.iter().map(String::as_str).collect();
        let r = run(Request {
            q: q.q.clone(),
            limit: 10,
            ..Request::default()
        });
        let got: Vec<String> = r.hits.iter().map(|h| ext_id_of(h.record.value())).collect();
        let pg: Vec<String> = if pg_max() == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar(&pg_rel_sql)
                .bind(tenant)
                .bind(q.q.to_lowercase())
                .fetch_all(&pool)
                .await?
        };
        let e = by_kind.entry(q.kind).or_default();
        e[0] += 1;
        e[1] += usize::from(got.first().is_some_and(|g| expect.contains(g.as_str())));
        e[2] += usize::from(got.iter().any(|g| expect.contains(g.as_str())));
        e[3] += usize::from(pg.first().is_some_and(|g| expect.contains(g.as_str())));
        e[4] += usize::from(pg.iter().any(|g| expect.contains(g.as_str())));
    }

    let mut report = format!(
        "{docs} contacts ({n} generated, seed {SEED}, {COMPANIES} companies) in {segments} segment(s); \
         load into Postgres {}, index open/bootstrap {index_secs:.1} s.\n\n\
         | query | n | ours p50 / p99 | Postgres + pg_trgm p50 / p99 | ratio p50 / p99 | goal |\n|---|---|---|---|---|---|\n",
        if load_secs.is_nan() {
            "(cached from an earlier run)".to_owned()
        } else {
            format!("{load_secs:.1} s")
        }
    );
    for r in &rows {
        let (o50, o99, p50, p99) = (
            pct(&r.ours, 0.5),
            pct(&r.ours, 0.99),
            pct(&r.pg, 0.5),
            pct(&r.pg, 0.99),
        );
        report.push_str(&format!(
            "| {} | {} / {} | {o50:.2} / {o99:.2} ms | {p50:.1} / {p99:.1} ms | {} / {} | {} |\n",
            r.name,
            r.ours.len(),
            r.pg.len(),
            ratio(p50, o50),
            ratio(p99, o99),
            r.goal
        ));
    }
    report.push_str("\n| relevance, query kind | n | ours success@1 | ours success@10 | pg_trgm success@1 | pg_trgm success@10 |\n|---|---|---|---|---|---|\n");
    let mut totals = [0usize; 5];
    for (kind, c) in &by_kind {
        let f = |x: usize| x as f64 / c[0] as f64;
        report.push_str(&format!(
            "| {kind} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            c[0],
            f(c[1]),
            f(c[2]),
            f(c[3]),
            f(c[4])
        ));
        for i in 0..5 {
            totals[i] += c[i];
        }
    }
    let f = |x: usize| x as f64 / totals[0] as f64;
    report.push_str(&format!(
        "| all | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
        totals[0],
        f(totals[1]),
        f(totals[2]),
        f(totals[3]),
        f(totals[4])
    ));
    println!("{report}");
    std::fs::write(root.join("search.md"), &report)?;
    ix.shutdown().await;
    drop(pg);
    Ok(())
}

/// `peer / ours` as "N×"; a dash where ours rounds to zero (a cache hit).
fn ratio(peer: f64, ours: f64) -> String {
    if ours < 0.01 {
        "—".to_owned()
    } else {
        format!("{:.0}×", peer / ours)
    }
}
