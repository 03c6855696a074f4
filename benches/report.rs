//! Writes `BENCHMARKS.md` and its plots (`benches/plots/*.svg`) from what
//! the benches of one `scripts/bench` run left in `target/bench-results/`:
//! the machine, the commands, a goals table (with the largest gap named),
//! every bench's section, and the plots drawn with plotters.
//!
//! `cargo bench --bench report` (after the others). `BENCH_QUICK=1` marks
//! the document as a smoke run whose numbers are not for comparison.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Results, Series};
use plotters::prelude::*;

/// Sections in reading order; a bench that did not run is left out.
const ORDER: &[&str] = &[
    "load",
    "hostile",
    "scaleout",
    "search",
    "cdc",
    "memories",
    "memories-tenants",
    "ann",
    "embed",
    "ops",
    "chaos",
    "micro",
];

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb / 1_048_576.0));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), {mem} RAM, no GPU")
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A goal: its measured value, the bound, whether higher is better.
struct Goal {
    what: &'static str,
    value: f64,
    bound: f64,
    higher: bool,
    unit: &'static str,
    source: String,
}

impl Goal {
    /// How many times off the goal (1.0 or less: met).
    fn gap(&self) -> f64 {
        if !self.value.is_finite() {
            return f64::INFINITY;
        }
        if self.bound == 0.0 {
            // a count that must be zero
            return if self.value == 0.0 {
                1.0
            } else {
                f64::INFINITY
            };
        }
        if self.higher {
            self.bound / self.value
        } else {
            self.value / self.bound
        }
    }
}

