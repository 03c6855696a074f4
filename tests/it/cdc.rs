//! The CDC indexer against a real Postgres: writes through the API and
//! through SQL become searchable, denormalised names follow, TOAST values
//! survive, restarts resume, and random write sequences converge.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use crmsearch::search::{self, Request, Scope};
use schema::Contact;
use serde_json::json;
use uuid::Uuid;

use crate::common::{TestApp, assert_error};

/// Every contact of the tenant as the index holds it.
pub fn indexed(t: &TestApp, tenant: Uuid) -> BTreeMap<Uuid, Contact> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let page = search::search(
            &t.ix().store,
            tenant,
            Scope::Contacts,
            &Request {
                offset,
                limit: 1000,
                ..Request::default()
            },
        )
        .unwrap();
        for h in &page.hits {
            let c: Contact = serde_json::from_value(h.record.value().clone()).unwrap();
            assert!(out.insert(c.id, c).is_none(), "a contact indexed twice");
        }
        offset += page.hits.len();
        if page.hits.is_empty() || offset >= page.total {
            assert_eq!(out.len(), page.total, "total is exact");
            return out;
        }
    }
}

/// Every contact of the tenant as Postgres holds it.
pub async fn in_postgres(t: &TestApp, tenant: Uuid) -> BTreeMap<Uuid, Contact> {
    let sql = format!(
        "SELECT {} FROM contacts WHERE tenant_id = $1",
        crmsearch::store::contacts::COLUMNS.as_str()
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .fetch_all(&t.pool)
        .await
        .unwrap();
    rows.iter()
        .map(|r| crmsearch::store::contacts::from_row(r).unwrap())
        .map(|c| (c.id, c))
        .collect()
}

pub async fn assert_converged(t: &TestApp, tenant: Uuid) {
    t.caught_up().await;
    let pg = in_postgres(t, tenant).await;
    let ix = indexed(t, tenant);
    assert_eq!(ix.len(), pg.len(), "documents vs rows");
    for (id, row) in &pg {
        assert_eq!(
            ix.get(id),
            Some(row),
            "the document of {id} differs from its row"
        );
    }
}

async fn search(t: &TestApp, q: &str, min_lsn: Option<&str>) -> serde_json::Value {
    let mut body = json!({"q": q, "limit": 50});
    if let Some(l) = min_lsn {
        body["min_lsn"] = json!(l);
        body["wait_ms"] = json!(10_000);
    }
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.a.key(Role::Search)),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_are_searchable_with_read_your_writes() {
    let t = TestApp::with_indexer().await;
    assert!(t.ix().rebuilt, "a first start indexes a snapshot");
    let w = t.a.key(Role::Write);
    let (_, c) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"first_name": "Zebulon", "last_name": "Quartz"})),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_owned();
    let v = search(&t, "zebulon", c["lsn"].as_str()).await;
    assert_eq!(ids(&v), vec![id.clone()]);
    assert_eq!(v["total"], 1);
    assert!(
        v["index_lsn"]
            .as_str()
            .unwrap()
            .parse::<indexer::Lsn>()
            .unwrap()
            >= c["lsn"].as_str().unwrap().parse().unwrap()
    );
    // the other tenant does not see it
    let (_, other) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.b.key(Role::Search)),
            Some(json!({"q": "zebulon", "min_lsn": c["lsn"]})),
        )
        .await;
    assert_eq!(other["total"], 0);

    let (_, p) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{id}"),
            Some(w),
            Some(json!({"last_name": "Onyx"})),
        )
        .await;
    assert_eq!(search(&t, "onyx", p["lsn"].as_str()).await["total"], 1);
    assert_eq!(search(&t, "quartz", None).await["total"], 0);
    let (_, d) = t
        .call(Method::DELETE, &format!("/v1/contacts/{id}"), Some(w), None)
        .await;
    assert_eq!(search(&t, "zebulon", d["lsn"].as_str()).await["total"], 0);

    // a position the index cannot reach in time: 503 index_behind, Retry-After
    let behind = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.a.key(Role::Search)),
            Some(json!({"q": "", "min_lsn": "FFFFFFFF/0", "wait_ms": 50})),
        )
        .await;
    assert_error(&behind, StatusCode::SERVICE_UNAVAILABLE, "index_behind");
    let bad = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.a.key(Role::Search)),
            Some(json!({"min_lsn": "yesterday"})),
        )
        .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_writes_by_other_programs_are_indexed_and_truncate_empties() {
    let t = TestApp::with_indexer().await;
    let tenant = t.a.id;
    // bulk through the API, then raw SQL like another program would write
    let lines: String = (0..300)
        .map(|i| {
            format!(
                "{{\"external_id\":\"b{i}\",\"last_name\":\"Bulk{i}\",\"tags\":[\"t{}\"]}}\n",
                i % 3
            )
        })
        .collect();
    let (s, _) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(t.a.key(Role::Write)),
            Some(("application/x-ndjson", lines.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    sqlx::query("INSERT INTO contacts (tenant_id, first_name, last_name, emails) VALUES ($1, 'Psql', 'Writer', '{p@example.com}')")
        .bind(tenant)
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE contacts SET city = 'Malmö', custom = '{\"k\": [1, \"two\"]}' WHERE tenant_id = $1 AND external_id LIKE 'b1%'")
        .bind(tenant)
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND external_id LIKE 'b2%'")
        .bind(tenant)
        .execute(&t.pool)
        .await
        .unwrap();
    assert_converged(&t, tenant).await;
    assert_eq!(search(&t, "psql", None).await["total"], 1);
    assert_eq!(search(&t, "malmö", None).await["total"], 111);

    sqlx::query("TRUNCATE contacts")
        .execute(&t.pool)
        .await
        .unwrap();
    assert_converged(&t, tenant).await;
    assert!(indexed(&t, tenant).is_empty());
    let status = t.ix().status().await.unwrap();
    assert_eq!(status.documents.contacts, 0);
    assert_eq!(status.lag_bytes, 0, "{status:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_rename_and_delete_reach_the_contacts() {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    let (_, co) = t
        .call(
            Method::POST,
            "/v1/companies",
            Some(w),
            Some(json!({"name": "Globex"})),
        )
        .await;
    let co_id = co["id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        t.call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"last_name": format!("Emp{n}"), "company_id": co_id})),
        )
        .await;
    }
    let (_, r) = t
        .call(
            Method::PATCH,
            &format!("/v1/companies/{co_id}"),
            Some(w),
            Some(json!({"name": "Initech"})),
        )
        .await;
    assert_eq!(search(&t, "initech", r["lsn"].as_str()).await["total"], 3);
    assert_eq!(search(&t, "globex", None).await["total"], 0);
    // a rename in SQL by another program does the same
    sqlx::query("UPDATE companies SET name = 'Umbrella' WHERE id = $1::uuid")
        .bind(&co_id)
        .execute(&t.pool)
        .await
        .unwrap();
    t.caught_up().await;
    assert_eq!(search(&t, "umbrella", None).await["total"], 3);
    let (_, d) = t
        .call(
            Method::DELETE,
            &format!("/v1/companies/{co_id}"),
            Some(w),
            None,
        )
        .await;
    assert_eq!(search(&t, "umbrella", d["lsn"].as_str()).await["total"], 0);
    assert_converged(&t, t.a.id).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_keep_their_value() {
    let t = TestApp::with_indexer().await;
    // about 40 KB of incompressible text: stored out of line (TOAST)
    let big: String = sqlx::query_scalar(
        "SELECT 'xylophone ' || string_agg(md5(i::text), ' ') FROM generate_series(1, 1200) i",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO contacts (tenant_id, last_name, notes) VALUES ($1, 'Toast', $2) RETURNING id",
    )
    .bind(t.a.id)
    .bind(&big)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    t.caught_up().await;
    // an update that leaves notes alone: the stream sends it as "unchanged",
    // and the indexer reads the row again. Its commit waits for a synchronous
    // standby that never comes (see common::cluster): on disk and sent to
    // the indexer, but not visible to other sessions until the wait ends
    let mut session = t.pool.acquire().await.unwrap().detach();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut session)
        .await
        .unwrap();
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut session)
        .await
        .unwrap();
    for _ in 0..100 {
        let names: String = sqlx::query_scalar("SHOW synchronous_standby_names")
            .fetch_one(&mut session)
            .await
            .unwrap();
        if !names.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let update = tokio::spawn(async move {
        sqlx::query("UPDATE contacts SET title = 'Chief Toaster' WHERE id = $1")
            .bind(id)
            .execute(&mut session)
            .await
            .unwrap();
    });
    let waiting = async || {
        sqlx::query_scalar::<_, bool>(
            "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'",
        )
        .bind(pid)
        .fetch_one(&t.pool)
        .await
        .unwrap()
    };
    for _ in 0..200 {
        if waiting().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting().await, "the commit waits for the standby");
    // the commit is in the stream: the index either applies what it read
    // (too early: the version before) or waits to see the transaction
    let sent = t.wal_position().await;
    let before = invisible_rereads();
    for _ in 0..300 {
        if t.ix().wait_for(sent, Duration::from_millis(100)).await || invisible_rereads() > before {
            break;
        }
    }
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(pid)
        .execute(&t.pool)
        .await
        .unwrap();
    update.await.unwrap();
    assert_converged(&t, t.a.id).await;
    let doc = &indexed(&t, t.a.id)[&id];
    assert_eq!(doc.notes.as_deref(), Some(big.as_str()));
    assert_eq!(doc.title.as_deref(), Some("Chief Toaster"));
    assert_eq!(search(&t, "xylophone toaster", None).await["total"], 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_index_and_catches_up() {
    let mut t = TestApp::with_indexer().await;
    let tenant = t.a.id;
    for i in 0..50 {
        sqlx::query("INSERT INTO contacts (tenant_id, last_name) VALUES ($1, $2)")
            .bind(tenant)
            .bind(format!("Before{i}"))
            .execute(&t.pool)
            .await
            .unwrap();
    }
    t.caught_up().await;
    let ix = t.indexer.take().unwrap();
    ix.shutdown().await;
    drop(ix);
    // writes while the indexer is down
    sqlx::query("UPDATE contacts SET city = 'Oslo' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO contacts (tenant_id, last_name) VALUES ($1, 'During')")
        .bind(tenant)
        .execute(&t.pool)
        .await
        .unwrap();
    let icfg = t.index_cfg.clone().unwrap();
    let mut cfg = crate::common::test_config();
    cfg.node = icfg.node.clone();
    t.start_indexer(icfg, cfg).await;
    assert!(
        !t.ix().rebuilt,
        "a restart resumes from the durable position, never re-reads everything"
    );
    assert_converged(&t, tenant).await;
    assert_eq!(search(&t, "oslo", None).await["total"], 50);
    assert_eq!(search(&t, "during", None).await["total"], 1);
    t.stop().await;
}

/// Random sequences of writes (inserts, updates, deletes, company renames,
/// in transactions of several statements) end with an index equal to
/// Postgres and to a model of what was written.
#[test]
fn random_write_sequences_converge() {
    use proptest::prelude::*;
    #[derive(Debug, Clone)]
    enum W {
        Insert(u8),
        Update(u8, u8),
        Delete(u8),
        Rename(u8),
        Link(u8),
    }
    let op = prop_oneof![
        (0u8..12).prop_map(W::Insert),
        (0u8..12, 0u8..255).prop_map(|(k, v)| W::Update(k, v)),
        (0u8..12).prop_map(W::Delete),
        (0u8..255).prop_map(W::Rename),
        (0u8..12).prop_map(W::Link),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(TestApp::with_indexer());
    let co: Uuid = rt.block_on(async {
        sqlx::query_scalar(
            "INSERT INTO companies (tenant_id, name) VALUES ($1, 'Co0') RETURNING id",
        )
        .bind(t.a.id)
        .fetch_one(&t.pool)
        .await
        .unwrap()
    });
    let config = ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = proptest::collection::vec(proptest::collection::vec(op, 1..5), 1..10);
    runner
        .run(&strategy, |txns| {
            rt.block_on(async {
                // the model: external id -> (last_name, linked); the company's name
                let mut model: BTreeMap<String, (String, bool)> = BTreeMap::new();
                let mut company = String::from("Co0");
                sqlx::query("DELETE FROM contacts").execute(&t.pool).await.unwrap();
                sqlx::query("UPDATE companies SET name = 'Co0'").execute(&t.pool).await.unwrap();
                for txn in &txns {
                    let mut tx = t.pool.begin().await.unwrap();
                    for w in txn {
                        match w {
                            W::Insert(k) => {
                                let ext = format!("k{k}");
                                sqlx::query("INSERT INTO contacts (tenant_id, external_id, last_name) VALUES ($1, $2, $2) ON CONFLICT (tenant_id, external_id) DO NOTHING")
                                    .bind(t.a.id).bind(&ext).execute(&mut *tx).await.unwrap();
                                model.entry(ext.clone()).or_insert((ext, false));
                            }
                            W::Update(k, v) => {
                                let ext = format!("k{k}");
                                sqlx::query("UPDATE contacts SET last_name = $3 WHERE tenant_id = $1 AND external_id = $2")
                                    .bind(t.a.id).bind(&ext).bind(format!("v{v}")).execute(&mut *tx).await.unwrap();
                                if let Some(e) = model.get_mut(&ext) { e.0 = format!("v{v}"); }
                            }
                            W::Delete(k) => {
                                let ext = format!("k{k}");
                                sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND external_id = $2")
                                    .bind(t.a.id).bind(&ext).execute(&mut *tx).await.unwrap();
                                model.remove(&ext);
                            }
                            W::Rename(v) => {
                                company = format!("Co{v}");
                                sqlx::query("UPDATE companies SET name = $2 WHERE id = $1").bind(co).bind(&company).execute(&mut *tx).await.unwrap();
                            }
                            W::Link(k) => {
                                let ext = format!("k{k}");
                                sqlx::query("UPDATE contacts SET company_id = $3 WHERE tenant_id = $1 AND external_id = $2")
                                    .bind(t.a.id).bind(&ext).bind(co).execute(&mut *tx).await.unwrap();
                                if let Some(e) = model.get_mut(&ext) { e.1 = true; }
                            }
                        }
                    }
                    tx.commit().await.unwrap();
                }
                assert_converged(&t, t.a.id).await;
                let ix = indexed(&t, t.a.id);
                let got: BTreeMap<String, (String, Option<String>)> = ix
                    .values()
                    .map(|c| (c.external_id.clone().unwrap(), (c.last_name.clone().unwrap(), c.company_name.clone())))
                    .collect();
                let want: BTreeMap<String, (String, Option<String>)> = model
                    .into_iter()
                    .map(|(k, (name, linked))| (k, (name, linked.then(|| company.clone()))))
                    .collect();
                prop_assert_eq!(got, want);
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(t.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_positions_and_counts() {
    let t = TestApp::with_indexer().await;
    let (_, c) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.a.key(Role::Write)),
            Some(json!({"last_name": "S"})),
        )
        .await;
    search(&t, "s", c["lsn"].as_str()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, v) = t
        .call(
            Method::GET,
            "/v1/admin/status",
            Some(t.a.key(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["documents"]["contacts"], 1);
    assert_eq!(v["connected"], true);
    assert_eq!(v["lag_bytes"], 0, "{v}");
    let applied: indexer::Lsn = v["applied_lsn"].as_str().unwrap().parse().unwrap();
    assert!(applied >= c["lsn"].as_str().unwrap().parse().unwrap());
    // a tenant's admin sees its own tenant, nothing of the deployment
    assert_eq!(v["tenant"], t.a.id.to_string(), "{v}");
    for whole in [
        "slot",
        "slot_retained_wal_bytes",
        "segments",
        "vectors",
        "warnings",
        "last_error",
    ] {
        assert!(v.get(whole).is_none(), "{whole}: {v}");
    }
    let (_, v) = t
        .call(
            Method::GET,
            "/v1/admin/status",
            Some(t.b.key(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(v["documents"]["contacts"], 0, "tenant b's own count: {v}");
    let (s, v) = t
        .call(
            Method::GET,
            "/v1/admin/status",
            Some(crate::common::MASTER_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["slot_retained_wal_bytes"].as_i64().is_some(), "{v}");
    assert!(v["slot"].is_string(), "{v}");
    let (s, _) = t
        .call(
            Method::GET,
            "/v1/admin/status",
            Some(t.a.key(Role::Write)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = t.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
    let (s, metrics) = t.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains("crmsearch_commit_seconds")
            && text.contains("crmsearch_http_request_seconds"),
        "{text}"
    );
    t.stop().await;
}

fn invisible_rereads() -> f64 {
    crmsearch::telemetry::metrics()
        .render()
        .lines()
        .find(|l| l.starts_with("crmsearch_cdc_invisible_rereads_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn cache_hits() -> f64 {
    crmsearch::telemetry::metrics()
        .render()
        .lines()
        .find(|l| l.starts_with("crmsearch_result_cache_total") && l.contains("result=\"hit\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The result cache never answers with what a write has changed: its
/// entries hold while the tenant's documents are unchanged, whoever writes
/// and however (API, SQL, update, delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_follow_every_write() {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    let suggest = async |q: &str| {
        let (s, v) = t
            .call(
                Method::GET,
                &format!("/v1/contacts/autocomplete?q={q}"),
                Some(t.a.key(Role::Search)),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["suggestions"].as_array().unwrap().len()
    };
    assert_eq!(search(&t, "zebulon", None).await["total"], 0);
    assert_eq!(suggest("zebul").await, 0);
    let hits = cache_hits();
    let again = search(&t, "zebulon", None).await;
    assert_eq!(again["total"], 0);
    assert!(again["took_ms"].is_number() && again["index_lsn"].is_string());
    assert!(
        cache_hits() > hits,
        "the same request again is answered from the cache"
    );

    // another tenant's write: not in this tenant's answers
    let (_, b) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(json!({"first_name": "Zebulon", "last_name": "Other"})),
        )
        .await;
    assert_eq!(search(&t, "zebulon", b["lsn"].as_str()).await["total"], 0);

    // an insert, an update through the API
    let (_, c) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"first_name": "Zebulon", "last_name": "Quartz"})),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ids(&search(&t, "zebulon", c["lsn"].as_str()).await),
        vec![id.clone()]
    );
    assert_eq!(suggest("zebul").await, 1);
    assert_eq!(search(&t, "onyx", None).await["total"], 0);
    let (_, p) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{id}"),
            Some(w),
            Some(json!({"last_name": "Onyx"})),
        )
        .await;
    assert_eq!(search(&t, "onyx", p["lsn"].as_str()).await["total"], 1);
    assert_eq!(search(&t, "quartz", None).await["total"], 0);

    // another program's update and delete (a delete names only the id)
    sqlx::query("UPDATE contacts SET first_name = 'Zeb' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&t.pool)
        .await
        .unwrap();
    t.caught_up().await;
    assert_eq!(search(&t, "zebulon", None).await["total"], 0);
    assert_eq!(suggest("zebul").await, 0);
    assert_eq!(search(&t, "onyx", None).await["total"], 1);
    sqlx::query("DELETE FROM contacts WHERE id = $1::uuid")
        .bind(&id)
        .execute(&t.pool)
        .await
        .unwrap();
    t.caught_up().await;
    assert_eq!(search(&t, "onyx", None).await["total"], 0);
    t.stop().await;
}

/// Two deployments on one Postgres never share a replication slot by
/// default (its name comes from the database and the index folder), and a
/// slot that is another's — another database's, or another index's of the
/// same database — is refused with a sentence saying so, never taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_unique_per_deployment_and_a_clash_is_refused() {
    let one = TestApp::new().await;
    let two = TestApp::new().await;
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slots-{}", one.url.rsplit('/').next().unwrap()));
    let _ = std::fs::remove_dir_all(&root);
    let icfg = |t: &TestApp, dir: &str, node: Option<&str>| indexer::IndexerConfig {
        node: node.map(str::to_owned),
        ..test_config_for(&t.url, &root.join(dir))
    };
    let start = |t: &TestApp, cfg: indexer::IndexerConfig| {
        let pool = t.pool.clone();
        async move { indexer::Indexer::start(cfg, pool).await }
    };
    // the default: a slot of its own for each database and folder
    let a = start(&one, icfg(&one, "a", None))
        .await
        .expect("the first deployment");
    let b = start(&two, icfg(&two, "b", None))
        .await
        .expect("the second deployment");
    assert_ne!(a.slot, b.slot);
    assert!(
        a.slot.len() <= 63 && a.slot.starts_with("crmsearch_"),
        "{}",
        a.slot
    );
    assert_eq!(
        icfg(&one, "a", None).slot(),
        a.slot,
        "recorded, and derived the same way"
    );
    // the same node in two databases: the second is refused, the first's slot kept
    let c = start(&two, icfg(&two, "c", Some("clash")))
        .await
        .expect("c");
    let refused = start(&one, icfg(&one, "d", Some("clash")))
        .await
        .err()
        .expect("another database's slot is refused");
    let said = refused.to_string();
    assert!(said.contains("belongs to the database"), "{said}");
    assert!(said.contains("CRMSEARCH_NODE"), "{said}");
    // the same node and database, two index folders: the second is refused
    let e = start(&one, icfg(&one, "e", Some("shared")))
        .await
        .expect("e");
    let refused = start(&one, icfg(&one, "f", Some("shared")))
        .await
        .err()
        .expect("another index's slot is refused");
    let said = refused.to_string();
    assert!(said.contains("belongs to the index at"), "{said}");
    assert!(
        said.contains(&root.join("e").display().to_string()),
        "{said}"
    );
    // the refused ones took nothing: the first ones still stream
    for (t, ix) in [(&two, &c), (&one, &e), (&one, &a), (&two, &b)] {
        sqlx::query("INSERT INTO contacts (tenant_id, last_name) VALUES ($1, 'Slot')")
            .bind(t.a.id)
            .execute(&t.pool)
            .await
            .unwrap();
        let lsn = crmsearch::db::write_position(&t.pool).await.unwrap();
        assert!(
            ix.wait_for(lsn, Duration::from_secs(30)).await,
            "{}",
            ix.slot
        );
    }
    // e's folder deleted to rebuild: the same folder on the same host keeps
    // its slot at once (a new id, the same deployment)
    e.shutdown().await;
    drop(e);
    std::fs::remove_dir_all(root.join("e")).unwrap();
    let e = start(&one, icfg(&one, "e", Some("shared")))
        .await
        .expect("a folder made again keeps its slot");
    for (t, ix) in [(&one, a), (&two, b), (&two, c), (&one, e)] {
        crate::common::stop_and_drop_slot(ix, &t.pool).await;
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The indexer's settings for a test database and index folder.
fn test_config_for(url: &str, dir: &std::path::Path) -> indexer::IndexerConfig {
    let mut cfg = crate::common::test_config();
    cfg.data_dir = dir.to_owned();
    cfg.durable_interval_ms = 200;
    cfg.indexer(url)
}

/// A slot no index will follow again is released with its claim (Postgres
/// stops keeping WAL for it); a slot being streamed, or an unknown one, is
/// refused with a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_no_index_follows_is_released() {
    use indexer::pipeline::slot::{list_slots, release_slot};
    let t = TestApp::new().await;
    let name = t.url.rsplit('/').next().unwrap().to_owned();
    let root =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("release-{name}"));
    let _ = std::fs::remove_dir_all(&root);
    let cfg = |dir: &str, node: String| indexer::IndexerConfig {
        node: Some(node),
        ..test_config_for(&t.url, &root.join(dir))
    };
    let gone = indexer::Indexer::start(cfg("gone", format!("{name}_gone")), t.pool.clone())
        .await
        .unwrap();
    let live = indexer::Indexer::start(cfg("live", format!("{name}_live")), t.pool.clone())
        .await
        .unwrap();
    let (gone_slot, live_slot) = (gone.slot.clone(), live.slot.clone());
    // streaming: it has passed the server's position
    let lsn = crmsearch::db::write_position(&t.pool).await.unwrap();
    assert!(live.wait_for(lsn, Duration::from_secs(30)).await);
    gone.shutdown().await;
    drop(gone);
    let listed = list_slots(&t.pool).await.unwrap();
    let of = |slot: &str| listed.iter().find(|s| s.name == slot);
    let g = of(&gone_slot).expect("listed");
    assert!(
        !g.active && g.index_dir.as_deref().is_some_and(|d| d.contains("gone")),
        "{g:?}"
    );
    assert!(of(&live_slot).is_some_and(|s| s.active), "{listed:?}");
    // a slot being streamed is refused; an unknown one, or another's, too
    let refused = release_slot(&t.pool, &live_slot)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("in use"), "{refused}");
    let refused = release_slot(&t.pool, "crmsearch_no_such_slot")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no replication slot"), "{refused}");
    let refused = release_slot(&t.pool, "pg_something")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not a crmsearch slot"), "{refused}");
    // the stopped one is released, with its claim
    release_slot(&t.pool, &gone_slot).await.unwrap();
    let listed = list_slots(&t.pool).await.unwrap();
    assert!(listed.iter().all(|s| s.name != gone_slot), "{listed:?}");
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM crmsearch_slot_claims WHERE slot_name = $1")
            .bind(&gone_slot)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(claims, 0);
    live.shutdown().await;
    drop(live);
    release_slot(&t.pool, &live_slot).await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
