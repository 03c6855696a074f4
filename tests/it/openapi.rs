//! `/openapi.json`: generated from the routes, true to the API reference.
//! (schemathesis checks every answer against it in `scripts/test`.)

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use crmsearch::error::Code;
use serde_json::{Value, json};

use crate::common::TestApp;

/// Every route of the API reference (docs/API.md), as method and path.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants/{id}"),
    ("patch", "/v1/tenants/{id}"),
    ("post", "/v1/keys"),
    ("delete", "/v1/keys/{prefix}"),
    ("post", "/v1/contacts"),
    ("get", "/v1/contacts/{id}"),
    ("patch", "/v1/contacts/{id}"),
    ("delete", "/v1/contacts/{id}"),
    ("post", "/v1/contacts/bulk"),
    ("get", "/v1/contacts/export"),
    ("post", "/v1/companies"),
    ("get", "/v1/companies/{id}"),
    ("patch", "/v1/companies/{id}"),
    ("delete", "/v1/companies/{id}"),
    ("post", "/v1/companies/bulk"),
    ("get", "/v1/contacts/search"),
    ("post", "/v1/contacts/search"),
    ("get", "/v1/companies/search"),
    ("post", "/v1/companies/search"),
    ("get", "/v1/contacts/autocomplete"),
    ("get", "/v1/contacts/stats"),
    ("post", "/v1/memories"),
    ("post", "/v1/memories/bulk"),
    ("post", "/v1/memories/search"),
    ("get", "/v1/memories/{id}"),
    ("delete", "/v1/memories/{id}"),
    ("get", "/v1/contacts/{id}/context"),
    ("get", "/v1/admin/status"),
    ("post", "/v1/admin/verify"),
    ("post", "/v1/admin/reindex"),
    ("get", "/v1/admin/jobs/{id}"),
    ("post", "/v1/batch"),
    ("post", "/indexes/{index_uid}/search"),
    ("post", "/multi-search"),
];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_describes_every_route_and_every_error_code() {
    let t = TestApp::new().await;
    let (s, doc) = t.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let want: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        operations(&doc),
        want,
        "the document and docs/API.md name the same routes"
    );

    // each one is served (the document is made from the routes, so the
    // converse holds by construction)
    let admin = t.a.key(Role::Admin);
    let id = uuid::Uuid::new_v4().to_string();
    for (method, path) in ROUTES {
        let path = path
            .replace("{id}", &id)
            .replace("{prefix}", "ck_nope")
            .replace("{index_uid}", "contacts");
        let method: Method = method.to_uppercase().parse().unwrap();
        let body = matches!(method, Method::POST | Method::PATCH).then(|| json!({}));
        let (status, v) = t.call(method.clone(), &path, Some(admin), body).await;
        // ours, or Meilisearch's shape on its routes
        let code = v["error"]["code"]
            .as_str()
            .or(v["code"].as_str())
            .unwrap_or_default();
        assert!(
            !matches!(code, "route_not_found" | "method_not_allowed"),
            "{method} {path}: {status} {v}"
        );
    }

    // every error code, and what every keyed route shares
    let codes: BTreeSet<&str> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    let all: BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, all);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("default"), "{method} {path}");
        assert!(responses.contains_key("503"), "{method} {path}");
        if path.starts_with("/v1/") || crmsearch::api::meili::is_meili_path(&path) {
            assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
            for status in ["401", "403", "429"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
            assert!(
                responses["429"]["headers"]["Retry-After"].is_object(),
                "{method} {path}"
            );
        } else {
            assert!(!responses.contains_key("401"), "{method} {path}");
        }
    }
}
