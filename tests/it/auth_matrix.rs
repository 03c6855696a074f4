//! Every route × every kind of caller: 401 without a valid key, 403 below
//! the route's role, through at the role and above.

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use serde_json::{Value, json};

use crate::common::{MASTER_KEY, TestApp, assert_error};

struct Route {
    method: Method,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    /// None: only the master key may call it.
    min: Option<Role>,
}

fn json_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

#[tokio::test]
async fn role_by_route_matrix() {
    let t = TestApp::new().await;
    let nil = uuid::Uuid::nil();
    let (_, c) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.a.key(Role::Write)),
            Some(json!({"last_name": "M"})),
        )
        .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let emb: Vec<f32> = vec![0.1; 384];
    let routes = vec![
        Route {
            method: Method::POST,
            path: "/v1/tenants".into(),
            body: json_body(json!({"name": "x"})),
            min: None,
        },
        Route {
            method: Method::POST,
            path: "/v1/keys".into(),
            body: json_body(json!({"role": "search"})),
            min: Some(Role::Admin),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/keys/crm_nokey000".into(),
            body: None,
            min: Some(Role::Admin),
        },
        Route {
            method: Method::POST,
            path: "/v1/contacts".into(),
            body: json_body(json!({"last_name": "N"})),
            min: Some(Role::Write),
        },
        Route {
            method: Method::GET,
            path: format!("/v1/contacts/{cid}"),
            body: None,
            min: Some(Role::Search),
        },
        Route {
            method: Method::PATCH,
            path: format!("/v1/contacts/{cid}"),
            body: json_body(json!({"title": "T"})),
            min: Some(Role::Write),
        },
        Route {
            method: Method::DELETE,
            path: format!("/v1/contacts/{nil}"),
            body: None,
            min: Some(Role::Write),
        },
        Route {
            method: Method::POST,
            path: "/v1/contacts/bulk".into(),
            body: Some(("application/x-ndjson", b"{\"last_name\":\"B\"}\n".to_vec())),
            min: Some(Role::Write),
        },
        Route {
            method: Method::POST,
            path: "/v1/companies".into(),
            body: json_body(json!({"name": "Co"})),
            min: Some(Role::Write),
        },
        Route {
            method: Method::GET,
            path: format!("/v1/companies/{nil}"),
            body: None,
            min: Some(Role::Search),
        },
        Route {
            method: Method::PATCH,
            path: format!("/v1/companies/{nil}"),
            body: json_body(json!({"name": "C"})),
            min: Some(Role::Write),
        },
        Route {
            method: Method::DELETE,
            path: format!("/v1/companies/{nil}"),
            body: None,
            min: Some(Role::Write),
        },
        Route {
            method: Method::POST,
            path: "/v1/memories".into(),
            body: json_body(
                json!({"agent_id": "a", "kind": "fact", "content": "c", "embedding": emb}),
            ),
            min: Some(Role::Agent),
        },
        Route {
            method: Method::GET,
            path: format!("/v1/memories/{nil}"),
            body: None,
            min: Some(Role::Agent),
        },
        Route {
            method: Method::DELETE,
            path: format!("/v1/memories/{nil}"),
            body: None,
            min: Some(Role::Agent),
        },
    ];
    let revoked = {
        let (key, prefix) = crmsearch::auth::create_key(&t.pool, t.a.id, Role::Admin)
            .await
            .unwrap();
        crmsearch::auth::revoke_key(&t.pool, t.a.id, &prefix)
            .await
            .unwrap();
        key
    };
    let mut checked = 0;
    for r in &routes {
        let send = |key: Option<String>| {
            t.raw_owned(r.method.clone(), r.path.clone(), key, r.body.clone())
        };
        assert_error(
            &send(None).await,
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
        );
        assert_error(
            &send(Some("crm_bogus".into())).await,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        );
        assert_error(
            &send(Some(revoked.clone())).await,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        );
        for role in [Role::Search, Role::Agent, Role::Write, Role::Admin] {
            let got = send(Some(t.a.key(role).to_owned())).await;
            let allowed = r.min.is_some_and(|min| role >= min);
            if allowed {
                assert!(
                    got.0 != StatusCode::UNAUTHORIZED && got.0 != StatusCode::FORBIDDEN,
                    "{} {} as {role:?}: {:?}",
                    r.method,
                    r.path,
                    got
                );
                assert!(
                    !got.0.is_server_error(),
                    "{} {}: {:?}",
                    r.method,
                    r.path,
                    got
                );
            } else {
                assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
            }
            checked += 1;
        }
        // the master key only manages tenants and keys
        let got = send(Some(MASTER_KEY.to_owned())).await;
        match r.min {
            None => assert_eq!(got.0, StatusCode::CREATED, "{:?}", got.1),
            Some(_) if r.path == "/v1/keys" => {
                assert_error(&got, StatusCode::BAD_REQUEST, "missing_field")
            }
            Some(_) => assert_error(&got, StatusCode::FORBIDDEN, "forbidden"),
        }
    }
    assert_eq!(checked, routes.len() * 4);
}
