//! CPU-bound request work (searches, the query model) runs on a fixed set
//! of threads, two per core, fed by one first-come queue (bulk parsing and
//! embedding on a second set, one thread a core): under many connections the rest wait their turn instead of dozens
//! of threads sharing two cores (each with its per-request buffers, all
//! slowed alike).
//!
//! Two a core, not one: with one, a sixth of both cores idled at 64
//! connections (perf, load bench) while a finished turn woke the next
//! waiter through a busy async worker; a thread of this set takes its next
//! task from the queue itself the moment one ends.
//!
//! A fixed set, not tokio's blocking pool, for memory: the allocator
//! (mimalloc) keeps what a thread's tasks freed for that thread's next task
//! and hands it back to the system only when that thread allocates again.
//! Blocking-pool threads come and go and park with their garbage: under a
//! hostile mix of long misspelled words (a typo automaton of a 64-letter
//! word is 1.8 MiB), the server's memory grew by 300 MiB in 400 searches and
//! stayed there. Here a thread idle for [`IDLE_TRIM`] returns its free
//! memory to the system once (that costs about 0.8 ms, so never between two
//! tasks of a busy thread), and the memory after a burst falls back to what
//! the caches hold.

use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A thread idle this long returns its free memory to the system.
pub const IDLE_TRIM: Duration = Duration::from_millis(200);

type Job = Box<dyn FnOnce() + Send>;

/// Interactive threads: two a core.
fn threads() -> usize {
    2 * cores()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// Interactive work: searches, the query model.
static INTERACTIVE: LazyLock<Sender<Job>> = LazyLock::new(|| start("cpu", threads()));
/// Bulk work: parsing bulk bodies, embedding their memories. A set of its
/// own, one thread a core, so that loads in flight never hold every thread
/// searches wait for.
static BULK: LazyLock<Sender<Job>> = LazyLock::new(|| start("bulk", cores()));

fn start(name: &str, n: usize) -> Sender<Job> {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    for i in 0..n {
        let rx = rx.clone();
        let started = std::thread::Builder::new()
            .name(format!("crmsearch-{name}-{i}"))
            .spawn(move || work(&rx));
        if let Err(e) = started {
            // fewer threads serve the queue; none at all is reported by run
            tracing::error!(error = %e, "cannot start a CPU thread");
        }
    }
    tx
}

fn work(rx: &Receiver<Job>) {
    loop {
        let job = match rx.recv_timeout(IDLE_TRIM) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                trim();
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        job();
    }
}

/// Returns this thread's free memory to the system.
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: mi_collect has no preconditions; it frees what this thread's
    // heap holds unused (with another global allocator it finds nothing).
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// A task that did not finish: it panicked, or no CPU thread runs.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("a CPU task panicked: {0}")]
    Panicked(String),
    #[error("no CPU thread is running to take the task")]
    NoThread,
}

/// Runs `f` on a CPU thread once one is free, first come first served. A
/// task whose caller has gone (a request answered by its time limit, a
/// closed connection) is skipped when its turn comes.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failed> {
    on(&INTERACTIVE, f).await
}

/// [`run`] on the bulk threads.
pub async fn run_bulk<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    on(&BULK, f).await
}

async fn on<T: Send + 'static>(
    queue: &Sender<Job>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        if tx.is_closed() {
            return;
        }
        let out = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        });
        let _ = tx.send(out);
    });
    queue.send(job).map_err(|_| Failed::NoThread)?;
    match rx.await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(why)) => {
            tracing::error!(panic = %why, "a CPU task panicked");
            Err(Failed::Panicked(why))
        }
        Err(_) => Err(Failed::NoThread),
    }
}
