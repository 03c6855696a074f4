//! Configuration: defaults < TOML file (`--config`) < environment < flags.
//! The environment and flags are read by clap (see `cli.rs`); the file fills
//! whatever neither set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The settings a file may hold. Unknown keys are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub addr: Option<String>,
    pub redis_url: Option<String>,
    pub master_key: Option<String>,
    pub model_dir: Option<PathBuf>,
    pub pg_bin: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub body_limit_bytes: Option<usize>,
    pub bulk_body_limit_bytes: Option<usize>,
    pub db_pool_size: Option<u32>,
    pub node: Option<String>,
    pub shard: Option<String>,
    pub ready_max_lag_bytes: Option<u64>,
    pub durable_interval_ms: Option<u64>,
    pub dedup_threshold: Option<f32>,
    pub result_cache_mb: Option<usize>,
    pub cors_origins: Option<Vec<String>>,
    pub request_timeout_ms: Option<u64>,
    pub compress_min_bytes: Option<u16>,
    pub header_timeout_ms: Option<u64>,
    pub body_budget_mb: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    /// `[rate_limits]`; from the flags, only its three plain settings.
    pub rate_limits: Option<crate::limits::LimitsFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The settings in force, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub redis_url: Option<String>,
    pub master_key: Option<String>,
    pub model_dir: Option<PathBuf>,
    pub pg_bin: Option<PathBuf>,
    pub log_format: LogFormat,
    pub body_limit_bytes: usize,
    pub bulk_body_limit_bytes: usize,
    pub db_pool_size: u32,
    /// Names this node's replication slot: `crmsearch_<node>`. None: a
    /// name derived from the database and the data folder.
    pub node: Option<String>,
    /// The tenant shard this node serves (`CRMSEARCH_SHARD`); None: every
    /// tenant.
    pub shard: Option<String>,
    /// `/readyz` answers 503 while the index is further behind than this.
    pub ready_max_lag_bytes: u64,
    /// Longest time between durable index commits while changes arrive.
    pub durable_interval_ms: u64,
    /// A new memory this similar (cosine) to one of the same tenant, agent
    /// and subject updates it instead; above 1: never.
    pub dedup_threshold: f32,
    /// MiB of search answers kept per index version (0: no result cache).
    pub result_cache_mb: usize,
    /// Origins browsers may call from; empty: no CORS headers; `*`: any.
    pub cors_origins: Vec<String>,
    /// A request still running after this is answered 503 (bulk routes get
    /// ten times as long).
    pub request_timeout_ms: u64,
    /// Smallest answer compressed.
    pub compress_min_bytes: u16,
    /// The longest a client may take to send a request's headers, and the
    /// longest a kept-alive connection may stay idle.
    pub header_timeout_ms: u64,
    /// MiB of request bodies held in memory at once; more wait.
    pub body_budget_mb: usize,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no bound;
    /// behind a proxy every connection has the proxy's address).
    pub max_connections_per_client: usize,
    /// Rate limits by tier, class and scope.
    pub limits: crate::limits::LimitsConfig,
}

impl Config {
    pub const DEFAULT_ADDR: &str = "127.0.0.1:7070";
    pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
    pub const DEFAULT_BULK_BODY_LIMIT: usize = 64 << 20;
    /// Shortest master key accepted: it creates tenants.
    pub const MIN_MASTER_KEY_LEN: usize = 16;

