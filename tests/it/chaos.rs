//! The chaos suite: the real binary under mixed writes (plain SQL and the
//! API: inserts, updates of a fifth of the rows, deletes, company renames,
//! memories with vectors, a TRUNCATE), killed with SIGKILL at random
//! moments and at chosen ones (during a durable commit, a merge, a snapshot
//! bootstrap, a reindex, a vector dump), twice within a second, a stage
//! failing in process, Postgres restarted mid-stream, the replication slot
//! dropped while the service is down. After every cycle: every contact,
//! company, memory and vector equals Postgres (missing, ghost, stale,
//! doubled: 0) and the index reached the server's position.
//!
//! `chaos_cycles_converge` runs each fault twice (CI); `scripts/chaos` runs
//! `chaos_long` (50 cycles, `CHAOS_CYCLES` to change) and prints figures,
//! also written to `target/bench-results/chaos.json` for BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

use crate::crash::{database_url, try_pg_ctl};
use crate::embedded::{
    create_tenant, data_dir, http, runtime, serve_with, signal, try_http, wait_exit,
};

/// The faults, in the order the short run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillAtRandom,
    /// A second SIGKILL within a second of the restart, before its first
    /// durable commit is certain.
    DoubleKill,
    /// The process aborts at the `n`th pass through a fail point.
    AbortAt(&'static str, u32),
    /// A commit fails once in process: the supervisor restarts the stages.
    StageError,
    PostgresRestart,
    /// The slot is dropped while the service is down: a snapshot at start.
    SlotDropped,
    /// The same, killed in the middle of that snapshot.
    KillDuringSnapshot,
    /// SIGKILL in the middle of a reindex.
    KillDuringReindex,
    /// A commit never returns: `/readyz` must say the index is stalled;
    /// the operator restarts the process.
    StuckCommit,
}

const ALL: &[Fault] = &[
    Fault::KillAtRandom,
    Fault::DoubleKill,
    Fault::AbortAt("durable_commit", 2),
    Fault::StageError,
    Fault::AbortAt("merge", 1),
    Fault::AbortAt("swap_generation", 1),
    Fault::KillDuringReindex,
    Fault::AbortAt("vector_dump", 1),
    Fault::PostgresRestart,
    Fault::SlotDropped,
    Fault::KillDuringSnapshot,
    Fault::StuckCommit,
];

#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    cycles: usize,
    writes: u64,
    lost: usize,
    ghost: usize,
    stale: usize,
    doubled: usize,
    vectors_missing: usize,
    vectors_ghost: usize,
    /// From a restart to the index at the server's position then (ms).
    catch_up_ms: Vec<u64>,
    /// The longest of those after each kind of fault.
    catch_up_max_by_fault: std::collections::BTreeMap<String, u64>,
    /// Faults injected, and the supervisor restarts they caused (in
    /// process restarts; a killed process starts over with 0).
    faults: usize,
    stage_errors: usize,
    supervisor_restarts: u64,
}

struct Chaos {
    data: PathBuf,
    tenant: Uuid,
    admin: String,
    rt: tokio::runtime::Runtime,
    pool: PgPool,
    server: Option<(Child, String)>,
    rng: StdRng,
    figures: Figures,
}

/// The default: soft commits between durable ones are what a crash leaves
/// behind.
const DURABLE_INTERVAL: (&str, &str) = ("CRMSEARCH_DURABLE_INTERVAL_MS", "1000");
const CONTACTS: usize = 3_000;
const COMPANIES: usize = 30;
const MEMORIES: usize = 300;

impl Chaos {
    fn new(name: &str, seed: u64) -> Self {
        let data = data_dir(name);
        let (tenant, admin) = create_tenant(&data, "chaos");
        let rt = runtime();
        // (the embedded Postgres runs while a server does)
        let server = serve_with(&data, &[DURABLE_INTERVAL]).expect("serve exited before listening");
        let pool = rt.block_on(PgPool::connect(&database_url(&data))).unwrap();
        let mut c = Self {
            data,
            tenant,
            admin,
            rt,
            pool,
            server: Some(server),
            rng: StdRng::seed_from_u64(seed),
            figures: Figures::default(),
        };
        c.load();
        c
    }

