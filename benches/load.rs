//! End-to-end load over HTTP against the real server process (release
//! binary, embedded Postgres, all on the same 2 cores as this generator).
//!
//! `cargo bench --bench load` (env: LOAD_CONTACTS=500000 contacts,
//! LOAD_MEMORIES=5000 memories embedded by the model, LOAD_SECS=20 seconds
//! per level, LOAD_RATE=open-loop rate, default half the best closed-loop
//! throughput). The seeded data folder is kept in `target/bench-load` and
//! reused while the sizes match.
//!
//! - closed loop at 1, 8 and 64 connections (each connection sends its next
//!   request when the previous answer is read) over a mix drawn from 50,000
//!   of the tenant's contacts: typed prefixes of real names with facets,
//!   misspelled full names, autocomplete, facet clicks, deep scrolls by last
//!   name, hybrid memory searches; the levels walk one sequence of 400,000
//!   requests, so a request repeats only where the mix repeats itself;
//! - open loop at a fixed rate (latency from the scheduled send, so a stall
//!   counts for every request it delays);
//! - 64 connections again on a server with the result cache off, and each
//!   level's cache hit rate (the server's `/metrics`);
//! - restart to ready (SIGTERM, exec, `/readyz` 200) and the server's RSS.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Results, env, pct, ratio};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Typing,
    Misspelled,
    Autocomplete,
    FacetClick,
    DeepScroll,
    Memory,
}

