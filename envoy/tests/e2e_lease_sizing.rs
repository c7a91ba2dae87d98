//! Managed mode with the seed's acme sizes, through a real `pag0-sidecar` (SQLite in a
//! tempdir) and a real Envoy (2 workers): a project day of $0.50 (500000 micro-USD) and a call
//! of $0.12 (120000). The first lease slice (1/16 of the day, 31250) cannot hold one call; the
//! filter holds the call for one on-path lease call sized to the calls (docs/sync-protocol.md,
//! "Room on the request path"), so:
//!
//! - the first 4 calls of a fresh Envoy are all `200` (never `503`), the 5th is
//!   `402 BUDGET_EXCEEDED` with scope `project.daily`, and the sidecar's ledger has exactly 4;
//! - a call estimated above a project's whole daily limit is `402 BUDGET_EXCEEDED` at once.
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
use pag0_envoy::policies::key_sha256;
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";
const SALES_KEY: &str = "sales-key";
const DAILY_KEY: &str = "daily-key";
/// The seed's call price, micro-USD.
const CALL: u64 = 120_000;
/// The seed's sales-ai day, micro-USD.
const DAY: u64 = 500_000;

fn sidecar_config(dir: &Path, port: u16) -> SidecarConfig {
    SidecarConfig {
        data_dir: dir.to_path_buf(),
        database_url: None,
        database_schema: None,
        admin_token: ADMIN.into(),
        sync_secret: SECRET.into(),
        lease_ttl_ms: 30_000,
        port,
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn put_policy(sc: &Sidecar, doc: &Value) {
    let r = http()
        .put(sc.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(doc.to_string())
        .send()
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "PUT /v1/policy: {status} {}",
        r.text().unwrap_or_default()
    );
}

/// Spent on one counter at the sidecar (`GET /v1/budgets`), 0 if absent.
fn spent(sc: &Sidecar, counter: &str) -> u64 {
    let r = http()
        .get(sc.url("/v1/budgets"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    let v: Value = r.json().unwrap_or(Value::Null);
    find_spent(&v, counter).unwrap_or(0)
}

/// The shipped managed settings: `syncIntervalMs: 1000`, `timeoutMs: 200` (the bound of the
/// on-path call too), `failureMode: closed`.
fn managed_config(sidecar_port: u16, upstream: u16) -> EnvoyConfig {
    let cfg = json!({
        "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                     "syncIntervalMs": 1000, "timeoutMs": 200, "failureMode": "closed",
                     "syncSecret": SECRET }
    });
    let mut c = EnvoyConfig::new(cfg, upstream);
    c.sidecar_port = Some(sidecar_port);
    c
}

/// The seed's acme org (host-tests/src/fixture.rs), with its sizes unmodified: sales-ai's day
/// is 500000, the org's 5000000, `maxPerRequest` 200000 (project) and 1000000 (org),
/// approval above 500000; `api.pricey.example` costs one seed call, 120000. The seed's
/// `daily` project (a day of 2000, a month of 100000) is called at 3000 (`api.big.example`):
/// above its whole day, within its month.
fn acme() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "100000000",
            "dailyBudget": "5000000",
            "maxPerRequest": "1000000",
            "requireApprovalAbove": "500000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"],
            "blockedEndpoints": ["suspicious-api.com"]
        },
        "endpoints": [
            { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
            { "host": "api.pricey.example", "category": "translation",
              "pricing": { "perRequest": CALL.to_string() } },
            { "host": "api.big.example", "category": "translation", "pricing": { "perRequest": "3000" } }
        ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI",
              "policy": { "monthlyBudget": "15000000", "dailyBudget": DAY.to_string(),
                          "maxPerRequest": "200000",
                          "allowedEndpoints": ["api.deepl.com", "api.pricey.example"] } },
            { "id": "daily", "name": "Daily", "policy": { "monthlyBudget": "100000", "dailyBudget": "2000" } }
        ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": key_sha256(SALES_KEY) },
            { "id": "daily-agent", "projectId": "daily", "apiKeySha256": key_sha256(DAILY_KEY) }
        ]
    })
}

fn pricey(key: &str) -> Call {
    Call::post("api.pricey.example", "/v2/translate")
        .key(key)
        .header("connection", "close")
        .json(&json!({"text": ["hallo"], "target_lang": "EN"}))
}

