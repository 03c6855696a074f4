//! The flusher stage: fsyncs the files soft commits wrote, in the
//! background, so a durable commit holds the writer only for what was
//! written in the last moment.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use super::Shared;

/// Fsyncs new index files in the background so a durable commit holds the
/// writer only for what was written in the last moment.
/// A failed fsync is not retried here: it ends the stage, and the
/// supervisor reopens the index from its durable commit (after an fsync
/// error the kernel may have dropped the pages: the files cannot be
/// trusted).
pub(super) async fn run_flusher(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let s = sh.store.clone();
        tokio::task::spawn_blocking(move || s.presync())
            .await
            .context("the fsync task panicked")?
            .context("fsync of new index files failed")?;
    }
}
