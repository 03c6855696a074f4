//! Embedding speed and agreement: one query text at a time (the search
//! path, one thread), a ~32-token query, bulk (`embed_many` on the rayon
//! pool), and cosine to the reference implementation
//! (`fixtures/embeddings/reference.json`). `cargo bench --bench embed`
//! (env EMBED_N=200; CRMSEARCH_MODEL_DIR for another build of the model).

mod common;

use std::time::Instant;

use common::{Results, env, pct, time};

fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let n = env("EMBED_N", 200usize);
    // CRMSEARCH_MODEL_DIR, as for the service: another build of the model
    let dir = std::env::var_os("CRMSEARCH_MODEL_DIR").map(std::path::PathBuf::from);
    let e = crmsearch::embed::shared(dir.as_deref()).expect("the model: run scripts/setup");
    let short: Vec<String> = (0..n)
        .map(|i| format!("how does contact number {i} like to be reached"))
        .collect();
    let long: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "Anna prefers to be contacted by email, never before 10am, and the quarterly \
                 review number {i} with Müller GmbH moved to Thursday afternoon, in room four"
            )
        })
        .collect();
    let tokens = |texts: &[String]| {
        texts.iter().map(|t| e.count_tokens(t) + 2).sum::<usize>() as f64 / texts.len() as f64
    };
    let (short_tokens, long_tokens) = (tokens(&short), tokens(&long));
    for t in short.iter().chain(&long).take(20) {
        e.embed_batch(&[t.as_str()]).expect("embed"); // warm up
    }
    // embed_batch bypasses the query cache: every call runs the model, on
    // this thread. Wall time, and the time this thread was on a core (what
    // the call costs when the machine is busy with something else too).
    let mut on_cpu = (Vec::new(), Vec::new());
    let one = time(&short, |t| {
        let c = thread_cpu_ms();
        std::hint::black_box(e.embed_batch(&[t.as_str()]).expect("embed"));
        on_cpu.0.push(thread_cpu_ms() - c);
    });
    let one_long = time(&long, |t| {
        let c = thread_cpu_ms();
        std::hint::black_box(e.embed_batch(&[t.as_str()]).expect("embed"));
        on_cpu.1.push(thread_cpu_ms() - c);
    });
    // the kernel may count in ticks: only the mean over many calls is exact
    let mean_ms = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let on_cpu = (mean_ms(&on_cpu.0), mean_ms(&on_cpu.1));
    let refs: Vec<&str> = short.iter().map(String::as_str).collect();
    let started = (Instant::now(), process_cpu_ms());
    e.embed_many(&refs).expect("embed");
    let bulk = n as f64 / started.0.elapsed().as_secs_f64();
    // texts per second of all threads' time on a core
    let bulk_per_core = n as f64 / ((process_cpu_ms() - started.1) / 1e3);
    let threads = rayon::current_num_threads();

    let reference: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/embeddings/reference.json"
        ))?)?;
    let texts: Vec<&str> = reference
        .iter()
        .filter_map(|r| r["text"].as_str())
        .collect();
    let want: Vec<Vec<f32>> = reference
        .iter()
        .map(|r| {
            r["embedding"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() as f64;
    let alone: Vec<f64> = texts
        .iter()
        .zip(&want)
        .map(|(t, w)| cosine(&e.embed_batch(&[*t]).expect("embed")[0], w))
        .collect();
    let together: Vec<f64> = e
        .embed_many(&texts)
        .expect("embed")
        .iter()
        .zip(&want)
        .map(|(g, w)| cosine(g, w))
        .collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;

    let mut r = Results::new("embed", format!("EMBED_N={n} cargo bench --bench embed"));
    r.metric("one_query_p50_ms", pct(&one, 0.5));
    r.metric("one_query_p99_ms", pct(&one, 0.99));
    r.metric("query_32_tokens_p50_ms", pct(&one_long, 0.5));
    r.metric("query_32_tokens_p99_ms", pct(&one_long, 0.99));
    r.metric("one_query_on_cpu_mean_ms", on_cpu.0);
    r.metric("query_32_tokens_on_cpu_mean_ms", on_cpu.1);
    r.metric("bulk_texts_per_s", bulk);
    r.metric("bulk_texts_per_core_s", bulk_per_core);
    r.metric("reference_cosine_min", min(&alone).min(min(&together)));
    r.md = format!(
        "## Embedding (`cargo bench --bench embed`)\n\n\
         all-MiniLM-L6-v2 as int8 through ONNX Runtime on the CPU (`src/embed.rs`): a query \
         on one thread (the session's own; the CPU gate gives it one core), bulk over the rayon \
         pool ({threads} threads). {n} texts of each kind.\n\n\
         | measure | value |\n|---|---|\n\
         | one query text, {short_tokens:.0} tokens (the search path) | p50 {:.2} ms, p99 {:.2} ms (on a core: mean {:.2} ms) |\n\
         | one query text, {long_tokens:.0} tokens | p50 {:.2} ms, p99 {:.2} ms (on a core: mean {:.2} ms) |\n\
         | bulk (`embed_many`, batches of alike length, ≤ 32), {short_tokens:.0} tokens | {bulk:.0} texts/s ({bulk_per_core:.0} per second on a core) |\n\
         | cosine to the reference (7 texts, numpy fp64), alone / in one `embed_many` | min {:.4} / {:.4}, mean {:.4} / {:.4} |\n\n\
         \"On a core\" is the time the calling thread was scheduled (`/proc/thread-self/schedstat`): \
         the wall time less the waits for a core when other work shares the machine. \
         A query text that is not in the LRU of 4,096 costs this before any search; \
         a cached one costs nothing.\n",
        pct(&one, 0.5),
        pct(&one, 0.99),
        on_cpu.0,
        pct(&one_long, 0.5),
        pct(&one_long, 0.99),
        on_cpu.1,
        min(&alone),
        min(&together),
        mean(&alone),
        mean(&together),
    );
    r.write()
}

/// Milliseconds this thread has been on a core (0 where the kernel does not
/// say).
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e6)
}

/// Milliseconds all this process's threads have been on a core.
fn process_cpu_ms() -> f64 {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .sum::<f64>()
                / 1e6
        })
        .unwrap_or(0.0)
}
