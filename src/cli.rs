//! The `crmsearch` command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::auth::{self, Role};
use crate::config::{Config, FileConfig, LogFormat};
use crate::db::Database;
use crate::server;

#[derive(Parser, Debug)]
#[command(
    name = "crmsearch",
    version,
    about = "Search and vector retrieval for CRM data"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every command: flags, else environment, else the file.
#[derive(Args, Debug)]
pub struct Global {
    /// A TOML file with defaults for any setting below.
    #[arg(long, global = true, env = "CRMSEARCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Postgres URL; when unset, an embedded Postgres runs under the data folder.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder for the index and the embedded Postgres [default: ./data].
    #[arg(long, global = true, env = "CRMSEARCH_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Address the HTTP API listens on [default: 127.0.0.1:7070].
    #[arg(long, global = true, env = "CRMSEARCH_ADDR")]
    pub addr: Option<String>,
    /// Redis for shared rate limits and caches (optional).
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Key that may create tenants and keys over HTTP.
    #[arg(
        long,
        global = true,
        env = "CRMSEARCH_MASTER_KEY",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// Folder of the all-MiniLM-L6-v2 model.
    #[arg(long, global = true, env = "CRMSEARCH_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// bin folder of the PostgreSQL (with pgvector) to embed.
    #[arg(long, global = true, env = "CRMSEARCH_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, global = true, env = "CRMSEARCH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest request body in bytes [default: 1 MiB].
    #[arg(long, global = true, env = "CRMSEARCH_BODY_LIMIT")]
    pub body_limit_bytes: Option<usize>,
    /// Largest bulk request body in bytes [default: 64 MiB].
    #[arg(long, global = true, env = "CRMSEARCH_BULK_BODY_LIMIT")]
    pub bulk_body_limit_bytes: Option<usize>,
    /// This node's name; its replication slot is crmsearch_<node> [default: main].
    #[arg(long, global = true, env = "CRMSEARCH_NODE")]
    pub node: Option<String>,
    /// /readyz fails while the index lags more than this many WAL bytes [default: 16 MiB].
    #[arg(long, global = true, env = "CRMSEARCH_READY_MAX_LAG_BYTES")]
    pub ready_max_lag_bytes: Option<u64>,
    /// Longest time between durable index commits, in ms [default: 1000].
    #[arg(long, global = true, env = "CRMSEARCH_DURABLE_INTERVAL_MS")]
    pub durable_interval_ms: Option<u64>,
    /// Similarity (cosine) from which a new memory updates one of the same agent and subject [default: 0.95].
    #[arg(long, global = true, env = "CRMSEARCH_DEDUP_THRESHOLD")]
    pub dedup_threshold: Option<f32>,
}

impl Global {
    pub fn config(self) -> Result<Config> {
        let over = FileConfig {
            database_url: self.database_url,
            data_dir: self.data_dir,
            addr: self.addr,
            redis_url: self.redis_url,
            master_key: self.master_key,
            model_dir: self.model_dir,
            pg_bin: self.pg_bin,
            log_format: self.log_format,
            body_limit_bytes: self.body_limit_bytes,
            bulk_body_limit_bytes: self.bulk_body_limit_bytes,
            db_pool_size: None,
            node: self.node,
            ready_max_lag_bytes: self.ready_max_lag_bytes,
            durable_interval_ms: self.durable_interval_ms,
            dedup_threshold: self.dedup_threshold,
        };
        Config::resolve(over, self.config.as_deref())
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP API (and, as it lands, the CDC indexer) in one process.
    Serve,
    /// `serve` with a demo tenant and sample data; prints the URL and keys.
    Demo,
    /// Apply the database migrations.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Index positions, lag and document counts (from the index on disk and
    /// Postgres; `GET /v1/admin/status` asks the running server).
    Status,
    /// The embedded Postgres of the data folder.
    #[command(subcommand)]
    Postgres(PostgresCmd),
}

#[derive(Subcommand, Debug)]
pub enum PostgresCmd {
    /// Stop it, unless a crmsearch process is using it.
    Stop,
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Create a tenant; prints its id and an admin key (shown once).
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key for a tenant; prints it (shown once).
    Create {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long, value_enum)]
        role: Role,
        /// Bind the key to one agent: it reads and writes only that agent's memories.
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    let cfg = cli.global.config()?;
    crate::telemetry::init(cfg.log_format);
    match cli.command {
        Command::Serve => server::serve(cfg).await,
        Command::Demo => crate::demo::run(cfg).await,
        Command::Migrate => with_db(&cfg, |_| async {
                println!("migrations applied");
                Ok(())
            })
            .await,
        Command::Status => {
            let indexer_cfg = cfg.clone();
            with_db(&cfg, |pool| async move {
                let url = String::new();
                let status = indexer::pipeline::offline_status(&indexer_cfg.indexer(&url), &pool).await?;
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            })
            .await
        }
        Command::Postgres(PostgresCmd::Stop) => {
            let bin = match cfg.pg_bin.clone().or_else(crate::embedded_pg::find_bin_dir) {
                Some(b) => b,
                None => anyhow::bail!("no embedded PostgreSQL found; run scripts/setup or set CRMSEARCH_PG_BIN"),
            };
            let data = cfg.data_dir.clone();
            let stopped = tokio::task::spawn_blocking(move || {
                crate::embedded_pg::EmbeddedPostgres::stop_if_unused(&data, &bin)
            })
            .await??;
            println!("{}", if stopped { "stopped" } else { "not stopped: not running, or in use" });
            Ok(())
        }
        Command::Tenant(TenantCmd::Create { name, json }) => {
            with_db(&cfg, |pool| async move {
                let (id, key) = auth::create_tenant(&pool, &name).await.map_err(anyhow_of)?;
                if json {
                    println!("{}", serde_json::json!({"id": id, "name": name, "keys": {"admin": key}}));
                } else {
                    println!("tenant {id} ({name})\nadmin key: {key}\n(the key is shown only now; store it)");
                }
                Ok(())
            })
            .await
        }
        Command::Key(KeyCmd::Create {
            tenant,
            role,
            agent,
            json,
        }) => {
            with_db(&cfg, |pool| async move {
                let (key, prefix) = auth::create_agent_key(&pool, tenant, role, agent.as_deref())
                    .await
                    .map_err(anyhow_of)?;
                if json {
                    println!("{}", serde_json::json!({"key": key, "prefix": prefix, "role": role, "tenant_id": tenant, "agent_id": agent}));
                } else {
                    println!("{} key: {key}\n(the key is shown only now; store it)", role.as_str());
                }
                Ok(())
            })
            .await
        }
    }
}

pub fn anyhow_of(e: crate::error::Error) -> anyhow::Error {
    match e {
        crate::error::Error::User { message, .. } => anyhow::anyhow!(message),
        crate::error::Error::Internal(e) => e,
    }
}

/// Opens the database, runs `f`, and closes it (stopping the embedded
/// Postgres unless another process uses it) — also on SIGINT/SIGTERM.
async fn with_db<F, Fut>(cfg: &Config, f: F) -> Result<()>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let db = Database::open(cfg)
        .await
        .context("cannot open the database")?;
    let result = tokio::select! {
        r = f(db.pool.clone()) => r,
        () = server::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    db.close().await;
    result
}