fn send(agent: &Agent, envoy: &Envoy, call: &Call) -> Reply {
    agent
        .send(call)
        .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()))
}

/// A fresh managed Envoy with the sidecar's acme policy, started and waited for until its
/// policy has arrived — without spending: a call without an API key is `503` before the first
/// policy and `401 MISSING_API_KEY` after it. Its leases may still be the first slices or
/// none at all (the sync for them follows the policy).
fn fresh() -> (tempfile::TempDir, Sidecar, MockUpstream, Envoy, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(&sidecar_config(dir.path(), 0)).unwrap();
    put_policy(&sc, &acme());
    let mock = MockUpstream::start().unwrap();
    let envoy =
        Envoy::start(&managed_config(sc.port, mock.port())).unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(envoy.port).unwrap();
    let probe = Call::post("api.pricey.example", "/v2/translate").header("connection", "close");
    // Every worker adopts the policy on its own tick: fresh connections land on either worker,
    // so 12 answers in a row from a policy mean both have it.
    let (t0, mut streak) = (Instant::now(), 0);
    while streak < 12 {
        let r = send(&agent, &envoy, &probe);
        if r.code() == "MISSING_API_KEY" {
            streak += 1;
            continue;
        }
        streak = 0;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no policy from the sidecar: {} {}\n{}",
            r.status,
            r.body,
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (dir, sc, mock, envoy, agent)
}

#[test]
fn a_fresh_envoy_serves_four_seed_calls_of_a_seed_day_then_402_project_daily() {
    let (_dir, sc, mock, envoy, agent) = fresh();
    let mut took = Vec::new();
    for i in 1..=4 {
        let t0 = Instant::now();
        let r = send(&agent, &envoy, &pricey(SALES_KEY));
        took.push(t0.elapsed());
        assert_eq!(
            (r.status, r.decision()),
            (200, "allow"),
            "call {i}: {}\n{}",
            r.body,
            envoy.log()
        );
    }
    let t0 = Instant::now();
    let fifth = send(&agent, &envoy, &pricey(SALES_KEY));
    took.push(t0.elapsed());
    assert_eq!(fifth.status, 402, "{}", fifth.body);
    assert_eq!(fifth.code(), "BUDGET_EXCEEDED", "{}", fifth.body);
    assert_eq!(
        fifth.json()["error"]["scope"],
        "project.daily",
        "{}",
        fifth.body
    );
    // Still refused, and never a 503, on more tries: the day is used up fleet-wide.
    for _ in 0..3 {
        let r = send(&agent, &envoy, &pricey(SALES_KEY));
        assert_eq!((r.status, r.code()), (402, "BUDGET_EXCEEDED"), "{}", r.body);
    }
    println!("seed calls 1-5 answered in {took:?}");
    assert_eq!(
        mock.served_on("/v2/translate"),
        4,
        "exactly 4 calls reached the upstream"
    );

    // The 4 calls reach the sidecar's ledger: exactly 4 × 120000 on the project's day.
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let counter = format!("project.daily/sales-ai/{day}");
    let t0 = Instant::now();
    while spent(&sc, &counter) < 4 * CALL && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(spent(&sc, &counter), 4 * CALL, "{}", sc.log());
}

#[test]
fn a_call_above_a_whole_daily_limit_is_402_at_once() {
    let (_dir, _sc, mock, envoy, agent) = fresh();
    // The daily project's day is 2000: a call of 3000 can never fit it.
    let big = Call::post("api.big.example", "/v2/translate")
        .key(DAILY_KEY)
        .header("connection", "close")
        .json(&json!({"text": ["hallo"], "target_lang": "EN"}));
    for i in 0..3 {
        let t0 = Instant::now();
        let r = send(&agent, &envoy, &big);
        let took = t0.elapsed();
        assert_eq!(
            (r.status, r.code()),
            (402, "BUDGET_EXCEEDED"),
            "call {i}: {}\n{}",
            r.body,
            envoy.log()
        );
        assert_eq!(r.json()["error"]["scope"], "project.daily", "{}", r.body);
        println!("over-limit call {i} refused in {took:?}");
    }
    assert_eq!(
        mock.served_on("/v2/translate"),
        0,
        "nothing reached the upstream"
    );
    // The same Envoy serves a call that fits.
    let r = send(&agent, &envoy, &pricey(SALES_KEY));
    assert_eq!((r.status, r.decision()), (200, "allow"), "{}", r.body);
}
