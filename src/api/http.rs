//! What every answer gets whatever its route: a request id, compression,
//! CORS for the browser console and other web front ends, and a time limit.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::Error;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The tenant shard of the node that answered (`CRMSEARCH_SHARD`).
pub const SHARD: HeaderName = HeaderName::from_static("x-crmsearch-shard");
/// The node that answered (`CRMSEARCH_NODE`).
pub const NODE: HeaderName = HeaderName::from_static("x-crmsearch-node");

/// The request's id: the caller's `x-request-id` when it is a sane token
/// (1–128 visible ASCII characters), else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

fn sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
}

/// Takes or makes the request id, puts it in the request (for the log
/// span and handlers) and echoes it on the answer.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| sane(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a uuid is a header")
        });
    req.headers_mut().insert(REQUEST_ID, id.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

/// Answers 503 (with `Retry-After`) a request still running after `limit`;
/// dropping it rolls back a transaction it had open.
pub async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics::counter!("crmsearch_http_timeouts_total").increment(1);
            Error::unavailable(format!(
                "the request took longer than {} ms and was stopped; retry it, or ask for less at once",
                limit.as_millis()
            ))
            .into_response()
        }
    }
}

/// The request bodies held in memory at once, bounded: a request with a
/// body takes its length (sent without one, its route's limit) from this
/// budget before the body is read and gives it back once answered. A
/// request that cannot get it waits, within its time limit (then 503):
/// many large bodies at once queue instead of each being held.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    kib: std::sync::Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        Self {
            kib: std::sync::Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Bytes held by bodies being read or handled now.
    pub fn in_use(&self) -> usize {
        (self.total_kib as usize - self.kib.available_permits()) * 1024
    }

    /// Runs `req` once its body's share of the budget is free; `limit`:
    /// the route's largest body.
    pub async fn hold(&self, limit: usize, req: Request, next: Next) -> Response {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let bytes = match length {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(limit),
            None if req.headers().contains_key(header::TRANSFER_ENCODING) => limit,
            None => 0,
        };
        if bytes == 0 {
            return next.run(req).await;
        }
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        let Ok(_held) = self.kib.acquire_many(kib).await else {
            return next.run(req).await;
        };
        metrics::gauge!("crmsearch_request_bodies_bytes").set(self.in_use() as f64);
        let resp = next.run(req).await;
        drop(_held);
        metrics::gauge!("crmsearch_request_bodies_bytes").set(self.in_use() as f64);
        resp
    }
}

/// gzip, br and zstd as `Accept-Encoding` asks, for answers of at least
/// `min_bytes` (not for images or event streams).
pub fn compression(min_bytes: u16) -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .zstd(true)
        .compress_when(DefaultPredicate::new().and(SizeAbove::new(min_bytes)))
}

/// CORS for `origins` (`*`: any); `None` without origins (browsers on
/// other origins are then refused by their own rules).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let exposed = [
        "x-request-id",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "retry-after",
        "location",
    ]
    .map(HeaderName::from_static);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                REQUEST_ID,
            ])
            .expose_headers(exposed)
            .max_age(Duration::from_secs(600)),
    )
}
