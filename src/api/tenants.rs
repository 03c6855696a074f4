//! `POST /v1/tenants`, `GET`/`PATCH /v1/tenants/{id}`, `POST /v1/keys`,
//! `DELETE /v1/keys/{prefix}`.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Router, response::IntoResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::auth::AdminKey;
use super::auth::{Caller, Master};
use super::extract::{Id, Json};
use crate::auth::{self, Role};
use crate::error::{Code, Error, Result};
use crate::limits::Tier;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{id}", get(read_tenant).patch(update_tenant))
        .route("/v1/keys", post(create_key))
        .route("/v1/keys/{prefix}", delete(revoke_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    /// Rate-limit tier [default: free].
    #[serde(default)]
    tier: Option<Tier>,
}

async fn create_tenant(
    State(st): State<AppState>,
    _: Master,
    Json(body): Json<NewTenant>,
) -> Result<impl IntoResponse> {
    let tier = body.tier.unwrap_or(Tier::Free);
    let (id, key) = auth::create_tenant_in(&st.pool, &body.name, tier).await?;
    tracing::info!(tenant = %id, tier = tier.as_str(), "tenant created");
    Ok(super::created(
        format!("/v1/tenants/{id}"),
        json!({"id": id, "name": body.name.trim(), "tier": tier, "keys": {"admin": key}}),
    ))
}

/// A tenant as stored: name, tier, created.
type TenantRow = (String, String, chrono::DateTime<chrono::Utc>);

/// A tenant as the API shows it, or 404.
fn tenant_json(st: &AppState, id: Uuid, row: Option<TenantRow>) -> Result<serde_json::Value> {
    let (name, tier, created_at) = row.ok_or_else(|| Error::not_found("tenant"))?;
    Ok(json!({
        "id": id,
        "name": name,
        "tier": tier,
        "created_at": created_at,
        "rate_limits": Tier::parse(&tier).map(|t| st.cfg.limits.tier(t)),
    }))
}

/// The tenant's own admin or the master key.
fn may_manage(caller: &Caller, id: Uuid) -> Result<()> {
    match caller {
        Caller::Master => Ok(()),
        Caller::Tenant(p) if p.tenant_id == id => p.require(Role::Admin),
        Caller::Tenant(_) => Err(Error::not_found("tenant")),
    }
}

async fn read_tenant(
    State(st): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    may_manage(&caller, id)?;
    let row = sqlx::query_as("SELECT name, tier, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(&st.pool)
        .await?;
    Ok(axum::Json(tenant_json(&st, id, row)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tier: Option<Tier>,
}

/// Renames a tenant (its admin or the master key) or changes its tier (the
/// master key only).
async fn update_tenant(
    State(st): State<AppState>,
    caller: Caller,
    Id(id): Id,
    Json(body): Json<TenantChange>,
) -> Result<impl IntoResponse> {
    may_manage(&caller, id)?;
    if body.tier.is_some() && !matches!(caller, Caller::Master) {
        return Err(Error::user(
            Code::Forbidden,
            "only the master key changes a tenant's tier",
        ));
    }
    let name = match body.name {
        Some(n) => Some(schema::validate::required_text("name", Some(n), 200)?),
        None => None,
    };
    let row = sqlx::query_as(
        "UPDATE tenants SET name = coalesce($2, name), tier = coalesce($3, tier) WHERE id = $1
         RETURNING name, tier, created_at",
    )
    .bind(id)
    .bind(&name)
    .bind(body.tier.map(Tier::as_str))
    .fetch_optional(&st.pool)
    .await?;
    let tenant = tenant_json(&st, id, row)?;
    if let Some(tier) = body.tier {
        // at once here; other servers when the trigger's notification reaches them
        st.keys.forget_tenant(id);
        tracing::info!(tenant = %id, tier = tier.as_str(), "tenant tier changed");
    }
    Ok(axum::Json(tenant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    role: Role,
    /// Only with the master key: the tenant to create the key for.
    #[serde(default)]
    tenant_id: Option<Uuid>,
    /// Binds the key to one agent's memories.
    #[serde(default)]
    agent_id: Option<String>,
}

async fn create_key(
    State(st): State<AppState>,
    caller: Caller,
    Json(body): Json<NewKey>,
) -> Result<impl IntoResponse> {
    let tenant = match caller {
        Caller::Tenant(p) => {
            p.require(Role::Admin)?;
            if body.tenant_id.is_some_and(|t| t != p.tenant_id) {
                return Err(Error::user(
                    Code::Forbidden,
                    "a tenant key can only create keys of its own tenant",
                ));
            }
            p.tenant_id
        }
        Caller::Master => body.tenant_id.ok_or_else(|| {
            Error::user(
                Code::MissingField,
                "with the master key, name the tenant in `tenant_id`",
            )
        })?,
    };
    let (key, prefix) =
        auth::create_agent_key(&st.pool, tenant, body.role, body.agent_id.as_deref()).await?;
    Ok(super::created(
        format!("/v1/keys/{prefix}"),
        json!({"key": key, "prefix": prefix, "role": body.role, "tenant_id": tenant, "agent_id": body.agent_id}),
    ))
}

async fn revoke_key(
    State(st): State<AppState>,
    AdminKey(p): AdminKey,
    Path(prefix): Path<String>,
) -> Result<impl IntoResponse> {
    if !auth::revoke_key(&st.pool, p.tenant_id, &prefix).await? {
        return Err(Error::user(
            Code::NotFound,
            "your tenant has no active key with this prefix",
        ));
    }
    // at once here; other servers when the trigger's notification reaches them
    st.keys.forget_prefix(&prefix);
    Ok(axum::Json(json!({"prefix": prefix, "revoked": true})))
}
