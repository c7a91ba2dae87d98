//! `decide()` on the acme policy (10 teams, 50 clients, 40 endpoints): what the filter pays
//! per request in the decision core (key hash, rule checks, body parse, estimate, budgets).

// Bench code: a failed setup should stop the run loudly.
#![allow(clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use pag0_policy::budget::NothingSpent;
use pag0_policy::fixtures::{acme_api_key, acme_policy, llm_host, per_request_host};
use pag0_policy::{decide, CompiledPolicy, Decision, DenyCode, RequestHead};

fn bench_decide(c: &mut Criterion) {
    let policy = CompiledPolicy::from_value(&acme_policy()).expect("the acme policy validates");
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc);
    // Client 17 (team-3): a middle entry, not the first in any table.
    let key = acme_api_key(17);
    let llm = llm_host(0);
    let per_request = per_request_host(9);
    let body = br#"{"model":"gpt-4o-mini","max_tokens":512,"temperature":0.2,"messages":[{"role":"system","content":"You are a helpful sales assistant."},{"role":"user","content":"Summarise the last quarter's pipeline for the EMEA region in five bullet points."}]}"#;

    let token_head = RequestHead {
        api_key: Some(&key),
        method: "POST",
        authority: &llm,
        path: "/v1/chat/completions",
        requires_approval: false,
    };
    let per_request_head = RequestHead {
        api_key: Some(&key),
        method: "POST",
        authority: &per_request,
        path: "/v2/translate",
        requires_approval: false,
    };
    let denied_head = RequestHead {
        api_key: Some(&key),
        method: "POST",
        authority: "suspicious-api.com",
        path: "/",
        requires_approval: false,
    };
    // Sanity: the three cases decide what their names say.
    assert!(matches!(
        decide(&policy, &token_head, Some(body), &NothingSpent, now),
        Decision::Allow(_)
    ));
    assert!(matches!(
        decide(&policy, &per_request_head, None, &NothingSpent, now),
        Decision::Allow(_)
    ));
    assert!(matches!(
        decide(&policy, &denied_head, None, &NothingSpent, now),
        Decision::Deny(d) if d.code == DenyCode::EndpointBlocked
    ));

    let mut g = c.benchmark_group("decide");
    g.bench_function("allow_token_priced_with_body", |b| {
        b.iter(|| {
            decide(
                black_box(&policy),
                black_box(&token_head),
                Some(black_box(&body[..])),
                &NothingSpent,
                now,
            )
        })
    });
    g.bench_function("allow_per_request", |b| {
        b.iter(|| {
            decide(
                black_box(&policy),
                black_box(&per_request_head),
                None,
                &NothingSpent,
                now,
            )
        })
    });
    g.bench_function("deny_blocked_early", |b| {
        b.iter(|| {
            decide(
                black_box(&policy),
                black_box(&denied_head),
                None,
                &NothingSpent,
                now,
            )
        })
    });
    g.finish();

    c.bench_function("compile_acme_policy", |b| {
        let bytes = serde_json::to_vec(&acme_policy()).unwrap_or_default();
        b.iter(|| CompiledPolicy::compile(black_box(&bytes)).is_ok())
    });
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
