use serde_json::json;

use super::*;

const DAY: i64 = 86_400_000;
/// A 30-day month starting at 0.
const MONTH: i64 = 30 * DAY;

fn usage(project: &str, client: &str, requests: u64, cost: u64, hits: u64) -> UsageTotals {
    UsageTotals {
        project_id: Some(project.into()),
        client_id: Some(client.into()),
        host: Some("api.openai.com".into()),
        requests,
        cost,
        cache_hits: hits,
        savings: 0,
    }
}

fn doc() -> Value {
    json!({
        "globalPolicy": { "monthlyBudget": "100000000" },
        "projects": [
            { "id": "sales-ai", "policy": { "monthlyBudget": "1000000" } },
            { "id": "support", "policy": { "monthlyBudget": "3000000" } },
            { "id": "free" } ]
    })
}

fn approval(project: &str, status: ApprovalStatus, estimate: u64) -> Approval {
    Approval {
        id: format!("{project}-{estimate}-{}", status.as_str()),
        project_id: project.into(),
        client_id: "bot".into(),
        method: "POST".into(),
        authority: "api.openai.com".into(),
        path: "/v1/chat".into(),
        body_sha256: "0".repeat(64),
        binding: String::new(),
        estimated_cost: estimate,
        policy_version: 1,
        status,
        justification: None,
        requested_by: None,
        callback_url: None,
        created_at_ms: 0,
        expires_at_ms: DAY,
        decided_by: None,
        decision_comment: None,
        decided_at_ms: None,
        used_at_ms: None,
    }
}

fn run(
    doc: &Value,
    month: &[UsageTotals],
    now_ms: i64,
    spent: &[(&str, u64)],
    approvals: &[Approval],
) -> Vec<Value> {
    let spent: BTreeMap<String, u64> = spent.iter().map(|(k, v)| ((*k).into(), *v)).collect();
    recommend(&Inputs {
        doc: Some(doc),
        month,
        month_decisions: &[],
        month_from_ms: 0,
        month_to_ms: MONTH,
        now_ms,
        spent: &spent,
        month_key: "2026-11",
        approvals,
        learned: &[],
    })
}

