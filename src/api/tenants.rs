//! `POST /v1/tenants`, `POST /v1/keys`, `DELETE /v1/keys/{prefix}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Router, response::IntoResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::auth::AdminKey;
use super::auth::{Caller, Master};
use super::extract::Json;
use crate::auth::{self, Role};
use crate::error::{Code, Error, Result};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/keys", post(create_key))
        .route("/v1/keys/{prefix}", delete(revoke_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(
    State(st): State<AppState>,
    _: Master,
    Json(body): Json<NewTenant>,
) -> Result<impl IntoResponse> {
    let (id, key) = auth::create_tenant(&st.pool, &body.name).await?;
    tracing::info!(tenant = %id, "tenant created");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "name": body.name.trim(), "keys": {"admin": key}})),
    ))
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
