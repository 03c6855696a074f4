//! The contacts of the search and micro benches: `n` generated contacts
//! (seed 42) and 20,000 companies in one tenant, with the Postgres-only
//! peer's indexes, kept in `target/bench-search` between runs (the index
//! beside it is the cached prebuilt index; delete the folder to reload).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crmsearch::seed;
use schema::ContactFields;
use uuid::Uuid;

pub const COMPANIES: usize = 20_000;
pub const SEED: u64 = 42;
/// The text Postgres searches with trigrams: names, emails, phones.
pub const PG_TEXT: &str = "lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' \
     || bench_join(emails) || ' ' || bench_join(phones))";
/// The same text as a full-text document (`simple`: no stemming, names).
pub const PG_TSV: &str = "to_tsvector('simple', lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' \
     || bench_join(emails) || ' ' || bench_join(phones)))";
pub const PG_NAME: &str = "lower(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))";

pub struct Fixture {
    pub root: PathBuf,
    pub pg: crmsearch::embedded_pg::EmbeddedPostgres,
    pub url: String,
    pub pool: sqlx::PgPool,
    pub tenant: Uuid,
    /// The generated contacts (queries are drawn from them).
    pub contacts: Vec<ContactFields>,
    /// Seconds the load into Postgres took; NaN when cached.
    pub load_secs: f64,
}

/// Names the tenant once `n` contacts are loaded and indexed.
pub fn marker(root: &Path, n: usize) -> PathBuf {
    root.join(format!("loaded-{n}"))
}

pub async fn fixture(n: usize) -> anyhow::Result<Fixture> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-search");
    let marker = marker(&root, n);
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&root);
    }
    std::fs::create_dir_all(&root)?;
    let (pg, url, pool) = super::database(&root.join("pg"), 4).await?;
    let (tenant, contacts, load_secs) = if marker.exists() {
        let tenant: Uuid = std::fs::read_to_string(&marker)?.trim().parse()?;
        let companies = seed::companies(SEED, COMPANIES);
        (
            tenant,
            seed::contacts(SEED, n, &companies).collect::<Vec<_>>(),
            f64::NAN,
        )
    } else {
        let (tenant, _) = crmsearch::auth::create_tenant(&pool, "bench")
            .await
            .map_err(crmsearch::cli::anyhow_of)?;
        let t = Instant::now();
        let contacts =
            crmsearch::ops::seed::contacts(&pool, tenant, SEED, n, COMPANIES, true).await?;
        let secs = t.elapsed().as_secs_f64();
        (tenant, contacts, secs)
    };
    // the peer's indexes (kept with the cached data)
    for ddl in [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm".to_owned(),
        // array_to_string is only stable; an index expression needs immutable
        "CREATE OR REPLACE FUNCTION bench_join(text[]) RETURNS text IMMUTABLE PARALLEL SAFE \
         LANGUAGE sql AS $$ SELECT array_to_string($1, ' ') $$"
            .to_owned(),
        format!("CREATE INDEX IF NOT EXISTS bench_text_trgm ON contacts USING gin (({PG_TEXT}) gin_trgm_ops)"),
        format!("CREATE INDEX IF NOT EXISTS bench_name_trgm ON contacts USING gin (({PG_NAME}) gin_trgm_ops)"),
        "CREATE INDEX IF NOT EXISTS bench_last_name ON contacts (tenant_id, lower(last_name), id)".to_owned(),
        "CREATE INDEX IF NOT EXISTS bench_company_trgm ON companies USING gin ((lower(name)) gin_trgm_ops)".to_owned(),
        format!("CREATE INDEX IF NOT EXISTS bench_text_tsv ON contacts USING gin (({PG_TSV}))"),
        "VACUUM ANALYZE contacts".to_owned(),
        "VACUUM ANALYZE companies".to_owned(),
    ] {
        sqlx::query(&ddl).execute(&pool).await?;
    }
    Ok(Fixture {
        root,
        pg,
        url,
        pool,
        tenant,
        contacts,
        load_secs,
    })
}

/// The same contacts as a user gets them: an indexer following an empty
/// database (`crmsearch_cdc`, beside the fixture's in the same Postgres),
/// then the `n` contacts loaded through the bulk API's path (`POST
/// /v1/contacts/bulk`, 50K per request) while it streams them in. Its idle
/// compaction is off, so the index keeps the layout the load and the merge
/// policy left (the worst a search meets, until the first idle moment
/// compacts it). Cached in `root/index-cdc` like the fixture.
pub struct CdcBuilt {
    pub indexer: std::sync::Arc<indexer::Indexer>,
    pub tenant: Uuid,
    /// Seconds from the first bulk request to everything searchable; NaN
    /// when cached.
    pub load_secs: f64,
}

pub async fn cdc_built(fx: &Fixture, n: usize) -> anyhow::Result<CdcBuilt> {
    use crmsearch::db;
    const DB: &str = "crmsearch_cdc";
    let marker = fx.root.join(format!("cdc-loaded-{n}"));
    let admin = db::connect(&fx.pg.url("postgres"), 1).await?;
    let mut cfg = super::indexer_config(&fx.root, &fx.pg.url(DB));
    cfg.index_dir = fx.root.join("index-cdc");
    cfg.node = Some("benchcdc".into());
    cfg.compact_idle = std::time::Duration::from_secs(365 * 86_400);
    if !marker.exists() {
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
        )
        .bind(DB)
        .execute(&admin)
        .await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
            .execute(&admin)
            .await?;
        let _ = std::fs::remove_dir_all(&cfg.index_dir);
    }
    db::ensure_database(&fx.pg.url("postgres"), DB).await?;
    let pool = db::connect(&cfg.database_url, 4).await?;
    db::migrate(&pool).await?;
    let indexer = indexer::Indexer::start(cfg, pool.clone()).await?;
    let (tenant, load_secs) = if marker.exists() {
        (std::fs::read_to_string(&marker)?.trim().parse()?, f64::NAN)
    } else {
        let (tenant, _) = crmsearch::auth::create_tenant(&pool, "bench-cdc")
            .await
            .map_err(crmsearch::cli::anyhow_of)?;
        let t = Instant::now();
        crmsearch::ops::seed::contacts(&pool, tenant, SEED, n, COMPANIES, true).await?;
        indexer
            .wait_for(
                db::write_position(&pool).await?,
                std::time::Duration::from_secs(1800),
            )
            .await;
        std::fs::write(&marker, tenant.to_string())?;
        (tenant, t.elapsed().as_secs_f64())
    };
    indexer
        .wait_for(
            db::write_position(&pool).await?,
            std::time::Duration::from_secs(600),
        )
        .await;
    Ok(CdcBuilt {
        indexer,
        tenant,
        load_secs,
    })
}
