//! The supervisor: runs every stage of the pipeline (source, mapper,
//! committer, flusher, vector upkeep, lag gauges) as one group. When a
//! stage fails — an error, a panic, or ending while it should run — the
//! others are stopped, the index is reopened from its durable commit (its
//! folder cleaned to what that commit names) and the group starts again
//! from there, after a backoff. Restarts are counted in `/metrics`
//! (`crmsearch_indexer_restarts_total{stage}`) and in [`Health`]; while a
//! failure persists, `/readyz` answers 503.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::Shared;

/// How the pipeline is doing, for `/readyz` and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// Every stage runs.
    Running,
    /// A stage failed: the stages are stopped and the index is being
    /// reopened (or waiting for the next attempt).
    Restarting,
    /// Stopped by shutdown.
    Stopped,
}

/// What status shows of the supervisor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineHealth {
    pub state: PipelineState,
    /// Restarts since the process started.
    pub restarts: u64,
    /// The stage whose failure caused the last restart.
    pub last_failed_stage: Option<&'static str>,
    /// The last failure, as the stage reported it.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Since when the pipeline has been failing (none: it works).
    pub failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Health(Mutex<PipelineHealth>);

impl Default for Health {
    fn default() -> Self {
        Self(Mutex::new(PipelineHealth {
            state: PipelineState::Running,
            restarts: 0,
            last_failed_stage: None,
            last_error: None,
            last_error_at: None,
            failing_since: None,
        }))
    }
}

impl Health {
    pub fn get(&self) -> PipelineHealth {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipelineHealth> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, stage: &'static str, error: String) {
        let mut h = self.lock();
        let now = Utc::now();
        h.state = PipelineState::Restarting;
        h.last_failed_stage = Some(stage);
        h.last_error = Some(error);
        h.last_error_at = Some(now);
        h.failing_since.get_or_insert(now);
        metrics::gauge!("crmsearch_indexer_up").set(0.0);
    }

    fn restarted(&self) {
        let mut h = self.lock();
        h.state = PipelineState::Running;
        h.restarts += 1;
        metrics::gauge!("crmsearch_indexer_up").set(1.0);
    }

    /// The restarted pipeline ran for a while: the failure is over.
    fn healthy(&self) {
        let mut h = self.lock();
        if h.state == PipelineState::Running && h.failing_since.take().is_some() {
            tracing::info!(restarts = h.restarts, "the indexer recovered");
        }
    }

    fn stopped(&self) {
        self.lock().state = PipelineState::Stopped;
    }
}

/// The first wait before a restart; it doubles on every failure in a row
/// up to [`MAX_BACKOFF`], and starts over once a run lasted
/// [`STABLE_AFTER`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// A restarted run that lasts this long without failing ends the failure.
const HEALTHY_AFTER: Duration = Duration::from_secs(3);
/// How long stages stopped after a failure may take to finish what they
/// do before they are aborted (a blocking commit still runs to its end:
/// the reopen waits for the writer).
const STOP_GRACE: Duration = Duration::from_secs(5);

