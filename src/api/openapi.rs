//! `GET /openapi.json`: the OpenAPI 3.1 description of every route,
//! generated from the handlers' `#[utoipa::path]` attributes and the types'
//! `ToSchema` derives as the routers register them (utoipa-axum's
//! `OpenApiRouter`: a route is served only through its description, so the
//! two cannot drift). [`finish`] adds what every route shares: the bearer
//! key, the error body with every code, and the statuses every route can
//! answer (401 and 403 by key, 429 by the rate limiter, 503 when a
//! dependency is down, and `default` for the rest, always [`ErrorBody`]).
//!
//! The types below describe answers that handlers build as JSON objects;
//! schemathesis (`scripts/test`) checks every answer against them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::ToSchema;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
};

use crate::error::Code;

/// `{"error": {"code", "message"}}`: every error answer.
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    #[schema(inline)]
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs.
    #[schema(schema_with = code_schema)]
    pub code: String,
    /// What to do about it, for people.
    pub message: String,
}

fn code_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
}

/// `/healthz`.
#[derive(ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// `/readyz`: `ready`, or `not_ready` with a `reason` (and the index's
/// positions and pipeline state when it has one).
#[derive(ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: String,
    pub reason: Option<String>,
    pub postgres: Option<String>,
    pub applied_lsn: Option<String>,
    pub server_lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub stalled_ms: Option<u64>,
    pub pipeline: Option<String>,
    pub restarts: Option<u64>,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
}

/// What a delete answers.
#[derive(ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
    /// The commit position, for `min_lsn`.
    pub lsn: String,
}

/// The OpenAPI document of `api`, finished ([`finish`]) and serialised once.
pub fn document(api: OpenApi) -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut api = api;
        finish(&mut api);
        serde_json::to_vec(&api).unwrap_or_default()
    })
}

/// The route serving `document`.
pub async fn serve(doc: &'static [u8]) -> axum::response::Response {
    ([(CONTENT_TYPE, "application/json")], doc).into_response()
}

/// What every route shares, added to the document the routers made.
pub fn finish(api: &mut OpenApi) {
    api.info = InfoBuilder::new()
        .title("crmsearch")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Search and vector retrieval for CRM data. Postgres is the source of truth; the \
             index follows it by logical replication. Every request but the health checks \
             carries `Authorization: Bearer KEY`; the tenant comes from the key.",
        ))
        .build();
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("a tenant's key (or the master key where it is named)"))
                .build(),
        ),
    );
    components.schemas.insert(
        "Error".into(),
        <ErrorBody as utoipa::PartialSchema>::schema(),
    );
    components.schemas.insert(
        "MeiliError".into(),
        <super::meili::MeiliError as utoipa::PartialSchema>::schema(),
    );
    let error = |description: &str, headers: &[(&str, &str)]| {
        let mut r = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        );
        for (name, about) in headers {
            r = r.header(
                *name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(*about))
                    .build(),
            );
        }
        RefOr::T(r.build())
    };
    let shared: BTreeMap<&str, RefOr<utoipa::openapi::Response>> = BTreeMap::from([
        (
            "401",
            error(
                "the key is missing, unknown or revoked (`missing_api_key`, `invalid_api_key`)",
                &[("WWW-Authenticate", "`Bearer`")],
            ),
        ),
        (
            "403",
            error(
                "the key's role or tenant may not do this (`forbidden`)",
                &[],
            ),
        ),
        (
            "429",
            error(
                "a rate limit is spent (`rate_limited`)",
                &[
                    ("Retry-After", "seconds until the budget allows the request"),
                    ("RateLimit-Limit", "the budget's burst"),
                    ("RateLimit-Remaining", "requests left now"),
                    ("RateLimit-Reset", "seconds until the budget is full again"),
                ],
            ),
        ),
        (
            "503",
            error(
                "Postgres or the index is unavailable or behind (`unavailable`, `index_behind`), or the request ran out of time; retry",
                &[("Retry-After", "seconds to wait")],
            ),
        ),
        (
            "default",
            error(
                "any other error; `code` says which (400, 404, 405, 409, 413, 415, 421 `wrong_shard` on a node of another tenant shard, 422)",
                &[],
            ),
        ),
    ]);
    let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
    for (path, item) in &mut api.paths.paths {
        let ops: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            let keyed = path.starts_with("/v1/") || super::meili::is_meili_path(path);
            if keyed && op.security.is_none() {
                op.security = Some(vec![bearer.clone()]);
            }
            let meili = super::meili::is_meili_path(path);
            for (status, response) in &shared {
                if !keyed && !meili && matches!(*status, "401" | "403" | "429") {
                    continue;
                }
                let mut response = response.clone();
                if meili && let RefOr::T(r) = &mut response {
                    // Meilisearch's error shape on its routes
                    for content in r.content.values_mut() {
                        content.schema = Some(Ref::from_schema_name("MeiliError").into());
                    }
                }
                op.responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert(response);
            }
        }
    }
}
