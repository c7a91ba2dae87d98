//! `/v1/projects` and `/v1/clients` one at a time: each change revalidates the whole policy; a
//! client's key is shown once.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

use crate::testing::{harness, policy, ALICE, BOB, T0};

#[tokio::test]
async fn projects_are_edited_one_at_a_time_and_revalidated() {
    let h = harness();
    let r = h
        .call(
            Method::POST,
            "/v1/projects",
            Some(ALICE),
            Some(json!({ "id": "x", "name": "X" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no policy yet");
    h.put_policy(ALICE, &policy()).await;

    let p = json!({ "id": "support", "name": "Support", "policy": { "monthlyBudget": "1000000" } });
    let r = h
        .call(Method::POST, "/v1/projects", Some(BOB), Some(p.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["x-pag0-policy-version"], "2");
    let r = h
        .call(Method::POST, "/v1/projects", Some(BOB), Some(p))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ALREADY_EXISTS"))
    );

    // A project budget above the org's is refused; the stored policy is unchanged.
    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/support",
            Some(BOB),
            Some(json!({ "policy": { "monthlyBudget": "999000000" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    assert!(
        r.body["error"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("projects[1].policy.monthlyBudget"),
        "{}",
        r.text
    );
    let r = h
        .call(Method::GET, "/v1/policy/versions", Some(ALICE), None)
        .await;
    assert_eq!(r.body["versions"].as_array().unwrap().len(), 2);

    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/support",
            Some(BOB),
            Some(json!({ "name": "Customer Support" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Customer Support");
    assert_eq!(
        r.body["policy"]["monthlyBudget"], "1000000",
        "merge patch keeps the rest"
    );
    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/support",
            Some(BOB),
            Some(json!({ "id": "other" })),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "ID_IMMUTABLE");

    let r = h.call(Method::GET, "/v1/projects", Some(ALICE), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = h
        .call(Method::DELETE, "/v1/projects/support", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(Method::GET, "/v1/projects/support", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .call(Method::DELETE, "/v1/projects/support", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_client_key_is_returned_once_and_only_its_hash_is_stored() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "sales-agent", "projectId": "sales-ai",
            "tags": { "costCenter": "CC-1001" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.body["apiKey"].as_str().unwrap().to_string();
    assert!(key.starts_with("pag0_") && key.len() > 40);
    let hash = pag0_policy::validate::api_key_sha256_hex(&key);
    assert_eq!(r.body["client"]["apiKeySha256"], hash);

    // Nowhere else: not in GET of the client, not in the stored document.
    let r = h
        .call(Method::GET, "/v1/clients/sales-agent", Some(ALICE), None)
        .await;
    assert_eq!(r.body["apiKeySha256"], hash);
    assert!(!r.text.contains(&key));
    let r = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert!(!r.text.contains(&key));

    // The stored document identifies the client from the key (pag0-policy's own hashing).
    let compiled = pag0_policy::CompiledPolicy::compile(r.text.as_bytes()).unwrap();
    fn head(k: &str) -> pag0_policy::RequestHead<'_> {
        pag0_policy::RequestHead {
            api_key: Some(k),
            method: "POST",
            authority: "api.openai.com",
            path: "/v1/chat/completions",
            requires_approval: false,
        }
    }
    match compiled.check_head(
        &head(&key),
        chrono::DateTime::from_timestamp_millis(T0).unwrap(),
    ) {
        pag0_policy::HeadOutcome::Continue(_) => {}
        pag0_policy::HeadOutcome::Deny(d) => panic!("the new key is refused: {d:?}"),
    }
    match compiled.check_head(
        &head("pag0_wrong"),
        chrono::DateTime::from_timestamp_millis(T0).unwrap(),
    ) {
        pag0_policy::HeadOutcome::Deny(d) => {
            assert_eq!(d.code, pag0_policy::DenyCode::UnknownApiKey)
        }
        pag0_policy::HeadOutcome::Continue(_) => panic!("a wrong key passes"),
    }

    // Rotation: a new key, the old hash gone.
    let r = h
        .call(
            Method::POST,
            "/v1/clients/sales-agent/rotate-key",
            Some(ALICE),
            None,
        )
        .await;
    let key2 = r.body["apiKey"].as_str().unwrap();
    assert_ne!(key2, key);
    assert_eq!(
        r.body["client"]["apiKeySha256"],
        pag0_policy::validate::api_key_sha256_hex(key2)
    );
}

#[tokio::test]
async fn client_requests_that_cannot_stand_are_refused() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "c", "projectId": "sales-ai", "apiKeySha256": "00" })),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("KEY_GENERATED_BY_SIDECAR"))
    );
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "c", "projectId": "nope" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    assert!(
        r.body["error"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("clients[0].projectId"),
        "{}",
        r.text
    );
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "c", "projectId": "sales-ai" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .call(
            Method::PATCH,
            "/v1/clients/c",
            Some(ALICE),
            Some(json!({ "apiKeySha256": "ab" })),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "KEY_IMMUTABLE");
    // The project still has a client: deleting it would leave a dangling reference.
    let r = h
        .call(Method::DELETE, "/v1/projects/sales-ai", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!("not an object")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .send(
            Request::post("/v1/clients")
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON");
}
