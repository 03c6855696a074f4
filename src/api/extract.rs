//! Extractors that turn every malformed request into our error codes.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{Code, Error};

/// Reads the body as bytes, mapping an oversize body to 413.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::user(
                Code::PayloadTooLarge,
                "the request body is larger than this endpoint accepts; split it or raise the limit",
            )
        } else {
            Error::user(Code::InvalidBody, format!("cannot read the request body: {rej}"))
        }
    })
}

/// A JSON body: UTF-8, no NUL characters, unknown fields refused by name,
/// wrong types named by their path.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            if !(ct.starts_with("application/json") || ct.contains("+json")) {
                return Err(Error::user(
                    Code::UnsupportedMediaType,
                    format!(
                        "this endpoint takes JSON: send the header `Content-Type: application/json` (got `{ct}`)"
                    ),
                ));
            }
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses one JSON document with the same rules as the [`Json`] extractor.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::user(
            Code::InvalidEncoding,
            format!("the body is not valid UTF-8 ({e})"),
        )
    })?;
    if text.trim().is_empty() {
        return Err(Error::user(
            Code::MalformedJson,
            "the body is empty; send a JSON object",
        ));
    }
    if !text.trim_start().starts_with('{') {
        // serde would read a struct from an array; every body here is an object
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Error::user(
                Code::InvalidBody,
                "the body must be a JSON object (`{...}`)",
            ),
            Err(e) => Error::user(
                Code::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            ),
        });
    }
    reject_nul(text)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    // nothing but whitespace may follow the document
    de.end().map_err(|e| {
        Error::user(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// Postgres cannot store NUL characters; refuse them up front, by their JSON
/// escape (a raw NUL is already invalid JSON).
fn reject_nul(text: &str) -> Result<(), Error> {
    if text.to_ascii_lowercase().contains("\\u0000") {
        // confirm it is an escape, not an escaped backslash followed by "u0000"
        let real = serde_json::from_str::<serde_json::Value>(text)
            .map(|v| contains_nul(&v))
            .unwrap_or(true);
        if real {
            return Err(Error::user(
                Code::InvalidValue,
                "text values must not contain the NUL character (\\u0000)",
            ));
        }
    }
    Ok(())
}

fn contains_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(contains_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            false
        }
    }
}

/// Maps a serde error to our codes, naming the field by its path.
pub fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    use serde_json::error::Category;
    let path = e.path().to_string();
    let inner = e.inner();
    let msg = inner.to_string();
    // serde_json appends " at line 1 column 9": keep it for syntax errors only
    let short = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::user(
            Code::MalformedJson,
            format!("the body is not valid JSON: {msg}"),
        ),
        Category::Data => {
            let at = if path == "." {
                String::new()
            } else {
                format!(" (at `{path}`)")
            };
            let code = if short.starts_with("unknown field") {
                Code::UnknownField
            } else if short.starts_with("missing field") {
                Code::MissingField
            } else {
                Code::InvalidBody
            };
            Error::user(code, format!("{short}{at}"))
        }
    }
}

/// A UUID path segment (`/v1/contacts/{id}`).
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| Error::user(Code::InvalidId, format!("bad path parameter: {e}")))?;
        Uuid::parse_str(&raw).map(Id).map_err(|_| {
            let shown: String = raw.chars().take(64).collect();
            Error::user(
                Code::InvalidId,
                format!("`{shown}` is not a UUID like 6f1c1b2e-8a7d-4c53-9a36-0b8f5d2f1e3a"),
            )
        })
    }
}
