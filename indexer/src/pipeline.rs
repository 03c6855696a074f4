//! The CDC pipeline: source → mapper → committer, joined by bounded
//! channels, each message carrying the LSN it brings the index to.
//!
//! - **source**: streams the publication `crmsearch` from the slot
//!   `crmsearch_<node>` (pgoutput over the replication protocol), decodes it,
//!   and sends whole transactions; keepalives and heartbeat messages become
//!   progress markers. Reconnects with backoff.
//! - **mapper**: turns row changes into index operations; rows with
//!   unchanged TOAST values are re-read from Postgres.
//! - **committer**: the one writer. Applies operations, makes them visible
//!   with a soft commit as soon as the channel is drained, and makes them
//!   durable (fsync, LSN in the commit payload) on its own trigger. Postgres
//!   is acknowledged only up to the last durable commit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use schema::index::DocType;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Lsn;
use crate::pgoutput::{Decoder, Message, Tuple};
use crate::rows::{self, Table};
use crate::store::{Generation, IndexStore, Op};

/// The prefix of the logical messages that move the applied LSN forward
/// when nothing else does (see [`Indexer::wait_for`]).
pub const HEARTBEAT_PREFIX: &str = "crmsearch_heartbeat";
pub const PUBLICATION: &str = "crmsearch";

#[derive(Debug, Clone)]
pub struct IndexerConfig {
    pub database_url: String,
    pub index_dir: std::path::PathBuf,
    /// Names the slot: `crmsearch_<node>`.
    pub node: String,
    /// Longest time between durable commits while changes are pending.
    pub durable_interval: Duration,
    /// Durable commit after this many documents even before the interval.
    pub durable_docs: usize,
}

impl IndexerConfig {
    pub fn slot(&self) -> String {
        let node: String = self
            .node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("crmsearch_{node}")
    }
}

/// What the pipeline has reached, shared with searches and status.
#[derive(Debug)]
pub struct Progress {
    visible: watch::Sender<Lsn>,
    durable: AtomicU64,
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
}

