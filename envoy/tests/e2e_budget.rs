//! Budgets through a real Envoy (2 workers): reservation before forwarding, settlement from
//! the upstream's report (JSON usage, SSE usage, cost header), release on upstream failure,
//! concurrency against a small budget, org-wide and daily scopes.
//!
//! Settlement runs when the response stream ends, which can be just after the client has the
//! last byte: before the next request the tests wait for the settled/released counter
//! (bounded wait, then assert on the value — no timing asserts).
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use pag0_envoy::{Agent, Call};
use serde_json::{json, Value};

const SETTLED: &str = "pag0.cost.settled_micros";
const RESERVED: &str = "pag0.cost.reserved_micros";
const RELEASED: &str = "pag0.cost.released_micros";

/// Usage the mock reports when asked: 100 prompt + 50 completion tokens of gpt-4
/// = 100 × 30 + 50 × 60 = 6000 µ$.
const USAGE_QUERY: &str = "?prompt_tokens=100&completion_tokens=50";
const USAGE_COST: u64 = 6000;

fn estimate(r: &pag0_envoy::Reply) -> u64 {
    r.header("x-pag0-estimated-cost")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// p1 with a 100000 µ$ budget: one gpt-4 call with max_tokens 1000 reserves ~61000, so a
/// second call only fits if the first settled at its reported 6000.
#[test]
fn json_usage_settles_below_the_reservation() {
    let s = Stack::start(simple_policy(100_000));
    let mut c = Checks::default();
    let call = Call::post(
        "api.openai.com",
        &format!("/v1/chat/completions{USAGE_QUERY}"),
    )
    .key("sk-test-1")
    .json(&chat("gpt-4", 1000, false));
    let mut est_sum = 0;
    for i in 1..=3u64 {
        let r = s.send(&call);
        c.allow(&format!("call {i}"), &r, "p1");
        c.eq(
            &format!("call {i}: usage from the mock"),
            r.json().pointer("/usage/total_tokens").cloned(),
            Some(json!(150)),
        );
        est_sum += estimate(&r);
        let settled = s.counter_at_least(SETTLED, USAGE_COST * i);
        c.eq(&format!("settled after call {i}"), settled, USAGE_COST * i);
    }
    c.that(
        "each estimate exceeds half the budget (so settlement made room)",
        est_sum / 3 > 50_000,
        format!("estimates sum {est_sum}"),
    );
    // Counters reach Envoy's stats on the filter's tick: wait (bounded) for the value.
    let reserved = s.counter_at_least(RESERVED, est_sum);
    c.that(
        "reserved counts the estimates",
        reserved >= est_sum,
        format!("reserved {reserved}, estimates {est_sum}"),
    );
    c.finish(&s.envoy);
}

#[test]
fn sse_usage_in_the_last_event_settles_the_stream() {
    let s = Stack::start(simple_policy(100_000));
    let mut c = Checks::default();
    let call = Call::post(
        "api.openai.com",
        &format!("/v1/chat/completions{USAGE_QUERY}"),
    )
    .key("sk-test-1")
    .json(&chat("gpt-4", 1000, true));
    for i in 1..=3u64 {
        let r = s.send(&call);
        c.allow(&format!("stream {i}"), &r, "p1");
        c.that(
            &format!("stream {i}: SSE passes through whole"),
            r.body.contains("\"usage\"") && r.body.trim_end().ends_with("data: [DONE]"),
            &r.body,
        );
        c.eq(
            &format!("stream {i}: content type"),
            r.header("content-type"),
            Some("text/event-stream"),
        );
        let settled = s.counter_at_least(SETTLED, USAGE_COST * i);
        c.eq(
            &format!("settled after stream {i}"),
            settled,
            USAGE_COST * i,
        );
    }
    c.finish(&s.envoy);
}

#[test]
fn no_usage_report_charges_the_estimate() {
    let s = Stack::start(simple_policy(10_000_000));
    let mut c = Checks::default();
    let r = s.send(
        &Call::post("api.openai.com", "/v1/chat/completions?no_usage=1")
            .key("sk-test-1")
            .json(&chat("gpt-4", 100, true)),
    );
    c.allow("stream without usage", &r, "p1");
    let est = estimate(&r);
    let settled = s.counter_at_least(SETTLED, est);
    c.eq("settled = estimate", settled, est);
    c.finish(&s.envoy);
}

/// api.salesforce.com: perRequest 1000, `costHeader: x-request-cost`. Budget 2500 fits two
/// 1000 reservations; six calls only fit if each settles at its reported 250.
#[test]
fn cost_header_settles_and_can_exceed_the_estimate() {
    let s = Stack::start(simple_policy(2500));
    let mut c = Checks::default();
    for i in 1..=6u64 {
        let r = s.send(&Call::get("api.salesforce.com", "/cost?cost=250").key("sk-test-1"));
        c.allow(&format!("cheap call {i}"), &r, "p1");
        c.eq(
            &format!("cheap call {i}: header from the mock"),
            r.header("x-request-cost"),
            Some("250"),
        );
        let settled = s.counter_at_least(SETTLED, 250 * i);
        c.eq(&format!("settled after cheap call {i}"), settled, 250 * i);
    }
    // 1500 spent: one more 1000 reservation fits; it reports 1800, spending past the limit.
    let r = s.send(&Call::get("api.salesforce.com", "/cost?cost=1800").key("sk-test-1"));
    c.allow("expensive call", &r, "p1");
    let settled = s.counter_at_least(SETTLED, 1500 + 1800);
    c.eq("reported cost above the estimate is charged", settled, 3300);
    // A report above the whole budget (5000 on 2500) is suspect: charged the bound, the
    // lowest limit (docs/policy.md "Suspect reports").
    let r = s.send(&Call::get("api.salesforce.com", "/cost?cost=5000").key("sk-test-1"));
    c.deny("over the limit now", &r, 402, "BUDGET_EXCEEDED");
    let r = s.send(&Call::get("api.salesforce.com", "/cost?cost=1").key("sk-test-1"));
    c.deny("budget spent", &r, 402, "BUDGET_EXCEEDED");
    c.eq(
        "scope",
        r.json().pointer("/error/scope").cloned(),
        Some(json!("project.monthly")),
    );
    c.eq(
        "upstream saw only the allowed calls",
        s.mock.served_on("/cost"),
        7,
    );
    c.finish(&s.envoy);
}

/// 40 requests at once against a budget of exactly 10 (perRequest 1000, budget 10000), on 2
/// workers. The upstream holds each admitted request for 2 s, so all 40 are decided while
/// the admitted ones are still in flight: only the reservation can stop the 11th.
#[test]
fn forty_concurrent_requests_against_a_budget_of_ten() {
    let s = Stack::start(simple_policy(10_000));
    let n = 40;
    let barrier = Arc::new(Barrier::new(n));
    let port = s.envoy.port;
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let agent = Agent::new(port).expect("client");
                barrier.wait();
                agent
                    .send(&Call::get("slow.example.com", "/slow?ms=2000").key("sk-test-1"))
                    .map(|r| (r.status, r.code().to_owned()))
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").expect("request"))
        .collect();
    let allowed = results.iter().filter(|(st, _)| *st == 200).count();
    let over = results
        .iter()
        .filter(|(st, code)| *st == 402 && code == "BUDGET_EXCEEDED")
        .count();
    let mut c = Checks::default();
    c.eq("admitted", allowed, 10);
    c.eq("refused with BUDGET_EXCEEDED", over, 30);
    c.eq(
        "upstream saw exactly the admitted",
        s.mock.served_on("/slow"),
        10,
    );
    c.that(
        "the admitted were in flight together",
        s.mock.max_slow_in_flight() >= 2,
        format!("max in flight {}", s.mock.max_slow_in_flight()),
    );
    let settled = s.counter_at_least(SETTLED, 10_000);
    c.eq("no report: the estimates stand", settled, 10_000);
    c.eq(
        "counter of allowed",
        s.counter_at_least("pag0.requests.allowed", 10),
        10,
    );
    c.eq(
        "counter of BUDGET_EXCEEDED",
        s.counter_at_least("pag0.requests.denied.BUDGET_EXCEEDED", 30),
        30,
    );
    if allowed != 10 {
        eprintln!("results: {results:?}");
    }
    c.finish(&s.envoy);
}

/// Org budget 5000 shared by two projects of 5000 each: DeepL (2000) twice from project A
/// leaves 1000 in the org, so project B — untouched itself — is refused with `org.monthly`.
#[test]
fn org_budget_is_shared_across_projects() {
    let policy = json!({
        "orgId": "org-budget",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "5000", "allowedCategories": ["translation"] },
        "endpoints": endpoints(),
        "projects": [project("pa", 5000, json!({})), project("pb", 5000, json!({}))],
        "clients": [client("ca", "pa", "sk-a"), client("cb", "pb", "sk-b")]
    });
    let s = Stack::start(policy);
    let mut c = Checks::default();
    let deepl = |key: &str| {
        Call::post("api.deepl.com", "/v2/translate")
            .key(key)
            .body("Guten Tag")
    };
    for i in 1..=2u64 {
        let r = s.send(&deepl("sk-a"));
        c.allow(&format!("project A call {i}"), &r, "pa");
        s.counter_at_least(SETTLED, 2000 * i);
    }
    let r = s.send(&deepl("sk-b"));
    c.deny(
        "project B after A spent the org's budget",
        &r,
        402,
        "BUDGET_EXCEEDED",
    );
    let j: Value = r.json();
    c.eq(
        "scope",
        j.pointer("/error/scope").cloned(),
        Some(json!("org.monthly")),
    );
    c.eq(
        "projectId",
        j.pointer("/error/projectId").cloned(),
        Some(json!("pb")),
    );
    c.eq("upstream calls", s.mock.served_on("/v2/translate"), 2);
    c.finish(&s.envoy);
}

