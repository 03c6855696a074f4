//! What every bench shares: settings from the environment, percentiles.

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
