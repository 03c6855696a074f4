//! Contact search semantics, through the HTTP API against a real index fed
//! by CDC: a table of cases (typos by length, transpositions, first-letter
//! typos, prefixes, diacritics and transliterations, nicknames, phones,
//! emails, word order, filters, disjunctive facets, highlights, sorts, deep
//! windows, cursors, tenant isolation, bad input), autocomplete, stats,
//! company search, and the relevance set in `fixtures/relevance`.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use crmsearch::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error};

const COMPANIES: &[(&str, &str, &str)] = &[
    ("co1", "Acme Robotics", "acme.io"),
    ("co2", "Müller Logistik GmbH", "mueller-logistik.de"),
    ("co3", "Johnson Ltd", "johnson.co.uk"),
    ("co4", "Nordic Ventures", "nordicvc.se"),
];

fn contacts() -> Vec<Value> {
    vec![
        json!({"external_id": "c1", "first_name": "John", "last_name": "Smith", "emails": ["john.smith@acme.io"], "phones": ["(415) 555-2671"], "country": "US", "city": "San Francisco", "lifecycle_stage": "lead", "owner_id": "u1", "tags": ["vip"], "company_external_id": "co1", "title": "Sales Manager"}),
        json!({"external_id": "c2", "first_name": "Jon", "last_name": "Smithers", "emails": ["jon@smithers.com"], "city": "Boston", "lifecycle_stage": "customer", "owner_id": "u2", "tags": ["newsletter"]}),
        json!({"external_id": "c3", "first_name": "Jürgen", "last_name": "Müller", "emails": ["j.mueller@mueller-logistik.de"], "phones": ["030 1234567"], "country": "DE", "city": "Berlin", "lifecycle_stage": "customer", "tags": ["vip", "partner"], "company_external_id": "co2", "title": "Einkaufsleiter"}),
        json!({"external_id": "c4", "first_name": "Anna Maria", "last_name": "Svensson", "emails": ["anna.maria_svensson+crm@nordicvc.se"], "phones": ["+46 8 123 456 78"], "country": "SE", "city": "Stockholm", "lifecycle_stage": "opportunity", "owner_id": "u1", "tags": ["event-2025"], "company_external_id": "co4"}),
        json!({"external_id": "c5", "first_name": "Robert", "last_name": "Brown", "emails": ["bob.brown@example.com"], "country": "GB", "city": "London", "lifecycle_stage": "lead", "owner_id": "u2"}),
        json!({"external_id": "c6", "first_name": "Elizabeth", "last_name": "Taylor", "emails": ["liz@example.org"], "city": "London", "lifecycle_stage": "customer"}),
        json!({"external_id": "c7", "first_name": "Katherine", "last_name": "Johnson", "emails": ["kj@nasa.gov"], "country": "US", "lifecycle_stage": "sql", "company_external_id": "co3"}),
        json!({"external_id": "c8", "first_name": "Christopher", "last_name": "Montgomery", "lifecycle_stage": "mql", "title": "R&D <Lead>"}),
        json!({"external_id": "c9", "first_name": "Siobhán", "last_name": "O'Brien", "country": "IE", "city": "Dublin", "lifecycle_stage": "lead"}),
        json!({"external_id": "c10", "first_name": "Jean-Pierre", "last_name": "Lefèvre", "country": "FR", "city": "Paris", "lifecycle_stage": "customer"}),
        json!({"external_id": "c11", "first_name": "Łukasz", "last_name": "Wałęsa", "country": "PL", "city": "Gdańsk"}),
        json!({"external_id": "c12", "first_name": "Søren", "last_name": "Jørgensen", "country": "DK", "city": "København"}),
        json!({"external_id": "c13", "first_name": "Zoë", "last_name": "Smith", "country": "US", "city": "Austin", "lifecycle_stage": "lead", "tags": ["vip"]}),
        json!({"external_id": "c14", "first_name": "William", "last_name": "Gates", "city": "Seattle", "notes": "Renewal meeting about the Enterprise plan next quarter; send the deck first."}),
        json!({"external_id": "c15", "first_name": "James", "last_name": "Bond", "emails": ["007@mi6.gov.uk"]}),
        json!({"external_id": "c16", "first_name": "Javier", "last_name": "Quintero"}),
        json!({"external_id": "c17", "first_name": "Xavier", "last_name": "Quill"}),
        json!({"external_id": "c18", "emails": ["nobody@example.net"]}),
    ]
}

