//! Whether Postgres answers, as requests find it. Once a request finds it
//! unreachable, what needs it is refused at once — 503 `unavailable` with
//! `Retry-After` — while one probe asks again every half second, instead of
//! every request waiting out the pool's acquire timeout (and a search, whose
//! key the cache knows, never waits for it). The first answer of the probe
//! lifts the refusal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::error::Error;

/// How often the probe asks while Postgres is down.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long the probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct PgHealth {
    down_since: Mutex<Option<Instant>>,
    probing: AtomicBool,
}

impl PgHealth {
    pub fn is_down(&self) -> bool {
        self.since().is_some()
    }

    fn since(&self) -> Option<Instant> {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A 503 at once while Postgres is known to be unreachable.
    pub fn check(&self) -> Result<(), Error> {
        match self.since() {
            None => Ok(()),
            Some(since) => {
                metrics::counter!("crmsearch_postgres_refused_total").increment(1);
                Err(Error::unavailable(format!(
                    "Postgres has not answered for {} s; what needs it is refused until it does \
                     (searches still answer from the index); retry shortly",
                    since.elapsed().as_secs()
                )))
            }
        }
    }

    /// Postgres failed to answer a request: refuse what needs it until the
    /// probe gets an answer.
    pub fn failed(self: &Arc<Self>, pool: &PgPool) {
        self.mark_down();
        self.probe(pool);
    }

    /// A request failed in a way Postgres may explain (a 503): the probe
    /// finds out, and refuses what needs Postgres only if it does not answer.
    pub fn suspect(self: &Arc<Self>, pool: &PgPool) {
        self.probe(pool);
    }

    fn mark_down(&self) {
        let mut d = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            tracing::warn!("postgres unreachable: refusing what needs it until it answers");
            metrics::gauge!("crmsearch_postgres_down").set(1.0);
            *d = Some(Instant::now());
        }
    }

    fn mark_up(&self) {
        let mut d = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = d.take() {
            tracing::info!(
                down_ms = since.elapsed().as_millis() as u64,
                "postgres answers again"
            );
            metrics::gauge!("crmsearch_postgres_down").set(0.0);
        }
    }

    /// Starts the probe unless one runs.
    fn probe(self: &Arc<Self>, pool: &PgPool) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (health, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                loop {
                    let ping = sqlx::query("SELECT 1").execute(&pool);
                    if matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_))) {
                        health.mark_up();
                        break;
                    }
                    health.mark_down();
                    tokio::time::sleep(PROBE_EVERY).await;
                }
                health.probing.store(false, Ordering::Release);
                // a failure reported while this probe was ending is probed
                // again, or it would refuse requests with no probe to lift it
                if !health.is_down() || health.probing.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }
}
