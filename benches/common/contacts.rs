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
