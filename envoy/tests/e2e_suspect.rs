//! Issue 20 item 2 through real Envoy, both modes: one absurd cost report of project A
//! (`x-request-cost: 18446744073709551615`, `usage` of 2^64−1 tokens) locked out every project
//! of the org (standalone: saturated counters, 402; managed: a batch the sidecar refused and
//! the filter resent forever, 503). Now the report is charged the request's bound, counted as
//! suspect, and project B keeps getting 200 — and so does A, within its own budget.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use pag0_envoy::harness::{Sidecar, SidecarConfig};
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";
const HUGE: &str = "18446744073709551615";
const SUSPECT: &str = "pag0.cost.suspect_reports";
const SETTLED: &str = "pag0.cost.settled_micros";
const WAIT: Duration = Duration::from_secs(20);

/// Org budget 10 USD a month; projects A and B with 2 USD each; A has a client `sk-a`, B `sk-b`.
fn two_projects() -> Value {
    json!({
        "orgId": "test-org",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "10000000",
            "dailyBudget": "10000000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"]
        },
        "endpoints": endpoints(),
        "projects": [
            project("pa", 2_000_000, json!({})),
            project("pb", 2_000_000, json!({}))
        ],
        "clients": [client("ca", "pa", "sk-a"), client("cb", "pb", "sk-b")]
    })
}

/// A's absurd reports: a cost header of 2^64−1 and a usage of 2^64−1 tokens each way.
fn absurd_calls() -> Vec<(&'static str, Call)> {
    vec![
        (
            "cost header 2^64-1",
            Call::get("api.salesforce.com", &format!("/cost?cost={HUGE}"))
                .key("sk-a")
                .header("connection", "close"),
        ),
        (
            "usage 2^64-1 tokens",
            Call::post(
                "api.openai.com",
                &format!("/v1/chat/completions?prompt_tokens={HUGE}&completion_tokens={HUGE}"),
            )
            .key("sk-a")
            .header("connection", "close")
            .json(&chat("gpt-4", 10, false)),
        ),
    ]
}

fn ordinary(key: &str) -> Vec<Call> {
    vec![
        Call::get("api.salesforce.com", "/cost?cost=500")
            .key(key)
            .header("connection", "close"),
        Call::post("api.openai.com", "/v1/chat/completions")
            .key(key)
            .header("connection", "close")
            .json(&chat("gpt-4", 10, false)),
    ]
}

fn send(agent: &Agent, envoy: &Envoy, call: &Call) -> Reply {
    agent
        .send(call)
        .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()))
}

