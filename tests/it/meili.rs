//! The Meilisearch-compatible routes: the requests instant-meilisearch
//! sends, answered in Meilisearch's shapes from the same engine as
//! `/v1/contacts/search`, errors in Meilisearch's shape, the tenant from
//! the key.

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use serde_json::{Value, json};

use crate::common::TestApp;
use crate::search::loaded;

async fn post(t: &TestApp, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
    t.call(Method::POST, path, Some(key), Some(body)).await
}

fn ext_ids(answer: &Value) -> Vec<String> {
    answer["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["external_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_meilisearch_requests_get_meilisearch_answers() {
    let t = loaded().await;
    let key = t.a.key(Role::Search);
    // what InstantSearch sends for a box, two refinement lists and one
    // ticked value: the hits query and one facet query per disjunctive facet
    let body = json!({"queries": [
        {"indexUid": "contacts", "q": "smiht", "facets": ["country", "lifecycle_stage"],
         "filter": [["\"lifecycle_stage\"=\"lead\"", "\"lifecycle_stage\"=\"customer\""]],
         "attributesToHighlight": ["*"], "highlightPreTag": "__ais-highlight__",
         "highlightPostTag": "__/ais-highlight__", "limit": 21, "offset": 0},
        {"indexUid": "contacts", "q": "smiht", "facets": ["lifecycle_stage"], "limit": 0, "offset": 0},
    ]});
    let (s, v) = post(&t, key, "/multi-search", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hits = &v["results"][0];
    assert_eq!(hits["indexUid"], "contacts");
    assert_eq!(hits["query"], "smiht");
    assert_eq!(hits["totalHits"], hits["estimatedTotalHits"]);
    assert!(hits["processingTimeMs"].is_u64(), "{hits}");
    let ids = ext_ids(hits);
    assert!(
        ids.contains(&"c1".to_owned()) && ids.contains(&"c13".to_owned()),
        "{ids:?}"
    );
    assert_eq!(hits["totalHits"].as_u64().unwrap() as usize, ids.len());
    let first = &hits["hits"][0];
    assert!(
        first["last_name"].as_str().unwrap().starts_with("Smith"),
        "{first}"
    );
    assert!(
        first["_formatted"]["last_name"]
            .as_str()
            .unwrap()
            .starts_with("__ais-highlight__Smit"),
        "{first}"
    );
    assert_eq!(first["_formatted"]["first_name"], first["first_name"]);
    // the facet query: counts without its own filter (disjunctive)
    let dist = &v["results"][1]["facetDistribution"]["lifecycle_stage"];
    assert!(dist["lead"].as_u64().unwrap() >= 2, "{dist}");
    assert_eq!(v["results"][1]["hits"], json!([]));

    // the same numbers as our own route
    let (_, ours) = post(
        &t,
        key,
        "/v1/contacts/search",
        json!({"q": "smiht", "filter": {"lifecycle_stage": ["lead", "customer"]}, "limit": 21}),
    )
    .await;
    assert_eq!(ours["total"], hits["totalHits"]);

    // one index, pages, a sort and a string filter
    let (s, v) = post(
        &t,
        key,
        "/indexes/contacts/search",
        json!({"filter": "(lifecycle_stage = lead OR lifecycle_stage = customer) AND city IN [London, Boston]",
               "sort": ["last_name:asc"], "hitsPerPage": 2, "page": 1,
               "attributesToRetrieve": ["external_id", "last_name"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ext_ids(&v), ["c5", "c2"], "{v}");
    assert_eq!(
        (v["totalHits"].as_u64(), v["totalPages"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        v["hits"][0],
        json!({"external_id": "c5", "last_name": "Brown"})
    );
    assert!(v.get("estimatedTotalHits").is_none());
    let (s, v) = post(&t, key, "/indexes/companies/search", json!({"q": "acme"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["hits"][0]["name"], "Acme Robotics");

    // tenant b sees only its own
    let (s, v) = post(
        &t,
        t.b.key(Role::Search),
        "/indexes/contacts/search",
        json!({"q": "smith"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["totalHits"], 1);
    assert_eq!(v["hits"][0]["city"], "Other");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_meilisearch_shape() {
    let t = TestApp::with_indexer().await;
    let key = t.a.key(Role::Search);
    for (path, body, status, code, says) in [
        (
            "/indexes/contacts/search",
            json!({"q": "x", "cropLength": 3}),
            400,
            "bad_request",
            "cropLength",
        ),
        (
            "/indexes/contacts/search",
            json!({"filter": "country = PL OR city = Lodz"}),
            400,
            "invalid_search_filter",
            "different fields",
        ),
        (
            "/indexes/contacts/search",
            json!({"facets": ["nope"]}),
            400,
            "invalid_search_facets",
            "nope",
        ),
        (
            "/indexes/contacts/search",
            json!({"sort": ["a:asc", "b:asc"]}),
            400,
            "invalid_search_sort",
            "one field",
        ),
        (
            "/indexes/contacts/search",
            json!({"page": 1, "limit": 3}),
            422,
            "bad_request",
            "not both",
        ),
        (
            "/indexes/deals/search",
            json!({}),
            404,
            "index_not_found",
            "contacts",
        ),
        (
            "/indexes/contacts/search",
            json!({"indexUid": "contacts"}),
            400,
            "bad_request",
            "multi-search",
        ),
        (
            "/multi-search",
            json!({"queries": [{"q": "x"}]}),
            400,
            "bad_request",
            "queries[0].indexUid",
        ),
        (
            "/multi-search",
            json!({"queries": [{"indexUid": "contacts", "filter": 3}]}),
            400,
            "invalid_search_filter",
            "queries[0]",
        ),
        (
            "/multi-search",
            json!({"federation": {}}),
            400,
            "bad_request",
            "federation",
        ),
    ] {
        let (s, v) = post(&t, key, path, body.clone()).await;
        assert_eq!(
            (s.as_u16(), v["code"].as_str()),
            (status, Some(code)),
            "{body} → {v}"
        );
        assert_eq!(v["type"], "invalid_request", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(says),
            "{body} → {v}"
        );
    }
    let (s, v) = post(&t, "ck_wrong_key", "/multi-search", json!({"queries": []})).await;
    assert_eq!(
        (s, v["code"].as_str(), v["type"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("invalid_api_key"),
            Some("auth")
        ),
        "{v}"
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/multi-search",
            None,
            Some(json!({"queries": []})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("missing_authorization_header")
        ),
        "{v}"
    );
    let (s, v) = post(&t, key, "/multi-search", json!({"queries": []})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"results": []})));
    t.stop().await;
}

/// `GET /` serves the console built into the binary (or, in a binary built
/// without `console/dist`, a page saying how to build it), without a key.
#[tokio::test]
async fn the_console_is_served_at_the_root() {
    let t = TestApp::new().await;
    let resp = t
        .request(
            axum::http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let (s, page) = t.raw(Method::GET, "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let page = page.as_str().unwrap().to_owned();
    if crmsearch::api::console::CONSOLE.is_some() {
        assert!(page.contains("/console/app.js"), "{page}");
        for asset in ["/console/app.js", "/console/app.css"] {
            let (s, _) = t.raw(Method::GET, asset, None, None).await;
            assert_eq!(s, StatusCode::OK, "{asset}");
        }
    } else {
        assert!(page.contains("scripts/setup"), "{page}");
    }
}
