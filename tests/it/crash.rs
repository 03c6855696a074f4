//! Crash and outage tests through the real binary: `serve` killed with
//! SIGKILL in the middle of a write stream, then Postgres restarted under a
//! running `serve`. After each, the index converges to Postgres: every row
//! a document, no document twice, nothing lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::common::pg_bin;
use crate::embedded::{create_tenant, data_dir, http, runtime, serve, signal, wait_exit};

/// The URL of the crmsearch database of the embedded server in `data`.
pub(crate) fn database_url(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("postgres/instance.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let admin = v["admin_url"].as_str().unwrap();
    format!("{}/crmsearch", admin.rsplit_once('/').unwrap().0)
}

/// Inserts, updates and deletes in transactions of 40 statements until told
/// to stop; failures (Postgres restarting) are retried.
fn start_writer(
    rt: &tokio::runtime::Runtime,
    pool: PgPool,
    tenant: Uuid,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    rt.spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let txn = async {
                let mut tx = pool.begin().await?;
                for i in 0..40u64 {
                    let k = n * 40 + i;
                    sqlx::query("INSERT INTO contacts (tenant_id, external_id, last_name) VALUES ($1, $2, $3)")
                        .bind(tenant)
                        .bind(format!("{prefix}{k}"))
                        .bind(format!("Writer{k}"))
                        .execute(&mut *tx)
                        .await?;
                    if k.is_multiple_of(3) && k > 40 {
                        sqlx::query("UPDATE contacts SET last_name = last_name || 'U' WHERE tenant_id = $1 AND external_id = $2")
                            .bind(tenant)
                            .bind(format!("{prefix}{}", k - 40))
                            .execute(&mut *tx)
                            .await?;
                    }
                    if k.is_multiple_of(7) && k > 80 {
                        sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND external_id = $2")
                            .bind(tenant)
                            .bind(format!("{prefix}{}", k - 80))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await
            };
            match txn.await {
                Ok(()) => n += 1,
                // only outages are expected here
                Err(e) => {
                    assert!(
                        !matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()),
                        "{e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
            }
        }
        n
    })
}

/// Waits until the server reports no lag, then compares every document with
/// its row: same ids, same names, none twice.
fn assert_converged(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    admin: &str,
    pool: &PgPool,
    tenant: Uuid,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = http(addr, "GET", "/v1/admin/status", admin, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && v["lag_bytes"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index did not catch up: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows: Vec<(Uuid, String)> = rt
        .block_on(
            sqlx::query_as("SELECT id, last_name FROM contacts WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_all(pool),
        )
        .unwrap();
    let want: BTreeMap<String, String> = rows
        .into_iter()
        .map(|(id, n)| (id.to_string(), n))
        .collect();
    let mut got = BTreeMap::new();
    let mut offset = 0;
    loop {
        let (status, body) = http(
            addr,
            "GET",
            &format!("/v1/contacts/search?limit=1000&offset={offset}"),
            admin,
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let hits = v["hits"].as_array().unwrap();
        for h in hits {
            let name = h["contact"]["last_name"].as_str().unwrap().to_owned();
            assert!(
                got.insert(h["id"].as_str().unwrap().to_owned(), name)
                    .is_none(),
                "a document twice"
            );
        }
        offset += hits.len();
        assert_eq!(
            v["total"].as_u64().unwrap() as usize,
            want.len(),
            "total vs rows"
        );
        if hits.is_empty() || offset >= want.len() {
            break;
        }
    }
    let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
    let ghosts = got.keys().filter(|k| !want.contains_key(*k)).count();
    let stale = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .count();
    assert_eq!(
        (missing, ghosts, stale),
        (0, 0, 0),
        "missing, ghost and stale documents"
    );
}

/// Runs pg_ctl on the embedded cluster, as its service user when root.
pub(crate) fn pg_ctl(data: &Path, args: &[&str]) {
    if let Err(e) = try_pg_ctl(data, args) {
        panic!("pg_ctl {args:?}: {e}");
    }
}

/// [`pg_ctl`], returning what it printed when it fails.
pub(crate) fn try_pg_ctl(data: &Path, args: &[&str]) -> Result<(), String> {
    let pg_ctl = pg_bin().join("pg_ctl");
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap();
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", crmsearch::embedded_pg::SERVICE_USER, "--"])
            .arg(&pg_ctl);
        c
    } else {
        Command::new(&pg_ctl)
    };
    // (the server inherits no pipe of ours: `-l` sends its output to the log)
    let out = cmd
        .arg("-D")
        .arg(data.join("postgres/pgdata"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn killed_mid_stream_then_postgres_restarted_the_index_converges() {
    let data = data_dir("cdc-crash");
    let (tenant, admin) = create_tenant(&data, "acme");
    let (mut server, addr) = serve(&data);
    let rt = runtime();
    let pool = rt.block_on(PgPool::connect(&database_url(&data))).unwrap();

    // 1. SIGKILL in the middle of a stream of writes
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&rt, pool.clone(), tenant, "a", stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    signal(server.id(), "-KILL");
    wait_exit(&mut server);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let txns = rt.block_on(writer).unwrap();
    assert!(txns > 5, "the writer wrote ({txns} transactions)");
    let (mut server, addr2) = serve(&data);
    assert_ne!(addr, addr2);
    assert_converged(&rt, &addr2, &admin, &pool, tenant);

    // 2. Postgres restarts under the running server and its stream
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&rt, pool.clone(), tenant, "b", stop.clone());
    std::thread::sleep(Duration::from_millis(700));
    let log = data.join("postgres/postgres.log");
    pg_ctl(
        &data,
        &["-m", "fast", "-w", "-l", log.to_str().unwrap(), "restart"],
    );
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).unwrap();
    assert_converged(&rt, &addr2, &admin, &pool, tenant);

    // 3. while Postgres is down, searches answer from the index; not ready
    pg_ctl(&data, &["-m", "fast", "-w", "stop"]);
    let (status, body) = http(&addr2, "GET", "/v1/contacts/search?q=writer1", &admin, "");
    assert_eq!(
        status, 200,
        "searches answer while Postgres is down: {body}"
    );
    let (status, body) = http(&addr2, "GET", "/readyz", &admin, "");
    assert_eq!(status, 503, "{body}");
    // an outage, said as one: 503 with a retry, not a 500
    let (status, body) = http(&addr2, "GET", "/v1/admin/status", &admin, "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"unavailable\""), "{body}");
    for i in 0..6 {
        let t0 = Instant::now();
        let (status, head, body) = crate::embedded::try_http_head(
            &addr2,
            "POST",
            "/v1/contacts",
            &admin,
            r#"{"last_name": "Outage"}"#,
        )
        .unwrap();
        eprintln!("write {i}: {status} in {:?}: {body}", t0.elapsed());
        assert_eq!(status, 503, "{body}");
        assert!(head.contains("retry-after:"), "{head}");
        // refused at once by what knows Postgres is down, not after each
        // request waited for a connection
        assert!(body.contains("has not answered for"), "{body}");
        let t0 = Instant::now();
        let (status, body) = http(&addr2, "GET", "/v1/contacts/search?q=writer1", &admin, "");
        eprintln!("search {i}: {status} in {:?}", t0.elapsed());
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(700));
    }
    let instance: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("postgres/instance.json")).unwrap(),
    )
    .unwrap();
    let port = format!("-p {}", instance["port"]);
    pg_ctl(
        &data,
        &["-w", "-o", &port, "-l", log.to_str().unwrap(), "start"],
    );
    rt.block_on(
        sqlx::query("INSERT INTO contacts (tenant_id, last_name) VALUES ($1, 'After')")
            .bind(tenant)
            .execute(&pool),
    )
    .unwrap();
    assert_converged(&rt, &addr2, &admin, &pool, tenant);
    signal(server.id(), "-TERM");
    assert!(wait_exit(&mut server).success());
    rt.block_on(pool.close());
    let _ = std::fs::remove_dir_all(&data);
}
