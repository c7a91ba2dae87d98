//! Bearer tokens over the router: who gets 401, who gets 403.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

use crate::testing::{harness, policy, ALICE, SYNC};

#[tokio::test]
async fn no_token_or_a_bad_one_is_401() {
    let h = harness();
    for (path, method) in [
        ("/v1/policy", Method::GET),
        ("/v1/budgets", Method::GET),
        ("/v1/sync", Method::POST),
    ] {
        let r = h.call(method.clone(), path, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        let r = h
            .call(method, path, Some("not-a-token-at-all-xxxx"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = h
        .send(
            Request::get("/v1/policy")
                .header(header::AUTHORIZATION, format!("Basic {ALICE}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "only bearer tokens count"
    );
}

#[tokio::test]
async fn roles_are_kept_apart_with_403() {
    let h = harness();
    let r = h.call(Method::GET, "/v1/policy", Some(SYNC), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "FORBIDDEN");
    let r = h.put_policy(SYNC, &policy()).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the filter cannot change the policy"
    );
    let r = h
        .call(
            Method::POST,
            "/v1/sync",
            Some(ALICE),
            Some(json!({ "instanceId": "x", "seq": 1 })),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "an admin cannot forge usage"
    );
}
