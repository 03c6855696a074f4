//! CPU-bound request work (searches, the query model) runs off the async
//! workers, at most two tasks per core at a time: under many connections the
//! rest wait their turn in a fair queue instead of dozens of threads sharing
//! two cores (each with its per-request buffers, all slowed alike).
//!
//! Two a core, not one: a turn that ends must wake the next waiter through
//! an async worker, which under load is busy writing answers, and until it
//! does the core idles — with one turn a core, a sixth of both cores was
//! idle at 64 connections (perf, load bench), with two 2 %. A turn ends on
//! the blocking thread the moment its work returns, not when the task that
//! waits for the result is next polled.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

static CORES: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(2 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
});

/// Runs `f` on the blocking pool once a core is free.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // the semaphore is never closed
    let turn = CORES.acquire().await.ok();
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(turn);
        out
    })
    .await
}
