//! Router tests of `/v1/audit*`: admin edits show up with their actor and a summary (never a
//! key), filters and pages, verify, and who may read.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::testing::{code, harness, policy, Harness, ALICE, BOB, SYNC, T0};

async fn get(h: &Harness, path: &str, token: Option<&str>) -> crate::testing::Resp {
    h.call(Method::GET, path, token, None).await
}

fn kinds(r: &crate::testing::Resp) -> Vec<String> {
    r.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn admin_edits_are_logged_with_actor_and_summary_never_the_key() {
    let h = harness();
    assert_eq!(h.put_policy(ALICE, &policy()).await.status, StatusCode::OK);
    h.clock.advance_ms(1000);
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(BOB),
            Some(json!({ "id": "sales-agent", "projectId": "sales-ai" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.body["apiKey"].as_str().unwrap().to_string();
    let r = h
        .call(
            Method::POST,
            "/v1/clients/sales-agent/rotate-key",
            Some(ALICE),
            None,
        )
        .await;
    let key2 = r.body["apiKey"].as_str().unwrap().to_string();
    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/sales-ai",
            Some(ALICE),
            Some(json!({ "name": "Sales" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .call(Method::DELETE, "/v1/clients/sales-agent", Some(BOB), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let r = get(&h, "/v1/audit", Some(ALICE)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        kinds(&r),
        vec![
            "policy.updated",
            "client.created",
            "client.key_rotated",
            "project.updated",
            "client.deleted"
        ]
    );
    let e = &r.body["entries"];
    assert_eq!(
        (
            e[0]["actor"].as_str(),
            e[0]["policyVersion"].as_i64(),
            e[0]["atMs"].as_i64()
        ),
        (Some("alice"), Some(1), Some(T0))
    );
    assert_eq!(e[0]["at"], "2025-11-24T16:00:00.000Z");
    assert_eq!(
        (
            e[1]["actor"].as_str(),
            e[1]["clientId"].as_str(),
            e[1]["projectId"].as_str()
        ),
        (Some("bob"), Some("sales-agent"), Some("sales-ai"))
    );
    assert_eq!(
        e[1]["details"]["changed"]["clients"]["added"],
        json!(["sales-agent"])
    );
    assert_eq!(
        e[2]["details"]["changed"]["clients"]["edited"],
        json!(["sales-agent"])
    );
    assert_eq!(
        e[3]["details"]["changed"]["projects"]["edited"],
        json!(["sales-ai"])
    );
    assert_eq!(
        e[4]["projectId"], "sales-ai",
        "a deleted client's project, from before"
    );
    assert!(
        !r.text.contains(&key) && !r.text.contains(&key2),
        "no key in the log"
    );
    let hash = |k: &str| pag0_policy::validate::api_key_sha256_hex(k);
    assert!(!r.text.contains(&hash(&key)) && !r.text.contains(&hash(&key2)));

    // An unchanged re-apply is not a change: no entry.
    let current = get(&h, "/v1/policy", Some(ALICE)).await.body;
    let again = h.put_policy(ALICE, &current).await;
    assert_eq!(again.body["unchanged"], true, "{}", again.text);
    let head = get(&h, "/v1/audit/head", Some(ALICE)).await;
    assert_eq!(head.body["seq"], 5);
    assert_eq!(head.body["hash"], r.body["entries"][4]["hash"]);
    let v = get(&h, "/v1/audit/verify", Some(ALICE)).await;
    assert_eq!(
        (
            v.body["ok"].as_bool(),
            v.body["rowsChecked"].as_u64(),
            &v.body["firstBadRow"]
        ),
        (Some(true), Some(5), &Value::Null),
        "{}",
        v.text
    );
}

#[tokio::test]
async fn filters_and_cursor_pages() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    for i in 0..4 {
        h.clock.advance_ms(1000);
        let r = h
            .call(
                Method::POST,
                "/v1/projects",
                Some(ALICE),
                Some(json!({ "id": format!("p{i}") })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let p1 = get(&h, "/v1/audit?limit=2", Some(ALICE)).await;
    assert_eq!(p1.body["entries"].as_array().unwrap().len(), 2);
    let cursor = p1.body["nextCursor"].as_str().unwrap().to_string();
    let p2 = get(
        &h,
        &format!("/v1/audit?limit=2&cursor={cursor}"),
        Some(ALICE),
    )
    .await;
    let p3 = get(
        &h,
        &format!(
            "/v1/audit?limit=2&cursor={}",
            p2.body["nextCursor"].as_str().unwrap()
        ),
        Some(ALICE),
    )
    .await;
    let seqs: Vec<i64> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p.body["entries"].as_array().unwrap().clone())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(p3.body["nextCursor"], Value::Null);

    let r = get(
        &h,
        "/v1/audit?kind=project.created&projectId=p2",
        Some(ALICE),
    )
    .await;
    assert_eq!(kinds(&r), vec!["project.created"]);
    assert_eq!(r.body["entries"][0]["projectId"], "p2");
    // since/until: RFC 3339 or ms.
    let r = get(
        &h,
        &format!(
            "/v1/audit?since={}&until=2025-11-24T16:00:03.000Z",
            T0 + 2000
        ),
        Some(ALICE),
    )
    .await;
    let seqs: Vec<i64> = r.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3]);

    for bad in [
        "/v1/audit?limit=1001",
        "/v1/audit?limit=0",
        "/v1/audit?cursor=abc",
        "/v1/audit?since=yesterday",
        "/v1/audit?from=1&since=2",
        "/v1/audit?colour=red",
        "/v1/audit?order=newest",
    ] {
        let r = get(&h, bad, Some(ALICE)).await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::BAD_REQUEST, "BAD_QUERY"),
            "{bad}: {}",
            r.text
        );
    }
}

/// `order=desc`: newest first, and its cursor pages go on towards the oldest, with filters.
#[tokio::test]
async fn newest_first_pages() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    for i in 0..4 {
        h.clock.advance_ms(1000);
        let r = h
            .call(
                Method::POST,
                "/v1/projects",
                Some(ALICE),
                Some(json!({ "id": format!("p{i}") })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let seqs = |r: &crate::testing::Resp| -> Vec<i64> {
        r.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect()
    };
    let mut pages = Vec::new();
    let mut path = "/v1/audit?order=desc&limit=2".to_string();
    loop {
        let r = get(&h, &path, Some(ALICE)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        pages.push(seqs(&r));
        match r.body["nextCursor"].as_str() {
            Some(c) => path = format!("/v1/audit?order=desc&limit=2&cursor={c}"),
            None => break,
        }
        assert!(pages.len() < 10, "the pages do not end");
    }
    assert_eq!(pages, vec![vec![5, 4], vec![3, 2], vec![1]]);
    // asc is the default and the same as no order.
    let r = get(&h, "/v1/audit?order=asc&limit=3", Some(ALICE)).await;
    assert_eq!(seqs(&r), vec![1, 2, 3]);
    // With a filter and a time range, the newest matching rows first.
    let r = get(
        &h,
        &format!(
            "/v1/audit?order=desc&kind=project.created&until={}&limit=2",
            T0 + 4000
        ),
        Some(ALICE),
    )
    .await;
    assert_eq!(seqs(&r), vec![4, 3]);
    let c = r.body["nextCursor"].as_str().unwrap().to_string();
    let r = get(
        &h,
        &format!(
            "/v1/audit?order=desc&kind=project.created&until={}&limit=2&cursor={c}",
            T0 + 4000
        ),
        Some(ALICE),
    )
    .await;
    assert_eq!(seqs(&r), vec![2]);
    assert_eq!(kinds(&r), vec!["project.created"]);
}

#[tokio::test]
async fn only_admins_read_the_audit() {
    let mut tokens = crate::testing::tokens();
    tokens
        .add_approver_spec("lead@acme.com=lead-approver-token-0004")
        .unwrap();
    let h = Harness::new(tokens);
    for path in ["/v1/audit", "/v1/audit/head", "/v1/audit/verify"] {
        assert_eq!(
            get(&h, path, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            get(&h, path, Some("not-a-token-at-all-000")).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            get(&h, path, Some(SYNC)).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            get(&h, path, Some(ALICE)).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
}
