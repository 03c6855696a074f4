//! The vector indexes crmsearch could serve from, on the same vectors at
//! equal recall@10: build rate, memory and single-threaded queries per second
//! across an ef sweep. In Rust: usearch (what crmsearch serves from, through
//! our `UsearchIndex`, storing f16; also f32 and i8), hnsw_rs (the previous
//! choice) and hnswlib-rs; beside them hnswlib, faiss and usearch from
//! Python. The Python peers run
//! (`benches/ann_peers.py`, wheels installed by `benches/ann_peers_setup.sh`
//! into `target/bench-venv`); the exact scan is the floor.
//!
//! `cargo bench --bench ann` (env: ANN_N=100000 vectors, ANN_QUERIES=400;
//! ANN_INDEXES=the Rust indexes, comma-separated; ANN_PEERS=the Python ones;
//! ANN_PYTHON=the peers' interpreter). The data comes from the memory bench's generator:
//! 384-dim clustered unit vectors, seed 42.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::vecs::{CLUSTERS, DIM, clustered, truth, unit};
use common::{Results, env, pct};
use indexer::vectors::{Storage, UsearchIndex, VectorConfig, VectorIndex, distance};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

const EFS: &[usize] = &[10, 16, 24, 32, 48, 64, 96, 128, 192, 256];

/// The index crmsearch serves from.
const OURS: &str = "usearch-f16";

type Searcher = Box<dyn Fn(&[f32], usize) -> Vec<usize>>;

/// Builds one of the Rust indexes over `base` on the rayon pool (M 16,
/// ef_construction 100): its package and a search at a given ef.
fn build_index(name: &str, base: &[Vec<f32>]) -> Option<(String, Searcher)> {
    let cfg = VectorConfig::default();
    let n = base.len();
    let usearch = |storage| -> Option<(String, Searcher)> {
        let index = UsearchIndex::new(
            &VectorConfig {
                storage,
                ..cfg.clone()
            },
            n,
        )
        .ok()?;
        base.par_iter()
            .enumerate()
            .for_each(|(i, v)| index.add(i as u32, v).expect("add"));
        Some((
            format!("usearch {}", usearch_version()),
            Box::new(move |q: &[f32], ef| {
                index.set_ef(ef);
                index
                    .search(q, 10, &|_| true)
                    .expect("search")
                    .into_iter()
                    .map(|x| x.0 as usize)
                    .collect()
            }),
        ))
    };
    match name {
        "usearch-f16" => usearch(Storage::F16),
        "usearch-f32" => usearch(Storage::F32),
        "usearch-i8" => usearch(Storage::I8),
        "hnsw_rs" => {
            use hnsw_rs::anndists::dist::DistDot;
            let mut h = hnsw_rs::hnsw::Hnsw::<f32, DistDot>::new(
                cfg.max_connections,
                n,
                16,
                cfg.ef_construction,
                DistDot,
            );
            h.set_extend_candidates(false);
            let pts: Vec<(&[f32], usize)> = base
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_slice(), i))
                .collect();
            for chunk in pts.chunks(10_000) {
                h.parallel_insert_slice(&chunk.to_vec());
            }
            Some((
                "hnsw_rs 0.3".into(),
                Box::new(move |q: &[f32], ef| {
                    h.search(q, 10, ef.max(10))
                        .into_iter()
                        .map(|x| x.d_id)
                        .collect()
                }),
            ))
        }
        "hnswlib-rs" => {
            use hnswlib_rs::{Hnsw, HnswConfig, InMemoryVectorStore, InnerProduct};
            let hcfg = HnswConfig::new(DIM, n)
                .m(cfg.max_connections)
                .ef_construction(cfg.ef_construction);
            let h: Hnsw<usize, InnerProduct> = Hnsw::new(InnerProduct::new(), hcfg);
            let store = InMemoryVectorStore::new(DIM, n);
            base.par_iter()
                .enumerate()
                .for_each(|(i, v)| h.insert(&store, i, v).expect("insert"));
            Some((
                "hnswlib-rs 0.8".into(),
                Box::new(move |q: &[f32], ef| {
                    h.set_ef_search(ef);
                    h.search(&store, q, 10, None)
                        .expect("search")
                        .into_iter()
                        .map(|x| x.key)
                        .collect()
                }),
            ))
        }
        _ => None,
    }
}

