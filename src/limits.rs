//! Rate limits: budgets per tenant, per key and per client address, for each
//! class of request, by the generic cell rate algorithm (GCRA).
//!
//! A budget is a rate and a burst: `per_second` requests a second on
//! average, up to `burst` at once after a quiet spell. GCRA keeps one number
//! per budget, the theoretical arrival time (TAT) of the next request when
//! requests arrive exactly at the rate: a request is let through if the TAT
//! it would move to is at most `burst` intervals ahead of now. It is a
//! sliding window without buckets or counters to reset, one integer per
//! budget, and it answers how long to wait exactly.
//!
//! Every request is checked against all of its budgets at once (its
//! tenant's, its key's and its address's, for its class): it passes only if
//! each has room, and only then is each charged, so a request refused by one
//! budget costs the others nothing. With Redis (`REDIS_URL`) the decision is
//! one Lua script over all budgets, so that every server process sharing the
//! Redis shares the budgets; the script takes Redis's own clock, so the
//! servers' clocks do not matter. Without Redis the same arithmetic runs in
//! the process. When Redis is down or slower than `redis_timeout_ms`, the
//! request passes (fail open): a limit is protection, never a reason to fail
//! a request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::redis_conn::Redis;

/// A tenant's tier: which budgets its requests draw on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Basic,
    Pro,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Basic, Tier::Pro, Tier::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Basic => "basic",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What a request costs: each class has budgets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Searches, autocomplete, stats and reads.
    Search,
    /// Creates, updates and deletes, one at a time; admin operations.
    Write,
    /// Bulk loads.
    Bulk,
    /// Memories: each may embed a text.
    Memory,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Search, Class::Write, Class::Bulk, Class::Memory];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Search => "search",
            Class::Write => "write",
            Class::Bulk => "bulk",
            Class::Memory => "memory",
        }
    }

    /// The class of a request to `route` (its matched path); `None` for
    /// health checks and metrics, which are never limited.
    pub fn of(method: &axum::http::Method, route: &str) -> Option<Class> {
        use axum::http::Method;
        if matches!(route, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
            || route == "/"
            || route.starts_with("/console/")
        {
            return None;
        }
        if route.ends_with("/bulk") || route.ends_with("/export") {
            return Some(Class::Bulk);
        }
        if route.starts_with("/v1/memories") || route.ends_with("/context") {
            return Some(Class::Memory);
        }
        let read = method == Method::GET
            || method == Method::HEAD
            || route.ends_with("/search")
            || route == "/multi-search";
        Some(if read { Class::Search } else { Class::Write })
    }
}

/// A budget: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

const fn rate(per_second: f64, burst: u32) -> Rate {
    Rate { per_second, burst }
}

impl Rate {
    /// Microseconds between requests at the rate, and the burst tolerance.
    fn gcra(self) -> (i64, i64) {
        let interval = (1e6 / self.per_second).round().max(1.0) as i64;
        (interval, interval.saturating_mul(i64::from(self.burst)))
    }

    fn validate(self, what: &str) -> anyhow::Result<()> {
        if !(self.per_second.is_finite() && self.per_second >= 0.001 && self.per_second <= 1e6)
            || self.burst == 0
        {
            anyhow::bail!(
                "rate_limits: {what} must have per_second between 0.001 and 1000000 and a burst of at least 1; got {} a second, burst {}",
                self.per_second,
                self.burst
            );
        }
        Ok(())
    }
}

/// One budget for each class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budgets {
    pub search: Rate,
    pub write: Rate,
    pub bulk: Rate,
    pub memory: Rate,
}

impl Budgets {
    pub fn of(&self, class: Class) -> Rate {
        match class {
            Class::Search => self.search,
            Class::Write => self.write,
            Class::Bulk => self.bulk,
            Class::Memory => self.memory,
        }
    }

    fn scaled(self, k: f64) -> Self {
        let s = |r: Rate| {
            rate(
                r.per_second * k,
                ((f64::from(r.burst) * k).ceil() as u32).max(1),
            )
        };
        Self {
            search: s(self.search),
            write: s(self.write),
            bulk: s(self.bulk),
            memory: s(self.memory),
        }
    }

    fn overlay(mut self, file: &BudgetsFile) -> Self {
        for (slot, over) in [
            (&mut self.search, file.search),
            (&mut self.write, file.write),
            (&mut self.bulk, file.bulk),
            (&mut self.memory, file.memory),
        ] {
            if let Some(r) = over {
                *slot = r;
            }
        }
        self
    }