/// A transaction (or a bare progress marker) on its way to the index.
#[derive(Debug)]
enum SourceMsg {
    Txn {
        end_lsn: Lsn,
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
}

#[derive(Debug)]
struct Batch {
    ops: Vec<Op>,
    lsn: Lsn,
    commit_time: Option<DateTime<Utc>>,
}

/// The running indexer.
pub struct Indexer {
    pub store: Arc<IndexStore>,
    pub progress: Arc<Progress>,
    pub slot: String,
    /// Whether this start indexed a snapshot (rather than resuming).
    pub rebuilt: bool,
    /// How the vector collections came back when resuming.
    pub vectors_loaded: Option<VectorLoad>,
    pub(crate) pool: PgPool,
    heartbeat_at: Mutex<Option<Instant>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Indexer {
    /// Opens the index, bootstraps it from a snapshot when it has no usable
    /// position (first start, a missing or invalidated slot, an index behind
    /// its slot), then starts streaming.
    pub async fn start(cfg: IndexerConfig, pool: PgPool) -> Result<Arc<Self>> {
        let dir = cfg.index_dir.clone();
        let store = Arc::new(tokio::task::spawn_blocking(move || IndexStore::open(&dir)).await??);
        let slot = cfg.slot();
        let (start, replay_guard) = prepare_slot(&pool, &store, &slot).await?;
        let rebuilt = replay_guard.is_some();
        let replay_guard = replay_guard.unwrap_or(start);
        let vectors_loaded = if rebuilt {
            None
        } else {
            Some(load_vectors(&pool, &store).await?)
        };
        let progress = Arc::new(Progress::new(start));
        progress
            .replay_guard
            .store(replay_guard.0, Ordering::Release);
        progress.bootstrapped.store(true, Ordering::Release);
        let (shutdown, _) = watch::channel(false);
        let indexer = Arc::new(Self {
            store: store.clone(),
            progress: progress.clone(),
            slot,
            rebuilt,
            vectors_loaded,
            pool: pool.clone(),
            heartbeat_at: Mutex::new(None),
            shutdown,
            tasks: Mutex::new(Vec::new()),
        });
        let (src_tx, src_rx) = mpsc::channel::<SourceMsg>(1024);
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(64);
        let tasks = vec![
            tokio::spawn(run_source(
                cfg.clone(),
                pool.clone(),
                store.clone(),
                progress.clone(),
                src_tx,
                indexer.shutdown.subscribe(),
            )),
            tokio::spawn(run_mapper(
                store.clone(),
                pool.clone(),
                progress.clone(),
                src_rx,
                batch_tx,
            )),
            tokio::spawn(run_committer(cfg, store, progress.clone(), batch_rx)),
            tokio::spawn(run_lag_metrics(
                pool,
                progress,
                indexer.shutdown.subscribe(),
            )),
            tokio::spawn(run_presync(
                indexer.store.clone(),
                indexer.shutdown.subscribe(),
            )),
            tokio::spawn(run_vector_maintenance(
                indexer.store.clone(),
                indexer.progress.clone(),
                indexer.shutdown.subscribe(),
            )),
        ];
        *indexer.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        tracing::info!(slot = %indexer.slot, lsn = %start, "indexer streaming");
        Ok(indexer)
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
    ) -> Result<u64> {
        let started = Instant::now();
        let shadow = {
            let s = self.store.clone();
            let lsn = self.progress.visible();
            // every change applied from here on is held for the shadow; what
            // was applied before becomes visible to the copy below
            tokio::task::spawn_blocking(move || {
                let shadow = s.begin_shadow()?;
                s.commit(lsn, false)?;
                anyhow::Ok(shadow)
            })
            .await??
        };
        let result = async {
            let position = crate::verify::wal_position(&self.pool).await?;
            snapshot(&self.pool, &shadow, position, Some(progress), only).await?;
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
            let at = crate::verify::wal_position(&self.pool).await?;
            self.wait_for(at, Duration::from_secs(60)).await;
            let (s, lsn) = (self.store.clone(), self.progress.visible());
            tokio::task::spawn_blocking(move || s.swap_shadow(lsn)).await?
        }
        .await;
        match result {
            Ok(n) => {
                tracing::info!(generation = n, tenant = ?only, secs = started.elapsed().as_secs_f64(), "reindex done");
                Ok(n)
            }
            Err(e) => {
                self.store.cancel_shadow();
                Err(e)
            }
        }
    }

    /// Stops the stream and waits for the committer's last durable commit.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Positions and counts for `/v1/admin/status`.
    pub async fn status(&self) -> Result<Status> {
        let current: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await?;
        let current: Lsn = current.parse()?;
        // let the stream pass the current position if it is idle
        self.wait_for(current, Duration::from_secs(1)).await;
        let slot = slot_row(&self.pool, &self.slot).await?.unwrap_or_default();
        let visible = self.progress.visible();
        let lag_bytes = current.0.saturating_sub(visible.0);
        let lag_ms = if lag_bytes == 0 {
            0
        } else {
            self.progress
                .last_commit()
                .map_or(0, |t| (Utc::now() - t).num_milliseconds().max(0) as u64)
        };
        let store = self.store.clone();
        let (contacts, companies, segments) = tokio::task::spawn_blocking(move || {
            (
                store.count(DocType::Contact),
                store.count(DocType::Company),
                store.segments(),
            )
        })
        .await?;
        metrics::gauge!("crmsearch_cdc_lag_bytes").set(lag_bytes as f64);
        Ok(Status {
            slot: self.slot.clone(),
            applied_lsn: visible,
            durable_lsn: self.progress.durable(),
            server_lsn: current,
            lag_bytes,
            lag_ms,
            connected: self.progress.connected(),
            last_error: self.progress.last_error(),
            slot_confirmed_lsn: slot.confirmed,
            warnings: slot_warnings(slot.retained, slot.wal_status.as_deref()),
            slot_retained_wal_bytes: slot.retained,
            slot_wal_status: slot.wal_status,
            documents: Documents {
                contacts,
                companies,
            },
            segments,
        })
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Documents {
    pub contacts: u64,
    pub companies: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub slot: String,
    /// Searches see everything up to here.
    pub applied_lsn: Lsn,
    /// Survives a crash; Postgres is acknowledged up to here.
    pub durable_lsn: Lsn,
    pub server_lsn: Lsn,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub connected: bool,
    pub last_error: Option<String>,
    pub slot_confirmed_lsn: Option<String>,
    pub slot_retained_wal_bytes: Option<i64>,
    pub slot_wal_status: Option<String>,
    /// What an operator should look at: WAL the slot holds back, a slot
    /// about to be or already invalidated.
    pub warnings: Vec<String>,
    pub documents: Documents,
    pub segments: usize,
}

/// Retained WAL above this is worth a warning (1 GiB).
pub const SLOT_WARN_BYTES: i64 = 1 << 30;

/// The warnings of a slot's state, each logged.
fn slot_warnings(retained: Option<i64>, wal_status: Option<&str>) -> Vec<String> {
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

/// The replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Default, sqlx::FromRow)]
struct SlotRow {
    confirmed: Option<String>,
    retained: Option<i64>,
    wal_status: Option<String>,
    active_pid: Option<i32>,
}

async fn slot_row(pool: &PgPool, slot: &str) -> Result<Option<SlotRow>> {
    Ok(sqlx::query_as(
        "SELECT confirmed_flush_lsn::text AS confirmed,
                pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained,
                wal_status, active_pid
           FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?)
}

/// Decides where to stream from; rebuilds from a snapshot when needed.
/// Returns where to stream from and, after a rebuild, the position up to
/// which replayed transactions may already be in the snapshot.
async fn prepare_slot(
    pool: &PgPool,
    store: &Arc<IndexStore>,
    slot: &str,
) -> Result<(Lsn, Option<Lsn>)> {
    let indexed = store.committed_lsn()?;
    let row = slot_row(pool, slot).await?;
    if let Some(pid) = row.as_ref().and_then(|r| r.active_pid) {
        bail!(
            "the replication slot {slot} is in use by the Postgres backend {pid}: is another crmsearch \
             running with the same CRMSEARCH_NODE?"
        );
    }
    let reason = match (&row, indexed) {
        (None, _) => Some("no replication slot yet"),
        (Some(r), _) if r.wal_status.as_deref() == Some("lost") => {
            Some("the replication slot was invalidated")
        }
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
    if row.is_some() {
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
    let consistent: Lsn = consistent.parse()?;
    let seen = snapshot(pool, &store.current(), consistent, None, None).await?;
    Ok((consistent, Some(seen)))
}

/// Indexes every row as of a snapshot taken after the slot's consistent
/// point; the stream then replays from that point, idempotently. Returns a
/// position at or after the commit of every transaction the snapshot saw.
async fn snapshot(
    pool: &PgPool,
    store: &Arc<Generation>,
    consistent: Lsn,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    only: Option<Uuid>,
) -> Result<Lsn> {
    use futures_util::TryStreamExt;
    let started = Instant::now();
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.bulk_writer()?;
        s.clear()
    })
    .await??;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // the first statement takes the snapshot; WAL inserted before it covers
    // the commit of everything it sees
    let seen: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&mut *tx)
        .await?;
    let seen: Lsn = seen.parse()?;
    let mut expected = 0u64;
    if progress.is_some() {
        for table in [Table::Companies, Table::Contacts, Table::Memories] {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {} WHERE $1::uuid IS NULL OR tenant_id = $1",
                table.name()
            ))
            .bind(only)
            .fetch_one(&mut *tx)
            .await?;
            expected += n as u64;
        }
    }
    let mut total = 0u64;
    for table in [Table::Companies, Table::Contacts, Table::Memories] {
        let sql = format!(
            "{} WHERE $1::uuid IS NULL OR tenant_id = $1",
            table.select_text()
        );
        let mut rows = sqlx::query(&sql).bind(only).fetch(&mut *tx);
        let mut ops = Vec::with_capacity(4096);
        let mut n = 0u64;
        while let Some(row) = rows.try_next().await? {
            let map = rows::to_map(table, &row)?;
            // the index was emptied: nothing to replace
            match table.upsert(&store.schema, &map, true, consistent) {
                Ok(op) => ops.push(op),
                Err(e) => tracing::error!(table = table.name(), error = %e, "cannot index a row"),
            }
            n += 1;
            if ops.len() == 4096 {
                let s = store.clone();
                let batch = std::mem::replace(&mut ops, Vec::with_capacity(4096));
                tokio::task::spawn_blocking(move || s.apply(batch)).await??;
            }
            if let Some(p) = progress
                && n.is_multiple_of(4096)
            {
                p(total + n, expected);
            }
            if n.is_multiple_of(50_000) {
                let rate = n as f64 / started.elapsed().as_secs_f64();
                tracing::info!(
                    table = table.name(),
                    rows = n,
                    rows_per_s = rate as u64,
                    "snapshot progress"
                );
            }
        }
        drop(rows);
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.apply(ops)).await??;
        tracing::info!(table = table.name(), rows = n, "snapshot table indexed");
        total += n;
        if let Some(p) = progress {
            p(total, expected.max(total));
        }
    }
    tx.commit().await?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.commit(consistent, true)?;
        // one segment: every search pays per segment
        s.merge_all()?;
        s.commit(consistent, true)?;
        s.streaming_writer()
    })
    .await??;
    tracing::info!(rows = total, lsn = %consistent, secs = started.elapsed().as_secs_f64(), "snapshot indexed");
    Ok(seen)
}

