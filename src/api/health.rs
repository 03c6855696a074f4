//! `/healthz` (the process is alive) and `/readyz` (it can serve).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when Postgres answers within a second. (The index-lag condition
/// joins this when the CDC indexer lands.)
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&st.pool);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "postgres": "ok"})),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: postgres unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "not_ready", "postgres": "unreachable"})),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "postgres": "timeout"})),
        ),
    }
}