fn rules(v: &[Value]) -> Vec<(String, Option<String>)> {
    v.iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["projectId"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn run_rate_is_integer_and_rounds_up() {
    assert_eq!(project_run_rate(100, DAY, MONTH), 3000);
    assert_eq!(project_run_rate(1, 3 * DAY, MONTH), 10);
    assert_eq!(project_run_rate(1, 7 * DAY, MONTH), 5, "30/7 = 4.28…, up");
    assert_eq!(project_run_rate(u64::MAX, 1, MONTH), u64::MAX, "saturates");
}

#[test]
fn a_budget_on_course_to_overrun_says_by_how_much_and_who() {
    let month = [
        usage("sales-ai", "sales-agent", 10, 400_000, 0),
        usage("sales-ai", "sales-bot", 5, 100_000, 0),
        usage("support", "support-bot", 5, 10, 0),
    ];
    // 10 days in, sales-ai spent 500 000 of 1 000 000: on course for 1 500 000 (150 %).
    let spent = [
        ("project.monthly/sales-ai/2026-11", 500_000),
        ("project.monthly/support/2026-11", 1_200_000),
        ("org.monthly/2026-11", 1_700_000),
    ];
    let out = run(&doc(), &month, 10 * DAY, &spent, &[]);
    let over = out
        .iter()
        .find(|r| r["rule"] == "budget-run-rate-over" && r["projectId"] == "sales-ai")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(over["raisePercent"], 50);
    assert_eq!(over["suggestedLimit"], "1500000");
    assert_eq!(over["numbers"]["projectedPercent"], 150);
    assert_eq!(
        over["drivers"],
        json!([{ "clientId": "sales-agent", "cost": "400000" }, { "clientId": "sales-bot", "cost": "100000" }])
    );
    let msg = over["message"].as_str().unwrap();
    assert!(
        msg.contains("1500000") && msg.contains("50%") && msg.contains("sales-agent (400000"),
        "{msg}"
    );
    // support: 1 200 000 of 3 000 000 in a third of the month → 3 600 000, also over (120 %).
    let support = out.iter().find(|r| r["projectId"] == "support").unwrap();
    assert_eq!(
        (support["rule"].as_str(), support["raisePercent"].as_u64()),
        (Some("budget-run-rate-over"), Some(20))
    );
    // The org: 1 700 000 of 100 000 000 → 5 100 000, 6 %: under half.
    let org = out.iter().find(|r| r["projectId"].is_null()).unwrap();
    assert_eq!(org["rule"], "budget-run-rate-under");
    assert_eq!(org["suggestedLimit"], "6375000", "5 100 000 + 25 %");

    // The same spend later in the month no longer projects an overrun for sales-ai
    // (500 000 × 30/25 = 600 000: 60 %, neither rule).
    let later = run(&doc(), &month, 25 * DAY, &spent, &[]);
    assert!(
        !rules(&later).contains(&("budget-run-rate-over".into(), Some("sales-ai".into()))),
        "{later:?}"
    );
    assert!(!rules(&later)
        .iter()
        .any(|(_, p)| p.as_deref() == Some("sales-ai")));
}

#[test]
fn no_budget_rule_without_a_day_of_data_a_budget_or_for_lowering_without_a_week() {
    let spent = [
        ("project.monthly/sales-ai/2026-11", 900_000),
        ("project.monthly/free/2026-11", 900_000),
    ];
    assert!(
        run(&doc(), &[], DAY - 1, &spent, &[]).is_empty(),
        "under a day in"
    );
    let out = run(&doc(), &[], DAY, &spent, &[]);
    assert_eq!(
        rules(&out),
        [(
            "budget-run-rate-over".to_owned(),
            Some("sales-ai".to_owned())
        )],
        "a day in; `free` has no budget, support and the org project 0, but lowering waits a week"
    );
    let week = run(&doc(), &[], 7 * DAY, &[], &[]);
    assert_eq!(
        rules(&week)
            .iter()
            .filter(|(r, _)| r == "budget-run-rate-under")
            .count(),
        3,
        "a week of nothing: org, sales-ai, support could all be lowered: {week:?}"
    );
    assert!(
        run(&json!({}), &[], 20 * DAY, &spent, &[]).is_empty(),
        "no budgets at all"
    );
}

#[test]
fn a_cache_hit_rate_well_under_the_orgs() {
    // Org: 50 hits of 100 (50 %); support 2 of 40 (5 %) is under half of it; sales-ai 48 of 60.
    let month = [
        usage("sales-ai", "a", 60, 0, 48),
        usage("support", "b", 40, 0, 2),
    ];
    let out = run(&json!({}), &month, 20 * DAY, &[], &[]);
    assert_eq!(
        rules(&out),
        [("cache-hit-rate-low".to_owned(), Some("support".to_owned()))]
    );
    assert_eq!(
        out[0]["numbers"],
        json!({ "requests": 40, "cacheHits": 2, "orgRequests": 100, "orgCacheHits": 50 })
    );
    assert!(out[0]["message"].as_str().unwrap().contains("(5%)"));
    // 13 of 40 (32.5 %) is not under half of the org's 61 of 100 (30.5 %): not flagged.
    let month = [
        usage("sales-ai", "a", 60, 0, 48),
        usage("support", "b", 40, 0, 13),
    ];
    assert!(run(&json!({}), &month, 20 * DAY, &[], &[]).is_empty());
    // Too few requests to judge; and no hits anywhere, no comparison.
    let month = [
        usage("sales-ai", "a", 60, 0, 48),
        usage("support", "b", 19, 0, 0),
    ];
    assert!(run(&json!({}), &month, 20 * DAY, &[], &[]).is_empty());
    let month = [
        usage("sales-ai", "a", 60, 0, 0),
        usage("support", "b", 40, 0, 0),
    ];
    assert!(run(&json!({}), &month, 20 * DAY, &[], &[]).is_empty());
}

#[test]
fn approvals_always_granted_raise_the_threshold() {
    use ApprovalStatus::*;
    let mut a: Vec<Approval> = (0..4)
        .map(|i| approval("sales-ai", Approved, 100_000 + i))
        .collect();
    a.push(approval("sales-ai", Used, 250_000));
    a.push(approval("sales-ai", Pending, 9_000_000));
    a.extend((0..6).map(|i| approval("support", Approved, 10 + i)));
    a.push(approval("support", Denied, 5));
    let out = run(&json!({}), &[], 20 * DAY, &[], &a);
    assert_eq!(
        rules(&out),
        [(
            "approvals-always-granted".to_owned(),
            Some("sales-ai".to_owned())
        )]
    );
    assert_eq!(
        out[0]["suggestedRequireApprovalAbove"], "250000",
        "the largest granted, not the pending one"
    );
    assert_eq!(out[0]["numbers"]["granted"], 5);
    // Four granted are too few.
    assert!(run(&json!({}), &[], 20 * DAY, &[], &a[..4]).is_empty());
}

fn decided(
    client: Option<&str>,
    host: &str,
    decision: &str,
    code: Option<&str>,
    count: u64,
) -> DecisionStats {
    DecisionStats {
        project_id: Some("sales-ai".into()),
        client_id: client.map(Into::into),
        host: Some(host.into()),
        decision: Some(decision.into()),
        code: code.map(Into::into),
        count,
        ..DecisionStats::default()
    }
}

fn denied(decisions: &[DecisionStats]) -> Vec<Value> {
    let spent = BTreeMap::new();
    recommend(&Inputs {
        doc: None,
        month: &[],
        month_decisions: decisions,
        month_from_ms: 0,
        month_to_ms: MONTH,
        now_ms: DAY,
        spent: &spent,
        month_key: "2026-11",
        approvals: &[],
        learned: &[],
    })
}

/// One client refused over and over with one code: the rule names the client, the code, the
/// host most refused and the counts; under the count or the share it says nothing, and a
/// request without a client is nobody's.
#[test]
fn a_client_denied_over_and_over_with_one_code() {
    let bad = "api.blocked.example";
    let rows = [
        decided(Some("scraper"), bad, "deny", Some("ENDPOINT_BLOCKED"), 15),
        decided(
            Some("scraper"),
            "api.other.example",
            "deny",
            Some("ENDPOINT_BLOCKED"),
            6,
        ),
        decided(
            Some("scraper"),
            "api.openai.com",
            "deny",
            Some("BUDGET_EXCEEDED"),
            3,
        ),
        decided(Some("scraper"), "api.openai.com", "allow", None, 10),
        // 20 denials but only 20 of 60 decisions: a busy client, not a broken one.
        decided(
            Some("busy"),
            "api.openai.com",
            "deny",
            Some("BUDGET_EXCEEDED"),
            20,
        ),
        decided(Some("busy"), "api.openai.com", "allow", None, 40),
        // All denied, but only 19 times.
        decided(Some("rare"), bad, "deny", Some("ENDPOINT_BLOCKED"), 19),
        // No client (unknown key): not a client's misconfiguration.
        decided(None, bad, "deny", Some("UNKNOWN_API_KEY"), 500),
    ];
    let out = denied(&rows);
    assert_eq!(out.len(), 1, "{out:?}");
    let r = &out[0];
    assert_eq!(
        (
            r["rule"].as_str(),
            r["projectId"].as_str(),
            r["clientId"].as_str(),
            r["code"].as_str()
        ),
        (
            Some("client-denied-repeatedly"),
            Some("sales-ai"),
            Some("scraper"),
            Some("ENDPOINT_BLOCKED")
        )
    );
    assert_eq!(
        r["numbers"],
        json!({ "denials": 21, "decisions": 34, "sharePercent": 61,
                "topHost": bad, "topHostDenials": 15 })
    );
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with("client scraper of project sales-ai was refused 21 times this month with ENDPOINT_BLOCKED (61% of its 34 requests, 15 of them on api.blocked.example): it keeps calling api.blocked.example"),
        "{msg}"
    );
    // Exactly at the bounds it fires: 20 denials, half of 40 decisions.
    let edge = [
        decided(Some("edge"), bad, "deny", Some("OUTSIDE_WORKING_HOURS"), 20),
        decided(Some("edge"), bad, "allow", None, 20),
    ];
    let out = denied(&edge);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["numbers"]["sharePercent"], 50);
    assert!(out[0]["message"]
        .as_str()
        .unwrap()
        .contains("widen workingHours"));
    let under = [
        decided(Some("edge"), bad, "deny", Some("OUTSIDE_WORKING_HOURS"), 20),
        decided(Some("edge"), bad, "allow", None, 21),
    ];
    assert!(denied(&under).is_empty(), "just under half: nothing");
}

