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
    let over = s.send(&Call::post("api.deepl.com", "/v2/translate").key("sk-test-3").body("hi"));
    assert_eq!(over.status, 402);
    let unknown = s.send(&Call::post("api.deepl.com", "/v2/translate").key("sk-nobody").body("hi"));
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
    assert!(!s.envoy.log().contains("token=secret"), "the query never reaches the log");
    assert_eq!(events[1]["decision"], "deny");
    assert_eq!(events[1]["code"], "BUDGET_EXCEEDED");
    assert_eq!(events[1]["scope"], "project.monthly");
    assert_eq!(events[1]["clientId"], "c3");
    assert_eq!(events[2]["code"], "UNKNOWN_API_KEY");
}