    fn validate(&self, what: &str) -> anyhow::Result<()> {
        for class in Class::ALL {
            self.of(class)
                .validate(&format!("{what}.{}", class.as_str()))?;
        }
        Ok(())
    }
}

/// A tier's budgets: the whole tenant's, and each of its keys'.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TierBudgets {
    pub tenant: Budgets,
    pub key: Budgets,
}

/// The rate-limit settings in force.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub enabled: bool,
    /// By tier, in [`Tier::ALL`] order.
    pub tiers: [TierBudgets; 4],
    /// Each client address's budgets, whoever's key it sends.
    pub ip: Budgets,
    /// A header the proxy in front sets to the client's address (its last
    /// address is taken: the one the proxy appended); unset: the address of
    /// the connection.
    pub trusted_proxy_header: Option<axum::http::HeaderName>,
    /// Longer than this for a Redis answer: the request passes unlimited.
    pub redis_timeout_ms: u64,
}

/// The free tier's tenant budgets; the others are multiples of them.
const FREE: Budgets = Budgets {
    search: rate(20.0, 40),
    write: rate(10.0, 20),
    bulk: rate(0.2, 2),
    memory: rate(10.0, 20),
};

impl Default for LimitsConfig {
    fn default() -> Self {
        let tier = |k: f64| TierBudgets {
            tenant: FREE.scaled(k),
            // one key may take half of its tenant's budget
            key: FREE.scaled(k / 2.0),
        };
        Self {
            enabled: true,
            tiers: [tier(1.0), tier(5.0), tier(25.0), tier(100.0)],
            ip: Budgets {
                search: rate(1000.0, 2000),
                write: rate(500.0, 1000),
                bulk: rate(5.0, 20),
                memory: rate(500.0, 1000),
            },
            trusted_proxy_header: None,
            redis_timeout_ms: 50,
        }
    }
}

/// The `[rate_limits]` section of the config file; what it leaves out keeps
/// its default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub enabled: Option<bool>,
    pub trusted_proxy_header: Option<String>,
    pub redis_timeout_ms: Option<u64>,
    pub ip: Option<BudgetsFile>,
    #[serde(default)]
    pub tiers: HashMap<Tier, TierFile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub tenant: Option<BudgetsFile>,
    pub key: Option<BudgetsFile>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsFile {
    pub search: Option<Rate>,
    pub write: Option<Rate>,
    pub bulk: Option<Rate>,
    pub memory: Option<Rate>,
}

impl LimitsConfig {
    /// The defaults with `file` and then the flags laid over them.
    pub fn resolve(
        file: &LimitsFile,
        enabled: Option<bool>,
        header: Option<String>,
        redis_timeout_ms: Option<u64>,
    ) -> anyhow::Result<Self> {
        let mut cfg = Self::default();
        cfg.enabled = enabled.or(file.enabled).unwrap_or(cfg.enabled);
        cfg.redis_timeout_ms = redis_timeout_ms
            .or(file.redis_timeout_ms)
            .unwrap_or(cfg.redis_timeout_ms);
        if let Some(ip) = &file.ip {
            cfg.ip = cfg.ip.overlay(ip);
        }
        for (tier, over) in &file.tiers {
            let b = &mut cfg.tiers[*tier as usize];
            if let Some(t) = &over.tenant {
                b.tenant = b.tenant.overlay(t);
            }
            if let Some(k) = &over.key {
                b.key = b.key.overlay(k);
            }
        }
        if let Some(h) = header
            .or_else(|| file.trusted_proxy_header.clone())
            .filter(|h| !h.is_empty())
        {
            cfg.trusted_proxy_header = Some(h.parse().map_err(|_| {
                anyhow::anyhow!(
                    "trusted_proxy_header (CRMSEARCH_TRUSTED_PROXY_HEADER) `{h}` is not a header name like x-forwarded-for"
                )
            })?);
        }
        if !(1..=10_000).contains(&cfg.redis_timeout_ms) {
            anyhow::bail!(
                "redis_timeout_ms (CRMSEARCH_REDIS_TIMEOUT_MS) must be between 1 and 10000; got {}",
                cfg.redis_timeout_ms
            );
        }
        cfg.ip.validate("ip")?;
        for tier in Tier::ALL {
            let b = &cfg.tiers[tier as usize];
            b.tenant
                .validate(&format!("tiers.{}.tenant", tier.as_str()))?;
            b.key.validate(&format!("tiers.{}.key", tier.as_str()))?;
        }
        Ok(cfg)
    }

