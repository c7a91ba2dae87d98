//! The document agrees with the server, checked route by route through the router:
//!
//! - every request body: `{}` is refused (400) exactly when the schema lists `required`
//!   fields, leaving out any one required field is refused, an unknown field is refused exactly
//!   when the schema says `additionalProperties: false` (also with a `null` value), every
//!   body schema says which it is, and a JSON array of the same values is refused;
//! - every status the tests provoke (no policy yet, no credential, another role's credential,
//!   unknown ids, bad path and query parameters, unknown query parameters, conflicts) is listed
//!   for its operation, with the documented content type;
//! - regression tests for the eight disagreements the schema fuzzer found (issue 20).
//!
//! `make schemathesis` fuzzes the same document against a real sidecar.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use pag0_policy::approval::body_sha256_hex;
use serde_json::{json, Map, Value};

use crate::testing::{tokens, Harness, Resp, ALICE, SYNC};

const LEAD: &str = "lead-approver-token-0004";
const KEY: &str = "pag0_sales_agent_key_0001";
const UNKNOWN: &str = "pag0UnknownField";

fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "alerts": { "channels": ["email"], "recipients": ["cfo@acme.com"] },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [
            { "id": "sales-ai", "policy": { "approvalWorkflow": { "enabled": true,
                "approvers": ["lead@acme.com"], "requireApprovalAbove": "100000" } } },
            { "id": "spare" }
        ],
        "clients": [ { "id": "sales-agent", "projectId": "sales-ai",
                       "apiKeySha256": pag0_policy::validate::api_key_sha256_hex(KEY) } ]
    })
}

fn harness() -> Harness {
    let mut t = tokens();
    t.add_approver_spec(&format!("lead@acme.com={LEAD}"))
        .unwrap();
    Harness::new(t)
}

fn create_approval_body() -> Value {
    json!({
        "projectId": "sales-ai", "clientId": "sales-agent",
        "method": "POST", "authority": "api.openai.com", "path": "/v1/chat/completions",
        "bodySha256": body_sha256_hex(b"{}"), "binding": "ab".repeat(32),
        "estimatedCost": "600000", "policyVersion": 1, "requestedBy": "agent@acme.com"
    })
}

/// The router under test and the document it serves.
struct Api {
    h: Harness,
    doc: Value,
}

impl Api {
    async fn new() -> Api {
        let h = harness();
        let r = h.call(Method::GET, "/v1/openapi.json", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        Api { h, doc: r.body }
    }

    fn op(&self, method: &str, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        op
    }

    /// `resp` is one of the answers the document lists for the operation, with its content type.
    fn documented(&self, method: &str, template: &str, resp: &Resp, what: &str) {
        let status = resp.status.as_u16().to_string();
        let listed = &self.op(method, template)["responses"][status.as_str()];
        assert!(
            listed.is_object(),
            "{method} {template} ({what}) answered {status}, which the document does not list: {}",
            resp.text
        );
        if let Some(content) = listed["content"].as_object() {
            let ctype = resp
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let media = ctype.split(';').next().unwrap_or("").trim();
            assert!(
                content.contains_key(media),
                "{method} {template} ({what}) {status}: content type {ctype:?} not in {:?}",
                content.keys().collect::<Vec<_>>()
            );
        }
    }

    /// A request, checked against the document.
    #[allow(clippy::too_many_arguments)]
    async fn hit(
        &self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        what: &str,
    ) -> Resp {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = self.h.call(m, path, token, body).await;
        self.documented(method, template, &r, what);
        r
    }

    /// The request body schema of an operation, `$ref`s followed.
    fn body_schema(&self, method: &str, template: &str) -> Value {
        let s = &self.op(method, template)["requestBody"]["content"]["application/json"]["schema"];
        self.resolve(s)
    }

    fn resolve(&self, s: &Value) -> Value {
        match s["$ref"].as_str() {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                self.resolve(&self.doc["components"]["schemas"][name])
            }
            None => s.clone(),
        }
    }

