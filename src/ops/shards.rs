//! Tenant shards, for operators: list them, write the proxy's routes, move
//! a tenant (docs/sharding.md).
//!
//! A move of tenant T from shard A to shard B, each step one transaction,
//! so that an interrupted move is resumed by running it again:
//! 1. **hold on B**: T's placement gets `also_on = B` and B's publication
//!    lists T, under a short lock that lets no write of the three tables
//!    straddle the change (a transaction that wrote before it and committed
//!    after would be decoded with the old row filter and never reach B).
//!    Every node of B streams T from there and loads what T had before.
//! 2. **wait** until every live node of B says it holds T in full
//!    (`crmsearch_shard_ready`). A moves on serving T meanwhile.
//! 3. **switch**: `shard = B, also_on = A`; the routes file is written and
//!    the reload command run; then the drain time, for requests already on
//!    their way to A.
//! 4. **drop on A**: `also_on = NULL` and A's publication no longer lists T,
//!    under the same lock; every node of A deletes T's documents at that
//!    position and answers `wrong_shard` for T from then on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indexer::pipeline::shard::{lock_placements, sync_publication};
use serde::Serialize;
use sqlx::{PgPool, PgTransaction};
use uuid::Uuid;

/// A claim renewed within this long is a live node (the claims renew every
/// 15 s and lapse after a minute: indexer::pipeline::slot).
const LIVE_SECS: f64 = 60.0;

#[derive(Debug, Serialize)]
pub struct ShardInfo {
    pub name: String,
    /// The first character of the route tag of tenants created on it.
    pub code: String,
    pub tenants: i64,
    /// Tenants moving in or out.
    pub moving: i64,
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct NodeInfo {
    pub slot: String,
    pub host: String,
    pub index_dir: String,
    /// Seconds since the node last renewed its claim.
    pub seen_secs_ago: f64,
    pub live: bool,
}

pub async fn list(pool: &PgPool) -> Result<Vec<ShardInfo>> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT s.name, s.code,
                (SELECT count(*) FROM crmsearch_tenant_shards t WHERE t.shard = s.name),
                (SELECT count(*) FROM crmsearch_tenant_shards t
                  WHERE t.also_on IS NOT NULL AND (t.shard = s.name OR t.also_on = s.name))
           FROM crmsearch_shards s ORDER BY s.name",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, code, tenants, moving) in rows {
        let nodes = nodes(pool, &name).await?;
        out.push(ShardInfo {
            name,
            code,
            tenants,
            moving,
            nodes,
        });
    }
    Ok(out)
}

async fn nodes(pool: &PgPool, shard: &str) -> Result<Vec<NodeInfo>> {
    Ok(sqlx::query_as(
        "SELECT slot_name AS slot, host, index_dir,
                extract(epoch FROM now() - seen_at)::float8 AS seen_secs_ago,
                now() - seen_at < make_interval(secs => $2) AS live
           FROM crmsearch_slot_claims WHERE shard = $1 ORDER BY slot_name",
    )
    .bind(shard)
    .bind(LIVE_SECS)
    .fetch_all(pool)
    .await?)
}

/// The slots of the shard's live nodes.
async fn live_slots(pool: &PgPool, shard: &str) -> Result<Vec<String>> {
    Ok(nodes(pool, shard)
        .await?
        .into_iter()
        .filter(|n| n.live)
        .map(|n| n.slot)
        .collect())
}

/// The routes file: lines of an nginx `map` from a tenant's route tag to
/// its shard. One regular expression per shard for the tags of tenants
/// created on it (their first character is the shard's code), and the tag
/// itself for each tenant living elsewhere (exact strings win in a map).
pub async fn routes(pool: &PgPool) -> Result<String> {
    let shards: Vec<(String, String)> =
        sqlx::query_as("SELECT code, name FROM crmsearch_shards ORDER BY name")
            .fetch_all(pool)
            .await?;
    let moved: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT t.route_tag, p.shard, t.id FROM crmsearch_tenant_shards p
           JOIN tenants t ON t.id = p.tenant_id
           JOIN crmsearch_shards s ON s.name = p.shard
          WHERE left(t.route_tag, 1) <> s.code ORDER BY t.route_tag",
    )
    .fetch_all(pool)
    .await?;
    let mut out = format!(
        "# crmsearch routes: a tenant's route tag (the first 5 characters after crm_ in its keys) to its shard.\n\
         # Written by `crmsearch shard routes` at {}; include it inside\n\
         # `map $crmsearch_tenant_tag $crmsearch_shard {{ ... }}` (deploy/nginx/crmsearch-shards.conf).\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for (code, name) in &shards {
        out.push_str(&format!("~^{code} {name};\n"));
    }
    for (tag, shard, tenant) in &moved {
        out.push_str(&format!("{tag} {shard};  # tenant {tenant}\n"));
    }
    Ok(out)
}

