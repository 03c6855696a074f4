//! API keys: minting, hashing, checking, and the roles they carry.
//!
//! A key reads `crm_<8 public chars>_<32 secret chars>` (base62, 190 bits of
//! secret). Its first part, `crm_<8 chars>`, is the public prefix: stored in
//! clear to name the key (list, revoke). The first five public characters
//! are the tenant's route tag (the same in each of its keys), from which a
//! proxy picks the tenant's shard without asking anyone (docs/sharding.md). The whole key is stored only as its
//! SHA-256: keys are long random strings, not passwords, so a fast hash
//! suffices (as for GitHub or Stripe tokens) and keeps the check cheap on
//! every request.

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Code, Error, Result};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Search,
    Agent,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Search => "search",
            Role::Agent => "agent",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "search" => Some(Role::Search),
            "agent" => Some(Role::Agent),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The caller behind a tenant key. The tenant of every request comes from here.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub role: Role,
    pub key_prefix: String,
    /// A key bound to one agent reads and writes only its memories.
    pub agent_id: Option<String>,
    /// The tenant's tier: which rate-limit budgets it draws on.
    pub tier: crate::limits::Tier,
}

impl Principal {
    /// Refuses the request unless the key's role is `min` or above.
    pub fn require(&self, min: Role) -> Result<()> {
        if self.role >= min {
            Ok(())
        } else {
            Err(Error::user(
                Code::Forbidden,
                format!(
                    "this key has the role `{}`; this request needs `{}` or higher",
                    self.role.as_str(),
                    min.as_str()
                ),
            ))
        }
    }
}

pub const PREFIX_LEN: usize = 12; // "crm_" + 8

/// A new random key of the tenant whose route tag is `tag`, and its public
/// prefix.
pub fn mint_key(tag: &str) -> (String, String) {
    let mut rng = rand::rng();
    let mut part = |n: usize| -> String {
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    };
    let prefix = format!("crm_{tag}{}", part(8 - tag.len()));
    let key = format!("{prefix}_{}", part(32));
    (key, prefix)
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Stores a new key for the tenant and returns it (the only time it is seen).
pub async fn create_key(pool: &PgPool, tenant_id: Uuid, role: Role) -> Result<(String, String)> {
    create_agent_key(pool, tenant_id, role, None).await
}

/// [`create_key`], bound to one agent when `agent_id` is given.
pub async fn create_agent_key(
    pool: &PgPool,
    tenant_id: Uuid,
    role: Role,
    agent_id: Option<&str>,
) -> Result<(String, String)> {
    let agent_id = schema::validate::text(
        "agent_id",
        agent_id.map(str::to_owned),
        schema::validate::MAX_SHORT,
    )?;
    let tag: Option<String> = sqlx::query_scalar("SELECT route_tag FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
    let tag =
        tag.ok_or_else(|| Error::user(Code::NotFound, format!("no tenant with id {tenant_id}")))?;
    loop {
        let (key, prefix) = mint_key(&tag);
        let res = sqlx::query(
            "INSERT INTO api_keys (prefix, tenant_id, role, key_hash, agent_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (prefix) DO NOTHING",
        )
        .bind(&prefix)
        .bind(tenant_id)
        .bind(role.as_str())
        .bind(hash_key(&key))
        .bind(&agent_id)
        .execute(pool)
        .await
        .map_err(|e| {
            match e.as_database_error().map(|d| d.is_foreign_key_violation()) {
                Some(true) => Error::user(Code::NotFound, format!("no tenant with id {tenant_id}")),
                _ => e.into(),
            }
        })?;
        if res.rows_affected() == 1 {
            return Ok((key, prefix));
        }
        // a prefix collision (3 random characters after the tag): draw again
    }
}

/// Revokes a key of the tenant by its prefix; false if the tenant has none.
pub async fn revoke_key(pool: &PgPool, tenant_id: Uuid, prefix: &str) -> Result<bool> {
    let res = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND tenant_id = $2 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .bind(tenant_id)
    .execute(pool)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Keys validated recently. While [`listen_for_key_changes`] listens, a key
/// Postgres accepted within [`KeyCache::TRUSTED_FOR`] (asked after the
/// listening began) is accepted without asking again: every revocation,
/// change or delete of a key is notified when it commits and forgets it at
/// once. Otherwise Postgres is asked on every request; only when it cannot
/// be asked is a key accepted that was valid within [`KeyCache::STALE_FOR`].
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::sync::Mutex<std::collections::HashMap<Vec<u8>, (Principal, std::time::Instant)>>,
    trust: std::sync::Mutex<Trust>,
}

#[derive(Debug, Default)]
struct Trust {
    /// Since when key changes are being notified to this process.
    listening_since: Option<std::time::Instant>,
    /// When a key was last forgotten: an answer Postgres gave before it may
    /// be older than the change (a query racing the revocation).
    forgot_at: Option<std::time::Instant>,
}

impl KeyCache {
    pub const STALE_FOR: std::time::Duration = std::time::Duration::from_secs(600);
    /// How long a key is trusted without asking Postgres while changes are
    /// notified (a bound in case a notification is ever lost).
    pub const TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(60);
    const MAX_KEYS: usize = 10_000;

    /// `asked_at`: when the query that found the key started.
    fn remember(&self, hash: Vec<u8>, p: &Principal, asked_at: std::time::Instant) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= Self::MAX_KEYS {
            keys.retain(|_, (_, at)| at.elapsed() < Self::STALE_FOR);
        }
        if keys.len() < Self::MAX_KEYS {
            keys.insert(hash, (p.clone(), asked_at));
        }
    }

    fn forget(&self, hash: &[u8]) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash);
    }

    fn trust(&self) -> std::sync::MutexGuard<'_, Trust> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the key with this public prefix (it was revoked or changed);
    /// keys Postgres accepted before now are asked again.
    pub fn forget_prefix(&self, prefix: &str) {
        self.trust().forgot_at = Some(std::time::Instant::now());
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (p, _)| p.key_prefix != prefix);
    }

    /// Forgets every key of the tenant (its tier changed).
    pub fn forget_tenant(&self, tenant: Uuid) {
        self.trust().forgot_at = Some(std::time::Instant::now());
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (p, _)| p.tenant_id != tenant);
    }

    /// Acts on a notification of [`KEY_CHANNEL`]: a key's prefix, or
    /// `tenant:<id>` when a tenant's tier changed.
    pub fn forget_notified(&self, payload: &str) {
        match payload.strip_prefix("tenant:").map(Uuid::parse_str) {
            Some(Ok(tenant)) => self.forget_tenant(tenant),
            Some(Err(_)) => tracing::warn!(payload, "a key notification names no tenant"),
            None => self.forget_prefix(payload),
        }
    }

    fn listening(&self, since: Option<std::time::Instant>) {
        self.trust().listening_since = since;
    }

    /// Whether key changes are being notified to this process.
    pub fn is_listening(&self) -> bool {
        self.trust().listening_since.is_some()
    }

    /// Whether `key` is accepted without asking Postgres now.
    pub fn trusts(&self, key: &str) -> bool {
        self.trusted(&hash_key(key)).is_some()
    }

    /// The key, if Postgres accepted it recently, after key changes were
    /// being notified and after the last change.
    fn trusted(&self, hash: &[u8]) -> Option<Principal> {
        let (since, forgot) = {
            let t = self.trust();
            (t.listening_since?, t.forgot_at)
        };
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(hash)
            .filter(|(_, at)| {
                *at >= since && forgot.is_none_or(|f| *at > f) && at.elapsed() < Self::TRUSTED_FOR
            })
            .map(|(p, _)| p.clone())
    }

    fn recall(&self, hash: &[u8]) -> Option<Principal> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(hash)
            .filter(|(_, at)| at.elapsed() < Self::STALE_FOR)
            .map(|(p, _)| p.clone())
    }
}

