use serde_json::{json, Value};

use super::*;
use crate::testkit::*;

fn calls() -> Vec<Call> {
    let sf = |at, actual| Call {
        key: SALES_KEY,
        client: "sales-agent",
        host: "api.salesforce.com",
        path: "/services/data/v59/query",
        at,
        body: None,
        actual,
    };
    let chat = |key, client, at| Call {
        key,
        client,
        host: "api.openai.com",
        path: "/v1/chat/completions",
        at,
        body: Some(CHAT),
        actual: 2500,
    };
    vec![
        sf("2026-11-24T09:00:00Z", 3000),
        chat(SALES_KEY, "sales-agent", "2026-11-24T09:05:00Z"),
        chat(MKT_KEY, "marketing-agent", "2026-11-24T09:06:00Z"),
        Call {
            key: MKT_KEY,
            client: "marketing-agent",
            host: "api.salesforce.com",
            path: "/q",
            at: "2026-11-24T09:07:00Z",
            body: None,
            actual: 0,
        },
        sf("2026-11-24T09:10:00Z", 3000),
        // sales-ai has 10000 a day: 3000 + 2500 + 3000 spent, this chat (estimate 6000+)
        // does not fit.
        chat(SALES_KEY, "sales-agent", "2026-11-24T09:20:00Z"),
        Call {
            key: MKT_KEY,
            client: "marketing-agent",
            host: "api.deepl.com",
            path: "/v2/translate",
            at: "2026-11-24T09:30:00Z",
            body: None,
            actual: 2000,
        },
    ]
}

fn replay(draft: &Value, decisions: &[Value], opening: Value) -> Report {
    let input = json!({ "decisions": decisions, "openingSpend": opening });
    run_json(&draft.to_string(), &input.to_string()).unwrap()
}

fn outcomes(decisions: &[Value]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["outcome"].as_str().unwrap(),
                d["code"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn the_recorded_traffic_is_what_the_test_says() {
    let recorded = record(&policy(), &calls(), &mut Counters::default());
    assert_eq!(
        outcomes(&recorded),
        [
            "allow ",
            "allow ",
            "allow ",
            "deny ENDPOINT_NOT_ALLOWED",
            "allow ",
            "deny BUDGET_EXCEEDED",
            "allow "
        ]
    );
}

#[test]
fn replaying_the_live_policy_changes_nothing() {
    let recorded = record(&policy(), &calls(), &mut Counters::default());
    let r = replay(&policy(), &recorded, json!({}));
    assert_eq!(r.replayed, 7);
    assert!(r.changes.is_empty(), "{:#?}", r.changes);
    assert_eq!(r.summary.recorded_spend, r.summary.draft_spend);
    assert_eq!(
        r.summary.recorded_spend,
        Micros::new(3000 + 2500 + 2500 + 3000 + 2000)
    );
}

#[test]
fn blocking_salesforce_turns_exactly_its_allowed_calls_into_denies_and_frees_budget() {
    let recorded = record(&policy(), &calls(), &mut Counters::default());
    let mut draft = policy();
    draft["globalPolicy"]["blockedEndpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!("api.salesforce.com"));
    let r = replay(&draft, &recorded, json!({}));

    let allow_to_deny: Vec<(&str, &str, Option<&str>)> = r
        .changes
        .iter()
        .filter(|c| c.kind == "allow → deny")
        .map(|c| {
            (
                c.id.as_deref().unwrap(),
                c.authority.as_str(),
                c.draft.code.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        allow_to_deny,
        [
            ("evt-0", "api.salesforce.com", Some("ENDPOINT_BLOCKED")),
            ("evt-4", "api.salesforce.com", Some("ENDPOINT_BLOCKED")),
        ]
    );
    // Marketing's Salesforce call was refused already; now for the block (a code change).
    let other: Vec<(&str, &str)> = r
        .changes
        .iter()
        .filter(|c| c.kind == "deny → deny")
        .map(|c| (c.id.as_deref().unwrap(), c.draft.code.as_deref().unwrap()))
        .collect();
    assert_eq!(other, [("evt-3", "ENDPOINT_BLOCKED")]);
    // The 6000 Salesforce spent no longer happens: the chat refused for budget now fits.
    let freed: Vec<&str> = r
        .changes
        .iter()
        .filter(|c| c.kind == "deny → allow")
        .map(|c| c.id.as_deref().unwrap())
        .collect();
    assert_eq!(freed, ["evt-5"]);
    let chat_estimate = Micros::from_json(&recorded[5]["estimate"]).unwrap();
    assert!(chat_estimate > Micros::new(4500), "{chat_estimate}");
    assert_eq!(r.summary.allow_to_deny, 2);
    assert_eq!(r.summary.deny_to_allow, 1);
    assert_eq!(r.summary.other_changes, 1);
    assert_eq!(r.summary.spend_removed, Micros::new(6000));
    assert_eq!(r.summary.spend_added, chat_estimate);
    assert_eq!(
        r.summary.draft_spend,
        Micros::new(r.summary.recorded_spend.get() - 6000 + chat_estimate.get())
    );
}

#[test]
fn the_opening_spend_counts_against_the_draft() {
    let recorded = record(&policy(), &calls(), &mut Counters::default());
    // 9000 of sales-ai's 10000 were spent before the window: only the first call fits.
    let r = replay(
        &policy(),
        &recorded,
        json!({ "project.daily/sales-ai/2026-11-24": "9000" }),
    );
    let ids: Vec<(&str, &str)> = r
        .changes
        .iter()
        .map(|c| (c.id.as_deref().unwrap(), c.kind.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("evt-1", "allow → deny"), ("evt-4", "allow → deny")],
        "the 1000 left takes the first Salesforce call (3000 settled: the counter is full)"
    );
    assert!(r
        .changes
        .iter()
        .all(|c| c.draft.code.as_deref() == Some("BUDGET_EXCEEDED")
            && c.draft.scope.as_deref() == Some("project.daily")));
}

#[test]
fn a_bad_record_is_reported_and_the_others_replayed() {
    let mut recorded = record(&policy(), &calls(), &mut Counters::default());
    recorded[2]["at"] = json!("yesterday");
    recorded.push(json!({ "outcome": "allow" }));
    recorded.push(json!({ "at": "2026-11-24T10:00:00Z", "method": "GET",
                          "authority": "api.openai.com", "path": "/", "outcome": "deny",
                          "code": "MISSING_API_KEY" }));
    let r = replay(&policy(), &recorded, json!({}));
    assert_eq!(r.replayed, 6);
    assert_eq!(r.skipped, 3, "two unreadable, one without a client");
    assert_eq!(r.errors.len(), 2);
    assert!(
        r.errors[0].starts_with("decisions[2].at: \"yesterday\""),
        "{:?}",
        r.errors
    );
    assert!(
        r.errors[1].starts_with("decisions[7]: missing field"),
        "{:?}",
        r.errors
    );
}

#[test]
fn a_draft_that_does_not_validate_is_refused_with_its_paths() {
    let mut draft = policy();
    draft["projects"][1]["policy"]["dailyBudget"] = json!("12x");
    let errs = run_json(&draft.to_string(), r#"{"decisions": []}"#).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.starts_with("draft: projects[1].policy.dailyBudget: ")),
        "{errs:?}"
    );
    let errs = run_json(&policy().to_string(), r#"{"decisions": {}}"#).unwrap_err();
    assert_eq!(errs, ["decisions: expected an array of recorded decisions"]);
}
