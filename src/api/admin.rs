//! `GET /v1/admin/status`, `POST /v1/admin/verify`.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use indexer::Status;
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::auth::{AdminKey, Caller};
use crate::auth::Role;
use crate::error::{Code, Error, Result};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/status", get(status))
        .route("/v1/admin/verify", post(verify))
}

async fn status(State(st): State<AppState>, _: AdminKey) -> Result<axum::Json<Status>> {
    Ok(axum::Json(st.indexer()?.status().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyParams {
    #[serde(default)]
    repair: bool,
    /// With the master key: one tenant (default: all).
    #[serde(default)]
    tenant: Option<Uuid>,
}

/// Compares Postgres with the index: a tenant admin key its own tenant, the
/// master key any tenant or all of them.
async fn verify(
    State(st): State<AppState>,
    caller: Caller,
    params: super::search::Params<VerifyParams>,
) -> Result<axum::Json<indexer::verify::Report>> {
    let params = super::search::params(params)?;
    let tenant = match caller {
        Caller::Tenant(p) => {
            p.require(Role::Admin)?;
            if params.tenant.is_some_and(|t| t != p.tenant_id) {
                return Err(Error::user(
                    Code::Forbidden,
                    "a tenant key can only verify its own tenant",
                ));
            }
            Some(p.tenant_id)
        }
        Caller::Master => params.tenant,
    };
    let report = st
        .indexer()?
        .verify(tenant, params.repair)
        .await
        .map_err(Error::Internal)?;
    Ok(axum::Json(report))
}
