//! Budgets: reserve before forwarding, refuse what does not fit, across worker VMs.

use std::time::Duration;

use pag0_host_tests::fixture::{self, DAILY_KEY, RACE_KEY};
use pag0_host_tests::{Action, Host, Response};

use super::{assert_allowed, assert_denied, counted, deepl, ok};

fn two_vms() -> Host {
    match Host::builder(fixture::config(4096)).vms(2).build() {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn budget_exceeded_is_402() {
    let mut h = super::host();
    assert_allowed(&h.run(&deepl(RACE_KEY), &ok()));
    let ex = h.run(&deepl(RACE_KEY), &ok());
    assert_denied(&mut h, &ex, 402, "BUDGET_EXCEEDED");
}

/// Race project: 2000 µ$, one DeepL request. Both VMs decide before either hears back from the
/// upstream: exactly one may pass, whichever order the steps take.
fn race(order_b_first: bool) {
    let mut h = two_vms();
    let (a, b) = (h.open(0), h.open(1));
    let req = deepl(RACE_KEY);
    let (first, second) = if order_b_first { (b, a) } else { (a, b) };
    h.request_headers(first, req.headers.clone(), true);
    h.request_headers(second, req.headers.clone(), true);
    let passed: Vec<_> = [a, b]
        .iter()
        .filter(|id| h.flow(**id).upstream.headers.is_some())
        .copied()
        .collect();
    assert_eq!(
        passed.len(),
        1,
        "exactly one of two racing requests may take the last unit of budget\n{}",
        h.log_text()
    );
    assert_eq!(passed[0], first);
    let denied = h.flow(second).local_reply.clone();
    assert_eq!(denied.map(|r| r.status), Some(402), "{}", h.log_text());
    for id in [a, b] {
        h.send_response(id, &ok());
        h.finish(id);
    }
    assert_eq!(counted(&mut h, "pag0.requests.allowed"), 1);
    assert_eq!(counted(&mut h, "pag0.requests.denied.BUDGET_EXCEEDED"), 1);
}

#[test]
fn two_vms_racing_on_the_last_unit_vm0_first() {
    race(false);
}

#[test]
fn two_vms_racing_on_the_last_unit_vm1_first() {
    race(true);
}

#[test]
fn a_reservation_counts_before_the_response_arrives() {
    // Request A is forwarded and waits for its upstream; B on the other VM must see A's
    // reservation (the higress #2464 failure mode).
    let mut h = two_vms();
    let a = h.open(0);
    assert_eq!(
        h.request_headers(a, deepl(RACE_KEY).headers, true),
        Some(Action::Continue)
    );
    let ex = h.run_on(1, &deepl(RACE_KEY), &ok());
    assert_denied(&mut h, &ex, 402, "BUDGET_EXCEEDED");
    h.send_response(a, &ok());
    h.finish(a);
}

#[test]
fn a_released_reservation_frees_the_budget_for_the_other_vm() {
    let mut h = two_vms();
    let ex = h.run_on(
        0,
        &deepl(RACE_KEY),
        &Response::json(503, r#"{"error":"down"}"#),
    );
    assert!(ex.forwarded());
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        0,
        "an upstream error without a report costs 0"
    );
    assert_allowed(&h.run_on(1, &deepl(RACE_KEY), &ok()));
}

#[test]
fn a_daily_budget_renews_at_midnight_in_the_org_timezone() {
    let mut h = super::host();
    h.set_unix_time(1_767_657_000); // 2026-01-05 23:50 UTC
    assert_allowed(&h.run(&deepl(DAILY_KEY), &ok()));
    let ex = h.run(&deepl(DAILY_KEY), &ok());
    assert_denied(&mut h, &ex, 402, "BUDGET_EXCEEDED");
    assert_eq!(ex.body_json()["error"]["scope"], "project.daily");
    h.advance(Duration::from_secs(15 * 60)); // 00:05 the next day
    assert_allowed(&h.run(&deepl(DAILY_KEY), &ok()));
}

#[test]
fn many_requests_on_four_vms_never_overspend() {
    // 100 DeepL requests spread over 4 VMs against a 50-request project budget, interleaved:
    // every request decides before any settles.
    let mut policy = fixture::policy();
    policy["projects"][1]["policy"]["monthlyBudget"] = "100000".into(); // ops: 50 × 2000
    let cfg = serde_json::json!({ "policy": policy, "maxBodyBytes": 4096 }).to_string();
    let mut h = match Host::builder(cfg).vms(4).build() {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let ids: Vec<_> = (0..100).map(|i| h.open(i % 4)).collect();
    for id in &ids {
        h.request_headers(*id, deepl(fixture::OPS_KEY).headers, true);
    }
    let passed = ids
        .iter()
        .filter(|id| h.flow(**id).upstream.headers.is_some())
        .count();
    assert_eq!(passed, 50, "{}", h.log_text());
    for id in ids {
        h.send_response(id, &ok());
        h.finish(id);
    }
    assert_eq!(counted(&mut h, "pag0.cost.settled_micros"), 100_000);
}

/// The counter value of the first shared-data key starting with `prefix` (u64 LE).
fn counter(h: &Host, prefix: &str) -> u64 {
    let shared = h.shared();
    let mut found: Vec<u64> = shared
        .data
        .iter()
        .filter(|((_, k), _)| k.starts_with(prefix))
        .map(|(_, (v, _))| <[u8; 8]>::try_from(v.as_slice()).map_or(u64::MAX, u64::from_le_bytes))
        .collect();
    assert_eq!(found.len(), 1, "one counter under {prefix}");
    found.pop().unwrap_or_default()
}

/// Budget slices through the real module: the first request on a roomy counter takes a slice
/// (16 more DeepL requests' worth), the next ones on that VM touch no counter, the other VM
/// takes its own, and the root contexts' ticks give the idle slices back, leaving exactly what
/// was spent.
#[test]
fn worker_slices_are_taken_used_and_given_back_by_the_tick() {
    use pag0_host_tests::fixture::{DEEPL_PRICE, OPS_KEY};
    let price = DEEPL_PRICE as u64;
    let ops = "pag0/b/project.monthly/ops/";
    let mut h = two_vms();
    assert_allowed(&h.run_on(0, &deepl(OPS_KEY), &ok()));
    assert_eq!(
        counter(&h, ops),
        price + 16 * price,
        "the request and VM 0's slice"
    );
    assert_allowed(&h.run_on(1, &deepl(OPS_KEY), &ok()));
    assert_eq!(counter(&h, ops), 2 * 17 * price, "VM 1 took its own");
    for _ in 0..16 {
        assert_allowed(&h.run_on(0, &deepl(OPS_KEY), &ok()));
    }
    assert_eq!(
        counter(&h, ops),
        2 * 17 * price,
        "16 requests from VM 0's slice"
    );
    // One tick keeps slices used since the last one; the next gives the idle ones back.
    h.advance(Duration::from_millis(2_500));
    assert_eq!(
        counter(&h, ops),
        18 * price,
        "after the ticks the counter is what was spent\n{}",
        h.log_text()
    );
}
