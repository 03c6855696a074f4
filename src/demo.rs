//! `crmsearch demo`: serve with a demo tenant, sample data and printed keys.

use anyhow::{Context, Result};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{self, Role};
use crate::cli::anyhow_of;
use crate::config::Config;
use crate::db::Database;
use crate::embedded_pg::random_hex;
use crate::ingest;
use crate::server;
use crate::store::{companies, contacts};

/// The sample data loaded into a new demo tenant.
pub const SAMPLE_COMPANIES: &str = include_str!("../fixtures/companies.ndjson");
pub const SAMPLE_CONTACTS: &str = include_str!("../fixtures/contacts.ndjson");
const DEMO_TENANT: &str = "demo";
/// What a new demo tenant is seeded with.
pub const DEMO_CONTACTS: usize = 100_000;
pub const DEMO_MEMORIES: usize = 20_000;
const DEMO_SEED: u64 = 42;

pub async fn run(mut cfg: Config) -> Result<()> {
    let master = cfg
        .master_key
        .get_or_insert_with(|| format!("mk_{}", random_hex(24)))
        .clone();
    let db = Database::open(&cfg)
        .await
        .context("cannot open the database")?;
    let setup = setup(&db.pool).await;
    let (tenant, keys, fresh) = match setup {
        Ok(s) => s,
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    if fresh {
        // memories go through the model (~100/s on two cores): in the
        // background, so the demo serves at once and they arrive by CDC
        match crate::embed::shared(cfg.model_dir.as_deref()) {
            Some(embedder) => {
                let pool = db.pool.clone();
                tokio::spawn(async move {
                    tracing::info!(
                        memories = DEMO_MEMORIES,
                        "seeding demo memories in the background"
                    );
                    match crate::ops::seed::memories(
                        &pool,
                        tenant,
                        DEMO_SEED,
                        DEMO_MEMORIES,
                        &embedder,
                        true,
                    )
                    .await
                    {
                        Ok(n) => tracing::info!(memories = n, "demo memories seeded"),
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "seeding demo memories failed")
                        }
                    }
                });
            }
            None => tracing::warn!("no embedding model: the demo tenant gets no memories"),
        }
    }
    server::run(db, cfg, move |url| {
        println!("\ncrmsearch demo is running at {url}");
        println!("  master key    {master}");
        println!("  demo tenant   {tenant}");
        for (role, key) in &keys {
            println!("  {:<13} {key}", format!("{} key", role.as_str()));
        }
        let key_of = |r: Role| {
            keys.iter()
                .find(|(role, _)| *role == r)
                .map_or("", |(_, k)| k.as_str())
        };
        println!("\nthe search console: open {url}/ and paste the search key");
        println!(
            "MCP for agents: {url}/mcp with the header `Authorization: Bearer {}`",
            key_of(Role::Agent)
        );
        println!("\nfor the README's examples, in another terminal:");
        println!(
            "  export CRMSEARCH_URL={url} ADMIN_KEY={} WRITE_KEY={} AGENT_KEY={} SEARCH_KEY={}",
            key_of(Role::Admin),
            key_of(Role::Write),
            key_of(Role::Agent),
            key_of(Role::Search)
        );
        println!("(keys are shown only now; each start mints new ones. Ctrl-C stops.)\n");
    })
    .await
}

/// Finds or creates the demo tenant, loads the sample data and
/// [`DEMO_CONTACTS`] seeded contacts into it when it is new (then `true`),
/// and mints one key per role.
pub async fn setup(pool: &PgPool) -> Result<(Uuid, Vec<(Role, String)>, bool)> {
    let existing: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1 ORDER BY created_at LIMIT 1")
            .bind(DEMO_TENANT)
            .fetch_optional(pool)
            .await?;
    let (tenant, fresh) = match existing {
        Some(id) => (id, false),
        None => {
            let (id, _) = auth::create_tenant(pool, DEMO_TENANT)
                .await
                .map_err(anyhow_of)?;
            load_sample(pool, id).await?;
            println!("seeding {DEMO_CONTACTS} demo contacts (first start only)");
            let companies = crate::ops::seed::companies_for(DEMO_CONTACTS);
            crate::ops::seed::contacts(pool, id, DEMO_SEED, DEMO_CONTACTS, companies, false)
                .await?;
            (id, true)
        }
    };
    let mut keys = Vec::new();
    for role in [Role::Admin, Role::Write, Role::Agent, Role::Search] {
        let (key, _) = auth::create_key(pool, tenant, role)
            .await
            .map_err(anyhow_of)?;
        keys.push((role, key));
    }
    Ok((tenant, keys, fresh))
}

/// Loads `fixtures/companies.ndjson` and `fixtures/contacts.ndjson`.
pub async fn load_sample(pool: &PgPool, tenant: Uuid) -> Result<()> {
    for line in SAMPLE_COMPANIES.lines().filter(|l| !l.trim().is_empty()) {
        let fields = serde_json::from_str(line).context("fixtures/companies.ndjson")?;
        companies::create(pool, tenant, fields)
            .await
            .map_err(anyhow_of)?;
    }
    let (good, bad) = ingest::parse_ndjson(SAMPLE_CONTACTS.as_bytes());
    anyhow::ensure!(
        bad.is_empty(),
        "fixtures/contacts.ndjson has bad lines: {bad:?}"
    );
    let outcome = contacts::bulk_upsert(pool, tenant, good, bad)
        .await
        .map_err(anyhow_of)?;
    anyhow::ensure!(
        outcome.failed.is_empty(),
        "sample contacts failed: {:?}",
        outcome.failed
    );
    tracing::info!(contacts = outcome.inserted, "loaded the sample data");
    Ok(())
}