impl Kind {
    const ALL: [(Kind, u32, &'static str); 6] = [
        (
            Kind::Typing,
            35,
            "typed prefix of a name, 2 facets, highlights",
        ),
        (Kind::Misspelled, 15, "misspelled full name, 4 facets"),
        (Kind::Autocomplete, 15, "autocomplete, 1–6 letters"),
        (
            Kind::FacetClick,
            10,
            "facet click: country filter, 3 facets",
        ),
        (
            Kind::DeepScroll,
            10,
            "deep scroll: 100 rows by last name at any offset",
        ),
        (Kind::Memory, 15, "memory search, hybrid, token budget"),
    ];
}

struct Req {
    kind: Kind,
    get: bool,
    path: String,
    body: Bytes,
    agent: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    contacts: usize,
    memories: usize,
    tenant: Uuid,
    search_key: String,
    agent_key: String,
}

/// The seeded data folder (reused when its sizes match): Postgres holds
/// `n` contacts and `m` memories of one tenant.
async fn prepare(
    root: &Path,
    n: usize,
    m: usize,
) -> anyhow::Result<(
    Prepared,
    crmsearch::embedded_pg::EmbeddedPostgres,
    sqlx::PgPool,
)> {
    let marker = root.join("prepared.json");
    if let Some(p) = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<Prepared>(&b).ok())
        .filter(|p| p.contacts == n && p.memories == m)
    {
        let (pg, _url, pool) = common::database(root, 4).await?;
        return Ok((p, pg, pool));
    }
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let (pg, _url, pool) = common::database(root, 4).await?;
    let anyhow_of = crmsearch::cli::anyhow_of;
    let (tenant, _) = crmsearch::auth::create_tenant(&pool, "load")
        .await
        .map_err(anyhow_of)?;
    let t = Instant::now();
    let companies = crmsearch::ops::seed::companies_for(n);
    crmsearch::ops::seed::contacts(&pool, tenant, 42, n, companies, true).await?;
    let embedder = crmsearch::embed::shared(None)
        .ok_or_else(|| anyhow::anyhow!("the embedding model is missing: run scripts/setup"))?;
    crmsearch::ops::seed::memories(&pool, tenant, 42, m, &embedder, true).await?;
    println!(
        "seeded {n} contacts and {m} memories in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    use crmsearch::auth::{Role, create_key};
    let (search_key, _) = create_key(&pool, tenant, Role::Search)
        .await
        .map_err(anyhow_of)?;
    let (agent_key, _) = create_key(&pool, tenant, Role::Agent)
        .await
        .map_err(anyhow_of)?;
    let p = Prepared {
        contacts: n,
        memories: m,
        tenant,
        search_key,
        agent_key,
    };
    std::fs::write(&marker, serde_json::to_vec(&p)?)?;
    Ok((p, pg, pool))
}

fn typo(rng: &mut StdRng, w: &str) -> String {
    let mut c: Vec<char> = w.chars().collect();
    if c.len() >= 5 {
        let i = rng.random_range(1..c.len() - 1);
        match rng.random_range(0..3) {
            0 => c.swap(i, i + 1),
            1 => {
                c.remove(i);
            }
            _ => c[i] = if c[i] == 'e' { 'a' } else { 'e' },
        }
    }
    c.into_iter().collect()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `count` requests in a seeded random order, built from the tenant's own
/// rows: what a CRM screen and its agents send.
async fn mix(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    n: usize,
    count: usize,
) -> anyhow::Result<Vec<Req>> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT first_name, last_name, country FROM contacts WHERE tenant_id = $1
          AND first_name IS NOT NULL AND last_name IS NOT NULL ORDER BY md5(id::text) LIMIT 50000",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let questions: Vec<String> = {
        let topics = [
            "how does {} like to be contacted",
            "what did {} say about pricing",
            "when is the renewal for {}",
            "what does {} care about",
            "any complaints from {}",
        ];
        rows.iter()
            .take(60)
            .enumerate()
            .map(|(i, r)| topics[i % topics.len()].replace("{}", r.0.as_deref().unwrap_or("them")))
            .collect()
    };
    let mut rng = StdRng::seed_from_u64(7);
    let total: u32 = Kind::ALL.iter().map(|k| k.1).sum();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut pick = rng.random_range(0..total);
        let kind = Kind::ALL
            .iter()
            .find(|k| {
                if pick < k.1 {
                    true
                } else {
                    pick -= k.1;
                    false
                }
            })
            .map(|k| k.0)
            .unwrap_or(Kind::Typing);
        let (first, last, country) = &rows[rng.random_range(0..rows.len())];
        let (first, last) = (
            first.as_deref().unwrap_or(""),
            last.as_deref().unwrap_or(""),
        );
        let search = |body: serde_json::Value| Req {
            kind,
            get: false,
            path: "/v1/contacts/search".into(),
            body: Bytes::from(body.to_string()),
            agent: false,
        };
        out.push(match kind {
            Kind::Typing => {
                let full: Vec<char> = format!("{first} {last}").chars().collect();
                let len = rng.random_range(1..=full.len());
                let q: String = full[..len].iter().collect();
                search(json!({"q": q.trim_end(), "limit": 20, "highlight": true,
                              "facets": ["lifecycle_stage", "country"]}))
            }
            Kind::Misspelled => search(json!({
                "q": format!("{} {}", typo(&mut rng, first), typo(&mut rng, last)),
                "limit": 20, "highlight": true,
                "facets": ["lifecycle_stage", "owner_id", "tags", "country"]})),
            Kind::Autocomplete => {
                let p: String = first.chars().take(rng.random_range(1..=6)).collect();
                Req {
                    kind,
                    get: true,
                    path: format!("/v1/contacts/autocomplete?q={}&limit=8", enc(&p)),
                    body: Bytes::new(),
                    agent: false,
                }
            }
            Kind::FacetClick => search(json!({"q": "",
                "filter": {"country": [country.as_deref().unwrap_or("DE")]},
                "facets": ["lifecycle_stage", "owner_id", "city"], "limit": 50})),
            Kind::DeepScroll => search(json!({"q": "", "sort": ["last_name:asc"],
                "offset": rng.random_range(0..n.saturating_sub(100).max(1)), "limit": 100})),
            Kind::Memory => Req {
                kind,
                get: false,
                path: "/v1/memories/search".into(),
                body: Bytes::from(
                    json!({"query": questions[rng.random_range(0..questions.len())],
                           "agent_id": crmsearch::seed::AGENTS[rng.random_range(0..3)],
                           "mode": "hybrid", "top_k": 10, "token_budget": 1500})
                    .to_string(),
                ),
                agent: true,
            },
        });
    }
    Ok(out)
}

