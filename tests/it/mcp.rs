//! `/mcp` at the HTTP level: no key, a key below the `agent` role and a
//! wrong key never reach MCP; an agent key does (the tools themselves are
//! driven by the official Python client in `tests/clients/mcp_check.py`).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use crmsearch::auth::Role;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::common::TestApp;

async fn post(t: &TestApp, key: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut req = Request::post("/mcp")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = t
        .request(req.body(Body::from(body.to_string())).unwrap())
        .await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    // JSON, or one server-sent event carrying it
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or(&text)
        .trim()
        .to_owned();
    (
        status,
        serde_json::from_str(&json).unwrap_or(Value::String(text.into_owned())),
    )
}

#[tokio::test]
async fn only_agent_keys_reach_mcp() {
    let t = TestApp::new().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "it", "version": "0"}}});
    let (s, v) = post(&t, None, init.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_api_key")),
        "{v}"
    );
    let (s, v) = post(&t, Some("crm_wrong_key"), init.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key")),
        "{v}"
    );
    let (s, v) = post(&t, Some(t.a.key(Role::Search)), init.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{v}"
    );
    let (s, v) = post(&t, Some(t.a.key(Role::Agent)), init).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["serverInfo"]["name"], "crmsearch", "{v}");
    assert!(v["result"]["capabilities"]["tools"].is_object(), "{v}");
}
