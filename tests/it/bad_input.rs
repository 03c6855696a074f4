//! Malformed requests, table-driven: each gets a 4xx with its code and a
//! sentence, never a 5xx.

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;

use crate::common::{MASTER_KEY, TestApp, assert_error};

enum Key {
    Write,
    Agent,
    Admin,
    Master,
    Raw(&'static str),
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    key: Key,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        content_type: "application/json",
        body: body.into(),
        key: Key::Write,
        status: StatusCode::from_u16(status).unwrap(),
        code,
    }
}

impl Case {
    fn ct(mut self, ct: &'static str) -> Self {
        self.content_type = ct;
        self
    }
    fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }
}

#[tokio::test]
async fn bad_inputs_get_4xx_with_a_code() {
    let t = TestApp::new().await;
    let (_, c) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.a.key(Role::Write)),
            Some(serde_json::json!({"last_name": "P"})),
        )
        .await;
    let contact_path: &'static str =
        Box::leak(format!("/v1/contacts/{}", c["id"].as_str().unwrap()).into_boxed_str());
    let nil_company = format!(
        r#"{{"last_name":"x","company_id":"{}"}}"#,
        uuid::Uuid::nil()
    );
    let deep = format!(
        r#"{{"last_name":"x","custom":{{"a":{}1{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let long_name = format!(r#"{{"last_name":"{}"}}"#, "x".repeat(600));
    let oversize = format!(r#"{{"last_name":"x","notes":"{}"}}"#, "y".repeat(70 * 1024));
    let big_float = format!(
        r#"{{"agent_id":"a","kind":"fact","content":"c","embedding":[1e39{}]}}"#,
        ",0.0".repeat(383)
    );
    use Method as M;
    let cases = vec![
        case(
            "truncated json",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"#,
            400,
            "malformed_json",
        ),
        case(
            "not json",
            M::POST,
            "/v1/contacts",
            "hello",
            400,
            "malformed_json",
        ),
        case(
            "empty body",
            M::POST,
            "/v1/contacts",
            "",
            400,
            "malformed_json",
        ),
        case(
            "trailing garbage",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x"} x"#,
            400,
            "malformed_json",
        ),
        case(
            "array not object",
            M::POST,
            "/v1/contacts",
            "[]",
            400,
            "invalid_body",
        ),
        case(
            "wrong type",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":5}"#,
            400,
            "invalid_body",
        ),
        case(
            "string for a list",
            M::POST,
            "/v1/contacts",
            r#"{"emails":"a@b.se"}"#,
            400,
            "invalid_body",
        ),
        case(
            "unknown field",
            M::POST,
            "/v1/contacts",
            r#"{"first_nam":"x"}"#,
            400,
            "unknown_field",
        ),
        case(
            "nul escape",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x\u0000y"}"#,
            422,
            "invalid_value",
        ),
        case(
            "nul in custom key",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x","custom":{"a\u0000":1}}"#,
            422,
            "invalid_value",
        ),
        case(
            "invalid utf-8",
            M::POST,
            "/v1/contacts",
            b"{\"last_name\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid_encoding",
        ),
        case(
            "bad email",
            M::POST,
            "/v1/contacts",
            r#"{"emails":["nope"]}"#,
            422,
            "invalid_value",
        ),
        case(
            "bad phone",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x","phones":["call me"]}"#,
            422,
            "invalid_value",
        ),
        case(
            "nothing to find it by",
            M::POST,
            "/v1/contacts",
            "{}",
            422,
            "invalid_value",
        ),
        case(
            "bad uuid in body",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x","company_id":"12"}"#,
            400,
            "invalid_body",
        ),
        case(
            "unknown company",
            M::POST,
            "/v1/contacts",
            nil_company,
            422,
            "invalid_value",
        ),
        case(
            "unknown company external id",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x","company_external_id":"nope"}"#,
            422,
            "invalid_value",
        ),
        case(
            "custom not an object",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x","custom":[1]}"#,
            422,
            "invalid_value",
        ),
        case(
            "too long",
            M::POST,
            "/v1/contacts",
            long_name,
            422,
            "invalid_value",
        ),
        case(
            "control character",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"a\u0007b"}"#,
            422,
            "invalid_value",
        ),
        case(
            "too deep",
            M::POST,
            "/v1/contacts",
            deep,
            400,
            "malformed_json",
        ),
        case(
            "number out of range",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"fact","content":"c","importance":1e400}"#,
            400,
            "malformed_json",
        ),
        case(
            "wrong media type",
            M::POST,
            "/v1/contacts",
            r#"{"last_name":"x"}"#,
            415,
            "unsupported_media_type",
        )
        .ct("text/plain"),
        case(
            "oversize body",
            M::POST,
            "/v1/contacts",
            oversize,
            413,
            "payload_too_large",
        ),
        case(
            "bad uuid in path",
            M::GET,
            "/v1/contacts/not-a-uuid",
            "",
            400,
            "invalid_id",
        ),
        case(
            "injection in path",
            M::GET,
            "/v1/contacts/'%20OR%201=1--",
            "",
            400,
            "invalid_id",
        ),
        case(
            "unknown route",
            M::GET,
            "/v1/nope",
            "",
            404,
            "route_not_found",
        ),
        case(
            "unknown nested route",
            M::GET,
            "/v1/contacts/a/b/c",
            "",
            404,
            "route_not_found",
        ),
        case(
            "wrong method",
            M::PUT,
            "/v1/contacts",
            "",
            405,
            "method_not_allowed",
        ),
        case(
            "wrong method on item",
            M::POST,
            contact_path,
            "{}",
            405,
            "method_not_allowed",
        ),
        case(
            "patch with an array",
            M::PATCH,
            contact_path,
            "[1]",
            400,
            "invalid_body",
        ),
        case(
            "patch unknown field",
            M::PATCH,
            contact_path,
            r#"{"nickname":"x"}"#,
            400,
            "unknown_field",
        ),
        case(
            "patch bad email",
            M::PATCH,
            contact_path,
            r#"{"emails":["bad"]}"#,
            422,
            "invalid_value",
        ),
        case(
            "patch wrong type",
            M::PATCH,
            contact_path,
            r#"{"tags":[1,2]}"#,
            400,
            "invalid_body",
        ),
        case(
            "company without name",
            M::POST,
            "/v1/companies",
            "{}",
            422,
            "invalid_value",
        ),
        case(
            "company bad domain",
            M::POST,
            "/v1/companies",
            r#"{"name":"A","domain":"not a domain"}"#,
            422,
            "invalid_value",
        ),
        case(
            "memory missing content",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"fact"}"#,
            400,
            "missing_field",
        )
        .key(Key::Agent),
        case(
            "memory unknown kind",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"gossip","content":"c"}"#,
            400,
            "invalid_body",
        )
        .key(Key::Agent),
        case(
            "memory short embedding",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"fact","content":"c","embedding":[0.1,0.2,0.3]}"#,
            422,
            "invalid_value",
        )
        .key(Key::Agent),
        case(
            "memory infinite embedding",
            M::POST,
            "/v1/memories",
            big_float,
            422,
            "invalid_value",
        )
        .key(Key::Agent),
        case(
            "memory importance above 1",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"fact","content":"c","importance":2}"#,
            422,
            "invalid_value",
        )
        .key(Key::Agent),
        case(
            "memory empty content",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"fact","content":"  "}"#,
            422,
            "invalid_value",
        )
        .key(Key::Agent),
        case(
            "memory bad date",
            M::POST,
            "/v1/memories",
            r#"{"agent_id":"a","kind":"fact","content":"c","expires_at":"tomorrow"}"#,
            400,
            "invalid_body",
        )
        .key(Key::Agent),
        case(
            "unknown role",
            M::POST,
            "/v1/keys",
            r#"{"role":"root"}"#,
            400,
            "invalid_body",
        )
        .key(Key::Admin),
        case(
            "empty tenant name",
            M::POST,
            "/v1/tenants",
            r#"{"name":"  "}"#,
            422,
            "invalid_value",
        )
        .key(Key::Master),
        case(
            "bulk wrong media type",
            M::POST,
            "/v1/contacts/bulk",
            "<html/>",
            415,
            "unsupported_media_type",
        )
        .ct("text/html"),
        case(
            "bulk empty",
            M::POST,
            "/v1/contacts/bulk",
            "\n\n",
            400,
            "invalid_body",
        )
        .ct("application/x-ndjson"),
        case(
            "bulk unknown csv column",
            M::POST,
            "/v1/contacts/bulk",
            "nickname\nx\n",
            400,
            "unknown_field",
        )
        .ct("text/csv"),
        case(
            "bulk unknown format",
            M::POST,
            "/v1/contacts/bulk?format=xml",
            "x",
            400,
            "invalid_query",
        ),
        case(
            "bulk unknown parameter",
            M::POST,
            "/v1/contacts/bulk?fromat=csv",
            "x",
            400,
            "invalid_query",
        ),
        case(
            "basic auth",
            M::GET,
            contact_path,
            "",
            401,
            "missing_api_key",
        )
        .key(Key::Raw("Basic dXNlcjpwYXNz")),
        case(
            "bearer without key",
            M::GET,
            contact_path,
            "",
            401,
            "missing_api_key",
        )
        .key(Key::Raw("Bearer ")),
    ];
    assert!(cases.len() >= 30);
    for c in cases {
        let key = match c.key {
            Key::Write => Some(t.a.key(Role::Write).to_owned()),
            Key::Agent => Some(t.a.key(Role::Agent).to_owned()),
            Key::Admin => Some(t.a.key(Role::Admin).to_owned()),
            Key::Master => Some(MASTER_KEY.to_owned()),
            Key::Raw(_) => None,
        };
        let body = (!c.body.is_empty() || c.method != Method::GET)
            .then(|| (c.content_type, c.body.clone()));
        let got = match c.key {
            Key::Raw(header) => {
                t.raw_with_auth(c.method.clone(), c.path, header, body)
                    .await
            }
            Key::Write | Key::Agent | Key::Admin | Key::Master => {
                t.raw(c.method.clone(), c.path, key.as_deref(), body).await
            }
        };
        assert!(!got.0.is_server_error(), "{}: {:?}", c.name, got);
        assert_eq!(got.0, c.status, "{}: {}", c.name, got.1);
        assert_error(&got, c.status, c.code);
    }
    // nothing malformed was stored
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
