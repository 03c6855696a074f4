//! Status: positions, lag, counts and the supervisor's health, from the
//! running indexer or, for another process, from the disk and Postgres.

use std::time::Duration;

use anyhow::Result;
use schema::index::DocType;
use sqlx::PgPool;

use super::slot::{slot_row, slot_warnings};
use super::supervisor::PipelineHealth;
use super::{Indexer, IndexerConfig};
use crate::Lsn;

impl Indexer {
    /// What a tenant's admin sees at `/v1/admin/status`: how fresh the index
    /// is, and that tenant's documents in it; nothing of the deployment's
    /// other tenants, slot or files.
    pub async fn tenant_status(&self, tenant: uuid::Uuid) -> crate::Result<TenantStatus> {
        let current = crate::wal::position(&self.pool).await?;
        self.wait_for(current, Duration::from_secs(1)).await;
        let lag = self.progress.lag(current);
        let store = self.store.clone();
        let documents = tokio::task::spawn_blocking(move || Documents {
            contacts: store.count_in(tenant, DocType::Contact),
            companies: store.count_in(tenant, DocType::Company),
            memories: store.count_in(tenant, DocType::Memory),
        })
        .await?;
        let health = self.health.get();
        Ok(TenantStatus {
            tenant,
            applied_lsn: lag.applied_lsn,
            server_lsn: current,
            lag_bytes: lag.lag_bytes,
            lag_ms: lag.lag_ms,
            connected: self.progress.connected(),
            pipeline: health.state,
            documents,
        })
    }

    /// Positions and counts for `/v1/admin/status`.
    pub async fn status(&self) -> crate::Result<Status> {
        let current = crate::wal::position(&self.pool).await?;
        // let the stream pass the current position if it is idle
        self.wait_for(current, Duration::from_secs(1)).await;
        let slot = slot_row(&self.pool, &self.slot).await?.unwrap_or_default();
        let lag = self.progress.lag(current);
        super::lag::record(&lag, &self.progress);
        let store = self.store.clone();
        let (contacts, companies, memories, segments) = tokio::task::spawn_blocking(move || {
            (
                store.count(DocType::Contact),
                store.count(DocType::Company),
                store.count(DocType::Memory),
                store.segments(),
            )
        })
        .await?;
        let vectors = {
            let stats = self.store.vectors().stats();
            Some(Vectors {
                collections: stats.len(),
                points: stats.values().map(|c| c.points).sum(),
                indexed: stats.values().map(|c| c.indexed).sum(),
                agent_graphs: stats.values().map(|c| c.agent_graphs).sum(),
                memory_bytes: stats.values().map(|c| c.memory_bytes).sum(),
            })
        };
        Ok(Status {
            slot: self.slot.clone(),
            applied_lsn: lag.applied_lsn,
            durable_lsn: self.progress.durable(),
            server_lsn: current,
            lag_bytes: lag.lag_bytes,
            lag_ms: lag.lag_ms,
            stalled_ms: lag.stalled_ms,
            connected: self.progress.connected(),
            last_error: self.progress.last_error(),
            pipeline: Some(self.health.get()),
            catching_up_to: self.store.catching_up_to(),
            slot_confirmed_lsn: slot.confirmed,
            warnings: slot_warnings(slot.retained, slot.wal_status.as_deref()),
            slot_retained_wal_bytes: slot.retained,
            slot_wal_status: slot.wal_status,
            documents: Documents {
                contacts,
                companies,
                memories,
            },
            vectors,
            segments,
            shard: self.shard.as_ref().map(|s| s.status()),
        })
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Documents {
    pub contacts: u64,
    pub companies: u64,
    pub memories: u64,
}

/// The in-process vector collections, summed over tenants.
#[derive(Debug, serde::Serialize)]
pub struct Vectors {
    pub collections: usize,
    /// Live points.
    pub points: usize,
    /// Points in an approximate index (the rest are scanned exactly).
    pub indexed: usize,
    /// Agents with a graph of their own (those too large to scan and too
    /// small for a filtered walk of their tenant's graph).
    pub agent_graphs: usize,
    /// Bytes the collections hold in memory (columns, vectors, graphs).
    pub memory_bytes: usize,
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
    /// How long the index has been behind the server without moving.
    pub stalled_ms: u64,
    pub connected: bool,
    /// The last error of the stream or of a stage.
    pub last_error: Option<String>,
    /// The supervisor's view: running or restarting, restarts, the last
    /// failure (none offline).
    pub pipeline: Option<PipelineHealth>,
    /// A restarted pipeline replays up to here before its generation
    /// serves (meanwhile searches see the one they saw).
    pub catching_up_to: Option<Lsn>,
    pub slot_confirmed_lsn: Option<String>,
    pub slot_retained_wal_bytes: Option<i64>,
    pub slot_wal_status: Option<String>,
    /// What an operator should look at: WAL the slot holds back, a slot
    /// about to be or already invalidated.
    pub warnings: Vec<String>,
    pub documents: Documents,
    /// The vector collections (none offline).
    pub vectors: Option<Vectors>,
    pub segments: usize,
    /// The tenant shard followed (none: every tenant).
    pub shard: Option<super::shard::ShardStatus>,
}

/// `/v1/admin/status` for a tenant's admin key.
#[derive(Debug, serde::Serialize)]
pub struct TenantStatus {
    pub tenant: uuid::Uuid,
    /// Searches see everything up to here.
    pub applied_lsn: Lsn,
    pub server_lsn: Lsn,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub connected: bool,
    pub pipeline: super::supervisor::PipelineState,
    /// The tenant's documents in the index.
    pub documents: Documents,
}

#[derive(Default)]
struct OnDisk {
    lsn: Lsn,
    contacts: u64,
    companies: u64,
    memories: u64,
    segments: usize,
}

/// Status from another process than `serve`: the durable state on disk (a
/// running server is ahead by up to its durable interval) and Postgres.
pub async fn offline_status(cfg: &IndexerConfig, pool: &PgPool) -> crate::Result<Status> {
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
            memories: crate::store::count(&searcher, &schema, DocType::Memory),
            segments: searcher.segment_readers().len(),
        })
    })
    .await??;
    let current = crate::wal::position(pool).await?;
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
        stalled_ms: 0,
        connected: slot.active_pid.is_some(),
        last_error: None,
        pipeline: None,
        catching_up_to: None,
        slot_confirmed_lsn: slot.confirmed,
        warnings: slot_warnings(slot.retained, slot.wal_status.as_deref()),
        slot_retained_wal_bytes: slot.retained,
        slot_wal_status: slot.wal_status,
        documents: Documents {
            contacts: on_disk.contacts,
            companies: on_disk.companies,
            memories: on_disk.memories,
        },
        vectors: None,
        segments: on_disk.segments,
        shard: cfg.shard.as_ref().map(|name| super::shard::ShardStatus {
            name: name.clone(),
            tenants: None,
            loading: Vec::new(),
        }),
    })
}
