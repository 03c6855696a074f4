//! The CDC pipeline: source → mapper → committer, joined by bounded
//! channels, each message carrying the LSN it brings the index to, with a
//! flusher, the vector upkeep and the lag gauges beside them — every stage
//! in a file of its own, all run by the [`supervisor`], which restarts them
//! together from the index's durable commit when one fails.
//!
//! - [`source`]: the replication stream, decoded into whole transactions.
//! - [`mapper`]: row changes into index operations.
//! - [`committer`]: the one writer: soft commits (visible) and durable ones.
//! - [`flusher`]: fsyncs what soft commits wrote, ahead of the durable one.
//! - [`vectors`]: the ANN indexes' upkeep and dumps.
//! - [`lag`]: lag and stall figures and gauges.
//! - [`slot`], [`snapshot`], [`status`]: the slot at start, a snapshot into
//!   an emptied generation, status.

mod committer;
mod flusher;
mod lag;
mod mapper;
pub mod shard;
pub mod slot;
mod snapshot;
mod source;
mod status;
pub mod supervisor;
mod vectors;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use lag::{Lag, STALL_AFTER};
pub use slot::SLOT_WARN_BYTES;
pub use status::{Documents, Status, TenantStatus, offline_status};
pub use supervisor::{Health, PipelineHealth, PipelineState};
pub use vectors::VectorLoad;

use crate::Lsn;
use crate::pgoutput::Tuple;
use crate::rows::Table;
use crate::store::{IndexStore, Op};

/// The prefix of the logical messages that move the applied LSN forward
/// when nothing else does (see [`Indexer::wait_for`]).
pub const HEARTBEAT_PREFIX: &str = "crmsearch_heartbeat";
pub const PUBLICATION: &str = "crmsearch";

#[derive(Debug, Clone)]
pub struct IndexerConfig {
    pub database_url: String,
    pub index_dir: std::path::PathBuf,
    /// Names the slot: `crmsearch_<node>`. None: a name derived from the
    /// database and the index folder (see [`IndexerConfig::slot`]).
    pub node: Option<String>,
    /// The tenant shard this index follows (see [`shard`]); None: every
    /// tenant.
    pub shard: Option<String>,
    /// Longest time between durable commits while changes are pending.
    pub durable_interval: Duration,
    /// Durable commit after this many documents even before the interval.
    pub durable_docs: usize,
    /// After this long without a change, merge the index into one segment
    /// when worth it (see [`crate::merging`]).
    pub compact_idle: Duration,
}

impl IndexerConfig {
    /// The publication this index streams.
    pub fn publication(&self) -> String {
        shard::publication(self.shard.as_deref())
    }

    /// The replication slot this index follows: `crmsearch_<node>` for a
    /// configured node; else the one the index folder records (written at
    /// start, see [`slot::SLOT_FILE`]); else [`Self::derived_slot`].
    pub fn slot(&self) -> String {
        match &self.node {
            Some(node) => format!("crmsearch_{}", slot::slot_chars(node)),
            None => std::fs::read_to_string(self.index_dir.join(slot::SLOT_FILE))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| s.starts_with("crmsearch_"))
                .unwrap_or_else(|| self.derived_slot()),
        }
    }

    /// `crmsearch_<database>_<8 hex digits>`: the digits hash the server,
    /// the database and the index folder's absolute path, so two
    /// deployments on one Postgres never share a slot by default.
    pub fn derived_slot(&self) -> String {
        let (server, database) = match url::Url::parse(&self.database_url) {
            Ok(u) => (
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or(""),
                    u.port().unwrap_or(5432)
                ),
                u.path().trim_start_matches('/').to_owned(),
            ),
            Err(_) => (String::new(), String::new()),
        };
        let dir = std::path::absolute(&self.index_dir).unwrap_or_else(|_| self.index_dir.clone());
        let key = format!("{server}/{database}\n{}", dir.display());
        let mut db = slot::slot_chars(&database);
        db.truncate(24);
        format!("crmsearch_{db}_{:08x}", slot::fnv1a(key.as_bytes()) as u32)
    }
}

/// What the pipeline has reached, shared with searches and status.
#[derive(Debug)]
pub struct Progress {
    visible: watch::Sender<Lsn>,
    durable: AtomicU64,
    /// The written generation's last commit: where the stream resumes. It
    /// is behind `visible` while a restarted pipeline catches up.
    written: AtomicU64,
    stall: lag::StallWatch,
    /// Commit time of the last applied transaction.
    last_commit: Mutex<Option<DateTime<Utc>>>,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    bootstrapped: AtomicBool,
    /// Transactions that committed at or before this may already be in the
    /// index (a snapshot's); see [`run_mapper`].
    replay_guard: AtomicU64,
}

