//! `POST /v1/contacts/bulk`: NDJSON and CSV, upsert by external_id,
//! per-line errors, and 100,000 contacts in one request.

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use serde_json::json;

use crate::common::TestApp;

async fn count(t: &TestApp, tenant: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&t.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn ndjson_with_bad_lines_loads_the_good_ones_and_upserts() {
    let t = TestApp::new().await;
    let w = t.a.key(Role::Write);
    let (_, co) = t
        .call(
            Method::POST,
            "/v1/companies",
            Some(w),
            Some(json!({"name": "Volvo", "external_id": "co-9"})),
        )
        .await;
    let body = [
        r#"{"external_id":"e1","first_name":"Åsa","last_name":"Öberg","emails":["asa@volvo.se"],"company_external_id":"co-9"}"#,
        r#"{"external_id":"e2","last_name":"Ek","phones":["+46 8 123 456 78"],"tags":["a\tb","c\"d","e\\f"],"notes":"line one\nline two"}"#,
        r#"{"external_id":"e3","last_name":5}"#,
        "",
        r#"{"external_id":"e4","emails":["not-an-email"]}"#,
        r#"not json at all"#,
        r#"{"external_id":"e5","last_name":"X","company_external_id":"co-missing"}"#,
        r#"{"external_id":"e6","last_name":"Y","nickname":"z"}"#,
        r#"{"last_name":"No Id","custom":{"k":{"nested":[1,2]}}}"#,
    ]
    .join("\n");
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", body.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["inserted"].as_u64(), v["updated"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );
    let failed: Vec<(u64, String)> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().unwrap(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        (3, "invalid_body"),
        (5, "invalid_value"),
        (6, "malformed_json"),
        (7, "invalid_value"),
        (8, "unknown_field"),
    ];
    assert_eq!(
        failed,
        expect.map(|(l, c)| (l, c.to_owned())).to_vec(),
        "{v}"
    );
    assert!(v["lsn"].as_str().is_some());
    assert_eq!(count(&t, t.a.id).await, 3);

    // awkward characters survive the COPY path exactly
    let (tags, notes, company): (Vec<String>, String, Option<String>) =
        sqlx::query_as("SELECT tags, notes, company_name FROM contacts WHERE external_id = 'e2'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(tags, vec!["a\tb", "c\"d", "e\\f"]);
    assert_eq!(notes, "line one\nline two");
    assert_eq!(company, None);
    let name: Option<String> =
        sqlx::query_scalar("SELECT company_name FROM contacts WHERE external_id = 'e1'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(name.as_deref(), co["name"].as_str());

    // again: e1 updates, a repeated e7 counts once as insert and once as update
    let again = [
        r#"{"external_id":"e1","first_name":"Åsa","last_name":"Öberg-Lind"}"#,
        r#"{"external_id":"e7","last_name":"First"}"#,
        r#"{"external_id":"e7","last_name":"Second"}"#,
    ]
    .join("\n");
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", again.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["inserted"].as_u64(), v["updated"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    let last: String =
        sqlx::query_scalar("SELECT last_name FROM contacts WHERE external_id = 'e7'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(last, "Second");
    let (last, company): (String, Option<String>) =
        sqlx::query_as("SELECT last_name, company_name FROM contacts WHERE external_id = 'e1'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(
        (last.as_str(), company),
        ("Öberg-Lind", None),
        "an upsert replaces the whole record"
    );
    // the other tenant saw nothing
    assert_eq!(count(&t, t.b.id).await, 0);
}

#[tokio::test]
async fn csv_with_bad_lines() {
    let t = TestApp::new().await;
    let w = t.a.key(Role::Write);
    let csv = "external_id,first_name,last_name,emails,phones,country,tags,custom.source\n\
               c1,Jürgen,Müller,j@m.de;jm@m.de,030 1234567,DE,vip;beta,fair\n\
               c2,\"Smith, Jr.\",\"O\"\"Brien\",,,US,,\n\
               c3,Bad,Email,nope,,,,\n\
               c4,Too,Few\n\
               c5,,,,,,,\n\
               c6,Ann,Lee,ann@lee.com,,,,web\n";
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("text/csv", csv.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["inserted"].as_u64(), Some(3), "{v}");
    let lines: Vec<u64> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![4, 5, 6], "{v}");
    let (emails, phones, custom): (Vec<String>, Vec<String>, serde_json::Value) = sqlx::query_as(
        "SELECT emails, phones_normalized, custom FROM contacts WHERE external_id = 'c1'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(emails, vec!["j@m.de", "jm@m.de"]);
    assert_eq!(phones, vec!["+49301234567"]);
    assert_eq!(custom, json!({"source": "fair"}));
    let (first, last): (String, String) =
        sqlx::query_as("SELECT first_name, last_name FROM contacts WHERE external_id = 'c2'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!((first.as_str(), last.as_str()), ("Smith, Jr.", "O\"Brien"));
    // ?format= overrides the media type
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk?format=csv",
            Some(w),
            Some(("application/octet-stream", b"last_name\nZed\n".to_vec())),
        )
        .await;
    assert_eq!(
        (s, v["inserted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
}

#[tokio::test]
async fn one_hundred_thousand_contacts_in_one_request() {
    let t = TestApp::new().await;
    let w = t.a.key(Role::Write);
    let mut body = String::with_capacity(16 << 20);
    for i in 0..100_000 {
        body.push_str(&format!(
            "{{\"external_id\":\"x{i}\",\"first_name\":\"Name{i}\",\"last_name\":\"Family{}\",\"emails\":[\"n{i}@example.com\"],\"phones\":[\"+46 70 {:03} {:02} {:02}\"],\"tags\":[\"t{}\"]}}\n",
            i % 977,
            i % 1000,
            i % 100,
            (i / 100) % 100,
            i % 7
        ));
    }
    body.push_str("{\"external_id\":\"bad\",\"emails\":[\"@\"]}\n");
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", body.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["inserted"].as_u64(), Some(100_000));
    assert_eq!(v["failed"].as_array().unwrap().len(), 1);
    assert_eq!(v["failed"][0]["line"].as_u64(), Some(100_001));
    assert_eq!(count(&t, t.a.id).await, 100_000);
}
