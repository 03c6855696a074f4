//! Memory writes and reads: `/v1/memories`, `/v1/memories/{id}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use schema::{Memory, MemoryFields};
use serde_json::json;

use super::AppState;
use super::auth::AgentKey;
use super::contacts::Written;
use super::extract::{Id, Json};
use crate::error::Result;
use crate::store::memories;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/memories", post(create))
        .route("/v1/memories/{id}", get(read).delete(remove))
}

async fn create(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Json(fields): Json<MemoryFields>,
) -> Result<impl IntoResponse> {
    let (record, lsn) = memories::create(&st.pool, p.tenant_id, fields).await?;
    Ok((StatusCode::CREATED, axum::Json(Written { record, lsn })))
}

async fn read(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Id(id): Id,
) -> Result<axum::Json<Memory>> {
    Ok(axum::Json(memories::get(&st.pool, p.tenant_id, id).await?))
}

async fn remove(
    State(st): State<AppState>,
    AgentKey(p): AgentKey,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    let lsn = memories::delete(&st.pool, p.tenant_id, id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true, "lsn": lsn})))
}
