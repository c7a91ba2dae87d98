//! The decision log through real processes (issue 15): standalone, each request's decision
//! event on Envoy's access log line; managed, every decision in the sidecar's `/v1/audit`
//! exactly once, and a `kill -9` of the sidecar leaving either every decision or a gap with
//! the exact count, never a lost usage record.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pag0_envoy::Call;
use serde_json::{json, Value};

/// The `pag0=` events of Envoy's access log so far, in order.
fn access_log_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| l.split_once(" pag0=").map(|(_, e)| e))
        .filter(|e| e.starts_with('{'))
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect()
}

/// Waits (polling, no fixed sleep) until `f` returns `Some`, or panics after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn standalone_the_access_log_line_carries_the_decision_event() {
    let mut policy = simple_policy(1_000_000);
    policy["projects"]
        .as_array_mut()
        .unwrap()
        .push(project("p3", 1000, json!({})));
    policy["clients"]
        .as_array_mut()
        .unwrap()
        .push(client("c3", "p3", "sk-test-3"));
    let s = Stack::start(policy);

    let allowed = s.send(
        &Call::post("api.salesforce.com", "/v1/query?token=secret")
            .key("sk-test-1")
            .body("{}"),
    );
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let over = s.send(
        &Call::post("api.deepl.com", "/v2/translate")
            .key("sk-test-3")
            .body("hi"),
    );
    assert_eq!(over.status, 402);
    let unknown = s.send(
        &Call::post("api.deepl.com", "/v2/translate")
            .key("sk-nobody")
            .body("hi"),
    );
    assert_eq!(unknown.status, 401);

    let events = wait_for("three access log lines", Duration::from_secs(30), || {
        let e = access_log_events(&s.envoy.log());
        (e.len() >= 3).then_some(e)
    });
    assert_eq!(events.len(), 3, "{events:?}");
    let a = &events[0];
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["projectId"], "p1");
    assert_eq!(a["clientId"], "c1");
    assert_eq!(a["estimate"], "1000");
    assert_eq!(a["upstreamStatus"], 200);
    assert_eq!(a["path"], "/v1/query", "never the query");
    assert!(a["cost"].is_string(), "settled before the line: {a}");
    assert!(
        !s.envoy.log().contains("token=secret"),
        "the query never reaches the log"
    );
    assert_eq!(events[1]["decision"], "deny");
    assert_eq!(events[1]["code"], "BUDGET_EXCEEDED");
    assert_eq!(events[1]["scope"], "project.monthly");
    assert_eq!(events[1]["clientId"], "c3");
    assert_eq!(events[2]["code"], "UNKNOWN_API_KEY");
}

// === managed mode ===

use pag0_envoy::harness::{Sidecar, SidecarConfig};
use pag0_envoy::{Agent, Envoy, EnvoyConfig, MockUpstream, Reply};

const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";
const APPROVER: &str = "lead@acme.com";
/// deepl's per-request price in the test catalogue.
const DEEPL: u64 = 2000;

