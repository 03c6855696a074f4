//! The test harness: one embedded Postgres for the run, a migrated template
//! database, and per test a fresh database, tenant and keys.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use crmsearch::api::{AppState, app};
use crmsearch::auth::{self, Role};
use crmsearch::config::Config;
use crmsearch::db;
use crmsearch::embedded_pg::EmbeddedPostgres;
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tower::ServiceExt;
use uuid::Uuid;

pub const MASTER_KEY: &str = "test-master-key-0123456789";
const TEMPLATE: &str = "crm_template";

struct Cluster {
    admin_url: String,
    _pg: std::sync::Mutex<EmbeddedPostgres>,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

pub fn pg_bin() -> PathBuf {
    std::env::var_os("CRMSEARCH_PG_BIN")
        .map(PathBuf::from)
        .or_else(crmsearch::embedded_pg::find_bin_dir)
        .expect("no PostgreSQL found: run scripts/setup (or set CRMSEARCH_PG_BIN)")
}

async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-pg");
            let bin = pg_bin();
            let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, &bin))
                .await
                .unwrap()
                .expect("start the embedded postgres");
            let admin_url = pg.url("postgres");
            // a fresh template for this run, migrated once; old test databases go
            let admin = PgPool::connect(&admin_url).await.unwrap();
            // a synchronous standby that never comes, waited for only by
            // sessions that ask (synchronous_commit = on): a commit that is on
            // disk, sent to replication, and not yet visible to others
            for setting in [
                "ALTER SYSTEM SET synchronous_commit = 'local'",
                "ALTER SYSTEM SET synchronous_standby_names = 'crmsearch_tests_nobody'",
                "SELECT pg_reload_conf()",
            ] {
                sqlx::query(setting).execute(&admin).await.unwrap();
            }
            // slots of old test databases would block dropping them
            sqlx::query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE database LIKE 't\\_%' AND NOT active",
            )
            .execute(&admin)
            .await
            .unwrap();
            let old: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datname LIKE 't\\_%' OR datname = $1",
            )
            .bind(TEMPLATE)
            .fetch_all(&admin)
            .await
            .unwrap();
            for name in old {
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&admin)
                    .await
                    .unwrap();
            }
            sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
                .execute(&admin)
                .await
                .unwrap();
            let tpl = PgPool::connect(&pg.url(TEMPLATE)).await.unwrap();
            db::check_wal_level(&tpl).await.unwrap();
            db::migrate(&tpl).await.unwrap();
            tpl.close().await;
            admin.close().await;
            Cluster {
                admin_url,
                _pg: std::sync::Mutex::new(pg),
            }
        })
        .await
}

/// A fresh, migrated database of its own.
pub async fn fresh_db() -> (PgPool, String) {
    let cluster = cluster().await;
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&cluster.admin_url).await.unwrap();
    for attempt in 0.. {
        match sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .execute(&admin)
            .await
        {
            Ok(_) => break,
            // two tests copying the template at once: wait for the other
            Err(e) if attempt < 50 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    admin.close().await;
    let url = match cluster.admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => unreachable!(),
    };
    (db::connect(&url, 8).await.unwrap(), url)
}

/// A tenant of the test database with one key per role.
pub struct Tenant {
    pub id: Uuid,
    pub keys: HashMap<Role, String>,
}

impl Tenant {
    pub fn key(&self, role: Role) -> &str {
        &self.keys[&role]
    }
}

pub async fn tenant(pool: &PgPool, name: &str) -> Tenant {
    let (id, admin) = auth::create_tenant(pool, name).await.unwrap();
    let mut keys = HashMap::from([(Role::Admin, admin)]);
    for role in [Role::Search, Role::Agent, Role::Write] {
        keys.insert(role, auth::create_key(pool, id, role).await.unwrap().0);
    }
    Tenant { id, keys }
}

/// The application over a fresh database, with two tenants.
pub struct TestApp {
    pub router: Router,
    /// The router's key cache.
    pub keys: std::sync::Arc<auth::KeyCache>,
    /// The request bodies' memory budget of the router's state.
    pub bodies: crmsearch::api::http::BodyBudget,
    pub pool: PgPool,
    pub url: String,
    pub a: Tenant,
    pub b: Tenant,
    pub indexer: Option<std::sync::Arc<indexer::Indexer>>,
    pub index_cfg: Option<indexer::IndexerConfig>,
}

/// Stops `ix` and drops its replication slot.
pub async fn stop_and_drop_slot(ix: std::sync::Arc<indexer::Indexer>, pool: &PgPool) {
    ix.shutdown().await;
    let slot = ix.slot.clone();
    drop(ix);
    let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(slot)
        .execute(pool)
        .await;
}