struct Client {
    addr: String,
    keys: [String; 2],
}

impl Client {
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends `r` and reads the whole answer: its status.
    async fn send(&self, s: &mut SendRequest<Full<Bytes>>, r: &Req) -> anyhow::Result<u16> {
        Ok(self.fetch(s, r).await?.0)
    }

    /// Sends `r`: the answer's status and body.
    async fn fetch(
        &self,
        s: &mut SendRequest<Full<Bytes>>,
        r: &Req,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.fetch_encoded(s, r, "identity").await
    }

    /// [`fetch`](Self::fetch) accepting `encoding`: the body as it came
    /// over the wire.
    async fn fetch_encoded(
        &self,
        s: &mut SendRequest<Full<Bytes>>,
        r: &Req,
        encoding: &str,
    ) -> anyhow::Result<(u16, Bytes)> {
        s.ready().await?;
        let req = hyper::Request::builder()
            .header("accept-encoding", encoding)
            .method(if r.get { "GET" } else { "POST" })
            .uri(&r.path)
            .header("host", &self.addr)
            .header(
                "authorization",
                format!("Bearer {}", self.keys[usize::from(r.agent)]),
            )
            .header("content-type", "application/json")
            .body(Full::new(r.body.clone()))?;
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// The result cache's hits and misses so far, from the server's
    /// `/metrics`.
    async fn cache_counts(&self) -> anyhow::Result<(f64, f64)> {
        let metrics = Req {
            kind: Kind::Typing,
            get: true,
            path: "/metrics".into(),
            body: Bytes::new(),
            agent: false,
        };
        let (_, body) = self.fetch(&mut self.connect().await?, &metrics).await?;
        let text = String::from_utf8_lossy(&body);
        let count = |result: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("crmsearch_result_cache_total")
                        && l.contains("layer=\"memory\"")
                        && l.contains(&format!("result=\"{result}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((count("hit"), count("miss")))
    }
}

/// Runs `level` and notes the share of the result cache's lookups that hit.
async fn with_hit_rate(
    client: &Client,
    level: impl std::future::Future<Output = anyhow::Result<Level>>,
) -> anyhow::Result<Level> {
    let (h0, m0) = client.cache_counts().await?;
    let mut l = level.await?;
    let (h1, m1) = client.cache_counts().await?;
    l.hit_rate = (h1 - h0) / ((h1 - h0) + (m1 - m0)).max(1.0);
    Ok(l)
}

/// One request's outcome: kind, milliseconds, ok.
type Sample = (Kind, f64, bool);

struct Level {
    /// `closed_64`, `open`: the key of its figures.
    key: String,
    label: String,
    secs: f64,
    samples: Vec<Sample>,
    /// The share of cacheable requests the result cache answered.
    hit_rate: f64,
}

impl Level {
    fn sorted(&self, kind: Option<Kind>) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| kind.is_none_or(|k| s.0 == k))
            .map(|s| s.1)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    fn qps(&self) -> f64 {
        self.samples.len() as f64 / self.secs
    }
    fn errors(&self) -> usize {
        self.samples.iter().filter(|s| !s.2).count()
    }
}

/// `conns` connections, each sending its next request when the previous
/// answer is read, for `secs`. `next`: the mix's next request, shared by
/// every level, so no level replays what an earlier one sent.
async fn closed(
    client: &Arc<Client>,
    reqs: &Arc<Vec<Req>>,
    next: &Arc<AtomicUsize>,
    conns: usize,
    secs: f64,
) -> anyhow::Result<Level> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, reqs, next) = (client.clone(), reqs.clone(), next.clone());
        let mut s = client.connect().await?;
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<Sample> = Vec::new();
            while Instant::now() < deadline {
                let r = &reqs[next.fetch_add(1, Ordering::Relaxed) % reqs.len()];
                let t = Instant::now();
                let ok = matches!(client.send(&mut s, r).await, Ok(200));
                out.push((r.kind, t.elapsed().as_secs_f64() * 1e3, ok));
                if !ok && s.is_closed() {
                    match client.connect().await {
                        Ok(c) => s = c,
                        Err(_) => break,
                    }
                }
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    Ok(Level {
        key: format!("closed_{conns}"),
        label: format!("closed, {conns} conn"),
        secs: start.elapsed().as_secs_f64(),
        samples,
        hit_rate: f64::NAN,
    })
}

/// A fixed rate for `secs` over a pool of `conns` connections; latency is
/// counted from each request's scheduled time.
async fn open(
    client: &Arc<Client>,
    reqs: &Arc<Vec<Req>>,
    next: &Arc<AtomicUsize>,
    rate: f64,
    conns: usize,
    secs: f64,
) -> anyhow::Result<Level> {
    let (tx, rx) = tokio::sync::mpsc::channel(conns);
    for _ in 0..conns {
        tx.send(client.connect().await?).await?;
    }
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let total = (rate * secs) as usize;
    let first = next.fetch_add(total, Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (client, reqs, tx, rx) = (client.clone(), reqs.clone(), tx.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let r = &reqs[(first + i) % reqs.len()];
            let mut s = rx.lock().await.recv().await.expect("the pool is open");
            let ok = matches!(client.send(&mut s, r).await, Ok(200));
            let ms = at.elapsed().as_secs_f64() * 1e3;
            if s.is_closed()
                && let Ok(c) = client.connect().await
            {
                s = c;
            }
            let _ = tx.send(s).await;
            (r.kind, ms, ok)
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for t in tasks {
        samples.push(t.await?);
    }
    Ok(Level {
        key: "open".into(),
        label: format!("open, {rate:.0}/s"),
        secs: start.elapsed().as_secs_f64(),
        samples,
        hit_rate: f64::NAN,
    })
}

struct Server {
    child: std::process::Child,
    addr: String,
}

/// A `redis-server` on a free loopback port, without persistence; killed
/// when dropped.
struct Redis {
    child: Option<std::process::Child>,
    port: u16,
}

impl Redis {
    fn start() -> anyhow::Result<Self> {
        let mut r = Self {
            child: None,
            port: free_port()?,
        };
        r.restart()?;
        Ok(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.child = Some(
            std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the production surface costs and gives: the rate limiter and the
/// Redis layer of the result cache against both off, the shared cache warm,
/// bytes on the wire per encoding, and Redis killed under load.
struct Surface {
    /// One connection: limits off, limits in the process, limits and cache in Redis.
    sequential: [Level; 3],
    /// 64 connections on a fresh server: Redis empty, then warm from that pass.
    cold: Level,
    warm: Level,
    /// Redis killed a third of the way in, back at two thirds.
    killed: Level,
    /// A 50-hit page: (encoding, bytes on the wire).
    page: Vec<(&'static str, usize)>,
}

async fn surface(
    root: &Path,
    keys: &[String; 2],
    reqs: &Arc<Vec<Req>>,
    next: &Arc<AtomicUsize>,
    secs: f64,
) -> anyhow::Result<Surface> {
    // budgets no request reaches: what a decision costs, not refusals
    let roomy = "{ per_second = 1000000, burst = 1000000 }";
    let mut config = String::from("[rate_limits]\n");
    for scope in ["ip", "tiers.free.tenant", "tiers.free.key"] {
        config += &format!(
            "[rate_limits.{scope}]\nsearch = {roomy}\nwrite = {roomy}\nbulk = {roomy}\nmemory = {roomy}\n"
        );
    }
    let file = root.join("surface.toml");
    std::fs::write(&file, config)?;
    let file = file.to_str().unwrap_or_default().to_owned();
    let mut redis = Redis::start()?;
    let url = redis.url();
    let limited = [
        ("CRMSEARCH_RATE_LIMITS", "on"),
        ("CRMSEARCH_CONFIG", file.as_str()),
    ];
    let with_redis = [limited[0], limited[1], ("REDIS_URL", url.as_str())];
    let client_of = |s: &Server| {
        Arc::new(Client {
            addr: s.addr.clone(),
            keys: keys.clone(),
        })
    };
    let mut sequential = Vec::new();
    for (label, env) in [
        ("limits off", &[][..]),
        ("limits in the process", &limited[..]),
        ("limits and result cache in Redis", &with_redis[..]),
    ] {
        let (server, _) = start_server(root, env).await?;
        let client = client_of(&server);
        let mut l = closed(&client, reqs, next, 1, secs).await?;
        l.label = format!("1 conn, {label}");
        println!("{}: {:.0} req/s, {} errors", l.label, l.qps(), l.errors());
        sequential.push(l);
        stop_server(server)?;
    }
    // the same requests twice on fresh servers: the second time every
    // search answer is in Redis (and none in the process)
    let from = next.fetch_add(0, Ordering::Relaxed);
    let mut passes = Vec::new();
    for label in ["64 conn, Redis cache cold", "64 conn, Redis cache warm"] {
        let (server, _) = start_server(root, &with_redis).await?;
        let client = client_of(&server);
        next.store(from, Ordering::Relaxed);
        let mut l = closed(&client, reqs, next, 64, secs).await?;
        l.label = label.into();
        println!("{}: {:.0} req/s, {} errors", l.label, l.qps(), l.errors());
        passes.push(l);
        stop_server(server)?;
    }
    // a 50-hit page, as it travels
    let (server, _) = start_server(root, &with_redis).await?;
    let client = client_of(&server);
    let page = Req {
        kind: Kind::Typing,
        get: false,
        path: "/v1/contacts/search".into(),
        body: Bytes::from(
            json!({"q": "an", "limit": 50, "facets": ["country", "lifecycle_stage"]}).to_string(),
        ),
        agent: false,
    };
    let mut conn = client.connect().await?;
    let mut sizes = Vec::new();
    for enc in ["identity", "gzip", "br", "zstd"] {
        let (status, body) = client.fetch_encoded(&mut conn, &page, enc).await?;
        anyhow::ensure!(status == 200, "the page answered {status}");
        sizes.push((enc, body.len()));
    }
    // Redis killed under 64 connections, and back
    let load = {
        let (client, reqs, next) = (client.clone(), reqs.clone(), next.clone());
        tokio::spawn(async move { closed(&client, &reqs, &next, 64, secs).await })
    };
    tokio::time::sleep(Duration::from_secs_f64(secs / 3.0)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs_f64(secs / 3.0)).await;
    redis.restart()?;
    let mut killed = load.await??;
    killed.label = "64 conn, Redis killed and restarted".into();
    println!(
        "{}: {:.0} req/s, {} errors",
        killed.label,
        killed.qps(),
        killed.errors()
    );
    stop_server(server)?;
    let [off, local, shared]: [Level; 3] = sequential
        .try_into()
        .map_err(|_| anyhow::anyhow!("three sequential levels"))?;
    let [cold, warm]: [Level; 2] = passes
        .try_into()
        .map_err(|_| anyhow::anyhow!("two passes"))?;
    Ok(Surface {
        sequential: [off, local, shared],
        cold,
        warm,
        killed,
        page: sizes,
    })
}

impl Surface {
    /// Its part of the load section; `uncached`: 64 connections with the
    /// result cache off, measured earlier in the run.
    fn report(&self, r: &mut Results, uncached: &Level) -> String {
        let mut md = String::from(
            "### The production surface: rate limits, the Redis result cache, compression\n\n\
             Each row a fresh server over the same data; Redis (`redis-server`) on loopback; \
             budgets set so that no request is refused (what a decision costs, not refusals).\n\n\
             | level | requests | throughput | p50 | p99 | errors |\n|---|---|---|---|---|---|\n",
        );
        let rows = self
            .sequential
            .iter()
            .chain([&self.cold, &self.warm, uncached, &self.killed]);
        for l in rows {
            let s = l.sorted(None);
            md += &format!(
                "| {} | {} | {:.0}/s | {:.2} ms | {:.2} ms | {} |\n",
                l.label,
                s.len(),
                l.qps(),
                pct(&s, 0.5),
                pct(&s, 0.99),
                l.errors()
            );
        }
        let [off, local, shared] = &self.sequential;
        let (so, sl, ss) = (off.sorted(None), local.sorted(None), shared.sorted(None));
        let cost = |s: &[f64], p: f64| pct(s, p) - pct(&so, p);
        md += &format!(
            "\nAdded per request, one connection: the limiter in the process {:+.3} ms at p50, \
             {:+.3} ms at p99; the limiter and the result cache in Redis {:+.3} ms at p50, \
             {:+.3} ms at p99. At 64 connections with every search answer already in Redis \
             (a fresh server: none in the process) {:.0}/s against {:.0}/s with Redis empty \
             and {:.0}/s with the result cache off. Redis killed for a third of a {:.0} s run \
             under 64 connections: {} failed requests of {} (goal 0).\n\n\
             A 50-hit page with two facets, as it travels: {}.\n\n",
            cost(&sl, 0.5),
            cost(&sl, 0.99),
            cost(&ss, 0.5),
            cost(&ss, 0.99),
            self.warm.qps(),
            self.cold.qps(),
            uncached.qps(),
            self.killed.secs,
            self.killed.errors(),
            self.killed.samples.len(),
            self.page
                .iter()
                .map(|(e, b)| format!("{e} {b} bytes"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        r.metric("surface.limiter_p50_ms", cost(&sl, 0.5));
        r.metric("surface.limiter_p99_ms", cost(&sl, 0.99));
        r.metric("surface.redis_p50_ms", cost(&ss, 0.5));
        r.metric("surface.redis_p99_ms", cost(&ss, 0.99));
        r.metric("surface.warm_qps", self.warm.qps());
        r.metric("surface.redis_killed_errors", self.killed.errors() as f64);
        for (e, b) in &self.page {
            r.metric(&format!("surface.page_bytes.{e}"), *b as f64);
        }
        md
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `crmsearch serve` on the data folder; returns once `/readyz`
/// answers 200, with the time that took.
/// `env`: settings of the server besides its address.
async fn start_server(root: &Path, env: &[(&str, &str)]) -> anyhow::Result<(Server, f64)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("server.log"))?;
    let t = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_crmsearch"))
        .arg("--data-dir")
        .arg(root)
        .arg("serve")
        // its own embedded Postgres and Redis, never the caller's shell's
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("CRMSEARCH_ADDR", &addr)
        // the engine's throughput: no budgets unless a run asks for them
        .env("CRMSEARCH_RATE_LIMITS", "off")
        .envs(env.iter().copied())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let server = Server { child, addr };
    let client = Client {
        addr: server.addr.clone(),
        keys: [String::new(), String::new()],
    };
    let ready = Req {
        kind: Kind::Typing,
        get: true,
        path: "/readyz".into(),
        body: Bytes::new(),
        agent: false,
    };
    loop {
        if let Ok(mut s) = client.connect().await
            && let Ok(200) = client.send(&mut s, &ready).await
        {
            return Ok((server, t.elapsed().as_secs_f64()));
        }
        if t.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!(
                "the server was not ready after 30 minutes; see {}/server.log",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn stop_server(mut s: Server) -> anyhow::Result<()> {
    std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()?;
    s.child.wait()?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !common::begin() {
        return Ok(());
    }
    let n = env("LOAD_CONTACTS", 500_000usize);
    let m = env("LOAD_MEMORIES", 5_000usize);
    let secs = env("LOAD_SECS", 20.0f64);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-load");
    // the server process shares this embedded Postgres; it stops when `pg`
    // (the last user) is dropped at the end
    let (prep, pg, pool) = prepare(&root, n, m).await?;
    // more requests than the levels send: none is sent twice but for the
    // repeats the mix has of itself (short prefixes, countries, questions)
    let reqs = Arc::new(mix(&pool, prep.tenant, n, 400_000).await?);
    pool.close().await;

    // first start (may index a snapshot), then the restart that is measured
    let (server, first_secs) = start_server(&root, &[]).await?;
    println!("first start to ready: {first_secs:.1} s");
    stop_server(server)?;
    let (server, restart_secs) = start_server(&root, &[]).await?;
    println!("restart to ready: {:.0} ms", restart_secs * 1e3);
    let keys = [prep.search_key.clone(), prep.agent_key.clone()];
    let client = Arc::new(Client {
        addr: server.addr.clone(),
        keys: keys.clone(),
    });
    let pid = server.child.id().to_string();
    let rss_ready = common::rss_mib(&pid);

    // warm-up: every distinct memory question once (the query-vector cache),
    // and the index pages
    let next = Arc::new(AtomicUsize::new(0));
    let _ = closed(&client, &reqs, &next, 2, secs.min(5.0)).await?;
    let mut levels = Vec::new();
    for conns in [1, 8, 64] {
        let l = with_hit_rate(&client, closed(&client, &reqs, &next, conns, secs)).await?;
        println!("{}: {:.0} req/s, {} errors", l.label, l.qps(), l.errors());
        levels.push(l);
    }
    let best = levels.iter().map(Level::qps).fold(0.0, f64::max);
    let rate = env("LOAD_RATE", (best * 0.5).round().max(1.0));
    let l = with_hit_rate(&client, open(&client, &reqs, &next, rate, 64, secs)).await?;
    println!("{}: {:.0} req/s, {} errors", l.label, l.qps(), l.errors());
    levels.push(l);
    let rss_after = common::rss_mib(&pid);
    stop_server(server)?;

    // the same 64 connections with the result cache off: what it is worth
    let (server, _) = start_server(&root, &[("CRMSEARCH_RESULT_CACHE_MB", "0")]).await?;
    let client = Arc::new(Client {
        addr: server.addr.clone(),
        keys: keys.clone(),
    });
    let _ = closed(&client, &reqs, &next, 2, secs.min(5.0)).await?;
    let mut l = closed(&client, &reqs, &next, 64, secs).await?;
    l.key = "closed_64_uncached".into();
    l.label = "closed, 64 conn, result cache off".into();
    println!("{}: {:.0} req/s, {} errors", l.label, l.qps(), l.errors());
    levels.push(l);
    stop_server(server)?;

    let surface = surface(&root, &keys, &reqs, &next, secs).await?;

    // the report
    let mut r = Results::new(
        "load",
        format!("LOAD_CONTACTS={n} LOAD_MEMORIES={m} LOAD_SECS={secs} cargo bench --bench load"),
    );
    let mut md = format!(
        "## End-to-end load over HTTP (`cargo bench --bench load`)\n\n\
         `crmsearch serve` on {n} contacts and {m} memories of one tenant \
         (`crmsearch seed`, seed 42; memories embedded by the model), embedded Postgres, \
         and this load generator (hyper, keep-alive connections) — all on the same 2 cores, \
         so the generator takes CPU from the server. {secs:.0} s per level. The mix, \
         drawn from {} of the tenant's contacts; the levels walk one sequence of \
         400,000 requests, so a request repeats only where the mix repeats itself:\n\n",
        n.min(50_000)
    );
    for (k, w, what) in Kind::ALL {
        md += &format!("- {w} % {what} (`{k:?}`)\n");
    }
    md += "\nMemory questions repeat (60 distinct), so their query vectors come from the \
           cache after the warm-up; an uncached question costs the model one embedding \
           (see the embedding bench).\n\n\
           | level | requests | throughput | p50 | p95 | p99 | max | errors | result cache hits |\n|---|---|---|---|---|---|---|---|---|\n";
    let mut qps_p99 = Vec::new();
    for l in &levels {
        let s = l.sorted(None);
        md += &format!(
            "| {} | {} | {:.0}/s | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms | {} | {} |\n",
            l.label,
            s.len(),
            l.qps(),
            pct(&s, 0.5),
            pct(&s, 0.95),
            pct(&s, 0.99),
            s.last().copied().unwrap_or(f64::NAN),
            l.errors(),
            if l.hit_rate.is_finite() {
                format!("{:.0} %", l.hit_rate * 100.0)
            } else {
                "off".into()
            }
        );
        let key = &l.key;
        r.metric(&format!("{key}.qps"), l.qps());
        r.metric(&format!("{key}.p99_ms"), pct(&s, 0.99));
        r.metric(&format!("{key}.errors"), l.errors() as f64);
        r.cdf("load-cdf", "HTTP latency by load level (mix)", &l.label, &s);
        if ["closed_1", "closed_8", "closed_64"].contains(&key.as_str()) {
            qps_p99.push((l.qps(), pct(&s, 0.99)));
        }
    }
    r.xy(
        "load-qps-p99",
        "Throughput against p99 (closed loop: 1, 8, 64 connections)",
        ("throughput (requests/s)", "p99 latency (ms)"),
        "crmsearch over HTTP",
        qps_p99,
    );
    let (at64, off) = (&levels[2], &levels[4]);
    let (s64, s_off) = (at64.sorted(None), off.sorted(None));
    r.xy(
        "load-qps-p99",
        "Throughput against p99 (closed loop: 1, 8, 64 connections)",
        ("throughput (requests/s)", "p99 latency (ms)"),
        "result cache off, 64 connections",
        vec![(off.qps(), pct(&s_off, 0.99))],
    );
    md += &format!(
        "\nGoal ≥ 2,000 requests/s at p99 ≤ 25 ms with 64 connections: {:.0}/s at p99 {:.1} ms — {}.\n\n",
        at64.qps(),
        pct(&s64, 0.99),
        if at64.qps() >= 2000.0 && pct(&s64, 0.99) <= 25.0 {
            "met".to_owned()
        } else {
            format!(
                "missed ({} of the throughput goal)",
                ratio(at64.qps(), 2000.0)
            )
        }
    );
    md += &format!(
        "The result cache (answers of contact/company searches and autocomplete per tenant, \
         served while the tenant's documents are unchanged; memory searches are not cached: \
         their recency moves with the clock) against the same 64 connections with it off, \
         on requests the earlier levels did not send: {:.0}/s against {:.0}/s ({} the \
         throughput), p50 {:.1} ms against {:.1} ms, p99 {:.1} ms against {:.1} ms. With 64 \
         connections always waiting, latency here is set by throughput (the mean wait is \
         64 ÷ requests/s); the open loop shows latency at a rate the server keeps up with.\n\n",
        at64.qps(),
        off.qps(),
        ratio(at64.qps(), off.qps()),
        pct(&s64, 0.5),
        pct(&s_off, 0.5),
        pct(&s64, 0.99),
        pct(&s_off, 0.99),
    );
    md += "By request kind at 8 connections:\n\n| kind | n | p50 | p99 |\n|---|---|---|---|\n";
    let mut by_kind: BTreeMap<Kind, ()> = BTreeMap::new();
    for s in &levels[1].samples {
        by_kind.insert(s.0, ());
    }
    for k in by_kind.keys() {
        let s = levels[1].sorted(Some(*k));
        md += &format!(
            "| `{k:?}` | {} | {:.2} ms | {:.2} ms |\n",
            s.len(),
            pct(&s, 0.5),
            pct(&s, 0.99)
        );
    }
    md += &format!(
        "\n| server process | value |\n|---|---|\n\
         | restart to ready (SIGTERM, exec, embedded Postgres reused, index opened, `/readyz` 200) | {:.0} ms |\n\
         | first start to ready (this run; a fresh data folder indexes its snapshot first) | {first_secs:.1} s |\n\
         | RSS when ready / after the load (peak) | {:.0} MiB / {:.0} MiB ({:.0} MiB) |\n",
        restart_secs * 1e3,
        rss_ready.0,
        rss_after.0,
        rss_after.1,
    );
    r.metric("restart_ms", restart_secs * 1e3);
    r.metric("rss_mib", rss_after.0);
    md += &surface.report(&mut r, off);
    r.md = md;
    r.write()?;
    drop(pg);
    Ok(())
}