impl Progress {
    fn new(lsn: Lsn) -> Self {
        Self {
            visible: watch::Sender::new(lsn),
            durable: AtomicU64::new(lsn.0),
            written: AtomicU64::new(lsn.0),
            stall: lag::StallWatch::default(),
            last_commit: Mutex::new(None),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            bootstrapped: AtomicBool::new(false),
            replay_guard: AtomicU64::new(lsn.0),
        }
    }

    pub fn visible(&self) -> Lsn {
        *self.visible.borrow()
    }

    /// Follows the visible position.
    pub fn subscribe(&self) -> watch::Receiver<Lsn> {
        self.visible.subscribe()
    }

    pub fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped.load(Ordering::Acquire)
    }

    pub fn last_commit(&self) -> Option<DateTime<Utc>> {
        *self.last_commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_visible(&self, lsn: Lsn) {
        self.visible.send_if_modified(|v| {
            let moved = lsn > *v;
            if moved {
                *v = lsn;
            }
            moved
        });
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub(crate) fn written(&self) -> Lsn {
        Lsn(self.written.load(Ordering::Acquire))
    }

    fn set_written(&self, lsn: Lsn) {
        self.written.store(lsn.0, Ordering::Release);
    }

    fn set_last_commit(&self, t: DateTime<Utc>) {
        *self.last_commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// A restarted pipeline resumes from the reopened index's durable
    /// commit; what searches see stays where it is.
    fn restart_at(&self, durable: Lsn) {
        self.set_written(durable);
        self.durable.store(durable.0, Ordering::Release);
    }
}

/// A transaction (or a bare progress marker) on its way to the index.
#[derive(Debug)]
enum SourceMsg {
    Txn {
        end_lsn: Lsn,
        /// The transaction's id: a re-read of one of its rows waits until a
        /// snapshot sees it (its commit is sent once it is on disk, which can
        /// be before other sessions see it).
        xid: u32,
        commit_time: Option<DateTime<Utc>>,
        changes: Vec<Change>,
    },
    Progress(Lsn),
}

#[derive(Debug)]
enum Change {
    /// A new row version; `bool`: an INSERT (the row is new).
    Upsert(Table, Tuple, bool),
    Delete(Uuid),
    Truncate(Vec<Table>),
    /// A tenant's placement on shards changed (`None`: the row is gone).
    Placement(Uuid, Option<shard::Placement>),
}

#[derive(Debug)]
struct Batch {
    ops: Vec<Op>,
    lsn: Lsn,
    commit_time: Option<DateTime<Utc>>,
}

/// What every stage shares.
pub(crate) struct Shared {
    cfg: IndexerConfig,
    pool: PgPool,
    store: Arc<IndexStore>,
    progress: Arc<Progress>,
    health: Arc<Health>,
    shard: Option<Arc<shard::ShardState>>,
}

/// The running indexer.
pub struct Indexer {
    pub store: Arc<IndexStore>,
    pub progress: Arc<Progress>,
    /// The supervisor's view of the pipeline.
    pub health: Arc<Health>,
    pub slot: String,
    /// Whether this start indexed a snapshot (rather than resuming).
    pub rebuilt: bool,
    /// How the vector collections came back when resuming.
    pub vectors_loaded: Option<VectorLoad>,
    /// The tenant shard followed, and what it holds.
    pub shard: Option<Arc<shard::ShardState>>,
    pub(crate) pool: PgPool,
    heartbeat_at: Mutex<Option<Instant>>,
    shutdown: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// Why the index cannot serve as it should (see [`Indexer::readiness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// A stage failed and the pipeline is restarting, or keeps failing.
    Restarting,
    /// Behind the server without moving for [`STALL_AFTER`].
    Stalled,
    /// The replication stream is down.
    Disconnected,
}

impl NotReady {
    pub fn reason(self) -> &'static str {
        match self {
            NotReady::Restarting => "indexer_restarting",
            NotReady::Stalled => "index_stalled",
            NotReady::Disconnected => "replication_disconnected",
        }
    }
}

impl Indexer {
    /// Opens the index (cleaned to its durable commit), bootstraps it from
    /// a snapshot when it has no usable position (first start, a missing or
    /// invalidated slot, an index behind its slot), then starts the
    /// supervised pipeline.
    pub async fn start(cfg: IndexerConfig, pool: PgPool) -> crate::Result<Arc<Self>> {
        let dir = cfg.index_dir.clone();
        let store = Arc::new(tokio::task::spawn_blocking(move || IndexStore::open(&dir)).await??);
        let slot = slot::resolve_slot(&pool, &cfg, &store).await?;
        let owner = slot::owner_id(&cfg.index_dir)?;
        slot::claim(&pool, &slot, owner, &cfg.index_dir, cfg.shard.as_deref()).await?;
        if let Some(name) = &cfg.shard {
            shard::ensure_shard(&pool, name).await?;
        }
        let shard_state = cfg
            .shard
            .clone()
            .map(|name| Arc::new(shard::ShardState::new(name, slot.clone())));
        // an index built for another shard (or for none) holds other tenants
        let followed = slot::followed_shard(&cfg.index_dir);
        let switched = (store.committed_lsn()?.is_some() && followed != cfg.shard)
            .then_some("the index was built for another shard");
        let (start, replay_guard) =
            slot::prepare_slot(&pool, &store, &slot, &cfg, switched, shard_state.as_deref())
                .await?;
        slot::record_shard(&cfg.index_dir, cfg.shard.as_deref())?;
        if let Some(s) = &shard_state {
            s.load(&pool).await?;
        }
        let rebuilt = replay_guard.is_some();
        let replay_guard = replay_guard.unwrap_or(start);
        let vectors_loaded = if rebuilt {
            None
        } else {
            Some(vectors::load_vectors(&pool, &store).await?)
        };
        let progress = Arc::new(Progress::new(start));
        progress
            .replay_guard
            .store(replay_guard.0, Ordering::Release);
        progress.bootstrapped.store(true, Ordering::Release);
        let (shutdown, _) = watch::channel(false);
        let health = Arc::new(Health::default());
        let shared = Arc::new(Shared {
            cfg,
            pool: pool.clone(),
            store: store.clone(),
            progress: progress.clone(),
            health: health.clone(),
            shard: shard_state.clone(),
        });
        let supervisor = tokio::spawn(supervisor::supervise(shared, shutdown.subscribe()));
        tokio::spawn(slot::renew_claim(
            pool.clone(),
            slot.clone(),
            owner,
            shutdown.subscribe(),
        ));
        let indexer = Arc::new(Self {
            store,
            progress,
            health,
            slot,
            rebuilt,
            vectors_loaded,
            shard: shard_state,
            pool,
            heartbeat_at: Mutex::new(None),
            shutdown,
            supervisor: Mutex::new(Some(supervisor)),
        });
        if let Some(loads) = indexer.shard.as_ref().and_then(|s| s.take_loads()) {
            tokio::spawn(shard::load_tenants(Arc::downgrade(&indexer), loads));
        }
        tracing::info!(slot = %indexer.slot, shard = ?indexer.shard.as_ref().map(|s| &s.name), lsn = %start, "indexer streaming");
        Ok(indexer)
    }

    /// Whether the index serves as it should, given its `lag` (from
    /// [`Progress::lag`] just before): none when it does.
    pub fn readiness(&self, lag: &Lag) -> Option<NotReady> {
        let h = self.health.get();
        if h.state != PipelineState::Running || h.failing_since.is_some() {
            return Some(NotReady::Restarting);
        }
        if !self.progress.connected() {
            return Some(NotReady::Disconnected);
        }
        (Duration::from_millis(lag.stalled_ms) >= STALL_AFTER).then_some(NotReady::Stalled)
    }

    /// Waits until the index has applied `lsn` (visible to searches), at most
    /// `timeout`. A heartbeat written to the WAL moves the stream past `lsn`
    /// even when no later change to the followed tables comes.
    pub async fn wait_for(&self, lsn: Lsn, timeout: Duration) -> bool {
        let mut rx = self.progress.visible.subscribe();
        if *rx.borrow() >= lsn {
            return true;
        }
        self.heartbeat().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let slice = deadline.min(tokio::time::Instant::now() + Duration::from_millis(250));
            // (the watch guard must not live across the heartbeat's await)
            let reached = tokio::time::timeout_at(slice, rx.wait_for(|v| *v >= lsn))
                .await
                .map(|r| r.is_ok());
            match reached {
                Ok(true) => return true,
                Ok(false) => return false,
                Err(_) if tokio::time::Instant::now() >= deadline => return false,
                // still behind: the stream may have reconnected; beat again
                Err(_) => self.heartbeat().await,
            }
        }
    }

    /// Writes a non-transactional logical message: the stream delivers it
    /// after every transaction that committed before it.
    async fn heartbeat(&self) {
        {
            let mut at = self.heartbeat_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t.elapsed() < Duration::from_millis(20)) {
                return;
            }
            *at = Some(Instant::now());
        }
        let sql = "SELECT pg_logical_emit_message(false, $1, '')::text";
        if let Err(e) = sqlx::query_scalar::<_, String>(sql)
            .bind(HEARTBEAT_PREFIX)
            .fetch_one(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }

    /// Builds the next index generation from a consistent snapshot while
    /// this one serves, catches it up with the changes applied meanwhile,
    /// and swaps it in; `progress(done, total)` as rows load. With `only`,
    /// that tenant is read again from Postgres and every other tenant's
    /// documents and vectors are carried over from the current generation.
    /// On an error the shadow is dropped and the current generation serves on.
    pub async fn reindex(
        &self,
        only: Option<Uuid>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> crate::Result<u64> {
        let started = Instant::now();
        let shadow = {
            let s = self.store.clone();
            let lsn = self.progress.visible();
            // every change applied from here on is held for the shadow; what
            // was applied before becomes visible to the copy below
            tokio::task::spawn_blocking(move || {
                let shadow = s.begin_shadow()?;
                if let Err(e) = s.commit_visible(lsn) {
                    s.cancel_shadow();
                    return Err(e);
                }
                anyhow::Ok(shadow)
            })
            .await
            .map_err(anyhow::Error::from)??
        };
        let result = async {
            let position = crate::wal::position(&self.pool).await?;
            let shard = self.shard.as_ref().map(|s| s.name.as_str());
            let (_, read) =
                snapshot::snapshot(&self.pool, &shadow, position, Some(progress), only, shard)
                    .await?;
            if let Some(tenant) = only {
                let (current, sh) = (self.store.current(), shadow.clone());
                let copied = tokio::task::spawn_blocking(move || {
                    let n = crate::store::copy_tenants_except(&current, &sh, tenant)?;
                    sh.commit(position, false)?;
                    sh.merge_all()?;
                    anyhow::Ok(n)
                })
                .await??;
                tracing::info!(
                    documents = copied,
                    "other tenants carried over into the new generation"
                );
            }
            let s = self.store.clone();
            tokio::task::spawn_blocking(move || s.shadow_loaded()).await??;
            // the shadow holds every change the index has applied: swap at
            // the position searches see
            let at = crate::wal::position(&self.pool).await?;
            self.wait_for(at, Duration::from_secs(60)).await;
            let (s, lsn) = (self.store.clone(), self.progress.visible());
            let n = tokio::task::spawn_blocking(move || s.swap_shadow(lsn)).await??;
            if let (Some(s), Some(tenants), None) = (&self.shard, read, only) {
                s.snapshot_ready(&self.pool, &tenants, position, false)
                    .await?;
            }
            anyhow::Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                tracing::info!(generation = n, tenant = ?only, secs = started.elapsed().as_secs_f64(), "reindex done");
                Ok(n)
            }
            Err(e) => {
                self.store.cancel_shadow();
                Err(e.into())
            }
        }
    }

    /// Stops the pipeline and waits for the committer's last durable commit.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let task = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the stages' tests share: a store in a temporary folder, and a
    //! pool that is never connected (the stages under test do not query).

    use super::*;
    use crate::pgoutput::Value;

    pub struct TempStore {
        pub store: Arc<IndexStore>,
        root: std::path::PathBuf,
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    pub fn temp_store() -> TempStore {
        let root = std::env::temp_dir().join(format!("pipeline-{}", Uuid::new_v4()));
        TempStore {
            store: Arc::new(IndexStore::open(&root).unwrap()),
            root,
        }
    }

    pub fn shared(store: &Arc<IndexStore>) -> Arc<Shared> {
        shared_with(store, Duration::from_secs(3600))
    }

    pub fn shared_with(store: &Arc<IndexStore>, durable_interval: Duration) -> Arc<Shared> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Arc::new(Shared {
            cfg: IndexerConfig {
                database_url: "postgres://nobody@127.0.0.1:1/none".into(),
                index_dir: std::env::temp_dir(),
                node: Some("test".into()),
                shard: None,
                durable_interval,
                durable_docs: 100_000,
                compact_idle: durable_interval,
            },
            pool,
            store: store.clone(),
            progress: Arc::new(Progress::new(Lsn(0))),
            health: Arc::new(Health::default()),
            shard: None,
        })
    }

    /// A row as the stream sends it, every value text.
    pub fn tuple(values: &[(&str, &str)]) -> Tuple {
        Tuple {
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
                .collect(),
        }
    }

    /// A contacts row as the stream sends it.
    pub fn contact_tuple(id: Uuid, last_name: &str) -> Tuple {
        tuple(&[
            ("id", &id.to_string()),
            ("tenant_id", &Uuid::nil().to_string()),
            ("last_name", last_name),
            ("emails", "{}"),
            ("phones", "{}"),
            ("phones_normalized", "{}"),
            ("tags", "{}"),
            ("custom", "{}"),
            ("created_at", "2026-01-01 00:00:00+00"),
            ("updated_at", "2026-01-01 00:00:00+00"),
        ])
    }
}
