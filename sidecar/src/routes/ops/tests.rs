//! `/healthz`, `/readyz`, `/metrics` (loopback only) and the JSON 404 of unknown routes.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};

use crate::testing::harness;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = harness();
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["store"].as_str()),
        (StatusCode::OK, Some("sqlite"))
    );
    let r = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        r.text.contains(
            "pag0_sidecar_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        ),
        "{}",
        r.text
    );

    // From another host: refused (docs/sidecar.md: loopback).
    let mut req = Request::get("/metrics").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 7], 5000))));
    assert_eq!(h.send(req).await.status, StatusCode::FORBIDDEN);
    let mut req = Request::get("/healthz").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5000))));
    assert_eq!(h.send(req).await.status, StatusCode::OK);

    let r = h.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
}