fn replication_config(cfg: &IndexerConfig, start: Lsn, ack: Lsn) -> Result<ReplicationConfig> {
    let url = url::Url::parse(&cfg.database_url).context("DATABASE_URL is not a URL")?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let user = decode(url.username());
    let password = url.password().map(decode).unwrap_or_default();
    let database = url.path().trim_start_matches('/').to_owned();
    Ok(
        ReplicationConfig::new(host, user, password, database, cfg.slot(), PUBLICATION)
            .with_port(url.port().unwrap_or(5432))
            .with_tls(TlsConfig::disabled())
            .with_start_lsn(pgwire_replication::Lsn::from_u64(start.0))
            .with_ack_lsn(pgwire_replication::Lsn::from_u64(ack.0))
            .with_status_interval(Duration::from_secs(1))
            .with_wakeup_interval(Duration::from_secs(1))
            .with_application_name(format!("crmsearch {}", cfg.node))
            .with_options("-c TimeZone=UTC"),
    )
}

/// Fsyncs new index files in the background so a durable commit holds the
/// writer only for what was written in the last moment.
async fn run_presync(store: Arc<IndexStore>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let s = store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.presync()).await {
            tracing::warn!(error = %e, "fsync of index files failed");
        }
    }
}

/// Loads the vector collections from their dump and brings them to the
/// text index's position: memories the index holds at a later version than
/// the dump are read again from Postgres (the durable copy of the vectors),
/// and points the index no longer holds are dropped. Without a dump every
/// memory is read.
async fn load_vectors(pool: &PgPool, store: &Arc<IndexStore>) -> Result<VectorLoad> {
    let started = Instant::now();
    let (s, d) = (store.clone(), store.current().vector_dir());
    let dumped = tokio::task::spawn_blocking(move || match s.vectors().load(&d) {
        Ok(lsn) => lsn,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot load the vector dump; reading every vector again");
            s.vectors().clear();
            None
        }
    })
    .await?;
    let since = dumped.unwrap_or_default();
    let s = store.clone();
    let (stale, gone) = tokio::task::spawn_blocking(move || memory_versions(&s, since)).await??;
    for id in &gone {
        store.vectors().delete(*id);
    }
    let sql = format!("{} WHERE id = ANY($1)", Table::Memories.select_text());
    for chunk in stale.chunks(5_000) {
        let rows = sqlx::query(&sql).bind(chunk).fetch_all(pool).await?;
        let mut found = std::collections::HashSet::with_capacity(chunk.len());
        for row in &rows {
            let map = rows::to_map(Table::Memories, row)?;
            match Table::Memories.upsert(&store.schema, &map, false, since) {
                Ok(Op::Upsert { id, point, .. }) => {
                    found.insert(id);
                    match point {
                        Some(p) => store.vectors().upsert(&p),
                        None => store.vectors().delete(id),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read a memory's vector"),
            }
        }
        for id in chunk.iter().filter(|id| !found.contains(*id)) {
            store.vectors().delete(*id);
        }
    }
    tracing::info!(
        dump = ?dumped,
        reread = stale.len(),
        dropped = gone.len(),
        secs = started.elapsed().as_secs_f64(),
        "vector collections loaded"
    );
    Ok(VectorLoad {
        dump: dumped,
        reread: stale.len(),
        dropped: gone.len(),
    })
}

/// What [`load_vectors`] did at a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorLoad {
    /// The position of the dump loaded (none: every vector was read again).
    pub dump: Option<Lsn>,
    /// Memories read again from Postgres (changed after the dump).
    pub reread: usize,
    /// Points dropped (deleted after the dump).
    pub dropped: usize,
}

