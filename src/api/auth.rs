//! Who is calling: a tenant key (`Principal`) or the master key.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::auth::{Principal, authenticate, constant_time_eq};
use crate::error::{Code, Error};

/// The key of a header value reading `Bearer KEY`.
fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty()).then(|| key.trim())
}

/// The key of `Authorization: Bearer KEY`, if the header reads so.
pub(super) fn bearer_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    parse_bearer(headers.get(AUTHORIZATION)?.to_str().ok()?)
}

fn bearer(parts: &Parts) -> Result<&str, Error> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        Error::user(
            Code::MissingApiKey,
            "send your API key as `Authorization: Bearer KEY`",
        )
    })?;
    let value = header.to_str().map_err(|_| {
        Error::user(
            Code::MissingApiKey,
            "the Authorization header is not plain text; send `Bearer KEY`",
        )
    })?;
    parse_bearer(value).ok_or_else(|| {
        Error::user(
            Code::MissingApiKey,
            "the Authorization header must read `Bearer KEY`",
        )
    })
}

pub(super) fn is_master(state: &AppState, key: &str) -> bool {
    state
        .cfg
        .master_key
        .as_deref()
        .is_some_and(|m| constant_time_eq(m.as_bytes(), key.as_bytes()))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        // authenticated already by the rate-limit layer
        if let Some(p) = parts.extensions.get::<Principal>() {
            let p = p.clone();
            on_this_shard(state, &p).await?;
            return Ok(p);
        }
        let key = bearer(parts)?;
        if is_master(state, key) {
            return Err(Error::user(
                Code::Forbidden,
                "the master key only creates tenants and keys; use a key of the tenant",
            ));
        }
        let p = authenticate(&state.pool, &state.pg, &state.keys, key).await?;
        on_this_shard(state, &p).await?;
        Ok(p)
    }
}

/// A node of a tenant shard answers its own tenants only: another's would
/// look empty here. nginx picks the shard from the key; a request that
/// lands elsewhere means the routes are stale.
///
/// A tenant this node has not heard of yet may have just been placed here
/// (created a moment ago): Postgres says, and the index catches up first.
async fn on_this_shard(state: &AppState, p: &Principal) -> Result<(), Error> {
    use indexer::pipeline::shard::Serves;
    let Some(ix) = state.indexer.as_ref() else {
        return Ok(());
    };
    let Some(shard) = ix.shard.as_ref() else {
        return Ok(());
    };
    let mut serves = shard.serves(p.tenant_id);
    if serves == Serves::No(None) {
        let placed: Option<bool> = sqlx::query_scalar(
            "SELECT shard = $2 OR also_on IS NOT DISTINCT FROM $2 FROM crmsearch_tenant_shards WHERE tenant_id = $1",
        )
        .bind(p.tenant_id)
        .bind(&shard.name)
        .fetch_optional(state.db()?)
        .await?;
        if placed == Some(true) {
            let at = indexer::wal::position(state.db()?).await?;
            ix.wait_for(at, std::time::Duration::from_secs(5)).await;
            serves = shard.serves(p.tenant_id);
        }
    }
    match serves {
        Serves::Yes => Ok(()),
        Serves::Loading => Err(Error::user(
            Code::Unavailable,
            format!(
                "this tenant is still loading on shard {}; retry shortly",
                shard.name
            ),
        )),
        Serves::No(Some(other)) => Err(Error::user(
            Code::WrongShard,
            format!(
                "this tenant is served by shard {other}, not by this node's shard {}: the proxy's routes are stale \
                 (`crmsearch shard routes` writes them)",
                shard.name
            ),
        )),
        Serves::No(None) => Err(Error::user(
            Code::WrongShard,
            format!(
                "this tenant is placed on no shard, so no shard serves it; place it with \
                 `crmsearch shard move TENANT --to SHARD` (this node serves shard {})",
                shard.name
            ),
        )),
    }
}

/// The caller holds `CRMSEARCH_MASTER_KEY`.
pub struct Master;

impl FromRequestParts<AppState> for Master {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let key = bearer(parts)?;
        if state.cfg.master_key.is_none() {
            return Err(Error::user(
                Code::Forbidden,
                "no master key is configured; set CRMSEARCH_MASTER_KEY or use `crmsearch tenant create`",
            ));
        }
        if is_master(state, key) {
            return Ok(Master);
        }
        // a valid tenant key is authenticated but not allowed here
        authenticate(&state.pool, &state.pg, &state.keys, key).await?;
        Err(Error::user(
            Code::Forbidden,
            "creating tenants needs the master key",
        ))
    }
}

/// Either kind of caller, for routes both may use.
pub enum Caller {
    Master,
    Tenant(Principal),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            let p = p.clone();
            on_this_shard(state, &p).await?;
            return Ok(Caller::Tenant(p));
        }
        let key = bearer(parts)?;
        if is_master(state, key) {
            return Ok(Caller::Master);
        }
        let p = authenticate(&state.pool, &state.pg, &state.keys, key).await?;
        on_this_shard(state, &p).await?;
        Ok(Caller::Tenant(p))
    }
}

/// Extractors that authenticate and check the role before anything else of
/// the request (its body included) is looked at. A handler's signature says
/// which role it needs.
macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Error;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Error> {
                let p = Principal::from_request_parts(parts, state).await?;
                p.require($role)?;
                Ok($name(p))
            }
        }
    };
}

role_extractor!(
    SearchKey,
    crate::auth::Role::Search,
    "A key with the `search` role or above."
);
role_extractor!(
    AgentKey,
    crate::auth::Role::Agent,
    "A key with the `agent` role or above."
);
role_extractor!(
    WriteKey,
    crate::auth::Role::Write,
    "A key with the `write` role or above."
);
role_extractor!(
    AdminKey,
    crate::auth::Role::Admin,
    "A key with the `admin` role."
);
