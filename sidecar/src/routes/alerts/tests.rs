//! `GET /v1/alerts` over the router (SQLite, manual clock): alerts raised by syncs and by a
//! held approval, the history's shape, admin auth, metrics. Delivery is in alerts/tests.rs,
//! the store contract in store/contract.rs, the real Envoy path in envoy/tests/e2e_alerts.rs.

use axum::http::{Method, StatusCode};
use pag0_policy::approval::{body_sha256_hex, request_binding};
use pag0_policy::RequestHead;
use serde_json::{json, Value};

use crate::testing::{code, harness, Harness, ALICE, SYNC, T0};

const KEY: &str = "pag0_sales_agent_key_0001";
const DAY: &str = "project.daily/sales-ai/2025-11-24";
const BODY: &[u8] = br#"{"model":"gpt-4o"}"#;

fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [ { "id": "sales-ai", "policy": { "dailyBudget": "1000000",
            "approvalWorkflow": { "enabled": true, "approvers": ["lead@acme.com"],
                                  "requireApprovalAbove": "100000" } } } ],
        "clients": [ { "id": "sales-agent", "projectId": "sales-ai",
                       "apiKeySha256": pag0_policy::validate::api_key_sha256_hex(KEY) } ],
        "alerts": { "channels": ["slack"], "slackWebhookUrl": "http://127.0.0.1:9/slack",
                    "triggers": { "budgetThreshold": 0.8, "highCostRequest": "500000" } }
    })
}

fn usage(amount: u64) -> Value {
    json!({ "amount": amount.to_string(), "counters": [DAY], "projectId": "sales-ai",
            "clientId": "sales-agent", "host": "api.openai.com", "at": T0 })
}

async fn setup() -> Harness {
    let h = harness();
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    h
}

async fn list(h: &Harness) -> Vec<Value> {
    let r = h.call(Method::GET, "/v1/alerts", Some(ALICE), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["alerts"].as_array().unwrap().clone()
}

#[tokio::test]
async fn syncs_raise_one_alert_per_crossing_and_the_history_shows_them() {
    let h = setup().await;
    let mut seq = 0;
    let mut sync = |amounts: Vec<u64>| {
        seq += 1;
        let body = json!({ "instanceId": "envoy-1", "seq": seq, "policyVersion": 1,
                           "usage": amounts.into_iter().map(usage).collect::<Vec<_>>() });
        let h = &h;
        async move {
            let r = h.sync(body).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
    };
    // 790 000 of 1 000 000 in 79 requests: below 80 %, nothing.
    sync(vec![10_000; 79]).await;
    assert!(list(&h).await.is_empty());
    // 800 000: the threshold; then 10 more requests below 100 %: still one alert.
    sync(vec![10_000]).await;
    sync(vec![10_000; 10]).await;
    assert_eq!(list(&h).await.len(), 1);
    // 1 000 000: the 100 % alert. Past it: nothing more.
    sync(vec![10_000; 10]).await;
    sync(vec![10_000; 5]).await;
    // One record of 600 000 ≥ highCostRequest 500 000 (it also moves the counter, past 100 %).
    sync(vec![600_000]).await;

    let alerts = list(&h).await;
    let mut got: Vec<(String, Option<String>, Option<String>)> = alerts
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["threshold"].as_str().map(str::to_owned),
                a["spent"]
                    .as_str()
                    .or(a["amount"].as_str())
                    .map(str::to_owned),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "budgetThreshold".into(),
                Some("100.0%".into()),
                Some("1000000".into())
            ),
            (
                "budgetThreshold".into(),
                Some("80.0%".into()),
                Some("800000".into())
            ),
            ("highCostRequest".into(), None, Some("600000".into())),
        ]
    );
    let b = alerts.iter().find(|a| a["threshold"] == "80.0%").unwrap();
    assert_eq!(b["counter"], DAY);
    assert_eq!(b["projectId"], "sales-ai");
    assert_eq!(b["limit"], "1000000");
    assert_eq!(b["createdAt"], "2025-11-24T16:00:00.000Z");
    assert_eq!(b["state"], "pending");
    assert_eq!(
        b["deliveries"],
        json!([{ "channel": "slack", "status": "pending", "attempts": 0, "lastError": null,
                 "sentBy": null, "updatedAt": null }])
    );

    let r = h.call(Method::GET, "/metrics", None, None).await;
    for line in [
        "pag0_alerts_raised_total{kind=\"budgetThreshold\"} 2",
        "pag0_alerts_raised_total{kind=\"highCostRequest\"} 1",
    ] {
        assert!(r.text.contains(line), "{line} not in\n{}", r.text);
    }
}

