//! `GET /v1/admin/status`, `POST /v1/admin/verify`, `POST /v1/admin/reindex`,
//! `GET /v1/admin/jobs/{id}`.

use axum::extract::State;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use crate::auth::Role;
use crate::error::{Code, Error, Result};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(verify))
        .routes(routes!(reindex))
        .routes(routes!(job))
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct JobStarted {
    job_id: Uuid,
}

/// The index's positions, lag, pipeline state and document counts: with
/// the master key, of the whole deployment (slot, segments, vectors,
/// warnings); with a tenant's admin key, how fresh the index is and that
/// tenant's documents only.
#[utoipa::path(get, path = "/v1/admin/status", tag = "operations",
    responses((status = 200, description = "master key: per index, documents, applied LSN, lag in bytes and milliseconds, the pipeline's state; tenant admin key: the index's freshness and the tenant's documents", body = Object)))]
async fn status(State(st): State<AppState>, caller: Caller) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    st.pg.check()?;
    let ix = st.indexer()?;
    Ok(match caller {
        Caller::Master => axum::Json(ix.status().await?).into_response(),
        Caller::Tenant(p) => {
            p.require(Role::Admin)?;
            axum::Json(ix.tenant_status(p.tenant_id).await?).into_response()
        }
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VerifyParams {
    #[serde(default)]
    repair: bool,
    /// With the master key: one tenant (default: all).
    #[serde(default)]
    tenant: Option<Uuid>,
}

/// Compares Postgres with the index: a tenant admin key its own tenant, the
/// master key any tenant or all of them.
#[utoipa::path(post, path = "/v1/admin/verify", tag = "operations", params(VerifyParams),
    responses((status = 200, description = "what differs between Postgres and the index (and what was repaired)", body = Object)))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReindexParams {
    /// One tenant (the others are carried over); default: every tenant.
    #[serde(default)]
    tenant: Option<Uuid>,
}

/// Starts a reindex, `202 {"job_id"}`: of the whole index, or of one
/// tenant with `tenant`. Either builds a new generation of the whole index
/// (the other tenants carried over), so it needs the master key; a tenant's
/// admin compares its tenant with Postgres, and repairs it, with
/// `POST /v1/admin/verify?repair=true`. The current index serves until the
/// new one is complete.
#[utoipa::path(post, path = "/v1/admin/reindex", tag = "operations", params(ReindexParams),
    responses((status = 202, description = "started; follow it at /v1/admin/jobs/{id}", body = JobStarted)))]
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
            return Err(Error::user(
                Code::Forbidden,
                "a reindex rebuilds the whole index (every tenant's documents), so it needs the master key; to compare your tenant with Postgres and fix what differs, POST /v1/admin/verify?repair=true",
            ));
        }
    };
    let ix = st.indexer()?.clone();
    let jobs = st.jobs.clone();
    let id = jobs.start("reindex", None).ok_or_else(|| {
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

/// A job's progress (jobs are forgotten at a restart).
#[utoipa::path(get, path = "/v1/admin/jobs/{id}", tag = "operations",
    params(("id" = Uuid, Path, description = "the job's id")),
    responses((status = 200, description = "the job", body = crate::jobs::Job)))]
async fn job(
    State(st): State<AppState>,
    caller: Caller,
    super::extract::Id(id): super::extract::Id,
) -> Result<axum::Json<crate::jobs::Job>> {
    let viewer = match caller {
        Caller::Master => None,
        Caller::Tenant(p) => {
            p.require(Role::Admin)?;
            Some(p.tenant_id)
        }
    };
    // another tenant's job is not found, as if it did not exist
    st.jobs.get(id, viewer).map(axum::Json).ok_or_else(|| {
        Error::user(
            Code::NotFound,
            "no job with this id (jobs are forgotten at a restart)",
        )
    })
}
