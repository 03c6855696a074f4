//! `crmsearch seed`: deterministic synthetic companies, contacts and
//! memories, written into Postgres (COPY for contacts, multi-row INSERTs for
//! the rest); the CDC stream indexes them like any other write.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use schema::{CompanyFields, ContactFields};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::anyhow_of;
use crate::embed::Embedder;
use crate::seed;
use crate::store::contacts;

/// Contacts per COPY transaction.
const CHUNK: usize = 50_000;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Seeded {
    pub companies: usize,
    pub contacts: usize,
    pub memories: usize,
    pub secs: f64,
}

/// Companies for `contacts` contacts: one per 25, at least 10.
pub fn companies_for(contacts: usize) -> usize {
    (contacts / 25).max(10)
}

/// Writes the companies and contacts of `seed` into `tenant`; returns the
/// contacts as generated.
pub async fn contacts(
    pool: &PgPool,
    tenant: Uuid,
    seed_value: u64,
    n: usize,
    n_companies: usize,
    quiet: bool,
) -> Result<Vec<ContactFields>> {
    let companies = seed::companies(seed_value, n_companies);
    insert_companies(pool, tenant, &companies).await?;
    let all: Vec<ContactFields> = seed::contacts(seed_value, n, &companies).collect();
    let pb = super::bar(n as u64, "contacts", quiet);
    for chunk in all.chunks(CHUNK) {
        let lines: Vec<(u64, ContactFields)> = chunk
            .iter()
            .enumerate()
            .map(|(j, c)| (j as u64 + 1, c.clone()))
            .collect();
        let (good, bad) =
            tokio::task::spawn_blocking(move || crate::ingest::validate(lines, Vec::new())).await?;
        anyhow::ensure!(
            bad.is_empty(),
            "a generated contact is invalid: {:?}",
            &bad[..1]
        );
        let out = contacts::bulk_upsert(pool, tenant, good, Vec::new())
            .await
            .map_err(anyhow_of)?;
        anyhow::ensure!(
            out.failed.is_empty(),
            "seeded contacts failed: {:?}",
            &out.failed[..1]
        );
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(all)
}

async fn insert_companies(pool: &PgPool, tenant: Uuid, companies: &[CompanyFields]) -> Result<()> {
    let col = |f: fn(&CompanyFields) -> Option<String>| -> Vec<Option<String>> {
        companies.iter().map(f).collect()
    };
    sqlx::query(
        "INSERT INTO companies (tenant_id, external_id, name, domain, industry, city, country, tags)
         SELECT $1, e, n, d, i, c, co, coalesce(string_to_array(t, '|'), '{}')
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                AS x(e, n, d, i, c, co, t)
         ON CONFLICT (tenant_id, external_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(col(|c| c.external_id.clone()))
    .bind(col(|c| c.name.clone()))
    .bind(col(|c| c.domain.clone()))
    .bind(col(|c| c.industry.clone()))
    .bind(col(|c| c.city.clone()))
    .bind(col(|c| c.country.clone()))
    .bind(col(|c| (!c.tags.is_empty()).then(|| c.tags.join("|"))))
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes `n` memories about the tenant's contacts (the first 20,000 by
/// external id), embedded by the model in batches.
pub async fn memories(
    pool: &PgPool,
    tenant: Uuid,
    seed_value: u64,
    n: usize,
    embedder: &Arc<Embedder>,
    quiet: bool,
) -> Result<usize> {
    let rows: Vec<(Uuid, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT id, first_name, company_name FROM contacts WHERE tenant_id = $1
          ORDER BY external_id NULLS LAST, id LIMIT 20000",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let subjects: Vec<seed::Subject> = rows
        .into_iter()
        .map(|(id, first, company)| seed::Subject {
            id: id.to_string(),
            first_name: first.unwrap_or_else(|| "They".into()),
            company,
        })
        .collect();
    let all = seed::memories(seed_value, &subjects, n);
    let pb = super::bar(all.len() as u64, "memories", quiet);
    for chunk in all.chunks(256) {
        let e = embedder.clone();
        let owned: Vec<String> = chunk.iter().map(|m| m.content.clone()).collect();
        let vectors = tokio::task::spawn_blocking(move || {
            e.embed_many(&owned.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await??;
        let col = |f: &dyn Fn(&seed::SeedMemory) -> String| -> Vec<String> {
            chunk.iter().map(f).collect()
        };
        sqlx::query(
            "INSERT INTO memories (tenant_id, agent_id, subject_id, kind, content, importance, embedding, created_at, updated_at)
             SELECT $1, a, s, k, c, i, e, now() - make_interval(secs => d * 86400), now() - make_interval(secs => d * 86400)
               FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::real[], $7::vector[], $8::float8[])
                    AS x(a, s, k, c, i, e, d)",
        )
        .bind(tenant)
        .bind(col(&|m| m.agent_id.to_owned()))
        .bind(col(&|m| m.subject_id.clone()))
        .bind(col(&|m| m.kind.as_str().to_owned()))
        .bind(col(&|m| m.content.clone()))
        .bind(chunk.iter().map(|m| m.importance).collect::<Vec<f32>>())
        .bind(vectors.into_iter().map(pgvector::Vector::from).collect::<Vec<_>>())
        .bind(chunk.iter().map(|m| m.age_days).collect::<Vec<f64>>())
        .execute(pool)
        .await?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(all.len())
}

/// Everything `crmsearch seed` writes.
pub async fn run(
    pool: &PgPool,
    tenant: Uuid,
    seed_value: u64,
    n_contacts: usize,
    n_memories: usize,
    embedder: Option<&Arc<Embedder>>,
    quiet: bool,
) -> Result<Seeded> {
    let started = Instant::now();
    let n_companies = if n_contacts > 0 {
        companies_for(n_contacts)
    } else {
        0
    };
    if n_contacts > 0 {
        contacts(pool, tenant, seed_value, n_contacts, n_companies, quiet).await?;
    }
    let memories = match (n_memories, embedder) {
        (0, _) => 0,
        (n, Some(e)) => memories(pool, tenant, seed_value, n, e, quiet).await?,
        (_, None) => anyhow::bail!("{}", crate::embed::MODEL_MISSING),
    };
    Ok(Seeded {
        companies: n_companies,
        contacts: n_contacts,
        memories,
        secs: started.elapsed().as_secs_f64(),
    })
}
