//! The rate-limit layer: before a handler runs, its request is checked
//! against the budgets of its tenant, key and client address for its class
//! (see `crate::limits`). A tenant key is authenticated here, once, and
//! handed to the handler's extractor; a request the limiter cannot decide
//! (Redis down) passes. Allowed answers carry `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` of the tightest budget; a
//! refusal is a 429 `rate_limited` with the same and `Retry-After`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::{Principal, authenticate};
use crate::error::{Code, Error};
use crate::limits::{Class, Decision, LimitsConfig, Scope};

pub async fn rate_limit(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if !st.cfg.limits.enabled {
        return next.run(req).await;
    }
    let class = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| Class::of(req.method(), p.as_str()));
    let Some(class) = class else {
        return next.run(req).await;
    };
    let addr = client_addr(&st.cfg.limits, &req);
    let key = super::auth::bearer_key(req.headers()).filter(|k| !super::auth::is_master(&st, k));
    let principal = match key {
        // a bad key is the handler's to refuse, with its own error
        Some(key) => authenticate(&st.pool, &st.pg, &st.keys, key).await.ok(),
        None => None,
    };
    let budgets = st.limiter.budgets(
        class,
        principal
            .as_ref()
            .map(|p| (p.tenant_id, p.tier, p.key_prefix.as_str())),
        addr,
    );
    let decision = st.limiter.check(class, &budgets).await;
    let tier = principal.as_ref().map(|p| p.tier);
    if let Some(p) = principal {
        req.extensions_mut().insert::<Principal>(p);
    }
    match decision {
        None => next.run(req).await,
        Some(d) if d.allowed => {
            let mut resp = next.run(req).await;
            rate_headers(resp.headers_mut(), &d);
            resp
        }
        Some(d) => {
            let secs = whole_secs(d.retry_us).max(1);
            let whose = match (d.scope, tier) {
                (Scope::Tenant, Some(t)) => format!("this tenant's `{}` tier", t.as_str()),
                (Scope::Key, Some(t)) => format!("one key of the `{}` tier", t.as_str()),
                (Scope::Tenant | Scope::Key, None) | (Scope::Address, _) => {
                    "one client address".to_owned()
                }
            };
            let message = format!(
                "rate limit: {whose} allows {} {} requests a second (bursts of {}); retry after {secs} s",
                d.rate.per_second,
                class.as_str(),
                d.rate.burst
            );
            let mut resp = Error::User {
                code: Code::RateLimited,
                message,
                retry_after_secs: u64::try_from(secs).ok(),
            }
            .into_response();
            rate_headers(resp.headers_mut(), &d);
            resp
        }
    }
}

fn rate_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert("ratelimit-limit", HeaderValue::from(d.rate.burst));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(whole_secs(d.reset_us)));
}

/// Microseconds as whole seconds, rounded up.
fn whole_secs(us: i64) -> i64 {
    (us.max(0) + 999_999) / 1_000_000
}

/// The client's address: the last one in the trusted proxy's header when
/// configured and readable, else the connection's.
fn client_addr(cfg: &LimitsConfig, req: &Request) -> Option<IpAddr> {
    let from_proxy = cfg.trusted_proxy_header.as_ref().and_then(|name| {
        let value = req
            .headers()
            .get_all(name)
            .iter()
            .next_back()?
            .to_str()
            .ok()?;
        let last = value.rsplit(',').next()?.trim();
        last.parse::<IpAddr>()
            .ok()
            .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
    });
    from_proxy.or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}
