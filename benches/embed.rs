//! Embedding speed: one query text at a time (the search path) and batches
//! (bulk writes). `cargo bench --bench embed` (env EMBED_N=200).

mod common;

use std::time::Instant;

use common::{Results, env, pct, time};

fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
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
    let threads = rayon::current_num_threads();
    let mut r = Results::new("embed", format!("EMBED_N={n} cargo bench --bench embed"));
    r.metric("one_query_p50_ms", pct(&one, 0.5));
    r.metric("one_query_p99_ms", pct(&one, 0.99));
    r.md = format!(
        "## Embedding (`cargo bench --bench embed`)\n\n\
         all-MiniLM-L6-v2 through candle on the CPU ({threads} threads), {n} texts of ~10 tokens.\n\n\
         | measure | value |\n|---|---|\n\
         | one query text (the search path) | p50 {:.2} ms, p99 {:.2} ms |\n\
         | bulk (`embed_many`, batches of 32) | {:.0} texts/s |\n\n\
         A query text that is not in the LRU of 4,096 costs this before any search; \
         a cached one costs nothing.\n",
        pct(&one, 0.5),
        pct(&one, 0.99),
        n as f64 / bulk
    );
    r.write()
}
