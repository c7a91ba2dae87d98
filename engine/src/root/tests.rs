//! The root context natively: configure, tick and the sync loop over the fake host.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::testing::FakeHost;

fn configure(host: &FakeHost, config: serde_json::Value) -> (Root<&FakeHost>, bool) {
    *host.plugin_configuration.borrow_mut() = config.to_string().into_bytes();
    let mut root = Root::new(host);
    let size = host.plugin_configuration.borrow().len();
    let ok = root.on_configure(size);
    (root, ok)
}

fn managed() -> serde_json::Value {
    json!({ "sidecar": { "cluster": "pag0_sidecar", "syncIntervalMs": 1000, "timeoutMs": 200 } })
}

/// Moves the fake's shared-data clock (what the root's `now_ms` reads) to `ms`.
fn at_ms(host: &FakeHost, ms: u64) {
    host.store.clock.store(ms * 1_000_000, Ordering::SeqCst);
}

#[test]
fn standalone_configure_sets_the_slices_tick_and_defines_the_metrics() {
    let host = FakeHost::default();
    let (root, ok) = configure(
        &host,
        json!({ "policy": { "orgId": "acme", "globalPolicy": { "monthlyBudget": "100" } } }),
    );
    assert!(ok);
    assert_eq!(
        *host.tick_periods.borrow(),
        [Duration::from_millis(counters::slices::TICK_MS)]
    );
    assert!(host
        .defined
        .borrow()
        .iter()
        .any(|n| n == "pag0.requests.allowed"));
    let shared = root.shared().unwrap();
    assert!(shared.policy.is_some());
    assert!(root.sync.is_none());
}

#[test]
fn a_refused_configuration_serves_nothing_and_sets_no_timer() {
    let host = FakeHost::default();
    let (root, ok) = configure(&host, json!({ "maxBodyBytes": "many" }));
    assert!(!ok);
    assert!(root.shared().is_none());
    assert!(host.tick_periods.borrow().is_empty());
    assert_eq!(host.logs.borrow().len(), 1, "{:?}", host.logs.borrow());
}

#[test]
fn the_managed_tick_sends_one_sync_and_waits_for_its_answer() {
    let host = FakeHost::default();
    let (mut root, ok) = configure(&host, managed());
    assert!(ok);
    // A quarter of the sync interval.
    assert_eq!(*host.tick_periods.borrow(), [Duration::from_millis(250)]);
    at_ms(&host, 10_000);
    root.on_tick();
    {
        let calls = host.calls.borrow();
        assert_eq!(calls.len(), 1);
        let (cluster, headers, _) = &calls[0];
        assert_eq!(cluster, "pag0_sidecar");
        assert!(headers.contains(&(":path".into(), "/v1/sync".into())));
        assert!(headers.contains(&(":method".into(), "POST".into())));
    }
    // Stop and wait: no second call while the first is out, however late.
    at_ms(&host, 20_000);
    root.on_tick();
    assert_eq!(host.calls.borrow().len(), 1);
    // An answer to another token is not ours.
    root.on_http_call_response(7, 0, 0, 0);
    assert!(root.sync.as_ref().unwrap().inflight.is_some());
    // No answer within the timeout: the sidecar is down, the next tick sends again.
    root.on_http_call_response(1, 0, 0, 0);
    assert!(root.sync.as_ref().unwrap().inflight.is_none());
    assert!(managed::down_since(&&host).unwrap().is_some());
    assert!(host
        .logs
        .borrow()
        .iter()
        .any(|l| l.contains("sidecar unreachable (no answer within timeoutMs)")));
    at_ms(&host, 21_000);
    root.on_tick();
    assert_eq!(host.calls.borrow().len(), 2);
}

#[test]
fn a_managed_tick_syncs_only_once_per_interval_and_a_failed_dispatch_marks_the_sidecar_down() {
    let host = FakeHost::default();
    let (mut root, _) = configure(&host, managed());
    at_ms(&host, 10_000);
    root.on_tick();
    *host.call_response_headers.borrow_mut() = vec![(":status".into(), "503".into())];
    root.on_http_call_response(1, 1, 0, 0);
    assert!(managed::down_since(&&host).unwrap().is_some());
    assert!(host.logs.borrow().iter().any(|l| l.contains("status 503")));
    // Within `syncIntervalMs − tick` of the last send: no call.
    at_ms(&host, 10_500);
    root.on_tick();
    assert_eq!(host.calls.borrow().len(), 1);
    host.dispatch_fails.set(true);
    at_ms(&host, 10_800);
    root.on_tick();
    assert_eq!(host.calls.borrow().len(), 1);
    assert!(root.sync.as_ref().unwrap().inflight.is_none());
    assert_eq!(root.sync.as_ref().unwrap().last_sent_ms, 10_800);
}

#[test]
fn a_reconfiguration_to_standalone_stops_the_sync_loop() {
    let host = FakeHost::default();
    let (mut root, _) = configure(&host, managed());
    assert!(root.sync.is_some());
    let standalone =
        json!({ "policy": { "orgId": "acme", "globalPolicy": { "monthlyBudget": "100" } } });
    *host.plugin_configuration.borrow_mut() = standalone.to_string().into_bytes();
    let size = host.plugin_configuration.borrow().len();
    assert!(root.on_configure(size));
    assert!(root.sync.is_none());
    at_ms(&host, 10_000);
    root.on_tick();
    assert!(host.calls.borrow().is_empty());
}
