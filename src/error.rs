//! One error type for the whole service, and one table from its codes to
//! HTTP statuses. User errors carry a sentence a person can act on; internal
//! errors are logged in full and answered with none of their details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schema::FieldError;
use serde::Serialize;

/// Defines [`Code`], its wire names and [`Code::ALL`] from one list.
macro_rules! codes {
    ($($variant:ident => $name:literal,)*) => {
        /// Every error code the API can answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in declaration order (the OpenAPI document lists them).
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    MalformedJson => "malformed_json",
    InvalidBody => "invalid_body",
    UnknownField => "unknown_field",
    MissingField => "missing_field",
    InvalidValue => "invalid_value",
    InvalidFilter => "invalid_filter",
    InvalidFacet => "invalid_facet",
    InvalidSort => "invalid_sort",
    InvalidCursor => "invalid_cursor",
    InvalidId => "invalid_id",
    InvalidQuery => "invalid_query",
    InvalidEncoding => "invalid_encoding",
    EmbeddingModelMissing => "embedding_model_missing",
    UnsupportedMediaType => "unsupported_media_type",
    PayloadTooLarge => "payload_too_large",
    MissingApiKey => "missing_api_key",
    InvalidApiKey => "invalid_api_key",
    Forbidden => "forbidden",
    NotFound => "not_found",
    RouteNotFound => "route_not_found",
    MethodNotAllowed => "method_not_allowed",
    Conflict => "conflict",
    RateLimited => "rate_limited",
    IndexBehind => "index_behind",
    WrongShard => "wrong_shard",
    Unavailable => "unavailable",
    Internal => "internal",
}

impl Code {
    /// The one table from code to status. Exhaustive on purpose: a new code
    /// does not compile until it has a status.
    pub fn status(self) -> StatusCode {
        match self {
            Code::MalformedJson
            | Code::InvalidBody
            | Code::UnknownField
            | Code::MissingField
            | Code::InvalidId
            | Code::InvalidQuery
            | Code::InvalidFilter
            | Code::InvalidFacet
            | Code::InvalidSort
            | Code::InvalidCursor
            | Code::InvalidEncoding => StatusCode::BAD_REQUEST,
            Code::InvalidValue | Code::EmbeddingModelMissing => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::MissingApiKey | Code::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound | Code::RouteNotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::IndexBehind | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::WrongShard => StatusCode::MISDIRECTED_REQUEST,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the caller can fix.
    #[error("{message}")]
    User {
        code: Code,
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// Something we must fix; the caller learns only that it happened.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn user(code: Code, message: impl Into<String>) -> Self {
        Error::User {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A 503 with `Retry-After`: a dependency is down, retry shortly.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::User {
            code: Code::Unavailable,
            message: message.into(),
            retry_after_secs: Some(2),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::user(
            Code::NotFound,
            format!("no {what} with this id in your tenant"),
        )
    }

    /// A copy of an error shared by callers of one computation
    /// ([`crate::coalesce`]): a user error as it was, an internal one by its
    /// description.
    pub fn shared(e: &std::sync::Arc<Error>) -> Self {
        match &**e {
            Error::User {
                code,
                message,
                retry_after_secs,
            } => Error::User {
                code: *code,
                message: message.clone(),
                retry_after_secs: *retry_after_secs,
            },
            Error::Internal(inner) => Error::Internal(anyhow::anyhow!("{inner:#}")),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::User { code, .. } => *code,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<crate::search::SearchError> for Error {
    fn from(e: crate::search::SearchError) -> Self {
        use crate::search::{Invalid, SearchError};
        match e {
            SearchError::Invalid { what, message } => {
                let code = match what {
                    Invalid::Filter => Code::InvalidFilter,
                    Invalid::Facet => Code::InvalidFacet,
                    Invalid::Sort => Code::InvalidSort,
                    Invalid::Cursor => Code::InvalidCursor,
                    Invalid::Value => Code::InvalidValue,
                };
                Error::user(code, message)
            }
            SearchError::Index(e) => Error::Internal(e.into()),
        }
    }
}

impl From<indexer::Error> for Error {
    /// An outage the indexer met (Postgres, a full disk, a restart) is a
    /// 503 with the indexer's sentence; anything else is ours.
    fn from(e: indexer::Error) -> Self {
        match e {
            indexer::Error::Postgres(pg) => match Error::from(pg) {
                Error::Internal(inner) => {
                    tracing::warn!(error = %inner, "postgres failed");
                    Error::unavailable("the database is unavailable; retry shortly")
                }
                user => user,
            },
            e @ (indexer::Error::DiskFull(_)
            | indexer::Error::Locked(_)
            | indexer::Error::SlotInUse { .. }
            | indexer::Error::SlotClash { .. }) => {
                tracing::warn!(error = %e, "indexer unavailable");
                Error::unavailable(e.to_string())
            }
            e @ indexer::Error::Other(_) => Error::Internal(e.into()),
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::user(Code::InvalidValue, e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            // a unique key: name the field the way the client sent it
            if db.is_unique_violation() {
                let field = match db.constraint() {
                    Some(c) if c.contains("external_id") => "external_id",
                    _ => "id",
                };
                return Error::user(
                    Code::Conflict,
                    format!("another record of your tenant already has this `{field}`"),
                );
            }
            // the server is shutting down, starting, or the connection broke
            if db
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
            {
                tracing::warn!(error = %db, "postgres unavailable");
                return Error::unavailable("the database is unavailable; retry shortly");
            }
            if db.is_foreign_key_violation() {
                return Error::user(
                    Code::InvalidValue,
                    "`company_id` names no company of your tenant".to_string(),
                );
            }
        }
        if matches!(
            e,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
        ) {
            tracing::warn!(error = %e, "postgres unavailable");
            return Error::unavailable("the database is unavailable; retry shortly");
        }
        Error::Internal(e.into())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

/// The JSON error body, for callers outside the `Error` type (fallbacks),
/// with the headers its status asks for: `WWW-Authenticate` on a 401 (RFC
/// 6750), `Retry-After` on every 503 (2 s unless the error says).
pub fn error_response(code: Code, message: &str) -> Response {
    let body = Body {
        error: Inner {
            code: code.as_str(),
            message,
        },
    };
    let mut resp = (code.status(), axum::Json(body)).into_response();
    let h = resp.headers_mut();
    let www_authenticate = if matches!(code, Code::MissingApiKey) {
        Some("Bearer realm=\"crmsearch\"")
    } else if matches!(code, Code::InvalidApiKey) {
        Some("Bearer realm=\"crmsearch\", error=\"invalid_token\"")
    } else {
        None
    };
    if let Some(value) = www_authenticate {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    }
    if code.status() == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from(2));
    }
    resp
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::User {
                code,
                message,
                retry_after_secs,
            } => {
                let mut resp = error_response(code, &message);
                if let Some(secs) = retry_after_secs {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                resp
            }
            Error::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                error_response(
                    Code::Internal,
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}
