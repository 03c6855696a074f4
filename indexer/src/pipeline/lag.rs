//! How far the index is behind the server, and for how long it has not
//! moved while behind: the figures `/readyz`, status and the lag gauges
//! share. The lag stage refreshes the gauges every few seconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use tokio::sync::watch;

use super::{Progress, Shared};
use crate::Lsn;

/// The index is *stalled* when it stays behind the server without moving
/// for longer than this (a healthy stream passes a heartbeat in
/// milliseconds).
pub const STALL_AFTER: Duration = Duration::from_secs(15);

/// The index's position against the server's.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Lag {
    pub server_lsn: Lsn,
    pub applied_lsn: Lsn,
    pub lag_bytes: u64,
    /// Since the commit of the last applied transaction (0 when caught up).
    pub lag_ms: u64,
    /// How long the index has been behind without moving (0 when it moves
    /// or is caught up).
    pub stalled_ms: u64,
}

/// Remembers since when the visible position has not moved while behind.
#[derive(Debug, Default)]
pub(crate) struct StallWatch(Mutex<Option<(Lsn, Instant)>>);

impl StallWatch {
    /// Records one look at the positions; returns how long the index has
    /// been behind without moving.
    pub fn observe(&self, applied: Lsn, server: Lsn) -> Duration {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if applied >= server {
            *g = None;
            return Duration::ZERO;
        }
        match *g {
            Some((at, since)) if at == applied => since.elapsed(),
            _ => {
                *g = Some((applied, Instant::now()));
                Duration::ZERO
            }
        }
    }
}

impl Progress {
    /// The lag against `server` (a fresh read of the server's position).
    pub fn lag(&self, server: Lsn) -> Lag {
        let applied = self.visible();
        let lag_bytes = server.0.saturating_sub(applied.0);
        let lag_ms = if lag_bytes == 0 {
            0
        } else {
            self.last_commit()
                .map_or(0, |t| (Utc::now() - t).num_milliseconds().max(0) as u64)
        };
        Lag {
            server_lsn: server,
            applied_lsn: applied,
            lag_bytes,
            lag_ms,
            stalled_ms: self.stall.observe(applied, server).as_millis() as u64,
        }
    }
}

/// Sets the lag gauges from `lag`.
pub(crate) fn record(lag: &Lag, progress: &Progress) {
    metrics::gauge!("crmsearch_cdc_lag_bytes").set(lag.lag_bytes as f64);
    metrics::gauge!("crmsearch_cdc_lag_ms").set(lag.lag_ms as f64);
    metrics::gauge!("crmsearch_cdc_stalled_seconds").set(lag.stalled_ms as f64 / 1e3);
    metrics::gauge!("crmsearch_cdc_durable_behind_bytes")
        .set(lag.applied_lsn.0.saturating_sub(progress.durable().0) as f64);
}

/// The lag stage: the gauges every few seconds. Postgres not answering is
/// the source's concern, not a failure of this stage.
pub(super) async fn run_lag_metrics(
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let server = tokio::select! {
            server = crate::wal::position(&sh.pool) => server,
            _ = stop.changed() => return Ok(()),
        };
        let Ok(server) = server else {
            continue;
        };
        record(&sh.progress.lag(server), &sh.progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_behind_and_not_moving() {
        let w = StallWatch::default();
        assert_eq!(w.observe(Lsn(5), Lsn(5)), Duration::ZERO, "caught up");
        assert_eq!(
            w.observe(Lsn(5), Lsn(9)),
            Duration::ZERO,
            "first look behind"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.observe(Lsn(5), Lsn(9)) > Duration::ZERO, "still there");
        assert_eq!(w.observe(Lsn(6), Lsn(9)), Duration::ZERO, "moved");
        assert_eq!(w.observe(Lsn(9), Lsn(9)), Duration::ZERO, "caught up");
    }
}
