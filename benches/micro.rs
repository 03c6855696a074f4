//! criterion micro-benchmarks on prebuilt indexes cached on disk: the
//! contact index of the search bench (`target/bench-search`, built on the
//! first run) and a usearch graph (`target/bench-micro/usearch-N.f16`).
//!
//! `cargo bench --bench micro` (env: MICRO_CONTACTS=500000,
//! MICRO_VECTORS=50000, MICRO_SECS=3 of measurement per benchmark; criterion's
//! own arguments pass through, e.g. `cargo bench --bench micro -- fuzzy`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::vecs::{CLUSTERS, clustered, unit};
use common::{Results, env};
use criterion::Criterion;
use crmsearch::search::query::{self, Typos};
use crmsearch::search::{self, Request, Scope};
use indexer::Indexer;
use indexer::vectors::{UsearchIndex, VectorConfig, VectorIndex, distance};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Every `new/estimates.json` criterion wrote under `dir`: (id, median ns,
/// low, high of its confidence interval).
fn estimates(dir: &Path) -> Vec<(String, f64, f64, f64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") {
                let read = |f: &str| -> Option<serde_json::Value> {
                    serde_json::from_slice(&std::fs::read(p.with_file_name(f)).ok()?).ok()
                };
                if let (Some(est), Some(meta)) = (read("estimates.json"), read("benchmark.json")) {
                    let m = &est["median"];
                    out.push((
                        meta["full_id"].as_str().unwrap_or("?").to_owned(),
                        m["point_estimate"].as_f64().unwrap_or(f64::NAN),
                        m["confidence_interval"]["lower_bound"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                        m["confidence_interval"]["upper_bound"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn time_of(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A cycling picker over `items`: each call the next one.
fn cycle<'a, T>(items: &'a [T]) -> impl FnMut() -> &'a T + 'a {
    let mut i = 0;
    move || {
        i += 1;
        &items[i % items.len()]
    }
}

fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let n = env("MICRO_CONTACTS", 500_000usize);
    let nv = env("MICRO_VECTORS", 50_000usize);
    let secs = env("MICRO_SECS", 3.0f64);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-micro");
    let crit_dir = root.join("criterion");
    let _ = std::fs::remove_dir_all(&crit_dir);
    std::fs::create_dir_all(&crit_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (fx, ix, cdc) = rt.block_on(async {
        let fx = common::contacts::fixture(n).await?;
        let ix = Indexer::start(common::indexer_config(&fx.root, &fx.url), fx.pool.clone()).await?;
        ix.wait_for(
            crmsearch::db::write_position(&fx.pool).await?,
            Duration::from_secs(600),
        )
        .await;
        std::fs::write(common::contacts::marker(&fx.root, n), fx.tenant.to_string())?;
        // the index users get: the same contacts through the bulk API's
        // path, as CDC and the merge policy left it (the search bench's)
        let cdc = common::contacts::cdc_built(&fx, n).await?;
        anyhow::Ok((fx, ix, cdc))
    })?;
    let store = ix.store.clone();
    let tenant = fx.tenant;
    let docs = store.searcher().num_docs();
    let segments = store.searcher().segment_readers().len();
    let cdc_store = cdc.indexer.store.clone();
    let cdc_segments = cdc_store.searcher().segment_readers().len();

    // inputs drawn from the data
    let rel = crmsearch::seed::relevance_queries(common::contacts::SEED, &fx.contacts, 2_000);
    let typo: Vec<String> = rel
        .iter()
        .filter(|q| q.kind == "typo1" || q.kind == "typo2")
        .map(|q| q.q.clone())
        .take(200)
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut typing = Vec::new();
    let mut prefixes = Vec::new();
    while typing.len() < 400 {
        let c = &fx.contacts[rng.random_range(0..fx.contacts.len())];
        let name = format!(
            "{} {}",
            c.first_name.as_deref().unwrap_or(""),
            c.last_name.as_deref().unwrap_or("")
        );
        let chars: Vec<char> = name.trim().chars().collect();
        for end in 1..=chars.len() {
            if chars[end - 1] != ' ' {
                typing.push(chars[..end].iter().collect::<String>());
            }
        }
        prefixes.extend(
            (1..=6.min(chars.len()))
                .map(|k| chars[..k].iter().collect::<String>())
                .filter(|p| !p.ends_with(' ')),
        );
    }
    let countries: Vec<String> = ["DE", "FR", "SE", "PL", "US", "JP", "BR", "ES"]
        .map(String::from)
        .to_vec();
    let offsets: Vec<usize> = (0..100)
        .map(|_| rng.random_range(0..n.saturating_sub(100).max(1)))
        .collect();
    let facets: Vec<String> = ["lifecycle_stage", "country", "owner_id"]
        .map(String::from)
        .to_vec();

    let mut c = Criterion::default()
        .configure_from_args()
        .output_directory(&crit_dir)
        .sample_size(20)
        .warm_up_time(Duration::from_secs_f64((secs / 3.0).max(0.2)))
        .measurement_time(Duration::from_secs_f64(secs))
        .without_plots();
    let f = &store.schema.fields;
    {
        let mut next = cycle(&typo);
        c.bench_function("query building: parse + plan a two-word fuzzy query", |b| {
            b.iter(|| {
                let parsed = query::parse(next());
                std::hint::black_box(query::build(
                    &parsed,
                    Scope::Contacts,
                    f,
                    Typos::Normal,
                    &[],
                ))
            })
        });
    }
    for (layout, store, tenant) in [
        ("merged", &store, tenant),
        ("CDC-built", &cdc_store, cdc.tenant),
    ] {
        let run =
            |req: &Request| search::search(store, tenant, Scope::Contacts, req).expect("search");
        {
            let mut next = cycle(&typo);
            c.bench_function(
                &format!("{layout}: fuzzy: misspelled two-word name, 3 facets, exact total"),
                |b| {
                    b.iter(|| {
                        run(&Request {
                            q: next().clone(),
                            facets: facets.clone(),
                            highlight: true,
                            ..Request::default()
                        })
                        .total
                    })
                },
            );
        }
        {
            let mut next = cycle(&typing);
            c.bench_function(
                &format!("{layout}: as-you-type: each keystroke of a name, exact total"),
                |b| {
                    b.iter(|| {
                        run(&Request {
                            q: next().clone(),
                            highlight: true,
                            ..Request::default()
                        })
                        .total
                    })
                },
            );
        }
        {
            let mut next = cycle(&prefixes);
            c.bench_function(
                &format!("{layout}: autocomplete: prefixes of 1–6 letters, 8 suggestions"),
                |b| {
                    b.iter(|| {
                        search::autocomplete(store, tenant, next(), 8)
                            .expect("autocomplete")
                            .len()
                    })
                },
            );
        }
        {
            let mut next = cycle(&countries);
            c.bench_function(
                &format!("{layout}: facets: country filter, 3 disjunctive facets, 50 rows"),
                |b| {
                    b.iter(|| {
                        let filter =
                            search::parse_filter(&serde_json::json!({"country": [next()]}))
                                .expect("filter");
                        run(&Request {
                            filter,
                            facets: facets.clone(),
                            limit: 50,
                            ..Request::default()
                        })
                        .total
                    })
                },
            );
        }
        c.bench_function(
            &format!("{layout}: stats: 7 whole-tenant facets, top 20 each, computed"),
            |b| {
                b.iter(|| {
                    search::compute_stats(store, tenant, Scope::Contacts, 20)
                        .expect("stats")
                        .total
                })
            },
        );
        {
            let mut next = cycle(&offsets);
            c.bench_function(
                &format!("{layout}: deep window: 100 rows by last name at any offset"),
                |b| {
                    b.iter(|| {
                        run(&Request {
                            sort: Some("last_name:asc".into()),
                            offset: *next(),
                            limit: 100,
                            ..Request::default()
                        })
                        .hits
                        .len()
                    })
                },
            );
        }
    }

    // vectors: the usearch graph (f16, as served) cached on disk, and the
    // exact scan it replaces
    let mut vrng = StdRng::seed_from_u64(42);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS).map(|_| unit(&mut vrng)).collect();
    let base = clustered(&mut vrng, &centres, nv);
    let queries = clustered(&mut vrng, &centres, 200);
    let cfg = VectorConfig::default();
    let graph = root.join(format!("usearch-{nv}.f16"));
    let index = match UsearchIndex::load(&cfg, &graph) {
        Ok(i) => i,
        Err(_) => {
            let i = UsearchIndex::new(&cfg, nv)?;
            base.par_iter()
                .enumerate()
                .try_for_each(|(s, v)| i.add(s as u32, v))?;
            i.save(&graph)?;
            i
        }
    };
    {
        let mut next = cycle(&queries);
        c.bench_function(&format!("vectors: exact scan of {nv}, top 10"), |b| {
            b.iter(|| {
                let q = next();
                let mut d: Vec<(f32, usize)> = base
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (distance(q, v), i))
                    .collect();
                d.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
                d[0].1
            })
        });
    }
    {
        let mut next = cycle(&queries);
        c.bench_function(
            &format!(
                "vectors: usearch search of {nv}, top 10, ef {}",
                cfg.ef_search
            ),
            |b| b.iter(|| index.search(next(), 10, &|_| true).map_or(0, |h| h.len())),
        );
    }
    let embedder = crmsearch::embed::shared(None).expect("the model: run scripts/setup");
    {
        let texts: Vec<String> = (0..1000)
            .map(|i| format!("how does contact number {i} like to be reached"))
            .collect();
        let mut next = cycle(&texts);
        c.bench_function("embedding: one query text (~10 tokens), model only", |b| {
            b.iter(|| embedder.embed_batch(&[next().as_str()]).expect("embed"))
        });
    }
    c.final_summary();
    rt.block_on(ix.shutdown());
    rt.block_on(cdc.indexer.shutdown());
    drop(fx);

    let mut r = Results::new(
        "micro",
        format!(
            "MICRO_CONTACTS={n} MICRO_VECTORS={nv} MICRO_SECS={secs} cargo bench --bench micro"
        ),
    );
    let mut md = format!(
        "## Micro-benchmarks (`cargo bench --bench micro`, criterion)\n\n\
         On the search bench's cached contact indexes of {docs} documents: `merged`, its \
         snapshot merged into {segments} segment(s), and `CDC-built`, the same contacts loaded \
         through the bulk API's path and indexed by CDC as the merge policy left it \
         ({cdc_segments} segments); and a cached usearch graph (f16) of {nv} clustered vectors; each benchmark cycles through varied inputs \
         drawn from the data, so a figure is a median over a mix, not one query. Median and \
         criterion's 95 % interval; {secs} s of measurement each.\n\n\
         | benchmark | median | 95 % interval |\n|---|---|---|\n"
    );
    for (id, med, lo, hi) in estimates(&crit_dir) {
        md += &format!(
            "| {id} | {} | {} – {} |\n",
            time_of(med),
            time_of(lo),
            time_of(hi)
        );
        r.metric(&id, med / 1e6);
    }
    r.md = md;
    r.write()?;
    Ok(())
}