    pub fn tier(&self, tier: Tier) -> &TierBudgets {
        &self.tiers[tier as usize]
    }
}

/// Whose budget: what a 429 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Key,
    Address,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Key => "key",
            Scope::Address => "address",
        }
    }
}

/// One budget a request draws on.
#[derive(Debug, Clone)]
pub struct Budget {
    pub scope: Scope,
    /// Names the budget's state (tenant id, key prefix or address).
    pub id: String,
    pub rate: Rate,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The budget the headers describe: the one that refused, or the one
    /// with the least room left.
    pub scope: Scope,
    pub rate: Rate,
    pub remaining: u64,
    /// Microseconds until the budget is whole again.
    pub reset_us: i64,
    /// Microseconds until the request would pass (0 when allowed).
    pub retry_us: i64,
}

/// What [`decide`] (or its Lua twin) answers for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    /// The budget to report: the one that refused, or the tightest.
    index: usize,
    remaining: i64,
    reset_us: i64,
    retry_us: i64,
}

/// The arithmetic, shared by the in-process limiter and mirrored by the Lua
/// script: given each budget's stored TAT (`None`: never used or expired),
/// whether the request passes, which budget to report, and the TATs to store
/// when it passes.
fn decide(now: i64, tats: &[Option<i64>], params: &[(i64, i64)]) -> (Outcome, Vec<i64>) {
    let mut new_tats = Vec::with_capacity(tats.len());
    let mut refused: Option<(usize, i64)> = None;
    let mut tightest: Option<(usize, i64)> = None;
    for (i, (tat, &(interval, tolerance))) in tats.iter().zip(params).enumerate() {
        let new_tat = tat.unwrap_or(now).max(now) + interval;
        let ahead = new_tat - now;
        if ahead > tolerance {
            let wait = ahead - tolerance;
            if refused.is_none_or(|(_, w)| wait > w) {
                refused = Some((i, wait));
            }
        }
        let remaining = (tolerance - ahead).max(0) / interval;
        if tightest.is_none_or(|(_, r)| remaining < r) {
            tightest = Some((i, remaining));
        }
        new_tats.push(new_tat);
    }
    let outcome = match refused {
        Some((index, wait)) => Outcome {
            allowed: false,
            index,
            remaining: 0,
            reset_us: tats[index].unwrap_or(now).max(now) - now,
            retry_us: wait,
        },
        None => {
            let (index, remaining) = tightest.unwrap_or((0, 0));
            Outcome {
                allowed: true,
                index,
                remaining,
                reset_us: new_tats.get(index).map_or(0, |t| t - now),
                retry_us: 0,
            }
        }
    };
    (outcome, new_tats)
}

/// The Lua twin of [`decide`]: KEYS are the budgets' state, ARGV their
/// interval and tolerance in pairs (microseconds). Returns
/// `{allowed, index (1-based), remaining, reset_us, retry_us}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local olds, tats = {}, {}
local refused, wait = 0, 0
local tightest, least = 0, -1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  olds[i] = tat
  local new_tat = tat + interval
  local ahead = new_tat - now
  if ahead > tolerance and ahead - tolerance > wait then
    refused, wait = i, ahead - tolerance
  end
  local remaining = math.floor(math.max(tolerance - ahead, 0) / interval)
  if least < 0 or remaining < least then
    tightest, least = i, remaining
  end
  tats[i] = new_tat
end
if refused > 0 then
  return {0, refused, 0, olds[refused] - now, wait}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], tats[i], 'PX', math.floor((tats[i] - now) / 1000) + 1)
end
return {1, tightest, least, tats[tightest] - now, 0}
";

/// Budgets' TATs kept in the process, when there is no Redis.
struct Local {
    state: Mutex<LocalState>,
}

struct LocalState {
    tats: HashMap<String, i64>,
    /// At this many budgets, the whole ones are forgotten (and the bound
    /// doubles if most are not): a sweep costs a pass, once per doubling.
    sweep_at: usize,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            state: Mutex::new(LocalState {
                tats: HashMap::new(),
                sweep_at: Self::SWEEP_AT,
            }),
        }
    }
}

impl Local {
    const SWEEP_AT: usize = 100_000;

