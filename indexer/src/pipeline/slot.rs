//! The replication slot: its state as Postgres shows it, the warnings an
//! operator should see, and the decision at start whether the index can
//! resume from its durable position or must be rebuilt from a snapshot.

use std::sync::Arc;

use anyhow::{Context, Result};
use sqlx::PgPool;

use crate::Lsn;
use crate::store::IndexStore;

/// Retained WAL above this is worth a warning (1 GiB).
pub const SLOT_WARN_BYTES: i64 = 1 << 30;

/// The replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Default, sqlx::FromRow)]
pub(crate) struct SlotRow {
    pub confirmed: Option<String>,
    pub retained: Option<i64>,
    pub wal_status: Option<String>,
    pub active_pid: Option<i32>,
}

impl SlotRow {
    /// Invalidated by `max_slot_wal_keep_size`: its changes are gone.
    pub fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

pub(crate) async fn slot_row(pool: &PgPool, slot: &str) -> Result<Option<SlotRow>> {
    Ok(sqlx::query_as(
        "SELECT confirmed_flush_lsn::text AS confirmed,
                pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn)::bigint AS retained,
                wal_status, active_pid
           FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?)
}

/// The warnings of a slot's state, each logged.
pub(crate) fn slot_warnings(retained: Option<i64>, wal_status: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = retained.filter(|r| *r > SLOT_WARN_BYTES) {
        out.push(format!(
            "the replication slot holds {} MiB of WAL back: the indexer is behind or was stopped; Postgres keeps it \
             until max_slot_wal_keep_size, then invalidates the slot (see README)",
            r >> 20
        ));
    }
    match wal_status {
        Some("unreserved") => out.push(
            "the slot's WAL passed max_slot_wal_keep_size and is about to be removed: the index will be rebuilt \
             from a snapshot"
                .into(),
        ),
        Some("lost") => out.push(
            "the replication slot was invalidated: the index is rebuilt from a snapshot at the next start".into(),
        ),
        _ => {}
    }
    for w in &out {
        tracing::warn!(warning = %w, "replication slot");
    }
    out
}

/// Drops the slot (when it exists) and creates it again; returns its
/// consistent point, from which the stream follows a snapshot taken after.
pub(crate) async fn recreate_slot(pool: &PgPool, slot: &str, exists: bool) -> Result<Lsn> {
    if exists {
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(pool)
            .await?;
    }
    let consistent: String = sqlx::query_scalar(
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
    )
    .bind(slot)
    .fetch_one(pool)
    .await
    .context("cannot create the replication slot")?;
    Ok(consistent.parse()?)
}

/// Decides where to stream from; rebuilds from a snapshot when needed.
/// Returns where to stream from and, after a rebuild, the position up to
/// which replayed transactions may already be in the snapshot.
pub(crate) async fn prepare_slot(
    pool: &PgPool,
    store: &Arc<IndexStore>,
    slot: &str,
) -> crate::Result<(Lsn, Option<Lsn>)> {
    let indexed = store.committed_lsn()?;
    let row = slot_row(pool, slot).await?;
    if let Some(pid) = row.as_ref().and_then(|r| r.active_pid) {
        return Err(crate::Error::SlotInUse {
            slot: slot.to_owned(),
            pid,
        });
    }
    let reason = match (&row, indexed) {
        (None, _) => Some("no replication slot yet"),
        (Some(r), _) if r.lost() => Some("the replication slot was invalidated"),
        (Some(_), None) => Some("the index is empty"),
        (Some(r), Some(at))
            if r.confirmed
                .as_deref()
                .and_then(|c| c.parse::<Lsn>().ok())
                .is_some_and(|c| c > at) =>
        {
            Some("the index is behind its replication slot")
        }
        _ => None,
    };
    let Some(reason) = reason else {
        let at = indexed.unwrap_or_default();
        tracing::info!(%slot, lsn = %at, "resuming from the index's durable position");
        return Ok((at, None));
    };
    tracing::warn!(%slot, reason, "rebuilding the index from a snapshot");
    let consistent = recreate_slot(pool, slot, row.is_some()).await?;
    let seen = super::snapshot::snapshot(pool, &store.writing(), consistent, None, None).await?;
    Ok((consistent, Some(seen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_about_retained_wal_and_invalidation() {
        assert!(slot_warnings(Some(10), None).is_empty());
        let w = slot_warnings(Some(SLOT_WARN_BYTES + 1), Some("reserved"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("MiB of WAL"), "{w:?}");
        assert!(slot_warnings(None, Some("unreserved"))[0].contains("about to be removed"));
        assert!(slot_warnings(None, Some("lost"))[0].contains("invalidated"));
        let lost = SlotRow {
            wal_status: Some("lost".into()),
            ..Default::default()
        };
        assert!(lost.lost() && !SlotRow::default().lost());
    }
}
