//! `PUT/GET /v1/policy` and its versions: refused whole with every field path, versioned with
//! who and when, guarded by `If-Match`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

use crate::testing::{harness, policy, ALICE, BOB};

#[tokio::test]
async fn a_bad_policy_is_400_with_every_field_path() {
    let h = harness();
    let mut doc = policy();
    doc["projects"][0]["policy"]["dailyBudget"] = json!("12x");
    doc["globalPolicy"]["monthlyBudgett"] = json!("1");
    let r = h.put_policy(ALICE, &doc).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    let details: Vec<&str> = r.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("projects[0].policy.dailyBudget: ")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("monthlyBudgett")),
        "unknown field named: {details:?}"
    );
    let r = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing stored");

    let r = h
        .send(
            Request::put("/v1/policy")
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .body(Body::from("{nope"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
}

#[tokio::test]
async fn every_change_is_a_version_with_who_and_when() {
    let h = harness();
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["author"], "alice");
    assert_eq!(r.body["createdAt"], "2025-11-24T16:00:00.000Z");

    let r = h.put_policy(BOB, &policy()).await;
    assert_eq!(
        (r.body["version"].as_i64(), r.body["unchanged"].as_bool()),
        (Some(1), Some(true)),
        "same document: no new version"
    );

    h.clock.advance_ms(60_000);
    let mut doc = policy();
    doc["globalPolicy"]["dailyBudget"] = json!("6000000");
    let r = h.put_policy(BOB, &doc).await;
    assert_eq!(
        (r.body["version"].as_i64(), r.body["author"].as_str()),
        (Some(2), Some("bob"))
    );

    let r = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert_eq!(r.body["globalPolicy"]["dailyBudget"], "6000000");
    assert_eq!(r.headers["x-pag0-policy-version"], "2");
    assert_eq!(r.headers[header::ETAG], "\"2\"");
    assert_eq!(r.headers["x-pag0-policy-author"], "bob");

    let r = h
        .call(Method::GET, "/v1/policy/versions", Some(ALICE), None)
        .await;
    assert_eq!(
        r.body["versions"],
        json!([
            { "version": 2, "author": "bob", "createdAt": "2025-11-24T16:01:00.000Z" },
            { "version": 1, "author": "alice", "createdAt": "2025-11-24T16:00:00.000Z" }
        ])
    );
    let r = h
        .call(Method::GET, "/v1/policy/versions/1", Some(ALICE), None)
        .await;
    assert_eq!(r.body["globalPolicy"]["dailyBudget"], "5000000");

    // A write guarded by a stale version is refused.
    let r = h
        .send(
            Request::put("/v1/policy")
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .header(header::IF_MATCH, "\"1\"")
                .body(Body::from(serde_json::to_vec(&policy()).unwrap()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"]["code"], "VERSION_CONFLICT");
}

/// `complianceMode: EU_AI_ACT` with a retention under 183 days is accepted, and PUT and GET
/// say why it falls short; from 183 days on, or without the mode, they say nothing.
#[tokio::test]
async fn a_short_eu_ai_act_retention_is_accepted_with_a_warning() {
    let h = harness();
    let mut doc = policy();
    doc["globalPolicy"]["complianceMode"] = json!("EU_AI_ACT");
    doc["globalPolicy"]["auditLog"] = json!({ "enabled": true, "retention": 90 });
    let r = h.put_policy(ALICE, &doc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let w = r.body["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("90 days") && w.contains("Art. 19(1)") && w.contains("26(6)"),
        "{w}"
    );
    let got = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body["globalPolicy"]["auditLog"]["retention"], 90,
        "the document as put"
    );
    let header = got.headers.get("x-pag0-warning").unwrap().to_str().unwrap();
    assert_eq!(header, w);
    // The same document again: unchanged, still warned.
    let again = h.put_policy(ALICE, &doc).await;
    assert_eq!(again.body["unchanged"], true);
    assert_eq!(again.body["warnings"][0], w);

    doc["globalPolicy"]["auditLog"]["retention"] = json!(183);
    let r = h.put_policy(ALICE, &doc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body.get("warnings").is_none(), "{}", r.body);
    let got = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert!(got.headers.get("x-pag0-warning").is_none());
}