fn usearch_version() -> String {
    let lock = include_str!("../Cargo.lock");
    lock.split("[[package]]")
        .find(|p| p.contains("name = \"usearch\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("2".into(), |v| v.trim_matches('"').to_owned())
}

#[derive(serde::Deserialize, Clone)]
struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(serde::Deserialize, Clone)]
struct Peer {
    name: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    build_rate: f64,
    #[serde(default)]
    points: Vec<Point>,
    #[serde(default)]
    error: Option<String>,
    /// Resident memory the built index added, MiB (the Rust indexes).
    #[serde(default)]
    mib: Option<f64>,
}

#[derive(serde::Deserialize)]
struct PeerRun {
    peers: Vec<Peer>,
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    Ok(w.flush()?)
}

fn recall(got: &[Vec<usize>], truth: &[Vec<usize>]) -> f64 {
    let found: usize = got
        .iter()
        .zip(truth)
        .map(|(g, t)| g.iter().filter(|i| t.contains(i)).count())
        .sum();
    found as f64 / (10 * truth.len()) as f64
}

/// Times each query alone on this thread: (recall, qps, p50, p99).
fn sweep(
    queries: &[Vec<f32>],
    truth_all: &[Vec<usize>],
    f: impl Fn(&[f32]) -> Vec<usize>,
) -> Point {
    for q in queries.iter().take(20) {
        std::hint::black_box(f(q));
    }
    let mut got = Vec::with_capacity(queries.len());
    let mut lat = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        got.push(f(q));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total: f64 = lat.iter().sum();
    lat.sort_by(|a, b| a.total_cmp(b));
    Point {
        ef: 0,
        recall: recall(&got, truth_all),
        qps: queries.len() as f64 / (total / 1e3),
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
    }
}

/// The fastest point at or above `target` recall.
fn at_recall(points: &[Point], target: f64) -> Option<&Point> {
    points
        .iter()
        .filter(|p| p.recall >= target)
        .max_by(|a, b| a.qps.total_cmp(&b.qps))
}

fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let n = env("ANN_N", 100_000usize);
    let nq = env("ANN_QUERIES", 400usize);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-ann");
    std::fs::create_dir_all(&root)?;
    let mut rng = StdRng::seed_from_u64(42);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS).map(|_| unit(&mut rng)).collect();
    let base = clustered(&mut rng, &centres, n);
    let queries = clustered(&mut rng, &centres, nq);
    let truth_all = truth(&base, &queries);
    write_f32(&root.join("base.f32"), &base)?;
    write_f32(&root.join("queries.f32"), &queries)?;
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(root.join("truth.u32"))?);
        for t in &truth_all {
            for i in t {
                w.write_all(&(*i as u32).to_le_bytes())?;
            }
        }
        w.flush()?;
    }

    // the Rust indexes, each built on the rayon pool and swept on this thread
    let threads = rayon::current_num_threads();
    let chosen = std::env::var("ANN_INDEXES")
        .unwrap_or_else(|_| "usearch-f16,usearch-f32,usearch-i8,hnsw_rs,hnswlib-rs".into());
    let mut ours: Vec<Peer> = Vec::new();
    for name in chosen.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rss_before = common::rss_mib("self").0;
        let t = Instant::now();
        let Some((package, index)) = build_index(name, &base) else {
            eprintln!("unknown index {name}");
            continue;
        };
        let build_s = t.elapsed().as_secs_f64();
        let rss = common::rss_mib("self").0 - rss_before;
        println!("{name}: built {n} in {build_s:.1} s, {rss:.0} MiB");
        let points: Vec<Point> = EFS
            .iter()
            .map(|&ef| Point {
                ef,
                ..sweep(&queries, &truth_all, |q| index(q, ef))
            })
            .collect();
        drop(index);
        ours.push(Peer {
            name: if name == OURS {
                format!("{name} (crmsearch)")
            } else {
                name.to_owned()
            },
            package,
            build_rate: n as f64 / build_s,
            points,
            error: None,
            mib: Some(rss),
        });
    }
    let exact = sweep(&queries, &truth_all, |q| {
        let mut d: Vec<(f32, usize)> = base
            .iter()
            .enumerate()
            .map(|(i, v)| (distance(q, v), i))
            .collect();
        d.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
        d.truncate(10);
        d.into_iter().map(|x| x.1).collect()
    });

    // the peers, same files
    let python = std::env::var("ANN_PYTHON").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-venv/bin/python")
            .display()
            .to_string()
    });
    let out = root.join("peers.json");
    let _ = std::fs::remove_file(&out);
    let efs: Vec<String> = EFS.iter().map(ToString::to_string).collect();
    let status = std::process::Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/ann_peers.py"))
        .arg("--base")
        .arg(root.join("base.f32"))
        .arg("--queries")
        .arg(root.join("queries.f32"))
        .arg("--truth")
        .arg(root.join("truth.u32"))
        .args([
            "--dim",
            &DIM.to_string(),
            "--k",
            "10",
            "--m",
            "16",
            "--ef-construction",
            "100",
        ])
        .args(["--efs", &efs.join(","), "--threads", &threads.to_string()])
        .args([
            "--libs",
            &std::env::var("ANN_PEERS").unwrap_or_else(|_| "hnswlib,faiss,usearch".into()),
        ])
        .arg("--out")
        .arg(&out)
        .status();
    let mut peers: Vec<Peer> = match status {
        Ok(s) if s.success() => serde_json::from_slice::<PeerRun>(&std::fs::read(&out)?)?.peers,
        other => {
            eprintln!(
                "the ANN peers did not run ({other:?}); run benches/ann_peers_setup.sh target/bench-venv"
            );
            Vec::new()
        }
    };
    peers.splice(0..0, ours);

    // the report
    let mut r = Results::new(
        "ann",
        format!("ANN_N={n} ANN_QUERIES={nq} cargo bench --bench ann"),
    );
    let mut md = format!(
        "## Vector indexes at equal recall (`cargo bench --bench ann`)\n\n\
         {n} clustered unit vectors × {DIM} (the memory bench's generator, seed 42), {nq} queries, \
         exact top 10 as truth. Every index: M 16, ef_construction 100, inner product, built with \
         {threads} threads; queries one at a time on one thread, ef swept over {}. The peers run from \
         their PyPI wheels in the same run (`benches/ann_peers.py`; a Python call adds a few µs per \
         query). hnswlib is the `chroma-hnswlib` wheel (the hnswlib library; the `hnswlib` project \
         publishes no wheel for this Python).\n\n\
         The Rust indexes run in this process (`build_index` below); memory is the resident \
         size the built index added.\n\n\
         | index | package | build rate | memory | QPS at recall ≥ 0.95 (ef, latency) | QPS at recall ≥ 0.99 (ef, latency) | best recall |\n|---|---|---|---|---|---|---|\n",
        efs.join(", ")
    );
    let cell = |p: Option<&Point>| {
        p.map_or("not reached".into(), |p| {
            format!(
                "{:.0} (ef {}, p50 {:.2} / p99 {:.2} ms)",
                p.qps, p.ef, p.p50_ms, p.p99_ms
            )
        })
    };
    for p in &peers {
        if let Some(e) = &p.error {
            md += &format!(
                "| {} | — | failed: {} | | | | |\n",
                p.name,
                e.replace('|', "/")
            );
            continue;
        }
        md += &format!(
            "| {} | {} | {:.0}/s | {} | {} | {} | {:.3} |\n",
            p.name,
            p.package,
            p.build_rate,
            p.mib.map_or("—".into(), |m| format!("{m:.0} MiB")),
            cell(at_recall(&p.points, 0.95)),
            cell(at_recall(&p.points, 0.99)),
            p.points.iter().map(|x| x.recall).fold(0.0, f64::max)
        );
        r.xy(
            "ann-recall-qps",
            "Recall@10 against queries/s (one thread)",
            ("recall@10", "queries/s"),
            &p.name,
            p.points.iter().map(|x| (x.recall, x.qps)).collect(),
        );
    }
    md += &format!(
        "| exact scan (dot product, one thread) | — | — | — | {:.0} (p99 {:.2} ms) at recall {:.3} | | |\n\n",
        exact.qps, exact.p99_ms, exact.recall
    );
    let Some(us) = peers.iter().find(|p| p.name.starts_with(OURS)) else {
        r.md = md;
        return r.write();
    };
    let ours95 = at_recall(&us.points, 0.95);
    md += &format!(
        "{OURS} (the index crmsearch serves from) against each at recall ≥ 0.95 (QPS ratio, > 1: \
         {OURS} faster) and in build rate:\n\n\
         | index | QPS {OURS} ÷ it | build rate {OURS} ÷ it |\n|---|---|---|\n"
    );
    for p in peers
        .iter()
        .filter(|p| p.error.is_none() && !p.name.starts_with(OURS))
    {
        let q = match (ours95, at_recall(&p.points, 0.95)) {
            (Some(a), Some(b)) => format!("{:.2}×", a.qps / b.qps),
            _ => "—".into(),
        };
        md += &format!(
            "| {} | {q} | {:.2}× |\n",
            p.name,
            us.build_rate / p.build_rate
        );
        if let (Some(a), Some(b)) = (ours95, at_recall(&p.points, 0.95)) {
            r.metric(&format!("qps_ratio_vs_{}", p.name), a.qps / b.qps);
        }
    }
    md += "\nIn the product a query also pays the collection's lock, the filter checks and \
           the id lookup (see the memory bench for the engine call), and collections under \
           5,000 points are scanned exactly.\n";
    r.md = md;
    r.write()?;
    Ok(())
}