/// A key as stored: tenant, role, hash, agent, and the tenant's tier.
type KeyRow = (Uuid, String, Vec<u8>, Option<String>, String);

/// Checks a presented key; the same error whatever is wrong with it.
pub async fn authenticate(
    pool: &PgPool,
    pg: &std::sync::Arc<crate::pg_health::PgHealth>,
    cache: &KeyCache,
    key: &str,
) -> Result<Principal> {
    let invalid = || Error::user(Code::InvalidApiKey, "the API key is unknown or revoked");
    if key.len() != PREFIX_LEN + 33 || !key.starts_with("crm_") || !key.is_ascii() {
        return Err(invalid());
    }
    let prefix = &key[..PREFIX_LEN];
    let hash = hash_key(key);
    if let Some(p) = cache.trusted(&hash) {
        return Ok(p);
    }
    // Postgres is known to be down: a key seen lately is taken as it was,
    // and any other is refused at once
    if pg.is_down() {
        if let Some(p) = cache.recall(&hash) {
            return Ok(p);
        }
        pg.check()?;
    }
    let asked_at = std::time::Instant::now();
    let row: Option<KeyRow> = match sqlx::query_as(
        "SELECT k.tenant_id, k.role, k.key_hash, k.agent_id, t.tier
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.prefix = $1 AND k.revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await
    {
        Ok(row) => row,
        Err(e) => {
            let err = Error::from(e);
            if err.code() == Code::Unavailable {
                pg.failed(pool);
            }
            if err.code() == Code::Unavailable
                && let Some(p) = cache.recall(&hash)
            {
                tracing::debug!(key = %p.key_prefix, "postgres unavailable: key accepted from the cache");
                return Ok(p);
            }
            return Err(err);
        }
    };
    let Some((tenant_id, role, stored, agent_id, tier)) = row else {
        cache.forget(&hash);
        return Err(invalid());
    };
    if !constant_time_eq(&hash, &stored) {
        return Err(invalid());
    }
    let role = Role::parse(&role)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad role {role} in api_keys")))?;
    let tier = crate::limits::Tier::parse(&tier)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad tier {tier} in tenants")))?;
    let p = Principal {
        tenant_id,
        role,
        key_prefix: prefix.to_owned(),
        agent_id,
        tier,
    };
    cache.remember(hash, &p, asked_at);
    Ok(p)
}

/// The channel a key's revocation, change or delete is notified on (by a
/// trigger on `api_keys`, whoever writes it), and a tenant's change of tier
/// (by a trigger on `tenants`).
pub const KEY_CHANNEL: &str = "crmsearch_keys";

/// Listens for key changes for as long as the process runs, forgetting each
/// changed key in `cache`; while it listens, `cache` trusts keys it validated
/// since. A lost connection stops the trust until listening again.
pub async fn listen_for_key_changes(pool: PgPool, cache: std::sync::Arc<KeyCache>) {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(KEY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listener.await {
            Ok(mut l) => {
                cache.listening(Some(std::time::Instant::now()));
                backoff = std::time::Duration::from_millis(100);
                tracing::debug!("listening for key changes");
                while let Ok(Some(n)) = l.try_recv().await {
                    cache.forget_notified(n.payload());
                }
                // the connection was lost: what it missed is unknown
                cache.listening(None);
                tracing::warn!("stopped listening for key changes; asking Postgres for every key");
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen for key changes"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Creates a tenant and its first `admin` key.
pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<(Uuid, String)> {
    create_tenant_in(pool, name, crate::limits::Tier::Free).await
}

/// [`create_tenant`] in the given tier.
pub async fn create_tenant_in(
    pool: &PgPool,
    name: &str,
    tier: crate::limits::Tier,
) -> Result<(Uuid, String)> {
    create_tenant_on(pool, name, tier, None)
        .await
        .map(|(id, key, _)| (id, key))
}

/// [`create_tenant_in`], placed on `shard` when the deployment has shards
/// (by default the one with the fewest tenants); returns the shard too.
/// The placement is in the same transaction: the shard has nothing to load.
pub async fn create_tenant_on(
    pool: &PgPool,
    name: &str,
    tier: crate::limits::Tier,
    shard: Option<&str>,
) -> Result<(Uuid, String, Option<String>)> {
    let name = schema::validate::required_text("name", Some(name.to_owned()), 200)?;
    let mut tx = pool.begin().await?;
    indexer::pipeline::shard::lock_placements(&mut tx)
        .await
        .map_err(Error::Internal)?;
    let shards: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.name, s.code FROM crmsearch_shards s
           LEFT JOIN crmsearch_tenant_shards t ON t.shard = s.name
          GROUP BY s.name, s.code ORDER BY count(t.tenant_id), s.name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let place = match shard {
        Some(want) => Some(shards.iter().find(|(n, _)| n == want).ok_or_else(|| {
            let names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
            Error::user(
                Code::InvalidValue,
                format!(
                    "shard: no shard named `{want}` (shards: {}); a shard exists once a node has served it",
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                ),
            )
        })?),
        None => shards.first(),
    };
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO tenants (name, tier, route_tag) VALUES ($1, $2, crmsearch_new_route_tag($3)) RETURNING id",
    )
    .bind(&name)
    .bind(tier.as_str())
    .bind(place.map(|(_, code)| code))
    .fetch_one(&mut *tx)
    .await?;
    if let Some((shard, _)) = place {
        sqlx::query(
            "INSERT INTO crmsearch_tenant_shards (tenant_id, shard, empty) VALUES ($1, $2, true)",
        )
        .bind(id)
        .bind(shard)
        .execute(&mut *tx)
        .await?;
        indexer::pipeline::shard::sync_publication(&mut tx, shard)
            .await
            .map_err(Error::Internal)?;
    }
    tx.commit().await?;
    let (key, _) = create_key(pool, id, Role::Admin).await?;
    Ok((id, key, place.map(|(s, _)| s.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let (key, prefix) = mint_key("aB3x9");
        assert_eq!(key.len(), PREFIX_LEN + 33);
        assert!(key.starts_with(&prefix) && prefix.len() == PREFIX_LEN);
        // the tenant's route tag begins the public part of each of its keys
        assert!(prefix.starts_with("crm_aB3x9"), "{prefix}");
        assert_ne!(mint_key("aB3x9").0, key);
        assert!(constant_time_eq(&hash_key(&key), &hash_key(&key)));
        assert!(!constant_time_eq(
            &hash_key(&key),
            &hash_key(&mint_key("aB3x9").0)
        ));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(
            Role::Admin > Role::Write && Role::Write > Role::Agent && Role::Agent > Role::Search
        );
    }
}
