//! Router tests of the approval workflow without a socket (`oneshot`), on SQLite with a
//! manual clock. The store contract (both backends, concurrency) is in store/contract.rs; real
//! Slack/SMTP receivers are in tests/approvals.rs.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use pag0_policy::approval::{body_sha256_hex, request_binding};
use pag0_policy::RequestHead;
use serde_json::{json, Value};

use crate::testing::{code, tokens, Harness, Resp, ALICE, SYNC, T0};

const LEAD: &str = "lead-approver-token-0004";
const AGENT_APPROVER: &str = "agent-approver-token-0005";
const BOSS: &str = "boss-other-project-0006";
const KEY: &str = "pag0_sales_agent_key_0001";
const OTHER_KEY: &str = "pag0_other_agent_key_0002";
const BODY: &[u8] = br#"{"model":"gpt-4o","max_tokens":4000}"#;

fn policy() -> Value {
    let hash = pag0_policy::validate::api_key_sha256_hex;
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [
            { "id": "sales-ai", "policy": { "approvalWorkflow": { "enabled": true,
                "approvers": ["lead@acme.com", "Agent@acme.com"], "requireApprovalAbove": "100000", "expiresAfter": 3600 } } },
            { "id": "other", "policy": { "approvalWorkflow": { "enabled": true, "approvers": ["boss@other.com"] } } }
        ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": hash(KEY) },
            { "id": "other-agent", "projectId": "other", "apiKeySha256": hash(OTHER_KEY) }
        ]
    })
}

