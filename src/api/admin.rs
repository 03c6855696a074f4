//! `GET /v1/admin/status`, `POST /v1/admin/verify`, `POST /v1/admin/reindex`,
//! `GET /v1/admin/jobs/{id}`.

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
        .route("/v1/admin/reindex", post(reindex))
        .route("/v1/admin/jobs/{id}", get(job))
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
        .map_err(|e| Error::from(indexer::Error::from(e)))?;
    Ok(axum::Json(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReindexParams {
    /// One tenant (the others are carried over); default: every tenant.
    #[serde(default)]
    tenant: Option<Uuid>,
}

/// Starts a reindex, `202 {"job_id"}`: of the whole index with the master
/// key, of one tenant with the master key and `tenant`, or of its own tenant
/// with a tenant admin key. The current index serves until the new one is
/// complete.
async fn reindex(
    State(st): State<AppState>,
    caller: Caller,
    params: super::search::Params<ReindexParams>,
) -> Result<impl axum::response::IntoResponse> {
    let params = super::search::params(params)?;
    let tenant = match caller {
        Caller::Master => params.tenant,
        Caller::Tenant(p) => {
            p.require(Role::Admin)?;
            if params.tenant.is_some_and(|t| t != p.tenant_id) {
                return Err(Error::user(
                    Code::Forbidden,
                    "a tenant key can only reindex its own tenant",
                ));
            }
            Some(p.tenant_id)
        }
    };
    let ix = st.indexer()?.clone();
    let jobs = st.jobs.clone();
    let id = jobs.start("reindex").ok_or_else(|| {
        Error::user(
            Code::Conflict,
            "a reindex is already running; follow it at GET /v1/admin/jobs/{id}",
        )
    })?;
    tokio::spawn(async move {
        let progress = |done, total| jobs.progress(id, done, total);
        let outcome = ix
            .reindex(tenant, &progress)
            .await
            .map(|generation| serde_json::json!({"generation": generation, "tenant": tenant}))
            .map_err(|e| format!("{e:#}"));
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "reindex failed; the previous index serves on");
        }
        jobs.finish(id, outcome);
    });
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"job_id": id})),
    ))
}

async fn job(
    State(st): State<AppState>,
    caller: Caller,
    super::extract::Id(id): super::extract::Id,
) -> Result<axum::Json<crate::jobs::Job>> {
    if let Caller::Tenant(p) = caller {
        p.require(Role::Admin)?;
    }
    st.jobs.get(id).map(axum::Json).ok_or_else(|| {
        Error::user(
            Code::NotFound,
            "no job with this id (jobs are forgotten at a restart)",
        )
    })
}
