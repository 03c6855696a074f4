//! `GET /v1/admin/status`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use indexer::Status;

use super::AppState;
use super::auth::AdminKey;
use crate::error::Result;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/status", get(status))
}

async fn status(State(st): State<AppState>, _: AdminKey) -> Result<axum::Json<Status>> {
    Ok(axum::Json(st.indexer()?.status().await?))
}
