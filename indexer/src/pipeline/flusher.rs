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

#[cfg(test)]
mod tests {
    use super::super::testing::{contact_tuple, shared, temp_store};
    use super::*;
    use crate::Lsn;
    use crate::rows::Table;

    #[tokio::test]
    async fn fsyncs_what_soft_commits_wrote_until_stopped() {
        let t = temp_store();
        let sh = shared(&t.store);
        let op = Table::Contacts
            .upsert(
                &t.store.schema,
                &contact_tuple(uuid::Uuid::new_v4(), "A"),
                true,
                Lsn(1),
            )
            .unwrap();
        t.store.apply(vec![op], Lsn(1)).unwrap();
        t.store.commit(Lsn(1), false).unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let flusher = tokio::spawn(run_flusher(sh.clone(), stop));
        // the first tick fsyncs the soft commit's files
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(t.store.presync().unwrap(), 0, "nothing left to fsync");
        stop_tx.send(true).unwrap();
        flusher.await.unwrap().unwrap();
    }
}