    fn check(&self, now: i64, keys: &[String], params: &[(i64, i64)]) -> Outcome {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stored: Vec<Option<i64>> = keys.iter().map(|k| state.tats.get(k).copied()).collect();
        let (outcome, new_tats) = decide(now, &stored, params);
        if outcome.allowed {
            if state.tats.len() >= state.sweep_at {
                // a budget whose TAT has passed is whole: forgetting it changes nothing
                state.tats.retain(|_, tat| *tat > now);
                state.sweep_at = (state.tats.len() * 2).max(Self::SWEEP_AT);
            }
            for (k, tat) in keys.iter().zip(new_tats) {
                state.tats.insert(k.clone(), tat);
            }
        }
        outcome
    }
}

/// The limiter of one server process.
pub struct Limiter {
    pub cfg: LimitsConfig,
    local: Local,
    redis: Option<std::sync::Arc<Redis>>,
    script: redis::Script,
    started: Instant,
}

impl Limiter {
    pub fn new(cfg: LimitsConfig, redis: Option<std::sync::Arc<Redis>>) -> Self {
        Self {
            cfg,
            local: Local::default(),
            redis,
            script: redis::Script::new(SCRIPT),
            started: Instant::now(),
        }
    }

    /// The budgets a request draws on.
    pub fn budgets(
        &self,
        class: Class,
        tenant: Option<(uuid::Uuid, Tier, &str)>,
        addr: Option<IpAddr>,
    ) -> Vec<Budget> {
        let mut out = Vec::with_capacity(3);
        if let Some((tenant, tier, key)) = tenant {
            let b = self.cfg.tier(tier);
            out.push(Budget {
                scope: Scope::Tenant,
                id: tenant.to_string(),
                rate: b.tenant.of(class),
            });
            out.push(Budget {
                scope: Scope::Key,
                id: key.to_owned(),
                rate: b.key.of(class),
            });
        }
        if let Some(addr) = addr {
            out.push(Budget {
                scope: Scope::Address,
                id: addr.to_string(),
                rate: self.cfg.ip.of(class),
            });
        }
        out
    }