/// The memories the text index holds at a version after `since`, and the
/// vector points it no longer holds.
fn memory_versions(store: &IndexStore, since: Lsn) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let searcher = store.searcher();
    let q = tantivy::query::TermQuery::new(
        tantivy::Term::from_field_text(store.schema.fields.doc_type, DocType::Memory.as_str()),
        tantivy::schema::IndexRecordOption::Basic,
    );
    let mut present = std::collections::HashSet::new();
    let mut stale = Vec::new();
    let docs = searcher.search(&q, &tantivy::collector::DocSetCollector)?;
    let mut by_segment: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for a in docs {
        by_segment.entry(a.segment_ord).or_default().push(a.doc_id);
    }
    for (seg, docs) in by_segment {
        let reader = searcher.segment_reader(seg);
        let ids = reader
            .fast_fields()
            .str("id")?
            .ok_or_else(|| anyhow::anyhow!("the index has no id column"))?;
        let lsns = reader.fast_fields().u64("lsn")?;
        let mut buf = String::new();
        for doc in docs {
            let Some(ord) = ids.term_ords(doc).next() else {
                continue;
            };
            buf.clear();
            ids.ord_to_str(ord, &mut buf)?;
            let Ok(id) = buf.parse::<Uuid>() else {
                continue;
            };
            present.insert(id);
            if lsns.first(doc).is_none_or(|l| l > since.0) {
                stale.push(id);
            }
        }
    }
    let gone = store
        .vectors()
        .ids()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !present.contains(id))
        .collect();
    Ok((stale, gone))
}

