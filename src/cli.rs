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
    /// This node's name; its replication slot is crmsearch_<node> [default: a slot name derived from the database and the data folder].
    #[arg(long, global = true, env = "CRMSEARCH_NODE")]
    pub node: Option<String>,
    /// The tenant shard this node serves: it indexes and answers that shard's tenants only (see docs/sharding.md) [default: every tenant].
    #[arg(long, global = true, env = "CRMSEARCH_SHARD")]
    pub shard: Option<String>,
    /// /readyz fails while the index lags more than this many WAL bytes [default: 16 MiB].
    #[arg(long, global = true, env = "CRMSEARCH_READY_MAX_LAG_BYTES")]
    pub ready_max_lag_bytes: Option<u64>,
    /// Longest time between durable index commits, in ms [default: 1000].
    #[arg(long, global = true, env = "CRMSEARCH_DURABLE_INTERVAL_MS")]
    pub durable_interval_ms: Option<u64>,
    /// Similarity (cosine) from which a new memory updates one of the same agent and subject [default: 0.95].
    #[arg(long, global = true, env = "CRMSEARCH_DEDUP_THRESHOLD")]
    pub dedup_threshold: Option<f32>,
    /// MiB of search answers the result cache keeps (0: none) [default: 64].
    #[arg(long, global = true, env = "CRMSEARCH_RESULT_CACHE_MB")]
    pub result_cache_mb: Option<usize>,
    /// Origins a browser may call from (CORS), comma-separated; `*` any.
    #[arg(
        long,
        global = true,
        env = "CRMSEARCH_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Longest a request may take before it is answered 503 [default: 30000;
    /// bulk routes 10 times as long].
    #[arg(long, global = true, env = "CRMSEARCH_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Answers at least this large are compressed when the client accepts
    /// gzip, br or zstd [default: 1024].
    #[arg(long, global = true, env = "CRMSEARCH_COMPRESS_MIN_BYTES")]
    pub compress_min_bytes: Option<u16>,
    /// Longest a client may take to send a request's headers, and longest a
    /// kept-alive connection may stay idle, in ms [default: 10000].
    #[arg(long, global = true, env = "CRMSEARCH_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// MiB of request bodies held in memory at once; requests past it wait for room [default: 256].
    #[arg(long, global = true, env = "CRMSEARCH_BODY_BUDGET_MB")]
    pub body_budget_mb: Option<usize>,
    /// Connections open at once; more are answered 503 [default: 10000].
    #[arg(long, global = true, env = "CRMSEARCH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address; 0: no bound (behind a proxy, every connection is the proxy's) [default: 256].
    #[arg(long, global = true, env = "CRMSEARCH_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// Rate limits on or off [default: on; budgets per tier in the config file's `[rate_limits]`].
    #[arg(long, global = true, env = "CRMSEARCH_RATE_LIMITS", value_parser = clap::builder::BoolishValueParser::new())]
    pub rate_limits: Option<bool>,
    /// A header the proxy in front sets to the client's address (e.g. x-forwarded-for; its last address is taken) [default: the connection's address].
    #[arg(long, global = true, env = "CRMSEARCH_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<String>,
    /// Longest wait for Redis before a request goes without it, in ms [default: 50].
    #[arg(long, global = true, env = "CRMSEARCH_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
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
            shard: self.shard,
            ready_max_lag_bytes: self.ready_max_lag_bytes,
            durable_interval_ms: self.durable_interval_ms,
            dedup_threshold: self.dedup_threshold,
            result_cache_mb: self.result_cache_mb,
            cors_origins: self.cors_origins,
            request_timeout_ms: self.request_timeout_ms,
            compress_min_bytes: self.compress_min_bytes,
            header_timeout_ms: self.header_timeout_ms,
            body_budget_mb: self.body_budget_mb,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            rate_limits: Some(crate::limits::LimitsFile {
                enabled: self.rate_limits,
                trusted_proxy_header: self.trusted_proxy_header,
                redis_timeout_ms: self.redis_timeout_ms,
                ..Default::default()
            }),
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
    /// The replication slots indexes follow: list them, release one that no
    /// index will follow again.
    #[command(subcommand)]
    Slot(SlotCmd),
    /// Tenant shards: list them, write the proxy's routes, move a tenant
    /// (docs/sharding.md).
    #[command(subcommand)]
    Shard(ShardCmd),
    /// The embedded Postgres of the data folder.
    #[command(subcommand)]
    Postgres(PostgresCmd),
    /// Write deterministic synthetic companies, contacts and memories into a
    /// tenant (through Postgres; the index follows by CDC).
    Seed {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long, default_value_t = 0)]
        contacts: usize,
        #[arg(long, default_value_t = 0)]
        memories: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Import contacts from a CSV (with a header) or NDJSON file: upsert by
    /// external_id, bad lines to a report, resumable after an interrupt.
    Import {
        file: std::path::PathBuf,
        #[arg(long)]
        tenant: Uuid,
        /// csv or ndjson [default: from the extension].
        #[arg(long)]
        format: Option<String>,
        /// Renames, FROM=TO,...: CSV columns or JSON keys to contact fields.
        #[arg(long)]
        map: Option<String>,
        /// Where bad lines go [default: FILE.bad-lines.ndjson].
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Start from the first line even if a saved state could resume.
        #[arg(long)]
        restart: bool,
    },
    /// Build a new index generation from a consistent snapshot while the
    /// current one serves, then swap it in. Asks the running server when
    /// there is one (master key), else runs the indexer here.
    Reindex {
        /// Only this tenant (the others are carried over from the current index).
        #[arg(long)]
        tenant: Option<Uuid>,
    },
    /// Compare Postgres with the index (ids and versions, vectors): missing,
    /// stale and ghost counts; exit 1 on drift. Asks the running server when
    /// there is one, else runs the indexer here.
    Verify {
        #[arg(long)]
        tenant: Option<Uuid>,
        /// Re-apply the drifted rows from Postgres.
        #[arg(long)]
        repair: bool,
        /// An admin key of the tenant [default: the master key].
        #[arg(long, env = "CRMSEARCH_KEY", hide_env_values = true)]
        key: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SlotCmd {
    /// Every crmsearch slot of the Postgres server: its database, whether a
    /// process streams it, the WAL it holds back, the index that claims it.
    List,
    /// Drop a slot no index will follow again (a replica gone for good, a
    /// node renamed) and its claim, so Postgres stops keeping WAL for it.
    /// Refused while a process streams it.
    Release { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ShardCmd {
    /// Every shard: its code, tenants, tenants moving, and the nodes that
    /// follow it (live: renewed their claim within a minute).
    List,
    /// The proxy's routes: an nginx `map` body from each tenant's route tag
    /// (in its keys) to its shard.
    Routes {
        /// Write them to this file (atomically) instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Move a tenant to another shard while it serves: the target loads it,
    /// the routes switch, the source drops it. Places a tenant no shard
    /// holds. Run again to resume an interrupted move.
    Move {
        tenant: Uuid,
        /// The target shard.
        #[arg(long)]
        to: String,
        /// The routes file to rewrite at the switch (see `shard routes`).
        #[arg(long)]
        routes: Option<PathBuf>,
        /// A shell command that makes the proxy read the routes, run after
        /// they are written (e.g. `nginx -s reload`).
        #[arg(long)]
        reload: Option<String>,
        /// Milliseconds the source keeps serving after the switch, for the
        /// requests on their way to it.
        #[arg(long, default_value_t = 5000)]
        drain_ms: u64,
        /// Longest wait for the target's nodes to load the tenant, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        #[arg(long)]
        json: bool,
    },
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
        /// Its rate-limit tier.
        #[arg(long, value_enum, default_value = "free")]
        tier: crate::limits::Tier,
        /// The shard to place it on, when the deployment has shards
        /// [default: the one with the fewest tenants].
        #[arg(long)]
        shard: Option<String>,
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
        Command::Seed {
            tenant,
            contacts,
            memories,
            seed,
        } => {
            let model = cfg.model_dir.clone();
            with_db(&cfg, |pool| async move {
                let embedder = if memories > 0 { crate::embed::shared(model.as_deref()) } else { None };
                let done = crate::ops::seed::run(&pool, tenant, seed, contacts, memories, embedder.as_ref(), false).await?;
                println!("{}", serde_json::to_string(&done)?);
                Ok(())
            })
            .await
        }
        Command::Import {
            file,
            tenant,
            format,
            map,
            report,
            restart,
        } => {
            let format = match format.as_deref() {
                None => None,
                Some("csv") => Some(crate::ingest::Format::Csv),
                Some("ndjson" | "jsonl") => Some(crate::ingest::Format::Ndjson),
                Some(f) => anyhow::bail!("--format is csv or ndjson, not `{f}`"),
            };
            let opts = crate::ops::import::ImportOptions {
                file,
                tenant,
                format,
                map: crate::ops::import::parse_map(map.as_deref().unwrap_or(""))?,
                report,
                restart,
                chunk_lines: crate::ops::import::CHUNK_LINES,
                quiet: false,
            };
            with_db(&cfg, |pool| async move {
                let out = crate::ops::import::run(&pool, &opts).await?;
                println!("{}", serde_json::to_string(&out)?);
                Ok(())
            })
            .await
        }
        Command::Verify { tenant, repair, key } => verify(&cfg, tenant, repair, key).await,
        Command::Reindex { tenant } => reindex(&cfg, tenant).await,
        Command::Slot(SlotCmd::List) => {
            with_db(&cfg, |pool| async move {
                let slots = indexer::pipeline::slot::list_slots(&pool).await?;
                println!("{}", serde_json::to_string_pretty(&slots)?);
                Ok(())
            })
            .await
        }
        Command::Slot(SlotCmd::Release { name }) => {
            with_db(&cfg, |pool| async move {
                indexer::pipeline::slot::release_slot(&pool, &name).await?;
                println!("released {name}");
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
        Command::Shard(ShardCmd::List) => {
            with_db(&cfg, |pool| async move {
                let shards = crate::ops::shards::list(&pool).await?;
                println!("{}", serde_json::to_string_pretty(&shards)?);
                Ok(())
            })
            .await
        }
        Command::Shard(ShardCmd::Routes { out }) => {
            with_db(&cfg, |pool| async move {
                match out {
                    Some(path) => {
                        crate::ops::shards::write_routes(&pool, &path).await?;
                        eprintln!("routes written to {}", path.display());
                    }
                    None => print!("{}", crate::ops::shards::routes(&pool).await?),
                }
                Ok(())
            })
            .await
        }
        Command::Shard(ShardCmd::Move {
            tenant,
            to,
            routes,
            reload,
            drain_ms,
            timeout_secs,
            json,
        }) => {
            with_db(&cfg, |pool| async move {
                let opts = crate::ops::shards::MoveOptions {
                    routes,
                    reload,
                    drain: std::time::Duration::from_millis(drain_ms),
                    timeout: std::time::Duration::from_secs(timeout_secs),
                };
                let say = |s: &str| eprintln!("{s}");
                let moved = crate::ops::shards::move_tenant(&pool, tenant, &to, &opts, &say).await?;
                if json {
                    println!("{}", serde_json::to_string(&moved)?);
                } else {
                    println!(
                        "tenant {tenant} moved to shard {to} in {:.1} s (loaded by {} node(s) in {:.1} s)",
                        moved.total_secs,
                        moved.nodes.len(),
                        moved.load_secs
                    );
                }
                Ok(())
            })
            .await
        }
        Command::Tenant(TenantCmd::Create {
            name,
            tier,
            shard,
            json,
        }) => {
            with_db(&cfg, |pool| async move {
                let (id, key, shard) = auth::create_tenant_on(&pool, &name, tier, shard.as_deref())
                    .await
                    .map_err(anyhow_of)?;
                if json {
                    println!("{}", serde_json::json!({"id": id, "name": name, "tier": tier, "shard": shard, "keys": {"admin": key}}));
                } else {
                    let on = shard.map(|s| format!(", shard {s}")).unwrap_or_default();
                    println!("tenant {id} ({name}, tier {}{on})\nadmin key: {key}\n(the key is shown only now; store it)", tier.as_str());
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
/// `crmsearch verify`: through the running server's `POST /v1/admin/verify`
/// when one answers at the configured address, else with an indexer started
/// here (it catches up from its slot first).
async fn verify(
    cfg: &Config,
    tenant: Option<Uuid>,
    repair: bool,
    key: Option<String>,
) -> Result<()> {
    let report: indexer::verify::Report = match tokio::net::TcpStream::connect(cfg.addr).await {
        Ok(stream) => {
            let key = key.or_else(|| cfg.master_key.clone()).ok_or_else(|| {
                anyhow::anyhow!(
                    "a server is running: pass --key with an admin key (or set the master key)"
                )
            })?;
            let mut query = format!("repair={repair}");
            if let Some(t) = tenant {
                query.push_str(&format!("&tenant={t}"));
            }
            let (status, body) = http_request(
                stream,
                "POST",
                &cfg.addr.to_string(),
                &format!("/v1/admin/verify?{query}"),
                &key,
            )
            .await?;
            anyhow::ensure!(status == 200, "the server answered {status}: {body}");
            serde_json::from_str(&body)?
        }
        Err(_) => {
            let db = Database::open(cfg)
                .await
                .context("cannot open the database")?;
            let result = async {
                let ix = indexer::Indexer::start(cfg.indexer(&db.url), db.pool.clone()).await?;
                let r = ix.verify(tenant, repair).await;
                ix.shutdown().await;
                r
            }
            .await;
            db.close().await;
            result?
        }
    };
    for t in &report.tables {
        println!(
            "{:<10} checked {:>9}  missing {:>6}  stale {:>6}  ghost {:>6}  vectors missing {:>6}  vectors ghost {:>6}",
            t.table,
            t.checked,
            t.missing.len(),
            t.stale.len(),
            t.ghost.len(),
            t.vectors_missing.len(),
            t.vectors_ghost.len()
        );
        for (what, ids) in [
            ("missing", &t.missing),
            ("stale", &t.stale),
            ("ghost", &t.ghost),
        ] {
            if !ids.is_empty() {
                let examples: Vec<String> = ids.iter().take(5).map(Uuid::to_string).collect();
                println!("  {what}: {}", examples.join(", "));
            }
        }
    }
    if report.repaired > 0 {
        println!("repaired {} rows", report.repaired);
    }
    if report.drifted() > 0 && !repair {
        std::process::exit(1);
    }
    Ok(())
}

/// `crmsearch reindex`: through the running server (polling its job with a
/// progress bar), else with an indexer started here.
async fn reindex(cfg: &Config, tenant: Option<Uuid>) -> Result<()> {
    let started = std::time::Instant::now();
    let generation = match tokio::net::TcpStream::connect(cfg.addr).await {
        Ok(stream) => {
            let key = cfg.master_key.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "a server is running: set the master key (CRMSEARCH_MASTER_KEY) to ask it"
                )
            })?;
            let host = cfg.addr.to_string();
            let path = match tenant {
                Some(t) => format!("/v1/admin/reindex?tenant={t}"),
                None => "/v1/admin/reindex".to_owned(),
            };
            let (status, body) = http_request(stream, "POST", &host, &path, &key).await?;
            anyhow::ensure!(status == 202, "the server answered {status}: {body}");
            let id = serde_json::from_str::<serde_json::Value>(&body)?["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let pb = crate::ops::bar(0, "rows", false);
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let stream = tokio::net::TcpStream::connect(cfg.addr).await?;
                let (status, body) =
                    http_request(stream, "GET", &host, &format!("/v1/admin/jobs/{id}"), &key)
                        .await?;
                anyhow::ensure!(status == 200, "the server answered {status}: {body}");
                let job: serde_json::Value = serde_json::from_str(&body)?;
                pb.set_length(job["total"].as_u64().unwrap_or(0));
                pb.set_position(job["done"].as_u64().unwrap_or(0));
                match job["state"].as_str() {
                    Some("done") => {
                        pb.finish();
                        break job["result"]["generation"].as_u64().unwrap_or(0);
                    }
                    Some("failed") => anyhow::bail!("reindex failed: {}", job["error"]),
                    _ => {}
                }
            }
        }
        Err(_) => {
            let db = Database::open(cfg)
                .await
                .context("cannot open the database")?;
            let result = async {
                let ix = indexer::Indexer::start(cfg.indexer(&db.url), db.pool.clone()).await?;
                let pb = crate::ops::bar(0, "rows", false);
                let progress = |done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                };
                let r = ix.reindex(tenant, &progress).await;
                pb.finish();
                ix.shutdown().await;
                r
            }
            .await;
            db.close().await;
            result?
        }
    };
    println!(
        "index generation {generation} serves ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One HTTP/1.1 request with an empty body; the status and the body.
async fn http_request(
    mut stream: tokio::net::TcpStream,
    method: &str,
    host: &str,
    path: &str,
    key: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

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
