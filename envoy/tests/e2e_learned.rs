//! Issue 23 through real Envoy: learned estimates keep the demo's sales-ai day within budget.
//!
//! The sales-ai sequence of `make demo`, unmodified (the seed policy `envoy/policies/acme.json`,
//! the same requests in the same order, client `sales-crm-sync`): a gpt-4 call, a Salesforce
//! query reporting $0.0035, then Salesforce bulk exports listed at $0.001 that report $0.12
//! each, until one is refused. Without learning the day ends at $0.60 of its $0.50; with it,
//! the first export teaches the filter what an export costs, the next ones reserve $0.12, and
//! the export that would cross the day is refused `402 BUDGET_EXCEEDED` (`project.daily`).
//! Standalone (shared data of one Envoy) and managed (a sidecar, SQLite).
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use pag0_envoy::harness::{Sidecar, SidecarConfig};
use pag0_envoy::policies::acme_policy;
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

const KEY: &str = "sk-demo-sales-sync";
/// sales-ai's `dailyBudget` in the seed policy.
const DAY: u64 = 500_000;
const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";

/// What one run of the sequence ended with.
struct Run {
    replies: Vec<Reply>,
    /// `pag0.cost.settled_micros` at the end: everything this test charged (sales-ai only).
    settled: u64,
}

/// The demo's sales-ai requests (envoy/src/bin/demo.rs), in order: each allowed one is
/// settled before the next is sent, as in the demo.
/// `already`: decisions the filter counted before (managed mode's probes).
fn sales_day(agent: &Agent, envoy: &Envoy, already: u64) -> Run {
    let chat = json!({ "model": "gpt-4", "max_tokens": 300, "stream": false,
                       "messages": [{ "role": "user",
                                      "content": "Qualify lead ACME-42 for the enterprise deal" }] });
    let mut calls = vec![
        Call::post("api.openai.com", "/v1/chat/completions").json(&chat),
        Call::get("api.salesforce.com", "/cost?cost=3500"),
    ];
    for i in 1..=10 {
        calls.push(Call::get(
            "api.salesforce.com",
            &format!("/cost?cost=120000&export={i}"),
        ));
    }
    let mut replies: Vec<Reply> = Vec::new();
    for (n, call) in calls.into_iter().enumerate() {
        let r = agent
            .send(&call.key(KEY))
            .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()));
        let allowed = r.decision() == "allow";
        let export = n >= 2;
        replies.push(r);
        settled(envoy, already + replies.len() as u64);
        if export && !allowed {
            break;
        }
    }
    let settled = envoy.pag0_counter("pag0.cost.settled_micros");
    Run { replies, settled }
}

/// Bounded wait until the filter counted `n` decisions and every reservation is closed.
fn settled(envoy: &Envoy, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let c = envoy.pag0_counters();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        let counted: u64 = c
            .iter()
            .filter(|(k, _)| {
                *k == "pag0.requests.allowed" || k.starts_with("pag0.requests.denied.")
            })
            .map(|(_, v)| *v)
            .sum();
        if counted >= n
            && get("pag0.cost.settled_micros") + get("pag0.cost.released_micros")
                >= get("pag0.cost.reserved_micros")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("requests not settled in 15 s:\n{}", envoy.log());
}

fn estimate(r: &Reply) -> Option<u64> {
    r.header("x-pag0-estimated-cost")
        .and_then(|v| v.parse().ok())
}

/// The run ended as the issue wants: within the day, the crossing export refused with its scope.
fn assert_within_the_day(run: &Run, mode: &str) {
    let summary: Vec<String> = run
        .replies
        .iter()
        .map(|r| format!("{} {} {:?}", r.status, r.decision(), estimate(r)))
        .collect();
    let exports = run.replies.len() - 2;
    println!(
        "{mode}: {exports} exports sent, the day ended at {} µ$ of {DAY} ({summary:?})",
        run.settled
    );
    assert!(
        run.settled <= DAY,
        "{mode}: the day ended over budget at {}: {summary:?}",
        run.settled
    );
    let last = run.replies.last().unwrap();
    assert_eq!(last.status, 402, "{mode}: {}", last.body);
    assert_eq!(last.code(), "BUDGET_EXCEEDED", "{mode}: {}", last.body);
    let err = last.json();
    assert_eq!(
        err["error"]["scope"], "project.daily",
        "{mode}: {}",
        last.body
    );
    assert_eq!(
        err["error"]["projectId"], "sales-ai",
        "{mode}: {}",
        last.body
    );
    // It asked for the learned $0.12, not the listed $0.001.
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.ends_with("120000 requested"), "{mode}: {msg}");
    // Every allowed request still shows the catalogue's estimate.
    for r in run
        .replies
        .iter()
        .skip(2)
        .filter(|r| r.decision() == "allow")
    {
        assert_eq!(estimate(r), Some(1000), "{mode}: {}", r.body);
    }
    // Day budget $0.50, ~$0.0075 before the exports (the gpt-4 call's usage and the $0.0035
    // query): four $0.12 exports fit, the fifth is refused.
    assert_eq!(exports, 5, "{mode}: {summary:?}");
    assert!(
        run.replies[2..6].iter().all(|r| r.decision() == "allow"),
        "{mode}: {summary:?}"
    );
}

