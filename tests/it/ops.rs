//! Operator work against a real Postgres and index: seeding, imports with
//! bad lines and an interrupt, verify finding injected drift and repair
//! fixing it.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use crmsearch::ops::import::{ImportOptions, run};
use crmsearch::seed;
use indexer::store::Op;
use serde_json::json;

use crate::common::TestApp;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ops-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_writes_the_same_data_for_the_same_seed() {
    let t = TestApp::new().await;
    let out = crmsearch::ops::seed::run(&t.pool, t.a.id, 9, 300, 0, None, true)
        .await
        .unwrap();
    assert_eq!((out.contacts, out.companies), (300, 12));
    let again = crmsearch::ops::seed::run(&t.pool, t.b.id, 9, 300, 0, None, true)
        .await
        .unwrap();
    assert_eq!(again.contacts, 300);
    let rows = |tenant: uuid::Uuid| {
        let pool = t.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT string_agg(concat_ws('|', external_id, first_name, last_name, array_to_string(emails, ','), array_to_string(phones, ','), city, company_name), E'\\n' ORDER BY external_id) FROM contacts WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        rows(t.a.id).await,
        rows(t.b.id).await,
        "same seed, same contacts"
    );
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND company_id IS NOT NULL",
    )
    .bind(t.a.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert!(n > 100, "contacts are linked to their companies ({n})");
    // memories need the model; a small set through it
    let m = crmsearch::ops::seed::memories(
        &t.pool,
        t.a.id,
        9,
        40,
        &crmsearch::embed::shared(None).unwrap(),
        true,
    )
    .await
    .unwrap();
    assert_eq!(m, 40);
    let kinds: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT kind) FROM memories WHERE tenant_id = $1 AND embedding IS NOT NULL",
    )
    .bind(t.a.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert!(kinds >= 3);
}

