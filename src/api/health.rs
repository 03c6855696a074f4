//! `/healthz` (the process is alive) and `/readyz` (it can serve).

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::{Health, Readiness};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process's metrics in Prometheus' text format: latency histograms per
/// route and status, CDC lag, commit durations, cache hits per layer, limiter
/// decisions, Redis health.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics() -> impl IntoResponse {
    crate::telemetry::metrics().render()
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "alive", body = Health)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when Postgres answers within a second and the index serves as it
/// should: its pipeline runs (no stage failing or restarting), the stream
/// is connected, the index is within `ready_max_lag_bytes` of the server's
/// WAL position and not stalled behind it. Every 503 carries `Retry-After`.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "ready to serve", body = Readiness),
        (status = 503, description = "not ready: `reason` says why", body = Readiness,
            headers(("Retry-After" = u64, description = "seconds to wait")))))]
async fn readyz(State(st): State<AppState>) -> Response {
    let not_ready = |reason: &str, extra: serde_json::Value| {
        let mut body = json!({"status": "not_ready", "reason": reason});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            axum::Json(body),
        )
            .into_response()
    };
    if st.pg.is_down() {
        return not_ready("postgres_unreachable", json!({}));
    }
    let ping = indexer::wal::position(&st.pool);
    let current = match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(lsn)) => lsn,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: postgres unreachable");
            return not_ready("postgres_unreachable", json!({}));
        }
        Err(_) => return not_ready("postgres_timeout", json!({})),
    };
    let Some(ix) = &st.indexer else {
        return axum::Json(json!({"status": "ready", "postgres": "ok"})).into_response();
    };
    ix.wait_for(current, Duration::from_millis(200)).await;
    let lag = ix.progress.lag(current);
    let health = ix.health.get();
    let detail = json!({
        "applied_lsn": lag.applied_lsn,
        "server_lsn": lag.server_lsn,
        "lag_bytes": lag.lag_bytes,
        "stalled_ms": lag.stalled_ms,
        "pipeline": health.state,
        "restarts": health.restarts,
        "last_error": health.last_error,
        "failing_since": health.failing_since,
    });
    if let Some(why) = ix.readiness(&lag) {
        return not_ready(why.reason(), detail);
    }
    if lag.lag_bytes > st.cfg.ready_max_lag_bytes {
        return not_ready("index_lag", detail);
    }
    let mut body = json!({"status": "ready", "postgres": "ok"});
    if let (Some(b), Some(d)) = (body.as_object_mut(), detail.as_object()) {
        b.extend(d.clone());
    }
    axum::Json(body).into_response()
}
