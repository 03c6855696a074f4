//! Beyond one machine, on loopback with real processes: one Postgres, three
//! tenant shards of two replicas each (six `crmsearch serve`), one nginx
//! with deploy/nginx/crmsearch-shards.conf, one Redis; 30 tenants. Mixed
//! writes and searches through nginx for a bounded time while one replica
//! is SIGKILLed and restarted and one tenant moves to another shard
//! (`crmsearch shard move`). Every search must be answered by the tenant's
//! shard, show only the tenant's contacts, and every write must be visible
//! through its `lsn`; no request through nginx may fail; afterwards every
//! replica verifies clean against Postgres, and the source no longer
//! serves the moved tenant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::common::MASTER_KEY;
use crate::embedded::{crmsearch, data_dir, run_ok, runtime, serve_on, signal, try_http_head};
use crate::redis::{RedisServer, free_port};

const SHARDS: [&str; 3] = ["s1", "s2", "s3"];
const TENANTS: usize = 30;
/// How long the mixed load runs.
const LOAD: Duration = Duration::from_secs(24);
/// Contacts the moving tenant has before it moves (loaded by the target).
const MOVING_CONTACTS: usize = 2000;

struct Node {
    shard: &'static str,
    addr: String,
    data: PathBuf,
    node: String,
    child: Option<Child>,
}

struct Nginx {
    prefix: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    fn cmd(&self) -> Command {
        let mut c = Command::new(nginx_bin());
        c.arg("-p").arg(&self.prefix).arg("-c").arg(&self.conf);
        c
    }

    fn reload_command(&self) -> String {
        format!(
            "{} -p {} -c {} -s reload",
            nginx_bin(),
            self.prefix.display(),
            self.conf.display()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.cmd().args(["-s", "stop"]).status();
    }
}

fn nginx_bin() -> &'static str {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is installed (scripts/check_deploy installs it)")
}

struct Cluster {
    nodes: Vec<Node>,
    db_url: String,
    redis: RedisServer,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // the slots would keep WAL on the shared test server
        let slots: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("crmsearch_{}", n.node))
            .collect();
        let url = self.db_url.clone();
        runtime().block_on(async move {
            if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                for s in slots {
                    let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
                        .bind(&s)
                        .execute(&pool)
                        .await;
                }
                pool.close().await;
            }
        });
        let _ = &self.redis;
    }
}

impl Cluster {
    fn start_node(&mut self, i: usize) {
        let redis = self.redis.url();
        let n = &mut self.nodes[i];
        let (child, _) = serve_on(
            &n.data,
            &n.addr,
            &[
                ("DATABASE_URL", self.db_url.as_str()),
                ("CRMSEARCH_SHARD", n.shard),
                ("CRMSEARCH_NODE", n.node.as_str()),
                ("REDIS_URL", redis.as_str()),
                ("CRMSEARCH_TRUSTED_PROXY_HEADER", "x-forwarded-for"),
                ("CRMSEARCH_MAX_CONNECTIONS_PER_CLIENT", "0"),
            ],
        )
        .expect("a shard node started");
        n.child = Some(child);
    }
}

