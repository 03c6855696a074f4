//! What every bench shares: settings from the environment, timing,
//! percentiles. Each bench binary compiles this module and uses a part.
#![allow(dead_code)]

use std::time::Instant;

/// The server's allocator (`src/main.rs`), so that an engine call costs here
/// what it costs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        node: Some("bench".into()),
        shard: None,
        durable_interval: std::time::Duration::from_secs(1),
        durable_docs: 100_000,
        compact_idle: indexer::COMPACT_IDLE,
    }
}

pub mod contacts;
pub mod vecs;

/// What a bench hands to `benches/report.rs`: its section of BENCHMARKS.md
/// (markdown), the figures the goals table reads, and the series the plots
/// draw. Written to `target/bench-results/NAME.json`.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct Results {
    pub name: String,
    /// The command and settings that produced it, e.g. `MEM_N=200000`.
    pub command: String,
    pub md: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub plots: Vec<Series>,
}

/// One line of a plot: `cdf` takes sorted latencies (ms) in `values`;
/// `xy` takes points in `points`.
#[derive(serde::Serialize, serde::Deserialize, Clone, Default)]
pub struct Series {
    /// Which plot (one SVG per id): lines with the same id are drawn together.
    pub plot: String,
    pub kind: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub label: String,
    pub values: Vec<f64>,
    pub points: Vec<(f64, f64)>,
}

pub fn results_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results")
}

impl Results {
    pub fn new(name: &str, command: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            command: command.into(),
            ..Self::default()
        }
    }

    pub fn metric(&mut self, key: &str, value: f64) {
        self.metrics.insert(key.into(), value);
    }

    /// A latency CDF line (`sorted` in ms) on plot `plot`.
    pub fn cdf(&mut self, plot: &str, title: &str, label: &str, sorted: &[f64]) {
        self.plots.push(Series {
            plot: plot.into(),
            kind: "cdf".into(),
            title: title.into(),
            x_label: "latency (ms, log)".into(),
            y_label: "fraction of requests".into(),
            label: label.into(),
            values: sorted.to_vec(),
            points: Vec::new(),
        });
    }

    /// A line through `points` on plot `plot`.
    pub fn xy(
        &mut self,
        plot: &str,
        title: &str,
        axes: (&str, &str),
        label: &str,
        points: Vec<(f64, f64)>,
    ) {
        self.plots.push(Series {
            plot: plot.into(),
            kind: "xy".into(),
            title: title.into(),
            x_label: axes.0.into(),
            y_label: axes.1.into(),
            label: label.into(),
            values: Vec::new(),
            points,
        });
    }

    /// Prints the section and writes `target/bench-results/NAME.json`.
    pub fn write(&self) -> anyhow::Result<()> {
        println!("{}", self.md);
        let dir = results_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(format!("{}.json", self.name)),
            serde_json::to_vec(self)?,
        )?;
        Ok(())
    }
}

/// `p50 / p99` of sorted milliseconds, for tables.
pub fn p50_p99(sorted: &[f64]) -> String {
    format!("{:.2} / {:.2} ms", pct(sorted, 0.5), pct(sorted, 0.99))
}

/// How many times `peer` is `ours` (`12×`, `1.4×`), or `—`.
pub fn ratio(peer: f64, ours: f64) -> String {
    if !(peer.is_finite() && ours.is_finite()) || ours <= 0.0 {
        return "—".into();
    }
    let r = peer / ours;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

/// Resident memory of a process (`self` or a pid) in MiB, and its peak.
pub fn rss_mib(pid: &str) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
