//! The result cache's Redis layer: an answer one server computed is served
//! by the other, and a write — through the API or by SQL — moves the
//! tenant's position so that neither serves the old answer again.

use serde_json::Value;

use crate::embedded::{runtime, try_http};
use crate::limits::TwoServers;
use crate::redis::RedisServer;

fn get(addr: &str, key: &str, path: &str) -> Value {
    let (status, body) = try_http(addr, "GET", path, key, "").expect("an answer");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The names the search for `q` finds, on `addr`, once it shows `lsn`.
fn names(addr: &str, key: &str, q: &str, lsn: &str) -> Vec<String> {
    let lsn = lsn.replace('/', "%2F");
    let v = get(
        addr,
        key,
        &format!("/v1/contacts/search?q={q}&min_lsn={lsn}&wait_ms=20000"),
    );
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h["contact"]["last_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// `crmsearch_result_cache_total{layer="redis",result="hit"}` of a server.
fn redis_hits(addr: &str, key: &str) -> u64 {
    let text = try_http(addr, "GET", "/metrics", key, "").unwrap().1;
    text.lines()
        .find(|l| {
            l.starts_with("crmsearch_result_cache_total")
                && l.contains("layer=\"redis\"")
                && l.contains("result=\"hit\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn write(addr: &str, key: &str, method: &str, path: &str, body: &str) -> Value {
    let (status, text) = try_http(addr, method, path, key, body).expect("an answer");
    assert!(
        status == 200 || status == 201,
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn one_server_serves_what_the_other_computed_until_a_write_moves_the_tenant() {
    let redis = RedisServer::start();
    let s = TwoServers::start(&redis.url(), "");
    let (one, two) = (s.addrs[0].as_str(), s.addrs[1].as_str());
    let (search, wkey) = (s.search_key.as_str(), s.write_key.as_str());

    // a write after both started: both show the tenant at its position
    let created = write(
        one,
        wkey,
        "POST",
        "/v1/contacts",
        r#"{"first_name": "Zofia", "last_name": "Brzezinska"}"#,
    );
    let lsn = created["lsn"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(names(one, search, "brzezinska", &lsn), ["Brzezinska"]);
    let before = redis_hits(two, search);
    assert_eq!(names(two, search, "brzezinska", &lsn), ["Brzezinska"]);
    assert_eq!(
        redis_hits(two, search),
        before + 1,
        "the second server read the first's answer"
    );

    // through the API, on the other server
    let changed = write(
        two,
        wkey,
        "PATCH",
        &format!("/v1/contacts/{id}"),
        r#"{"last_name": "Kowalczyk"}"#,
    );
    let lsn = changed["lsn"].as_str().unwrap().to_owned();
    for addr in [one, two] {
        assert!(
            names(addr, search, "brzezinska", &lsn).is_empty(),
            "stale on {addr}"
        );
        assert_eq!(names(addr, search, "kowalczyk", &lsn), ["Kowalczyk"]);
    }

    // by SQL, behind the API's back
    let rt = runtime();
    let lsn: String = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&s.db_url).await.unwrap();
        sqlx::query("UPDATE contacts SET last_name = 'Lewandowski' WHERE id = $1::uuid")
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        let lsn = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        lsn
    });
    for addr in [two, one] {
        assert!(
            names(addr, search, "kowalczyk", &lsn).is_empty(),
            "stale on {addr}"
        );
        assert_eq!(names(addr, search, "lewandowski", &lsn), ["Lewandowski"]);
    }
}