/// Keeps the vector collections' approximate indexes built (in the
/// background, off the committer) and dumps them with their position every
/// few minutes when they changed, and at shutdown.
async fn run_vector_maintenance(
    store: Arc<IndexStore>,
    progress: Arc<Progress>,
    mut shutdown: watch::Receiver<bool>,
) {
    const DUMP_EVERY: Duration = Duration::from_secs(300);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dumped_changes = u64::MAX;
    let mut last_dump = Instant::now();
    let dump = async |store: &Arc<IndexStore>, dumped_changes: &mut u64| {
        let changes = store.vectors().changes();
        if changes == *dumped_changes {
            return;
        }
        // every change up to the visible position is in the collections
        let lsn = progress.visible();
        let generation = store.current();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || {
            generation.vectors.dump(&generation.vector_dir(), lsn)
        })
        .await
        {
            Ok(Ok(())) => {
                *dumped_changes = changes;
                tracing::info!(%lsn, secs = started.elapsed().as_secs_f64(), "vector collections dumped");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot dump the vector collections")
            }
            Err(e) => tracing::warn!(error = %e, "vector dump task failed"),
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                dump(&store, &mut dumped_changes).await;
                return;
            }
        }
        let s = store.clone();
        let built = tokio::task::spawn_blocking(move || s.vectors().maintain())
            .await
            .unwrap_or(false);
        if built || last_dump.elapsed() >= DUMP_EVERY {
            dump(&store, &mut dumped_changes).await;
            last_dump = Instant::now();
        }
    }
}

/// Lag gauges for Prometheus, every few seconds.
async fn run_lag_metrics(
    pool: PgPool,
    progress: Arc<Progress>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Ok(current) = sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&pool)
            .await
        else {
            continue;
        };
        let current: Lsn = current.parse().unwrap_or_default();
        let visible = progress.visible();
        let lag = current.0.saturating_sub(visible.0);
        metrics::gauge!("crmsearch_cdc_lag_bytes").set(lag as f64);
        let lag_ms = if lag == 0 {
            0.0
        } else {
            progress
                .last_commit()
                .map_or(0.0, |t| (Utc::now() - t).num_milliseconds().max(0) as f64)
        };
        metrics::gauge!("crmsearch_cdc_lag_ms").set(lag_ms);
        metrics::gauge!("crmsearch_cdc_durable_behind_bytes")
            .set(visible.0.saturating_sub(progress.durable().0) as f64);
    }
}