/// One request; (status, lowercased head, body), or status 0 when the
/// connection failed.
fn call(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String, String) {
    try_http_head(addr, method, path, key, body).unwrap_or((0, String::new(), String::new()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

struct Tenant {
    id: Uuid,
    key: String,
    /// Shards that may answer it (two while it moves).
    shards: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    wrong_shard: AtomicU64,
    foreign: AtomicU64,
    writes: AtomicU64,
    unseen: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Tally {
    fn problem(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut p = self.problems.lock().unwrap();
        if p.len() < 20 {
            p.push(what);
        }
    }
}

fn nginx_conf(dir: &Path, cluster: &Cluster, routes: &Path, port: u16) -> PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/crmsearch-shards.conf"),
    )
    .unwrap();
    let mut conf = shipped
        .replace("/etc/nginx/crmsearch-routes.map", routes.to_str().unwrap())
        .replace("listen [::]:80;", "")
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    // the shipped replicas: 127.0.0.1:71<shard><replica>
    for (i, n) in cluster.nodes.iter().enumerate() {
        let placeholder = format!("127.0.0.1:71{}{}", i / 2 + 1, i % 2 + 1);
        assert!(
            conf.contains(&placeholder),
            "{placeholder} in crmsearch-shards.conf"
        );
        conf = conf.replace(&placeholder, &n.addr);
    }
    std::fs::write(dir.join("crmsearch-shards.conf"), conf).unwrap();
    let main = dir.join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               include {d}/crmsearch-shards.conf;\n}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    main
}

#[test]
fn three_shards_of_two_replicas_behind_nginx() {
    let rt = runtime();
    let db_url = rt.block_on(async {
        let (pool, url) = crate::common::fresh_db().await;
        pool.close().await;
        url
    });
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut cluster = Cluster {
        nodes: Vec::new(),
        db_url: db_url.clone(),
        redis: RedisServer::start(),
    };
    for shard in SHARDS {
        for r in 1..=2 {
            cluster.nodes.push(Node {
                shard,
                addr: format!("127.0.0.1:{}", free_port()),
                data: data_dir(&format!("shard-{shard}-{r}")),
                node: format!("{shard}_{r}_{run}"),
                child: None,
            });
        }
    }
    for i in 0..cluster.nodes.len() {
        cluster.start_node(i);
    }
    let first = cluster.nodes[0].addr.clone();
    let cli_data = data_dir("shard-cli");
    let cli = |args: &[&str]| -> String {
        run_ok(crmsearch(&cli_data).env("DATABASE_URL", &db_url).args(args))
    };

    // 30 tenants, placed by the server on the shard with the fewest
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let (status, _, body) = call(
            &first,
            "POST",
            "/v1/tenants",
            MASTER_KEY,
            &format!(r#"{{"name":"tenant {i}"}}"#),
        );
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        tenants.push(Arc::new(Tenant {
            id: v["id"].as_str().unwrap().parse().unwrap(),
            key: v["keys"]["admin"].as_str().unwrap().to_owned(),
            shards: Mutex::new(vec![
                v["shard"].as_str().expect("placed on a shard").to_owned(),
            ]),
        }));
    }
    let per_shard = |s: &str| {
        tenants
            .iter()
            .filter(|t| t.shards.lock().unwrap()[0] == s)
            .count()
    };
    assert_eq!(SHARDS.map(per_shard), [10, 10, 10], "placed evenly");

    // nginx, routing by the routes file `crmsearch shard routes` writes
    let ngx_dir = data_dir("nginx");
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
        std::fs::create_dir_all(ngx_dir.join(d)).unwrap();
    }
    let routes = ngx_dir.join("routes.map");
    cli(&["shard", "routes", "--out", routes.to_str().unwrap()]);
    let port = free_port();
    let conf = nginx_conf(&ngx_dir, &cluster, &routes, port);
    let nginx = Nginx {
        prefix: ngx_dir.clone(),
        conf,
    };
    let out = nginx.cmd().output().unwrap();
    assert!(
        out.status.success(),
        "nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy = format!("127.0.0.1:{port}");

    // every tenant has contacts, marked with its number; the tenant that
    // will move has more, for its target to load
    let moving = 0;
    for (i, t) in tenants.iter().enumerate() {
        let n = if i == moving { MOVING_CONTACTS } else { 20 };
        let body: String = (0..n)
            .map(|j| {
                format!(
                    "{{\"external_id\":\"seed-{j}\",\"first_name\":\"Seed{j}\",\"last_name\":\"Shardmix\",\"city\":\"tenant{i}\"}}\n"
                )
            })
            .collect();
        let (status, head, text) = call(&proxy, "POST", "/v1/contacts/bulk", &t.key, &body);
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            header(&head, "x-crmsearch-shard"),
            Some(t.shards.lock().unwrap()[0].as_str())
        );
    }

    // the mixed load
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let hold_writes = Arc::new(AtomicBool::new(false));
    let writing = Arc::new(AtomicUsize::new(0));
    let tenants = Arc::new(tenants);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (tally, stop, hold, writing, tenants, proxy) = (
                tally.clone(),
                stop.clone(),
                hold_writes.clone(),
                writing.clone(),
                tenants.clone(),
                proxy.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let i = ((n * 7 + w * 13) % TENANTS as u64) as usize;
                    let t = &tenants[i];
                    let write = n.is_multiple_of(3) && !hold.load(Ordering::SeqCst);
                    let (path, token) = if write {
                        writing.fetch_add(1, Ordering::SeqCst);
                        // (the hold may have begun meanwhile: the killer
                        // waits for this write to end either way)
                        let token = format!("w{w}n{n}");
                        let (status, _, body) = call(
                            &proxy,
                            "POST",
                            "/v1/contacts",
                            &t.key,
                            &format!(r#"{{"first_name":"{token}","last_name":"Shardmix","city":"tenant{i}"}}"#),
                        );
                        writing.fetch_sub(1, Ordering::SeqCst);
                        tally.requests.fetch_add(1, Ordering::Relaxed);
                        if status != 201 {
                            tally.problem(&tally.failed, format!("write: {status} {body}"));
                            continue;
                        }
                        tally.writes.fetch_add(1, Ordering::Relaxed);
                        let v: Value = serde_json::from_str(&body).unwrap();
                        let lsn = v["lsn"].as_str().unwrap().replace('/', "%2F");
                        (
                            format!("/v1/contacts/search?q={token}&min_lsn={lsn}&wait_ms=20000&limit=5"),
                            Some(token),
                        )
                    } else {
                        ("/v1/contacts/search?q=shardmix&limit=20".to_owned(), None)
                    };
                    let allowed = t.shards.lock().unwrap().clone();
                    let (status, head, body) = call(&proxy, "GET", &path, &t.key, "");
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        tally.problem(&tally.failed, format!("search {path}: {status} {body}"));
                        continue;
                    }
                    let by = header(&head, "x-crmsearch-shard").unwrap_or("").to_owned();
                    let now = t.shards.lock().unwrap().clone();
                    if !allowed.contains(&by) && !now.contains(&by) {
                        tally.problem(
                            &tally.wrong_shard,
                            format!("tenant {i} answered by shard {by}, expected {allowed:?}"),
                        );
                    }
                    let v: Value = serde_json::from_str(&body).unwrap();
                    let hits = v["hits"].as_array().unwrap();
                    let marker = format!("tenant{i}");
                    for h in hits {
                        if h["contact"]["city"] != marker.as_str() {
                            tally.problem(
                                &tally.foreign,
                                format!("tenant {i} saw {}", h["contact"]),
                            );
                        }
                    }
                    if let Some(token) = token
                        && !hits.iter().any(|h| h["contact"]["first_name"] == token.as_str())
                    {
                        tally.problem(&tally.unseen, format!("tenant {i}: write {token} not found at its lsn"));
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    // a replica SIGKILLed and restarted: writes pause around the kill itself
    // (a POST that nginx has sent is never retried on another replica: it
    // might apply twice), searches never do
    std::thread::sleep(Duration::from_secs(4));
    let victim = 2; // s2's first replica
    hold_writes.store(true, Ordering::SeqCst);
    while writing.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = cluster.nodes[victim].child.as_ref().unwrap().id();
    signal(pid, "-KILL");
    let _ = cluster.nodes[victim].child.as_mut().unwrap().wait();
    hold_writes.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    cluster.start_node(victim);
    let restarted = started.elapsed();

    // a tenant moves from its shard to the next one while the load runs
    let mover = &tenants[moving];
    let from = mover.shards.lock().unwrap()[0].clone();
    let to = SHARDS[(SHARDS.iter().position(|s| *s == from).unwrap() + 1) % 3].to_owned();
    mover.shards.lock().unwrap().push(to.clone());
    let moved: Value = serde_json::from_str(
        cli(&[
            "shard",
            "move",
            &mover.id.to_string(),
            "--to",
            &to,
            "--routes",
            routes.to_str().unwrap(),
            "--reload",
            &nginx.reload_command(),
            "--drain-ms",
            "3000",
            "--json",
        ])
        .trim(),
    )
    .unwrap();
    *mover.shards.lock().unwrap() = vec![to.clone()];
    let move_secs = moved["total_secs"].as_f64().unwrap();
    assert_eq!(
        moved["nodes"].as_array().unwrap().len(),
        2,
        "both of {to}'s replicas loaded it: {moved}"
    );

    while started.elapsed() < LOAD {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let problems = tally.problems.lock().unwrap().clone();
    eprintln!(
        "shards: {} requests ({} writes) through nginx in {:?}; replica restarted at {restarted:?}; \
         tenant moved {from} -> {to} in {move_secs:.1} s",
        tally.requests.load(Ordering::Relaxed),
        tally.writes.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(tally.writes.load(Ordering::Relaxed) > 50, "the load wrote");
    for (what, n) in [
        ("failed requests", &tally.failed),
        ("searches answered by another shard", &tally.wrong_shard),
        ("hits of another tenant", &tally.foreign),
        ("writes not visible at their lsn", &tally.unseen),
    ] {
        assert_eq!(n.load(Ordering::Relaxed), 0, "{what}: {problems:#?}");
    }

    // afterwards: the source no longer serves the tenant, the target has all
    // of it, and every replica agrees with Postgres
    for n in &cluster.nodes {
        let (status, _, body) = call(
            &n.addr,
            "GET",
            "/v1/contacts/search?q=shardmix&limit=1",
            &mover.key,
            "",
        );
        if n.shard == from {
            assert_eq!(status, 421, "{}: {body}", n.node);
            assert!(body.contains("wrong_shard"), "{body}");
        } else if n.shard == to {
            assert_eq!(status, 200, "{}: {body}", n.node);
        }
    }
    let expected: i64 = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
            .bind(mover.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    });
    let mut totals = HashMap::new();
    for n in &cluster.nodes {
        let (status, _, body) = call(&n.addr, "POST", "/v1/admin/verify", MASTER_KEY, "");
        assert_eq!(status, 200, "verify on {}: {body}", n.node);
        let report: Value = serde_json::from_str(&body).unwrap();
        for t in report["tables"].as_array().unwrap() {
            for k in [
                "missing",
                "stale",
                "ghost",
                "vectors_missing",
                "vectors_ghost",
            ] {
                let ids = t[k].as_array().unwrap();
                assert!(
                    ids.is_empty(),
                    "{} {} {k} on {}, e.g. {:?}",
                    ids.len(),
                    t["table"],
                    n.node,
                    &ids[..ids.len().min(3)]
                );
            }
        }
        if n.shard == to {
            let (_, _, body) = call(
                &n.addr,
                "GET",
                "/v1/contacts/search?q=shardmix&limit=1",
                &mover.key,
                "",
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            totals.insert(n.node.clone(), v["total"].as_i64().unwrap());
        }
    }
    assert!(
        totals.values().all(|t| *t == expected),
        "the moved tenant in full on {to}: {totals:?} of {expected}"
    );
    drop(nginx);
}