#[tokio::test]
async fn a_held_approval_at_or_above_high_cost_raises_one() {
    let h = setup().await;
    let head = RequestHead {
        api_key: Some(KEY),
        method: "POST",
        authority: "api.openai.com",
        path: "/v1/chat/completions",
        requires_approval: false,
    };
    let create = |cost: &str| {
        json!({
            "projectId": "sales-ai", "clientId": "sales-agent", "requestedBy": "agent@acme.com",
            "method": "POST", "authority": "api.openai.com", "path": "/v1/chat/completions",
            "bodySha256": body_sha256_hex(BODY),
            "binding": request_binding("sales-agent", &head, BODY),
            "estimatedCost": cost, "policyVersion": 1
        })
    };
    for cost in ["499999", "500000"] {
        let r = h
            .call(
                Method::POST,
                "/v1/approvals",
                Some(SYNC),
                Some(create(cost)),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let alerts = list(&h).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "highCostRequest");
    assert_eq!(alerts[0]["amount"], "500000");
    assert!(alerts[0]["key"]
        .as_str()
        .unwrap()
        .starts_with("highCostRequest/approval/"));
}

#[tokio::test]
async fn the_history_is_for_admins_and_checks_its_query() {
    let h = setup().await;
    assert_eq!(
        h.call(Method::GET, "/v1/alerts", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.call(Method::GET, "/v1/alerts", Some(SYNC), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    for q in ["limit=0", "limit=1001", "limit=x", "other=1"] {
        let r = h
            .call(Method::GET, &format!("/v1/alerts?{q}"), Some(ALICE), None)
            .await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::BAD_REQUEST, "BAD_QUERY"),
            "{q}"
        );
    }
}

fn denial(at: i64, client: &str, code: &str) -> Value {
    json!({ "at": at, "decision": "deny", "code": code, "method": "POST",
            "authority": "api.openai.com", "path": "/v1/chat/completions", "policyVersion": 1,
            "projectId": "sales-ai", "clientId": client })
}

/// `policyViolation` through `/v1/sync`: with the trigger on, a batch's denials raise one
/// alert per code in the hour (the count and examples in it), a resend and more denials in
/// the same hour raise nothing, and the metric counts them; with the trigger off, none.
#[tokio::test]
async fn synced_denials_raise_one_violation_alert_per_code_and_hour() {
    let h = harness();
    let mut p = policy();
    p["alerts"]["triggers"]["policyViolation"] = json!(true);
    let r = h.put_policy(ALICE, &p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let hour = 3_600_000;
    let start = T0 / hour * hour;
    let batch = json!({ "instanceId": "envoy-1", "seq": 1, "policyVersion": 1,
        "decisions": [denial(start + 1, "sales-agent", "ENDPOINT_BLOCKED"),
                      denial(start + 2, "sales-agent", "ENDPOINT_BLOCKED"),
                      denial(start + 3, "sales-bot", "ENDPOINT_BLOCKED"),
                      denial(start + 4, "sales-agent", "ENDPOINT_BLOCKED"),
                      denial(start + 5, "sales-agent", "OUTSIDE_WORKING_HOURS")] });
    assert_eq!(h.sync(batch.clone()).await.status, StatusCode::OK);
    assert_eq!(h.sync(batch).await.body["duplicate"], json!(true));
    let more = json!({ "instanceId": "envoy-2", "seq": 1, "policyVersion": 1,
        "decisions": [denial(start + 60_000, "sales-agent", "ENDPOINT_BLOCKED")] });
    assert_eq!(h.sync(more).await.status, StatusCode::OK);

    let alerts = list(&h).await;
    let mut subjects: Vec<&str> = alerts
        .iter()
        .map(|a| {
            assert_eq!(a["kind"], "policyViolation", "{a}");
            assert_eq!(a["projectId"], "sales-ai");
            a["subject"].as_str().unwrap()
        })
        .collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "[pag0] policy violations: project sales-ai, ENDPOINT_BLOCKED ×4",
            "[pag0] policy violations: project sales-ai, OUTSIDE_WORKING_HOURS ×1",
        ]
    );
    let r = h.call(Method::GET, "/metrics", None, None).await;
    let line = "pag0_alerts_raised_total{kind=\"policyViolation\"} 2";
    assert!(r.text.contains(line), "{line} not in\n{}", r.text);

    // The trigger off (the policy without it): the next hour's denials raise nothing.
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let later = json!({ "instanceId": "envoy-1", "seq": 2, "policyVersion": 2,
        "decisions": [denial(start + hour, "sales-agent", "ENDPOINT_BLOCKED")] });
    assert_eq!(h.sync(later).await.status, StatusCode::OK);
    assert_eq!(list(&h).await.len(), 2);
}
