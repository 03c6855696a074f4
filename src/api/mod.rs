//! The HTTP API: one file per resource, each with its `router()`, merged
//! here. Handlers translate HTTP to calls into `store` (and later `search`);
//! they never touch SQL or the index themselves.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod companies;
pub mod console;
pub mod contacts;
pub mod cpu;
pub mod export;
pub mod extract;
pub mod health;
pub mod http;
pub mod limit;
pub mod mcp;
pub mod meili;
pub mod memories;
pub mod openapi;
pub mod search;
pub mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use indexer::Indexer;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::error::{Code, error_response};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cfg: Arc<Config>,
    /// The index and its CDC pipeline (absent only in write-path tests).
    pub indexer: Option<Arc<Indexer>>,
    pub keys: Arc<crate::auth::KeyCache>,
    /// Whether Postgres answers: while it does not, what needs it is
    /// refused at once.
    pub pg: Arc<crate::pg_health::PgHealth>,
    /// The request bodies held in memory at once.
    pub bodies: http::BodyBudget,
    /// The embedding model, when one is installed.
    pub embedder: Option<Arc<crate::embed::Embedder>>,
    pub jobs: Arc<crate::jobs::Jobs>,
    /// Answers of the search endpoints, per tenant and index version.
    pub results: Arc<crate::cache::ResultCache>,
    /// Rate limits, in Redis when `REDIS_URL` is set.
    pub limiter: Arc<crate::limits::Limiter>,
    /// Answers in Redis, behind `results` (with `REDIS_URL` and the result
    /// cache on).
    pub shared_results: Option<Arc<crate::cache::SharedCache>>,
    /// Identical searches in flight, computed once.
    pub searches: Arc<crate::coalesce::Coalescer<SearchKey, Shared<bytes::Bytes>>>,
    /// Identical query texts being embedded, embedded once.
    pub embeddings: Arc<crate::coalesce::Coalescer<String, Shared<Arc<[f32]>>>>,
}

/// A search in flight: its tenant and query at a version.
pub type SearchKey = (crate::cache::Key, indexer::store::Version);
/// The answer of a computation shared by its callers.
pub type Shared<T> = std::result::Result<T, Arc<crate::error::Error>>;

impl AppState {
    pub fn new(pool: PgPool, cfg: Config) -> Self {
        let embedder = crate::embed::shared(cfg.model_dir.as_deref());
        let results = Arc::new(crate::cache::ResultCache::new(
            cfg.result_cache_mb.saturating_mul(1 << 20),
        ));
        let redis = cfg.redis_url.as_deref().and_then(|url| {
            let timeout = Duration::from_millis(cfg.limits.redis_timeout_ms);
            crate::redis_conn::Redis::new(url, timeout)
                .map_err(|e| tracing::error!(error = %e, "going without Redis"))
                .ok()
                .map(Arc::new)
        });
        let limiter = Arc::new(crate::limits::Limiter::new(
            cfg.limits.clone(),
            redis.clone(),
        ));
        let shared_results = redis
            .filter(|_| results.enabled())
            .map(|r| Arc::new(crate::cache::SharedCache::new(r)));
        let bodies = http::BodyBudget::new(cfg.body_budget_mb.saturating_mul(1 << 20));
        Self {
            pool,
            cfg: Arc::new(cfg),
            indexer: None,
            keys: Arc::default(),
            pg: Arc::default(),
            bodies,
            embedder,
            jobs: Arc::default(),
            results,
            limiter,
            shared_results,
            searches: Arc::new(crate::coalesce::Coalescer::new("search")),
            embeddings: Arc::new(crate::coalesce::Coalescer::new("embedding")),
        }
    }

    /// The embedding model, or 422 `embedding_model_missing` saying how to
    /// install it.
    pub fn embedder(&self) -> crate::error::Result<&Arc<crate::embed::Embedder>> {
        self.embedder.as_ref().ok_or_else(|| {
            crate::error::Error::user(Code::EmbeddingModelMissing, crate::embed::MODEL_MISSING)
        })
    }

    /// The Postgres pool, or 503 at once while Postgres is known not to
    /// answer (see [`crate::pg_health`]).
    pub fn db(&self) -> crate::error::Result<&PgPool> {
        self.pg.check()?;
        Ok(&self.pool)
    }

    pub fn with_indexer(mut self, indexer: Arc<Indexer>) -> Self {
        self.indexer = Some(indexer);
        self
    }

    /// The indexer, or 503 when this process runs without one.
    pub fn indexer(&self) -> crate::error::Result<&Arc<Indexer>> {
        self.indexer.as_ref().ok_or_else(|| {
            crate::error::Error::user(Code::Unavailable, "this server runs without a search index")
        })
    }
}

