//! The happy path of every route, and tenant isolation.

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use indexer::Lsn;
use serde_json::json;

use crate::common::{MASTER_KEY, TestApp, assert_error};

fn lsn_of(v: &serde_json::Value) -> Lsn {
    v["lsn"]
        .as_str()
        .expect("a write carries lsn")
        .parse()
        .expect("lsn parses")
}

#[tokio::test]
async fn health_and_readiness() {
    let t = TestApp::new().await;
    let (s, v) = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = t.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
}

#[tokio::test]
async fn tenants_and_keys_lifecycle() {
    let t = TestApp::new().await;
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/tenants",
            Some(MASTER_KEY),
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let admin = v["keys"]["admin"].as_str().unwrap().to_owned();
    assert!(admin.len() >= 40);

    // the admin key mints a search key, which works at once
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some(json!({"role": "search"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let search = v["key"].as_str().unwrap().to_owned();
    let prefix = v["prefix"].as_str().unwrap().to_owned();
    assert!(search.starts_with(&prefix));
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{}", uuid::Uuid::nil()),
            Some(&search),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // keys are stored hashed: the key itself appears nowhere in the table
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT prefix || encode(key_hash, 'hex') FROM api_keys")
            .fetch_all(&t.pool)
            .await
            .unwrap();
    assert!(stored.iter().all(|row| !row.contains(&search[13..])));

    // revoked: fails at once; revoking twice is a 404
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/v1/keys/{prefix}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{}", uuid::Uuid::nil()),
            Some(&search),
            None,
        )
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "invalid_api_key");
    let got = t
        .call(
            Method::DELETE,
            &format!("/v1/keys/{prefix}"),
            Some(&admin),
            None,
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");

    // another tenant's admin cannot revoke this tenant's keys
    let other = t.a.key(Role::Admin);
    let got = t
        .call(
            Method::DELETE,
            &format!("/v1/keys/{}", &admin[..12]),
            Some(other),
            None,
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");

    // the master key names the tenant explicitly
    let tenant = t.a.id;
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/keys",
            Some(MASTER_KEY),
            Some(json!({"role": "write", "tenant_id": tenant})),
        )
        .await;
    assert_eq!(
        (s, v["tenant_id"].as_str()),
        (StatusCode::CREATED, Some(tenant.to_string().as_str()))
    );
}

#[tokio::test]
async fn contact_create_read_patch_delete() {
    let t = TestApp::new().await;
    let w = t.a.key(Role::Write);
    let body = json!({
        "external_id": "crm-1", "first_name": " Jürgen ", "last_name": "Müller",
        "emails": ["Jurgen.Mueller@Example.DE"], "phones": ["030 1234567"], "country": "DE",
        "tags": ["vip", "vip", "beta"], "custom": {"source": "fair"}
    });
    let (s, c) = t
        .call(Method::POST, "/v1/contacts", Some(w), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["first_name"], "Jürgen");
    assert_eq!(c["emails"], json!(["Jurgen.Mueller@example.de"]));
    assert_eq!(c["phones"], json!(["030 1234567"]));
    assert_eq!(c["phones_normalized"], json!(["+49301234567"]));
    assert_eq!(c["tags"], json!(["vip", "beta"]));
    let first_lsn = lsn_of(&c);

    // the position handed back is at or after the commit: the row is there
    let current = indexer::wal::position(&t.pool).await.unwrap();
    assert!(first_lsn <= current);

    let (s, got) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{id}"),
            Some(t.a.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["last_name"], "Müller");
    assert!(got.get("lsn").is_none());

    // a merge patch: set, clear, merge into custom
    let patch = json!({"title": "CTO", "phones": null, "custom": {"tier": "gold", "source": null}});
    let (s, p) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{id}"),
            Some(w),
            Some(patch),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["title"], "CTO");
    assert_eq!(p["phones"], json!([]));
    assert_eq!(p["custom"], json!({"tier": "gold"}));
    assert_eq!(p["last_name"], "Müller");
    assert!(lsn_of(&p) > first_lsn);
    assert!(p["updated_at"].as_str() > c["updated_at"].as_str());

    // external_id is unique per tenant
    let dup = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"external_id": "crm-1", "last_name": "X"})),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "conflict");
    assert!(
        dup.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("external_id")
    );
    // ... but not across tenants
    let other = json!({"external_id": "crm-1", "last_name": "X"});
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(other),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, d) = t
        .call(Method::DELETE, &format!("/v1/contacts/{id}"), Some(w), None)
        .await;
    assert_eq!((s, d["deleted"].as_bool()), (StatusCode::OK, Some(true)));
    lsn_of(&d);
    let gone = t
        .call(Method::GET, &format!("/v1/contacts/{id}"), Some(w), None)
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn company_name_follows_the_company() {
    let t = TestApp::new().await;
    let w = t.a.key(Role::Write);
    let (s, co) = t
        .call(
            Method::POST,
            "/v1/companies",
            Some(w),
            Some(json!({"name": "Acme AB", "external_id": "co-1", "domain": "ACME.se"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{co}");
    assert_eq!(co["domain"], "acme.se");
    let co_id = co["id"].as_str().unwrap().to_owned();

    let (_, by_id) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"last_name": "A", "company_id": co_id})),
        )
        .await;
    assert_eq!(by_id["company_name"], "Acme AB");
    let (_, by_ext) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"last_name": "B", "company_external_id": "co-1"})),
        )
        .await;
    assert_eq!(by_ext["company_id"], co_id.as_str());
    // company_name names a company (made when the tenant has none by that
    // name): the contact's name is always its company's, never its own
    let (s, named) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"last_name": "C", "company_name": "Evil"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{named}");
    let (_, evil) = t
        .call(
            Method::GET,
            &format!("/v1/companies/{}", named["company_id"].as_str().unwrap()),
            Some(w),
            None,
        )
        .await;
    assert_eq!(evil["name"], "Evil");
    let both = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"last_name": "D", "company_name": "Acme AB", "company_id": co_id})),
        )
        .await;
    assert_error(&both, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");

    // rename: every contact carries the new name
    let (s, r) = t
        .call(
            Method::PATCH,
            &format!("/v1/companies/{co_id}"),
            Some(w),
            Some(json!({"name": "Acme Group"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    for c in [&by_id, &by_ext] {
        let (_, got) = t
            .call(
                Method::GET,
                &format!("/v1/contacts/{}", c["id"].as_str().unwrap()),
                Some(w),
                None,
            )
            .await;
        assert_eq!(got["company_name"], "Acme Group");
    }
    let (_, got) = t
        .call(
            Method::GET,
            &format!("/v1/companies/{co_id}"),
            Some(t.a.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(got["name"], "Acme Group");

    // another tenant cannot link to this company
    let cross = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(json!({"last_name": "D", "company_id": co_id})),
        )
        .await;
    assert_error(&cross, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");

    // delete: contacts stay, without the company
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/companies/{co_id}"),
            Some(w),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, got) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{}", by_id["id"].as_str().unwrap()),
            Some(w),
            None,
        )
        .await;
    assert_eq!(
        (got["company_id"].clone(), got["company_name"].clone()),
        (json!(null), json!(null))
    );
}

#[tokio::test]
async fn memories_create_read_delete() {
    let t = TestApp::new().await;
    let agent = t.a.key(Role::Agent);
    let embedding: Vec<f32> = (0..384).map(|i| (i as f32 / 384.0).sin()).collect();
    let body = json!({"agent_id": "sales-bot", "subject_id": "anna", "kind": "preference",
        "content": "Anna prefers email in the morning", "importance": 0.8, "embedding": embedding,
        "metadata": {"source": "call"}});
    let (s, m) = t
        .call(Method::POST, "/v1/memories", Some(agent), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(
        (m["kind"].as_str(), m["has_embedding"].as_bool()),
        (Some("preference"), Some(true))
    );
    lsn_of(&m);
    let id = m["id"].as_str().unwrap();
    let stored: f64 = sqlx::query_scalar(
        "SELECT (embedding <#> embedding) * -1 FROM memories WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let norm: f64 = embedding.iter().map(|x| (*x as f64) * (*x as f64)).sum();
    assert!((stored - norm).abs() < 1e-3, "the vector is stored as sent");

    let (s, got) = t
        .call(
            Method::GET,
            &format!("/v1/memories/{id}"),
            Some(agent),
            None,
        )
        .await;
    assert_eq!(
        (s, got["content"].as_str()),
        (StatusCode::OK, Some("Anna prefers email in the morning"))
    );
    // without an embedding: the built-in model embeds the content
    let (s, m2) = t
        .call(
            Method::POST,
            "/v1/memories",
            Some(agent),
            Some(json!({"agent_id": "a", "kind": "fact", "content": "x"})),
        )
        .await;
    assert_eq!(
        (s, m2["has_embedding"].as_bool(), m2["importance"].as_f64()),
        (StatusCode::CREATED, Some(true), Some(0.5))
    );

    let other = t
        .call(
            Method::GET,
            &format!("/v1/memories/{id}"),
            Some(t.b.key(Role::Agent)),
            None,
        )
        .await;
    assert_error(&other, StatusCode::NOT_FOUND, "not_found");
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/memories/{id}"),
            Some(agent),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let gone = t
        .call(
            Method::GET,
            &format!("/v1/memories/{id}"),
            Some(agent),
            None,
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn another_tenants_ids_answer_404_never_the_row() {
    let t = TestApp::new().await;
    let (_, c) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.a.key(Role::Write)),
            Some(json!({"last_name": "Secret"})),
        )
        .await;
    let (_, co) = t
        .call(
            Method::POST,
            "/v1/companies",
            Some(t.a.key(Role::Write)),
            Some(json!({"name": "Secret Co"})),
        )
        .await;
    let b = t.b.key(Role::Admin);
    for (kind, id) in [("contacts", &c["id"]), ("companies", &co["id"])] {
        let id = id.as_str().unwrap();
        let path = format!("/v1/{kind}/{id}");
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"notes": "x"}))),
            (Method::DELETE, None),
        ] {
            let got = t.call(method.clone(), &path, Some(b), body).await;
            assert_error(&got, StatusCode::NOT_FOUND, "not_found");
            assert!(!got.1.to_string().contains("Secret"));
        }
    }
    // untouched
    let (_, still) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/{}", c["id"].as_str().unwrap()),
            Some(t.a.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(still["last_name"], "Secret");
    assert_eq!(still["notes"], json!(null));
}

/// A key validated while key changes are notified is accepted without
/// asking Postgres; another program's revocation or role change (plain SQL)
/// reaches the server through the trigger's notification and ends that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_changed_by_another_program_stop_working() {
    let t = TestApp::new().await;
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    until("the server listens for key changes", || {
        t.keys.is_listening()
    })
    .await;
    let search = t.a.key(Role::Search).to_owned();
    let write = t.a.key(Role::Write).to_owned();
    let create = json!({"first_name": "Ada"});
    let read = format!("/v1/companies/{}", uuid::Uuid::nil());
    let (s, _) = t.call(Method::GET, &read, Some(&search), None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "authenticated, and no such company"
    );
    assert!(t.keys.trusts(&search), "a validated key is trusted");
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(&write),
            Some(create.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(t.keys.trusts(&write));

    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1")
        .bind(&search[..12])
        .execute(&t.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET role = 'search' WHERE prefix = $1")
        .bind(&write[..12])
        .execute(&t.pool)
        .await
        .unwrap();
    until("the revocation is notified", || !t.keys.trusts(&search)).await;
    until("the role change is notified", || !t.keys.trusts(&write)).await;
    assert_error(
        &t.call(Method::GET, &read, Some(&search), None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
    assert_error(
        &t.call(Method::POST, "/v1/contacts", Some(&write), Some(create))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}
