use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::*;
use crate::budget::{BudgetKey, NothingSpent};
use crate::decide::{decide, ApprovalReason};
use crate::fixtures::{acme_api_key, acme_policy, llm_host, per_request_host, CLIENTS};
use crate::validate::tests::spec_example;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn compiled(v: &Value) -> CompiledPolicy {
    CompiledPolicy::from_value(v).unwrap()
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

/// What a decision looks like from outside: allow + estimate + counters, deny + code +
/// scope, or held for approval + estimate.
fn shape(d: &Decision) -> String {
    match d {
        Decision::Allow(a) => {
            let keys: Vec<String> = a
                .reservations
                .iter()
                .map(|r| format!("{}<={}", r.key.storage_key(), r.limit))
                .collect();
            format!("allow {} {}", a.estimate, keys.join(","))
        }
        Decision::Deny(d) => format!("deny {} {:?}", d.code.as_str(), d.scope),
        Decision::NeedsApproval(n) => format!("approval {} {:?}", n.estimate, n.reason),
    }
}

fn estimate_of(d: &Decision) -> Micros {
    match d {
        Decision::Allow(a) => a.estimate,
        Decision::NeedsApproval(n) => n.estimate,
        Decision::Deny(_) => Micros::ZERO,
    }
}

/// Every client of the acme fixture against a mix of hosts (allowed, blocked, off-list,
/// token-priced with a body, uncatalogued), in and out of working hours, with budgets nearly
/// spent: re-deciding from the record (client id, recorded estimate, no body, no key) gives
/// the filter's own decision every time.
#[test]
fn a_recorded_request_is_decided_again_exactly_as_the_filter_decided_it() {
    let p = compiled(&acme_policy());
    let body = json!({ "model": "gpt-4", "max_tokens": 700,
                       "messages": [{ "role": "user", "content": "summarise the pipeline" }] })
    .to_string();
    let hosts: Vec<String> = (0..4)
        .map(llm_host)
        .chain((0..12).map(per_request_host))
        .chain([
            "suspicious-api.com".to_string(),
            "nowhere.example".to_string(),
        ])
        .collect();
    let times = [
        at("2026-11-24T15:00:00Z"), // Tuesday 10:00 New York
        at("2026-11-24T03:00:00Z"), // Monday night New York
        at("2026-11-29T18:00:00Z"), // Sunday
    ];
    let mut spent = HashMap::new();
    spent.insert("org.daily/2026-11-24".to_string(), Micros::new(19_999_000));
    let budgets = Spent(spent);
    // What the filter estimated for the body (recorded with every decision, refusals too).
    let body_estimate = {
        let head = RequestHead {
            api_key: Some(&acme_api_key(0)),
            method: "POST",
            authority: "api.openai.com",
            path: "/v1/chat/completions",
            requires_approval: false,
        };
        let HeadOutcome::Continue(pending) = p.check_head(&head, times[0]) else {
            panic!("agent-0 may call api.openai.com on a Tuesday morning");
        };
        let replay = FinishOptions {
            approved_replay: true,
            ..FinishOptions::default()
        };
        match p.finish(&pending, Some(body.as_bytes()), &NothingSpent, &replay) {
            Decision::Allow(a) => a.estimate,
            other => panic!("expected an allow, got {other:?}"),
        }
    };
    assert!(body_estimate > Micros::ZERO);
    let mut compared = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..CLIENTS {
        let key = acme_api_key(i);
        let client_id = format!("agent-{i}");
        for host in &hosts {
            for now in times {
                let priced_by_tokens = host.starts_with("api.openai") || host.contains(".llm");
                let b = priced_by_tokens.then_some(body.as_bytes());
                let head = RequestHead {
                    api_key: Some(&key),
                    method: "POST",
                    authority: host,
                    path: "/v1/chat/completions",
                    requires_approval: i % 7 == 0,
                };
                let live = decide(&p, &head, b, &budgets, now);
                let recorded = RecordedRequest {
                    client_id: &client_id,
                    method: "POST",
                    authority: host,
                    path: "/v1/chat/completions",
                    at: now,
                    estimate: if priced_by_tokens {
                        body_estimate
                    } else {
                        estimate_of(&live)
                    },
                    requires_approval: i % 7 == 0,
                    approved_replay: false,
                };
                let again = p.redecide(&recorded, &budgets);
                assert_eq!(
                    shape(&again),
                    shape(&live),
                    "client {client_id} on {host} at {now}"
                );
                kinds.insert(
                    shape(&live)
                        .split(' ')
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, CLIENTS * hosts.len() * times.len());
    // The sample covers allows, approvals and the interesting refusals.
    for want in [
        "allow",
        "approval",
        "deny ENDPOINT_BLOCKED",
        "deny ENDPOINT_NOT_ALLOWED",
        "deny OUTSIDE_WORKING_HOURS",
        "deny BUDGET_EXCEEDED",
    ] {
        assert!(
            kinds.iter().any(|k| k.starts_with(want)),
            "{want} not seen: {kinds:?}"
        );
    }
}

fn sales(at_: DateTime<Utc>, host: &'static str, estimate: u64) -> RecordedRequest<'static> {
    RecordedRequest {
        client_id: "sales-agent",
        method: "GET",
        authority: host,
        path: "/v1/query",
        at: at_,
        estimate: Micros::new(estimate),
        requires_approval: false,
        approved_replay: false,
    }
}

/// Tuesday 10:00 in New York (inside sales-agent's working hours).
fn tuesday() -> DateTime<Utc> {
    at("2026-11-24T15:00:00Z")
}

#[test]
fn a_draft_that_blocks_a_host_refuses_its_recorded_calls() {
    let current = compiled(&spec_example());
    let r = sales(tuesday(), "api.salesforce.com", 1000);
    assert_eq!(
        shape(&current.redecide(&r, &NothingSpent))
            .split(' ')
            .next(),
        Some("allow")
    );

    let mut draft = spec_example();
    draft["globalPolicy"]["blockedEndpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!("api.salesforce.com"));
    let d = compiled(&draft).redecide(&r, &NothingSpent);
    match d {
        Decision::Deny(d) => {
            assert_eq!(d.code, DenyCode::EndpointBlocked);
            assert_eq!(d.project_id.as_deref(), Some("sales-ai"));
        }
        other => panic!("expected ENDPOINT_BLOCKED, got {other:?}"),
    }
}

#[test]
fn per_request_prices_come_from_the_draft_and_token_prices_from_the_record() {
    let mut draft = spec_example();
    // Salesforce now costs 3000 a call; the recorded 1000 no longer applies.
    draft["endpoints"][2]["pricing"]["perRequest"] = json!("3000");
    // Token prices tripled too — but the body that was priced is gone.
    draft["endpoints"][0]["pricing"]["models"]["gpt-4"]["outputPer1k"] = json!("180000");
    let p = compiled(&draft);
    let sf = p.redecide(&sales(tuesday(), "api.salesforce.com", 1000), &NothingSpent);
    assert_eq!(estimate_of(&sf), Micros::new(3000));
    let llm = p.redecide(&sales(tuesday(), "api.openai.com", 54_321), &NothingSpent);
    assert_eq!(estimate_of(&llm), Micros::new(54_321));
}

#[test]
fn budgets_are_checked_against_the_view_given() {
    let p = compiled(&spec_example());
    let r = sales(tuesday(), "api.salesforce.com", 1000);
    let mut spent = HashMap::new();
    spent.insert(
        "project.daily/sales-ai/2026-11-24".to_string(),
        Micros::new(499_500),
    );
    match p.redecide(&r, &Spent(spent)) {
        Decision::Deny(d) => {
            assert_eq!(d.code, DenyCode::BudgetExceeded);
            assert_eq!(
                d.scope.map(crate::budget::ScopeKind::label),
                Some("project.daily")
            );
        }
        other => panic!("expected BUDGET_EXCEEDED, got {other:?}"),
    }
}

#[test]
fn a_client_the_draft_removed_is_an_unknown_key() {
    let mut draft = spec_example();
    draft["clients"] = json!([]);
    let d = compiled(&draft).redecide(&sales(tuesday(), "api.salesforce.com", 1000), &NothingSpent);
    match d {
        Decision::Deny(d) => assert_eq!(d.code, DenyCode::UnknownApiKey),
        other => panic!("expected UNKNOWN_API_KEY, got {other:?}"),
    }
}

#[test]
fn approval_thresholds_apply_and_an_approved_replay_skips_them() {
    let p = compiled(&spec_example());
    // Above sales-ai's requireApprovalAbove (100000), under its maxPerRequest (200000).
    let mut r = sales(tuesday(), "api.openai.com", 150_000);
    match p.redecide(&r, &NothingSpent) {
        Decision::NeedsApproval(n) => {
            assert_eq!(n.reason, ApprovalReason::Threshold);
            assert_eq!(n.estimate, Micros::new(150_000));
        }
        other => panic!("expected an approval, got {other:?}"),
    }
    r.approved_replay = true;
    assert!(matches!(p.redecide(&r, &NothingSpent), Decision::Allow(_)));
    // Working hours still hold for a replay: Sunday is refused.
    r.at = tuesday() + Duration::days(5);
    match p.redecide(&r, &NothingSpent) {
        Decision::Deny(d) => assert_eq!(d.code, DenyCode::OutsideWorkingHours),
        other => panic!("expected OUTSIDE_WORKING_HOURS, got {other:?}"),
    }
}
