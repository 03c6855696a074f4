//! Rate limits: budgets per tenant, key and client address, tiers changed
//! by the master key (and by SQL), and the budgets shared by two server
//! processes through a real Redis, which fails open when Redis is killed or
//! hangs.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use crmsearch::auth::Role;
use crmsearch::limits::{Rate, Tier};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::common::{MASTER_KEY, TestApp, test_config};
use crate::embedded::{data_dir, runtime, serve_with, try_http};
use crate::redis::RedisServer;

const SEARCH: &str = "/v1/contacts/search?q=ann";

/// Search requests of the free tier: the tenant's `tenant`, a key's `key`,
/// an address's `ip` (all else roomy).
fn config(tenant: Rate, key: Rate, ip: Rate) -> crmsearch::config::Config {
    let mut cfg = test_config();
    let free = &mut cfg.limits.tiers[Tier::Free as usize];
    free.tenant.search = tenant;
    free.key.search = key;
    cfg.limits.ip.search = ip;
    cfg.limits.trusted_proxy_header = Some("x-forwarded-for".parse().unwrap());
    cfg
}

const fn rate(per_second: f64, burst: u32) -> Rate {
    Rate { per_second, burst }
}

/// A budget that never refills within a test.
const fn only(burst: u32) -> Rate {
    rate(0.001, burst)
}

const ROOMY: Rate = rate(1e6, 1_000_000);

async fn search(app: &TestApp, key: &str, from: &str) -> axum::response::Response {
    let req = Request::builder()
        .method(Method::GET)
        .uri(SEARCH)
        .header("authorization", format!("Bearer {key}"))
        .header("x-forwarded-for", format!("203.0.113.9, {from}"))
        .body(Body::empty())
        .unwrap();
    app.request(req).await
}

