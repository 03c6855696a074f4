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

/// The test app's router behind the server's own accept loop, on a port of
/// its own, with these connection limits.
async fn listening(t: &TestApp, limits: crmsearch::server::ConnLimits) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = t.router.clone();
    tokio::spawn(crmsearch::server::serve_http(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    addr
}

/// Reads until the server closes the connection or `within` passes:
/// what was read, and whether it was closed.
async fn read_to_close(
    s: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let t = TestApp::new().await;
    let limits = crmsearch::server::ConnLimits {
        header_timeout: std::time::Duration::from_millis(300),
        max: 100,
        per_client: 0,
    };
    let addr = listening(&t, limits).await;
    let patience = std::time::Duration::from_secs(10);

    // headers that never end
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    let (_, closed) = read_to_close(&mut slow, patience).await;
    assert!(closed, "a connection whose headers never end is closed");

    // a connection that never sends anything
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_to_close(&mut silent, patience).await;
    assert!(closed, "a connection that sends nothing is closed");

    // kept alive after an answer, then idle
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_to_close(&mut idle, patience).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection is closed");
}

#[tokio::test]
async fn connections_per_client_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let t = TestApp::new().await;
    let limits = crmsearch::server::ConnLimits {
        header_timeout: std::time::Duration::from_secs(30),
        max: 100,
        per_client: 3,
    };
    let addr = listening(&t, limits).await;
    let hello = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    async fn answer(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(hello).await.unwrap();
        let a = answer(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        held.push(s);
    }
    let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (refused, closed) = read_to_close(&mut fourth, std::time::Duration::from_secs(10)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(closed, "a refused connection is closed");
    // one closed, and the client may open another
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(hello).await.unwrap();
        let a = answer(&mut s).await;
        if a.starts_with("HTTP/1.1 200") {
            again = Some(a);
            break;
        }
        // the server may not have seen the close yet
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a closed connection gives its place back");
}

#[tokio::test]
async fn request_bodies_in_memory_are_bounded() {
    use tokio::io::AsyncWriteExt;
    // a budget of 1 MiB; a search may take 1 s, a bulk load ten
    let mut cfg = test_config();
    cfg.body_budget_mb = 1;
    cfg.body_limit_bytes = 700 << 10;
    cfg.request_timeout_ms = 1000;
    let t = TestApp::with_config(cfg).await;
    let limits = crmsearch::server::ConnLimits {
        header_timeout: std::time::Duration::from_secs(30),
        max: 100,
        per_client: 0,
    };
    let addr = listening(&t, limits).await;
    let send = |path: &str, key: &str, length: usize, body: &[u8]| {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/x-ndjson\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
        );
        let body = body.to_vec();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body).await.unwrap();
            s
        }
    };
    // a bulk load of 900 KB whose body is still coming holds 879 KiB
    let line = b"{\"last_name\": \"Budget\"}\n";
    let mut held = send(
        "/v1/contacts/bulk",
        t.a.key(Role::Write),
        900_000,
        &line.repeat(10),
    )
    .await;
    for _ in 0..500 {
        if t.bodies.in_use() > 800_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(t.bodies.in_use() > 800_000, "the held body took its share");
    // a search of 600 KB does not fit beside it: it waits, past its time
    let search = format!("{{\"q\": \"{}\"}}", "a ".repeat(300_000));
    let mut waiting = send(
        "/v1/contacts/search",
        t.a.key(Role::Search),
        search.len(),
        search.as_bytes(),
    )
    .await;
    let (answer, _) = read_to_close(&mut waiting, std::time::Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("took longer than"), "{answer}");
    // the held body arrives: the load is answered, and the room given back
    let rest = line.repeat(900_000 / line.len() + 1);
    held.write_all(&rest[..900_000 - line.len() * 10])
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut held, std::time::Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut again = send(
        "/v1/contacts/search",
        t.a.key(Role::Search),
        search.len(),
        search.as_bytes(),
    )
    .await;
    let (answer, _) = read_to_close(&mut again, std::time::Duration::from_secs(20)).await;
    assert!(!answer.starts_with("HTTP/1.1 503"), "{answer}");
}