fn contacts_file(n: usize, bad_every: usize) -> String {
    let companies = seed::companies(5, 10);
    let mut out = String::new();
    for (i, c) in seed::contacts(5, n, &companies).enumerate() {
        if bad_every > 0 && i % bad_every == 3 {
            out.push_str("{\"external_id\": \"broken\", \"emails\": [\"not an email\"]}\n");
        } else {
            let mut c = c;
            c.company_external_id = None;
            out.push_str(&seed::contact_json(&c));
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_bad_lines_and_resumes_after_an_interrupt() {
    let t = TestApp::new().await;
    let file = tmp("contacts.ndjson");
    std::fs::write(&file, contacts_file(3_000, 500)).unwrap();
    let opts = ImportOptions {
        file: file.clone(),
        tenant: t.a.id,
        format: None,
        map: Vec::new(),
        report: None,
        restart: false,
        chunk_lines: 200,
        quiet: true,
    };
    // interrupt it once a few chunks are committed
    let pool = t.pool.clone();
    let o = opts.clone();
    let task = tokio::spawn(async move { run(&pool, &o).await });
    let state = {
        let mut p = file.as_os_str().to_owned();
        p.push(".import-state");
        std::path::PathBuf::from(p)
    };
    for _ in 0..2_000 {
        if std::fs::read_to_string(&state)
            .ok()
            .is_some_and(|s| s.contains("\"line\":"))
        {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
            if v["line"].as_u64().unwrap() >= 600 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    assert!(state.exists(), "an interrupted import leaves its state");
    let out = run(&t.pool, &opts).await.unwrap();
    assert!(
        out.resumed_after_line >= 600,
        "resumed after the committed chunks: {out:?}"
    );
    assert!(!state.exists(), "a finished import removes its state");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
        .bind(t.a.id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 3_000 - 6, "every good line once, whatever the interrupt");
    let report = std::fs::read_to_string(&out.report).unwrap();
    let bad: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = bad.iter().map(|b| b["line"].as_u64().unwrap()).collect();
    assert_eq!(
        lines,
        vec![4, 504, 1004, 1504, 2004, 2504],
        "bad lines by their line number"
    );
    assert!(
        bad[0]["error"].as_str().unwrap().contains("email"),
        "{:?}",
        bad[0]
    );

    // CSV with renamed columns
    let csv = tmp("people.csv");
    std::fs::write(&csv, "Ref,Given,Family,Mail\nx1,Ada,Lovelace,ada@example.com\nx2,\"Grace, Admiral\",Hopper,not-an-email\nx3,Alan,Turing,alan@example.com\n").unwrap();
    let out = run(
        &t.pool,
        &ImportOptions {
            file: csv,
            tenant: t.b.id,
            map: crmsearch::ops::import::parse_map(
                "Ref=external_id,Given=first_name,Family=last_name,Mail=emails",
            )
            .unwrap(),
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!((out.inserted, out.failed, out.lines), (2, 1, 3), "{out:?}");
    let report = std::fs::read_to_string(&out.report).unwrap();
    assert!(report.contains("\"line\":3"), "{report}");
    assert!(crmsearch::ops::import::parse_map("a=b,c").is_err());
}

#[tokio::test]
async fn verify_finds_injected_drift_and_repair_fixes_it() {
    let t = TestApp::with_indexer().await;
    let key = t.a.key(Role::Write);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (s, c) = t
            .call(
                Method::POST,
                "/v1/contacts",
                Some(key),
                Some(json!({"last_name": format!("Drift{i}")})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        ids.push(uuid::Uuid::parse_str(c["id"].as_str().unwrap()).unwrap());
    }
    let mut v = vec![0.0f32; 384];
    v[1] = 1.0;
    let (s, m) = t
        .call(
            Method::POST,
            "/v1/memories",
            Some(t.a.key(Role::Agent)),
            Some(json!({"agent_id": "a", "kind": "fact", "content": "drift", "embedding": v})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let memory = uuid::Uuid::parse_str(m["id"].as_str().unwrap()).unwrap();
    t.caught_up().await;
    let ix = t.ix();
    let clean = ix.verify(Some(t.a.id), false).await.unwrap();
    assert_eq!(clean.drifted(), 0, "{clean:?}");

    // drift: a document lost, a ghost, a stale version, a vector lost
    let store = &ix.store;
    let row = indexer::rows::read_row(&t.pool, indexer::rows::Table::Contacts, ids[1])
        .await
        .unwrap()
        .unwrap();
    let mut old = row.clone();
    old.insert("updated_at".into(), Some("2001-01-01 00:00:00+00".into()));
    let mut ghost = row.clone();
    let ghost_id = uuid::Uuid::new_v4();
    ghost.insert("id".into(), Some(ghost_id.to_string()));
    let lsn = ix.progress.visible();
    let table = indexer::rows::Table::Contacts;
    store
        .apply(
            vec![
                Op::Delete { id: ids[0] },
                table.upsert(&store.schema, &old, false, lsn).unwrap(),
                table.upsert(&store.schema, &ghost, true, lsn).unwrap(),
            ],
            lsn,
        )
        .unwrap();
    store.commit(lsn, false).unwrap();
    store.vectors().delete(memory);
    let drift = ix.verify(Some(t.a.id), false).await.unwrap();
    let contacts = drift.tables.iter().find(|d| d.table == "contacts").unwrap();
    assert_eq!(
        (
            contacts.missing.clone(),
            contacts.stale.clone(),
            contacts.ghost.clone()
        ),
        (vec![ids[0]], vec![ids[1]], vec![ghost_id])
    );
    let memories = drift.tables.iter().find(|d| d.table == "memories").unwrap();
    assert_eq!(memories.vectors_missing, vec![memory]);
    // the other tenant has none of it
    assert_eq!(ix.verify(Some(t.b.id), false).await.unwrap().drifted(), 0);

    // over HTTP, with repair
    let (s, r) = t
        .call(
            Method::POST,
            "/v1/admin/verify?repair=true",
            Some(t.a.key(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["repaired"], 4, "{r}");
    let after = ix.verify(Some(t.a.id), false).await.unwrap();
    assert_eq!(after.drifted(), 0, "{after:?}");
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/admin/verify",
            Some(t.a.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_under_writes_and_searches_ends_equal_to_postgres() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let t = TestApp::with_indexer().await;
    let out = crmsearch::ops::seed::run(&t.pool, t.a.id, 3, 2_000, 0, None, true)
        .await
        .unwrap();
    assert_eq!(out.contacts, 2_000);
    t.caught_up().await;
    let ix = t.ix();
    assert_eq!(ix.store.generation(), 1);
    let done = AtomicBool::new(false);
    let (searches, failed, writes) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let key = t.a.key(Role::Search).to_owned();
    let writer = async {
        let mut i = 0;
        while !done.load(Ordering::Acquire) {
            sqlx::query(
                "INSERT INTO contacts (tenant_id, last_name, city) VALUES ($1, $2, 'Reindexville')",
            )
            .bind(t.a.id)
            .bind(format!("During{i}"))
            .execute(&t.pool)
            .await
            .unwrap();
            sqlx::query("UPDATE contacts SET title = $2 WHERE tenant_id = $1 AND external_id = $3")
                .bind(t.a.id)
                .bind(format!("Title {i}"))
                .bind(format!("c{}", i % 2_000))
                .execute(&t.pool)
                .await
                .unwrap();
            if i % 7 == 0 {
                sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND external_id = $2")
                    .bind(t.a.id)
                    .bind(format!("c{}", 1_000 + i))
                    .execute(&t.pool)
                    .await
                    .unwrap();
            }
            writes.fetch_add(1, Ordering::Relaxed);
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let searcher = async {
        while !done.load(Ordering::Acquire) {
            let (s, v) = t
                .call(
                    Method::POST,
                    "/v1/contacts/search",
                    Some(&key),
                    Some(json!({"q": "a", "limit": 5})),
                )
                .await;
            searches.fetch_add(1, Ordering::Relaxed);
            if s != StatusCode::OK || v["total"].as_u64().unwrap_or(0) == 0 {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let reindex = async {
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |d: u64, total: u64| seen.lock().unwrap().push((d, total));
        let r = ix.reindex(None, &progress).await;
        done.store(true, Ordering::Release);
        (r, seen.into_inner().unwrap())
    };
    let ((generation, progress), (), ()) = tokio::join!(reindex, writer, searcher);
    assert_eq!(generation.unwrap(), 2);
    assert!(
        progress
            .last()
            .is_some_and(|(d, total)| *d > 0 && *total >= 2_000),
        "{progress:?}"
    );
    assert!(writes.load(Ordering::Relaxed) > 0 && searches.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no search failed during the reindex"
    );
    t.caught_up().await;
    let report = ix.verify(None, false).await.unwrap();
    assert_eq!(
        report.drifted(),
        0,
        "the new generation equals Postgres: {report:?}"
    );
    assert_eq!(ix.store.generation(), 2);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND city = 'Reindexville'",
    )
    .bind(t.a.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let (_, v) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(&key),
            Some(json!({"q": "reindexville"})),
        )
        .await;
    assert_eq!(v["total"].as_i64().unwrap(), n);
    // over HTTP: the master key only, for the whole index or one tenant (a
    // tenant's reindex rebuilds every tenant's documents too)
    for (k, path) in [
        (
            t.a.key(Role::Search).to_owned(),
            "/v1/admin/reindex".to_owned(),
        ),
        (
            t.a.key(Role::Admin).to_owned(),
            format!("/v1/admin/reindex?tenant={}", t.b.id),
        ),
        (
            t.a.key(Role::Admin).to_owned(),
            "/v1/admin/reindex".to_owned(),
        ),
        (
            t.a.key(Role::Admin).to_owned(),
            format!("/v1/admin/reindex?tenant={}", t.a.id),
        ),
    ] {
        let got = t.call(Method::POST, &path, Some(&k), None).await;
        crate::common::assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    }
    let run_job = async |key: &str, path: &str| -> serde_json::Value {
        let (s, job) = t.call(Method::POST, path, Some(key), None).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        let id = job["job_id"].as_str().unwrap().to_owned();
        for _ in 0..600 {
            let (s, j) = t
                .call(
                    Method::GET,
                    &format!("/v1/admin/jobs/{id}"),
                    Some(key),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK);
            if j["state"] != "running" {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the reindex job did not finish");
    };
    let j = run_job(crate::common::MASTER_KEY, "/v1/admin/reindex").await;
    assert_eq!(
        (j["state"].as_str(), j["result"]["generation"].as_u64()),
        (Some("done"), Some(3)),
        "{j}"
    );
    // the master key's job is no tenant's: a tenant's admin does not find it
    let (s, v) = t
        .call(
            Method::GET,
            &format!("/v1/admin/jobs/{}", j["id"].as_str().unwrap()),
            Some(t.a.key(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(!v.to_string().contains(j["id"].as_str().unwrap()), "{v}");
    // one tenant: read again from Postgres, the other carried over (with its vectors)
    let mut v = vec![0.0f32; 384];
    v[5] = 1.0;
    let (s, _) = t
        .call(Method::POST, "/v1/memories", Some(t.b.key(Role::Agent)), Some(json!({"agent_id": "b-bot", "kind": "fact", "content": "tenant b keeps this", "embedding": v})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(json!({"last_name": "Bystander"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    t.caught_up().await;
    let path = format!("/v1/admin/reindex?tenant={}", t.a.id);
    let j = run_job(crate::common::MASTER_KEY, &path).await;
    assert_eq!(
        (j["state"].as_str(), j["result"]["generation"].as_u64()),
        (Some("done"), Some(4)),
        "{j}"
    );
    assert_eq!(j["result"]["tenant"], t.a.id.to_string());
    assert_eq!(
        ix.verify(None, false).await.unwrap().drifted(),
        0,
        "both tenants equal Postgres"
    );
    let (_, r) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.b.key(Role::Search)),
            Some(json!({"q": "bystander"})),
        )
        .await;
    assert_eq!(r["total"], 1, "{r}");
    let r = t
        .call(
            Method::POST,
            "/v1/memories/search",
            Some(t.b.key(Role::Agent)),
            Some(json!({"embedding": v, "mode": "semantic"})),
        )
        .await
        .1;
    assert_eq!(r["memories"][0]["content"], "tenant b keeps this", "{r}");
    assert_eq!(
        r["memories"][0]["scores"]["semantic"]
            .as_f64()
            .map(|s| s > 0.99),
        Some(true)
    );
    let (_, r) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(&key),
            Some(json!({"q": "reindexville"})),
        )
        .await;
    assert_eq!(r["total"].as_i64().unwrap(), n);
    // a restart opens the generation CURRENT names
    let icfg = t.index_cfg.clone().unwrap();
    assert_eq!(
        std::fs::read_to_string(icfg.index_dir.join("CURRENT"))
            .unwrap()
            .trim(),
        "gen-4"
    );
    assert!(
        !icfg.index_dir.join("gen-3").exists(),
        "the old generation is removed"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_dropped_slot_is_detected_and_the_index_rebuilt_while_serving() {
    let t = TestApp::with_indexer().await;
    let key = t.a.key(Role::Write).to_owned();
    for i in 0..30 {
        let (s, _) = t
            .call(
                Method::POST,
                "/v1/contacts",
                Some(&key),
                Some(json!({"last_name": format!("Slotted{i}")})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    t.caught_up().await;
    let ix = t.ix();
    assert_eq!(ix.store.generation(), 1);
    // an operator (or max_slot_wal_keep_size) takes the slot away
    let mut dropped = false;
    for _ in 0..200 {
        let _ = sqlx::query("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL")
            .bind(&ix.slot)
            .execute(&t.pool)
            .await;
        if sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&ix.slot)
            .execute(&t.pool)
            .await
            .is_ok()
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped, "the slot could be dropped");
    // written while there is no slot: only the snapshot can bring it
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(&key),
            Some(json!({"last_name": "Orphaned"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let search_key = t.a.key(Role::Search).to_owned();
    let mut rebuilt = false;
    for _ in 0..400 {
        // searches keep answering from the old generation meanwhile
        let (s, v) = t
            .call(
                Method::POST,
                "/v1/contacts/search",
                Some(&search_key),
                Some(json!({"q": "slotted"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["total"], 30);
        if ix.store.generation() == 2 {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rebuilt, "the index was rebuilt into a new generation");
    t.caught_up().await;
    let (_, v) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(&search_key),
            Some(json!({"q": "orphaned"})),
        )
        .await;
    assert_eq!(
        v["total"], 1,
        "the write made while the slot was missing is in the rebuilt index"
    );
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(&key),
            Some(json!({"last_name": "Afterwards"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    t.caught_up().await;
    let (_, v) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(&search_key),
            Some(json!({"q": "afterwards"})),
        )
        .await;
    assert_eq!(v["total"], 1, "the stream follows the new slot");
    assert_eq!(ix.verify(None, false).await.unwrap().drifted(), 0);
    t.stop().await;
}
