//! Tenant shards: an index that follows one shard streams the publication
//! `crmsearch_shard_<name>`, whose row filter Postgres applies itself (the
//! shard's tenants), plus `crmsearch_tenant_shards` unfiltered, so that each
//! change of a tenant's placement reaches the index in WAL order, between
//! the row changes it separates:
//!
//! - a tenant placed on this shard (created here, or moving in) is *held*:
//!   its rows stream from that transaction on. Rows it had before are
//!   loaded once (a tenant reindex; nothing to load when it has none), and
//!   only then is it *ready* — served, and recorded in
//!   `crmsearch_shard_ready` for the move that waits on every replica;
//! - a tenant no longer placed here is deleted from the index at that
//!   position, and its rows stop streaming.
//!
//! Requests for a tenant this index does not serve are refused by the API
//! (`wrong_shard`): nginx routes by the key, and a stale route must not look
//! like an empty tenant.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use anyhow::{Context, Result};
use sqlx::{PgPool, PgTransaction};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::Lsn;
use crate::pgoutput::Tuple;

/// The placements table, streamed to every shard.
pub const TENANT_SHARDS: &str = "crmsearch_tenant_shards";
/// Held by every transaction that changes shards or placements.
const PLACEMENT_LOCK: i64 = 0x6372_6d73_6861_7264; // "crmshard"
/// The order in which new shards take their codes.
const CODES: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Whether `name` is a shard name: a lowercase letter, then up to 15
/// lowercase letters or digits.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=16).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The publication an index streams: `crmsearch` without shards.
pub fn publication(shard: Option<&str>) -> String {
    match shard {
        Some(s) => format!("crmsearch_shard_{s}"),
        None => super::PUBLICATION.to_owned(),
    }
}

/// Where a tenant lives (a row of `crmsearch_tenant_shards`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub shard: String,
    pub also_on: Option<String>,
    /// Placed as the tenant was created: no rows to load.
    pub empty: bool,
}

impl Placement {
    fn holds(&self, shard: &str) -> bool {
        self.shard == shard || self.also_on.as_deref() == Some(shard)
    }

    /// The placement a streamed row carries.
    pub(crate) fn from_tuple(t: &Tuple) -> Result<(Uuid, Self)> {
        use schema::pgtext::TextRow;
        let tenant = schema::pgtext::uuid(t, "tenant_id").map_err(|e| anyhow::anyhow!("{e}"))?;
        let shard = t.get("shard").context("a placement without a shard")?;
        Ok((
            tenant,
            Self {
                shard: shard.to_owned(),
                also_on: t.get("also_on").map(str::to_owned),
                empty: t.get("empty") == Some("t"),
            },
        ))
    }
}

/// Whether this index serves a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serves {
    Yes,
    /// Held, its documents still loading (moving in).
    Loading,
    /// Another shard's (`None`: placed on no shard).
    No(Option<String>),
}

/// A shard's part of the index status.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardStatus {
    pub name: String,
    /// Tenants this index holds (none offline).
    pub tenants: Option<usize>,
    /// Tenants moving in whose documents are still loading: their requests
    /// are answered 503 meanwhile.
    pub loading: Vec<Uuid>,
}