/// After A's absurd reports: B (and A) are served, on every worker, for `for_how_long`.
fn others_keep_being_served(
    c: &mut Checks,
    agent: &Agent,
    envoy: &Envoy,
    mode: &str,
    for_how_long: Duration,
) -> u64 {
    let t0 = Instant::now();
    let mut served = 0;
    while t0.elapsed() < for_how_long || served < 8 {
        for (i, call) in ordinary("sk-b").iter().enumerate() {
            let r = send(agent, envoy, call);
            c.allow(&format!("{mode}: project B call {served}/{i}"), &r, "pb");
            served += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, call) in ordinary("sk-a").iter().enumerate() {
        let r = send(agent, envoy, call);
        c.allow(&format!("{mode}: project A, after, call {i}"), &r, "pa");
    }
    served
}

#[test]
fn standalone_one_absurd_report_leaves_other_projects_served() {
    let s = Stack::start(two_projects());
    let mut c = Checks::default();
    for (label, call) in absurd_calls() {
        let r = s.send(&call);
        c.allow(&format!("standalone: {label}"), &r, "pa");
    }
    let suspect = s.envoy.wait_counter(SUSPECT, WAIT, |v| v >= 2);
    c.eq("standalone: suspect reports counted", suspect, 2);
    let served = others_keep_being_served(&mut c, &s.agent, &s.envoy, "standalone", Duration::ZERO);
    // What was charged in all: A's two bounds (10 × 1000 for salesforce, 10 × the chat
    // estimate) plus the ordinary calls — nowhere near 2^63.
    let settled = s.envoy.wait_counter(SETTLED, WAIT, |v| v > 0);
    c.that(
        "standalone: settled stays bounded",
        settled < 2_000_000,
        format!("settled {settled} µ$ after {served} calls of B"),
    );
    c.that(
        "standalone: the suspect report is logged with its raw value",
        s.envoy.log().contains("suspect cost report for project pa")
            && s.envoy.log().contains(HUGE),
        "no warning in the Envoy log",
    );
    println!("standalone: {served} calls of project B served after A's absurd reports; settled {settled} µ$");
    c.finish(&s.envoy);
}

fn sidecar_config(dir: &Path) -> SidecarConfig {
    SidecarConfig {
        data_dir: dir.to_path_buf(),
        database_url: None,
        database_schema: None,
        admin_token: ADMIN.into(),
        sync_secret: SECRET.into(),
        lease_ttl_ms: 30_000,
        port: 0,
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn spent(sc: &Sidecar, counter: &str) -> u64 {
    let r = http()
        .get(sc.url("/v1/budgets"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    let v: Value = r.json().unwrap_or(Value::Null);
    find_spent(&v, counter).unwrap_or(0)
}

#[test]
fn managed_one_absurd_report_leaves_other_projects_served_and_reaches_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(&sidecar_config(dir.path())).unwrap();
    let r = http()
        .put(sc.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(two_projects().to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "PUT /v1/policy: {}", r.status());
    let mock = MockUpstream::start().unwrap();
    let interval = 300;
    let mut cfg = EnvoyConfig::new(
        json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                             "syncIntervalMs": interval, "timeoutMs": 200,
                             "failureMode": "closed", "syncSecret": SECRET } }),
        mock.port(),
    );
    cfg.sidecar_port = Some(sc.port);
    let envoy = Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(envoy.port).unwrap();

    // The first policy arrives with the first sync.
    let t0 = Instant::now();
    let probe = Call::get("api.salesforce.com", "/cost?cost=1").key("sk-b");
    while send(&agent, &envoy, &probe).status != 200 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    every_worker_has_the_policy(&agent, &envoy);

    let mut c = Checks::default();
    for (label, call) in absurd_calls() {
        let r = send(&agent, &envoy, &call);
        c.allow(&format!("managed: {label}"), &r, "pa");
    }
    let suspect = envoy.wait_counter(SUSPECT, WAIT, |v| v >= 2);
    c.eq("managed: suspect reports counted", suspect, 2);
    // Several sync intervals: the batch with A's records is accepted, nothing is stuck.
    let served = others_keep_being_served(
        &mut c,
        &agent,
        &envoy,
        "managed",
        Duration::from_millis(10 * interval),
    );
    // A's records reached the sidecar's ledger, bounded.
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let counter = format!("project.monthly/pa/{month}");
    let t0 = Instant::now();
    while spent(&sc, &counter) < 10_000 && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_spent = spent(&sc, &counter);
    c.that(
        "managed: A's bounded charges are at the sidecar",
        (10_000..2_000_000).contains(&a_spent),
        format!("{counter} spent {a_spent}"),
    );
    // The sidecar keeps the suspect records with their raw reports.
    let listed = |sc: &Sidecar| -> Vec<Value> {
        let r = http()
            .get(sc.url("/v1/usage/exceptions"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        let v: Value = r.json().unwrap_or(Value::Null);
        v["exceptions"].as_array().cloned().unwrap_or_default()
    };
    let t0 = Instant::now();
    while listed(&sc).len() < 2 && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let exceptions = listed(&sc);
    c.eq(
        "managed: suspect records listed at the sidecar",
        exceptions.len(),
        2,
    );
    for e in &exceptions {
        c.eq(
            "managed: exception kind",
            e["kind"].as_str(),
            Some("suspect"),
        );
        c.that(
            "managed: the raw report is kept",
            e["reason"].as_str().is_some_and(|r| r.contains(HUGE)),
            e.to_string(),
        );
    }
    let refused = envoy.pag0_counter("pag0.sync.refused_batches");
    c.eq("managed: no batch refused", refused, 0);
    c.that(
        "managed: the sidecar never refused a batch",
        !sc.log().contains("BAD_SYNC") && !envoy.log().contains("refused usage batch"),
        format!("sidecar log:\n{}", sc.log()),
    );
    println!("managed: {served} calls of project B served after A's absurd reports; A spent {a_spent} µ$ at the sidecar");
    c.finish(&envoy);
}