/// Writes the routes to `path` at once (a temporary file renamed over it).
pub async fn write_routes(pool: &PgPool, path: &Path) -> Result<()> {
    let text = routes(pool).await?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// How a move switches the proxy.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// Where the routes file lives (rewritten at the switch).
    pub routes: Option<PathBuf>,
    /// A shell command run after the routes are written (`nginx -s reload`).
    pub reload: Option<String>,
    /// How long the source keeps serving after the switch.
    pub drain: Duration,
    /// Longest wait for the target's nodes to load the tenant.
    pub timeout: Duration,
}

/// What a move did.
#[derive(Debug, Serialize)]
pub struct Moved {
    pub tenant: Uuid,
    pub from: Option<String>,
    pub to: String,
    /// The target's nodes that loaded the tenant.
    pub nodes: Vec<String>,
    pub load_secs: f64,
    pub total_secs: f64,
}

type Placement = (String, Option<String>);

async fn placement(pool: &PgPool, tenant: Uuid) -> Result<Option<Placement>> {
    Ok(
        sqlx::query_as("SELECT shard, also_on FROM crmsearch_tenant_shards WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?,
    )
}

/// Takes the placement lock and a lock that lets no write of the followed
/// tables straddle the transaction (they wait for it, a moment).
async fn lock_writes(tx: &mut PgTransaction<'_>) -> Result<()> {
    lock_placements(tx).await?;
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut **tx)
        .await?;
    sqlx::query("LOCK TABLE companies, contacts, memories IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut **tx)
        .await
        .context("cannot hold writes for a moment (a long transaction on contacts, companies or memories?)")?;
    Ok(())
}

/// Forgets that the nodes of `shard` hold `tenant` (they load it again, or
/// dropped it).
async fn forget_ready(tx: &mut PgTransaction<'_>, tenant: Uuid, shard: &str) -> Result<()> {
    sqlx::query(
        "DELETE FROM crmsearch_shard_ready WHERE tenant_id = $1
           AND slot_name IN (SELECT slot_name FROM crmsearch_slot_claims WHERE shard = $2)",
    )
    .bind(tenant)
    .bind(shard)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves `tenant` to shard `to` (or places a tenant no shard holds);
/// `say` reports each step. Resumes a move interrupted at any step.
pub async fn move_tenant(
    pool: &PgPool,
    tenant: Uuid,
    to: &str,
    opts: &MoveOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Moved> {
    let started = Instant::now();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(tenant)
        .fetch_one(pool)
        .await?;
    if !exists {
        bail!("no tenant with id {tenant}");
    }
    let shard_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM crmsearch_shards WHERE name = $1)")
            .bind(to)
            .fetch_one(pool)
            .await?;
    if !shard_exists {
        bail!(
            "no shard named `{to}`: a shard exists once a node has served it (CRMSEARCH_SHARD={to})"
        );
    }
    if live_slots(pool, to).await?.is_empty() {
        bail!(
            "shard `{to}` has no running node to load the tenant; start one (CRMSEARCH_SHARD={to}) first"
        );
    }
    let before = placement(pool, tenant).await?;
    let from = match &before {
        Some((shard, _)) if shard == to => before.as_ref().and_then(|(_, a)| a.clone()),
        Some((shard, _)) => Some(shard.clone()),
        None => None,
    };
    if let Some((shard, None)) = &before
        && shard == to
    {
        bail!("tenant {tenant} is on shard `{to}` already");
    }
    // 1. hold on the target (unless an interrupted move got past it)
    let switched = before.as_ref().is_some_and(|(s, _)| s == to);
    let held = before
        .as_ref()
        .is_some_and(|(s, a)| s == to || a.as_deref() == Some(to));
    if !held {
        say(&format!("holding tenant {tenant} on shard {to} too"));
        let mut tx = pool.begin().await?;
        lock_writes(&mut tx).await?;
        sqlx::query(
            "INSERT INTO crmsearch_tenant_shards (tenant_id, shard, also_on) VALUES ($1, $2, NULL)
             ON CONFLICT (tenant_id) DO UPDATE SET also_on = $2, empty = false, changed_at = now()",
        )
        .bind(tenant)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        forget_ready(&mut tx, tenant, to).await?;
        sync_publication(&mut tx, to).await?;
        tx.commit().await?;
    }
    // 2. every live node of the target holds it in full
    let loading = Instant::now();
    let nodes_ready = if switched {
        Vec::new()
    } else {
        say(&format!(
            "waiting for shard {to}'s nodes to load the tenant"
        ));
        wait_ready(pool, tenant, to, opts.timeout).await?
    };
    let load_secs = loading.elapsed().as_secs_f64();
    let Some(from) = from else {
        // a placement: nothing to switch from
        switch_routes(pool, opts, say).await?;
        return Ok(Moved {
            tenant,
            from: None,
            to: to.to_owned(),
            nodes: nodes_ready,
            load_secs,
            total_secs: started.elapsed().as_secs_f64(),
        });
    };
    // 3. switch
    if !switched {
        say(&format!(
            "switching tenant {tenant} from shard {from} to {to}"
        ));
        let mut tx = pool.begin().await?;
        lock_placements(&mut tx).await?;
        sqlx::query(
            "UPDATE crmsearch_tenant_shards SET shard = $2, also_on = $3, changed_at = now() WHERE tenant_id = $1",
        )
        .bind(tenant)
        .bind(to)
        .bind(&from)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    switch_routes(pool, opts, say).await?;
    if !opts.drain.is_zero() {
        say(&format!(
            "shard {from} serves the tenant {} s more, for requests on their way",
            opts.drain.as_secs_f64()
        ));
        tokio::time::sleep(opts.drain).await;
    }
    // 4. drop on the source
    say(&format!("dropping tenant {tenant} from shard {from}"));
    let mut tx = pool.begin().await?;
    lock_writes(&mut tx).await?;
    sqlx::query(
        "UPDATE crmsearch_tenant_shards SET also_on = NULL, changed_at = now() WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    forget_ready(&mut tx, tenant, &from).await?;
    sync_publication(&mut tx, &from).await?;
    tx.commit().await?;
    Ok(Moved {
        tenant,
        from: Some(from),
        to: to.to_owned(),
        nodes: nodes_ready,
        load_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

/// Waits until every live node of `shard` holds `tenant` in full; returns
/// their slots.
async fn wait_ready(
    pool: &PgPool,
    tenant: Uuid,
    shard: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    let started = Instant::now();
    let spinner = super::bar(0, "nodes loading the tenant", false);
    loop {
        let live = live_slots(pool, shard).await?;
        let ready: Vec<String> = sqlx::query_scalar(
            "SELECT slot_name FROM crmsearch_shard_ready WHERE tenant_id = $1 AND slot_name = ANY($2)",
        )
        .bind(tenant)
        .bind(&live)
        .fetch_all(pool)
        .await?;
        spinner.set_length(live.len() as u64);
        spinner.set_position(ready.len() as u64);
        if !live.is_empty() && ready.len() == live.len() {
            spinner.finish_and_clear();
            return Ok(live);
        }
        if started.elapsed() > timeout {
            spinner.abandon();
            bail!(
                "shard {shard}'s nodes did not all load tenant {tenant} within {} s ({} of {} ready); the move \
                 stopped with the tenant still served by its source: run it again to resume",
                timeout.as_secs(),
                ready.len(),
                live.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn switch_routes(
    pool: &PgPool,
    opts: &MoveOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    if let Some(path) = &opts.routes {
        write_routes(pool, path).await?;
        say(&format!("routes written to {}", path.display()));
    }
    if let Some(cmd) = &opts.reload {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .await
            .with_context(|| format!("cannot run the reload command `{cmd}`"))?;
        if !out.status.success() {
            bail!(
                "the reload command `{cmd}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        say(&format!("ran `{cmd}`"));
    }
    Ok(())
}