/// The whole application, ready to serve or to test with `oneshot`.
pub fn app(state: AppState) -> Router {
    crate::telemetry::metrics();
    let bulk_limit = state.cfg.bulk_body_limit_bytes;
    let body_limit = state.cfg.body_limit_bytes;
    let timeout = Duration::from_millis(state.cfg.request_timeout_ms);
    let limited =
        |t: Duration| axum::middleware::from_fn(move |req, next| http::time_limit(t, req, next));
    // inside the time limit: a body waiting for its share of the budget
    // waits at most that long
    let bodies = state.bodies.clone();
    let budget = move |limit: usize| {
        let bodies = bodies.clone();
        axum::middleware::from_fn(move |req, next| {
            let bodies = bodies.clone();
            async move { bodies.hold(limit, req, next).await }
        })
    };
    // bulk loads stream large bodies: ten times as long
    let (bulk, mut api) = OpenApiRouter::new()
        .merge(contacts::bulk_router())
        .merge(companies::bulk_router())
        .merge(memories::bulk_router())
        .split_for_parts();
    let bulk = bulk
        .layer(DefaultBodyLimit::max(bulk_limit))
        .route_layer(budget(bulk_limit))
        .route_layer(limited(timeout * 10));
    let (rest, rest_api) = OpenApiRouter::new()
        .merge(health::router())
        .merge(tenants::router())
        .merge(contacts::router())
        .merge(companies::router())
        .merge(memories::router())
        .merge(search::router())
        .merge(meili::router())
        .merge(admin::router())
        .split_for_parts();
    let rest = rest
        .route_layer(budget(body_limit))
        .route_layer(limited(timeout));
    let (batch, batch_api) = batch::router().split_for_parts();
    api.merge(rest_api);
    api.merge(batch_api);
    let doc = openapi::document(api);
    let cors = http::cors(&state.cfg.cors_origins);
    let compression = http::compression(state.cfg.compress_min_bytes);
    let routes = Router::new()
        .merge(bulk)
        .merge(rest)
        .merge(console::router())
        .route(
            "/openapi.json",
            axum::routing::get(move || openapi::serve(doc)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit::rate_limit,
        ))
        .route_layer(axum::middleware::from_fn(track_metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(catch_panic())
        .with_state(state.clone());
    let state_for_mcp = state.clone();
    let state_for_pg = state.clone();
    // a batch runs its parts through `routes`, each as if sent alone
    let batch = batch
        .route_layer(axum::middleware::from_fn(track_metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(batch::Inner(routes.clone())))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    let mcp = mcp::service(state_for_mcp, routes.clone());
    let watched = state_for_pg.clone();
    // who answered: the shard and node, for the proxy's logs and clients
    let identity: Vec<(axum::http::HeaderName, axum::http::HeaderValue)> = [
        (http::SHARD, watched.cfg.shard.as_deref()),
        (http::NODE, watched.cfg.node.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, v)| Some((name, axum::http::HeaderValue::from_str(v?).ok()?)))
    .collect();
    Router::new()
        .merge(batch)
        .merge(mcp)
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(
            move |req: Request<axum::body::Body>, next: axum::middleware::Next| {
                let st = watched.clone();
                let identity = identity.clone();
                async move {
                    let mut resp = next.run(req).await;
                    for (name, v) in identity {
                        resp.headers_mut().insert(name, v);
                    }
                    // a 503 Postgres may explain: the probe finds out
                    if resp.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE
                        && !st.pg.is_down()
                    {
                        st.pg.suspect(&st.pool);
                    }
                    resp
                }
            },
        ))
        .layer(catch_panic())
        .layer(axum::middleware::from_fn(meili::errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get(&http::REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(|resp: &Response<_>, latency: Duration, _span: &Span| {
                    tracing::debug!(status = resp.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "response");
                }),
        )
        .layer(compression)
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn(http::request_id))
}

async fn route_not_found() -> axum::response::Response {
    error_response(
        Code::RouteNotFound,
        "no such route; check the method and path against the API reference (docs/API.md, or GET /openapi.json)",
    )
}

async fn method_not_allowed() -> axum::response::Response {
    error_response(
        Code::MethodNotAllowed,
        "this route does not take this HTTP method",
    )
}

/// A panicking handler answers 500 and is logged; the process goes on.
fn catch_panic()
-> CatchPanicLayer<impl tower_http::catch_panic::ResponseForPanic<ResponseBody = axum::body::Body>>
{
    CatchPanicLayer::custom(|_| {
        tracing::error!("a handler panicked");
        error_response(
            Code::Internal,
            "an internal error occurred; it has been logged",
        )
    })
}

/// A 201 with `Location`: where the created resource is read (or revoked).
pub fn created<T: serde::Serialize>(location: String, body: T) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = (axum::http::StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp
}

/// Request latency by route and status.
async fn track_metrics(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!("crmsearch_http_request_seconds", "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    resp
}