#[test]
fn daily_budget_scope() {
    let policy = json!({
        "orgId": "daily",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "1000000", "allowedCategories": ["translation"] },
        "endpoints": endpoints(),
        "projects": [project("pd", 100_000, json!({ "dailyBudget": "3000" }))],
        "clients": [client("cd", "pd", "sk-d")]
    });
    let s = Stack::start(policy);
    let mut c = Checks::default();
    let r = s.send(
        &Call::post("api.deepl.com", "/v2/translate")
            .key("sk-d")
            .body("a"),
    );
    c.allow("first", &r, "pd");
    s.counter_at_least(SETTLED, 2000);
    let r = s.send(
        &Call::post("api.deepl.com", "/v2/translate")
            .key("sk-d")
            .body("b"),
    );
    c.deny("second exceeds the day", &r, 402, "BUDGET_EXCEEDED");
    c.eq(
        "scope",
        r.json().pointer("/error/scope").cloned(),
        Some(json!("project.daily")),
    );
    c.finish(&s.envoy);
}

/// Budget 2000 = one DeepL call. A 5xx and a reset before any response byte must release
/// their reservation (cost 0), so a real call still fits afterwards — and then nothing more.
#[test]
fn upstream_errors_and_resets_release_the_reservation() {
    let s = Stack::start(simple_policy(2000));
    let mut c = Checks::default();
    let wait = std::time::Duration::from_secs(15);
    let r = s.send(
        &Call::post("api.deepl.com", "/status/503")
            .key("sk-test-1")
            .body("x"),
    );
    c.eq("5xx passes through", r.status, 503);
    let released = s.envoy.wait_counter(RELEASED, wait, |v| v >= 2000);
    c.eq("5xx released", released, 2000);

    let r = s.send(
        &Call::post("api.deepl.com", "/reset-before-headers")
            .key("sk-test-1")
            .body("x"),
    );
    c.eq("reset before headers: Envoy answers 503", r.status, 503);
    let released = s.envoy.wait_counter(RELEASED, wait, |v| v >= 4000);
    c.eq("reset before headers released", released, 4000);
    // A settle would have reached the stats with (and before) the release of its request.
    c.eq("nothing settled yet", s.envoy.pag0_counter(SETTLED), 0);

    let r = s.send(
        &Call::post("api.deepl.com", "/v2/translate")
            .key("sk-test-1")
            .body("x"),
    );
    c.allow("budget still whole", &r, "p1");
    s.counter_at_least(SETTLED, 2000);
    let r = s.send(
        &Call::post("api.deepl.com", "/v2/translate")
            .key("sk-test-1")
            .body("x"),
    );
    c.deny("then spent", &r, 402, "BUDGET_EXCEEDED");
    c.eq("upstream calls", s.mock.served_total(), 3);
    c.finish(&s.envoy);
}

/// A reset after the `200` headers: the reservation must be closed — charged (the estimate
/// stands: no usage was reported) or released — never left open. Either way the counters
/// balance: reserved = settled-at-estimate + released.
#[test]
fn a_reset_mid_response_leaves_no_open_reservation() {
    let s = Stack::start(simple_policy(1_000_000));
    let mut c = Checks::default();
    let reply = s.agent.send(
        &Call::post("api.deepl.com", "/reset")
            .key("sk-test-1")
            .body("x"),
    );
    c.that(
        "the client sees the cut",
        reply
            .as_ref()
            .map(|r| !r.body.ends_with('}'))
            .unwrap_or(true),
        format!("{reply:?}"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (settled, released) = loop {
        let (st, rel) = (
            s.envoy.pag0_counter(SETTLED),
            s.envoy.pag0_counter(RELEASED),
        );
        if st + rel >= 2000 || std::time::Instant::now() > deadline {
            break (st, rel);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    c.eq(
        "settled + released = the one reservation",
        settled + released,
        2000,
    );
    c.eq("reserved", s.counter_at_least(RESERVED, 2000), 2000);
    eprintln!("mid-response reset: settled {settled}, released {released}");
    c.finish(&s.envoy);
}