fn goals(all: &BTreeMap<String, Results>) -> Vec<Goal> {
    let get = |bench: &str, key: &str| {
        all.get(bench)
            .and_then(|r| r.metrics.get(key).copied())
            .unwrap_or(f64::NAN)
    };
    let contacts = get("search", "contacts");
    let mut out = vec![
        Goal {
            what: "fuzzy search p99 (two words, facets, exact total)",
            value: get("search", "fuzzy_p99_ms"),
            bound: 5.0,
            higher: false,
            unit: "ms",
            source: format!(
                "search bench, {contacts:.0} documents, CDC-built index ({:.0} segments), engine call",
                get("search", "cdc_segments")
            ),
        },
        Goal {
            what: "throughput with 64 connections, mixed HTTP load",
            value: get("load", "closed_64.qps"),
            bound: 2000.0,
            higher: true,
            unit: "req/s",
            source: "load bench".into(),
        },
        Goal {
            what: "p99 with 64 connections, mixed HTTP load",
            value: get("load", "closed_64.p99_ms"),
            bound: 25.0,
            higher: false,
            unit: "ms",
            source: "load bench".into(),
        },
        Goal {
            what: "documents lost, ghost, stale or doubled after the chaos run's kills",
            value: get("chaos", "drift"),
            bound: 0.0,
            higher: false,
            unit: "",
            source: format!("chaos, {:.0} cycles", get("chaos", "cycles")),
        },
        Goal {
            what: "freshness p99, commit → searchable at 500 writes/s",
            value: get("cdc", "freshness_p99_ms"),
            bound: 100.0,
            higher: false,
            unit: "ms",
            source: "cdc bench".into(),
        },
        Goal {
            what: "vector top 10 p99 (one tenant, engine call)",
            value: get("memories", "vector_p99_ms"),
            bound: 1.0,
            higher: false,
            unit: "ms",
            source: format!(
                "memories bench, {:.0} points, recall@10 {:.3} (goal ≥ 0.95)",
                get("memories", "points"),
                get("memories", "vector_recall")
            ),
        },
        Goal {
            what: "vector top 10 against pgvector at equal recall (p99)",
            value: get(
                "memories",
                "peer_ratio.vector top 10 vs pgvector at equal recall",
            ),
            bound: 5.0,
            higher: true,
            unit: "×",
            source: "memories bench".into(),
        },
        Goal {
            what: "a 1 % agent filter against no filter (p99)",
            value: get("memories", "filter_1pct_ratio"),
            bound: 1.5,
            higher: false,
            unit: "×",
            source: "memories bench".into(),
        },
        Goal {
            what: "text memory search p99 (embedding + search)",
            value: get("memories", "text_p99_ms"),
            bound: 8.0,
            higher: false,
            unit: "ms",
            source: "memories bench".into(),
        },
        Goal {
            what: "memories ingest through CDC",
            value: get("memories", "ingest_per_s"),
            bound: 5000.0,
            higher: true,
            unit: "/s",
            source: "memories bench".into(),
        },
        Goal {
            what: "our ANN queries/s against hnswlib's at recall ≥ 0.95",
            value: get("ann", "qps_ratio_vs_hnswlib"),
            bound: 0.8,
            higher: true,
            unit: "×",
            source: "ann bench, one thread".into(),
        },
        Goal {
            what: "one query embedding p50 (one thread)",
            value: get("embed", "one_query_p50_ms"),
            bound: 3.0,
            higher: false,
            unit: "ms",
            source: "embed bench".into(),
        },
    ];
    // the smallest advantage over the Postgres-only peer, any bench
    let worst = all
        .values()
        .flat_map(|r| {
            r.metrics
                .iter()
                .filter(|(k, _)| k.starts_with("peer_ratio."))
                .map(move |(k, v)| {
                    (
                        format!("{} bench: {}", r.name, &k["peer_ratio.".len()..]),
                        *v,
                    )
                })
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((what, v)) = worst {
        out.push(Goal {
            what: "smallest speed-up over the Postgres-only peer (p99, same queries)",
            value: v,
            bound: 10.0,
            higher: true,
            unit: "×",
            source: what,
        });
    }
    out
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "not measured".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One plot: CDF lines on a log latency axis, or xy lines.
fn draw(path: &Path, series: &[&Series]) -> anyhow::Result<()> {
    let first = series[0];
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let pts = if s.kind == "cdf" {
                let n = s.values.len().max(1);
                let step = (n / 400).max(1);
                s.values
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % step == 0 || *i == n - 1)
                    .map(|(i, v)| (v.max(1e-3), (i + 1) as f64 / n as f64))
                    .collect()
            } else {
                let mut p = s.points.clone();
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                p
            };
            (s.label.clone(), pts)
        })
        .collect();
    let xs = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0));
    let ys = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |a, x| (a.0.min(x), a.1.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |a, y| (a.0.min(y), a.1.max(y)));
    let mut chart = ChartBuilder::on(&root);
    chart
        .caption(&first.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    macro_rules! finish {
        ($c:expr) => {{
            let mut c = $c;
            c.configure_mesh()
                .x_desc(first.x_label.as_str())
                .y_desc(first.y_label.as_str())
                .draw()?;
            for (i, (label, pts)) in lines.iter().enumerate() {
                let color = palette[i % palette.len()];
                c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                if first.kind != "cdf" {
                    c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
                }
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if first.kind == "cdf" {
        finish!(chart.build_cartesian_2d((x0 * 0.9..x1 * 1.1).log_scale(), 0f64..1.0f64)?);
    } else {
        let pad = |a: f64, b: f64| ((b - a).abs() * 0.08).max(1e-9);
        let (px, py) = (pad(x0, x1), pad(y0, y1));
        finish!(chart.build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py).max(0.0)..(y1 + py))?);
    }
    root.present()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = BTreeMap::new();
    for e in std::fs::read_dir(common::results_dir())? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let r: Results = serde_json::from_slice(&std::fs::read(&p)?)?;
            all.insert(r.name.clone(), r);
        }
    }
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    // BENCHMARKS.md and benches/plots/ go under BENCH_OUT_DIR (a quick run
    // writes into target/, not over the real ones)
    let out = std::env::var_os("BENCH_OUT_DIR").map_or(repo.to_owned(), |d| repo.join(d));
    let plots_dir = out.join("benches/plots");
    std::fs::create_dir_all(&plots_dir)?;
    let mut md = String::from("# Benchmarks\n\n");
    if quick {
        md += "> **QUICK RUN** (`scripts/bench --quick`): small sizes that check the \
               harness works. These numbers are not for comparison.\n\n";
    }
    md += &format!(
        "Generated by `scripts/bench` on {} at commit `{}`, on {}. {} build; \
         the embedded PostgreSQL 18 (with pgvector and pg_trgm), the server and the \
         load generators share the same cores. These machines are noisy: every \
         comparison below is between numbers measured in the same run; repeat a run \
         before trusting a difference under ~20 %.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        git(&["rev-parse", "--short", "HEAD"]),
        machine(),
        if quick {
            "Dev (`--profile dev`)"
        } else {
            "Release"
        }
    );
    md += "## Goals\n\n| goal | bound | measured | | where |\n|---|---|---|---|---|\n";
    let gs = goals(&all);
    for g in &gs {
        let met = g.gap() <= 1.0;
        md += &format!(
            "| {} | {} {} {} | {} {} | {} | {} |\n",
            g.what,
            if g.higher { "≥" } else { "≤" },
            fmt(g.bound),
            g.unit,
            fmt(g.value),
            g.unit,
            if met {
                "met".to_owned()
            } else if g.gap().is_finite() {
                format!("**missed, {:.1}× off**", g.gap())
            } else if g.bound == 0.0 && g.value.is_finite() {
                "**missed**".to_owned()
            } else {
                "not measured".to_owned()
            },
            g.source
        );
    }
    if let Some(g) = gs
        .iter()
        .filter(|g| g.gap() > 1.0 && g.gap().is_finite())
        .max_by(|a, b| a.gap().total_cmp(&b.gap()))
    {
        md += &format!(
            "\nThe largest gap: **{}** — {} {} against {} {} ({:.1}× off).\n",
            g.what,
            fmt(g.value),
            g.unit,
            fmt(g.bound),
            g.unit,
            g.gap()
        );
    }
    md += "\nCommands of this run (each bench alone: the same line):\n\n```\n";
    for name in ORDER {
        if let Some(r) = all.get(*name) {
            md += &format!("{}\n", r.command);
        }
    }
    md += "```\n\n";
    for name in ORDER {
        let Some(r) = all.get(*name) else { continue };
        md += r.md.trim_end();
        md += "\n\n";
        let mut by_plot: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
        for s in &r.plots {
            by_plot.entry(s.plot.as_str()).or_default().push(s);
        }
        for (id, series) in by_plot {
            let file = format!("{id}.svg");
            draw(&plots_dir.join(&file), &series)?;
            md += &format!("![{}](benches/plots/{file})\n\n", series[0].title);
        }
    }
    std::fs::write(out.join("BENCHMARKS.md"), md.trim_end().to_owned() + "\n")?;
    println!(
        "wrote {} ({} sections) and its plots",
        out.join("BENCHMARKS.md").display(),
        all.len()
    );
    Ok(())
}