    /// Whether a request of `class` drawing on `budgets` passes; `None`
    /// when no decision could be made (Redis down or slow): it passes.
    pub async fn check(&self, class: Class, budgets: &[Budget]) -> Option<Decision> {
        if budgets.is_empty() {
            return None;
        }
        let keys: Vec<String> = budgets
            .iter()
            .map(|b| {
                format!(
                    "crmsearch:rl:{}:{}:{}",
                    class.as_str(),
                    b.scope.as_str(),
                    b.id
                )
            })
            .collect();
        let params: Vec<(i64, i64)> = budgets.iter().map(|b| b.rate.gcra()).collect();
        let outcome = match &self.redis {
            None => {
                let now = i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX);
                self.local.check(now, &keys, &params)
            }
            Some(redis) => {
                let mut call = self.script.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                for (interval, tolerance) in &params {
                    call.arg(*interval).arg(*tolerance);
                }
                let answer: Vec<i64> = redis
                    .run("rate_limit", |mut conn| async move {
                        call.invoke_async(&mut conn).await
                    })
                    .await?;
                let [allowed, index, remaining, reset_us, retry_us] = answer[..] else {
                    tracing::warn!(
                        ?answer,
                        "the rate-limit script answered something unexpected"
                    );
                    return None;
                };
                Outcome {
                    allowed: allowed == 1,
                    index: usize::try_from(index - 1)
                        .ok()
                        .filter(|i| *i < budgets.len())?,
                    remaining,
                    reset_us,
                    retry_us,
                }
            }
        };
        let allowed = outcome.allowed;
        let d = Decision {
            allowed,
            scope: budgets[outcome.index].scope,
            rate: budgets[outcome.index].rate,
            remaining: u64::try_from(outcome.remaining).unwrap_or(0),
            reset_us: outcome.reset_us,
            retry_us: outcome.retry_us,
        };
        metrics::counter!(
            "crmsearch_rate_limit_decisions_total",
            "class" => class.as_str(),
            "result" => if allowed { "allowed" } else { "limited" },
        )
        .increment(1);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        now: i64,
        stored: &mut Vec<Option<i64>>,
        params: &[(i64, i64)],
    ) -> (bool, usize, i64, i64, i64) {
        let (o, tats) = decide(now, stored, params);
        if o.allowed {
            *stored = tats.into_iter().map(Some).collect();
        }
        (o.allowed, o.index, o.remaining, o.reset_us, o.retry_us)
    }

    #[test]
    fn a_burst_then_the_rate() {
        // 1 a second, bursts of 3
        let p = [(1_000_000, 3_000_000)];
        let mut s = vec![None];
        assert_eq!(run(0, &mut s, &p), (true, 0, 2, 1_000_000, 0));
        assert_eq!(run(0, &mut s, &p).2, 1);
        assert_eq!(run(0, &mut s, &p).2, 0);
        let refused = run(0, &mut s, &p);
        assert!(!refused.0);
        assert_eq!(refused.4, 1_000_000, "one interval to wait");
        assert_eq!(refused.3, 3_000_000, "whole again after three");
        // half an interval later: still refused, half the wait
        assert_eq!(run(500_000, &mut s, &p).4, 500_000);
        // one interval later: exactly one passes
        assert!(run(1_000_000, &mut s, &p).0);
        assert!(!run(1_000_000, &mut s, &p).0);
        // after a long quiet spell the burst is back, not more
        for _ in 0..3 {
            assert!(run(60_000_000, &mut s, &p).0);
        }
        assert!(!run(60_000_000, &mut s, &p).0);
    }

    #[test]
    fn a_refusal_by_one_budget_charges_none() {
        // a roomy budget and one of a single request
        let p = [(1_000, 1_000_000), (1_000_000, 1_000_000)];
        let mut s = vec![None, None];
        assert!(run(0, &mut s, &p).0);
        let before = s.clone();
        let (ok, i, ..) = run(0, &mut s, &p);
        assert!(!ok);
        assert_eq!(i, 1, "the budget that refused is named");
        assert_eq!(s, before, "nothing charged");
        // reported: the budget with the least room
        let (ok, i, rem, ..) = run(1_000_000, &mut s, &p);
        assert!(ok);
        assert_eq!((i, rem), (1, 0));
    }

    #[test]
    fn classes_of_routes() {
        use axum::http::Method;
        assert_eq!(
            Class::of(&Method::GET, "/v1/contacts/search"),
            Some(Class::Search)
        );
        assert_eq!(
            Class::of(&Method::POST, "/v1/contacts/search"),
            Some(Class::Search)
        );
        assert_eq!(
            Class::of(&Method::GET, "/v1/contacts/{id}"),
            Some(Class::Search)
        );
        assert_eq!(
            Class::of(&Method::PATCH, "/v1/contacts/{id}"),
            Some(Class::Write)
        );
        assert_eq!(
            Class::of(&Method::POST, "/v1/contacts/bulk"),
            Some(Class::Bulk)
        );
        assert_eq!(
            Class::of(&Method::POST, "/v1/memories/bulk"),
            Some(Class::Bulk)
        );
        assert_eq!(
            Class::of(&Method::POST, "/v1/memories/search"),
            Some(Class::Memory)
        );
        assert_eq!(
            Class::of(&Method::GET, "/v1/contacts/{id}/context"),
            Some(Class::Memory)
        );
        assert_eq!(Class::of(&Method::GET, "/readyz"), None);
    }

    #[test]
    fn the_file_overrides_what_it_names() {
        let file: LimitsFile = toml::from_str(
            r#"
            trusted_proxy_header = "x-forwarded-for"
            [ip]
            search = { per_second = 5, burst = 5 }
            [tiers.free.tenant]
            search = { per_second = 1, burst = 2 }
            "#,
        )
        .unwrap();
        let cfg = LimitsConfig::resolve(&file, None, None, None).unwrap();
        assert_eq!(cfg.ip.search, rate(5.0, 5));
        assert_eq!(cfg.ip.write, LimitsConfig::default().ip.write);
        assert_eq!(cfg.tier(Tier::Free).tenant.search, rate(1.0, 2));
        assert_eq!(cfg.tier(Tier::Free).tenant.write, FREE.write);
        assert_eq!(
            cfg.trusted_proxy_header.unwrap().as_str(),
            "x-forwarded-for"
        );
        let bad: LimitsFile =
            toml::from_str("[ip]\nsearch = { per_second = 0, burst = 5 }").unwrap();
        let err = LimitsConfig::resolve(&bad, None, None, None).unwrap_err();
        assert!(err.to_string().contains("ip.search"), "{err}");
        assert!(toml::from_str::<LimitsFile>("[tiers.gold.tenant]").is_err());
    }
}
