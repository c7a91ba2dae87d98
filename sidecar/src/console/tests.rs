//! The console's HTTP surface without a socket: sign-in, the cookie's flags, the session as
//! the same principal on `/v1`, CSRF on state-changing calls, approver scoping, expiry,
//! sign-out, and the embedded files.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::session::{IDLE_MS, MAX_MS};
use crate::{app, AppState, Config, ManualClock, SqliteStore, Tokens};

const ADMIN: &str = "console-admin-token-0001";
const LEAD: &str = "lead@acme.com";
const LEAD_TOKEN: &str = "console-lead-token-00002";
const OTHER_TOKEN: &str = "console-other-token-0003";
const SYNC: &str = "console-sync-secret-0004";
const T0: i64 = 1_764_000_000_000;

struct H {
    app: Router,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

fn harness(public_url: Option<&str>) -> H {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = Tokens::default();
    tokens.add_admin_spec(&format!("alice={ADMIN}")).unwrap();
    tokens
        .add_approver_spec(&format!("{LEAD}={LEAD_TOKEN}"))
        .unwrap();
    tokens
        .add_approver_spec(&format!("other@acme.com={OTHER_TOKEN}"))
        .unwrap();
    tokens.add_sync_secret(SYNC).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let state = AppState::new(Arc::new(SqliteStore::open_dir(dir.path()).unwrap()), tokens)
        .unwrap()
        .with_clock(clock.clone())
        .with_config(Config {
            public_url: public_url.map(str::to_string),
            ..Config::default()
        });
    H {
        app: app(state),
        clock,
        _dir: dir,
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The session cookie, and the CSRF header if given.
    Session(&'a str, Option<&'a str>),
}

impl H {
    async fn call(&self, method: Method, path: &str, auth: Auth<'_>, body: Option<Value>) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => b = b.header(header::AUTHORIZATION, format!("Bearer {t}")),
            Auth::Session(cookie, csrf) => {
                b = b.header(header::COOKIE, format!("other=1; pag0_session={cookie}"));
                if let Some(c) = csrf {
                    b = b.header("x-pag0-csrf", c);
                }
            }
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        Resp {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    /// Signs in; (cookie value, CSRF token).
    async fn sign_in(&self, token: &str) -> (String, String) {
        let r = self
            .call(
                Method::POST,
                "/console/api/session",
                Auth::None,
                Some(json!({ "token": token })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        let cookie = set
            .strip_prefix("pag0_session=")
            .and_then(|s| s.split(';').next())
            .unwrap()
            .to_string();
        (cookie, r.body["csrfToken"].as_str().unwrap().to_string())
    }

    async fn put_policy(&self) {
        let r = self
            .call(
                Method::PUT,
                "/v1/policy",
                Auth::Bearer(ADMIN),
                Some(policy()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

fn policy() -> Value {
    let key = pag0_policy::validate::api_key_sha256_hex;
    json!({
        "orgId": "acme-corp", "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [ { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } } ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI", "policy": { "monthlyBudget": "1000000",
              "approvalWorkflow": { "enabled": true, "approvers": [LEAD], "requireApprovalAbove": "1000" } } },
            { "id": "ops", "name": "Ops", "policy": { "monthlyBudget": "1000000",
              "approvalWorkflow": { "enabled": true, "approvers": ["other@acme.com"], "requireApprovalAbove": "1000" } } }
        ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": key("sk-sales-0000001") },
            { "id": "ops-agent", "projectId": "ops", "apiKeySha256": key("sk-ops-000000001") }
        ]
    })
}

#[tokio::test]
async fn sign_in_sets_an_http_only_same_site_strict_cookie_that_acts_as_the_token() {
    let h = harness(None);
    h.put_policy().await;
    let r = h
        .call(
            Method::POST,
            "/console/api/session",
            Auth::None,
            Some(json!({ "token": ADMIN })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    for flag in [
        "; Path=/",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Max-Age=43200",
    ] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert_eq!(r.body["role"], "admin");
    assert_eq!(r.body["name"], "alice");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");

    let (cookie, csrf) = h.sign_in(ADMIN).await;
    let me = h
        .call(
            Method::GET,
            "/console/api/session",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(
        (me.status, me.body["csrfToken"].as_str()),
        (StatusCode::OK, Some(csrf.as_str()))
    );

    // The /v1 handlers see the admin: reads work, a write with the CSRF token is authored
    // by alice.
    let budgets = h
        .call(
            Method::GET,
            "/v1/budgets",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(budgets.status, StatusCode::OK);
    let mut doc = policy();
    doc["globalPolicy"]["monthlyBudget"] = json!("90000000");
    let put = h
        .call(
            Method::PUT,
            "/v1/policy",
            Auth::Session(&cookie, Some(&csrf)),
            Some(doc),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.body["author"], "alice");

    // Without the cookie: 401, as without a token.
    for path in [
        "/v1/budgets",
        "/v1/policy",
        "/v1/approvals",
        "/console/api/session",
    ] {
        let r = h.call(Method::GET, path, Auth::None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let forged = h
        .call(
            Method::GET,
            "/v1/budgets",
            Auth::Session(&"0".repeat(64), None),
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_state_changing_session_request_needs_the_csrf_token() {
    let h = harness(None);
    h.put_policy().await;
    let (cookie, csrf) = h.sign_in(ADMIN).await;
    let (_, other_csrf) = h.sign_in(ADMIN).await;
    for bad in [None, Some("nope"), Some(other_csrf.as_str())] {
        let r = h
            .call(
                Method::PUT,
                "/v1/policy",
                Auth::Session(&cookie, bad),
                Some(policy()),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad:?}");
        assert!(r.text.contains("x-pag0-csrf"), "{}", r.text);
        let r = h
            .call(
                Method::DELETE,
                "/console/api/session",
                Auth::Session(&cookie, bad),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad:?}");
    }
    // Still signed in; the right token signs out, and the cookie is cleared.
    let out = h
        .call(
            Method::DELETE,
            "/console/api/session",
            Auth::Session(&cookie, Some(&csrf)),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = h
        .call(
            Method::GET,
            "/v1/budgets",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // A bearer token needs no CSRF token (a browser never sends one by itself).
    let r = h
        .call(
            Method::PUT,
            "/v1/policy",
            Auth::Bearer(ADMIN),
            Some(policy()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn create_approval(h: &H, project: &str, client: &str) -> String {
    let r = h
        .call(
            Method::POST,
            "/v1/approvals",
            Auth::Bearer(SYNC),
            Some(json!({
                "projectId": project, "clientId": client, "method": "POST",
                "authority": "api.deepl.com", "path": "/v2/translate",
                "bodySha256": "a".repeat(64), "binding": "b".repeat(64),
                "estimatedCost": "2000", "policyVersion": 1, "requestedBy": "agent@acme.com"
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["approvalId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_approver_session_sees_its_projects_decides_them_and_gets_403_on_admin_routes() {
    let h = harness(None);
    h.put_policy().await;
    let sales = create_approval(&h, "sales-ai", "sales-agent").await;
    let ops = create_approval(&h, "ops", "ops-agent").await;
    let (cookie, csrf) = h.sign_in(LEAD_TOKEN).await;
    let me = h
        .call(
            Method::GET,
            "/console/api/session",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(
        (me.body["role"].as_str(), me.body["email"].as_str()),
        (Some("approver"), Some(LEAD))
    );

    let list = h
        .call(
            Method::GET,
            "/v1/approvals?status=pending",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<&str> = list.body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approvalId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sales.as_str()]);
    let theirs = h
        .call(
            Method::GET,
            &format!("/v1/approvals/{ops}"),
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // Admin routes: 403, reads and writes alike.
    for (m, path, body) in [
        (Method::GET, "/v1/budgets", None),
        (Method::GET, "/v1/analytics", None),
        (Method::GET, "/v1/policy", None),
        (Method::PUT, "/v1/policy", Some(policy())),
        (
            Method::POST,
            "/v1/projects",
            Some(json!({ "id": "x", "name": "X", "policy": {} })),
        ),
    ] {
        let r = h
            .call(m.clone(), path, Auth::Session(&cookie, Some(&csrf)), body)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {path}: {}", r.text);
    }
    // Another project's approval cannot be decided; its own can, with a comment.
    let r = h
        .call(
            Method::POST,
            &format!("/v1/approvals/{ops}/approve"),
            Auth::Session(&cookie, Some(&csrf)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .call(
            Method::POST,
            &format!("/v1/approvals/{sales}/approve"),
            Auth::Session(&cookie, Some(&csrf)),
            Some(json!({ "comment": "ok for Q4" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["decision"]["by"], LEAD);
    assert_eq!(r.body["decision"]["comment"], "ok for Q4");

    // An admin session reads every approval but cannot decide (as the admin token).
    let (admin, admin_csrf) = h.sign_in(ADMIN).await;
    let all = h
        .call(
            Method::GET,
            "/v1/approvals",
            Auth::Session(&admin, None),
            None,
        )
        .await;
    assert_eq!(all.body["approvals"].as_array().unwrap().len(), 2);
    let r = h
        .call(
            Method::POST,
            &format!("/v1/approvals/{ops}/deny"),
            Auth::Session(&admin, Some(&admin_csrf)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn only_admin_and_approver_tokens_sign_in_and_only_with_json() {
    let h = harness(None);
    let r = h
        .call(
            Method::POST,
            "/console/api/session",
            Auth::None,
            Some(json!({ "token": SYNC })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .call(
            Method::POST,
            "/console/api/session",
            Auth::None,
            Some(json!({ "token": "not-a-token-at-all" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    // A cross-site HTML form can only send form encodings: refused.
    let req = Request::post("/console/api/session")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={ADMIN}")))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_session_expires_when_idle_and_at_its_maximum_age() {
    let h = harness(Some("https://pag0.acme.example/"));
    let (cookie, _) = h.sign_in(ADMIN).await;
    h.clock.advance_ms(IDLE_MS - 1_000);
    let r = h
        .call(
            Method::GET,
            "/v1/budgets",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.clock.advance_ms(IDLE_MS);
    let r = h
        .call(
            Method::GET,
            "/v1/budgets",
            Auth::Session(&cookie, None),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let (kept, _) = h.sign_in(ADMIN).await;
    for _ in 0..(MAX_MS / (IDLE_MS / 2)) - 1 {
        h.clock.advance_ms(IDLE_MS / 2);
        let r = h
            .call(Method::GET, "/v1/budgets", Auth::Session(&kept, None), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    h.clock.advance_ms(IDLE_MS / 2);
    let r = h
        .call(Method::GET, "/v1/budgets", Auth::Session(&kept, None), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "signed in {MAX_MS} ms ago"
    );
}

#[tokio::test]
async fn an_https_public_url_makes_the_cookie_secure_and_links_approvals() {
    let h = harness(Some("https://pag0.acme.example/"));
    let r = h
        .call(
            Method::POST,
            "/console/api/session",
            Auth::None,
            Some(json!({ "token": ADMIN })),
        )
        .await;
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));
    assert_eq!(
        super::approval_link(Some("https://pag0.acme.example/"), "apr_1"),
        Some("https://pag0.acme.example/console/#/approvals/apr_1".to_string())
    );
    assert_eq!(super::approval_link(None, "apr_1"), None);
}

#[tokio::test]
async fn the_console_files_are_served_with_a_strict_content_security_policy() {
    let h = harness(None);
    let r = h.call(Method::GET, "/console", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers[header::LOCATION], "/console/");
    let r = h.call(Method::GET, "/console/", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(r.text.contains("Pag0"), "{}", r.text);
    let etag = r.headers[header::ETAG].to_str().unwrap().to_string();
    let req = Request::get("/console/")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let r = h
        .call(Method::GET, "/console/no-such-file.js", Auth::None, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .call(Method::GET, "/console/../Cargo.toml", Auth::None, None)
        .await;
    assert_ne!(r.status, StatusCode::OK);
}
