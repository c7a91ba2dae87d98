//! A policy that does not validate makes `on_configure` fail: Envoy refuses the listener
//! (it never becomes ready) and its log names every error as `path: reason`.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use pag0_envoy::{Envoy, EnvoyConfig, MockUpstream};
use serde_json::json;

#[test]
fn a_bad_policy_is_refused_with_every_field_error_in_the_log() {
    let mock = MockUpstream::start().expect("mock");
    let mut bad = simple_policy(1_000_000);
    bad["projects"][0]["policy"]["dailyBudget"] = json!("12x");
    bad["clients"][0]["projectId"] = json!("no-such-project");
    let mut cfg = EnvoyConfig::standalone(bad, mock.port());
    // The filter logs every field error in one line when it refuses the configuration: stop
    // waiting once the last one is there (the listener never becomes ready).
    cfg.refused_when_logged = Some("clients[0].projectId: ".into());
    match Envoy::try_start(&cfg) {
        Ok(envoy) => panic!(
            "Envoy served with an invalid policy (listener on {}):\n{}",
            envoy.port,
            envoy.log()
        ),
        Err(f) => {
            for path in ["projects[0].policy.dailyBudget", "clients[0].projectId"] {
                assert!(
                    f.log.contains(&format!("{path}: ")),
                    "Envoy's log does not name `{path}: <reason>` ({}):\n{}",
                    f.reason,
                    f.log
                        .lines()
                        .filter(|l| !l.contains("[main]"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
}

#[test]
fn a_good_policy_starts_two_workers() {
    let s = Stack::start(simple_policy(1_000_000));
    let stats = s.envoy.stats().expect("stats");
    let workers = stats
        .get("listener_manager.workers_started")
        .copied()
        .unwrap_or(0);
    assert_eq!(workers, 1, "listener_manager.workers_started: {stats:?}");
    let concurrency = stats.get("server.concurrency").copied().unwrap_or(0);
    assert_eq!(concurrency, 2, "server.concurrency");
}
