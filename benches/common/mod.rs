//! What every bench shares: settings from the environment, timing,
//! percentiles. Each bench binary compiles this module and uses a part.
#![allow(dead_code)]

use std::time::Instant;

/// A numeric setting from the environment, or its default.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0–1) of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Starts a bench binary: false under `--list` (cargo's test harness probe,
/// nothing to run), otherwise sets up text logs.
pub fn begin() -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    crmsearch::telemetry::init(crmsearch::config::LogFormat::Text);
    true
}

/// Milliseconds of each run of `f` over `inputs`, sorted.
pub fn time<T>(inputs: &[T], mut f: impl FnMut(&T)) -> Vec<f64> {
    let mut out: Vec<f64> = inputs
        .iter()
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

pub async fn time_pg<T>(
    inputs: &[T],
    mut f: impl AsyncFnMut(&T) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(inputs.len());
    for i in inputs {
        let t = Instant::now();
        f(i).await?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

/// The embedded Postgres of a bench under `pg_root`, with a migrated
/// `crmsearch` database: the server (stopped when dropped), its URL, a pool.
pub async fn database(
    pg_root: &std::path::Path,
    connections: u32,
) -> anyhow::Result<(
    crmsearch::embedded_pg::EmbeddedPostgres,
    String,
    sqlx::PgPool,
)> {
    use crmsearch::db;
    let bin = crmsearch::embedded_pg::find_bin_dir().expect("run scripts/setup first");
    let pg = db::start_embedded(pg_root, Some(&bin)).await?;
    db::ensure_database(&pg.url("postgres"), "crmsearch").await?;
    let url = pg.url("crmsearch");
    let pool = db::connect(&url, connections).await?;
    db::migrate(&pool).await?;
    Ok((pg, url, pool))
}

/// The indexer of a bench: its index under `root/index`, durable every second.
pub fn indexer_config(root: &std::path::Path, url: &str) -> indexer::IndexerConfig {
    indexer::IndexerConfig {
        database_url: url.to_owned(),
        index_dir: root.join("index"),
        node: "bench".into(),
        durable_interval: std::time::Duration::from_secs(1),
        durable_docs: 100_000,
    }
}