async fn harness() -> Harness {
    let mut tokens = tokens();
    tokens
        .add_approver_spec(&format!("lead@acme.com={LEAD}"))
        .unwrap();
    tokens
        .add_approver_spec(&format!("agent@acme.com={AGENT_APPROVER}"))
        .unwrap();
    tokens
        .add_approver_spec(&format!("boss@other.com={BOSS}"))
        .unwrap();
    let h = Harness::new(tokens);
    let r = h
        .call(Method::PUT, "/v1/policy", Some(ALICE), Some(policy()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    h
}

fn binding(body: &[u8]) -> String {
    let head = RequestHead {
        api_key: Some(KEY),
        method: "POST",
        authority: "api.openai.com",
        path: "/v1/chat/completions",
        requires_approval: false,
    };
    request_binding("sales-agent", &head, body)
}

fn create_body() -> Value {
    json!({
        "projectId": "sales-ai", "clientId": "sales-agent",
        "method": "POST", "authority": "api.openai.com", "path": "/v1/chat/completions",
        "bodySha256": body_sha256_hex(BODY), "binding": binding(BODY),
        "estimatedCost": "600000", "policyVersion": 1,
        "justification": "Q4 report", "requestedBy": "agent@acme.com"
    })
}

fn replay(body: &[u8]) -> Value {
    json!({ "binding": binding(body), "estimatedCost": "600000", "policyVersion": 1 })
}

impl Harness {
    async fn create(&self) -> String {
        let r = self
            .call(
                Method::POST,
                "/v1/approvals",
                Some(SYNC),
                Some(create_body()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["approvalId"].as_str().unwrap().to_string()
    }

    async fn decide(&self, id: &str, verb: &str, token: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/v1/approvals/{id}/{verb}"),
            Some(token),
            Some(json!({ "comment": "go" })),
        )
        .await
    }

    async fn consume(&self, id: &str, body: Value) -> Resp {
        self.call(
            Method::POST,
            &format!("/v1/approvals/{id}/consume"),
            Some(SYNC),
            Some(body),
        )
        .await
    }

    async fn as_agent(&self, id: &str, key: &str) -> Resp {
        let req = Request::builder()
            .uri(format!("/v1/approvals/{id}"))
            .header("x-pag0-api-key", key)
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }
}

#[tokio::test]
async fn create_approve_replay_once_then_used() {
    let h = harness().await;
    let r = h
        .call(
            Method::POST,
            "/v1/approvals",
            Some(SYNC),
            Some(create_body()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["approvalId"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("apr_") && id.len() == 44,
        "160 random bits in hex: {id}"
    );
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["projectId"], "sales-ai");
    assert_eq!(r.body["estimatedCost"], "600000");
    // The project's expiresAfter (3600 s), not the default day.
    assert_eq!(r.body["expiresAt"], crate::clock::rfc3339(T0 + 3_600_000));
    assert_eq!(
        (
            r.body["justification"].as_str(),
            r.body["requestedBy"].as_str()
        ),
        (Some("Q4 report"), Some("agent@acme.com"))
    );

    // The agent polls with its own API key; another client's key cannot see it.
    let polled = h.as_agent(&id, KEY).await;
    assert_eq!(
        (polled.status, polled.body["status"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{}",
        polled.text
    );
    assert_eq!(
        h.as_agent(&id, OTHER_KEY).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.as_agent(&id, "not-a-key").await.status,
        StatusCode::UNAUTHORIZED
    );

    // The queue: the project's approver sees it, another project's approver does not.
    let q = h
        .call(
            Method::GET,
            "/v1/approvals?status=pending",
            Some(LEAD),
            None,
        )
        .await;
    assert_eq!(
        q.body["approvals"].as_array().unwrap().len(),
        1,
        "{}",
        q.text
    );
    let q = h
        .call(
            Method::GET,
            "/v1/approvals?status=pending",
            Some(BOSS),
            None,
        )
        .await;
    assert_eq!(
        q.body["approvals"].as_array().unwrap().len(),
        0,
        "{}",
        q.text
    );
    let q = h
        .call(
            Method::GET,
            "/v1/approvals?status=pending",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(q.body["approvals"][0]["approvalId"], id.as_str());

    // Replaying before a decision is refused, with its own code.
    let early = h.consume(&id, replay(BODY)).await;
    assert_eq!(
        (early.status, code(&early)),
        (StatusCode::FORBIDDEN, "APPROVAL_PENDING")
    );

    h.clock.advance_ms(90_000);
    let ok = h.decide(&id, "approve", LEAD).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["status"], "approved");
    assert_eq!(ok.body["decision"]["by"], "lead@acme.com");
    assert_eq!(ok.body["decision"]["comment"], "go");
    let twice = h.decide(&id, "deny", LEAD).await;
    assert_eq!(
        (twice.status, code(&twice)),
        (StatusCode::CONFLICT, "ALREADY_DECIDED")
    );

    let used = h.consume(&id, replay(BODY)).await;
    assert_eq!(used.status, StatusCode::OK, "{}", used.text);
    assert_eq!(used.body["status"], "used");
    let again = h.consume(&id, replay(BODY)).await;
    assert_eq!(
        (again.status, code(&again)),
        (StatusCode::FORBIDDEN, "APPROVAL_USED")
    );
    assert_eq!(again.body["error"]["projectId"], "sales-ai");

    let m = h.call(Method::GET, "/metrics", None, None).await.text;
    assert!(
        m.contains("pag0_approvals_time_to_decision_seconds_count 1"),
        "{m}"
    );
    assert!(
        m.contains("pag0_approvals_time_to_decision_seconds_bucket{le=\"300\"} 1"),
        "90 s to decide: {m}"
    );
    assert!(m.contains("pag0_approvals_pending 0"), "{m}");
    assert!(
        m.contains("pag0_approvals_total{event=\"consumed\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_denied_approval_cannot_be_replayed() {
    let h = harness().await;
    let id = h.create().await;
    let m = h.call(Method::GET, "/metrics", None, None).await.text;
    assert!(m.contains("pag0_approvals_pending 1"), "{m}");
    let r = h.decide(&id, "deny", LEAD).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("denied")),
        "{}",
        r.text
    );
    assert_eq!(r.body["decision"]["approved"], false);
    let r = h.consume(&id, replay(BODY)).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::FORBIDDEN, "APPROVAL_DENIED")
    );
}

#[tokio::test]
async fn another_body_or_id_is_a_mismatch_and_leaves_the_approval_usable() {
    let h = harness().await;
    let id = h.create().await;
    assert_eq!(h.decide(&id, "approve", LEAD).await.status, StatusCode::OK);
    let other = h
        .consume(&id, replay(br#"{"model":"gpt-4o","max_tokens":8000}"#))
        .await;
    assert_eq!(
        (other.status, code(&other)),
        (StatusCode::FORBIDDEN, "APPROVAL_MISMATCH"),
        "{}",
        other.text
    );
    let dearer = h
        .consume(
            &id,
            json!({ "binding": binding(BODY), "estimatedCost": "600001", "policyVersion": 1 }),
        )
        .await;
    assert_eq!(code(&dearer), "APPROVAL_MISMATCH");
    let unknown = h
        .consume("apr_0000000000000000000000000000000000000000", replay(BODY))
        .await;
    assert_eq!(code(&unknown), "APPROVAL_MISMATCH");
    assert_eq!(
        h.consume(&id, replay(BODY)).await.status,
        StatusCode::OK,
        "the real replay still passes"
    );
}

#[tokio::test]
async fn approvals_expire_by_the_sidecar_clock() {
    let h = harness().await;
    let approved = h.create().await;
    let pending = h.create().await;
    assert_eq!(
        h.decide(&approved, "approve", LEAD).await.status,
        StatusCode::OK
    );
    h.clock.advance_ms(3_600_000);
    let r = h.consume(&approved, replay(BODY)).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::FORBIDDEN, "APPROVAL_EXPIRED")
    );
    let r = h.decide(&pending, "approve", LEAD).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::CONFLICT, "APPROVAL_EXPIRED")
    );
    let r = h
        .call(
            Method::GET,
            &format!("/v1/approvals/{pending}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "expired");
    let r = h
        .call(
            Method::GET,
            "/v1/approvals?status=expired",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(
        r.body["approvals"].as_array().unwrap().len(),
        2,
        "{}",
        r.text
    );
    let r = h
        .call(
            Method::GET,
            "/v1/approvals?status=pending",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(
        r.body["approvals"].as_array().unwrap().len(),
        0,
        "{}",
        r.text
    );
}

#[tokio::test]
async fn only_listed_approvers_other_than_the_requester_decide() {
    let h = harness().await;
    let id = h.create().await;
    for (token, why) in [
        (BOSS, "approver of another project"),
        (AGENT_APPROVER, "listed approver, but the requester"),
        (ALICE, "admins list and read, approver tokens decide"),
        (SYNC, "the filter"),
    ] {
        for verb in ["approve", "deny"] {
            let r = h.decide(&id, verb, token).await;
            assert_eq!(
                (r.status, code(&r)),
                (StatusCode::FORBIDDEN, "FORBIDDEN"),
                "{why}: {}",
                r.text
            );
        }
    }
    assert_eq!(
        h.decide(&id, "approve", "no-such-token-000000")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Nothing was decided by the refused calls.
    let r = h
        .call(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(LEAD),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "pending");
    // Removing the lead from the project's approvers in the CURRENT policy takes effect at once.
    let mut doc = policy();
    doc["projects"][0]["policy"]["approvalWorkflow"]["approvers"] = json!(["boss@other.com"]);
    assert_eq!(
        h.call(Method::PUT, "/v1/policy", Some(ALICE), Some(doc))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.decide(&id, "approve", LEAD).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(h.decide(&id, "approve", BOSS).await.status, StatusCode::OK);
}

#[tokio::test]
async fn only_the_filter_creates_and_consumes() {
    let h = harness().await;
    for token in [ALICE, LEAD] {
        let r = h
            .call(
                Method::POST,
                "/v1/approvals",
                Some(token),
                Some(create_body()),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = h
            .call(
                Method::POST,
                "/v1/approvals/apr_x/consume",
                Some(token),
                Some(replay(BODY)),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        h.call(Method::GET, "/v1/approvals", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_bad_create_lists_every_problem() {
    let h = harness().await;
    let mut body = create_body();
    body["binding"] = json!("xyz");
    body["clientId"] = json!("other-agent");
    body["callbackUrl"] = json!("file:///etc/passwd");
    let r = h
        .call(Method::POST, "/v1/approvals", Some(SYNC), Some(body))
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::BAD_REQUEST, "BAD_APPROVAL"),
        "{}",
        r.text
    );
    let details = r.body["error"]["details"].to_string();
    for field in ["binding:", "clientId:", "callbackUrl:"] {
        assert!(details.contains(field), "{field} in {details}");
    }
    let r = h
        .call(Method::GET, "/v1/approvals?status=bogus", Some(ALICE), None)
        .await;
    assert_eq!(code(&r), "BAD_QUERY");
}

#[tokio::test]
async fn approver_tokens_reach_the_approval_routes_only() {
    let h = harness().await;
    for path in ["/v1/policy", "/v1/budgets", "/v1/clients"] {
        let r = h.call(Method::GET, path, Some(LEAD), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let r = h
        .call(
            Method::POST,
            "/v1/sync",
            Some(LEAD),
            Some(json!({ "instanceId": "x", "seq": 1 })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[test]
fn approver_token_flags() {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from([
        "pag0-sidecar",
        "--approver-token",
        "Lead@Acme.com=lead-approver-token-0004",
    ])
    .unwrap();
    let tokens = crate::cli::tokens_from(&cli.serve).unwrap();
    let p = tokens.lookup(LEAD).unwrap();
    assert_eq!(
        p.role,
        crate::Role::Approver {
            email: "lead@acme.com".into()
        }
    );
    for bad in [
        "lead=lead-approver-token-0004",
        "lead@acme.com=short",
        "lead@acme.com",
    ] {
        let cli =
            crate::cli::Cli::try_parse_from(["pag0-sidecar", "--approver-token", bad]).unwrap();
        assert!(crate::cli::tokens_from(&cli.serve).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_failing_notification_never_fails_the_call() {
    let h = harness().await;
    let mut doc = policy();
    // Nothing listens on the discard port, and this sidecar has no SMTP relay.
    doc["alerts"] =
        json!({ "channels": ["email", "slack"], "slackWebhookUrl": "http://127.0.0.1:9/slack" });
    assert_eq!(
        h.call(Method::PUT, "/v1/policy", Some(ALICE), Some(doc))
            .await
            .status,
        StatusCode::OK
    );
    let id = h.create().await;
    assert_eq!(h.decide(&id, "approve", LEAD).await.status, StatusCode::OK);
    // Both deliveries were tried and counted as failed (bounded wait: they run detached).
    let wanted = [
        "pag0_notifications_total{channel=\"email\",outcome=\"failed\"} 1",
        "pag0_notifications_total{channel=\"slack\",outcome=\"failed\"} 2",
    ];
    for _ in 0..400 {
        let m = h.call(Method::GET, "/metrics", None, None).await.text;
        if wanted.iter().all(|w| m.contains(w)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "failures not counted: {}",
        h.call(Method::GET, "/metrics", None, None).await.text
    );
}

/// Issue 20: `?limit=1000000` answered although the docs say at most 1000. Now the server
/// and docs/approvals.md agree: 1–1000, anything else is `400 BAD_QUERY`.
#[tokio::test]
async fn the_list_limit_is_one_to_a_thousand() {
    let h = harness().await;
    h.create().await;
    for bad in ["1000000", "1001", "0", "-1", "abc", "4294967296"] {
        let r = h
            .call(
                Method::GET,
                &format!("/v1/approvals?limit={bad}"),
                Some(ALICE),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "limit={bad}: {}", r.text);
        assert_eq!(code(&r), "BAD_QUERY", "limit={bad}");
    }
    for good in ["1", "1000"] {
        let r = h
            .call(
                Method::GET,
                &format!("/v1/approvals?limit={good}"),
                Some(ALICE),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "limit={good}: {}", r.text);
        assert_eq!(r.body["approvals"].as_array().map(Vec::len), Some(1));
    }
}

impl Harness {
    async fn create_as(&self, requested_by: Option<&str>) -> Resp {
        let mut body = create_body();
        match requested_by {
            Some(r) => body["requestedBy"] = json!(r),
            None => {
                body.as_object_mut().unwrap().remove("requestedBy");
            }
        }
        self.call(Method::POST, "/v1/approvals", Some(SYNC), Some(body))
            .await
    }
}

/// Issue 20 item 4: an approver bound to `agent@acme.com` approved its own request when the
/// agent's header said `agent@acme.com.` or `Agent <agent@acme.com>`, or nothing. Every
/// spelling is the same requester now; no requester is refused at creation.
#[tokio::test]
async fn the_requester_is_recognised_in_every_spelling() {
    let h = harness().await;
    for spelling in [
        "agent@acme.com.",
        "Agent <agent@acme.com>",
        "AGENT@ACME.COM",
        " \"Agent E\" <Agent@Acme.com.> ",
    ] {
        let r = h.create_as(Some(spelling)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{spelling:?}: {}", r.text);
        let id = r.body["approvalId"].as_str().unwrap().to_string();
        let r = h.decide(&id, "approve", AGENT_APPROVER).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{spelling:?}: {}", r.text);
        assert!(r.text.contains("requester"), "{}", r.text);
        // Another listed approver may.
        assert_eq!(h.decide(&id, "approve", LEAD).await.status, StatusCode::OK);
    }
    for bad in [
        None,
        Some(""),
        Some("Agent"),
        Some("a@x.com, b@y.com"),
        Some("@acme.com"),
    ] {
        let r = h.create_as(bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text);
        assert_eq!(code(&r), "BAD_APPROVAL");
        assert!(r.text.contains("requestedBy"), "{}", r.text);
    }
}

/// A client's `tags.owner` never approves that client's requests, whatever the header says.
#[tokio::test]
async fn the_clients_owner_never_approves_its_requests() {
    let h = harness().await;
    let mut doc = policy();
    doc["clients"][0]["tags"] = json!({ "owner": "Agent E <AGENT@acme.com.>" });
    let r = h
        .call(Method::PUT, "/v1/policy", Some(ALICE), Some(doc))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.create_as(Some("someone-else@acme.com")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["approvalId"].as_str().unwrap().to_string();
    for verb in ["approve", "deny"] {
        let r = h.decide(&id, verb, AGENT_APPROVER).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{verb}: {}", r.text);
        assert!(r.text.contains("tags.owner"), "{}", r.text);
    }
    assert_eq!(h.decide(&id, "approve", LEAD).await.status, StatusCode::OK);
}
