//! What every answer gets whatever its route: request ids, compression,
//! CORS, the headers of 201, 401 and 503, and the time limit.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::{Service, ServiceExt};

use crate::common::{TestApp, test_config};
use crmsearch::auth::Role;

fn get(path: &str, key: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
}

#[tokio::test]
async fn request_ids_are_taken_or_made_and_echoed() {
    let t = TestApp::new().await;
    let id_of = |r: &axum::response::Response| {
        r.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let given = t
        .request(
            Request::get("/healthz")
                .header("x-request-id", "trace-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(id_of(&given).as_deref(), Some("trace-42"));
    let made = t
        .request(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    let made = id_of(&made).expect("an id is made");
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    // too long or with spaces: replaced, never echoed into logs as given
    for bad in ["x".repeat(200), "a b".to_owned()] {
        let r = t
            .request(
                Request::get("/healthz")
                    .header("x-request-id", bad.as_str())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let id = id_of(&r).unwrap();
        assert!(id != bad && uuid::Uuid::parse_str(&id).is_ok());
    }
    // errors carry it too
    let r = t
        .request(
            Request::get("/v1/nowhere")
                .header("x-request-id", "trace-43")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(id_of(&r).as_deref(), Some("trace-43"));
}

#[tokio::test]
async fn answers_are_compressed_as_the_client_accepts() {
    let t = TestApp::with_indexer().await;
    let key = t.a.key(Role::Write).to_owned();
    for i in 0..60 {
        let (s, v) = t
            .call(
                Method::POST,
                "/v1/contacts",
                Some(&key),
                Some(json!({"first_name": format!("Anna{i}"), "last_name": "Kowalski", "emails": [format!("anna{i}@example.com")], "notes": "met at the trade fair, wants a demo of the reporting"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    t.caught_up().await;
    let page = "/v1/contacts/search?q=kowalski&limit=50";
    let plain = t
        .request(get(page, &key).body(Body::empty()).unwrap())
        .await;
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let plain_bytes = plain.into_body().collect().await.unwrap().to_bytes();
    let plain_json: Value = serde_json::from_slice(&plain_bytes).unwrap();
    assert_eq!(plain_json["hits"].as_array().unwrap().len(), 50);
    // a client that decodes: what it reads is the same answer
    let mut decoding = tower_http::decompression::Decompression::new(t.router.clone());
    for encoding in ["gzip", "br", "zstd"] {
        let r = t
            .request(
                get(page, &key)
                    .header(header::ACCEPT_ENCODING, encoding)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.headers()[header::CONTENT_ENCODING], encoding);
        assert!(
            r.headers()[header::VARY]
                .to_str()
                .unwrap()
                .contains("accept-encoding")
        );
        let wire = r.into_body().collect().await.unwrap().to_bytes();
        assert!(
            wire.len() * 3 < plain_bytes.len(),
            "{encoding}: {} of {} bytes",
            wire.len(),
            plain_bytes.len()
        );
        let r = ServiceExt::<Request<Body>>::ready(&mut decoding)
            .await
            .unwrap()
            .call(
                get(page, &key)
                    .header(header::ACCEPT_ENCODING, encoding)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let read: Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(read["hits"], plain_json["hits"], "{encoding}");
    }
    // a small answer is not worth it
    let r = t
        .request(
            Request::get("/healthz")
                .header(header::ACCEPT_ENCODING, "gzip")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    t.stop().await;
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let mut cfg = test_config();
    cfg.cors_origins = vec!["https://crm.example.com".into()];
    let t = TestApp::with_config(cfg).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/contacts/search")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let ok = t.request(preflight("https://crm.example.com")).await;
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://crm.example.com"
    );
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = t.request(preflight("https://evil.example.org")).await;
    assert!(
        other
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    // an actual call names the origin and exposes the headers scripts read
    let r = t
        .request(
            get("/v1/contacts/autocomplete?q=an", t.a.key(Role::Search))
                .header(header::ORIGIN, "https://crm.example.com")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let h = r.headers();
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://crm.example.com"
    );
    assert!(
        h[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    // without origins configured: no CORS headers at all
    let plain = TestApp::new().await;
    let r = plain.request(preflight("https://crm.example.com")).await;
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn statuses_carry_their_headers() {
    let t = TestApp::new().await;
    // 401: how to authenticate
    let r = t
        .request(
            Request::get("/v1/contacts/search?q=a")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()[header::WWW_AUTHENTICATE],
        "Bearer realm=\"crmsearch\""
    );
    let r = t
        .request(
            get("/v1/contacts/search?q=a", "csk_wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // 503 (this app has no index): when to retry
    let r = t
        .request(
            get("/v1/contacts/search?q=a", t.a.key(Role::Search))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get(header::RETRY_AFTER).is_some());
    // 201: where the new resource is read
    let key = t.a.key(Role::Write).to_owned();
    for (path, body) in [
        ("/v1/contacts", json!({"first_name": "Ada"})),
        ("/v1/companies", json!({"name": "Acme"})),
    ] {
        let r = t
            .request(
                Request::post(path)
                    .header(header::AUTHORIZATION, format!("Bearer {key}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let v: Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(location, format!("{path}/{}", v["id"].as_str().unwrap()));
        let (s, read) = t.call(Method::GET, &location, Some(&key), None).await;
        assert_eq!((s, &read["id"]), (StatusCode::OK, &v["id"]));
    }
}

#[tokio::test]
async fn a_request_over_its_time_is_answered_503() {
    let mut cfg = test_config();
    cfg.request_timeout_ms = 300;
    let t = TestApp::with_indexer_config(cfg).await;
    // a search that waits for a position the index will not reach soon
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.a.key(Role::Search)),
            Some(json!({"q": "a", "min_lsn": "FF/0", "wait_ms": 20_000})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("300 ms"),
        "{v}"
    );
    t.stop().await;
}

#[tokio::test]
async fn latencies_are_histograms_with_buckets_that_add_up_across_replicas() {
    let t = TestApp::new().await;
    let (s, _) = t
        .call(
            Method::GET,
            "/v1/contacts/00000000-0000-0000-0000-000000000000",
            Some(t.a.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = t.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("crmsearch_http_request_seconds_bucket{")
                && l.contains("le=\"0.005\"")
                && l.contains("route=\"/v1/contacts/{id}\"")),
        "{text}"
    );
    assert!(!text.contains("quantile="), "no summaries: {text}");
}
