//! CPU-bound request work (searches, the query model) runs off the async
//! workers, at most one task per core at a time: under many connections the
//! rest wait their turn in a fair queue instead of dozens of threads sharing
//! two cores (each with its per-request buffers, all slowed alike).

use std::sync::LazyLock;

use tokio::sync::Semaphore;

static CORES: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
});

/// Runs `f` on the blocking pool once a core is free.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // the semaphore is never closed
    let _turn = CORES.acquire().await.ok();
    tokio::task::spawn_blocking(f).await
}
