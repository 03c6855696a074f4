//! CDC measurements on the embedded Postgres (release build):
//! - freshness: commit → searchable latency at a fixed write rate;
//! - bootstrap: indexing N contacts from a snapshot on first start;
//! - restart to ready: reopening the index and resuming the stream.
//!
//! `cargo bench --bench cdc` (env: CDC_RATE=500, CDC_SECS=60, CDC_CONTACTS=500000).
//! Prints its section of BENCHMARKS.md and writes `target/bench-results/cdc.json`.

mod common;

use std::time::{Duration, Instant};

use common::{Results, env, pct};
use crmsearch::db;
use crmsearch::search::{self, Request, Scope};
use indexer::{Indexer, Lsn};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let rate = env("CDC_RATE", 500u64);
    let secs = env("CDC_SECS", 60u64);
    let contacts = env("CDC_CONTACTS", 500_000u64);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-cdc");
    let _ = std::fs::remove_dir_all(&root);
    let (pg, url, pool) = common::database(&root, 8).await?;
    let (tenant, _) = crmsearch::auth::create_tenant(&pool, "bench")
        .await
        .map_err(crmsearch::cli::anyhow_of)?;
    let cfg = common::indexer_config(&root, &url);

    // 1. freshness at a fixed rate
    let ix = Indexer::start(cfg.clone(), pool.clone()).await?;
    let mut lat = Vec::with_capacity((rate * secs) as usize);
    let mut waiters = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut n = 0u64;
    let mut conn = pool.acquire().await?;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        sqlx::query("INSERT INTO contacts (tenant_id, first_name, last_name, emails) VALUES ($1, $2, 'Fresh', ARRAY[$3])")
            .bind(tenant)
            .bind(format!("F{n}"))
            .bind(format!("f{n}@example.com"))
            .execute(&mut *conn)
            .await?;
        let committed = Instant::now();
        let lsn: Lsn = db::write_position(&mut *conn).await?;
        let mut rx = ix.progress.subscribe();
        waiters.push(tokio::spawn(async move {
            let _ = rx.wait_for(|v| *v >= lsn).await;
            committed.elapsed().as_secs_f64() * 1e3
        }));
        n += 1;
    }
    let achieved = n as f64 / started.elapsed().as_secs_f64();
    // the last write is followed by no other: a heartbeat moves the stream past it
    let last = db::write_position(&pool).await?;
    ix.wait_for(last, Duration::from_secs(10)).await;
    for w in waiters {
        lat.push(w.await?);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    ix.shutdown().await;
    drop(ix);

    // 2. bootstrap: N contacts, a fresh index and slot
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO contacts (tenant_id, external_id, first_name, last_name, emails, phones, phones_normalized,
                               city, country, lifecycle_stage, tags, notes)
         SELECT $1, 'b' || i, (ARRAY['Anna','Jürgen','Åsa','François','Łukasz','Søren','José','John'])[1 + i % 8],
                'Family' || (i % 9973), ARRAY['p' || i || '@example.com'], ARRAY['+46 8 ' || (1000000 + i)],
                ARRAY['+468' || (1000000 + i)], (ARRAY['Berlin','Malmö','Paris','Kraków'])[1 + i % 4],
                (ARRAY['DE','SE','FR','PL'])[1 + i % 4], (ARRAY['lead','customer','mql'])[1 + i % 3],
                ARRAY['t' || (i % 7)], 'Met at the fair; follow up about plan ' || (i % 100)
           FROM generate_series(1, $2) i",
    )
    .bind(tenant)
    .bind(contacts as i64)
    .execute(&pool)
    .await?;
    let load_secs = t.elapsed().as_secs_f64();
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(cfg.slot())
        .execute(&pool)
        .await?;
    std::fs::remove_dir_all(&cfg.index_dir)?;
    let t = Instant::now();
    let ix = Indexer::start(cfg.clone(), pool.clone()).await?;
    let bootstrap_secs = t.elapsed().as_secs_f64();
    let indexed = ix.store.count(schema::index::DocType::Contact);
    ix.shutdown().await;
    drop(ix);

    // 3. restart to ready: open the index, check the slot, stream, answer
    let t = Instant::now();
    let ix = Indexer::start(cfg.clone(), pool.clone()).await?;
    let now = db::write_position(&pool).await?;
    ix.wait_for(now, Duration::from_secs(30)).await;
    let store = ix.store.clone();
    let hits = tokio::task::spawn_blocking(move || {
        search::search(
            &store,
            tenant,
            Scope::Contacts,
            &Request {
                q: "anna".into(),
                limit: 10,
                ..Request::default()
            },
        )
    })
    .await??;
    let restart_secs = t.elapsed().as_secs_f64();
    assert!(!ix.rebuilt && hits.total > 0);
    ix.shutdown().await;

    let mut r = Results::new(
        "cdc",
        format!("CDC_RATE={rate} CDC_SECS={secs} CDC_CONTACTS={contacts} cargo bench --bench cdc"),
    );
    r.metric("freshness_p50_ms", pct(&lat, 0.5));
    r.metric("freshness_p99_ms", pct(&lat, 0.99));
    r.cdf(
        "cdc-freshness-cdf",
        "Freshness: commit → searchable",
        &format!("{achieved:.0} writes/s"),
        &lat,
    );
    let p99 = pct(&lat, 0.99);
    r.md = format!(
        "## CDC: freshness, bootstrap, restart (`cargo bench --bench cdc`)\n\n\
         | measure | value |\n|---|---|\n\
         | freshness, commit → searchable, {achieved:.0} writes/s for {secs} s ({} writes) | p50 {:.1} ms, p95 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms |\n\
         | load {contacts} contacts into Postgres (INSERT … SELECT) | {load_secs:.1} s |\n\
         | bootstrap {indexed} contacts from a snapshot | {bootstrap_secs:.1} s ({:.0} docs/s) |\n\
         | restart to ready with {indexed} indexed (open, resume, first search) | {:.0} ms |\n\n\
         Goal: freshness p99 ≤ 100 ms — {}.\n\n{NOTES}",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 1.0),
        indexed as f64 / bootstrap_secs,
        restart_secs * 1e3,
        if p99 <= 100.0 { "met" } else { "missed" },
    );
    r.write()?;
    drop(pg);
    Ok(())
}

const NOTES: &str = "\
- *Freshness*: one writer inserts a contact per transaction at a fixed rate;
  the clock starts when `COMMIT` returns and stops when the indexer's visible
  position (what searches see) reaches the write's `lsn`. Searchable, not
  durable: durable commits run every second in the background. The streaming
  writer uses one indexing thread and a 24 MiB arena (a tantivy commit
  allocates a segment writer sized by the arena; a larger arena made every
  small commit slower); snapshots use a separate large writer.
- *Bootstrap*: a fresh slot and an empty index; `Indexer::start` returns once
  the snapshot is indexed and durably committed.
- *Restart to ready* (in process): the indexer of the bootstrapped index is
  stopped and started again (open the index, check the slot, connect the
  stream), then waits until it has passed the server's current position and
  answers a search. The whole process (exec, embedded Postgres, `/readyz`) is
  measured by the load bench.
";