#[test]
fn standalone_the_sales_day_ends_within_its_budget_and_pinning_brings_the_overshoot_back() {
    pag0_envoy::harness::check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let policy = acme_policy().unwrap();
    let mock = MockUpstream::start().unwrap();
    {
        let envoy = Envoy::start(&EnvoyConfig::standalone(policy.clone(), mock.port()))
            .unwrap_or_else(|e| panic!("{e}"));
        let agent = Agent::new(envoy.port).unwrap();
        let run = sales_day(&agent, &envoy, 0);
        assert_within_the_day(&run, "standalone");
        // The learned figure is this Envoy's shared data; what the filter learned shows in the
        // estimates it reserved (reserved_micros counts the learned reservations).
        let reserved = envoy.pag0_counter("pag0.cost.reserved_micros");
        assert!(
            reserved >= 1000 + 2 * 120_000,
            "the exports after the first reserved $0.12: {reserved}"
        );
    }

    // The same day with Salesforce's estimate pinned (`learn: false`): the old behaviour, five
    // exports and a day over budget. (So the test above can fail.)
    let mut pinned = policy;
    for e in pinned["endpoints"].as_array_mut().unwrap() {
        if e["host"] == "api.salesforce.com" {
            e["learn"] = Value::Bool(false);
        }
    }
    let envoy = Envoy::start(&EnvoyConfig::standalone(pinned, mock.port()))
        .unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(envoy.port).unwrap();
    let run = sales_day(&agent, &envoy, 0);
    println!(
        "pinned: {} exports sent, the day ended at {} µ$ of {DAY}",
        run.replies.len() - 2,
        run.settled
    );
    assert!(
        run.settled > DAY,
        "pinned estimates overshoot: {}",
        run.settled
    );
    let last = run.replies.last().unwrap();
    assert_eq!(last.code(), "BUDGET_EXCEEDED", "{}", last.body);
}

#[test]
fn managed_the_sales_day_ends_within_its_budget_and_the_fleet_learns() {
    pag0_envoy::harness::check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(&SidecarConfig {
        data_dir: dir.path().to_path_buf(),
        database_url: None,
        database_schema: None,
        admin_token: ADMIN.into(),
        sync_secret: SECRET.into(),
        lease_ttl_ms: 30_000,
        port: 0,
    })
    .unwrap();
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let put = http
        .put(sc.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(acme_policy().unwrap().to_string())
        .send()
        .unwrap();
    assert!(
        put.status().is_success(),
        "{}",
        put.text().unwrap_or_default()
    );
    let mock = MockUpstream::start().unwrap();
    let mut cfg = EnvoyConfig::new(
        json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                             "syncIntervalMs": 300, "timeoutMs": 1000, "failureMode": "closed",
                             "syncSecret": SECRET } }),
        mock.port(),
    );
    cfg.sidecar_port = Some(sc.port);
    let envoy = Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(envoy.port).unwrap();
    // Until every worker runs the sidecar's policy (503 before, 401 without a key after;
    // fresh connections spread the probes over the workers).
    let probe = Call::post("api.deepl.com", "/v2/translate").header("connection", "close");
    let (t0, mut streak, mut probes) = (Instant::now(), 0, 0u64);
    while streak < 12 {
        let r = agent.send(&probe).unwrap();
        probes += 1;
        if r.code() == "MISSING_API_KEY" {
            streak += 1;
            continue;
        }
        streak = 0;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no policy:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every probe was a decision the filter counts (503 or 401).
    let run = sales_day(&agent, &envoy, probes);
    assert_within_the_day(&run, "managed");

    // The sidecar learned it too, from the usage records, and serves it in each sync.
    let t0 = Instant::now();
    let learned = loop {
        let v: Value = http
            .get(sc.url("/v1/analytics"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap_or(Value::Null);
        let row = v["estimates"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["endpoint"] == "api.salesforce.com"))
            .cloned();
        if let Some(row) = row.filter(|r| r["samples"].as_u64() >= Some(4)) {
            break row;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no learned estimate at the sidecar: {v}\n{}",
            sc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("managed: the sidecar's figure for api.salesforce.com: {learned}");
    assert_eq!(learned["learnedPermille"], "120000", "{learned}");
}