async fn run_source(
    cfg: IndexerConfig,
    pool: PgPool,
    store: Arc<IndexStore>,
    progress: Arc<Progress>,
    tx: mpsc::Sender<SourceMsg>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = progress.visible();
        match stream_once(&cfg, start, &progress, &tx, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                progress.connected.store(false, Ordering::Release);
                progress.set_error(Some(format!("{e:#}")));
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "replication stream lost");
                if let Err(e) = rebuild_if_slot_lost(&cfg, &pool, &store, &progress).await {
                    tracing::error!(error = %format!("{e:#}"), "rebuilding after the loss of the replication slot failed; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// When the slot is gone (dropped) or invalidated (`max_slot_wal_keep_size`),
/// the changes since the index's position can no longer be streamed: a new
/// slot, a snapshot into a new generation while the current one serves, a
/// swap, and the stream resumes from the new slot.
async fn rebuild_if_slot_lost(
    cfg: &IndexerConfig,
    pool: &PgPool,
    store: &Arc<IndexStore>,
    progress: &Arc<Progress>,
) -> Result<()> {
    let slot = cfg.slot();
    let row = slot_row(pool, &slot).await?;
    let lost = match &row {
        None => true,
        Some(r) => r.wal_status.as_deref() == Some("lost"),
    };
    if !lost {
        return Ok(());
    }
    tracing::error!(
        %slot,
        state = if row.is_some() { "invalidated" } else { "dropped" },
        "THE REPLICATION SLOT IS LOST: changes since the index's position cannot be streamed; rebuilding the \
         index from a snapshot while the current one serves (set max_slot_wal_keep_size high enough, and keep \
         the indexer running)"
    );
    if row.is_some() {
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&slot)
            .execute(pool)
            .await?;
    }
    let consistent: String = sqlx::query_scalar(
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
    )
    .bind(&slot)
    .fetch_one(pool)
    .await
    .context("cannot create the replication slot")?;
    let consistent: Lsn = consistent.parse()?;
    let s = store.clone();
    let shadow = tokio::task::spawn_blocking(move || s.begin_shadow()).await??;
    let rebuilt = async {
        let seen = snapshot(pool, &shadow, consistent, None, None).await?;
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            s.shadow_loaded()?;
            s.swap_shadow(consistent)
        })
        .await??;
        anyhow::Ok(seen)
    }
    .await;
    match rebuilt {
        Ok(seen) => {
            progress.replay_guard.store(seen.0, Ordering::Release);
            progress.set_visible(consistent);
            metrics::counter!("crmsearch_slot_rebuilds_total").increment(1);
            tracing::warn!(%slot, lsn = %consistent, "index rebuilt after the slot loss; streaming from the new slot");
            Ok(())
        }
        Err(e) => {
            store.cancel_shadow();
            Err(e)
        }
    }
}

/// One replication session, until it fails or shutdown.
async fn stream_once(
    cfg: &IndexerConfig,
    start: Lsn,
    progress: &Arc<Progress>,
    tx: &mpsc::Sender<SourceMsg>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut client =
        ReplicationClient::connect(replication_config(cfg, start, progress.durable())?).await?;
    client.wait_started().await?;
    progress.connected.store(true, Ordering::Release);
    progress.set_error(None);
    tracing::info!(lsn = %start, "replication stream connected");
    let mut decoder = Decoder::default();
    let mut txn: Option<Vec<Change>> = None;
    let mut ack = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            ev = client.recv() => {
                let Some(ev) = ev? else { bail!("the replication stream ended") };
                if let Some(msg) = on_event(ev, &mut decoder, &mut txn)?
                    && tx.send(msg).await.is_err()
                {
                    return Ok(());
                }
            }
            _ = ack.tick() => client.update_applied_lsn(pgwire_replication::Lsn::from_u64(progress.durable().0)),
            _ = shutdown.changed() => {
                client.update_applied_lsn(pgwire_replication::Lsn::from_u64(progress.durable().0));
                let _ = client.shutdown().await;
                return Ok(());
            }
        }
    }
}

fn micros_to_time(pg_micros: i64) -> Option<DateTime<Utc>> {
    // Postgres counts from 2000-01-01
    DateTime::from_timestamp_micros(pg_micros + 946_684_800_000_000)
}

fn on_event(
    ev: ReplicationEvent,
    decoder: &mut Decoder,
    txn: &mut Option<Vec<Change>>,
) -> Result<Option<SourceMsg>> {
    Ok(match ev {
        ReplicationEvent::Begin { .. } => {
            *txn = Some(Vec::new());
            None
        }
        ReplicationEvent::XLogData { data, .. } => {
            let msg = decoder.decode(&data)?;
            let table_of =
                |rel: u32, d: &Decoder| d.relation(rel).and_then(|r| Table::from_name(&r.name));
            let change = match msg {
                Message::Relation(_) | Message::Ignored => None,
                Message::Insert { relation, new } => {
                    table_of(relation, decoder).map(|t| Change::Upsert(t, new, true))
                }
                Message::Update { relation, new } => {
                    table_of(relation, decoder).map(|t| Change::Upsert(t, new, false))
                }
                Message::Delete { relation, old } => match table_of(relation, decoder) {
                    Some(_) => {
                        let id = schema::pgtext::uuid(&old, "id")
                            .map_err(|e| anyhow::anyhow!("delete: {e}"))?;
                        Some(Change::Delete(id))
                    }
                    None => None,
                },
                Message::Truncate { relations } => {
                    let tables: Vec<Table> = relations
                        .iter()
                        .filter_map(|r| table_of(*r, decoder))
                        .collect();
                    (!tables.is_empty()).then_some(Change::Truncate(tables))
                }
            };
            if let (Some(c), Some(t)) = (change, txn.as_mut()) {
                t.push(c);
            }
            None
        }
        ReplicationEvent::Commit {
            end_lsn,
            commit_time_micros,
            ..
        } => Some(SourceMsg::Txn {
            end_lsn: Lsn(end_lsn.as_u64()),
            commit_time: micros_to_time(commit_time_micros),
            changes: txn.take().unwrap_or_default(),
        }),
        ReplicationEvent::KeepAlive { wal_end, .. } if txn.is_none() => {
            Some(SourceMsg::Progress(Lsn(wal_end.as_u64())))
        }
        ReplicationEvent::Message {
            transactional: false,
            lsn,
            prefix,
            ..
        } if prefix == HEARTBEAT_PREFIX && txn.is_none() => {
            Some(SourceMsg::Progress(Lsn(lsn.as_u64())))
        }
        ReplicationEvent::KeepAlive { .. }
        | ReplicationEvent::Message { .. }
        | ReplicationEvent::StoppedAt { .. } => None,
    })
}

