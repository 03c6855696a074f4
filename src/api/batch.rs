//! `POST /v1/batch`: up to [`MAX_REQUESTS`] JSON requests in one round trip
//! (a dashboard's searches, stats and cards), run in parallel through the
//! same router as if each had come alone: under the caller's key, through
//! the rate limiter (each counts), with its own status and body.
//!
//! Bulk loads and the batch route itself are refused inside a batch: their
//! bodies are not JSON documents and their time limits are their own.

use std::net::SocketAddr;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Json;
use super::http::REQUEST_ID;
use crate::auth::Principal;
use crate::error::{Code, Error, Result};

/// Sub-requests per batch, at most.
pub const MAX_REQUESTS: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[schema(max_items = 20)]
    pub requests: Vec<SubRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubRequest {
    /// GET, POST, PATCH or DELETE.
    #[schema(pattern = "^(GET|POST|PATCH|DELETE|get|post|patch|delete)$")]
    pub method: String,
    /// A path under `/v1/`, with its query string if any (not a bulk load
    /// or a batch).
    #[schema(pattern = "^/v1/[A-Za-z0-9/_.~%?&=,:+-]*$")]
    pub path: String,
    /// The JSON body, for POST and PATCH.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubResponse {
    pub status: u16,
    /// The answer's JSON (or its text, for an answer that is not JSON).
    #[schema(value_type = Object)]
    pub body: Value,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer built as JSON")]
struct BatchAnswer {
    /// In the order of `requests`.
    results: Vec<SubResponse>,
}

/// The router every part of a batch goes through.
#[derive(Clone)]
pub struct Inner(pub Router);

/// The batch route; its parts go through the router of the [`Inner`]
/// extension (with its rate limits, metrics and time limits; not the outer
/// layers: compression and CORS apply to the batch's own answer).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(batch))
}

/// Runs up to 20 requests at once, in parallel, each as if sent alone
/// under the caller's key; each answer has its own status.
#[utoipa::path(post, path = "/v1/batch", tag = "batch", request_body = Batch,
    responses((status = 200, description = "one result per request, in order", body = BatchAnswer)))]
async fn batch(
    _caller: Principal,
    Extension(Inner(inner)): Extension<Inner>,
    parts: Parts,
    Json(batch): Json<Batch>,
) -> Result<impl IntoResponse> {
    run(inner, parts, batch).await
}

/// What a sub-request may be, checked before any runs: a bad one refuses
/// the whole batch (nothing half-done).
fn check(i: usize, r: &SubRequest) -> Result<Method> {
    let method = match r.method.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            return Err(Error::user(
                Code::InvalidValue,
                format!("requests[{i}].method `{other}` is not one of GET, POST, PATCH, DELETE"),
            ));
        }
    };
    let path = r.path.split('?').next().unwrap_or_default();
    if !path.starts_with("/v1/") || r.path.parse::<axum::http::Uri>().is_err() {
        return Err(Error::user(
            Code::InvalidValue,
            format!(
                "requests[{i}].path `{}` must be a path under /v1/, such as /v1/contacts/search?q=anna",
                r.path
            ),
        ));
    }
    if path == "/v1/batch" || path.ends_with("/bulk") {
        return Err(Error::user(
            Code::InvalidValue,
            format!(
                "requests[{i}].path `{path}` cannot run inside a batch: send batches and bulk loads on their own"
            ),
        ));
    }
    if r.body.is_some() && !matches!(method, Method::POST | Method::PATCH) {
        return Err(Error::user(
            Code::InvalidValue,
            format!("requests[{i}] has a body, but {method} takes none"),
        ));
    }
    Ok(method)
}

/// Headers that belong to the batch's own body and answer, not to its parts.
const OWN_HEADERS: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::ACCEPT_ENCODING,
    REQUEST_ID,
];

async fn run(inner: Router, parts: Parts, batch: Batch) -> Result<impl IntoResponse> {
    if batch.requests.len() > MAX_REQUESTS {
        return Err(Error::user(
            Code::InvalidValue,
            format!(
                "a batch holds at most {MAX_REQUESTS} requests (got {}); split it",
                batch.requests.len()
            ),
        ));
    }
    let methods = batch
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| check(i, r))
        .collect::<Result<Vec<_>>>()?;
    let id = parts
        .headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let headers = caller_headers(&parts);
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let tasks: Vec<_> = batch
        .requests
        .into_iter()
        .zip(methods)
        .enumerate()
        .map(|(i, (r, method))| {
            let req = as_sent_alone(
                &headers,
                peer,
                method,
                &r.path,
                r.body.as_ref(),
                &format!("{id}.{i}"),
            );
            let inner = inner.clone();
            // the part's log lines under the batch's request span
            let span = tracing::info_span!("part", index = i, path = %r.path);
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let (status, body) = send_inner(inner, req).await?;
                    Ok::<_, Error>(SubResponse { status, body })
                },
                span,
            ))
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        let r = t
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("a batch request failed: {e}")))??;
        results.push(r);
    }
    Ok(axum::Json(serde_json::json!({ "results": results })))
}

/// The caller's headers, less those that describe its own request (for
/// requests made on its behalf).
pub(super) fn caller_headers(parts: &Parts) -> axum::http::HeaderMap {
    let mut headers = parts.headers.clone();
    for h in &OWN_HEADERS {
        headers.remove(h);
    }
    headers
}

/// A request to the API as if the caller had sent it alone: its headers
/// (its key), its address, a JSON body.
pub(super) fn as_sent_alone(
    headers: &axum::http::HeaderMap,
    peer: Option<ConnectInfo<SocketAddr>>,
    method: Method,
    path: &str,
    body: Option<&Value>,
    request_id: &str,
) -> Request<Body> {
    let mut req = Request::new(match body {
        Some(b) => Body::from(b.to_string()),
        None => Body::empty(),
    });
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap_or_default();
    *req.headers_mut() = headers.clone();
    if body.is_some() {
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some(peer) = peer {
        req.extensions_mut().insert(peer);
    }
    req
}

/// Runs a request through the API and gives its status and JSON answer.
pub(super) async fn send_inner(inner: Router, req: Request<Body>) -> Result<(u16, Value)> {
    let resp = match inner.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("reading an answer: {e}")))?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
}
