//! Shared bits of the end-to-end tests: small policies built with `json!`, clock-independent
//! working-hour windows, and a check collector that reports every failed expectation at once.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use chrono::{Timelike, Utc};
use pag0_envoy::policies::key_sha256;
use pag0_envoy::{Agent, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

/// Managed mode: waits until every worker runs the sidecar's policy — 12 refusals in a row of
/// a call without an API key (`MISSING_API_KEY`, not the `503` of a worker still without a
/// policy; `connection: close` spreads the calls over the workers). The first allowed call
/// proves only one worker: the other may not have polled shared data yet.
pub fn every_worker_has_the_policy(agent: &Agent, envoy: &Envoy) {
    let probe =
        pag0_envoy::Call::post("api.deepl.com", "/v2/translate").header("connection", "close");
    let (t0, mut streak) = (std::time::Instant::now(), 0);
    while streak < 12 {
        let r = agent
            .send(&probe)
            .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", envoy.log()));
        if r.code() == "MISSING_API_KEY" {
            streak += 1;
            continue;
        }
        streak = 0;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "a worker without the policy: {} {}\n{}",
            r.status,
            r.body,
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// gpt-4 prices used by the test policies (micro-USD per 1k tokens).
pub const GPT4_IN: u64 = 30_000;
pub const GPT4_OUT: u64 = 60_000;

/// A running mock + Envoy pair with an agent client.
pub struct Stack {
    pub envoy: Envoy,
    pub mock: MockUpstream,
    pub agent: Agent,
}

impl Stack {
    pub fn start(policy: Value) -> Stack {
        Self::start_config(|port| EnvoyConfig::standalone(policy, port))
    }

    pub fn start_config(make: impl FnOnce(u16) -> EnvoyConfig) -> Stack {
        let mock = MockUpstream::start().expect("mock upstream");
        let cfg = make(mock.port());
        let envoy = Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let agent = Agent::new(envoy.port).expect("client");
        Stack { envoy, mock, agent }
    }

    pub fn send(&self, call: &pag0_envoy::Call) -> Reply {
        self.agent
            .send(call)
            .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", self.envoy.log()))
    }

    /// Waits until a plugin counter reaches `want` (settlement runs when the stream ends,
    /// which can be just after the client has the last byte); returns the value seen.
    pub fn counter_at_least(&self, name: &str, want: u64) -> u64 {
        self.envoy
            .wait_counter(name, Duration::from_secs(15), |v| v >= want)
    }
}

/// The endpoints catalogue of the test policies.
pub fn endpoints() -> Value {
    json!([
        { "host": "api.openai.com", "category": "llm",
          "pricing": { "models": { "gpt-4": { "inputPer1k": GPT4_IN.to_string(), "outputPer1k": GPT4_OUT.to_string() } },
                       "defaultModel": "gpt-4" } },
        { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
        { "host": "api.salesforce.com", "category": "data-analysis",
          "pricing": { "perRequest": "1000" }, "costHeader": "x-request-cost" },
        { "host": "api.replicate.com", "category": "image-generation", "pricing": { "perRequest": "5000" } },
        { "host": "slow.example.com", "category": "data-analysis", "pricing": { "perRequest": "1000" } }
    ])
}

/// A client entry for `key` in `project`.
pub fn client(id: &str, project: &str, key: &str) -> Value {
    json!({ "id": id, "projectId": project, "apiKeySha256": key_sha256(key) })
}

/// A project with a monthly budget (and optional other policy fields merged in).
pub fn project(id: &str, monthly: u64, extra: Value) -> Value {
    let mut policy = json!({ "monthlyBudget": monthly.to_string() });
    if let (Some(p), Some(e)) = (policy.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    json!({ "id": id, "name": id, "policy": policy })
}

/// A minimal org: one project `p1` (budget `monthly`), client `c1` with key `sk-test-1`.
pub fn simple_policy(monthly: u64) -> Value {
    json!({
        "orgId": "test-org",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "1000000000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"],
            "blockedEndpoints": ["suspicious-api.com"]
        },
        "endpoints": endpoints(),
        "projects": [project("p1", monthly, json!({}))],
        "clients": [client("c1", "p1", "sk-test-1")]
    })
}

/// A working-hours window (UTC, every day) that excludes the current time: it starts two
/// hours from now and lasts one hour, so the test does not depend on when it runs.
pub fn hours_excluding_now() -> Value {
    let now = Utc::now();
    let start = (now.hour() + 2) % 24;
    let end = (now.hour() + 3) % 24;
    json!({ "timezone": "UTC", "start": format!("{start:02}:00"), "end": format!("{end:02}:00") })
}

/// A window (UTC, every day) that includes the current time with hours of margin.
pub fn hours_including_now() -> Value {
    let now = Utc::now();
    let start = (now.hour() + 22) % 24;
    let end = (now.hour() + 3) % 24;
    json!({ "timezone": "UTC", "start": format!("{start:02}:00"), "end": format!("{end:02}:00") })
}

/// A chat-completions body.
pub fn chat(model: &str, max_tokens: u64, stream: bool) -> Value {
    json!({ "model": model, "max_tokens": max_tokens, "stream": stream,
            "messages": [{ "role": "user", "content": "Summarise the Q3 pipeline for ACME." }] })
}

/// Collects failed expectations so one Envoy run reports all of them.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.failures
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    pub fn that(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        if !ok {
            self.failures.push(format!("{what}: {detail}"));
        }
    }

    /// Status, `x-pag0-decision: deny`, `x-pag0-code`, JSON content type and body fields.
    pub fn deny(&mut self, label: &str, r: &Reply, status: u16, code: &str) {
        let ctx = format!(
            "[{label}] status {} headers {:?} body {}",
            r.status, r.headers, r.body
        );
        self.that(
            &format!("{label}: status"),
            r.status == status,
            format!("want {status}; {ctx}"),
        );
        self.that(
            &format!("{label}: x-pag0-decision"),
            r.decision() == "deny",
            format!("want deny; {ctx}"),
        );
        self.that(
            &format!("{label}: x-pag0-code"),
            r.code() == code,
            format!("want {code}; {ctx}"),
        );
        let ct = r.header("content-type").unwrap_or("");
        self.that(
            &format!("{label}: content-type"),
            ct.starts_with("application/json"),
            format!("want application/json; {ctx}"),
        );
        let j = r.json();
        self.that(
            &format!("{label}: body error.code"),
            j.pointer("/error/code").and_then(Value::as_str) == Some(code),
            format!("want {code}; {ctx}"),
        );
        self.that(
            &format!("{label}: body error.message"),
            j.pointer("/error/message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty()),
            format!("want a message; {ctx}"),
        );
    }

    /// `x-pag0-decision: allow`, `x-pag0-project`, `x-pag0-estimated-cost` (a micro-USD integer).
    pub fn allow(&mut self, label: &str, r: &Reply, project: &str) {
        let ctx = format!(
            "[{label}] status {} headers {:?} body {}",
            r.status, r.headers, r.body
        );
        self.that(
            &format!("{label}: status"),
            r.status == 200,
            format!("want 200; {ctx}"),
        );
        self.that(
            &format!("{label}: x-pag0-decision"),
            r.decision() == "allow",
            format!("want allow; {ctx}"),
        );
        self.that(
            &format!("{label}: x-pag0-project"),
            r.header("x-pag0-project") == Some(project),
            format!("want {project}; {ctx}"),
        );
        self.that(
            &format!("{label}: x-pag0-estimated-cost"),
            r.header("x-pag0-estimated-cost")
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            format!("want an integer; {ctx}"),
        );
    }

    /// Panics with every failure and the Envoy log tail.
    pub fn finish(self, envoy: &Envoy) {
        if !self.failures.is_empty() {
            let log = envoy.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{} failed expectation(s):\n  - {}\n--- Envoy log tail ---\n{}",
                self.failures.len(),
                self.failures.join("\n  - "),
                tail.join("\n")
            );
        }
    }
}

/// `spent` of one counter (`project.monthly/p1/2026-11`) anywhere in a `GET /v1/budgets` answer.
pub fn find_spent(v: &Value, counter: &str) -> Option<u64> {
    match v {
        Value::Object(m) => {
            let named = ["counter", "key", "counterKey"]
                .iter()
                .any(|k| m.get(*k).and_then(Value::as_str) == Some(counter));
            if named {
                return m.get("spent").and_then(|s| {
                    s.as_u64()
                        .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
                });
            }
            if let Some(inner) = m.get(counter) {
                if let Some(s) = inner.get("spent") {
                    return s
                        .as_u64()
                        .or_else(|| s.as_str().and_then(|s| s.parse().ok()));
                }
            }
            m.values().find_map(|x| find_spent(x, counter))
        }
        Value::Array(a) => a.iter().find_map(|x| find_spent(x, counter)),
        _ => None,
    }
}