fn sidecar_config(dir: &std::path::Path, port: u16) -> SidecarConfig {
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

/// Every audit entry of `kind`, all pages, in `seq` order.
fn audit(sc: &Sidecar, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = http()
            .get(sc.url("/v1/audit"))
            .bearer_auth(ADMIN)
            .query(&[("kind", kind), ("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let v: Value = req.send().unwrap().json().unwrap();
        out.extend(v["entries"].as_array().cloned().unwrap_or_default());
        match v["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn spent(sc: &Sidecar, counter: &str) -> u64 {
    let v: Value = http()
        .get(sc.url("/v1/budgets"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap_or(Value::Null);
    find_spent(&v, counter).unwrap_or(0)
}

fn managed_envoy(sc: &Sidecar, mock: &MockUpstream, queue_max: u64) -> Envoy {
    let mut c = EnvoyConfig::new(
        json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                             "syncIntervalMs": 200, "timeoutMs": 1000, "failureMode": "closed",
                             "syncSecret": SECRET, "decisionQueueMax": queue_max } }),
        mock.port(),
    );
    c.sidecar_port = Some(sc.port);
    Envoy::start(&c).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `call`; every reply counts (each one is a request the filter decided), with the
/// decision and code the agent saw.
struct Driver {
    agent: Agent,
    sent: u64,
    decisions: Vec<(String, String)>,
}

impl Driver {
    fn send(&mut self, envoy: &Envoy, call: &Call) -> Reply {
        let r = self
            .agent
            .send(call)
            .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()));
        self.sent += 1;
        let seen = if r.status == 202 {
            ("pending", "APPROVAL_PENDING")
        } else if r.header("x-pag0-cache") == Some("hit") {
            ("cache_hit", "")
        } else if r.code() == "APPROVAL_PENDING" {
            ("replay", "APPROVAL_PENDING")
        } else if r.decision() == "allow" {
            ("allow", "")
        } else {
            ("deny", r.code())
        };
        self.decisions
            .push((seen.0.to_string(), seen.1.to_string()));
        r
    }

    /// Until the sidecar's policy is in on both workers: the first 200 (a lease is asked for
    /// on the request path if there is none yet), then 12 refusals in a row of a call without
    /// an API key (`MISSING_API_KEY`, not the `503` of a worker without a policy; fresh
    /// connections land on either worker).
    fn until_allowed(&mut self, envoy: &Envoy, call: &Call) {
        wait_for("the first allowed request", Duration::from_secs(30), || {
            (self.send(envoy, call).status == 200).then_some(())
        });
        let probe = Call::post("api.deepl.com", "/v2/translate").header("connection", "close");
        let mut streak = 0;
        wait_for(
            "the policy on every worker",
            Duration::from_secs(30),
            || {
                if self.send(envoy, &probe).code() == "MISSING_API_KEY" {
                    streak += 1;
                } else {
                    streak = 0;
                }
                (streak >= 12).then_some(())
            },
        );
    }
}

fn deepl(key: &str) -> Call {
    Call::post("api.deepl.com", "/v2/translate")
        .key(key)
        .header("connection", "close")
        .json(&json!({"text": ["hallo"], "target_lang": "EN"}))
}

fn audit_policy() -> Value {
    let mut p1 = project("p1", 100_000_000, json!({}));
    p1["cache"] = json!({ "enabled": true, "sharedCache": true, "defaultTTL": 600 });
    let p2 = project("p2", 100_000_000, json!({ "maxPerRequest": "1500" }));
    let p3 = project(
        "p3",
        100_000_000,
        json!({ "approvalWorkflow": { "enabled": true, "approvers": [APPROVER],
                                      "requireApprovalAbove": "1500" } }),
    );
    let p4 = project(
        "p4",
        100_000_000,
        json!({ "allowedEndpoints": ["api.openai.com"] }),
    );
    let p5 = project("p5", 1000, json!({}));
    let mut doc = simple_policy(100_000_000);
    doc["projects"] = json!([p1, p2, p3, p4, p5]);
    doc["clients"] = json!([
        client("c1", "p1", "sk-test-1"),
        client("c2", "p2", "sk-test-2"),
        client("c3", "p3", "sk-test-3"),
        client("c4", "p4", "sk-test-4"),
        client("c5", "p5", "sk-test-5"),
        {
            "id": "c-hours", "projectId": "p1", "apiKeySha256": pag0_envoy::policies::key_sha256("sk-test-hours"),
            "additionalRestrictions": { "workingHours": hours_excluding_now() }
        }
    ]);
    doc
}

#[test]
fn managed_every_decision_reaches_the_audit_log_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(&sidecar_config(dir.path(), 0)).unwrap();
    put_policy(&sc, &audit_policy());
    let mock = MockUpstream::start().unwrap();
    let envoy = managed_envoy(&sc, &mock, 10_000);
    let mut d = Driver {
        agent: Agent::new(envoy.port).unwrap(),
        sent: 0,
        decisions: Vec::new(),
    };
    d.until_allowed(&envoy, &deepl("sk-test-1"));

    // Allowed, then a cache miss and a hit of the same GET.
    let r = d.send(
        &envoy,
        &Call::post("api.salesforce.com", "/v1/q").key("sk-test-1"),
    );
    assert_eq!(r.status, 200);
    let get = Call::get("api.salesforce.com", "/v1/report?id=7").key("sk-test-1");
    assert_eq!(d.send(&envoy, &get).status, 200);
    let hit = d.send(&envoy, &get);
    assert_eq!(hit.header("x-pag0-cache"), Some("hit"), "{hit:?}");
    // Refusals.
    let r = d.send(
        &envoy,
        &Call::post("api.deepl.com", "/v2/translate").body("x"),
    );
    assert_eq!(r.code(), "MISSING_API_KEY");
    assert_eq!(
        d.send(&envoy, &deepl("sk-nobody")).code(),
        "UNKNOWN_API_KEY"
    );
    let r = d.send(
        &envoy,
        &Call::get("suspicious-api.com", "/v1/data").key("sk-test-1"),
    );
    assert_eq!(r.code(), "ENDPOINT_BLOCKED");
    assert_eq!(
        d.send(&envoy, &deepl("sk-test-2")).code(),
        "MAX_PER_REQUEST_EXCEEDED"
    );
    // Every other code a policy decides in managed mode (each stage of the decision: head
    // check, path and authority, body, budget, approval request).
    for (call, want) in [
        (deepl("sk-test-4"), "ENDPOINT_NOT_ALLOWED"),
        (
            Call::post("api.replicate.com", "/v1/predictions")
                .key("sk-test-1")
                .body("{}"),
            "CATEGORY_NOT_ALLOWED",
        ),
        (deepl("sk-test-hours"), "OUTSIDE_WORKING_HOURS"),
        (deepl("sk-test-5"), "BUDGET_EXCEEDED"),
        (
            Call::post("api.deepl.com", "/v2/translate;x=1").key("sk-test-1"),
            "AMBIGUOUS_PATH",
        ),
        (
            Call::post("api.deepl.com:80:80", "/v2/translate").key("sk-test-1"),
            "INVALID_AUTHORITY",
        ),
        (
            Call::post("api.openai.com", "/v1/chat/completions")
                .key("sk-test-1")
                .body("{\"model\": \"gpt-4\", \"max_tokens\": "),
            "BAD_REQUEST_BODY",
        ),
        (deepl("sk-test-3"), "REQUESTED_BY_INVALID"),
    ] {
        let r = d.send(&envoy, &call);
        assert_eq!(r.code(), want, "{r:?}");
    }
    // Held for approval, then an early replay of it.
    let ask = deepl("sk-test-3").header("x-pag0-requested-by", "agent@acme.com");
    let held = d.send(&envoy, &ask);
    assert_eq!(held.status, 202, "{held:?}");
    let id = held.header("x-pag0-approval-id").unwrap().to_string();
    let again = d.send(&envoy, &ask.clone().header("x-pag0-approval-id", &id));
    assert_eq!(
        (again.status, again.code()),
        (403, "APPROVAL_PENDING"),
        "{again:?}"
    );

    wait_for(
        "every decision in the audit log",
        Duration::from_secs(30),
        || {
            let rows = audit(&sc, "decision");
            (rows.len() as u64 >= d.sent).then_some(())
        },
    );
    // A few more acknowledged syncs: a duplicate would arrive with them.
    let acked = envoy.pag0_counter("pag0.sync.acked");
    let later = envoy.wait_counter("pag0.sync.acked", Duration::from_secs(15), |v| {
        v >= acked + 4
    });
    assert!(later >= acked + 4, "syncs go on: {acked} -> {later}");
    let rows = audit(&sc, "decision");
    assert_eq!(
        rows.len() as u64,
        d.sent,
        "exactly one row per request: {rows:#?}"
    );
    // Every reply's decision, once: the audit holds the same multiset (its order is the order
    // batches arrived in, which interleaves Envoy's workers).
    let mut logged: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["decision"].as_str().unwrap_or("").to_string(),
                r["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    logged.sort();
    let mut replied = d.decisions.clone();
    replied.sort();
    assert_eq!(logged, replied);
    for want in ["allow", "cache_hit", "pending", "replay"] {
        assert!(
            replied.iter().any(|(k, _)| k == want),
            "the script covers {want}"
        );
    }
    let one = |decision: &str, path: &str| -> &Value {
        let found: Vec<&Value> = rows
            .iter()
            .filter(|r| r["decision"] == decision && r["details"]["path"] == path)
            .collect();
        assert_eq!(found.len(), 1, "{decision} {path}: {found:#?}");
        found[0]
    };
    // The fields of each kind.
    let allow = one("allow", "/v1/q");
    assert_eq!(allow["projectId"], "p1");
    assert_eq!(allow["clientId"], "c1");
    assert_eq!(allow["host"], "api.salesforce.com");
    assert_eq!(allow["estimate"], 1000);
    assert_eq!(allow["cost"], 1000);
    assert_eq!(allow["details"]["method"], "POST");
    assert_eq!(allow["details"]["upstreamStatus"], 200);
    assert!(allow["latencyMs"].is_u64(), "{allow}");
    let miss = one("allow", "/v1/report");
    assert_eq!(miss["details"]["method"], "GET", "no query in the path");
    let hit = one("cache_hit", "/v1/report");
    assert_eq!(hit["cost"], 0);
    let blocked = one("deny", "/v1/data");
    assert_eq!(blocked["code"], "ENDPOINT_BLOCKED");
    assert_eq!(
        (&blocked["projectId"], &blocked["clientId"]),
        (&json!("p1"), &json!("c1")),
        "a refusal after the key named its client records the client: {blocked}"
    );
    let budget = rows
        .iter()
        .find(|r| r["code"] == "BUDGET_EXCEEDED")
        .unwrap();
    assert_eq!(budget["projectId"], "p5", "{budget}");
    assert_eq!(budget["details"]["scope"], "project.monthly", "{budget}");
    let over = rows
        .iter()
        .find(|r| r["code"] == "MAX_PER_REQUEST_EXCEEDED")
        .unwrap();
    assert_eq!(
        (&over["projectId"], &over["clientId"]),
        (&json!("p2"), &json!("c2"))
    );
    let pending = one("pending", "/v2/translate");
    assert_eq!(pending["approvalId"], id.as_str());
    assert_eq!(pending["estimate"], DEEPL);
    assert!(pending["details"]["bodySha256"]
        .as_str()
        .is_some_and(|h| h.len() == 64));
    assert_eq!(one("replay", "/v2/translate")["approvalId"], id.as_str());
    // Decided under the sidecar's policy (before the first one arrived: version 0, 503).
    for r in &rows {
        let v = r["policyVersion"].as_u64();
        if r["code"] == "CONTROL_PLANE_UNAVAILABLE" {
            assert!(v.is_some(), "{r}");
        } else {
            assert!(v >= Some(1), "{r}");
        }
    }
    // The chain still verifies with the filter's rows in it.
    let v: Value = http()
        .get(sc.url("/v1/audit/verify"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn managed_a_sidecar_killed_mid_run_loses_no_decision_silently_and_no_usage() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Sidecar::start(&sidecar_config(dir.path(), 0)).unwrap();
    let port = sc.port;
    put_policy(&sc, &simple_policy(100_000_000));
    let mock = MockUpstream::start().unwrap();
    const CAP: u64 = 25;
    let envoy = managed_envoy(&sc, &mock, CAP);
    let mut d = Driver {
        agent: Agent::new(envoy.port).unwrap(),
        sent: 0,
        decisions: Vec::new(),
    };
    d.until_allowed(&envoy, &deepl("sk-test-1"));
    for _ in 0..10 {
        d.send(&envoy, &deepl("sk-test-1"));
    }
    sc.kill();
    // While it is down: admitted on the lease, refused once the lease is spent — each one a
    // decision, more of them than the queue holds.
    for _ in 0..80 {
        d.send(&envoy, &deepl("sk-test-1"));
    }
    let sc = Sidecar::start(&sidecar_config(dir.path(), port)).unwrap();
    for _ in 0..10 {
        d.send(&envoy, &deepl("sk-test-1"));
    }
    let accounted = |sc: &Sidecar| {
        let rows = audit(sc, "decision").len() as u64;
        let gaps: Vec<Value> = audit(sc, "decision.gap");
        let dropped: u64 = gaps
            .iter()
            .map(|g| g["details"]["count"].as_u64().unwrap())
            .sum();
        (rows, dropped)
    };
    let (rows, dropped) = wait_for("every decision or its gap", Duration::from_secs(30), || {
        let (rows, dropped) = accounted(&sc);
        (rows + dropped >= d.sent).then_some((rows, dropped))
    });
    // A few more acknowledged syncs: a resend would arrive with them.
    let acked = envoy.pag0_counter("pag0.sync.acked");
    let later = envoy.wait_counter("pag0.sync.acked", Duration::from_secs(15), |v| {
        v >= acked + 4
    });
    assert!(later >= acked + 4, "syncs go on: {acked} -> {later}");
    assert_eq!(accounted(&sc), (rows, dropped), "nothing arrives twice");
    println!(
        "kill -9: {} requests, {rows} decisions logged, {dropped} in gap records",
        d.sent
    );
    assert_eq!(
        rows + dropped,
        d.sent,
        "each request logged once or counted in a gap"
    );
    assert!(
        dropped > 0,
        "80 requests while down with a cap of {CAP} must drop some"
    );
    // The newest `CAP` events wait in the queue at any moment, and reach the sidecar once it is
    // back; older ones may have been dropped (oldest first), but only into the gaps above.
    assert!(rows >= CAP, "what fit under the cap was kept: {rows}");
    // No usage record was dropped: the ledger is what the upstream served.
    let served = mock.served_on("/v2/translate");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let counter = format!("project.monthly/p1/{month}");
    let got = wait_for("the ledger", Duration::from_secs(20), || {
        let got = spent(&sc, &counter);
        (got >= served * DEEPL).then_some(got)
    });
    assert_eq!(got, served * DEEPL, "ledger = served × price");
    let gaps = audit(&sc, "decision.gap");
    let g = &gaps[0]["details"];
    assert!(g["from"].as_u64() <= g["to"].as_u64(), "{g}");
}
