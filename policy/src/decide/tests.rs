use std::collections::HashMap;

use serde_json::{json, Value};

use super::*;
use crate::budget::{try_reserve, NothingSpent};
use crate::fixtures::{acme_api_key, acme_policy, llm_host, per_request_host};
use crate::validate::tests::spec_example;

/// Tuesday 10:00 in New York (inside sales-agent's working hours).
fn tuesday_10am_ny() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn policy(v: &Value) -> CompiledPolicy {
    CompiledPolicy::from_value(v).unwrap()
}

fn head<'a>(key: Option<&'a str>, authority: &'a str, path: &'a str) -> RequestHead<'a> {
    RequestHead {
        api_key: key,
        method: "POST",
        authority,
        path,
        requires_approval: false,
    }
}

struct Spent(HashMap<String, Micros>);

impl BudgetView for Spent {
    fn used(&self, key: &BudgetKey) -> Micros {
        self.0
            .get(&key.storage_key())
            .copied()
            .unwrap_or(Micros::ZERO)
    }
}

fn spent(pairs: &[(&str, u64)]) -> Spent {
    Spent(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Micros::new(*v)))
            .collect(),
    )
}

fn deny_of(d: Decision) -> Deny {
    match d {
        Decision::Deny(d) => d,
        other => panic!("expected a deny, got {other:?}"),
    }
}

fn allow_of(d: Decision) -> Allow {
    match d {
        Decision::Allow(a) => a,
        other => panic!("expected allow, got {other:?}"),
    }
}

const SMALL_CHAT: &[u8] =
    br#"{"model":"gpt-4","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn allowed_token_priced_request_carries_reservations_and_settlement() {
    let p = policy(&spec_example());
    let h = head(Some("sk-sales"), "api.openai.com", "/v1/chat/completions");
    let HeadOutcome::Continue(pending) = p.check_head(&h, tuesday_10am_ny()) else {
        panic!()
    };
    assert!(pending.needs_body());
    assert_eq!(&*pending.project_id, "sales-ai");
    assert_eq!(&*pending.client_id, "sales-agent");
    let a = allow_of(p.finish(
        &pending,
        Some(SMALL_CHAT),
        &NothingSpent,
        &FinishOptions::default(),
    ));
    // input ceil(78/4)=20 tokens → 600; output 100 → 6000.
    assert_eq!(SMALL_CHAT.len(), 78);
    assert_eq!(a.estimate, Micros::new(6600));
    assert_eq!(&*a.project_id, "sales-ai");
    assert_eq!(&*a.client_id, "sales-agent");
    let keys: Vec<(String, u64, u64)> = a
        .reservations
        .iter()
        .map(|r| (r.key.storage_key(), r.amount.get(), r.limit.get()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("org.monthly/2026-11".to_string(), 6600, 100_000_000),
            ("org.daily/2026-11-24".to_string(), 6600, 5_000_000),
            (
                "project.monthly/sales-ai/2026-11".to_string(),
                6600,
                15_000_000
            ),
            (
                "project.daily/sales-ai/2026-11-24".to_string(),
                6600,
                500_000
            ),
        ]
    );
    assert_eq!(a.settlement.estimate, Micros::new(6600));
    assert!(a.settlement.model_price.is_some());
    assert!(!a.settlement.streaming);
    assert_eq!(a.settlement.cost_header, None);
}

#[test]
fn per_request_endpoint_needs_no_body_and_keeps_cost_header() {
    let p = policy(&spec_example());
    let h = head(Some("sk-sales"), "API.Salesforce.com:443", "/services/data");
    let HeadOutcome::Continue(pending) = p.check_head(&h, tuesday_10am_ny()) else {
        panic!()
    };
    assert!(!pending.needs_body());
    let a = allow_of(p.finish(&pending, None, &NothingSpent, &FinishOptions::default()));
    assert_eq!(a.estimate, Micros::new(1000));
    assert_eq!(a.settlement.cost_header.as_deref(), Some("x-request-cost"));
    assert_eq!(a.settlement.model_price, None);
}