/// Issue 23: a catalogue price far from the settled costs (≥ 2× or ≤ 0.5×, 3 reports or more)
/// is named with a suggested price; one close to them, or with too few reports, is not.
#[test]
fn a_catalogue_price_far_from_reality_is_named() {
    use crate::store::LearnedRow;
    use pag0_policy::Learned;
    let doc = serde_json::json!({ "endpoints": [
        { "host": "api.salesforce.com", "pricing": { "perRequest": "1000" } },
        { "host": "api.deepl.com", "pricing": { "perRequest": "2000" } },
    ]});
    let row = |key: &str, samples: u32, estimate_sum: u64, actual_sum: u64| LearnedRow {
        key: key.into(),
        learned: Learned {
            high_permille: actual_sum * 1000 / estimate_sum,
            samples,
        },
        estimate_sum,
        actual_sum,
        updated_at_ms: 0,
    };
    let learned = [
        row("api.salesforce.com", 4, 4000, 480_000),
        row("api.deepl.com", 10, 20_000, 21_000),
        row("api.tavily.com", 2, 2000, 100_000),
        row("api.cheap.example", 5, 50_000, 10_000),
    ];
    let spent = BTreeMap::new();
    let out = recommend(&Inputs {
        doc: Some(&doc),
        month: &[],
        month_decisions: &[],
        month_from_ms: 0,
        month_to_ms: MONTH,
        now_ms: DAY,
        spent: &spent,
        month_key: "2026-11",
        approvals: &[],
        learned: &learned,
    });
    let named: Vec<&str> = out
        .iter()
        .filter(|r| r["rule"] == "catalogue-price-off")
        .map(|r| r["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["api.salesforce.com", "api.cheap.example"]);
    let sf = &out[0];
    assert_eq!(sf["suggestedPerRequest"], "120000");
    assert_eq!(sf["numbers"]["ratioPermille"], "120000");
    assert_eq!(
        sf["message"],
        "api.salesforce.com settles at 120.000× its catalogue estimate over 4 reports: \
         set its perRequest from 1000 to about 120000 µUSD (the mean settled cost)"
    );
    let cheap = out
        .iter()
        .find(|r| r["endpoint"] == "api.cheap.example")
        .unwrap();
    assert_eq!(cheap["numbers"]["ratioPermille"], "200");
    assert_eq!(cheap["suggestedPerRequest"], serde_json::Value::Null);
}
