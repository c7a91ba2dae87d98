use axum::http::{Method, StatusCode};

use crate::testing::{harness, ALICE};

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let h = harness();
    let r = h.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    let paths = r.body["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut listed: Vec<(String, String)> = crate::openapi::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        documented, listed,
        "ROUTES and the document name the same operations"
    );

    // And the router serves each of them (not the JSON fallback 404, not 405).
    for (method, path) in crate::openapi::ROUTES {
        let concrete = path.replace("{id}", "x").replace("{version}", "1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = h.call(m, &concrete, Some(ALICE), None).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !r.text.contains("no such route"),
            "{method} {path} is not routed"
        );
    }
    // Every documented admin operation declares its auth failures.
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            if !op["security"].as_array().unwrap().is_empty() {
                assert!(op["responses"].get("401").is_some(), "{method} {path}");
            }
        }
    }
}
