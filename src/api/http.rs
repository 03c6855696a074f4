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