    fn addr(&self) -> &str {
        &self.server.as_ref().expect("a server runs").1
    }

    /// Starts `serve`; `None` when it exited before listening (a fail
    /// point at start).
    fn try_start(&mut self, env: &[(&str, &str)]) -> bool {
        let mut all = vec![DURABLE_INTERVAL];
        all.extend_from_slice(env);
        self.server = serve_with(&self.data, &all);
        self.server.is_some()
    }

    fn start(&mut self, env: &[(&str, &str)]) {
        assert!(self.try_start(env), "serve exited before listening");
    }

    fn kill(&mut self) {
        if let Some((mut child, _)) = self.server.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            wait_exit(&mut child);
        }
    }

    /// Waits at most `limit` for the server to exit by itself (a fail
    /// point); kills it otherwise. Whether it exited by itself.
    fn wait_abort(&mut self, limit: Duration) -> bool {
        let Some((mut child, _)) = self.server.take() else {
            return true;
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal(child.id(), "-KILL");
        wait_exit(&mut child);
        false
    }

    /// The first data: companies and memories in SQL, contacts through the
    /// bulk API.
    fn load(&mut self) {
        let (pool, tenant) = (self.pool.clone(), self.tenant);
        self.rt.block_on(async {
            for i in 0..COMPANIES {
                sqlx::query("INSERT INTO companies (tenant_id, name) VALUES ($1, $2)")
                    .bind(tenant)
                    .bind(format!("Company{i}"))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            insert_memories(&pool, tenant, MEMORIES, 1).await.unwrap();
        });
        let body: String = (0..CONTACTS)
            .map(|i| {
                format!(
                    "{{\"external_id\":\"c{i}\",\"first_name\":\"First{i}\",\"last_name\":\"Last{i}\",\"city\":\"City{}\"}}\n",
                    i % 17
                )
            })
            .collect();
        let (status, resp) = http(self.addr(), "POST", "/v1/contacts/bulk", &self.admin, &body);
        assert_eq!(status, 200, "{resp}");
        self.rt.block_on(async {
            sqlx::query(
                "UPDATE contacts c SET company_id = co.id FROM companies co
                  WHERE c.tenant_id = $1 AND co.tenant_id = $1
                    AND co.name = 'Company' || (abs(hashtext(c.id::text)) % $2)",
            )
            .bind(tenant)
            .bind(COMPANIES as i32)
            .execute(&pool)
            .await
            .unwrap();
        });
        self.converge();
    }

    /// Mixed writes until `stop`: plain SQL transactions of every kind, and
    /// contacts through the API when the server answers.
    fn start_writer(&self, stop: Arc<AtomicBool>, seed: u64) -> tokio::task::JoinHandle<u64> {
        let (pool, tenant) = (self.pool.clone(), self.tenant);
        let (addr, admin) = (
            self.server.as_ref().map(|s| s.1.clone()),
            self.admin.clone(),
        );
        let writes = Arc::new(AtomicU64::new(0));
        self.rt.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while !stop.load(Ordering::Relaxed) {
                let kind = rng.random_range(0..10u32);
                match write_once(&pool, tenant, kind, &mut rng).await {
                    Ok(n) => {
                        writes.fetch_add(n, Ordering::Relaxed);
                    }
                    // only outages are expected
                    Err(e) => {
                        assert!(
                            !matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()),
                            "{e}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                if kind == 0
                    && let Some(addr) = addr.clone()
                {
                    let admin = admin.clone();
                    let body = format!(
                        "{{\"last_name\":\"Api{}\",\"emails\":[\"api{}@example.com\"]}}",
                        rng.random::<u32>(),
                        rng.random::<u32>()
                    );
                    // the server may be down or dying: any answer will do
                    let _ = tokio::task::spawn_blocking(move || {
                        try_http(&addr, "POST", "/v1/contacts", &admin, &body)
                    })
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
            writes.load(Ordering::Relaxed)
        })
    }

    /// Writes for `for_ms` while `fault` happens; restarts the service and
    /// checks it converged.
    fn cycle(&mut self, fault: Fault, n: usize) {
        eprintln!("chaos cycle {n}: {fault:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = self.start_writer(stop.clone(), n as u64);
        let wait = Duration::from_millis(self.rng.random_range(200..1500));
        self.figures.faults += 1;
        match fault {
            Fault::KillAtRandom => {
                std::thread::sleep(wait);
                self.kill();
            }
            Fault::DoubleKill => {
                std::thread::sleep(wait);
                self.kill();
                self.start(&[]);
                std::thread::sleep(Duration::from_millis(self.rng.random_range(50..900)));
                self.kill();
            }
            Fault::AbortAt(point, nth) => {
                let spec = format!("{point}:{nth}:abort");
                self.kill();
                self.start(&[("CRMSEARCH_FAILPOINT", &spec)]);
                if point == "vector_dump" {
                    // a dump runs at shutdown
                    std::thread::sleep(wait);
                    let pid = self.server.as_ref().unwrap().0.id();
                    signal(pid, "-TERM");
                }
                if point == "merge" || point == "swap_generation" {
                    // a merge runs at the end of a reindex's snapshot, and
                    // the new generation is swapped in after it
                    let (status, body) = self.start_reindex();
                    assert_eq!(status, 202, "{body}");
                }
                let aborted = self.wait_abort(Duration::from_secs(20));
                eprintln!("  fail point {point} reached: {aborted}");
            }
            Fault::StageError => {
                self.kill();
                self.start(&[("CRMSEARCH_FAILPOINT", "soft_commit:3:error")]);
                std::thread::sleep(wait + Duration::from_millis(1500));
                let st = self.status();
                let restarts = st["pipeline"]["restarts"].as_u64().unwrap_or(0);
                assert!(restarts >= 1, "the supervisor restarted the pipeline: {st}");
                self.figures.stage_errors += 1;
                self.figures.supervisor_restarts += restarts;
            }
            Fault::StuckCommit => {
                self.kill();
                self.start(&[("CRMSEARCH_FAILPOINT", "soft_commit:3:hang")]);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let (status, body) = http(self.addr(), "GET", "/readyz", &self.admin, "");
                    if status == 503 && body.contains("index_stalled") {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "a stuck index never said so: {body}"
                    );
                    std::thread::sleep(Duration::from_millis(250));
                }
                self.kill();
            }
            Fault::PostgresRestart => {
                std::thread::sleep(wait);
                let log = self.data.join("postgres/postgres.log");
                // A fast shutdown waits until the logical walsender is
                // acknowledged for all WAL; twice in ~10 suite runs (under a
                // loaded machine, right after a restart that replays a
                // backlog) it waited past 300 s. Postgres then goes down
                // the hard way (immediate: a crash and recovery), which the
                // indexer must survive as well; the rest of the cycle checks
                // that it converged.
                // (restart, not stop and start: it keeps the server's options)
                let restart = |mode| {
                    try_pg_ctl(
                        &self.data,
                        &[
                            "-m",
                            mode,
                            "-w",
                            "-t",
                            "90",
                            "-l",
                            log.to_str().unwrap(),
                            "restart",
                        ],
                    )
                };
                if let Err(e) = restart("fast") {
                    eprintln!("  fast shutdown did not finish ({}); immediate", e.trim());
                    if let Err(e) = restart("immediate") {
                        panic!("pg_ctl restart -m immediate: {e}");
                    }
                }
            }
            Fault::SlotDropped | Fault::KillDuringSnapshot => {
                std::thread::sleep(wait);
                let slot = self.status()["slot"].as_str().unwrap().to_owned();
                self.kill();
                self.drop_slot(&slot);
                if fault == Fault::KillDuringSnapshot {
                    let started = self.try_start(&[("CRMSEARCH_FAILPOINT", "snapshot:1:abort")]);
                    assert!(!started || self.wait_abort(Duration::from_secs(20)));
                }
            }
            Fault::KillDuringReindex => {
                std::thread::sleep(wait);
                let (status, body) = self.start_reindex();
                assert_eq!(status, 202, "{body}");
                std::thread::sleep(Duration::from_millis(self.rng.random_range(100..800)));
                self.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        self.figures.writes += self.rt.block_on(writer).unwrap();
        if self.server.is_none() {
            let restarted = Instant::now();
            self.start(&[]);
            let server = self
                .rt
                .block_on(indexer::wal::position(&self.pool))
                .unwrap();
            self.wait_applied(server);
            let ms = restarted.elapsed().as_millis() as u64;
            self.figures.catch_up_ms.push(ms);
            let by = self
                .figures
                .catch_up_max_by_fault
                .entry(format!("{fault:?}"))
                .or_default();
            *by = (*by).max(ms);
        }
        if fault == Fault::SlotDropped {
            assert_eq!(
                self.status()["pipeline"]["state"],
                "running",
                "rebuilt at start"
            );
        }
        self.converge();
        // the TRUNCATE, once per run, early
        if n == 1 {
            let (pool, tenant) = (self.pool.clone(), self.tenant);
            self.rt.block_on(async {
                sqlx::query("TRUNCATE memories")
                    .execute(&pool)
                    .await
                    .unwrap();
                insert_memories(&pool, tenant, MEMORIES / 2, 7)
                    .await
                    .unwrap();
            });
            self.converge();
        }
        self.figures.cycles += 1;
    }

    fn drop_slot(&self, slot: &str) {
        self.rt
            .block_on(
                sqlx::query("SELECT pg_drop_replication_slot($1)")
                    .bind(slot)
                    .execute(&self.pool),
            )
            .unwrap();
    }

    /// `POST /v1/admin/reindex` (the master key's: a reindex rewrites
    /// every tenant).
    fn start_reindex(&self) -> (u16, String) {
        http(
            self.addr(),
            "POST",
            "/v1/admin/reindex",
            crate::common::MASTER_KEY,
            "{}",
        )
    }

    fn status(&self) -> serde_json::Value {
        // the whole deployment's view (a tenant's admin sees its own)
        let (status, body) = http(
            self.addr(),
            "GET",
            "/v1/admin/status",
            crate::common::MASTER_KEY,
            "",
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Until the index has applied `lsn` (at most a minute).
    fn wait_applied(&self, lsn: indexer::Lsn) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = self.status();
            let applied: indexer::Lsn = st["applied_lsn"].as_str().unwrap().parse().unwrap();
            if applied >= lsn {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the index did not catch up: {st}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index equals Postgres: verify finds no drift, and no document
    /// is there twice.
    fn converge(&mut self) {
        let server = self
            .rt
            .block_on(indexer::wal::position(&self.pool))
            .unwrap();
        self.wait_applied(server);
        let (status, body) = http(
            self.addr(),
            "POST",
            &format!("/v1/admin/verify?tenant={}", self.tenant),
            &self.admin,
            "",
        );
        assert_eq!(status, 200, "{body}");
        let report: indexer::verify::Report = serde_json::from_str(&body).unwrap();
        let f = &mut self.figures;
        for t in &report.tables {
            f.lost += t.missing.len();
            f.ghost += t.ghost.len();
            f.stale += t.stale.len();
            f.vectors_missing += t.vectors_missing.len();
            f.vectors_ghost += t.vectors_ghost.len();
        }
        let docs = self.status()["documents"].clone();
        let (pool, tenant) = (self.pool.clone(), self.tenant);
        let rows: (i64, i64, i64) = self.rt.block_on(async {
            let count = async |table: &str| -> i64 {
                sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {table} WHERE tenant_id = $1"
                ))
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap()
            };
            (
                count("contacts").await,
                count("companies").await,
                count("memories").await,
            )
        });
        let doubled =
            |docs: &serde_json::Value, rows: i64| (docs.as_i64().unwrap() - rows).max(0) as usize;
        self.figures.doubled += doubled(&docs["contacts"], rows.0)
            + doubled(&docs["companies"], rows.1)
            + doubled(&docs["memories"], rows.2);
        assert_eq!(
            report.drifted(),
            0,
            "the index differs from Postgres: {}",
            serde_json::to_string(&report.tables).unwrap()
        );
        assert_eq!(
            (
                docs["contacts"].as_i64(),
                docs["companies"].as_i64(),
                docs["memories"].as_i64()
            ),
            (Some(rows.0), Some(rows.1), Some(rows.2)),
            "documents vs rows"
        );
        // the vectors are the rows' own: a memory's embedding finds it first
        self.assert_vectors_current();
    }

    fn assert_vectors_current(&self) {
        let sample: Vec<(Uuid, String, String)> = self
            .rt
            .block_on(
                sqlx::query_as(
                    "SELECT id, agent_id, embedding::text FROM memories
                      WHERE tenant_id = $1 AND embedding IS NOT NULL ORDER BY updated_at DESC LIMIT 5",
                )
                .bind(self.tenant)
                .fetch_all(&self.pool),
            )
            .unwrap();
        for (id, agent, embedding) in sample {
            let body = format!(
                "{{\"embedding\": {embedding}, \"agent_id\": \"{agent}\", \"mode\": \"semantic\", \"top_k\": 1, \
                 \"weights\": {{\"recency\": 0, \"importance\": 0}}, \"diversity\": 0}}"
            );
            let (status, resp) = http(
                self.addr(),
                "POST",
                "/v1/memories/search",
                &self.admin,
                &body,
            );
            assert_eq!(status, 200, "{resp}");
            let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
            assert_eq!(
                v["memories"][0]["id"].as_str(),
                Some(id.to_string().as_str()),
                "a memory's current vector finds it: {resp}"
            );
        }
    }

    fn finish(mut self) -> Figures {
        if let Some((child, _)) = self.server.take() {
            signal(child.id(), "-TERM");
            let mut child = child;
            wait_exit(&mut child);
        }
        self.rt.block_on(self.pool.close());
        let _ = std::fs::remove_dir_all(&self.data);
        std::mem::take(&mut self.figures)
    }
}

impl Drop for Chaos {
    /// A run that failed midway stops what it started: its server, and the
    /// embedded Postgres that outlives a killed server (left running, a
    /// walsender waiting on the dead run spun a core for an hour).
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.server.take() {
            let _ = child.kill();
            wait_exit(&mut child);
        }
        if self.data.exists() {
            let _ = try_pg_ctl(&self.data, &["-m", "immediate", "-w", "stop"]);
        }
    }
}

/// A random unit vector of 384 dimensions, as pgvector text.
fn vector_text(rng: &mut StdRng) -> String {
    let v: Vec<f32> = (0..schema::EMBEDDING_DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let parts: Vec<String> = v.iter().map(|x| format!("{:.5}", x / norm)).collect();
    format!("[{}]", parts.join(","))
}

async fn insert_memories(pool: &PgPool, tenant: Uuid, n: usize, seed: u64) -> sqlx::Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tx = pool.begin().await?;
    for i in 0..n {
        sqlx::query(
            "INSERT INTO memories (tenant_id, agent_id, subject_id, kind, content, embedding)
             VALUES ($1, $2, $3, 'fact', $4, $5::vector)",
        )
        .bind(tenant)
        .bind(format!("agent{}", i % 3))
        .bind(format!("subject{}", i % 11))
        .bind(format!("memory {i} of seed {seed}"))
        .bind(vector_text(&mut rng))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(n as u64)
}

/// One statement on the tenant's rows: the rows it wrote.
async fn on_tenant(
    tx: &mut sqlx::PgConnection,
    sql: &str,
    tenant: Uuid,
    vector: Option<String>,
) -> sqlx::Result<u64> {
    let mut q = sqlx::query(sql).bind(tenant);
    if let Some(v) = vector {
        q = q.bind(v);
    }
    Ok(q.execute(tx).await?.rows_affected())
}

/// One transaction of the mix; the rows it wrote.
async fn write_once(pool: &PgPool, tenant: Uuid, kind: u32, rng: &mut StdRng) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let n = match kind {
        // a fifth of the rows updated in one transaction
        0 => on_tenant(
            &mut tx,
            "UPDATE contacts SET title = 'T' || floor(random() * 1000) WHERE tenant_id = $1 AND random() < 0.2",
            tenant,
            None,
        )
        .await?,
        1 | 2 => {
            let mut n = 0;
            for _ in 0..25 {
                n += sqlx::query("INSERT INTO contacts (tenant_id, first_name, last_name) VALUES ($1, $2, $3)")
                    .bind(tenant)
                    .bind(format!("New{}", rng.random::<u32>()))
                    .bind(format!("Chaos{}", rng.random::<u32>()))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            n
        }
        3 => on_tenant(
            &mut tx,
            "DELETE FROM contacts WHERE id IN
               (SELECT id FROM contacts WHERE tenant_id = $1 ORDER BY random() LIMIT 20)",
            tenant,
            None,
        )
        .await?,
        // a company renamed: its contacts follow (a trigger)
        4 => on_tenant(
            &mut tx,
            "UPDATE companies SET name = name || 'r' WHERE id IN
               (SELECT id FROM companies WHERE tenant_id = $1 ORDER BY random() LIMIT 1)",
            tenant,
            None,
        )
        .await?,
        5 | 6 => {
            let mut n = 0;
            for _ in 0..5 {
                n += sqlx::query(
                    "INSERT INTO memories (tenant_id, agent_id, kind, content, embedding)
                     VALUES ($1, 'agent1', 'episode', $2, $3::vector)",
                )
                .bind(tenant)
                .bind(format!("episode {}", rng.random::<u32>()))
                .bind(vector_text(rng))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            n
        }
        7 => on_tenant(
            &mut tx,
            "UPDATE memories SET content = content || '.', embedding = $2::vector WHERE id IN
               (SELECT id FROM memories WHERE tenant_id = $1 ORDER BY random() LIMIT 1)",
            tenant,
            Some(vector_text(rng)),
        )
        .await?,
        8 => on_tenant(
            &mut tx,
            "DELETE FROM memories WHERE id IN
               (SELECT id FROM memories WHERE tenant_id = $1 ORDER BY random() LIMIT 3)",
            tenant,
            None,
        )
        .await?,
        _ => on_tenant(
            &mut tx,
            "UPDATE contacts SET last_name = last_name || 'u' WHERE id IN
               (SELECT id FROM contacts WHERE tenant_id = $1 ORDER BY random() LIMIT 50)",
            tenant,
            None,
        )
        .await?,
    };
    tx.commit().await?;
    Ok(n)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(name: &str, faults: impl Iterator<Item = Fault>) -> Figures {
    let mut chaos = Chaos::new(name, 7);
    for (n, fault) in faults.enumerate() {
        chaos.cycle(fault, n);
    }
    chaos.finish()
}

fn assert_nothing_lost(f: &Figures) {
    assert_eq!(
        (
            f.lost,
            f.ghost,
            f.stale,
            f.doubled,
            f.vectors_missing,
            f.vectors_ghost
        ),
        (0, 0, 0, 0, 0, 0),
        "lost, ghost, stale, doubled, vectors missing, vectors ghost"
    );
}

/// Every fault twice (about a minute): without the recovery at open, the
/// replay collides with an orphan delete file within about 15 cycles.
#[test]
fn chaos_cycles_converge() {
    let f = run("chaos", ALL.iter().chain(ALL).copied());
    assert_eq!(f.cycles, 2 * ALL.len());
    assert_nothing_lost(&f);
}

/// `scripts/chaos`: `CHAOS_CYCLES` cycles (50) over every fault in turn.
#[test]
#[ignore = "long: run by scripts/chaos"]
fn chaos_long() {
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50);
    // CHAOS_FAULTS=PostgresRestart,DoubleKill: only those (to chase one)
    let only = std::env::var("CHAOS_FAULTS").unwrap_or_default();
    let faults: Vec<Fault> = ALL
        .iter()
        .copied()
        .filter(|f| only.is_empty() || only.split(',').any(|o| format!("{f:?}").contains(o)))
        .collect();
    assert!(!faults.is_empty(), "CHAOS_FAULTS names no fault");
    let started = Instant::now();
    let mut f = run("chaos-long", faults.into_iter().cycle().take(cycles));
    f.catch_up_ms.sort_unstable();
    let (p50, p99) = (
        percentile(&f.catch_up_ms, 0.5),
        percentile(&f.catch_up_ms, 0.99),
    );
    let max = f.catch_up_ms.last().copied().unwrap_or(0);
    let kinds: Vec<String> = ALL.iter().map(|k| format!("{k:?}")).collect();
    let by_fault: Vec<String> = f
        .catch_up_max_by_fault
        .iter()
        .map(|(k, ms)| format!("{k} {ms} ms"))
        .collect();
    let md = format!(
        "## Chaos: crashes, outages and fail points (`scripts/chaos`)\n\n\
         {cycles} cycles over {writes} row writes (SQL and API: inserts, updates of a fifth of the rows, \
         deletes, company renames, memories with vectors, a TRUNCATE), {secs} s, the dev build. Each cycle \
         injects one fault, in turn: {kinds}. After every cycle `POST /v1/admin/verify` and the document \
         counts are compared with Postgres, and five memories are searched by their own current vector.\n\n\
         | lost | ghost | stale | doubled | vectors missing | vectors ghost |\n|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} |\n\n\
         | restart → caught up (the server's position at the restart) | p50 | p99 | max (the longest stretch behind) |\n\
         |---|---|---|---|\n| {} restarts | {p50} ms | {p99} ms | {max} ms |\n\n\
         The longest catch-up after each kind of fault: {by_fault}.\n\n\
         In-process stage failures injected: {}; supervisor restarts they caused: {} \
         ({:.1} per failure). A killed process starts over, so its restarts are the process's own.\n",
        f.lost,
        f.ghost,
        f.stale,
        f.doubled,
        f.vectors_missing,
        f.vectors_ghost,
        f.catch_up_ms.len(),
        f.stage_errors,
        f.supervisor_restarts,
        f.supervisor_restarts as f64 / f.stage_errors.max(1) as f64,
        cycles = f.cycles,
        writes = f.writes,
        secs = started.elapsed().as_secs(),
        kinds = kinds.join(", "),
        by_fault = by_fault.join(", "),
    );
    // the shape of benches/common's `Results`: BENCHMARKS.md takes it in
    let out = serde_json::json!({
        "name": "chaos",
        "command": format!("CHAOS_CYCLES={cycles} scripts/chaos"),
        "md": md,
        "metrics": {
            "cycles": f.cycles,
            "writes": f.writes,
            "drift": f.lost + f.ghost + f.stale + f.doubled + f.vectors_missing + f.vectors_ghost,
            "catch_up_p50_ms": p50,
            "catch_up_p99_ms": p99,
            "catch_up_max_ms": max,
            "restarts_per_stage_error": f.supervisor_restarts as f64 / f.stage_errors.max(1) as f64,
        },
        "plots": [],
    });
    println!("{md}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("chaos.json"),
        serde_json::to_vec_pretty(&out).unwrap(),
    )
    .unwrap();
    assert_nothing_lost(&f);
}

/// The disk holding the index fills up (a small tmpfs): the commit fails
/// with a clear error, `/readyz` says so, nothing is corrupted, and the
/// index converges once space returns — also across a kill while full.
#[test]
fn a_full_disk_is_reported_and_survived() {
    let data = data_dir("disk-full");
    let fs = data.join("index-fs");
    std::fs::create_dir_all(&fs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&fs)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(fs.clone());
    std::fs::create_dir_all(fs.join("index")).unwrap();
    std::os::unix::fs::symlink(fs.join("index"), data.join("index")).unwrap();

    let (tenant, admin) = create_tenant(&data, "full");
    let (mut server, addr) = serve_with(&data, &[DURABLE_INTERVAL]).unwrap();
    let rt = runtime();
    let pool = rt.block_on(PgPool::connect(&database_url(&data))).unwrap();
    let write = |n: usize, tag: &str| {
        rt.block_on(async {
            let mut tx = pool.begin().await.unwrap();
            for i in 0..n {
                sqlx::query(
                    "INSERT INTO contacts (tenant_id, last_name, notes) VALUES ($1, $2, $3)",
                )
                .bind(tenant)
                .bind(format!("{tag}{i}"))
                .bind("n".repeat(400))
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        })
    };
    write(500, "Before");

    // fill what is left of the index's disk
    let filler = fs.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    write(3000, "Full");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = http(&addr, "GET", "/readyz", &admin, "");
        if status == 503 && body.contains("indexer_restarting") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said the indexer fails: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        body.contains("the disk holding the index is full"),
        "{body}"
    );
    let (status, _) = http(&addr, "GET", "/v1/contacts/search?q=before1", &admin, "");
    assert_eq!(
        status, 200,
        "searches answer from the index while the disk is full"
    );

    // killed while full, started again while full: it opens and says so
    signal(server.id(), "-KILL");
    wait_exit(&mut server);
    let (mut server, addr) = serve_with(&data, &[DURABLE_INTERVAL])
        .expect("a full disk does not keep the server from starting");

    // space returns: the index converges by itself
    std::fs::remove_file(&filler).unwrap();
    write(10, "After");
    let server_lsn = rt.block_on(indexer::wal::position(&pool)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = http(&addr, "GET", "/v1/admin/status", &admin, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let applied: Option<indexer::Lsn> = v["applied_lsn"].as_str().and_then(|s| s.parse().ok());
        if status == 200 && applied.is_some_and(|a| a >= server_lsn) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index did not recover: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = http(
        &addr,
        "POST",
        &format!("/v1/admin/verify?tenant={tenant}"),
        &admin,
        "",
    );
    assert_eq!(status, 200, "{body}");
    let report: indexer::verify::Report = serde_json::from_str(&body).unwrap();
    assert_eq!(report.drifted(), 0, "{body}");
    let (status, body) = http(
        &addr,
        "GET",
        "/v1/contacts/search?q=full2999&limit=1",
        &admin,
        "",
    );
    assert_eq!(status, 200);
    assert!(body.contains("Full2999"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(&addr, "GET", "/readyz", &admin, "");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        std::thread::sleep(Duration::from_millis(300));
    }
    signal(server.id(), "-TERM");
    wait_exit(&mut server);
    rt.block_on(pool.close());
    drop(_unmount);
    let _ = std::fs::remove_dir_all(&data);
}
