//! `POST /v1/tenants`, `GET`/`PATCH /v1/tenants/{id}`, `POST /v1/keys`,
//! `DELETE /v1/keys/{prefix}`.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::AdminKey;
use super::auth::{Caller, Master};
use super::extract::{Id, Json};
use crate::auth::{self, Role};
use crate::error::{Code, Error, Result};
use crate::limits::Tier;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant))
        .routes(routes!(read_tenant, update_tenant))
        .routes(routes!(create_key))
        .routes(routes!(revoke_key))
}

/// A new tenant and its first admin key.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct NewTenantAnswer {
    id: Uuid,
    name: String,
    tier: Tier,
    /// The shard the tenant lives on (a deployment with shards only).
    shard: Option<String>,
    #[schema(value_type = Object, example = json!({"admin": "ck_..."}))]
    keys: serde_json::Value,
}

/// A tenant: its name, tier and the budgets of the tier.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct TenantAnswer {
    id: Uuid,
    name: String,
    tier: Tier,
    created_at: chrono::DateTime<chrono::Utc>,
    /// Per second and burst, for the tenant and for each key, per class.
    #[schema(value_type = Option<Object>)]
    rate_limits: Option<serde_json::Value>,
}

/// A new key: shown once, stored hashed.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct NewKeyAnswer {
    key: String,
    prefix: String,
    role: Role,
    tenant_id: Uuid,
    agent_id: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct Revoked {
    prefix: String,
    revoked: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    /// Rate-limit tier [default: free].
    #[serde(default)]
    tier: Option<Tier>,
    /// The shard to place the tenant on, in a deployment with shards
    /// [default: the shard with the fewest tenants].
    #[serde(default)]
    shard: Option<String>,
}

/// Creates a tenant (the master key).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, description = "created; `Location` names it", body = NewTenantAnswer,
        headers(("Location" = String, description = "the tenant's path")))))]
async fn create_tenant(
    State(st): State<AppState>,
    _: Master,
    Json(body): Json<NewTenant>,
) -> Result<impl IntoResponse> {
    let tier = body.tier.unwrap_or(Tier::Free);
    let (id, key, shard) =
        auth::create_tenant_on(st.db()?, &body.name, tier, body.shard.as_deref()).await?;
    tracing::info!(tenant = %id, tier = tier.as_str(), shard = ?shard, "tenant created");
    Ok(super::created(
        format!("/v1/tenants/{id}"),
        json!({"id": id, "name": body.name.trim(), "tier": tier, "shard": shard, "keys": {"admin": key}}),
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

/// A tenant (its admin or the master key).
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = Uuid, Path, description = "the tenant's id")),
    responses((status = 200, description = "the tenant", body = TenantAnswer)))]
async fn read_tenant(
    State(st): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    may_manage(&caller, id)?;
    let row = sqlx::query_as("SELECT name, tier, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(st.db()?)
        .await?;
    Ok(axum::Json(tenant_json(&st, id, row)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tier: Option<Tier>,
}

/// Renames a tenant (its admin or the master key) or changes its tier (the
/// master key only).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", request_body = TenantChange,
    params(("id" = Uuid, Path, description = "the tenant's id")),
    responses((status = 200, description = "the tenant as changed", body = TenantAnswer)))]
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
    .fetch_optional(st.db()?)
    .await?;
    let tenant = tenant_json(&st, id, row)?;
    if let Some(tier) = body.tier {
        // at once here; other servers when the trigger's notification reaches them
        st.keys.forget_tenant(id);
        tracing::info!(tenant = %id, tier = tier.as_str(), "tenant tier changed");
    }
    Ok(axum::Json(tenant))
}

#[derive(Deserialize, ToSchema)]
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

/// Creates a key (the tenant's admin, or the master key naming the tenant).
#[utoipa::path(post, path = "/v1/keys", tag = "tenants", request_body = NewKey,
    responses((status = 201, description = "created; the key is shown only now", body = NewKeyAnswer,
        headers(("Location" = String, description = "the key's path, to revoke it")))))]
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
        auth::create_agent_key(st.db()?, tenant, body.role, body.agent_id.as_deref()).await?;
    Ok(super::created(
        format!("/v1/keys/{prefix}"),
        json!({"key": key, "prefix": prefix, "role": body.role, "tenant_id": tenant, "agent_id": body.agent_id}),
    ))
}

/// Revokes a key by its public prefix (the tenant's admin).
#[utoipa::path(delete, path = "/v1/keys/{prefix}", tag = "tenants",
    params(("prefix" = String, Path, description = "the key's public prefix")),
    responses((status = 200, description = "revoked; it fails at once", body = Revoked)))]
async fn revoke_key(
    State(st): State<AppState>,
    AdminKey(p): AdminKey,
    Path(prefix): Path<String>,
) -> Result<impl IntoResponse> {
    if !auth::revoke_key(st.db()?, p.tenant_id, &prefix).await? {
        return Err(Error::user(
            Code::NotFound,
            "your tenant has no active key with this prefix",
        ));
    }
    // at once here; other servers when the trigger's notification reaches them
    st.keys.forget_prefix(&prefix);
    Ok(axum::Json(json!({"prefix": prefix, "revoked": true})))
}