    /// Layers `over` (env and flags, already merged by clap) on the file.
    pub fn resolve(over: FileConfig, file: Option<&Path>) -> Result<Self> {
        let base: FileConfig = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let addr_text = over
            .addr
            .or(base.addr)
            .unwrap_or_else(|| Self::DEFAULT_ADDR.into());
        let addr = addr_text.parse().with_context(|| {
            format!("addr (CRMSEARCH_ADDR) `{addr_text}` is not an address like 127.0.0.1:7070")
        })?;
        let flags = over.rate_limits.unwrap_or_default();
        let limits = crate::limits::LimitsConfig::resolve(
            &base.rate_limits.unwrap_or_default(),
            flags.enabled,
            flags.trusted_proxy_header,
            flags.redis_timeout_ms,
        )?;
        let cfg = Self {
            database_url: over
                .database_url
                .or(base.database_url)
                .filter(|u| !u.is_empty()),
            data_dir: over
                .data_dir
                .or(base.data_dir)
                .unwrap_or_else(|| "./data".into()),
            addr,
            redis_url: over.redis_url.or(base.redis_url).filter(|u| !u.is_empty()),
            master_key: over
                .master_key
                .or(base.master_key)
                .filter(|k| !k.is_empty()),
            model_dir: over.model_dir.or(base.model_dir),
            pg_bin: over.pg_bin.or(base.pg_bin),
            log_format: over.log_format.or(base.log_format).unwrap_or_default(),
            body_limit_bytes: over
                .body_limit_bytes
                .or(base.body_limit_bytes)
                .unwrap_or(Self::DEFAULT_BODY_LIMIT),
            bulk_body_limit_bytes: over
                .bulk_body_limit_bytes
                .or(base.bulk_body_limit_bytes)
                .unwrap_or(Self::DEFAULT_BULK_BODY_LIMIT),
            db_pool_size: over.db_pool_size.or(base.db_pool_size).unwrap_or(16),
            node: over.node.or(base.node).filter(|n| !n.is_empty()),
            shard: over.shard.or(base.shard).filter(|n| !n.is_empty()),
            ready_max_lag_bytes: over
                .ready_max_lag_bytes
                .or(base.ready_max_lag_bytes)
                .unwrap_or(16 << 20),
            durable_interval_ms: over
                .durable_interval_ms
                .or(base.durable_interval_ms)
                .unwrap_or(1000),
            dedup_threshold: over
                .dedup_threshold
                .or(base.dedup_threshold)
                .unwrap_or(0.95),
            result_cache_mb: over.result_cache_mb.or(base.result_cache_mb).unwrap_or(64),
            cors_origins: over
                .cors_origins
                .or(base.cors_origins)
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            request_timeout_ms: over
                .request_timeout_ms
                .or(base.request_timeout_ms)
                .unwrap_or(30_000),
            compress_min_bytes: over
                .compress_min_bytes
                .or(base.compress_min_bytes)
                .unwrap_or(1024),
            header_timeout_ms: over
                .header_timeout_ms
                .or(base.header_timeout_ms)
                .unwrap_or(10_000),
            body_budget_mb: over.body_budget_mb.or(base.body_budget_mb).unwrap_or(256),
            max_connections: over
                .max_connections
                .or(base.max_connections)
                .unwrap_or(10_000),
            max_connections_per_client: over
                .max_connections_per_client
                .or(base.max_connections_per_client)
                .unwrap_or(256),
            limits,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if !(self.dedup_threshold.is_finite() && (0.0..=1.01).contains(&self.dedup_threshold)) {
            bail!(
                "dedup_threshold (CRMSEARCH_DEDUP_THRESHOLD) must be a cosine between 0 and 1, or 1.01 to never merge; got {}",
                self.dedup_threshold
            );
        }
        if let Some(k) = &self.master_key
            && k.len() < Self::MIN_MASTER_KEY_LEN
        {
            bail!(
                "master_key (CRMSEARCH_MASTER_KEY) is shorter than {} characters; use a long random value",
                Self::MIN_MASTER_KEY_LEN
            );
        }
        if self.body_limit_bytes < 1024 || self.bulk_body_limit_bytes < 1024 {
            bail!("body_limit_bytes and bulk_body_limit_bytes must be at least 1024");
        }
        if let Some(node) = &self.node
            && (node.len() > 40
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            bail!("node (CRMSEARCH_NODE) `{node}` must be at most 40 letters, digits, `_` or `-`");
        }
        if let Some(shard) = &self.shard
            && !indexer::pipeline::shard::valid_name(shard)
        {
            bail!(
                "shard (CRMSEARCH_SHARD) `{shard}` must be a lowercase letter and up to 15 lowercase letters or digits"
            );
        }
        if self.durable_interval_ms == 0 {
            bail!("durable_interval_ms must be at least 1");
        }
        if self.request_timeout_ms < 100 {
            bail!("request_timeout_ms (CRMSEARCH_REQUEST_TIMEOUT_MS) must be at least 100");
        }
        for origin in self.cors_origins.iter().filter(|o| o.as_str() != "*") {
            if axum::http::HeaderValue::from_str(origin).is_err()
                || !(origin.starts_with("http://") || origin.starts_with("https://"))
            {
                bail!(
                    "cors_origins (CRMSEARCH_CORS_ORIGINS): `{origin}` is not an origin like https://crm.example.com (or `*`)"
                );
            }
        }
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.as_str()).map_err(|e| {
                anyhow::anyhow!(
                    "redis_url (REDIS_URL) is not a Redis URL like redis://127.0.0.1:6379: {e}"
                )
            })?;
        }
        if self.header_timeout_ms < 100 {
            bail!("header_timeout_ms (CRMSEARCH_HEADER_TIMEOUT_MS) must be at least 100");
        }
        if self.body_budget_mb == 0 {
            bail!("body_budget_mb (CRMSEARCH_BODY_BUDGET_MB) must be at least 1");
        }
        if self.max_connections == 0 {
            bail!("max_connections (CRMSEARCH_MAX_CONNECTIONS) must be at least 1");
        }
        if self.db_pool_size == 0 {
            bail!("db_pool_size must be at least 1");
        }
        Ok(())
    }

    /// The indexer's settings for a database at `database_url`.
    pub fn indexer(&self, database_url: &str) -> indexer::IndexerConfig {
        indexer::IndexerConfig {
            database_url: database_url.to_owned(),
            index_dir: self.data_dir.join("index"),
            node: self.node.clone(),
            shard: self.shard.clone(),
            durable_interval: std::time::Duration::from_millis(self.durable_interval_ms),
            durable_docs: 100_000,
            compact_idle: indexer::COMPACT_IDLE,
        }
    }

    /// Settings for tests and embedding: defaults with the given data folder.
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        let mut cfg = Self::resolve(FileConfig::default(), None).expect("defaults are valid");
        cfg.data_dir = data_dir;
        cfg
    }
}
