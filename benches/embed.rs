//! Embedding speed: one query text at a time (the search path) and batches
//! (bulk writes). `cargo bench --bench embed` (env EMBED_N=200).

mod common;

use std::time::Instant;

use common::{env, pct, time};

fn main() {
    if !common::begin() {
        return;
    }
    let n = env("EMBED_N", 200usize);
    let e = crmsearch::embed::shared(None).expect("the model: run scripts/setup");
    let texts: Vec<String> = (0..n)
        .map(|i| format!("how does contact number {i} like to be reached"))
        .collect();
    e.embed_batch(&["warm up"]).expect("embed");
    let one = time(&texts, |t| {
        std::hint::black_box(e.embed_batch(&[t.as_str()]).expect("embed"));
    });
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = Instant::now();
    e.embed_many(&refs).expect("embed");
    let bulk = started.elapsed().as_secs_f64();
    println!(
        "one query: p50 {:.2} ms, p99 {:.2} ms ({n} texts of ~10 tokens); bulk: {:.0} texts/s",
        pct(&one, 0.5),
        pct(&one, 0.99),
        n as f64 / bulk
    );
}