/// Maps transactions to index operations. `replay_guard`: transactions that
/// committed at or before it may already be in the index (the snapshot of a
/// rebuild); after it, an INSERT is a row the index has never seen — the
/// index holds exactly the transactions up to the position the stream
/// resumes from, and the committer drops transactions it has applied.
async fn run_mapper(
    store: Arc<IndexStore>,
    pool: PgPool,
    progress: Arc<Progress>,
    mut rx: mpsc::Receiver<SourceMsg>,
    tx: mpsc::Sender<Batch>,
) {
    while let Some(msg) = rx.recv().await {
        let batch = match msg {
            SourceMsg::Progress(lsn) => Batch {
                ops: Vec::new(),
                lsn,
                commit_time: None,
            },
            SourceMsg::Txn {
                end_lsn,
                commit_time,
                changes,
            } => {
                let mut ops = Vec::with_capacity(changes.len());
                for change in changes {
                    match map_change(
                        &store,
                        &pool,
                        change,
                        end_lsn.0 > progress.replay_guard.load(Ordering::Acquire),
                        end_lsn,
                    )
                    .await
                    {
                        Ok(op) => ops.extend(op),
                        Err(e) => {
                            metrics::counter!("crmsearch_cdc_map_errors_total").increment(1);
                            tracing::error!(error = %format!("{e:#}"), lsn = %end_lsn, "cannot index a change");
                        }
                    }
                }
                Batch {
                    ops,
                    lsn: end_lsn,
                    commit_time,
                }
            }
        };
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

/// `fresh_inserts`: an INSERT of this transaction cannot be in the index yet
/// (see [`run_mapper`]); `lsn`: the transaction's commit position.
async fn map_change(
    store: &IndexStore,
    pool: &PgPool,
    change: Change,
    fresh_inserts: bool,
    lsn: Lsn,
) -> Result<Vec<Op>> {
    Ok(match change {
        Change::Upsert(table, tuple, _) if tuple.has_unchanged_toast() => {
            // the stream left out a large value that did not change: read
            // the row as it is now (later changes replay on top of it)
            let id = schema::pgtext::uuid(&tuple, "id").map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut backoff = Duration::from_millis(50);
            // never skip the change: wait for Postgres as long as it takes
            // (the stream is down meanwhile too)
            let row = loop {
                match rows::read_row(pool, table, id).await {
                    Ok(row) => break row,
                    Err(e) => {
                        tracing::warn!(error = %e, "re-reading a row failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            match row {
                Some(row) => vec![table.upsert(&store.schema, &row, false, lsn)?],
                None => vec![Op::Delete { id }],
            }
        }
        Change::Upsert(table, tuple, insert) => {
            vec![table.upsert(&store.schema, &tuple, insert && fresh_inserts, lsn)?]
        }
        Change::Delete(id) => vec![Op::Delete { id }],
        Change::Truncate(tables) => tables
            .into_iter()
            .map(|t| Op::DeleteAll(t.doc_type()))
            .collect(),
    })
}

async fn run_committer(
    cfg: IndexerConfig,
    store: Arc<IndexStore>,
    progress: Arc<Progress>,
    mut rx: mpsc::Receiver<Batch>,
) {
    let mut applied = progress.visible();
    let mut uncommitted_ops = 0usize;
    let mut docs_since_durable = 0usize;
    let mut last_durable = Instant::now();
    let mut last_commit_time = None;
    loop {
        let durable_due = last_durable + cfg.durable_interval;
        let first = tokio::select! {
            b = rx.recv() => b,
            () = tokio::time::sleep_until(durable_due.into()) => None,
        };
        let closed = first.is_none() && rx.is_closed() && rx.is_empty();
        // take whatever else is ready: one commit for all of it
        let mut batches: Vec<Batch> = first.into_iter().collect();
        while batches.iter().map(|b| b.ops.len()).sum::<usize>() < 20_000 {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let mut ops = Vec::new();
        for b in batches {
            // a transaction sent again after a reconnect: already applied
            if b.lsn <= applied {
                continue;
            }
            ops.extend(b.ops);
            applied = b.lsn;
            last_commit_time = b.commit_time.or(last_commit_time);
        }
        let n = ops.len();
        if n > 0 {
            metrics::histogram!("crmsearch_batch_ops").record(n as f64);
            let s = store.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || s.apply(ops))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
            {
                tracing::error!(error = %format!("{e:#}"), "applying to the index failed");
                progress.set_error(Some(format!("index: {e:#}")));
                return;
            }
            uncommitted_ops += n;
            docs_since_durable += n;
        }
        if let Some(t) = last_commit_time {
            *progress
                .last_commit
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
        let durable = closed
            || docs_since_durable >= cfg.durable_docs
            || (Instant::now() >= durable_due && progress.durable() < applied);
        if uncommitted_ops > 0 || durable {
            if uncommitted_ops == 0 && !durable {
                progress.set_visible(applied);
                continue;
            }
            let s = store.clone();
            let lsn = applied;
            match tokio::task::spawn_blocking(move || s.commit(lsn, durable))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
            {
                Ok(took) => {
                    let kind = if durable { "durable" } else { "visible" };
                    metrics::histogram!("crmsearch_commit_seconds", "kind" => kind)
                        .record(took.as_secs_f64());
                    tracing::debug!(%lsn, ops = uncommitted_ops, kind, ms = took.as_secs_f64() * 1e3, "committed");
                    uncommitted_ops = 0;
                    progress.set_visible(lsn);
                    if durable {
                        progress.durable.fetch_max(lsn.0, Ordering::AcqRel);
                        docs_since_durable = 0;
                        last_durable = Instant::now();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "index commit failed");
                    progress.set_error(Some(format!("index commit: {e:#}")));
                    return;
                }
            }
        } else {
            // nothing to write: progress markers move the position at once
            progress.set_visible(applied);
            if Instant::now() >= durable_due {
                last_durable = Instant::now();
            }
        }
        if closed {
            return;
        }
    }
}

#[derive(Default)]
struct OnDisk {
    lsn: Lsn,
    contacts: u64,
    companies: u64,
    segments: usize,
}

/// Status from another process than `serve`: the durable state on disk (a
/// running server is ahead by up to its durable interval) and Postgres.
pub async fn offline_status(cfg: &IndexerConfig, pool: &PgPool) -> Result<Status> {
    let dir = crate::store::current_generation_dir(&cfg.index_dir);
    let on_disk = tokio::task::spawn_blocking(move || -> Result<OnDisk> {
        let Some(dir) = dir.filter(|d| d.join("meta.json").exists()) else {
            return Ok(OnDisk::default());
        };
        let index = tantivy::Index::open_in_dir(&dir)?;
        let lsn = index
            .load_metas()?
            .payload
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let searcher = index.reader()?.searcher();
        let schema = schema::index::IndexSchema::new();
        Ok(OnDisk {
            lsn,
            contacts: crate::store::count(&searcher, &schema, DocType::Contact),
            companies: crate::store::count(&searcher, &schema, DocType::Company),
            segments: searcher.segment_readers().len(),
        })
    })
    .await??;
    let current: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?;
    let current: Lsn = current.parse()?;
    let slot_name = cfg.slot();
    let slot = slot_row(pool, &slot_name).await?.unwrap_or_default();
    let lsn = on_disk.lsn;
    Ok(Status {
        slot: slot_name,
        applied_lsn: lsn,
        durable_lsn: lsn,
        server_lsn: current,
        lag_bytes: current.0.saturating_sub(lsn.0),
        lag_ms: 0,
        connected: slot.active_pid.is_some(),
        last_error: None,
        slot_confirmed_lsn: slot.confirmed,
        warnings: slot_warnings(slot.retained, slot.wal_status.as_deref()),
        slot_retained_wal_bytes: slot.retained,
        slot_wal_status: slot.wal_status,
        documents: Documents {
            contacts: on_disk.contacts,
            companies: on_disk.companies,
        },
        segments: on_disk.segments,
    })
}