#[test]
fn identity_denies() {
    let p = policy(&spec_example());
    let now = tuesday_10am_ny();
    let d = deny_of(decide(
        &p,
        &head(None, "api.openai.com", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::MissingApiKey);
    assert_eq!(d.project_id, None);
    let d = deny_of(decide(
        &p,
        &head(Some("  "), "api.openai.com", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::MissingApiKey);
    let d = deny_of(decide(
        &p,
        &head(Some("sk-wrong"), "api.openai.com", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::UnknownApiKey);
    assert!(
        !d.message.contains("sk-wrong"),
        "never echo the key: {}",
        d.message
    );
    assert_eq!(d.code.status(), 401);
}

#[test]
fn blocked_beats_not_allowed_and_names_the_rule() {
    let p = policy(&spec_example());
    let now = tuesday_10am_ny();
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "eu.suspicious-api.com", "/x"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::EndpointBlocked);
    assert_eq!(d.project_id.as_deref(), Some("sales-ai"));
    assert_eq!(
        d.client_id.as_deref(),
        Some("sales-agent"),
        "the decision log records which client was refused"
    );
    assert_eq!(
        d.message,
        "eu.suspicious-api.com/x is blocked by org acme-corp (rule suspicious-api.com)"
    );
    // Not blocked, but not on the project's allow-list.
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.deepl.com", "/v2/translate?x=1"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::EndpointNotAllowed);
    assert_eq!(
        d.message,
        "api.deepl.com/v2/translate is not on the allowed endpoints of project sales-ai"
    );
    assert_eq!(d.code.status(), 403);
    // A look-alike host is not a subdomain.
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "badapi.openai.com.evil", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::EndpointNotAllowed);
}

#[test]
fn allow_lists_intersect_across_levels() {
    let mut v = spec_example();
    // Project allows openai + salesforce; the client allows only salesforce.
    v["clients"][0]["additionalRestrictions"]["allowedEndpoints"] = json!(["api.salesforce.com"]);
    let p = policy(&v);
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(SMALL_CHAT),
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    assert_eq!(d.code, DenyCode::EndpointNotAllowed);
    assert!(d.message.contains("client sales-agent"), "{}", d.message);
}

#[test]
fn block_lists_union_across_levels_with_paths() {
    let mut v = spec_example();
    v["clients"][0]["additionalRestrictions"]["blockedEndpoints"] =
        json!(["api.openai.com/v1/images"]);
    let p = policy(&v);
    let now = tuesday_10am_ny();
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/v1/images/generations"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::EndpointBlocked);
    assert!(d.message.contains("client sales-agent"));
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/v1/chat/../images/x"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(
        d.code,
        DenyCode::EndpointBlocked,
        "ambiguous paths hit path block rules"
    );
    assert!(matches!(
        decide(
            &p,
            &head(Some("sk-sales"), "api.openai.com", "/v1/imagesx"),
            Some(SMALL_CHAT),
            &NothingSpent,
            now
        ),
        Decision::Allow(_)
    ));
}

#[test]
fn categories_intersect_and_unknown_hosts_have_none() {
    let mut v = spec_example();
    v["projects"][0]["policy"]
        .as_object_mut()
        .unwrap()
        .remove("allowedEndpoints");
    v["clients"][0]["additionalRestrictions"]
        .as_object_mut()
        .unwrap()
        .remove("allowedEndpoints");
    v["clients"][0]["additionalRestrictions"]["allowedCategories"] = json!(["llm", "translation"]);
    let p = policy(&v);
    let now = tuesday_10am_ny();
    // data-analysis is allowed by the org, not by the client.
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.salesforce.com", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::CategoryNotAllowed);
    assert_eq!(d.message, "category data-analysis of api.salesforce.com is not allowed; allowed categories: translation, llm");
    // A host outside the catalogue has no category.
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.unknown.io", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::CategoryNotAllowed);
    assert!(d.message.contains("not in the endpoint catalogue"));
    // Allowed on both levels.
    assert!(matches!(
        decide(
            &p,
            &head(Some("sk-sales"), "api.deepl.com", "/"),
            None,
            &NothingSpent,
            now
        ),
        Decision::Allow(_)
    ));
}

#[test]
fn uncatalogued_host_without_category_rules_is_free() {
    let mut v = spec_example();
    v["globalPolicy"]
        .as_object_mut()
        .unwrap()
        .remove("allowedCategories");
    v["projects"][0]["policy"]
        .as_object_mut()
        .unwrap()
        .remove("allowedEndpoints");
    v["clients"][0]["additionalRestrictions"]
        .as_object_mut()
        .unwrap()
        .remove("allowedEndpoints");
    let p = policy(&v);
    let h = head(Some("sk-sales"), "free.example.org", "/");
    let HeadOutcome::Continue(pending) = p.check_head(&h, tuesday_10am_ny()) else {
        panic!()
    };
    assert!(!pending.needs_body());
    let a = allow_of(p.finish(&pending, None, &NothingSpent, &FinishOptions::default()));
    assert_eq!(a.estimate, Micros::ZERO);
}

#[test]
fn outside_working_hours() {
    let p = policy(&spec_example());
    // Saturday 10:00 New York.
    let sat = DateTime::parse_from_rfc3339("2026-11-28T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(SMALL_CHAT),
        &NothingSpent,
        sat,
    ));
    assert_eq!(d.code, DenyCode::OutsideWorkingHours);
    assert_eq!(
        d.message,
        "outside the working hours of client sales-agent (09:00-18:00 America/New_York)"
    );
    // Tuesday 08:00 New York.
    let early = DateTime::parse_from_rfc3339("2026-11-24T13:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(SMALL_CHAT),
        &NothingSpent,
        early,
    ));
    assert_eq!(d.code, DenyCode::OutsideWorkingHours);
}

#[test]
fn bad_body_and_overflowing_estimates() {
    let p = policy(&spec_example());
    let now = tuesday_10am_ny();
    let h = head(Some("sk-sales"), "api.openai.com", "/v1/chat/completions");
    for body in [
        &b"not json"[..],
        b"[1]",
        b"{\"max_tokens\":\"lots\"}",
        b"{\"model\":",
    ] {
        let d = deny_of(decide(&p, &h, Some(body), &NothingSpent, now));
        assert_eq!(
            d.code,
            DenyCode::BadRequestBody,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(d.code.status(), 400);
    }
    let d = deny_of(decide(
        &p,
        &h,
        Some(br#"{"max_tokens":18446744073709551615}"#),
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::BadRequestBody);
    assert!(d.message.contains("overflow"));
}

#[test]
fn empty_body_uses_default_model_and_max_tokens() {
    let mut v = spec_example();
    v["projects"][0]["policy"]["maxPerRequest"] = json!("1000000");
    v["projects"][0]["policy"]["approvalWorkflow"]["enabled"] = json!(false);
    v["globalPolicy"]
        .as_object_mut()
        .unwrap()
        .remove("requireApprovalAbove");
    let p = policy(&v);
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(b""),
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    // gpt-4, 0 input tokens, 1024 output tokens: 60000 * 1024 / 1000 = 61440.
    assert_eq!(a.estimate, Micros::new(61_440));
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        None,
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    assert_eq!(a.estimate, Micros::new(61_440));
}

#[test]
fn max_per_request_takes_the_lowest() {
    let p = policy(&spec_example());
    // max_tokens 4000 on gpt-4: output alone 240000 > project cap 200000 (org cap is 1000000).
    let body = br#"{"model":"gpt-4","max_tokens":4000}"#;
    let d = deny_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(body),
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    assert_eq!(d.code, DenyCode::MaxPerRequestExceeded);
    assert_eq!(
        d.message,
        "estimated cost 240270 is above the max per request of project sales-ai (200000)"
    );
    assert_eq!(d.project_id.as_deref(), Some("sales-ai"));
}

/// A view that knows some counters fit without reading them (the plugin's worker slices):
/// `decide` asks `check`, never `used`, for those.
struct Covered(Spent, &'static str);

impl BudgetView for Covered {
    fn used(&self, key: &BudgetKey) -> Micros {
        assert_ne!(key.storage_key(), self.1, "a covered counter was read");
        self.0.used(key)
    }
    fn check(&self, key: &BudgetKey, amount: Micros, limit: Micros) -> Result<(), Micros> {
        if key.storage_key() == self.1 {
            return Ok(());
        }
        let used = self.used(key);
        try_reserve(used, amount, limit)
            .map(|_| ())
            .map_err(|_| used)
    }
}

#[test]
fn budgets_are_checked_through_the_views_check() {
    let p = policy(&spec_example());
    let now = tuesday_10am_ny();
    let h = head(Some("sk-sales"), "api.salesforce.com", "/");
    let full = "project.monthly/sales-ai/2026-11";
    // Covered by the view: allowed although `used` would say full.
    let a = allow_of(decide(
        &p,
        &h,
        None,
        &Covered(spent(&[(full, 15_000_000)]), full),
        now,
    ));
    assert!(a.reservations.iter().any(|r| r.key.storage_key() == full));
    // Another counter refused through the default path, with its numbers.
    let d = deny_of(decide(
        &p,
        &h,
        None,
        &Covered(
            spent(&[(full, 15_000_000), ("org.monthly/2026-11", 99_999_500)]),
            full,
        ),
        now,
    ));
    assert_eq!(
        d.scope.map(crate::budget::ScopeKind::label),
        Some("org.monthly")
    );
    assert!(d.message.contains("99999500 spent"), "{}", d.message);
}

#[test]
fn budget_exceeded_names_scope_and_numbers() {
    let p = policy(&spec_example());
    let now = tuesday_10am_ny();
    let h = head(Some("sk-sales"), "api.salesforce.com", "/");
    let d = deny_of(decide(
        &p,
        &h,
        None,
        &spent(&[("project.monthly/sales-ai/2026-11", 14_999_500)]),
        now,
    ));
    assert_eq!(d.code, DenyCode::BudgetExceeded);
    assert_eq!(d.code.status(), 402);
    assert_eq!(
        d.scope.map(crate::budget::ScopeKind::label),
        Some("project.monthly")
    );
    assert_eq!(d.project_id.as_deref(), Some("sales-ai"));
    assert_eq!(
        d.message,
        "project sales-ai monthly budget: 15000000 limit, 14999500 spent, 1000 requested"
    );
    let json: Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(json["error"]["scope"], "project.monthly");
    assert_eq!(json["error"]["code"], "BUDGET_EXCEEDED");
    assert_eq!(json["error"]["projectId"], "sales-ai");

    for (key, scope) in [
        ("org.monthly/2026-11", "org.monthly"),
        ("org.daily/2026-11-24", "org.daily"),
        ("project.daily/sales-ai/2026-11-24", "project.daily"),
    ] {
        let limit = match scope {
            "org.monthly" => 100_000_000,
            "org.daily" => 5_000_000,
            _ => 500_000,
        };
        let d = deny_of(decide(&p, &h, None, &spent(&[(key, limit - 999)]), now));
        assert_eq!(d.scope.map(crate::budget::ScopeKind::label), Some(scope));
        // Exactly filling the budget is allowed.
        assert!(matches!(
            decide(&p, &h, None, &spent(&[(key, limit - 1000)]), now),
            Decision::Allow(_)
        ));
    }
    // Yesterday's spending does not count today; last month's does not count this month.
    let old = spent(&[
        ("project.daily/sales-ai/2026-11-23", 500_000),
        ("org.monthly/2026-10", 100_000_000),
    ]);
    assert!(matches!(
        decide(&p, &h, None, &old, now),
        Decision::Allow(_)
    ));
    // Several counters full: the message lists every one, scope names the first.
    let d = deny_of(decide(
        &p,
        &h,
        None,
        &spent(&[
            ("org.daily/2026-11-24", 5_000_000),
            ("project.daily/sales-ai/2026-11-24", 500_000),
        ]),
        now,
    ));
    assert_eq!(
        d.scope.map(crate::budget::ScopeKind::label),
        Some("org.daily")
    );
    assert_eq!(
        d.message,
        "org acme-corp daily budget: 5000000 limit, 5000000 spent, 1000 requested; \
         project sales-ai daily budget: 500000 limit, 500000 spent, 1000 requested"
    );
}

#[test]
fn no_budget_configured_means_no_counters() {
    let mut v = spec_example();
    for k in ["monthlyBudget", "dailyBudget"] {
        v["globalPolicy"].as_object_mut().unwrap().remove(k);
        v["projects"][0]["policy"]
            .as_object_mut()
            .unwrap()
            .remove(k);
    }
    let p = policy(&v);
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "api.salesforce.com", "/"),
        None,
        &spent(&[("org.monthly/2026-11", u64::MAX)]),
        tuesday_10am_ny(),
    ));
    assert!(a.reservations.is_empty());
}

#[test]
fn approval_threshold_auto_approve_and_replay() {
    let p = policy(&spec_example());
    let now = tuesday_10am_ny();
    let h = head(Some("sk-sales"), "api.openai.com", "/v1/chat/completions");
    // The seed's request: gpt-4, max_tokens 2000 → ~120000, above the workflow's 100000.
    let body = br#"{"model":"gpt-4","max_tokens":2000,"messages":[{"role":"user","content":"Analyse Q3"}]}"#;
    let Decision::NeedsApproval(n) = decide(&p, &h, Some(body), &NothingSpent, now) else {
        panic!()
    };
    assert_eq!(n.reason, ApprovalReason::Threshold);
    assert_eq!(n.estimate, Micros::new(120_660));
    assert_eq!(n.approvers, vec!["sales-lead@acme.com".to_string()]);
    assert_eq!(n.expires_after_secs, 86_400);
    assert_eq!(&*n.project_id, "sales-ai");
    let d = n.clone().into_standalone_deny();
    assert_eq!(d.code, DenyCode::ApprovalRequired);
    assert_eq!(d.code.status(), 403);
    // A validated replay skips the approval, everything else still applies.
    let HeadOutcome::Continue(pending) = p.check_head(&h, now) else {
        panic!()
    };
    let replay = FinishOptions {
        approved_replay: true,
        ..FinishOptions::default()
    };
    let a = allow_of(p.finish(&pending, Some(body), &NothingSpent, &replay));
    assert_eq!(a.estimate, Micros::new(120_660));
    let d = deny_of(p.finish(
        &pending,
        Some(body),
        &spent(&[("project.daily/sales-ai/2026-11-24", 400_000)]),
        &replay,
    ));
    assert_eq!(d.code, DenyCode::BudgetExceeded);
    // Below the threshold: allowed.
    assert!(matches!(
        decide(&p, &h, Some(SMALL_CHAT), &NothingSpent, now),
        Decision::Allow(_)
    ));
}

#[test]
fn auto_approve_below_wins_over_a_lower_threshold() {
    let mut v = spec_example();
    v["projects"][0]["policy"]["approvalWorkflow"]["autoApproveBelow"] = json!("150000");
    v["projects"][0]["policy"]["approvalWorkflow"]["requireApprovalAbove"] = json!("50000");
    let p = policy(&v);
    let h = head(Some("sk-sales"), "api.openai.com", "/");
    // 120660: above 50000 but below autoApproveBelow 150000 → allowed.
    let body = br#"{"model":"gpt-4","max_tokens":2000,"messages":[{"role":"user","content":"Analyse Q3"}]}"#;
    assert!(matches!(
        decide(&p, &h, Some(body), &NothingSpent, tuesday_10am_ny()),
        Decision::Allow(_)
    ));
    // 180000+: needs approval.
    let body = br#"{"model":"gpt-4","max_tokens":3000}"#;
    assert!(matches!(
        decide(&p, &h, Some(body), &NothingSpent, tuesday_10am_ny()),
        Decision::NeedsApproval(_)
    ));
}

#[test]
fn disabled_workflow_threshold_does_not_apply() {
    let mut v = spec_example();
    v["projects"][0]["policy"]["approvalWorkflow"]["enabled"] = json!(false);
    let p = policy(&v);
    let body = br#"{"model":"gpt-4","max_tokens":2000}"#;
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(body),
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    assert_eq!(a.estimate.get(), 120_270);
}

#[test]
fn requested_approval_header() {
    let p = policy(&spec_example());
    let mut h = head(Some("sk-sales"), "api.salesforce.com", "/");
    h.requires_approval = true;
    let Decision::NeedsApproval(n) = decide(&p, &h, None, &NothingSpent, tuesday_10am_ny()) else {
        panic!()
    };
    assert_eq!(n.reason, ApprovalReason::Requested);
    assert_eq!(n.estimate, Micros::new(1000));
}

#[test]
fn streaming_flag_reaches_the_settlement() {
    let p = policy(&spec_example());
    let body = br#"{"model":"gpt-4","max_tokens":10,"stream":true}"#;
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "api.openai.com", "/"),
        Some(body),
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    assert!(a.settlement.streaming);
}

#[test]
fn pending_from_another_policy_is_refused() {
    let p1 = policy(&spec_example());
    let mut v = spec_example();
    v["projects"][0]["name"] = json!("Renamed");
    let p2 = policy(&v);
    let h = head(Some("sk-sales"), "api.salesforce.com", "/");
    let HeadOutcome::Continue(pending) = p1.check_head(&h, tuesday_10am_ny()) else {
        panic!()
    };
    let d = deny_of(p2.finish(&pending, None, &NothingSpent, &FinishOptions::default()));
    assert_eq!(d.code, DenyCode::ControlPlaneUnavailable);
    assert_eq!(d.code.status(), 503);
    assert!(matches!(
        p1.finish(&pending, None, &NothingSpent, &FinishOptions::default()),
        Decision::Allow(_)
    ));
}

#[test]
fn catalogue_prefers_the_most_specific_host() {
    let mut v = spec_example();
    v["endpoints"].as_array_mut().unwrap().push(json!({ "host": "eu.api.deepl.com", "category": "translation", "pricing": { "perRequest": "3000" } }));
    v["projects"][0]["policy"]
        .as_object_mut()
        .unwrap()
        .remove("allowedEndpoints");
    v["clients"][0]["additionalRestrictions"]
        .as_object_mut()
        .unwrap()
        .remove("allowedEndpoints");
    let p = policy(&v);
    let now = tuesday_10am_ny();
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "eu.api.deepl.com", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(a.estimate, Micros::new(3000));
    let a = allow_of(decide(
        &p,
        &head(Some("sk-sales"), "us.api.deepl.com", "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(a.estimate, Micros::new(2000));
}

#[test]
fn acme_fixture_decisions() {
    let p = policy(&acme_policy());
    let now = tuesday_10am_ny();
    let key = acme_api_key(0);
    let body = br#"{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"user","content":"hello"}]}"#;
    let a = allow_of(decide(
        &p,
        &head(Some(&key), &llm_host(0), "/v1/chat/completions"),
        Some(body),
        &NothingSpent,
        now,
    ));
    assert_eq!(&*a.project_id, "team-0");
    assert_eq!(a.reservations.len(), 4);
    let a = allow_of(decide(
        &p,
        &head(Some(&key), &per_request_host(1), "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(a.estimate, Micros::new(1100));
    let d = deny_of(decide(
        &p,
        &head(Some("nope"), &llm_host(0), "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::UnknownApiKey);
    // Client 4 of each team has its team's first per-request host blocked.
    let d = deny_of(decide(
        &p,
        &head(Some(&acme_api_key(4)), &per_request_host(0), "/"),
        None,
        &NothingSpent,
        now,
    ));
    assert_eq!(d.code, DenyCode::EndpointBlocked);
}

#[test]
fn deny_code_all_lists_every_code_once_in_index_order() {
    for (i, code) in DenyCode::ALL.iter().enumerate() {
        assert_eq!(code.index(), i, "{code:?}");
    }
    let names: std::collections::BTreeSet<&str> =
        DenyCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), DenyCode::ALL.len(), "distinct wire strings");
}

#[test]
fn deny_codes_have_spec_strings_and_statuses() {
    let all = [
        (DenyCode::MissingApiKey, "MISSING_API_KEY", 401),
        (DenyCode::UnknownApiKey, "UNKNOWN_API_KEY", 401),
        (DenyCode::EndpointBlocked, "ENDPOINT_BLOCKED", 403),
        (DenyCode::EndpointNotAllowed, "ENDPOINT_NOT_ALLOWED", 403),
        (DenyCode::CategoryNotAllowed, "CATEGORY_NOT_ALLOWED", 403),
        (DenyCode::OutsideWorkingHours, "OUTSIDE_WORKING_HOURS", 403),
        (
            DenyCode::MaxPerRequestExceeded,
            "MAX_PER_REQUEST_EXCEEDED",
            403,
        ),
        (DenyCode::BudgetExceeded, "BUDGET_EXCEEDED", 402),
        (DenyCode::ApprovalDenied, "APPROVAL_DENIED", 403),
        (DenyCode::ApprovalExpired, "APPROVAL_EXPIRED", 403),
        (DenyCode::ApprovalMismatch, "APPROVAL_MISMATCH", 403),
        (DenyCode::ApprovalUsed, "APPROVAL_USED", 403),
        (DenyCode::ApprovalRequired, "APPROVAL_REQUIRED", 403),
        (
            DenyCode::ControlPlaneUnavailable,
            "CONTROL_PLANE_UNAVAILABLE",
            503,
        ),
        (DenyCode::BodyTooLarge, "BODY_TOO_LARGE", 413),
        (DenyCode::BadRequestBody, "BAD_REQUEST_BODY", 400),
    ];
    for (code, s, status) in all {
        assert_eq!(code.as_str(), s);
        assert_eq!(code.status(), status);
    }
    let d = Deny::new(DenyCode::MissingApiKey, "m");
    assert_eq!(
        d.to_json(),
        r#"{"error":{"code":"MISSING_API_KEY","message":"m"}}"#
    );
}

/// Issue 20 item 3: `{"model":"gpt-4","max_tokens":700,"n":128}` was estimated at 42330 (one
/// choice) and slipped under a 50000 cap and the approval threshold. Every choice is billed:
/// the estimate is 128 × 700 output tokens, so the cap refuses it and, without a cap, the
/// approval threshold holds it.
#[test]
fn n_choices_cannot_slip_under_the_cap_or_the_approval_threshold() {
    let body = br#"{"model":"gpt-4","max_tokens":700,"n":128}"#;
    let mut v = spec_example();
    v["projects"][0]["policy"]["maxPerRequest"] = json!("50000");
    let d = deny_of(decide(
        &policy(&v),
        &head(Some("sk-sales"), "api.openai.com", "/v1/chat/completions"),
        Some(body),
        &NothingSpent,
        tuesday_10am_ny(),
    ));
    assert_eq!(d.code, DenyCode::MaxPerRequestExceeded);
    // 60000 × 700 × 128 / 1000 output + ceil(43 / 4) = 11 input tokens at 30000/1k.
    assert!(
        d.message.contains("estimated cost 5376330 "),
        "{}",
        d.message
    );
    // No cap: the approval threshold (100000) holds it.
    let mut v = spec_example();
    v["projects"][0]["policy"]["maxPerRequest"] = json!("100000000");
    v["globalPolicy"]["maxPerRequest"] = json!("100000000");
    v["projects"][0]["policy"]["monthlyBudget"] = json!("15000000");
    v["projects"][0]["policy"]["dailyBudget"] = json!("15000000");
    v["globalPolicy"]["dailyBudget"] = json!("15000000");
    let decision = decide(
        &policy(&v),
        &head(Some("sk-sales"), "api.openai.com", "/v1/chat/completions"),
        Some(body),
        &NothingSpent,
        tuesday_10am_ny(),
    );
    let Decision::NeedsApproval(n) = decision else {
        panic!("expected approval, got {decision:?}");
    };
    assert_eq!(n.estimate, Micros::new(5_376_330));
}

/// The bound audits check against is the one `decide` applies: the lowest threshold, raised to
/// just under `autoApproveBelow`; a disabled workflow's threshold does not count.
#[test]
fn approval_bounds_match_what_decide_applies() {
    let bounds = |v: &Value| -> Vec<(String, u64)> {
        policy(v)
            .approval_bounds()
            .into_iter()
            .map(|(c, m)| (c.to_string(), m.get()))
            .collect()
    };
    let mut v = spec_example();
    assert_eq!(bounds(&v), [("sales-agent".to_string(), 100_000)]);
    v["projects"][0]["policy"]["approvalWorkflow"]["autoApproveBelow"] = json!("150000");
    v["projects"][0]["policy"]["approvalWorkflow"]["requireApprovalAbove"] = json!("50000");
    // 120660 is allowed and 180000+ needs approval (the test above): the bound is 149999.
    assert_eq!(bounds(&v), [("sales-agent".to_string(), 149_999)]);
    v["projects"][0]["policy"]["approvalWorkflow"]["enabled"] = json!(false);
    assert_eq!(bounds(&v), [("sales-agent".to_string(), 500_000)]);
    v["globalPolicy"]
        .as_object_mut()
        .unwrap()
        .remove("requireApprovalAbove");
    assert!(bounds(&v).is_empty());
}
