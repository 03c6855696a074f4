//! The batch route, companies in bulk, contacts naming their company by
//! name, and the export.

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error};

fn batch(requests: Value) -> Option<Value> {
    Some(json!({ "requests": requests }))
}

#[tokio::test]
async fn a_batch_runs_each_part_as_if_sent_alone() {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    let (s, b_contact) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(json!({"first_name": "Bea", "last_name": "Other"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/batch",
            Some(w),
            batch(json!([
                {"method": "POST", "path": "/v1/contacts", "body": {"first_name": "Anna", "last_name": "Kowalski"}},
                {"method": "get", "path": format!("/v1/contacts/{}", b_contact["id"].as_str().unwrap())},
                {"method": "GET", "path": "/v1/contacts/search?q=anna&limit=5"},
                {"method": "POST", "path": "/v1/contacts", "body": {"nickname": "x"}},
                {"method": "GET", "path": "/v1/nowhere"},
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 404, 200, 400, 404], "{v}");
    assert_eq!(results[0]["body"]["first_name"], "Anna");
    assert!(results[0]["body"]["lsn"].is_string());
    // another tenant's id is not found, never shown
    assert_eq!(results[1]["body"]["error"]["code"], "not_found");
    assert!(!v.to_string().contains("Bea"), "{v}");
    assert!(results[2]["body"]["total"].is_u64());
    assert_eq!(results[3]["body"]["error"]["code"], "unknown_field");
    assert_eq!(results[4]["body"]["error"]["code"], "route_not_found");

    // the caller's role holds in every part
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/batch",
            Some(t.a.key(Role::Search)),
            batch(json!([
                {"method": "GET", "path": "/v1/contacts/stats"},
                {"method": "POST", "path": "/v1/contacts", "body": {"last_name": "Nope"}},
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["status"], 200, "{v}");
    assert_eq!(v["results"][1]["status"], 403, "{v}");

    // a bad batch is refused whole, before any part runs
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"method": "GET", "path": "/v1/contacts/stats"}))
        .collect();
    for (requests, field) in [
        (json!(many), "at most 20"),
        (json!([{"method": "PUT", "path": "/v1/contacts"}]), "method"),
        (json!([{"method": "GET", "path": "/healthz"}]), "under /v1/"),
        (
            json!([{"method": "POST", "path": "/v1/contacts/bulk", "body": {}}]),
            "bulk",
        ),
        (
            json!([{"method": "POST", "path": "/v1/batch", "body": {}}]),
            "batch",
        ),
        (
            json!([{"method": "GET", "path": "/v1/contacts/stats", "body": {}}]),
            "body",
        ),
        (
            json!([
                {"method": "POST", "path": "/v1/contacts", "body": {"last_name": "Never"}},
                {"method": "TRACE", "path": "/v1/contacts"}
            ]),
            "requests[1]",
        ),
    ] {
        let got = t
            .call(Method::POST, "/v1/batch", Some(w), batch(requests))
            .await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert!(got.1.to_string().contains(field), "{field}: {}", got.1);
    }
    let never: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE last_name = 'Never'")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(never, 0, "nothing of a refused batch ran");
    let got = t
        .call(Method::POST, "/v1/batch", Some("nope"), batch(json!([])))
        .await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED);
    let got = t
        .call(
            Method::POST,
            "/v1/batch",
            Some(w),
            Some(json!({"requests": [], "x": 1})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "unknown_field");
    let got = t.call(Method::GET, "/v1/batch", Some(w), None).await;
    assert_error(&got, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    t.stop().await;
}

async fn company_names(t: &TestApp, tenant: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM companies WHERE tenant_id = $1 ORDER BY name")
        .bind(tenant)
        .fetch_all(&t.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn companies_load_in_bulk_and_contacts_name_their_company() {
    let t = TestApp::new().await;
    let w = t.a.key(Role::Write);
    let ndjson = [
        r#"{"external_id":"co1","name":"Acme GmbH","domain":"acme.de"}"#,
        r#"{"external_id":"co2","name":"Volvo"}"#,
        r#"{"external_id":"co1","name":"Acme GmbH","industry":"tools"}"#,
        r#"{"external_id":"co3"}"#,
        r#"{"name":"No Id AB","tags":["x"]}"#,
    ]
    .join("\n");
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/companies/bulk",
            Some(w),
            Some(("application/x-ndjson", ndjson.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["inserted"].as_u64(), v["updated"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    assert_eq!(v["failed"][0]["line"], 4, "{v}");
    assert_eq!(v["failed"][0]["code"], "invalid_value", "{v}");
    assert!(v["lsn"].is_string());
    let industry: Option<String> = sqlx::query_scalar(
        "SELECT industry FROM companies WHERE tenant_id = $1 AND external_id = 'co1'",
    )
    .bind(t.a.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(industry.as_deref(), Some("tools"), "the later line wins");
    // CSV, upserting by external_id
    let csv = "external_id,name,tags,custom.size\nco2,Volvo Cars,auto;se,big\nco4,Zeta,,\n";
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/companies/bulk",
            Some(w),
            Some(("text/csv", csv.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["inserted"].as_u64(), v["updated"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let got = t
        .raw(
            Method::POST,
            "/v1/companies/bulk",
            Some(w),
            Some(("text/csv", b"name,revenue\nX,1\n".to_vec())),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "unknown_field");
    let got = t
        .raw(
            Method::POST,
            "/v1/companies/bulk",
            Some(t.a.key(Role::Search)),
            Some(("text/csv", csv.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    assert_eq!(company_names(&t, t.b.id).await, Vec::<String>::new());

    // contacts by company name: case and spaces aside, created once if new
    let contacts = [
        r#"{"external_id":"p1","last_name":"Ek","company_name":"  acme gmbh "}"#,
        r#"{"external_id":"p2","last_name":"Berg","company_name":"New Co"}"#,
        r#"{"external_id":"p3","last_name":"Lund","company_name":"NEW CO"}"#,
        r#"{"external_id":"p4","last_name":"Dahl","company_name":"Volvo Cars","company_external_id":"co2"}"#,
    ]
    .join("\n");
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", contacts.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["inserted"], 3, "{v}");
    assert_eq!(v["failed"][0]["line"], 4, "{v}");
    assert!(
        v["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("a second time"),
        "{v}"
    );
    let by_contact: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT external_id, company_name FROM contacts WHERE tenant_id = $1 ORDER BY external_id",
    )
    .bind(t.a.id)
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(
        by_contact,
        [
            ("p1".to_owned(), Some("Acme GmbH".to_owned())),
            ("p2".to_owned(), Some("New Co".to_owned())),
            ("p3".to_owned(), Some("New Co".to_owned())),
        ]
    );
    let names = company_names(&t, t.a.id).await;
    assert_eq!(
        names.iter().filter(|n| n.as_str() == "New Co").count(),
        1,
        "{names:?}"
    );
    // the CSV column `company`, and one contact at a time
    let csv = "external_id,last_name,company\np5,Holm,Volvo Cars\n";
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("text/csv", csv.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(
        (s, v["inserted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(w),
            Some(json!({"last_name": "Solo", "company_name": "Brand New Ltd"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["company_name"], "Brand New Ltd");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = t
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{id}"),
            Some(w),
            Some(json!({"company_name": "acme GMBH"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["company_name"], "Acme GmbH");
    // another tenant's company of the same name is not used
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(json!({"last_name": "B", "company_name": "Acme GmbH"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(company_names(&t, t.b.id).await, ["Acme GmbH"]);
    let a_acme: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM companies WHERE tenant_id = $1 AND external_id = 'co1'")
            .bind(t.a.id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_ne!(v["company_id"], a_acme.to_string());
}

fn lines(v: &Value) -> Vec<&str> {
    v.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn the_export_streams_what_the_search_finds_and_loads_back() {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    // more than one page of the export (1,000)
    let body: String = (0..2_300)
        .map(|i| {
            let stage = if i % 3 == 0 { "customer" } else { "lead" };
            format!(
                "{{\"external_id\":\"x{i}\",\"first_name\":\"N{i}\",\"last_name\":\"Doe, \\\"Jr\\\"\",\"emails\":[\"n{i}@ex.com\"],\"tags\":[\"a\",\"b\"],\"lifecycle_stage\":\"{stage}\",\"custom\":{{\"n\":{i}}}}}\n"
            )
        })
        .collect();
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", body.into_bytes())),
        )
        .await;
    assert_eq!(
        (s, v["inserted"].as_u64()),
        (StatusCode::OK, Some(2_300)),
        "{v}"
    );
    t.caught_up().await;

    let (s, v) = t
        .call(Method::GET, "/v1/contacts/export", Some(w), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let rows = lines(&v);
    assert_eq!(rows.len(), 2_300);
    let ids: HashSet<String> = rows
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2_300, "each contact once");

    // under a filter: what the search counts
    let filter = "%7B%22lifecycle_stage%22%3A%5B%22customer%22%5D%7D";
    let (_, found) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/search?filter={filter}&limit=1"),
            Some(w),
            None,
        )
        .await;
    let (s, v) = t
        .call(
            Method::GET,
            &format!("/v1/contacts/export?format=ndjson&filter={filter}"),
            Some(w),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(lines(&v).len() as u64, found["total"].as_u64().unwrap());
    assert_eq!(lines(&v).len(), 767);

    // CSV, loaded back into another tenant: the same contacts
    let (s, v) = t
        .call(Method::GET, "/v1/contacts/export?format=csv", Some(w), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let csv = v.as_str().unwrap().to_owned();
    assert!(
        csv.starts_with("id,external_id,first_name,last_name,emails"),
        "{}",
        &csv[..200]
    );
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(t.b.key(Role::Write)),
            Some(("text/csv", csv.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["inserted"].as_u64(), v["failed"].as_array().map(Vec::len)),
        (Some(2_300), Some(0)),
        "{v}"
    );
    let same: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts a JOIN contacts b USING (external_id)
         WHERE a.tenant_id = $1 AND b.tenant_id = $2 AND a.last_name = b.last_name
           AND a.emails = b.emails AND a.tags = b.tags AND a.custom = b.custom",
    )
    .bind(t.a.id)
    .bind(t.b.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(same, 2_300);

    // compressed: the compression layer reads past the stream's end
    let req = axum::http::Request::builder()
        .uri("/v1/contacts/export?format=csv")
        .header("authorization", format!("Bearer {w}"))
        .header("accept-encoding", "gzip")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = t.request(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let zipped = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("the whole compressed export")
        .to_bytes();
    assert!(zipped.len() > 1_000);

    // a search key may not export; bad parameters are 4xx before the stream
    let got = t
        .call(
            Method::GET,
            "/v1/contacts/export",
            Some(t.a.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    let got = t
        .call(Method::GET, "/v1/contacts/export?format=xml", Some(w), None)
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_query");
    let got = t
        .call(
            Method::GET,
            "/v1/contacts/export?filter=%7Bnope",
            Some(w),
            None,
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_filter");
    let got = t
        .call(Method::GET, "/v1/contacts/export?limit=5", Some(w), None)
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_query");
    t.stop().await;
}
