//! What the router tests share: an app over SQLite in a temp dir with a manual clock, requests
//! without a socket (`oneshot`), a small policy, the tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, AppState, ManualClock, SqliteStore, Store, Tokens};

pub const ALICE: &str = "alice-admin-token-0001";
pub const BOB: &str = "bob-admin-token-000002";
pub const SYNC: &str = "filter-sync-secret-0003";
/// 2025-11-24T16:00:00Z.
pub const T0: i64 = 1_764_000_000_000;

pub struct Harness {
    pub app: Router,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Admins `alice` and `bob`, the filter's sync secret.
pub fn tokens() -> Tokens {
    let mut tokens = Tokens::default();
    tokens.add_admin_spec(&format!("alice={ALICE}")).unwrap();
    tokens.add_admin_spec(&format!("bob={BOB}")).unwrap();
    tokens.add_sync_secret(SYNC).unwrap();
    tokens
}

pub fn harness() -> Harness {
    Harness::new(tokens())
}

/// The error code of a JSON error answer, `""` for anything else.
pub fn code(r: &Resp) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

pub fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000", "dailyBudget": "5000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [ { "id": "sales-ai", "name": "Sales AI",
                        "policy": { "monthlyBudget": "15000000", "dailyBudget": "500000" } } ],
        "clients": []
    })
}

pub const ORG_DAY: &str = "org.daily/2026-11-24";
pub const ORG_MONTH: &str = "org.monthly/2026-11";
pub const PROJ_MONTH: &str = "project.monthly/sales-ai/2026-11";

/// One usage record of `sales-agent` at T0.
pub fn usage(amount: &str, counters: &[&str]) -> Value {
    json!({ "amount": amount, "counters": counters, "projectId": "sales-ai", "clientId": "sales-agent",
            "host": "api.openai.com", "at": T0 })
}

// === impl Harness ===

impl Harness {
    pub fn new(tokens: Tokens) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_dir(dir.path()).unwrap();
        Self::over(Arc::new(store), tokens, dir)
    }

    /// Over another store (a failing one, say); `dir` is kept alive with the app.
    pub fn over(store: Arc<dyn Store>, tokens: Tokens, dir: tempfile::TempDir) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let state = AppState::new(store, tokens)
            .unwrap()
            .with_clock(clock.clone());
        Harness {
            app: app(state),
            clock,
            _dir: dir,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    /// A JSON request (`content-type: application/json` even without a body), with
    /// `Authorization: Bearer <token>` when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(&v).unwrap()),
            None => Body::empty(),
        };
        self.send(
            b.header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    pub async fn put_policy(&self, token: &str, doc: &Value) -> Resp {
        self.call(Method::PUT, "/v1/policy", Some(token), Some(doc.clone()))
            .await
    }

    pub async fn sync(&self, body: Value) -> Resp {
        self.call(Method::POST, "/v1/sync", Some(SYNC), Some(body))
            .await
    }

    pub async fn analytics(&self, query: &str) -> Resp {
        self.call(
            Method::GET,
            &format!("/v1/analytics?{query}"),
            Some(ALICE),
            None,
        )
        .await
    }

    /// `spent` of one counter in `GET /v1/budgets`, `"0"` when it is not listed.
    pub async fn spent(&self, counter: &str) -> String {
        let r = self
            .call(Method::GET, "/v1/budgets", Some(ALICE), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["counter"] == counter)
            .map_or("0".into(), |c| c["spent"].as_str().unwrap().to_string())
    }
}
