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
        .route("/metrics", get(metrics))
}

/// Prometheus text format.
async fn metrics() -> impl IntoResponse {
    crate::telemetry::metrics().render()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when Postgres answers within a second and the index is within
/// `ready_max_lag_bytes` of the server's WAL position.
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let not_ready = |reason: &str, extra: serde_json::Value| {
        let mut body = json!({"status": "not_ready", "reason": reason});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
    };
    let ping =
        sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text").fetch_one(&st.pool);
    let current = match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(lsn)) => lsn.parse::<indexer::Lsn>().unwrap_or_default(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: postgres unreachable");
            return not_ready("postgres_unreachable", json!({}));
        }
        Err(_) => return not_ready("postgres_timeout", json!({})),
    };
    let Some(ix) = &st.indexer else {
        return (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "postgres": "ok"})),
        );
    };
    ix.wait_for(current, Duration::from_millis(200)).await;
    let applied = ix.progress.visible();
    let lag = current.0.saturating_sub(applied.0);
    let detail = json!({"applied_lsn": applied, "server_lsn": current, "lag_bytes": lag});
    if !ix.progress.connected() {
        return not_ready("replication_disconnected", detail);
    }
    if lag > st.cfg.ready_max_lag_bytes {
        return not_ready("index_lag", detail);
    }
    let mut body = json!({"status": "ready", "postgres": "ok"});
    if let (Some(b), Some(d)) = (body.as_object_mut(), detail.as_object()) {
        b.extend(d.clone());
    }
    (StatusCode::OK, axum::Json(body))
}
