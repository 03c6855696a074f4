//! The shared Redis (`REDIS_URL`) of the rate limits and the result cache.
//!
//! Redis is an accelerator here, never a dependency: every call has a time
//! limit (`redis_timeout_ms`), and a failed or late call opens a breaker for
//! a moment, during which callers go without Redis at once instead of each
//! waiting for the limit. The first call after the moment tries again. Each
//! change between up and down is logged once and counted
//! (`crmsearch_redis_up`, `crmsearch_redis_errors_total`).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    /// Until when calls go without Redis.
    open_until: Mutex<Option<Instant>>,
    up: AtomicBool,
}

impl Redis {
    /// How long the breaker stays open after a failure.
    const PAUSE: Duration = Duration::from_secs(1);

    /// A client for `url`; it connects on first use and reconnects by
    /// itself. Fails only on a malformed URL.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            anyhow::anyhow!("REDIS_URL is not a Redis URL like redis://127.0.0.1:6379 ({e})")
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis client: {e}"))?;
        metrics::gauge!("crmsearch_redis_up").set(1.0);
        Ok(Self {
            conn,
            timeout,
            open_until: Mutex::new(None),
            up: AtomicBool::new(true),
        })
    }

    /// Runs `op` on the connection within the time limit; `None` when Redis
    /// failed, was too slow, or failed a moment ago.
    pub async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
        {
            metrics::counter!("crmsearch_redis_skipped_total", "op" => what).increment(1);
            return None;
        }
        let failure = match tokio::time::timeout(self.timeout, op(self.conn.clone())).await {
            Ok(Ok(v)) => {
                self.mark(None);
                return Some(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        metrics::counter!("crmsearch_redis_errors_total", "op" => what).increment(1);
        self.mark(Some(&failure));
        None
    }

    /// Records the outcome of a call; logs a change of state once.
    fn mark(&self, failure: Option<&str>) {
        let up = failure.is_none();
        *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) =
            failure.map(|_| Instant::now() + Self::PAUSE);
        if self.up.swap(up, Ordering::Relaxed) != up {
            metrics::gauge!("crmsearch_redis_up").set(if up { 1.0 } else { 0.0 });
            match failure {
                None => tracing::info!("Redis answers again: shared rate limits and cache resume"),
                Some(e) => tracing::warn!(
                    error = %e,
                    "Redis is unavailable: requests pass without rate limits and the shared cache is skipped until it answers"
                ),
            }
        }
    }
}