pub fn test_config() -> Config {
    let mut cfg = Config::with_data_dir(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-data"));
    cfg.master_key = Some(MASTER_KEY.into());
    cfg.body_limit_bytes = 64 * 1024;
    cfg.bulk_body_limit_bytes = 64 << 20;
    // the rate-limit layer runs (and authenticates) on every request, with
    // budgets no test reaches unless it sets its own
    let roomy = crmsearch::limits::Rate {
        per_second: 1e6,
        burst: 1_000_000,
    };
    let roomy = crmsearch::limits::Budgets {
        search: roomy,
        write: roomy,
        bulk: roomy,
        memory: roomy,
    };
    for tier in &mut cfg.limits.tiers {
        tier.tenant = roomy;
        tier.key = roomy;
    }
    cfg.limits.ip = roomy;
    cfg
}

/// The server's state as `serve` builds it: keys are trusted while their
/// changes are notified.
fn state(pool: &PgPool, cfg: Config) -> AppState {
    let state = AppState::new(pool.clone(), cfg);
    tokio::spawn(crmsearch::auth::listen_for_key_changes(
        pool.clone(),
        state.keys.clone(),
    ));
    state
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(cfg: Config) -> Self {
        let (pool, url) = fresh_db().await;
        let a = tenant(&pool, "tenant-a").await;
        let b = tenant(&pool, "tenant-b").await;
        let st = state(&pool, cfg);
        let keys = st.keys.clone();
        let bodies = st.bodies.clone();
        let router = app(st);
        Self {
            router,
            keys,
            bodies,
            pool,
            url,
            a,
            b,
            indexer: None,
            index_cfg: None,
        }
    }

    /// With the CDC indexer running on its own slot and index folder.
    pub async fn with_indexer() -> Self {
        Self::with_indexer_config(test_config()).await
    }

    /// [`Self::with_indexer`] with these settings (the node and data folder
    /// are the test's own).
    pub async fn with_indexer_config(mut cfg: Config) -> Self {
        let mut t = Self::new().await;
        let name = t.url.rsplit('/').next().unwrap().to_owned();
        cfg.node = Some(name.clone());
        cfg.data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ix-{name}"));
        cfg.durable_interval_ms = 200;
        let icfg = cfg.indexer(&t.url);
        t.start_indexer(icfg.clone(), cfg).await;
        t.index_cfg = Some(icfg);
        t
    }

    pub async fn start_indexer(&mut self, icfg: indexer::IndexerConfig, cfg: Config) {
        // the router holds the previous indexer (and its index writer)
        self.router = app(state(&self.pool, cfg.clone()));
        // the previous indexer of this process lets go of the index folder
        // when its last reference drops, which a task of its still finishing
        // can delay by moments
        let started = std::time::Instant::now();
        let ix = loop {
            match indexer::Indexer::start(icfg.clone(), self.pool.clone()).await {
                Err(indexer::Error::Locked(_))
                    if started.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => break other.expect("start the indexer"),
            }
        };
        let st = state(&self.pool, cfg).with_indexer(ix.clone());
        self.keys = st.keys.clone();
        self.bodies = st.bodies.clone();
        self.router = app(st);
        self.indexer = Some(ix);
    }

    pub fn ix(&self) -> &indexer::Indexer {
        self.indexer.as_ref().expect("an indexer")
    }

    /// The current WAL insert position (after a write by SQL).
    pub async fn wal_position(&self) -> indexer::Lsn {
        crmsearch::db::write_position(&self.pool).await.unwrap()
    }

    /// Waits until the index has applied everything committed so far.
    pub async fn caught_up(&self) {
        let lsn = self.wal_position().await;
        assert!(
            self.ix()
                .wait_for(lsn, std::time::Duration::from_secs(30))
                .await,
            "the index did not reach {lsn}"
        );
    }

    /// Stops the indexer and drops its slot.
    pub async fn stop(mut self) {
        if let Some(ix) = self.indexer.take() {
            stop_and_drop_slot(ix, &self.pool).await;
        }
    }

    /// Sends a request; the body is JSON unless `raw` gives bytes and a type.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.raw(method, path, key, bytes.map(|b| ("application/json", b)))
            .await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let auth = key.map(|k| format!("Bearer {k}"));
        self.send(method, path, auth.as_deref(), body).await
    }

    /// [`raw`](Self::raw) with owned arguments, for closures.
    pub async fn raw_owned(
        &self,
        method: Method,
        path: String,
        key: Option<String>,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        self.raw(method, &path, key.as_deref(), body).await
    }

    /// Sends a request with this exact Authorization header.
    pub async fn raw_with_auth(
        &self,
        method: Method,
        path: &str,
        authorization: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        self.send(method, path, Some(authorization), body).await
    }

    /// Sends a request as built, and gives back the whole answer.
    pub async fn request(&self, req: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(req).await.unwrap()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(auth) = authorization {
            req = req.header("authorization", auth);
        }
        let req = match body {
            Some((ct, bytes)) => req.header("content-type", ct).body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            // JSON, except for text endpoints such as /metrics
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }
}

/// Asserts an error response's status and code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.len() > 10,
        "the message should be a sentence: {}",
        got.1
    );
}