type StageResult = (&'static str, anyhow::Result<()>);

/// Runs the pipeline until `shutdown`, restarting it on failures.
pub(super) async fn supervise(sh: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    metrics::gauge!("crmsearch_indexer_up").set(1.0);
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut stages = spawn_stages(&sh, stop_rx);
        let mut healthy_at = Some(tokio::time::Instant::now() + HEALTHY_AFTER);
        let failure = loop {
            tokio::select! {
                first = stages.join_next() => break Some(first),
                _ = shutdown.changed() => break None,
                () = sleep_until(healthy_at) => {
                    // the run outlasted the failure: it is over
                    sh.health.healthy();
                    healthy_at = None;
                }
            }
        };
        let _ = stop_tx.send(true);
        let Some(first) = failure else {
            // shutdown: every stage finishes; the committer's last commit
            // is durable
            while stages.join_next().await.is_some() {}
            sh.health.stopped();
            return;
        };
        let (stage, error) = describe(first, &sh.cfg.index_dir);
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
            attempt = 0;
        }
        attempt += 1;
        metrics::counter!("crmsearch_indexer_restarts_total", "stage" => stage).increment(1);
        sh.health.failed(stage, error.clone());
        sh.progress.set_error(Some(format!("{stage}: {error}")));
        tracing::error!(stage, error = %error, attempt, retry_in_ms = backoff.as_millis() as u64, "an indexer stage failed; restarting the pipeline from the durable commit");
        drain(&mut stages).await;
        // reopen until it works (a full disk, say, until space returns)
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {
                    sh.health.stopped();
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match reopen(&sh).await {
                Ok(()) => break,
                Err(e) => {
                    let e = format!("{e:#}");
                    attempt += 1;
                    sh.health.failed("reopen", e.clone());
                    metrics::counter!("crmsearch_indexer_restarts_total", "stage" => "reopen")
                        .increment(1);
                    tracing::error!(error = %e, attempt, retry_in_ms = backoff.as_millis() as u64, "reopening the index failed");
                }
            }
        }
        sh.health.restarted();
        tracing::info!(attempt, lsn = %sh.progress.written(), "indexer pipeline restarted");
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reopens the written generation from its durable commit; the stream
/// resumes from there.
async fn reopen(sh: &Arc<Shared>) -> crate::Result<()> {
    let s = sh.store.clone();
    let durable = tokio::task::spawn_blocking(move || s.recover()).await??;
    sh.progress.restart_at(durable.unwrap_or_default());
    Ok(())
}

/// Which stage ended first, and why; a stage that ended without an error
/// while it should run failed too. `index_dir`: where to look for a full
/// disk.
fn describe(
    first: Option<Result<StageResult, tokio::task::JoinError>>,
    index_dir: &std::path::Path,
) -> (&'static str, String) {
    match first {
        Some(Ok((stage, Err(e)))) => (stage, explain(e, index_dir)),
        Some(Ok((stage, Ok(())))) => (stage, "the stage ended while it should run".into()),
        Some(Err(e)) if e.is_panic() => ("unknown", panic_message(e)),
        Some(Err(e)) => ("unknown", e.to_string()),
        None => ("unknown", "no stage ran".into()),
    }
}

/// The failure in the words an operator acts on (a full disk says so,
/// also when the library lost the io error on the way), with what the
/// stage reported.
fn explain(e: anyhow::Error, index_dir: &std::path::Path) -> String {
    let detail = format!("{e:#}");
    let e = crate::Error::from(e);
    let free = crate::error::disk_free(index_dir);
    if matches!(e, crate::Error::DiskFull(_))
        || free.is_some_and(|f| f < crate::error::DISK_FULL_BELOW)
    {
        let full = crate::Error::DiskFull(std::io::ErrorKind::StorageFull.into());
        let free = free.map_or(String::new(), |f| format!(", {} KiB free", f >> 10));
        format!("{full} ({detail}{free})")
    } else {
        detail
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    format!("panicked: {msg}")
}

/// Waits for the stopped stages, then aborts what is left.
async fn drain(stages: &mut JoinSet<StageResult>) {
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, stages.join_next()).await {
        if let Ok((stage, Err(e))) = done {
            tracing::debug!(stage, error = %format!("{e:#}"), "stage stopped with an error");
        }
    }
    stages.shutdown().await;
}

/// The stages of one run, joined by bounded channels.
fn spawn_stages(sh: &Arc<Shared>, stop: watch::Receiver<bool>) -> JoinSet<StageResult> {
    let (src_tx, src_rx) = mpsc::channel(1024);
    let (batch_tx, batch_rx) = mpsc::channel(64);
    let mut set = JoinSet::new();
    let stage = |name: &'static str, f| async move { (name, f.await) };
    set.spawn(stage(
        "source",
        Box::pin(super::source::run_source(sh.clone(), src_tx, stop.clone())) as Stage,
    ));
    set.spawn(stage(
        "mapper",
        Box::pin(super::mapper::run_mapper(sh.clone(), src_rx, batch_tx)),
    ));
    set.spawn(stage(
        "committer",
        Box::pin(super::committer::run_committer(sh.clone(), batch_rx)),
    ));
    set.spawn(stage(
        "flusher",
        Box::pin(super::flusher::run_flusher(sh.clone(), stop.clone())),
    ));
    set.spawn(stage(
        "vectors",
        Box::pin(super::vectors::run_vector_maintenance(
            sh.clone(),
            stop.clone(),
        )),
    ));
    set.spawn(stage(
        "lag",
        Box::pin(super::lag::run_lag_metrics(sh.clone(), stop)),
    ));
    set
}

type Stage = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

#[cfg(test)]
mod tests {
    use super::super::testing::{shared_with, temp_store};
    use super::*;

    #[test]
    fn health_tracks_a_failure_until_a_run_outlasts_it() {
        let h = Health::default();
        assert_eq!(h.get().state, PipelineState::Running);
        h.failed("committer", "disk".into());
        let g = h.get();
        assert_eq!(
            (g.state, g.last_failed_stage),
            (PipelineState::Restarting, Some("committer"))
        );
        let since = g.failing_since.unwrap();
        h.failed("reopen", "still".into());
        assert_eq!(
            h.get().failing_since,
            Some(since),
            "one failure, since its start"
        );
        h.restarted();
        let g = h.get();
        assert_eq!((g.state, g.restarts), (PipelineState::Running, 1));
        assert!(
            g.failing_since.is_some(),
            "running again is not yet recovered"
        );
        h.healthy();
        assert!(h.get().failing_since.is_none());
        assert_eq!(
            h.get().last_error.as_deref(),
            Some("still"),
            "the last error stays"
        );
    }

    #[tokio::test]
    async fn describes_errors_panics_and_stages_that_end() {
        let mut set: JoinSet<StageResult> = JoinSet::new();
        let dir = std::env::temp_dir();
        set.spawn(async { ("committer", Err(anyhow::anyhow!("boom"))) });
        assert_eq!(
            describe(set.join_next().await, &dir),
            ("committer", "boom".into())
        );
        set.spawn(async { ("mapper", Ok(())) });
        assert_eq!(describe(set.join_next().await, &dir).0, "mapper");
        set.spawn(async { panic!("bad state") });
        let (stage, msg) = describe(set.join_next().await, &dir);
        assert_eq!(stage, "unknown");
        assert!(msg.contains("bad state"), "{msg}");
        let full = anyhow::Error::from(std::io::Error::from_raw_os_error(28)).context("commit");
        assert!(explain(full, &dir).starts_with("the disk holding the index is full"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_stage_restarts_the_group_from_the_durable_commit() {
        let t = temp_store();
        let sh = shared_with(&t.store, Duration::from_millis(50));
        // the committer fails at its first durable commit: its writer is gone
        t.store.current().close_writer_for_tests();
        sh.progress.set_written(crate::Lsn(5));
        let (shutdown_tx, shutdown) = watch::channel(false);
        let sup = tokio::spawn(supervise(sh.clone(), shutdown));
        // (the source cannot connect, no Postgres: it retries, it does not fail)
        let deadline = Instant::now() + Duration::from_secs(20);
        while sh.health.get().restarts == 0 {
            assert!(
                Instant::now() < deadline,
                "no restart: {:?}",
                sh.health.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let h = sh.health.get();
        assert_eq!(h.last_failed_stage, Some("committer"), "{h:?}");
        assert_eq!(
            sh.progress.written(),
            crate::Lsn(0),
            "resumes from the durable commit"
        );
        let _ = shutdown_tx.send(true);
        sup.await.unwrap();
        assert_eq!(sh.health.get().state, PipelineState::Stopped);
    }
}
