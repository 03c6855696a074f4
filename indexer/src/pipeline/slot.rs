//! The replication slot: its state as Postgres shows it, the warnings an
//! operator should see, and the decision at start whether the index can
//! resume from its durable position or must be rebuilt from a snapshot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgPool;
use uuid::Uuid;

use crate::Lsn;
use crate::store::IndexStore;

/// Retained WAL above this is worth a warning (1 GiB).
pub const SLOT_WARN_BYTES: i64 = 1 << 30;

/// The file in the index folder naming the slot it follows, when no node
/// is configured.
pub const SLOT_FILE: &str = "SLOT";
/// The file in the index folder holding the index's id, with which it
/// claims its slot in `crmsearch_slot_claims`.
pub const OWNER_FILE: &str = "OWNER";
/// A claim not renewed for this long lapses: another index may take the
/// slot over.
pub const CLAIM_LAPSES: Duration = Duration::from_secs(60);
/// How often a running index renews its claim.
pub const CLAIM_RENEW: Duration = Duration::from_secs(15);
/// The slot name of indexes of an earlier version that ran without a node.
const LEGACY_DEFAULT_SLOT: &str = "crmsearch_main";

/// `text` in the characters a slot name may hold (lowercase letters,
/// digits, `_`).
pub fn slot_chars(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a, 64 bits: a hash that stays the same across builds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Default, sqlx::FromRow)]
pub(crate) struct SlotRow {
    pub confirmed: Option<String>,
    pub retained: Option<i64>,
    pub wal_status: Option<String>,
    pub active_pid: Option<i32>,
    /// The database the slot decodes.
    pub database: Option<String>,
    /// Whether that is the database of this connection.
    pub ours: Option<bool>,
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
                wal_status, active_pid, database::text,
                database = current_database() AS ours
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
/// `rebuild`: a reason to rebuild whatever the slot says; `shard`: the
/// shard followed, whose tenants a snapshot reads (and marks ready).
pub(crate) async fn prepare_slot(
    pool: &PgPool,
    store: &Arc<IndexStore>,
    slot: &str,
    cfg: &crate::IndexerConfig,
    rebuild: Option<&'static str>,
    shard: Option<&super::shard::ShardState>,
) -> crate::Result<(Lsn, Option<Lsn>)> {
    let indexed = store.committed_lsn()?;
    let row = slot_row(pool, slot).await?;
    // another database's slot of the same name: never dropped, never used
    if let Some(r) = row.as_ref().filter(|r| r.ours == Some(false)) {
        return Err(crate::Error::SlotClash {
            slot: slot.to_owned(),
            owner: format!(
                "the database {}",
                r.database.as_deref().unwrap_or("(another)")
            ),
            lapse: "",
        });
    }
    if let Some(pid) = row.as_ref().and_then(|r| r.active_pid) {
        return Err(crate::Error::SlotInUse {
            slot: slot.to_owned(),
            pid,
        });
    }
    let reason = match (&row, indexed) {
        _ if rebuild.is_some() => rebuild,
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
    let (seen, tenants) = super::snapshot::snapshot(
        pool,
        &store.writing(),
        consistent,
        None,
        None,
        cfg.shard.as_deref(),
    )
    .await?;
    if let (Some(s), Some(tenants)) = (shard, tenants) {
        s.snapshot_ready(pool, &tenants, consistent, true).await?;
    }
    Ok((consistent, Some(seen)))
}

/// The file in the index folder naming the shard the index follows.
pub const SHARD_FILE: &str = "SHARD";

/// The shard the index in `index_dir` was built for (None: every tenant).
pub(crate) fn followed_shard(index_dir: &Path) -> Option<String> {
    std::fs::read_to_string(index_dir.join(SHARD_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub(crate) fn record_shard(index_dir: &Path, shard: Option<&str>) -> Result<()> {
    let path = index_dir.join(SHARD_FILE);
    match shard {
        Some(s) => std::fs::write(&path, format!("{s}\n"))?,
        None if path.exists() => std::fs::remove_file(&path)?,
        None => {}
    }
    Ok(())
}

/// The index's id (made on first use), which claims its slot.
pub(crate) fn owner_id(index_dir: &Path) -> Result<Uuid> {
    let path = index_dir.join(OWNER_FILE);
    if let Some(id) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Ok(id);
    }
    let id = Uuid::new_v4();
    std::fs::write(&path, id.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// The slot this index follows (see [`crate::IndexerConfig::slot`]),
/// recorded in its folder when no node names it. An index of an earlier
/// version that ran without a node followed `crmsearch_main`: it keeps it
/// while the slot is in this database and has not been read past the
/// index's position (no other index has been following it).
pub(crate) async fn resolve_slot(
    pool: &PgPool,
    cfg: &crate::IndexerConfig,
    store: &IndexStore,
) -> crate::Result<String> {
    if cfg.node.is_some() || cfg.index_dir.join(SLOT_FILE).exists() {
        return Ok(cfg.slot());
    }
    let mut slot = cfg.derived_slot();
    if let Some(at) = store.committed_lsn()?
        && slot_row(pool, &slot).await?.is_none()
        && let Some(legacy) = slot_row(pool, LEGACY_DEFAULT_SLOT).await?
        && legacy.ours == Some(true)
        && legacy
            .confirmed
            .as_deref()
            .and_then(|c| c.parse::<Lsn>().ok())
            .is_some_and(|c| c <= at)
    {
        tracing::info!(
            slot = LEGACY_DEFAULT_SLOT,
            "keeping the slot this index followed before"
        );
        slot = LEGACY_DEFAULT_SLOT.to_owned();
    }
    std::fs::write(cfg.index_dir.join(SLOT_FILE), &slot)?;
    Ok(slot)
}

/// Claims `slot` for the index `owner` in `crmsearch_slot_claims`: its own
/// claim is renewed, a lapsed one taken over (logged), and one another
/// index renewed within [`CLAIM_LAPSES`] refused with
/// [`crate::Error::SlotClash`].
pub(crate) async fn claim(
    pool: &PgPool,
    slot: &str,
    owner: Uuid,
    index_dir: &Path,
    shard: Option<&str>,
) -> crate::Result<()> {
    let dir = std::path::absolute(index_dir).unwrap_or_else(|_| index_dir.to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut tx = pool.begin().await?;
    let held: Option<(Uuid, String, String, f64)> = sqlx::query_as(
        "SELECT owner, index_dir, host, extract(epoch FROM now() - seen_at)::float8
           FROM crmsearch_slot_claims WHERE slot_name = $1 FOR UPDATE",
    )
    .bind(slot)
    .fetch_optional(&mut *tx)
    .await?;
    let dir_text = dir.display().to_string();
    if let Some((other, their_dir, their_host, ago)) = &held
        && *other != owner
    {
        // the same folder on the same host, made again (deleted to rebuild,
        // a volume replaced): the same deployment — two processes cannot
        // hold one folder (its lock)
        let same_folder = *their_dir == dir_text && *their_host == host;
        if same_folder {
            tracing::info!(%slot, index_dir = %dir_text, "the index folder was made again; it keeps its slot");
        } else if *ago < CLAIM_LAPSES.as_secs_f64() {
            return Err(crate::Error::SlotClash {
                slot: slot.to_owned(),
                owner: format!(
                    "the index at {their_dir} on {their_host}, which renewed its claim {ago:.0} s ago"
                ),
                lapse: "; if that index is gone for good, its claim lapses a minute after it was last renewed and \
                        this one takes the slot over",
            });
        } else {
            tracing::warn!(
                %slot, index_dir = %their_dir, host = %their_host, ago_s = *ago as u64,
                "taking over the replication slot of an index whose claim lapsed"
            );
        }
    }
    sqlx::query(
        "INSERT INTO crmsearch_slot_claims (slot_name, owner, index_dir, host, seen_at, shard)
         VALUES ($1, $2, $3, $4, now(), $5)
         ON CONFLICT (slot_name) DO UPDATE
            SET owner = EXCLUDED.owner, index_dir = EXCLUDED.index_dir, host = EXCLUDED.host,
                seen_at = now(), shard = EXCLUDED.shard",
    )
    .bind(slot)
    .bind(owner)
    .bind(&dir_text)
    .bind(&host)
    .bind(shard)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A crmsearch replication slot of the Postgres server, for operators.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct SlotInfo {
    pub name: String,
    /// The database it decodes.
    pub database: Option<String>,
    /// A process streams it now.
    pub active: bool,
    /// WAL Postgres keeps for it.
    pub retained_wal_bytes: Option<i64>,
    pub wal_status: Option<String>,
    /// The index that claims it (in this database), and where it runs.
    pub index_dir: Option<String>,
    pub host: Option<String>,
    /// Seconds since that index renewed its claim.
    pub renewed_s_ago: Option<f64>,
}

/// Every `crmsearch_` slot of the server, with this database's claims.
pub async fn list_slots(pool: &PgPool) -> crate::Result<Vec<SlotInfo>> {
    Ok(sqlx::query_as(
        r"SELECT s.slot_name::text AS name, s.database::text AS database,
                 s.active_pid IS NOT NULL AS active,
                 pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.restart_lsn)::bigint AS retained_wal_bytes,
                 s.wal_status, c.index_dir, c.host,
                 extract(epoch FROM now() - c.seen_at)::float8 AS renewed_s_ago
            FROM pg_replication_slots s
            LEFT JOIN crmsearch_slot_claims c ON c.slot_name = s.slot_name
           WHERE s.slot_name LIKE 'crmsearch\_%'
           ORDER BY s.slot_name",
    )
    .fetch_all(pool)
    .await?)
}

/// Drops a slot no index will follow again (a replica gone for good, a
/// node renamed) with its claim, so Postgres stops keeping WAL for it.
/// Refused for a slot a process streams, another database's, or one that
/// is not crmsearch's. An index that did follow it rebuilds from a
/// snapshot at its next start.
pub async fn release_slot(pool: &PgPool, name: &str) -> crate::Result<()> {
    if !name.starts_with("crmsearch_") {
        return Err(crate::Error::Other(anyhow::anyhow!(
            "`{name}` is not a crmsearch slot (they start with crmsearch_); see `crmsearch slot list`"
        )));
    }
    let Some(row) = slot_row(pool, name).await? else {
        return Err(crate::Error::Other(anyhow::anyhow!(
            "there is no replication slot `{name}`; see `crmsearch slot list`"
        )));
    };
    if row.ours == Some(false) {
        return Err(crate::Error::Other(anyhow::anyhow!(
            "the slot `{name}` decodes the database {}: release it with a DATABASE_URL of that database",
            row.database.as_deref().unwrap_or("(another)")
        )));
    }
    if let Some(pid) = row.active_pid {
        return Err(crate::Error::SlotInUse {
            slot: name.to_owned(),
            pid,
        });
    }
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(name)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM crmsearch_slot_claims WHERE slot_name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    tracing::info!(slot = %name, "replication slot released");
    Ok(())
}

/// Renews the claim while the indexer runs: every [`CLAIM_RENEW`], until
/// `shutdown`. A claim found taken over is logged (the other index then
/// streams the slot; this one's stream is refused).
pub(crate) async fn renew_claim(
    pool: PgPool,
    slot: String,
    owner: Uuid,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CLAIM_RENEW) => {}
            _ = shutdown.changed() => return,
        }
        let renewed = sqlx::query(
            "UPDATE crmsearch_slot_claims SET seen_at = now() WHERE slot_name = $1 AND owner = $2",
        )
        .bind(&slot)
        .bind(owner)
        .execute(&pool)
        .await;
        match renewed {
            Ok(r) if r.rows_affected() == 0 => tracing::error!(
                %slot,
                "another index took over this index's replication slot: give each deployment its own CRMSEARCH_NODE"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot renew the slot's claim; retrying"),
        }
    }
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