    async fn create_approval(&self) -> String {
        let r = self
            .h
            .call(
                Method::POST,
                "/v1/approvals",
                Some(SYNC),
                Some(create_approval_body()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["approvalId"].as_str().unwrap().to_string()
    }
}

/// One operation with a body: where to send it, as whom, a body the server accepts, and
/// the status that body gets.
struct BodyCase {
    method: &'static str,
    template: &'static str,
    path: String,
    token: Option<&'static str>,
    body: Value,
    expect: u16,
    /// Where `{}` goes when it is accepted and used up the resource (a decided approval).
    fresh: Option<String>,
}

fn with_field(body: &Value, key: &str, v: Value) -> Value {
    let mut b = body.clone();
    b.as_object_mut().unwrap().insert(key.into(), v);
    b
}

fn without_field(body: &Value, key: &str) -> Value {
    let mut b = body.clone();
    b.as_object_mut().unwrap().remove(key);
    b
}

#[tokio::test]
async fn every_body_schema_says_what_the_server_requires_and_refuses() {
    let api = Api::new().await;
    let r = api.h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (consume, approve, deny, approve2, deny2) = (
        api.create_approval().await,
        api.create_approval().await,
        api.create_approval().await,
        api.create_approval().await,
        api.create_approval().await,
    );
    let cases = vec![
        BodyCase {
            method: "post",
            template: "/v1/projects",
            path: "/v1/projects".into(),
            token: Some(ALICE),
            body: json!({ "id": "new-proj", "name": "New", "policy": { "monthlyBudget": 1000 } }),
            expect: 201,
            fresh: None,
        },
        BodyCase {
            method: "patch",
            template: "/v1/projects/{id}",
            path: "/v1/projects/sales-ai".into(),
            token: Some(ALICE),
            body: json!({ "name": "Sales AI 2" }),
            expect: 200,
            fresh: None,
        },
        BodyCase {
            method: "post",
            template: "/v1/clients",
            path: "/v1/clients".into(),
            token: Some(ALICE),
            body: json!({ "id": "new-agent", "projectId": "sales-ai", "tags": { "costCenter": "CC-1" } }),
            expect: 201,
            fresh: None,
        },
        BodyCase {
            method: "patch",
            template: "/v1/clients/{id}",
            path: "/v1/clients/sales-agent".into(),
            token: Some(ALICE),
            body: json!({ "name": "Agent" }),
            expect: 200,
            fresh: None,
        },
        BodyCase {
            method: "post",
            template: "/v1/sync",
            path: "/v1/sync".into(),
            token: Some(SYNC),
            body: json!({ "instanceId": "i-1", "seq": 1 }),
            expect: 200,
            fresh: None,
        },
        BodyCase {
            method: "post",
            template: "/v1/approvals",
            path: "/v1/approvals".into(),
            token: Some(SYNC),
            body: create_approval_body(),
            expect: 201,
            fresh: None,
        },
        BodyCase {
            method: "post",
            template: "/v1/approvals/{id}/consume",
            path: format!("/v1/approvals/{consume}/consume"),
            token: Some(SYNC),
            body: json!({ "binding": "ab".repeat(32), "estimatedCost": "600000", "policyVersion": 1 }),
            expect: 403,
            fresh: None,
        },
        BodyCase {
            method: "post",
            template: "/v1/approvals/{id}/approve",
            path: format!("/v1/approvals/{approve}/approve"),
            token: Some(LEAD),
            body: json!({ "comment": "ok" }),
            expect: 200,
            fresh: Some(format!("/v1/approvals/{approve2}/approve")),
        },
        BodyCase {
            method: "post",
            template: "/v1/approvals/{id}/deny",
            path: format!("/v1/approvals/{deny}/deny"),
            token: Some(LEAD),
            body: json!({ "comment": "no" }),
            expect: 200,
            fresh: Some(format!("/v1/approvals/{deny2}/deny")),
        },
        BodyCase {
            method: "post",
            template: "/v1/reports/send",
            path: "/v1/reports/send".into(),
            token: Some(ALICE),
            body: json!({ "recipient": "cfo@acme.com" }),
            expect: 503,
            fresh: None,
        },
        // Last: it replaces the document the cases above work on. Fields that do not refer to
        // each other, so that leaving out any optional one still validates.
        BodyCase {
            method: "put",
            template: "/v1/policy",
            path: "/v1/policy".into(),
            token: Some(ALICE),
            body: json!({ "orgId": "acme-corp", "timezone": "UTC", "globalPolicy": { "monthlyBudget": "100000000" },
                                 "alerts": { "channels": ["email"], "recipients": ["cfo@acme.com"] },
                                 "endpoints": [ { "host": "api.openai.com", "category": "llm" } ],
                                 "projects": [ { "id": "p" } ], "clients": [] }),
            expect: 200,
            fresh: None,
        },
        BodyCase {
            method: "post",
            template: "/console/api/session",
            path: "/console/api/session".into(),
            token: None,
            body: json!({ "token": ALICE }),
            expect: 200,
            fresh: None,
        },
    ];

    // Every documented body is covered here.
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in api.doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("requestBody").is_some() {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    let mut covered: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c.method.to_string(), c.template.to_string()))
        .collect();
    documented.sort();
    covered.sort();
    assert_eq!(documented, covered, "a body route without a case here");

    for c in &cases {
        let (m, t) = (c.method, c.template);
        let schema = api.body_schema(m, t);
        assert_eq!(schema["type"], "object", "{m} {t}");
        let closed = match schema.get("additionalProperties") {
            Some(Value::Bool(b)) => !*b,
            other => panic!("{m} {t}: additionalProperties must say true or false, not {other:?}"),
        };
        let required: Vec<String> = schema["required"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let props: Map<String, Value> = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for f in &required {
            assert!(
                props.contains_key(f),
                "{m} {t}: required {f} is not a property"
            );
        }
        for k in c.body.as_object().unwrap().keys() {
            assert!(
                props.contains_key(k),
                "{m} {t}: the case sends {k}, not a documented property"
            );
        }

        // An unknown field, first (a refusal changes nothing; an accepted one is harmless).
        for v in [json!(1), Value::Null] {
            let r = api
                .hit(
                    m,
                    t,
                    &c.path,
                    c.token,
                    Some(with_field(&c.body, UNKNOWN, v.clone())),
                    "unknown field",
                )
                .await;
            if closed {
                assert_eq!(
                    r.status,
                    StatusCode::BAD_REQUEST,
                    "{m} {t}: additionalProperties false, {UNKNOWN}={v} accepted: {}",
                    r.text
                );
                assert!(
                    r.text.contains(UNKNOWN),
                    "{m} {t}: the refusal names the field: {}",
                    r.text
                );
            } else {
                assert_ne!(
                    r.status,
                    StatusCode::BAD_REQUEST,
                    "{m} {t}: additionalProperties true, {UNKNOWN} refused: {}",
                    r.text
                );
            }
        }
        // `{}`: refused exactly when something is required.
        let empty_path = c.fresh.as_deref().unwrap_or(&c.path);
        let r = api
            .hit(m, t, empty_path, c.token, Some(json!({})), "{}")
            .await;
        if required.is_empty() {
            assert_ne!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{m} {t}: nothing required, {{}} refused: {}",
                r.text
            );
        } else {
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{m} {t}: requires {required:?}, {{}} accepted: {}",
                r.text
            );
        }
        // Each required field on its own.
        for f in &required {
            let r = api
                .hit(
                    m,
                    t,
                    &c.path,
                    c.token,
                    Some(without_field(&c.body, f)),
                    "a required field left out",
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{m} {t}: without required {f}: {}",
                r.text
            );
        }
        // The body's values as a JSON array (serde would fill a struct from it by position).
        let values: Vec<Value> = c.body.as_object().unwrap().values().cloned().collect();
        let r = api
            .hit(
                m,
                t,
                &c.path,
                c.token,
                Some(Value::Array(values)),
                "an array",
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{m} {t}: an array accepted: {}",
            r.text
        );
        // A body that is not JSON.
        let r = api
            .h
            .send(
                Request::builder()
                    .method(Method::from_bytes(m.to_uppercase().as_bytes()).unwrap())
                    .uri(&c.path)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(
                        header::AUTHORIZATION,
                        format!("Bearer {}", c.token.unwrap_or("-")),
                    )
                    .body(Body::from("{not json"))
                    .unwrap(),
            )
            .await;
        api.documented(m, t, &r, "not JSON");
        assert!(
            r.status.is_client_error(),
            "{m} {t}: not JSON: {}",
            r.status
        );
        // And the body itself is accepted as the case says.
        let r = api
            .hit(m, t, &c.path, c.token, Some(c.body.clone()), "a valid body")
            .await;
        assert_eq!(r.status.as_u16(), c.expect, "{m} {t}: {}", r.text);
        // The converse: a field the document calls optional may be left out (a create under
        // a new id, else it would be 409 before the body is validated).
        for k in c
            .body
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !required.contains(k))
        {
            let mut b = without_field(&c.body, k);
            if let (Some(id), "post") = (c.body["id"].as_str(), m) {
                b["id"] = json!(format!("{id}-without-{k}"));
            }
            let r = api
                .hit(
                    m,
                    t,
                    &c.path,
                    c.token,
                    Some(b),
                    "an optional field left out",
                )
                .await;
            assert_ne!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{m} {t}: optional {k} left out, refused: {}",
                r.text
            );
        }
    }
}

