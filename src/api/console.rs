//! The search console at `GET /`: a page built on InstantSearch with
//! instant-meilisearch (sources in `console/`, built from npm packages with
//! a lockfile), embedded at build time and served as it is — no CDN, nothing
//! fetched at run time. It talks to `/multi-search` and `/v1/...` with the
//! key the user pastes.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// The built files.
pub struct Console {
    pub index: &'static [u8],
    pub js: &'static [u8],
    pub css: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/console.rs"));

/// The page and its assets (not in the OpenAPI document: not an API).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(js))
        .route("/console/app.css", get(css))
}

/// Scripts and styles from this origin only; requests to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn index() -> Response {
    match CONSOLE {
        Some(c) => (
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (CACHE_CONTROL, "no-cache"),
                (CONTENT_SECURITY_POLICY, CSP),
            ],
            c.index,
        )
            .into_response(),
        None => Html(
            "<!doctype html><title>crmsearch</title><h1>crmsearch</h1>\
             <p>This binary was built without its search console. Run <code>scripts/setup</code> \
             (it builds <code>console/dist</code> from npm packages) and build again.</p>\
             <p>The API is described at <a href=\"/openapi.json\">/openapi.json</a>.</p>",
        )
        .into_response(),
    }
}

async fn js() -> Response {
    asset(CONSOLE.map(|c| c.js), "text/javascript; charset=utf-8")
}

async fn css() -> Response {
    asset(CONSOLE.map(|c| c.css), "text/css; charset=utf-8")
}

fn asset(body: Option<&'static [u8]>, content_type: &'static str) -> Response {
    match body {
        Some(b) => (
            [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
            b,
        )
            .into_response(),
        None => crate::error::error_response(
            crate::error::Code::RouteNotFound,
            "this binary was built without its search console (run scripts/setup)",
        ),
    }
}
