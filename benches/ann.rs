//! hnsw_rs (through our `HnswIndex`) against hnswlib, faiss and usearch on
//! the same vectors, at equal recall@10: build rate and single-threaded
//! queries per second across an ef sweep. The peers run in Python
//! (`benches/ann_peers.py`, wheels installed by `benches/ann_peers_setup.sh`
//! into `target/bench-venv`); the exact scan is the floor.
//!
//! `cargo bench --bench ann` (env: ANN_N=100000 vectors, ANN_QUERIES=400;
//! ANN_PYTHON=the peers' interpreter). The data comes from the memory bench's generator:
//! 384-dim clustered unit vectors, seed 42.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::vecs::{CLUSTERS, DIM, clustered, truth, unit};
use common::{Results, env, pct};
use indexer::vectors::{HnswIndex, VectorConfig, VectorIndex, distance};
use rand::SeedableRng;
use rand::rngs::StdRng;

const EFS: &[usize] = &[10, 16, 24, 32, 48, 64, 96, 128, 192, 256];

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

    // ours: hnsw_rs behind the index trait, built on the rayon pool
    let cfg = VectorConfig::default();
    let threads = rayon::current_num_threads();
    let t = Instant::now();
    let index = HnswIndex::new(&cfg, n);
    let pts: Vec<(&[f32], usize)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_slice(), i))
        .collect();
    for chunk in pts.chunks(10_000) {
        index.insert(chunk);
    }
    let build_s = t.elapsed().as_secs_f64();
    println!("hnsw_rs: built {n} in {build_s:.1} s");
    let ours: Vec<Point> = EFS
        .iter()
        .map(|&ef| Point {
            ef,
            ..sweep(&queries, &truth_all, |q| {
                index
                    .search(q, 10, ef, &|_| true)
                    .into_iter()
                    .map(|x| x.0)
                    .collect()
            })
        })
        .collect();
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
    drop(index);

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
    peers.insert(
        0,
        Peer {
            name: "hnsw_rs (crmsearch)".into(),
            package: "hnsw_rs 0.3".into(),
            build_rate: n as f64 / build_s,
            points: ours.clone(),
            error: None,
        },
    );

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
         | index | package | build rate | QPS at recall ≥ 0.95 (ef, latency) | QPS at recall ≥ 0.99 (ef, latency) | best recall |\n|---|---|---|---|---|---|\n",
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
                "| {} | — | failed: {} | | | |\n",
                p.name,
                e.replace('|', "/")
            );
            continue;
        }
        md += &format!(
            "| {} | {} | {:.0}/s | {} | {} | {:.3} |\n",
            p.name,
            p.package,
            p.build_rate,
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
        "| exact scan (SIMD dot, one thread) | — | — | {:.0} (p99 {:.2} ms) at recall {:.3} | | |\n\n",
        exact.qps, exact.p99_ms, exact.recall
    );
    let ours95 = at_recall(&ours, 0.95);
    md += "hnsw_rs against each peer at recall ≥ 0.95 (QPS ratio, > 1: hnsw_rs faster) and in build rate:\n\n\
           | peer | QPS hnsw_rs ÷ peer | build rate hnsw_rs ÷ peer |\n|---|---|---|\n";
    for p in peers.iter().skip(1).filter(|p| p.error.is_none()) {
        let q = match (ours95, at_recall(&p.points, 0.95)) {
            (Some(a), Some(b)) => format!("{:.2}×", a.qps / b.qps),
            _ => "—".into(),
        };
        md += &format!(
            "| {} | {q} | {:.2}× |\n",
            p.name,
            peers[0].build_rate / p.build_rate
        );
        if let (Some(a), Some(b)) = (ours95, at_recall(&p.points, 0.95)) {
            r.metric(&format!("qps_ratio_vs_{}", p.name), a.qps / b.qps);
        }
    }
    md += "\nIn the product a query also pays the collection's lock, the tombstone and \
           filter checks and the id lookup (see the memory bench for the engine call), and \
           collections under 5,000 points are scanned exactly.\n";
    r.md = md;
    r.write()?;
    Ok(())
}