/// A tenant `a` loaded with the data above (and one contact in tenant `b`).
pub async fn loaded() -> TestApp {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    for (ext, name, domain) in COMPANIES {
        let (s, v) = t
            .call(
                Method::POST,
                "/v1/companies",
                Some(w),
                Some(json!({"external_id": ext, "name": name, "domain": domain, "country": "SE"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let body: Vec<String> = contacts().iter().map(Value::to_string).collect();
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", body.join("\n").into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["failed"], json!([]), "{v}");
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/contacts",
            Some(t.b.key(Role::Write)),
            Some(json!({"first_name": "John", "last_name": "Smith", "city": "Other"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    t.caught_up().await;
    t
}

async fn post(t: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    t.call(Method::POST, path, Some(t.a.key(Role::Search)), Some(body))
        .await
}

async fn search(t: &TestApp, body: Value) -> Value {
    let (s, v) = post(t, "/v1/contacts/search", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body} → {v}");
    v
}

fn exts(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h["contact"]["external_id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// What a case expects of the hits.
enum Expect {
    /// This contact first.
    First(&'static str),
    /// Exactly these contacts, in any order.
    Only(&'static [&'static str]),
    /// These contacts among the hits, in any order.
    Has(&'static [&'static str]),
    /// These first, in this order.
    Order(&'static [&'static str]),
    /// These first, in any order (they tie).
    Top(&'static [&'static str]),
    /// Nothing as typed; exactly these after widening the query this way.
    Widened(&'static str, &'static [&'static str]),
    Nothing,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_table() {
    use Expect::{First, Has, Nothing, Only, Order, Top, Widened};
    let t = loaded().await;
    // (q, extra request fields, expectation); a trailing space marks a
    // finished word (no prefix match)
    let cases: Vec<(&str, Value, Expect)> = vec![
        // exact words, any case, word order free
        ("smith ", json!({}), Only(&["c1", "c13"])),
        ("SMITH john", json!({}), First("c1")),
        ("john smith", json!({}), First("c1")),
        ("svensson anna", json!({}), Only(&["c4"])),
        // typos by length: none under 5 letters — only when the query as
        // typed finds nothing is it retried with one more typo per word
        ("smth ", json!({}), Widened("more_typos", &["c1", "c13"])),
        // (widened, every finished word of 3+ letters is a prefix too)
        (
            "jhon smith ",
            json!({}),
            Widened("more_typos", &["c1", "c2"]),
        ),
        ("bnod ", json!({}), Widened("more_typos", &["c15"])),
        (
            "smith zzzzzzz ",
            json!({}),
            Widened("any_word", &["c1", "c13", "c2"]),
        ),
        // one edit from 5 letters (a transposition is one)
        ("smiht ", json!({}), Only(&["c1", "c13"])),
        ("svenson ", json!({}), Only(&["c4"])),
        ("taylr ", json!({}), Only(&["c6"])),
        ("jorgensn ", json!({}), Only(&["c12"])),
        ("svnsen ", json!({}), Nothing),
        ("jorgnsn ", json!({}), Widened("more_typos", &["c12"])),
        // two edits from 9 letters
        ("montgomrey ", json!({}), Only(&["c8"])),
        ("montgmery ", json!({}), Only(&["c8"])),
        ("mnotgomrey ", json!({}), Only(&["c8"])),
        ("christophr montgomery", json!({}), Only(&["c8"])),
        ("mntgmry ", json!({}), Nothing),
        // first-letter typos match, scored below the right letter
        ("kristopher ", json!({}), Only(&["c8"])),
        ("javier ", json!({}), Order(&["c16", "c17"])),
        ("xavier ", json!({}), Order(&["c17", "c16"])),
        // no typos when turned off
        ("smiht ", json!({"typo_tolerance": false}), Nothing),
        ("montgomrey ", json!({"typo_tolerance": false}), Nothing),
        // prefixes of the word being typed
        ("mont", json!({}), Only(&["c8"])),
        ("smi", json!({}), Has(&["c1", "c2", "c13"])),
        ("jo", json!({}), Has(&["c1", "c2", "c7", "c12"])),
        ("john sm", json!({}), First("c1")),
        ("chris", json!({}), First("c8")),
        // exact beats prefix
        ("jon", json!({}), First("c2")),
        ("smith", json!({}), Top(&["c1", "c13"])),
        ("smithe", json!({}), First("c2")),
        // a finished word of 3+ letters that matches nothing whole also
        // matches as the start of a name, below whole words; one that
        // matches whole does not ("john" never brings Johnson), and one of
        // 1-2 letters never does ("jo" alone finds no John)
        ("chri montg", json!({}), Only(&["c8"])),
        ("sven anna", json!({}), Only(&["c4"])),
        ("john smith ", json!({}), Only(&["c1"])),
        ("kath john ", json!({}), Widened("more_typos", &["c7"])),
        (
            "jo smith ",
            json!({}),
            Widened("any_word", &["c1", "c13", "c2"]),
        ),
        // one letter (or a letter and a dot) beside another word: an
        // initial of a first or last name, in the name fields only
        ("j smith ", json!({}), Only(&["c1"])),
        ("J. Smith ", json!({}), Only(&["c1"])),
        ("smith z ", json!({}), Only(&["c13"])),
        ("b london ", json!({}), Only(&["c5"])),
        ("e london ", json!({}), Only(&["c6"])),
        // an address's local part takes typos by length like a name; its
        // domain does not (it is shared by too many contacts)
        ("nobdy ", json!({}), Only(&["c18"])),
        ("nbody", json!({}), Only(&["c18"])),
        ("exampel ", json!({}), Nothing),
        // diacritics and transliterations
        ("muller ", json!({}), First("c3")),
        ("mueller ", json!({}), First("c3")),
        ("Müller ", json!({}), First("c3")),
        ("MÜLLER ", json!({}), First("c3")),
        ("jurgen ", json!({}), Only(&["c3"])),
        ("juergen ", json!({}), Only(&["c3"])),
        ("lukasz walesa", json!({}), Only(&["c11"])),
        ("soren jorgensen", json!({}), Only(&["c12"])),
        ("lefevre ", json!({}), Only(&["c10"])),
        ("zoe ", json!({}), Only(&["c13"])),
        ("siobhan ", json!({}), Only(&["c9"])),
        ("gdansk ", json!({}), Only(&["c11"])),
        ("kobenhavn ", json!({}), Only(&["c12"])),
        // apostrophes and hyphens
        ("obrien ", json!({}), Only(&["c9"])),
        ("o'brien ", json!({}), Only(&["c9"])),
        ("jean-pierre ", json!({}), Only(&["c10"])),
        ("jean pierre ", json!({}), Only(&["c10"])),
        ("jeanpierre ", json!({}), Only(&["c10"])),
        // nicknames, both ways, below the name itself
        ("bob brown", json!({}), Only(&["c5"])),
        ("liz taylor", json!({}), Only(&["c6"])),
        ("kate johnson", json!({}), First("c7")),
        ("bill gates", json!({}), Only(&["c14"])),
        ("jim bond", json!({}), Only(&["c15"])),
        // phones in any format, by their trailing digits
        ("+46 8 123 456 78", json!({}), Only(&["c4"])),
        ("08-123 456 78", json!({}), Only(&["c4"])),
        ("0812345678", json!({}), Only(&["c4"])),
        ("12345678", json!({}), Only(&["c4"])),
        ("5678 ", json!({}), Only(&["c4"])),
        ("(415) 555-2671", json!({}), Only(&["c1"])),
        ("+1 415 555 2671", json!({}), Only(&["c1"])),
        ("2671 ", json!({}), Only(&["c1"])),
        ("+49 30 1234567", json!({}), Only(&["c3"])),
        ("030-123 4567", json!({}), Only(&["c3"])),
        ("1234567 ", json!({}), Only(&["c3"])),
        ("9999 ", json!({}), Nothing),
        // emails whole, by local part and pieces, by domain
        ("john.smith@acme.io", json!({}), Only(&["c1"])),
        (
            "anna.maria_svensson+crm@nordicvc.se",
            json!({}),
            Only(&["c4"]),
        ),
        ("kj@nasa.gov", json!({}), Only(&["c7"])),
        ("nordicvc ", json!({}), Only(&["c4"])),
        ("nasa.gov ", json!({}), Only(&["c7"])),
        ("john.sm", json!({}), First("c1")),
        ("nobody ", json!({}), Only(&["c18"])),
        ("007@mi6", json!({}), Only(&["c15"])),
        // company, title, city, tags, notes
        ("acme ", json!({}), Only(&["c1"])),
        ("logistik ", json!({}), Only(&["c3"])),
        ("einkaufsleiter ", json!({}), Only(&["c3"])),
        ("stockholm anna", json!({}), Only(&["c4"])),
        ("renewal ", json!({}), Only(&["c14"])),
        ("enterprise plan", json!({}), Only(&["c14"])),
        ("event-2025 ", json!({}), Only(&["c4"])),
        // filters
        (
            "smith",
            json!({"filter": {"lifecycle_stage": ["lead"]}}),
            Only(&["c1", "c13"]),
        ),
        (
            "",
            json!({"filter": {"tags": "vip"}}),
            Only(&["c1", "c3", "c13"]),
        ),
        (
            "",
            json!({"filter": {"tags": ["vip"], "city": ["Berlin"]}}),
            Only(&["c3"]),
        ),
        (
            "",
            json!({"filter": {"lifecycle_stage": ["lead", "sql"], "country": ["US"]}}),
            Only(&["c1", "c7", "c13"]),
        ),
        (
            "",
            json!({"filter": {"created_at": {"lt": "2000-01-01"}}}),
            Nothing,
        ),
        (
            "london",
            json!({"filter": {"created_at": {"gte": "2000-01-01"}}}),
            Only(&["c5", "c6"]),
        ),
        (
            "",
            json!({"filter": {"company_name": ["Müller Logistik GmbH"]}}),
            Only(&["c3"]),
        ),
        // sorts, with documents lacking the field last
        (
            "",
            json!({"sort": ["last_name:asc"], "limit": 3}),
            Order(&["c15", "c5", "c14"]),
        ),
        (
            "",
            json!({"sort": "last_name:desc", "limit": 2}),
            Order(&["c11", "c6"]),
        ),
        (
            "",
            json!({"sort": "last_name:desc", "offset": 17}),
            Order(&["c18"]),
        ),
        (
            "",
            json!({"sort": "first_name:asc", "limit": 2}),
            Order(&["c4", "c8"]),
        ),
    ];
    assert!(cases.len() >= 60);
    let mut failures = Vec::new();
    for (q, extra, expect) in &cases {
        let mut body = json!({"q": q, "limit": 50});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v = search(&t, body.clone()).await;
        let got = exts(&v);
        assert!(v["total"].as_u64().unwrap() as usize >= got.len());
        let ok = match expect {
            First(x) => got.first().map(String::as_str) == Some(x),
            Only(xs) => {
                got.iter().map(String::as_str).collect::<BTreeSet<_>>()
                    == xs.iter().copied().collect::<BTreeSet<_>>()
                    && v["total"] == xs.len()
            }
            Has(xs) => xs.iter().all(|x| got.iter().any(|g| g == x)),
            Order(xs) => {
                got.len() >= xs.len()
                    && got[..xs.len()] == xs.iter().map(|x| x.to_string()).collect::<Vec<_>>()[..]
            }
            Top(xs) => {
                got.len() >= xs.len()
                    && got[..xs.len()]
                        .iter()
                        .map(String::as_str)
                        .collect::<BTreeSet<_>>()
                        == xs.iter().copied().collect::<BTreeSet<_>>()
            }
            Nothing => got.is_empty() && v["total"] == 0,
            Widened(how, xs) => {
                v["fallback"] == *how
                    && got.iter().map(String::as_str).collect::<BTreeSet<_>>()
                        == xs.iter().copied().collect::<BTreeSet<_>>()
            }
        };
        if !matches!(expect, Widened(..)) && !v["fallback"].is_null() {
            failures.push(format!("{body} widened: {}", v["fallback"]));
        }
        if !ok {
            failures.push(format!("{body} → {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facets_highlights_windows_cursors_and_isolation() {
    let t = loaded().await;
    // disjunctive facets: the stage facet is not narrowed by the stage filter
    let v = search(
        &t,
        json!({"q": "", "filter": {"lifecycle_stage": ["lead"]}, "facets": ["lifecycle_stage", "city", "tags"]}),
    )
    .await;
    assert_eq!(v["total"], 4);
    let counts = |facet: &str| -> BTreeMap<String, u64> {
        v["facets"][facet]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["value"].as_str().unwrap().to_owned(),
                    x["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let stages = counts("lifecycle_stage");
    assert_eq!(stages["lead"], 4);
    assert_eq!(stages["customer"], 4);
    assert_eq!(stages["opportunity"], 1);
    let cities = counts("city");
    assert_eq!(cities.get("London"), Some(&1));
    assert_eq!(cities.get("Berlin"), None, "other facets are narrowed");
    assert_eq!(counts("tags").get("vip"), Some(&2));
    // facet values are ordered by count, then value
    let v2 = search(
        &t,
        json!({"q": "", "facets": ["lifecycle_stage"], "facet_size": 2}),
    )
    .await;
    assert_eq!(
        v2["facets"]["lifecycle_stage"],
        json!([{"value": "customer", "count": 4}, {"value": "lead", "count": 4}])
    );

    // highlights: exact, prefix, fuzzy, nickname, phone, escaped HTML
    let hl = |q: &str| {
        let q = q.to_owned();
        let t = &t;
        async move {
            let v = search(t, json!({"q": q, "highlight": true, "limit": 1})).await;
            v["hits"][0]["highlights"].clone()
        }
    };
    assert_eq!(hl("jon").await["first_name"], "<em>Jon</em>");
    assert_eq!(hl("mont").await["last_name"], "<em>Mont</em>gomery");
    assert_eq!(hl("smiht john").await["last_name"], "<em>Smith</em>");
    assert_eq!(hl("bob brown").await["first_name"], "<em>Robert</em>");
    assert_eq!(hl("muell").await["last_name"], "<em>Müll</em>er");
    assert_eq!(
        hl("5678").await["phones"],
        json!(["+46 8 123 4<em>56 78</em>"])
    );
    assert_eq!(
        hl("lead montgomery").await["title"],
        "R&amp;D &lt;<em>Lead</em>&gt;"
    );
    assert_eq!(hl("acme").await["company_name"], "<em>Acme</em> Robotics");
    let notes = hl("renewal").await["notes"].as_str().unwrap().to_owned();
    assert!(notes.contains("<em>Renewal</em>"), "{notes}");

    // any window of a sorted list equals the same slice of the full sort;
    // cursors walk it without gaps or repeats
    for sort in [
        "last_name:asc",
        "last_name:desc",
        "first_name:asc",
        "created_at:desc",
        "updated_at:asc",
        "company_name:asc",
        "_relevance",
    ] {
        let q = if sort == "_relevance" { "smith" } else { "" };
        let full = exts(&search(&t, json!({"q": q, "sort": [sort], "limit": 1000})).await);
        for (offset, limit) in [(0, 3), (2, 5), (7, 4), (15, 10), (17, 1)] {
            let w = exts(
                &search(
                    &t,
                    json!({"q": q, "sort": [sort], "offset": offset, "limit": limit}),
                )
                .await,
            );
            let want: Vec<String> = full.iter().skip(offset).take(limit).cloned().collect();
            assert_eq!(w, want, "{sort} {offset} {limit}");
        }
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut body = json!({"q": q, "sort": [sort], "limit": 4});
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let v = search(&t, body).await;
            walked.extend(exts(&v));
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(walked, full, "cursor walk of {sort}");
    }

    // tenant isolation: b has its own John Smith only
    let (s, v) = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(t.b.key(Role::Search)),
            Some(json!({"q": "smith", "facets": ["city"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], 1);
    assert_eq!(v["facets"]["city"], json!([{"value": "Other", "count": 1}]));
    let (_, v) = t
        .call(
            Method::GET,
            "/v1/contacts/autocomplete?q=acm",
            Some(t.b.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(v["suggestions"], json!([]));
    let (_, v) = t
        .call(
            Method::GET,
            "/v1/contacts/stats",
            Some(t.b.key(Role::Search)),
            None,
        )
        .await;
    assert_eq!(v["total"], 1);
    t.stop().await;
}

/// A chunk that reads as an address's local part ranks first the contact
/// whose address it is, typos and all, among contacts its words match
/// alike: three Anna Schmidts, each first for her own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_parts_rank_their_contact_first() {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    for (ext, email) in [
        ("s1", "anna.schmidt@example.de"),
        ("s2", "anna.s@example.de"),
        ("s3", "schmidt-anna@example.de"),
    ] {
        let (s, v) = t
            .call(
                Method::POST,
                "/v1/contacts",
                Some(w),
                Some(json!({"external_id": ext, "first_name": "Anna", "last_name": "Schmidt", "emails": [email]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    t.caught_up().await;
    for (q, first) in [
        ("anna.schmdit", "s1"),
        ("anna.schmidt ", "s1"),
        ("Anna.S ", "s2"),
        ("schmidt-ana ", "s3"),
        ("shcmidt-anna", "s3"),
    ] {
        let v = search(&t, json!({"q": q})).await;
        let got = exts(&v);
        assert_eq!(got.len(), 3, "{q}: {got:?}");
        assert_eq!(got[0], first, "{q}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocomplete_stats_and_companies() {
    let t = loaded().await;
    let key = t.a.key(Role::Search);
    let ac = |q: &str, limit: usize| {
        let path = format!("/v1/contacts/autocomplete?q={}&limit={limit}", urlencode(q));
        let t = &t;
        async move {
            let (s, v) = t.call(Method::GET, &path, Some(key), None).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["suggestions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["kind"].as_str().unwrap().to_owned(),
                        s["text"].as_str().unwrap().to_owned(),
                        s["highlight"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let jo = ac("jo", 8).await;
    assert!(
        jo.contains(&(
            "contact".into(),
            "John Smith".into(),
            "<em>Jo</em>hn Smith".into()
        )),
        "{jo:?}"
    );
    assert!(
        jo.iter()
            .any(|(k, t, _)| k == "company" && t == "Johnson Ltd"),
        "{jo:?}"
    );
    assert!(jo.len() <= 8);
    assert_eq!(ac("jo", 2).await.len(), 2);
    let acme = ac("acm", 5).await;
    assert_eq!(
        acme[0],
        (
            "company".into(),
            "Acme Robotics".into(),
            "<em>Acm</em>e Robotics".into()
        )
    );
    // typos in complete words, prefix on the last
    let mont = ac("christophr mont", 5).await;
    assert_eq!(mont[0].1, "Christopher Montgomery");
    let mail = ac("john.smith@ac", 5).await;
    assert_eq!(mail[0].0, "email", "{mail:?}");
    assert_eq!(mail[0].1, "john.smith@acme.io");
    // two John Smiths would be one suggestion: deduplicated by text
    let smith = ac("smith", 10).await;
    let texts: BTreeSet<&str> = smith.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(texts.len(), smith.len());
    assert!(ac("", 5).await.is_empty());
    let (s, v) = t
        .call(
            Method::GET,
            "/v1/contacts/autocomplete?q=jo&limit=0",
            Some(key),
            None,
        )
        .await;
    assert_error(&(s, v), StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");

    // stats: whole-tenant counts
    let (s, v) = t
        .call(Method::GET, "/v1/contacts/stats", Some(key), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 18);
    assert!(
        v["facets"]["lifecycle_stage"]
            .as_array()
            .unwrap()
            .contains(&json!({"value": "lead", "count": 4}))
    );
    assert!(
        v["facets"]["country"]
            .as_array()
            .unwrap()
            .contains(&json!({"value": "US", "count": 3}))
    );
    assert!(
        v["facets"]["company_name"]
            .as_array()
            .unwrap()
            .contains(&json!({"value": "Acme Robotics", "count": 1}))
    );

    // company search: the same shape over companies
    let (s, v) = post(
        &t,
        "/v1/companies/search",
        json!({"q": "muller", "highlight": true, "facets": ["country"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["company"]["name"], "Müller Logistik GmbH");
    assert_eq!(
        v["hits"][0]["highlights"]["name"],
        "<em>Müller</em> Logistik GmbH"
    );
    assert_eq!(v["facets"]["country"], json!([{"value": "SE", "count": 1}]));
    let (_, v) = post(
        &t,
        "/v1/companies/search",
        json!({"q": "", "sort": ["name:asc"]}),
    )
    .await;
    let names: Vec<&str> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["company"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Acme Robotics",
            "Johnson Ltd",
            "Müller Logistik GmbH",
            "Nordic Ventures"
        ]
    );
    let (_, v) = post(&t, "/v1/companies/search", json!({"q": "nordicvc"})).await;
    assert_eq!(v["total"], 1);
    t.stop().await;
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A query with something in it but nothing that can match (symbols,
/// punctuation, invisible characters, a word longer than any the index
/// keeps) matches nothing; a blank one matches every contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_searchable_matches_nothing() {
    let t = loaded().await;
    let all = search(&t, json!({"q": ""})).await["total"]
        .as_u64()
        .unwrap();
    assert!(all >= 18, "a blank query browses: {all}");
    for q in [
        "🙂".to_owned(),
        "🙂👍 🎉".to_owned(),
        "!!! ,,, ---".to_owned(),
        "*?[]{}()\\/:^~!&|".to_owned(),
        "\u{200b}\u{200d}\u{feff}".to_owned(),
        "\u{202e}".to_owned(),
        "x".repeat(64),
        "x".repeat(65),
        "smith ".to_owned() + &"x".repeat(65),
        format!("{}@example.com", "y".repeat(70)),
    ] {
        let v = search(&t, json!({"q": q, "facets": ["country"]})).await;
        assert_eq!(v["total"], 0, "{q:?} → {v}");
        assert!(exts(&v).is_empty(), "{q:?} → {v}");
        let (s, v) = t
            .call(
                Method::GET,
                &format!("/v1/contacts/autocomplete?q={}", urlencode(&q)),
                Some(t.a.key(Role::Search)),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["suggestions"], json!([]), "{q:?} → {v}");
    }
    // beside a real word, symbols are ignored
    let v = search(&t, json!({"q": "🙂 smith!"})).await;
    assert!(exts(&v).contains(&"c1".to_owned()), "{v}");
}

/// A request that is bad whatever the index holds is refused at once,
/// before it waits for a `min_lsn` the index has not reached (a position
/// far ahead: without the order, each would wait out its `wait_ms` and
/// answer 503); a `wait_ms` over 30 s is refused, not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_waiting() {
    let t = loaded().await;
    let s = t.a.key(Role::Search);
    let far = "min_lsn=FFFFFFFF%2FFFFFFFFF&wait_ms=30000";
    for (path, code) in [
        (
            format!("/v1/contacts/search?limit=18446744073709551615&{far}"),
            "invalid_value",
        ),
        (
            format!("/v1/contacts/search?limit=5000&{far}"),
            "invalid_value",
        ),
        (
            format!("/v1/contacts/search?facet_size=0&{far}"),
            "invalid_value",
        ),
        (
            format!("/v1/contacts/search?sort=shoe_size&{far}"),
            "invalid_sort",
        ),
        (
            format!("/v1/contacts/search?facets=shoe_size&{far}"),
            "invalid_facet",
        ),
        (
            format!("/v1/contacts/search?cursor=zz&{far}"),
            "invalid_cursor",
        ),
        (
            format!("/v1/contacts/search?filter=%7B%22shoe_size%22%3A%5B%2242%22%5D%7D&{far}"),
            "invalid_filter",
        ),
        (
            format!("/v1/companies/search?limit=5000&{far}"),
            "invalid_value",
        ),
        (
            format!("/v1/contacts/autocomplete?q=an&limit=0&{far}"),
            "invalid_value",
        ),
        (format!("/v1/contacts/stats?size=0&{far}"), "invalid_value"),
        (
            "/v1/contacts/search?q=anna&min_lsn=0%2F0&wait_ms=30001".into(),
            "invalid_value",
        ),
        (
            "/v1/contacts/search?q=anna&wait_ms=600000".into(),
            "invalid_value",
        ),
    ] {
        let got = t.call(Method::GET, &path, Some(s), None).await;
        assert_eq!(got.1["error"]["code"], code, "{path}: {}", got.1);
        assert!(got.0.is_client_error(), "{path}: {}", got.1);
    }
    let got = t
        .call(
            Method::POST,
            "/v1/contacts/search",
            Some(s),
            Some(json!({"q": "anna", "limit": 5000, "min_lsn": "FFFFFFFF/FFFFFFFF", "wait_ms": 30000})),
        )
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let agent = t.a.key(Role::Agent);
    for body in [
        json!({"query": "pricing", "top_k": 0, "min_lsn": "FFFFFFFF/FFFFFFFF", "wait_ms": 30000}),
        json!({"query": "pricing", "min_lsn": "0/0", "wait_ms": 60000}),
    ] {
        let got = t
            .call(Method::POST, "/v1/memories/search", Some(agent), Some(body))
            .await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    }
    // within the bounds, the wait is honoured
    let v = search(
        &t,
        json!({"q": "smith", "min_lsn": "0/0", "wait_ms": 30000}),
    )
    .await;
    assert!(!exts(&v).is_empty(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_not_crashed() {
    let t = loaded().await;
    let long_word = "x".repeat(5_000);
    let words: String = (0..10_000).map(|i| format!("w{i} ")).collect();
    let v = search(&t, json!({"q": words})).await;
    assert_eq!(v["total"], 0, "ten words that match nothing");
    let ok: Vec<Value> = vec![
        json!({"q": long_word}),
        json!({"q": "x".repeat(2_000_000)}),
        json!({"q": "\"john smith"}),
        json!({"q": "jo\"hn\u{0007}\u{001b}[31m"}),
        json!({"q": "🙂🙂 smith 👍"}),
        json!({"q": "\u{202e}htims \u{05e9}\u{05dc}\u{05d5}\u{05dd}"}),
        json!({"q": "*?[]{}()\\/:^~!&|"}),
        json!({"q": "smith", "limit": 0}),
        json!({"q": "", "offset": 1_000_000_000_000u64}),
        json!({"q": "%00 %ff"}),
        json!({"q": "a b c d e f g h i j k l m n o p"}),
    ];
    for body in ok {
        let (s, v) = post(&t, "/v1/contacts/search", body.clone()).await;
        let shown: String = body.to_string().chars().take(120).collect();
        // a body over the configured limit is a 413, anything else a result
        assert!(
            s == StatusCode::OK || s == StatusCode::PAYLOAD_TOO_LARGE,
            "{shown} → {s} {v}"
        );
    }
    let v = search(&t, json!({"q": "smith ", "limit": 0})).await;
    assert_eq!(
        (v["total"].as_u64(), v["hits"].as_array().map(Vec::len)),
        (Some(2), Some(0))
    );
    let bad: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"facets": ["shoe_size"]}),
            StatusCode::BAD_REQUEST,
            "invalid_facet",
            "shoe_size",
        ),
        (
            json!({"sort": ["shoe_size:asc"]}),
            StatusCode::BAD_REQUEST,
            "invalid_sort",
            "shoe_size",
        ),
        (
            json!({"sort": ["last_name:up"]}),
            StatusCode::BAD_REQUEST,
            "invalid_sort",
            "up",
        ),
        (
            json!({"sort": ["last_name", "first_name"]}),
            StatusCode::BAD_REQUEST,
            "invalid_sort",
            "one key",
        ),
        (
            json!({"filter": {"shoe_size": ["42"]}}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "shoe_size",
        ),
        (
            json!({"filter": {"city": 5}}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "city",
        ),
        (
            json!({"filter": {"created_at": {"gte": "yesterday"}}}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "created_at.gte",
        ),
        (
            json!({"filter": {"created_at": {"after": "2025-01-01"}}}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "after",
        ),
        (
            json!({"filter": {"city": {"gte": "2025-01-01"}}}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "city",
        ),
        (
            json!({"filter": [1]}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "object",
        ),
        (
            json!({"limit": 1_000_000_000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "limit",
        ),
        (
            json!({"facets": ["city"], "facet_size": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "facet_size",
        ),
        (
            json!({"cursor": "zz"}),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "cursor",
        ),
        (
            json!({"cursor": "7b7d"}),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "cursor",
        ),
    ];
    for (body, status, code, names) in bad {
        let (s, v) = post(&t, "/v1/contacts/search", body.clone()).await;
        assert_error(&(s, v.clone()), status, code);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(names), "{body}: {msg}");
    }
    // a cursor of another sort
    let v = search(&t, json!({"q": "", "sort": "last_name:asc", "limit": 2})).await;
    let c = v["next_cursor"].as_str().unwrap();
    let (s, v) = post(
        &t,
        "/v1/contacts/search",
        json!({"q": "", "sort": "first_name:asc", "cursor": c}),
    )
    .await;
    assert_error(&(s, v), StatusCode::BAD_REQUEST, "invalid_cursor");
    // negative numbers and wrong types are named by the body parser
    for body in [
        json!({"offset": -1}),
        json!({"limit": "ten"}),
        json!({"q": 5}),
        json!({"colour": "red"}),
    ] {
        let (s, v) = post(&t, "/v1/contacts/search", body.clone()).await;
        assert!(s.is_client_error(), "{body} → {s} {v}");
    }
    // the same over GET query parameters
    for path in [
        "/v1/contacts/search?q=smith&facets=city,tags&sort=last_name:asc&limit=5",
        "/v1/contacts/search?q=%F0%9F%99%82",
        "/v1/contacts/autocomplete?q=%E2%80%AE",
    ] {
        let (s, v) = t
            .call(Method::GET, path, Some(t.a.key(Role::Search)), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{path} → {v}");
    }
    for (path, code) in [
        ("/v1/contacts/search?offset=-1", "invalid_query"),
        ("/v1/contacts/search?filter=notjson", "invalid_filter"),
        ("/v1/contacts/search?facets=nope", "invalid_facet"),
        (
            "/v1/contacts/autocomplete?q=jo&limit=1000000",
            "invalid_value",
        ),
        ("/v1/contacts/stats?size=0", "invalid_value"),
    ] {
        let (s, v) = t
            .call(Method::GET, path, Some(t.a.key(Role::Search)), None)
            .await;
        assert!(s.is_client_error(), "{path} → {s} {v}");
        assert_eq!(v["error"]["code"], code, "{path} → {v}");
    }
    t.stop().await;
}

/// The relevance set of `fixtures/relevance` (generated multi-locale
/// contacts and the misspelled, partial, reordered, accent-stripped, phone
/// and email queries people type, with every right answer): success@1 and
/// success@10 by kind, printed, with floors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relevance_on_the_fixture_set() {
    let t = TestApp::with_indexer().await;
    let w = t.a.key(Role::Write);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/relevance");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    for line in read("companies.ndjson").lines() {
        let (s, v) = t
            .call(
                Method::POST,
                "/v1/companies",
                Some(w),
                Some(serde_json::from_str(line).unwrap()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = t
        .raw(
            Method::POST,
            "/v1/contacts/bulk",
            Some(w),
            Some(("application/x-ndjson", read("contacts.ndjson").into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["failed"], json!([]));
    t.caught_up().await;
    let queries: Vec<crmsearch::seed::RelevanceQuery> = read("queries.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_kind: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut misses = Vec::new();
    for q in &queries {
        let r = crmsearch::search::search(
            &t.ix().store,
            t.a.id,
            crmsearch::search::Scope::Contacts,
            &crmsearch::search::Request {
                q: q.q.clone(),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let got: Vec<String> = r
            .hits
            .iter()
            .map(|h| {
                h.record.value()["external_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let e = by_kind.entry(q.kind.to_owned()).or_default();
        e[0] += 1;
        let first = got.first().is_some_and(|g| q.expect.contains(g));
        let ten = got.iter().any(|g| q.expect.contains(g));
        e[1] += usize::from(first);
        e[2] += usize::from(ten);
        if !ten {
            misses.push(format!(
                "{} {:?} expect {:?} got {:?}",
                q.kind, q.q, q.expect, got
            ));
        }
    }
    let mut table = String::from("kind          n    success@1  success@10\n");
    let mut all = [0usize; 3];
    for (kind, c) in &by_kind {
        table.push_str(&format!(
            "{kind:<12} {:>4}    {:.3}      {:.3}\n",
            c[0],
            c[1] as f64 / c[0] as f64,
            c[2] as f64 / c[0] as f64
        ));
        for i in 0..3 {
            all[i] += c[i];
        }
    }
    let at10 = all[2] as f64 / all[0] as f64;
    table.push_str(&format!(
        "{:<12} {:>4}    {:.3}      {at10:.3}\n",
        "all",
        all[0],
        all[1] as f64 / all[0] as f64
    ));
    println!("{table}");
    for m in misses.iter().take(20) {
        println!("miss: {m}");
    }
    assert!(queries.len() >= 600);
    let typos: [usize; 3] = ["typo1", "typo2"]
        .iter()
        .filter_map(|k| by_kind.get(*k))
        .fold([0; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]]);
    assert!(
        typos[2] as f64 / typos[0] as f64 >= 0.99,
        "misspelled names success@10 below 0.99:\n{table}"
    );
    assert!(at10 >= 0.97, "success@10 below 0.97:\n{table}");
    let at1 = all[1] as f64 / all[0] as f64;
    assert!(at1 >= 0.97, "success@1 below 0.97:\n{table}");
    // what users type beside whole names: initials, prefixes of every
    // word, typos in an address's local part
    for kind in ["initial", "prefixes", "email_typo", "nickname"] {
        let c = by_kind[kind];
        assert!(
            c[2] as f64 / c[0] as f64 >= 0.95,
            "{kind} success@10 below 0.95:\n{table}"
        );
    }
    t.stop().await;
}