/// The shard an index follows, and the placements as of what it applied.
pub struct ShardState {
    pub name: String,
    slot: String,
    placements: RwLock<HashMap<Uuid, Placement>>,
    /// Held tenants whose documents are all in the index.
    ready: RwLock<HashSet<Uuid>>,
    /// Held tenants queued for their load, or loading.
    loading: Mutex<HashSet<Uuid>>,
    load_tx: mpsc::UnboundedSender<Uuid>,
    load_rx: Mutex<Option<mpsc::UnboundedReceiver<Uuid>>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl ShardState {
    pub(crate) fn new(name: String, slot: String) -> Self {
        let (load_tx, load_rx) = mpsc::unbounded_channel();
        Self {
            name,
            slot,
            placements: RwLock::default(),
            ready: RwLock::default(),
            loading: Mutex::default(),
            load_tx,
            load_rx: Mutex::new(Some(load_rx)),
        }
    }

    pub fn serves(&self, tenant: Uuid) -> Serves {
        match read(&self.placements).get(&tenant) {
            Some(p) if p.holds(&self.name) => {
                if read(&self.ready).contains(&tenant) {
                    Serves::Yes
                } else {
                    Serves::Loading
                }
            }
            Some(p) => Serves::No(Some(p.shard.clone())),
            None => Serves::No(None),
        }
    }

    pub fn status(&self) -> ShardStatus {
        let held = self.held();
        let ready = read(&self.ready);
        let mut loading: Vec<Uuid> = held
            .iter()
            .filter(|t| !ready.contains(t))
            .copied()
            .collect();
        loading.sort();
        ShardStatus {
            name: self.name.clone(),
            tenants: Some(held.len()),
            loading,
        }
    }

    /// The tenants this index holds (ready or loading).
    pub fn held(&self) -> HashSet<Uuid> {
        read(&self.placements)
            .iter()
            .filter(|(_, p)| p.holds(&self.name))
            .map(|(t, _)| *t)
            .collect()
    }

    fn holds(&self, tenant: Uuid) -> bool {
        read(&self.placements)
            .get(&tenant)
            .is_some_and(|p| p.holds(&self.name))
    }

    /// Loads the placements as they are now, and which held tenants this
    /// index has in full; queues the load of the others.
    pub(crate) async fn load(&self, pool: &PgPool) -> Result<()> {
        let rows: Vec<(Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT tenant_id, shard, also_on FROM crmsearch_tenant_shards")
                .fetch_all(pool)
                .await?;
        *write(&self.placements) = rows
            .into_iter()
            .map(|(t, shard, also_on)| {
                let empty = false; // what matters at start is `ready`
                (
                    t,
                    Placement {
                        shard,
                        also_on,
                        empty,
                    },
                )
            })
            .collect();
        let ready: Vec<Uuid> =
            sqlx::query_scalar("SELECT tenant_id FROM crmsearch_shard_ready WHERE slot_name = $1")
                .bind(&self.slot)
                .fetch_all(pool)
                .await?;
        *write(&self.ready) = ready.into_iter().collect();
        for t in self.held() {
            if !read(&self.ready).contains(&t) {
                self.queue_load(t);
            }
        }
        Ok(())
    }

    fn queue_load(&self, tenant: Uuid) {
        if self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant)
        {
            let _ = self.load_tx.send(tenant);
        }
    }

    /// A placement streamed at `lsn` (`None`: the row was deleted). Returns
    /// whether the tenant's documents leave the index at that position.
    pub(crate) fn placed(&self, pool: &PgPool, tenant: Uuid, p: Option<Placement>) -> bool {
        let held = p.as_ref().is_some_and(|p| p.holds(&self.name));
        let empty = p.as_ref().is_some_and(|p| p.empty);
        match p {
            Some(p) => write(&self.placements).insert(tenant, p),
            None => write(&self.placements).remove(&tenant),
        };
        if held {
            if empty && write(&self.ready).insert(tenant) {
                // created with its placement: every row it gets streams here
                let (pool, slot) = (pool.clone(), self.slot.clone());
                tokio::spawn(async move {
                    if let Err(e) = record_ready(&pool, &slot, tenant, None).await {
                        tracing::debug!(error = %e, "cannot record a new tenant's readiness");
                    }
                });
            } else if !read(&self.ready).contains(&tenant) {
                self.queue_load(tenant);
            }
            return false;
        }
        if write(&self.ready).remove(&tenant) {
            let (pool, slot) = (pool.clone(), self.slot.clone());
            tokio::spawn(async move {
                let gone = sqlx::query(
                    "DELETE FROM crmsearch_shard_ready WHERE slot_name = $1 AND tenant_id = $2",
                )
                .bind(&slot)
                .bind(tenant)
                .execute(&pool)
                .await;
                if let Err(e) = gone {
                    tracing::debug!(error = %e, "cannot forget a tenant's readiness; the next move clears it");
                }
            });
        }
        true
    }

    /// After a snapshot of the shard at `lsn`: every tenant it read is ready.
    /// `replace`: nothing else is (a new index); else those made ready
    /// meanwhile stay so (a reindex while the stream runs: a tenant created
    /// after its snapshot was never in it, and is ready all the same).
    pub(crate) async fn snapshot_ready(
        &self,
        pool: &PgPool,
        tenants: &[Uuid],
        lsn: Lsn,
        replace: bool,
    ) -> Result<()> {
        let mut tx = pool.begin().await?;
        if replace {
            sqlx::query("DELETE FROM crmsearch_shard_ready WHERE slot_name = $1")
                .bind(&self.slot)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO crmsearch_shard_ready (slot_name, tenant_id, lsn)
             SELECT $1, t, $3::text::pg_lsn FROM unnest($2::uuid[]) t
             WHERE EXISTS (SELECT 1 FROM tenants WHERE id = t)
             ON CONFLICT (slot_name, tenant_id) DO UPDATE SET lsn = EXCLUDED.lsn, ready_at = now()",
        )
        .bind(&self.slot)
        .bind(tenants)
        .bind(lsn.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.snapshot_read(tenants, replace);
        Ok(())
    }

    fn snapshot_read(&self, tenants: &[Uuid], replace: bool) {
        let mut ready = write(&self.ready);
        if replace {
            ready.clear();
        }
        ready.extend(tenants.iter().copied());
    }

    async fn mark_ready(&self, pool: &PgPool, tenant: Uuid, lsn: Lsn) -> Result<()> {
        record_ready(pool, &self.slot, tenant, Some(lsn)).await?;
        write(&self.ready).insert(tenant);
        Ok(())
    }

    pub(crate) fn take_loads(&self) -> Option<mpsc::UnboundedReceiver<Uuid>> {
        self.load_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Records that the index of `slot` holds `tenant` in full (as of `lsn`;
/// None: now).
async fn record_ready(pool: &PgPool, slot: &str, tenant: Uuid, lsn: Option<Lsn>) -> Result<()> {
    sqlx::query(
        "INSERT INTO crmsearch_shard_ready (slot_name, tenant_id, lsn)
         VALUES ($1, $2, coalesce($3::text::pg_lsn, pg_current_wal_lsn()))
         ON CONFLICT (slot_name, tenant_id) DO UPDATE SET lsn = EXCLUDED.lsn, ready_at = now()",
    )
    .bind(slot)
    .bind(tenant)
    .bind(lsn.map(|l| l.to_string()))
    .execute(pool)
    .await?;
    Ok(())
}

/// Loads each tenant queued by [`ShardState`] (moving in, or held without
/// a readiness record at start), one at a time, for as long as the indexer
/// runs. A tenant with no rows needs nothing: every row it gets streams.
/// One with rows is read again from Postgres by a tenant reindex, retried
/// until it succeeds (another reindex may be running).
pub(crate) async fn load_tenants(
    indexer: std::sync::Weak<super::Indexer>,
    mut rx: mpsc::UnboundedReceiver<Uuid>,
) {
    while let Some(tenant) = rx.recv().await {
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            let Some(ix) = indexer.upgrade() else { return };
            let Some(shard) = ix.shard.clone() else {
                return;
            };
            if *ix.shutdown.borrow() {
                return;
            }
            // moved away meanwhile, or loaded by a whole reindex meanwhile
            if !shard.holds(tenant) || read(&shard.ready).contains(&tenant) {
                break;
            }
            match load_tenant(&ix, &shard, tenant).await {
                Ok(lsn) => {
                    tracing::info!(%tenant, shard = %shard.name, %lsn, "tenant ready on this shard");
                    break;
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %format!("{e:#}"), "cannot load a tenant moving in yet; retrying");
                }
            }
            drop(ix);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
        if let Some(ix) = indexer.upgrade()
            && let Some(shard) = &ix.shard
        {
            shard
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tenant);
        }
    }
}

async fn load_tenant(ix: &super::Indexer, shard: &ShardState, tenant: Uuid) -> Result<Lsn> {
    let lsn = crate::wal::position(&ix.pool).await?;
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM companies WHERE tenant_id = $1)
              + (SELECT count(*) FROM contacts WHERE tenant_id = $1)
              + (SELECT count(*) FROM memories WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&ix.pool)
    .await?;
    if rows > 0 {
        tracing::info!(%tenant, rows, shard = %shard.name, "loading a tenant moving in");
        ix.reindex(Some(tenant), &|_, _| {}).await?;
    } else {
        // nothing to load: every row the tenant gets streams here
        anyhow::ensure!(
            ix.wait_for(lsn, std::time::Duration::from_secs(30)).await,
            "the index did not reach {lsn}"
        );
    }
    if shard.holds(tenant) {
        shard.mark_ready(&ix.pool, tenant, lsn).await?;
    }
    Ok(lsn)
}

/// Makes sure the shard exists, with a code and its publication.
pub async fn ensure_shard(pool: &PgPool, name: &str) -> Result<()> {
    anyhow::ensure!(
        valid_name(name),
        "the shard name `{name}` must be a lowercase letter and up to 15 lowercase letters or digits"
    );
    let mut tx = pool.begin().await?;
    lock_placements(&mut tx).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM crmsearch_shards WHERE name = $1)")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        let taken: Vec<String> = sqlx::query_scalar("SELECT code FROM crmsearch_shards")
            .fetch_all(&mut *tx)
            .await?;
        let code = CODES
            .chars()
            .map(String::from)
            .find(|c| !taken.contains(c))
            .context("every shard code is taken: at most 62 shards")?;
        sqlx::query("INSERT INTO crmsearch_shards (name, code) VALUES ($1, $2)")
            .bind(name)
            .bind(&code)
            .execute(&mut *tx)
            .await?;
        tracing::info!(shard = name, code, "shard created");
    }
    let published: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(publication(Some(name)))
            .fetch_one(&mut *tx)
            .await?;
    if !published {
        sync_publication(&mut tx, name).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Serializes the transactions that change shards or placements.
pub async fn lock_placements(tx: &mut PgTransaction<'_>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PLACEMENT_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Sets the shard's publication to its tenants as the placements now say
/// (in the caller's transaction, after [`lock_placements`]).
pub async fn sync_publication(tx: &mut PgTransaction<'_>, shard: &str) -> Result<()> {
    anyhow::ensure!(valid_name(shard), "bad shard name {shard}");
    let members: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM crmsearch_tenant_shards WHERE shard = $1 OR also_on = $1 ORDER BY tenant_id",
    )
    .bind(shard)
    .fetch_all(&mut **tx)
    .await?;
    // uuids print as hex and dashes only: nothing to quote
    let list: Vec<String> = members.iter().map(Uuid::to_string).collect();
    let filter = format!("WHERE (tenant_id = ANY ('{{{}}}'::uuid[]))", list.join(","));
    let tables =
        format!("companies {filter}, contacts {filter}, memories {filter}, {TENANT_SHARDS}");
    let name = publication(Some(shard));
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(&name)
            .fetch_one(&mut **tx)
            .await?;
    let sql = if exists {
        format!("ALTER PUBLICATION {name} SET TABLE {tables}")
    } else {
        format!("CREATE PUBLICATION {name} FOR TABLE {tables}")
    };
    sqlx::query(&sql)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_publications() {
        assert!(valid_name("s1") && valid_name("eu") && valid_name("a234567890123456"));
        assert!(!valid_name("") && !valid_name("1s") && !valid_name("S1") && !valid_name("s-1"));
        assert!(!valid_name("a2345678901234567"));
        assert_eq!(publication(Some("s1")), "crmsearch_shard_s1");
        assert_eq!(publication(None), "crmsearch");
    }

    #[tokio::test]
    async fn a_placement_elsewhere_removes_the_tenant_and_one_here_queues_its_load() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let s = ShardState::new("s1".into(), "crmsearch_a".into());
        let mut loads = s.take_loads().unwrap();
        let t = Uuid::new_v4();
        let at = |shard: &str, also: Option<&str>| {
            Some(Placement {
                shard: shard.into(),
                also_on: also.map(Into::into),
                empty: false,
            })
        };
        assert_eq!(s.serves(t), Serves::No(None));
        assert!(!s.placed(&pool, t, at("s1", None)));
        assert_eq!(s.serves(t), Serves::Loading);
        assert_eq!(loads.try_recv().unwrap(), t);
        write(&s.ready).insert(t);
        assert_eq!(s.serves(t), Serves::Yes);
        // moving to s2: s1 still holds it (after the switch, as also_on)
        assert!(!s.placed(&pool, t, at("s2", Some("s1"))));
        assert_eq!(s.serves(t), Serves::Yes);
        assert!(
            loads.try_recv().is_err(),
            "a ready tenant is not loaded again"
        );
        // the move ends: its documents leave at this position
        assert!(s.placed(&pool, t, at("s2", None)));
        assert_eq!(s.serves(t), Serves::No(Some("s2".into())));
        assert!(s.held().is_empty());
        // a tenant created with its placement has nothing to load
        let new = Uuid::new_v4();
        let created = Placement {
            empty: true,
            ..at("s1", None).unwrap()
        };
        assert!(!s.placed(&pool, new, Some(created)));
        assert_eq!(s.serves(new), Serves::Yes);
        assert!(loads.try_recv().is_err());
        // a reindex whose snapshot was read before that tenant existed
        // leaves it served
        s.snapshot_read(&[], false);
        assert_eq!(s.serves(new), Serves::Yes);
    }
}