fn header<'a>(resp: &'a axum::response::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn body(resp: axum::response::Response) -> Value {
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn a_tenant_budget_refuses_with_429_and_says_when_to_retry() {
    let app = TestApp::with_indexer_config(config(only(3), ROOMY, ROOMY)).await;
    let key = app.a.key(Role::Search);
    for remaining in ["2", "1", "0"] {
        let resp = search(&app, key, "198.51.100.1").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "ratelimit-limit"), "3");
        assert_eq!(header(&resp, "ratelimit-remaining"), remaining);
        assert!(header(&resp, "ratelimit-reset").parse::<u64>().unwrap() > 0);
    }
    let resp = search(&app, key, "198.51.100.1").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "ratelimit-remaining"), "0");
    let retry: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    let err = body(resp).await;
    assert_eq!(err["error"]["code"], "rate_limited");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`free` tier") && message.contains("search"),
        "{message}"
    );
    // another key of the same tenant shares the tenant's budget
    let resp = search(&app, app.a.key(Role::Admin), "198.51.100.2").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // another tenant has its own
    let resp = search(&app, app.b.key(Role::Search), "198.51.100.1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    // writes are another class: not touched by the searches
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/contacts",
            Some(app.a.key(Role::Write)),
            Some(json!({"first_name": "Ann"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // health checks are never limited
    let (status, _) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn key_and_address_budgets_are_their_own() {
    // a key may make two searches, an address three, the tenant many
    let app = TestApp::with_indexer_config(config(ROOMY, only(2), only(3))).await;
    let (search_key, admin_key) = (app.a.key(Role::Search), app.a.key(Role::Admin));
    for _ in 0..2 {
        assert_eq!(
            search(&app, search_key, "198.51.100.1").await.status(),
            StatusCode::OK
        );
    }
    let resp = search(&app, search_key, "198.51.100.7").await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the key's budget"
    );
    assert!(
        body(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one key")
    );
    // the refusal charged nothing: the first address has one search left
    assert_eq!(
        search(&app, admin_key, "198.51.100.1").await.status(),
        StatusCode::OK
    );
    let resp = search(&app, app.b.key(Role::Search), "198.51.100.1").await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address's budget"
    );
    assert!(
        body(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client address")
    );
    // the address is the last one the trusted proxy appended
    assert_eq!(
        search(&app, app.b.key(Role::Search), "198.51.100.2")
            .await
            .status(),
        StatusCode::OK
    );
    // a bad key is still refused as a bad key (and charged to its address)
    let resp = search(&app, "crm_nonsense", "198.51.100.3").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_master_key_changes_a_tier_and_its_budgets_apply_at_once() {
    let mut cfg = config(only(4), ROOMY, ROOMY);
    cfg.limits.tiers[Tier::Pro as usize].tenant.search = only(100);
    let app = TestApp::with_indexer_config(cfg).await;
    let key = app.a.key(Role::Search);
    let tenant = format!("/v1/tenants/{}", app.a.id);
    // a tenant's own admin reads its tenant but cannot change its tier
    let admin = app.a.key(Role::Admin);
    let (status, _) = app.call(Method::GET, &tenant, Some(admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::PATCH,
            &tenant,
            Some(admin),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // nor see another tenant
    let other = format!("/v1/tenants/{}", app.b.id);
    let (status, _) = app.call(Method::GET, &other, Some(admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // (two of its four searches gone, reads are searches)
    let (status, t) = app.call(Method::GET, &tenant, Some(MASTER_KEY), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["tier"], "free");
    assert_eq!(t["rate_limits"]["tenant"]["search"]["burst"], 4);
    for _ in 0..2 {
        assert_eq!(
            search(&app, key, "198.51.100.1").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        search(&app, key, "198.51.100.1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let (status, _) = app
        .call(
            Method::PATCH,
            &tenant,
            Some(MASTER_KEY),
            Some(json!({"tier": "gold"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown tier");
    let (status, t) = app
        .call(
            Method::PATCH,
            &tenant,
            Some(MASTER_KEY),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["tier"], "pro");
    let resp = search(&app, key, "198.51.100.1").await;
    assert_eq!(resp.status(), StatusCode::OK, "the pro budget at once");
    assert_eq!(header(&resp, "ratelimit-limit"), "100");
    // back to free by SQL: the trigger's notification reaches the key cache
    sqlx::query("UPDATE tenants SET tier = 'free' WHERE id = $1")
        .bind(app.a.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = search(&app, key, "198.51.100.1").await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(
            header(&resp, "ratelimit-limit"),
            "100",
            "still pro until notified"
        );
        assert!(
            Instant::now() < deadline,
            "the tier change by SQL never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two `crmsearch serve` processes on one database and one Redis, each with
/// its own node and index; stopped when dropped.
pub(crate) struct TwoServers {
    pub children: Vec<std::process::Child>,
    pub addrs: Vec<String>,
    /// The tenant's search and write keys.
    pub search_key: String,
    pub write_key: String,
    pub dirs: Vec<std::path::PathBuf>,
    pub db_url: String,
}

impl TwoServers {
    /// `config`: the servers' config file.
    pub(crate) fn start(redis: &str, config: &str) -> Self {
        let rt = runtime();
        let (search_key, write_key, db_url) = rt.block_on(async {
            let (pool, url) = crate::common::fresh_db().await;
            let t = crate::common::tenant(&pool, "shared").await;
            pool.close().await;
            (
                t.key(Role::Search).to_owned(),
                t.key(Role::Write).to_owned(),
                url,
            )
        });
        let mut s = Self {
            children: Vec::new(),
            addrs: Vec::new(),
            search_key,
            write_key,
            dirs: Vec::new(),
            db_url,
        };
        for node in ["one", "two"] {
            let data = data_dir(&format!("shared-{node}"));
            let file = data.join("crmsearch.toml");
            std::fs::write(&file, config).unwrap();
            let db_node = format!("{node}_{}", uuid::Uuid::new_v4().simple());
            let (child, addr) = serve_with(
                &data,
                &[
                    ("DATABASE_URL", s.db_url.as_str()),
                    ("CRMSEARCH_NODE", db_node.as_str()),
                    ("CRMSEARCH_CONFIG", file.to_str().unwrap()),
                    ("CRMSEARCH_RATE_LIMITS", "on"),
                    ("REDIS_URL", redis),
                    ("CRMSEARCH_REDIS_TIMEOUT_MS", "1000"),
                ],
            )
            .expect("serve started");
            s.children.push(child);
            s.addrs.push(addr);
            s.dirs.push(data);
        }
        s
    }
}

impl Drop for TwoServers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn status(addr: &str, key: &str) -> u16 {
    try_http(addr, "GET", SEARCH, key, "").map_or(0, |(s, _)| s)
}

fn log_lines(dir: &Path, needle: &str) -> usize {
    std::fs::read_to_string(dir.join("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn two_servers_share_budgets_through_redis_and_fail_open_without_it() {
    let mut redis = RedisServer::start();
    let servers = TwoServers::start(
        &redis.url(),
        "[rate_limits.tiers.free.tenant]\nsearch = { per_second = 0.001, burst = 6 }\n",
    );
    let (addrs, key, dirs) = (&servers.addrs, &servers.search_key, &servers.dirs);
    // alternating between the servers, six pass in all, not six each
    let answers: Vec<u16> = (0..12).map(|i| status(&addrs[i % 2], key)).collect();
    assert_eq!(
        answers.iter().filter(|s| **s == 200).count(),
        6,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 429).count(),
        6,
        "{answers:?}"
    );
    assert_eq!(&answers[..6], &[200; 6], "{answers:?}");

    // Redis killed under load: every request passes, none fails
    let load = |n: usize| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (addrs, key) = (addrs, key);
                    s.spawn(move || {
                        (0..n)
                            .map(|i| status(&addrs[(i + t) % 2], key))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<u16>>()
        })
    };
    redis.kill();
    let down = load(50);
    assert!(
        down.iter().all(|s| *s == 200),
        "while Redis is down: {down:?}"
    );
    // the change of state is logged once per server, not once per request
    for dir in dirs {
        assert_eq!(
            log_lines(dir, "Redis is unavailable"),
            1,
            "{}",
            dir.display()
        );
    }
    let metrics = try_http(&addrs[0], "GET", "/metrics", key, "").unwrap().1;
    assert!(metrics.contains("crmsearch_redis_up 0"), "{metrics}");

    // back (empty): the limits hold again within seconds
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let s = status(&addrs[seen.len() % 2], key);
        assert!(s == 200 || s == 429, "{s}");
        seen.push(s);
        if s == 429 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "limits did not come back: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for dir in dirs {
        assert_eq!(
            log_lines(dir, "Redis answers again"),
            1,
            "{}",
            dir.display()
        );
    }

    // Redis hanging (SIGSTOP) is no better than down: requests pass after
    // at most the Redis time limit (1 s here: a slow CI machine must not
    // time out on a healthy Redis)
    redis.pause();
    let hung = load(10);
    redis.resume();
    assert!(
        hung.iter().all(|s| *s == 200),
        "while Redis hangs: {hung:?}"
    );
}