fn concrete(template: &str) -> String {
    template
        .replace("{version}", "1")
        .replace("{id}", "no-such-id")
}

/// The credential each operation is called with (`None`: a public route).
fn credential(op: &Value) -> Option<&'static str> {
    let schemes: Vec<&str> = op["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
        .collect();
    match schemes.first() {
        Some(&"adminToken") => Some(ALICE),
        Some(&"syncSecret") => Some(SYNC),
        Some(&"approverToken") => Some(LEAD),
        _ => None,
    }
}

#[tokio::test]
async fn every_status_the_routes_answer_is_documented() {
    let api = Api::new().await;
    let ops: Vec<(String, String, Value)> = api.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .map(|(m, o)| (m.clone(), p.clone(), o.clone()))
                .collect::<Vec<_>>()
        })
        .collect();

    // Before any policy: each with its own credential, no body and an empty object.
    for (m, t, op) in &ops {
        let cred = credential(op);
        api.hit(m, t, &concrete(t), cred, None, "no policy, no body")
            .await;
        if op.get("requestBody").is_some() {
            api.hit(m, t, &concrete(t), cred, Some(json!({})), "no policy, {}")
                .await;
        }
    }
    let r = api.h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    for (m, t, op) in &ops {
        let secured = !op["security"].as_array().unwrap().is_empty();
        // No credential; a wrong one; another role's.
        let r = api
            .hit(m, t, &concrete(t), None, None, "no credential")
            .await;
        if secured && t != "/console/api/session" {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {t}");
        }
        api.hit(
            m,
            t,
            &concrete(t),
            Some("not-a-token-of-this-sidecar"),
            None,
            "unknown token",
        )
        .await;
        // Another role's token: 403 wherever the operation does not list that role's scheme.
        let (other, scheme) = if credential(op) == Some(SYNC) {
            (ALICE, "adminToken")
        } else {
            (SYNC, "syncSecret")
        };
        let r = api
            .hit(m, t, &concrete(t), Some(other), None, "another role")
            .await;
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
            .collect();
        if secured && t.starts_with("/v1/") && !schemes.contains(&scheme) {
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{m} {t} with the {scheme} of another role: {}",
                r.text
            );
        }
        // With the policy: unknown ids, no body.
        api.hit(
            m,
            t,
            &concrete(t),
            credential(op),
            None,
            "unknown id, no body",
        )
        .await;

        // Query parameters: out of their bounds, not a number, an unknown one.
        let params: Vec<Value> = op["parameters"].as_array().cloned().unwrap_or_default();
        let query: Vec<&Value> = params.iter().filter(|p| p["in"] == "query").collect();
        for p in &query {
            let name = p["name"].as_str().unwrap();
            let s = &p["schema"];
            let mut bad = Vec::new();
            if let Some(min) = s["minimum"].as_i64() {
                bad.push((min - 1).to_string());
            }
            if let Some(max) = s["maximum"].as_i64() {
                bad.push((max + 1).to_string());
            }
            if s["type"] == "integer" {
                bad.push("ten".into());
            }
            if let Some(e) = s["enum"].as_array() {
                assert!(!e.contains(&json!("pag0-not-a-value")));
                bad.push("pag0-not-a-value".into());
            }
            for v in bad {
                let path = format!("{}?{name}={v}", concrete(t));
                let r = api
                    .hit(m, t, &path, credential(op), None, "a bad query value")
                    .await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m} {path}: {}", r.text);
            }
        }
        if !query.is_empty() {
            let path = format!("{}?{UNKNOWN}=1", concrete(t));
            let r = api
                .hit(
                    m,
                    t,
                    &path,
                    credential(op),
                    None,
                    "an unknown query parameter",
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m} {path}: {}", r.text);
        }
    }

    // Named refusals.
    let r = api
        .hit(
            "delete",
            "/v1/projects/{id}",
            "/v1/projects/sales-ai",
            Some(ALICE),
            None,
            "in use",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = api
        .hit(
            "post",
            "/v1/projects",
            "/v1/projects",
            Some(ALICE),
            Some(json!({ "id": "sales-ai" })),
            "exists",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    for (v, want) in [
        ("abc", 400),
        ("99", 404),
        ("1", 200),
        ("99999999999999999999", 400),
    ] {
        let r = api
            .hit(
                "get",
                "/v1/policy/versions/{version}",
                &format!("/v1/policy/versions/{v}"),
                Some(ALICE),
                None,
                "version",
            )
            .await;
        assert_eq!(r.status.as_u16(), want, "version {v}: {}", r.text);
    }
    for (v, want) in [
        ("abc", 400),
        ("+1", 400),
        ("W/W/1", 400),
        ("\"99\"", 409),
        ("W/\"99\"", 409),
        ("99", 409),
    ] {
        let r = api
            .h
            .send(
                Request::builder()
                    .method(Method::PUT)
                    .uri("/v1/policy")
                    .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                    .header(header::IF_MATCH, v)
                    .body(Body::from(policy().to_string()))
                    .unwrap(),
            )
            .await;
        api.documented("put", "/v1/policy", &r, "If-Match");
        assert_eq!(r.status.as_u16(), want, "If-Match {v}: {}", r.text);
        // And the document's pattern says the same of it.
        let pattern = api.op("put", "/v1/policy")["parameters"][0]["schema"]["pattern"]
            .as_str()
            .unwrap();
        let re = regex::Regex::new(pattern).unwrap();
        assert_eq!(
            re.is_match(v),
            want != 400,
            "If-Match {v} against {pattern}"
        );
    }
    let r = api
        .hit(
            "post",
            "/v1/approvals/{id}/approve",
            "/v1/approvals/no-such/approve",
            Some(LEAD),
            None,
            "unknown approval",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = api
        .hit(
            "post",
            "/v1/approvals/{id}/consume",
            "/v1/approvals/no-such/consume",
            Some(SYNC),
            Some(json!({ "binding": "ab".repeat(32), "estimatedCost": "1", "policyVersion": 1 })),
            "unknown approval",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = api
        .hit("get", "/console", "/console", None, None, "redirect")
        .await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
}

#[tokio::test]
async fn with_the_store_down_every_answer_is_documented() {
    let h = Harness::over(
        std::sync::Arc::new(crate::error::tests::DownStore),
        {
            let mut t = tokens();
            t.add_approver_spec(&format!("lead@acme.com={LEAD}"))
                .unwrap();
            t
        },
        tempfile::tempdir().unwrap(),
    );
    let doc = crate::openapi::document();
    let api = Api { h, doc };
    let mut unavailable = 0;
    for (t, ops) in api.doc["paths"].as_object().unwrap().clone() {
        for (m, op) in ops.as_object().unwrap() {
            let body = op.get("requestBody").map(|_| json!({}));
            let r = api
                .hit(m, &t, &concrete(&t), credential(op), body, "store down")
                .await;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                unavailable += 1;
            }
        }
    }
    // Most routes read the store before anything else.
    assert!(unavailable >= 15, "{unavailable} operations answered 503");
}

// --- the eight disagreements schemathesis found (issue 20), one test each ---

async fn with_policy() -> Api {
    let api = Api::new().await;
    let r = api.h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    api
}

fn required_of(api: &Api, m: &str, t: &str) -> Vec<String> {
    api.body_schema(m, t)["required"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn post_clients_empty_object_is_refused_and_documented_as_such() {
    let api = with_policy().await;
    assert_eq!(
        required_of(&api, "post", "/v1/clients"),
        ["id", "projectId"]
    );
    let r = api
        .hit(
            "post",
            "/v1/clients",
            "/v1/clients",
            Some(ALICE),
            Some(json!({})),
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn post_projects_empty_object_is_refused_and_documented_as_such() {
    let api = with_policy().await;
    assert_eq!(required_of(&api, "post", "/v1/projects"), ["id"]);
    let r = api
        .hit(
            "post",
            "/v1/projects",
            "/v1/projects",
            Some(ALICE),
            Some(json!({})),
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn put_policy_empty_object_is_refused_and_documented_as_such() {
    let api = with_policy().await;
    assert_eq!(required_of(&api, "put", "/v1/policy"), ["orgId"]);
    let r = api
        .hit(
            "put",
            "/v1/policy",
            "/v1/policy",
            Some(ALICE),
            Some(json!({})),
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("orgId"), "{}", r.text);
}

#[tokio::test]
async fn patch_project_with_an_unknown_field_is_refused_even_as_null() {
    let api = with_policy().await;
    assert_eq!(
        api.body_schema("patch", "/v1/projects/{id}")["additionalProperties"],
        false
    );
    for v in [json!("x"), Value::Null] {
        let r = api
            .hit(
                "patch",
                "/v1/projects/{id}",
                "/v1/projects/sales-ai",
                Some(ALICE),
                Some(json!({ "budget": v })),
                "unknown",
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.text.contains("project.budget: unknown field"),
            "{}",
            r.text
        );
    }
    // Nothing was written: still version 1.
    let r = api
        .h
        .call(Method::GET, "/v1/policy/versions", Some(ALICE), None)
        .await;
    assert_eq!(r.body["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn patch_client_with_an_unknown_field_is_refused_even_as_null() {
    let api = with_policy().await;
    assert_eq!(
        api.body_schema("patch", "/v1/clients/{id}")["additionalProperties"],
        false
    );
    for v in [json!("x"), Value::Null] {
        let r = api
            .hit(
                "patch",
                "/v1/clients/{id}",
                "/v1/clients/sales-agent",
                Some(ALICE),
                Some(json!({ "apiKey": v })),
                "unknown",
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.text.contains("client.apiKey: unknown field"),
            "{}",
            r.text
        );
    }
    // apiKeySha256 keeps its own answer.
    let r = api
        .hit(
            "patch",
            "/v1/clients/{id}",
            "/v1/clients/sales-agent",
            Some(ALICE),
            Some(json!({ "apiKeySha256": "00" })),
            "key",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "KEY_IMMUTABLE");
}

#[tokio::test]
async fn delete_a_project_still_in_use_answers_a_documented_400() {
    let api = with_policy().await;
    let r = api
        .hit(
            "delete",
            "/v1/projects/{id}",
            "/v1/projects/sales-ai",
            Some(ALICE),
            None,
            "in use",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    // An unused one goes.
    let r = api
        .hit(
            "delete",
            "/v1/projects/{id}",
            "/v1/projects/spare",
            Some(ALICE),
            None,
            "unused",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test]
async fn get_a_policy_version_that_is_not_a_number_answers_a_documented_400() {
    let api = with_policy().await;
    let param = &api.op("get", "/v1/policy/versions/{version}")["parameters"][0];
    assert_eq!(param["schema"]["type"], "integer");
    let r = api
        .hit(
            "get",
            "/v1/policy/versions/{version}",
            "/v1/policy/versions/latest",
            Some(ALICE),
            None,
            "bad",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "BAD_VERSION");
}
