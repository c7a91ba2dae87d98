use serde_json::json;

use super::*;
use crate::testkit::*;

#[test]
fn the_window_is_taken_out_of_the_counters_it_was_charged_to() {
    let live = CompiledPolicy::from_value(&policy()).unwrap();
    let decisions = json!([
        { "at": "2026-11-24T09:00:00Z", "clientId": "sales-agent", "method": "GET",
          "authority": "api.salesforce.com", "path": "/q", "estimate": "1000",
          "outcome": "allow", "actualCost": "3000" },
        // No reported cost: its estimate was charged.
        { "at": "2026-11-24T09:01:00Z", "clientId": "sales-agent", "projectId": "sales-ai",
          "method": "GET", "authority": "api.salesforce.com", "path": "/q", "estimate": "1000",
          "outcome": "allow" },
        { "at": "2026-11-24T09:02:00Z", "clientId": "sales-agent", "method": "GET",
          "authority": "api.salesforce.com", "path": "/q", "estimate": "1000",
          "outcome": "deny", "code": "BUDGET_EXCEEDED" },
        // Yesterday: its counters are not in the answer, nothing to take from.
        { "at": "2026-11-23T23:00:00Z", "clientId": "sales-agent", "method": "GET",
          "authority": "api.salesforce.com", "path": "/q", "estimate": "1000",
          "outcome": "allow", "actualCost": "500" }
    ]);
    let budgets = json!({ "counters": [
        { "counter": "project.daily/sales-ai/2026-11-24", "spent": "9000" },
        { "counter": "project.monthly/sales-ai/2026-11", "spent": "20000" },
        { "counter": "org.daily/2026-11-24", "spent": "2500" },
        { "counter": "project.daily/marketing/2026-11-24", "spent": "700" }
    ]});
    let (parsed, bad) = parse_decisions(&decisions).unwrap();
    assert!(bad.is_empty());
    let opening = opening_spend(&live, &budgets, &parsed).unwrap();
    let got: Vec<(&str, u64)> = opening.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    assert_eq!(
        got,
        [
            ("org.daily/2026-11-24", 0),
            ("project.daily/marketing/2026-11-24", 700),
            ("project.daily/sales-ai/2026-11-24", 5000),
            ("project.monthly/sales-ai/2026-11", 15500),
        ]
    );
}

#[test]
fn a_budgets_body_of_another_shape_is_refused() {
    let live = policy().to_string();
    let errs = opening_spend_json(&live, r#"{"counters":[{"counter":"x"}]}"#, "[]").unwrap_err();
    assert_eq!(
        errs,
        ["budgets.counters[0]: expected a counter name and a spent amount"]
    );
    let errs = opening_spend_json(&live, r#"{"nope":1}"#, "[]").unwrap_err();
    assert_eq!(errs, ["budgets: expected the body of GET /v1/budgets"]);
}
