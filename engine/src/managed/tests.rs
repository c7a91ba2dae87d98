//! Managed-mode shared state against the in-memory store: election, stop-and-wait batches,
//! leases taken from an answer, admission.

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::testing::FakeStore;

fn record(amount: u64) -> UsageRecord {
    UsageRecord {
        amount: Micros::new(amount),
        counters: vec!["org.monthly/2026-11".into()],
        project_id: Some("p".into()),
        client_id: Some("c".into()),
        host: Some("api.deepl.com".into()),
        at: Some(1),
        cache_hit: false,
        savings: None,
        suspect: None,
        learn: None,
    }
}

fn policy() -> CompiledPolicy {
    CompiledPolicy::from_value(&json!({
        "orgId": "o", "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "1600000", "dailyBudget": "800000" },
        "endpoints": [],
        "projects": [{ "id": "p", "policy": { "dailyBudget": "160000" } },
                     { "id": "q", "policy": {} }],
        "clients": []
    }))
    .unwrap()
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn body(v: &Outgoing) -> serde_json::Value {
    serde_json::from_slice(&v.body).unwrap()
}

#[test]
fn one_worker_owns_the_sync_until_it_goes_stale() {
    let s = FakeStore::default();
    assert!(try_own(&s, 1, 1_000, 500).unwrap());
    assert!(!try_own(&s, 2, 1_100, 500).unwrap(), "owner is fresh");
    assert!(try_own(&s, 1, 1_200, 500).unwrap(), "owner renews");
    assert!(!try_own(&s, 2, 1_600, 500).unwrap());
    assert!(
        try_own(&s, 2, 1_800, 500).unwrap(),
        "stale owner is overtaken"
    );
    assert!(!try_own(&s, 1, 1_801, 500).unwrap());
}

#[test]
fn the_instance_id_is_made_once() {
    let s = FakeStore::default();
    let a = instance_id(&s).unwrap();
    let b = instance_id(&s).unwrap();
    assert_eq!(a, b);
    assert!(a.starts_with("envoy-") && a.len() == 22, "{a}");
    assert_ne!(random_u64(5), random_u64(5), "per-call random keys");
}

#[test]
fn the_same_batch_is_resent_until_acknowledged_then_the_next_seq() {
    let s = FakeStore::default();
    record_usage(&s, 100);
    record_usage(&s, 200);
    let first = prepare_sync(&s, "i", 0, &[], 10).unwrap();
    assert_eq!(first.seq, Some(1));
    // Usage settled while batch 1 is out goes to the next batch.
    record_usage(&s, 300);
    let again = prepare_sync(&s, "i", 0, &[], 20).unwrap();
    assert_eq!(body(&again)["usage"], body(&first)["usage"]);
    assert_eq!(body(&again)["seq"], 1);
    // A failed answer changes nothing; an answer for another seq acknowledges nothing.
    let wrong = apply_response(
        &s,
        &again,
        &crate::testing::sync_answer(
            &serde_json::json!({"ack": 7, "leaseTtlMs": 1000, "leases": {}}),
        ),
    )
    .unwrap();
    assert_eq!(wrong.acked, None);
    let ok = apply_response(
        &s,
        &again,
        &crate::testing::sync_answer(
            &serde_json::json!({"ack": 1, "leaseTtlMs": 1000, "leases": {}}),
        ),
    )
    .unwrap();
    assert_eq!(ok.acked, Some(1));
    let next = prepare_sync(&s, "i", 0, &[], 30).unwrap();
    assert_eq!(next.seq, Some(2));
    assert_eq!(body(&next)["usage"][0]["amount"], "300");
    assert_eq!(body(&next)["usage"].as_array().unwrap().len(), 1);
    // A duplicate ack of batch 1 (a second owner) subtracts nothing twice.
    assert_eq!(
        apply_response(
            &s,
            &again,
            &crate::testing::sync_answer(&serde_json::json!({"ack": 1, "leaseTtlMs": 1000}))
        )
        .unwrap()
        .acked,
        None
    );
}

fn record_usage(s: &FakeStore, amount: u64) {
    // As the filter does: pending (the counter) rises at reservation and the record is queued.
    let key = "pag0/b/org.monthly/2026-11";
    let v = s.value(key) + amount;
    s.set(key, &v.to_le_bytes(), None).unwrap();
    record_into(s, amount);
}

fn record_into(s: &FakeStore, amount: u64) {
    super::record(s, record(amount)).unwrap();
}

/// An answer without a field the filter acts on (pag0_wire::SyncResponse) is refused whole:
/// no lease taken, no batch acknowledged, no policy stored — never a missing field read as 0.
#[test]
fn an_answer_missing_what_the_filter_acts_on_changes_nothing() {
    let s = FakeStore::default();
    record_usage(&s, 1_000);
    let p = policy();
    let counters = policy_counters(&p, now());
    let out = prepare_sync(&s, "i", 0, &counters, 5_000).unwrap();
    let full: serde_json::Value = serde_json::from_slice(&crate::testing::sync_answer(&json!({
        "ack": 1, "policyVersion": 3, "policy": {"orgId": "o"}, "leaseTtlMs": 30000,
        "leases": { "org.monthly/2026-11": { "granted": "99000", "limit": "1600000",
                    "spent": "1000", "expiresAtMs": 1 } }
    })))
    .unwrap();
    let mut broken = Vec::new();
    for field in ["ack", "leaseTtlMs", "leases", "policyVersion"] {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(field);
        broken.push((field, v));
    }
    for field in ["granted", "limit", "spent"] {
        let mut v = full.clone();
        v["leases"]["org.monthly/2026-11"]
            .as_object_mut()
            .unwrap()
            .remove(field);
        broken.push((field, v));
    }
    for (field, v) in broken {
        let e = apply_response(&s, &out, v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
        assert!(
            lease(&s, "org.monthly/2026-11").unwrap().is_none(),
            "{field}"
        );
        assert_eq!(policy_version(&s).unwrap(), 0, "{field}");
        assert_eq!(s.value("pag0/b/org.monthly/2026-11"), 1_000, "{field}");
        assert_eq!(
            batches(&s).unwrap().inflight.map(|b| b.seq),
            Some(1),
            "{field}"
        );
    }
    // The complete answer is taken.
    assert_eq!(
        apply_response(&s, &out, full.to_string().as_bytes())
            .unwrap()
            .acked,
        Some(1)
    );
    assert_eq!(s.value("pag0/b/org.monthly/2026-11"), 0);
}

#[test]
fn an_answer_sets_leases_then_takes_acknowledged_usage_out_of_pending() {
    let s = FakeStore::default();
    record_usage(&s, 1_000);
    let p = policy();
    let counters = policy_counters(&p, now());
    let names: Vec<_> = counters.iter().map(|(k, _)| k.storage_key()).collect();
    assert_eq!(
        names,
        [
            "org.monthly/2026-11",
            "org.daily/2026-11-24",
            "project.daily/p/2026-11-24"
        ]
    );
    let out = prepare_sync(&s, "i", 0, &counters, 5_000).unwrap();
    let b = body(&out);
    assert_eq!(
        b["leases"][0],
        json!({"counter": "org.monthly/2026-11", "want": "100000"})
    );
    assert_eq!(b["leases"][2]["want"], "10000");
    let answer = json!({
        "ack": 1, "policyVersion": 3, "policy": {"orgId": "o"}, "leaseTtlMs": 30000,
        "leases": { "org.monthly/2026-11": { "granted": "99000", "limit": "1600000",
                    "spent": "1000", "expiresAtMs": 1 } }
    });
    let applied = apply_response(&s, &out, &crate::testing::sync_answer(&answer)).unwrap();
    assert_eq!(applied.new_policy_version, Some(3));
    assert_eq!(policy_version(&s).unwrap(), 3);
    let l = lease(&s, "org.monthly/2026-11").unwrap().unwrap();
    assert_eq!(
        l,
        Lease {
            granted: 99_000,
            valid_until_ms: 35_000,
            want: 100_000,
            spent: 1000,
            limit: 1_600_000,
        }
    );
    assert_eq!(
        s.value("pag0/b/org.monthly/2026-11"),
        0,
        "acknowledged usage left pending"
    );
    assert!(lease(&s, "org.daily/2026-11-24").unwrap().is_none());

    // A period change: the counter no longer charged is released at the next sync.
    let tomorrow = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap();
    let next = prepare_sync(&s, "i", 3, &policy_counters(&p, tomorrow), 6_000).unwrap();
    assert_eq!(body(&next)["release"], json!(["org.monthly/2026-11"]));
}

#[test]
fn a_lease_running_low_asks_for_twice_as_much() {
    let s = FakeStore::default();
    let p = policy();
    let counters = policy_counters(&p, now());
    let out = prepare_sync(&s, "i", 0, &counters, 0).unwrap();
    let answer = json!({"ack": 1, "leaseTtlMs": 30000,
        "leases": { "org.monthly/2026-11": { "granted": "100000" } }});
    apply_response(&s, &out, &crate::testing::sync_answer(&answer)).unwrap();
    // 80 % of the slice in flight: under the low-water mark.
    s.set("pag0/b/org.monthly/2026-11", &80_000u64.to_le_bytes(), None)
        .unwrap();
    let out = prepare_sync(&s, "i", 0, &counters, 1).unwrap();
    assert_eq!(body(&out)["leases"][0]["want"], "200000");
}

#[test]
fn admission_follows_lease_health_and_failure_mode() {
    let l = Some(Lease {
        granted: 500,
        valid_until_ms: 100,
        want: 500,
        ..Lease::default()
    });
    let c = FailureMode::Closed;
    let o = FailureMode::Open;
    assert_eq!(admit(l, 50, false, c), Admit::Lease(Micros::new(500)));
    assert_eq!(admit(l, 50, true, c), Admit::Lease(Micros::new(500)));
    assert_eq!(admit(l, 100, true, c), Admit::Unavailable, "expired");
    assert_eq!(admit(None, 0, false, c), Admit::Unavailable);
    assert_eq!(admit(l, 100, true, o), Admit::Unbounded);
    assert_eq!(admit(None, 0, false, o), Admit::Unbounded);
    // decide() sees limit − (allowance − pending).
    assert_eq!(
        presented_used(Micros::new(1000), Micros::new(500), Micros::new(200)),
        Micros::new(700)
    );
    assert_eq!(
        presented_used(Micros::new(1000), Micros::new(500), Micros::new(900)),
        Micros::new(1000)
    );
}

#[test]
fn health_transitions_are_reported_once() {
    let s = FakeStore::default();
    assert!(!set_down(&s, false, 1).unwrap());
    assert!(set_down(&s, true, 5).unwrap());
    assert!(!set_down(&s, true, 6).unwrap());
    assert_eq!(down_since(&s).unwrap(), Some(5));
    assert!(set_down(&s, false, 7).unwrap());
    assert_eq!(down_since(&s).unwrap(), None);
}

#[test]
fn policy_round_trips_through_shared_data() {
    let s = FakeStore::default();
    assert_eq!(load_policy(&s).unwrap().map(|(v, _)| v), None);
    let doc = json!({"orgId": "o", "timezone": "UTC", "globalPolicy": {}, "endpoints": [],
                     "projects": [], "clients": []});
    store_policy(&s, 9, &doc).unwrap();
    let (v, p) = load_policy(&s).unwrap().unwrap();
    assert_eq!((v, p.org_id()), (9, "o"));
    store_policy(&s, 10, &json!({"orgId": 1})).unwrap();
    assert!(load_policy(&s).is_err(), "a bad document is not adopted");
}

#[test]
fn a_request_larger_than_its_slice_gets_a_slice_that_fits_at_the_next_sync() {
    let s = FakeStore::default();
    let p = policy();
    let counters = policy_counters(&p, now());
    let out = prepare_sync(&s, "i", 0, &counters, 0).unwrap();
    // The default first slice of the org month (1/16 of 1600000) is 100000; the fleet has room.
    assert_eq!(body(&out)["leases"][0]["want"], "100000");
    let answer = json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
        "org.monthly/2026-11": { "granted": "100000", "spent": "0", "limit": "1600000" } }});
    apply_response(&s, &out, &crate::testing::sync_answer(&answer)).unwrap();

    // A request estimated at 300000 cannot fit the 100000 slice; doubling alone would take two
    // more syncs, so the refusal records what it needs and asks for an early sync.
    let key = counters[0].0.clone();
    let view = LeaseView::read(&s, &p, "q", now(), 1, FailureMode::Closed).unwrap();
    let big = [Reservation {
        key: key.clone(),
        amount: Micros::new(300_000),
        limit: Micros::new(1_600_000),
    }];
    assert!(record_shortfall(&s, &view, &big).unwrap());
    // A request that fits records nothing.
    let small = [Reservation {
        key,
        amount: Micros::new(50_000),
        limit: Micros::new(1_600_000),
    }];
    assert!(!record_shortfall(&s, &view, &small).unwrap());

    let out = prepare_sync(&s, "i", 0, &counters, 2).unwrap();
    assert_eq!(body(&out)["leases"][0]["want"], "300000");
    // The need is asked for once; a retried request that still needs it records it again.
    let out = prepare_sync(&s, "i", 0, &counters, 3).unwrap();
    assert_eq!(body(&out)["leases"][0]["want"], "100000");
}

/// A store whose writes fail while `broken` is set.
struct Flaky {
    store: FakeStore,
    broken: std::cell::Cell<bool>,
}

impl SharedStore for Flaky {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        self.store.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if self.broken.get() {
            return Err(SetError::Host(HostError(10)));
        }
        self.store.set(key, value, cas)
    }
    fn now_nanos(&self) -> u64 {
        self.store.now_nanos()
    }
}

fn amounts(b: &Batches) -> Vec<String> {
    b.unsent.iter().map(|r| r.amount.to_string()).collect()
}

#[test]
fn a_worker_buffers_usage_and_appends_it_in_one_write_per_flush() {
    let s = FakeStore::default();
    let buf = UsageBuffer::new();
    // The batch state exists (created by an earlier flush).
    buf.push(&s, record(0)).unwrap();
    buf.flush(&s).unwrap();
    let writes = s.map.lock().unwrap().1;
    for a in 1..=3 {
        buf.push(&s, record(a)).unwrap();
    }
    assert_eq!(buf.len(), 3);
    assert_eq!(
        s.map.lock().unwrap().1,
        writes,
        "nothing written per request"
    );
    buf.flush(&s).unwrap();
    assert!(buf.is_empty());
    assert_eq!(amounts(&batches(&s).unwrap()), ["0", "1", "2", "3"]);
    assert_eq!(
        s.map.lock().unwrap().1,
        writes + 1,
        "one write for the three"
    );
    buf.flush(&s).unwrap();
    assert_eq!(
        s.map.lock().unwrap().1,
        writes + 1,
        "an empty flush writes nothing"
    );

    // A full buffer appends without waiting for the tick (bounded memory).
    for _ in 0..FLUSH_RECORDS {
        buf.push(&s, record(9)).unwrap();
    }
    assert!(buf.is_empty());
    assert_eq!(batches(&s).unwrap().unsent.len(), 4 + FLUSH_RECORDS);
}

#[test]
fn records_whose_append_fails_are_kept_in_order_for_the_next_flush() {
    let s = Flaky {
        store: FakeStore::default(),
        broken: std::cell::Cell::new(false),
    };
    let buf = UsageBuffer::new();
    buf.push(&s, record(1)).unwrap();
    buf.flush(&s).unwrap();
    buf.push(&s, record(2)).unwrap();
    buf.push(&s, record(3)).unwrap();
    s.broken.set(true);
    assert_eq!(buf.flush(&s), Err(HostError(10)));
    assert_eq!(buf.len(), 2, "kept");
    buf.push(&s, record(4)).unwrap();
    s.broken.set(false);
    buf.flush(&s).unwrap();
    assert_eq!(amounts(&batches(&s).unwrap()), ["1", "2", "3", "4"]);
}

#[test]
fn after_close_a_record_is_appended_at_once() {
    let s = FakeStore::default();
    let buf = UsageBuffer::new();
    buf.push(&s, record(1)).unwrap();
    buf.close(&s).unwrap();
    assert_eq!(amounts(&batches(&s).unwrap()), ["1"], "close flushes");
    // A request that settles after the root context stopped: no tick will come.
    buf.push(&s, record(2)).unwrap();
    assert!(buf.is_empty());
    assert_eq!(amounts(&batches(&s).unwrap()), ["1", "2"]);
}

/// Issue 20: a batch the sidecar refused as invalid was resent forever and held every later
/// record back. A 4xx (not 408/429) drops it; the next sync carries the next batch.
#[test]
fn a_batch_refused_as_invalid_is_dropped_not_resent() {
    let s = FakeStore::default();
    record_usage(&s, 100);
    let first = prepare_sync(&s, "i", 0, &[], 10).unwrap();
    assert_eq!(first.seq, Some(1));
    record_usage(&s, 300);
    assert_eq!(drop_refused(&s, &first).unwrap(), Some((1, 0)));
    // Dropping twice (another worker saw the same answer) drops nothing more.
    assert_eq!(drop_refused(&s, &first).unwrap(), None);
    let next = prepare_sync(&s, "i", 0, &[], 20).unwrap();
    assert_eq!(next.seq, Some(2));
    assert_eq!(body(&next)["usage"][0]["amount"], "300");
    assert_eq!(body(&next)["usage"].as_array().unwrap().len(), 1);
    // The dropped amount stays pending here (the fleet never saw it): conservative.
    assert_eq!(s.value("pag0/b/org.monthly/2026-11"), 400);
    for (status, invalid) in [
        ("400", true),
        ("409", true),
        ("413", true),
        ("422", true),
        ("408", false),
        ("429", false),
        ("500", false),
        ("503", false),
        ("504", false),
        ("200", false),
        ("", false),
        ("4", false),
    ] {
        assert_eq!(refused_as_invalid(status), invalid, "{status:?}");
    }
}

/// One sync carries at most MAX_BATCH_RECORDS records: a backlog drains in fast batches.
#[test]
fn a_backlog_is_sent_in_bounded_batches() {
    let s = FakeStore::default();
    let backlog = MAX_BATCH_RECORDS * 2 + 7;
    super::batches::update_batches(&s, |b| {
        b.unsent.extend((0..backlog).map(|i| record(i as u64 + 1)));
    })
    .unwrap();
    let mut sizes = Vec::new();
    for seq in 1..=3u64 {
        let out = prepare_sync(&s, "i", 0, &[], seq).unwrap();
        assert_eq!(out.seq, Some(seq));
        sizes.push(body(&out)["usage"].as_array().unwrap().len());
        // A batch's JSON stays small enough to commit well inside timeoutMs.
        assert!(out.body.len() < 400 * 1024, "{} bytes", out.body.len());
        let ack = crate::testing::sync_answer(&json!({"ack": seq}));
        assert_eq!(apply_response(&s, &out, &ack).unwrap().acked, Some(seq));
    }
    assert_eq!(sizes, [MAX_BATCH_RECORDS, MAX_BATCH_RECORDS, 7]);
}

#[test]
fn a_backlog_is_half_a_batch_waiting() {
    let s = FakeStore::default();
    assert!(!backlog(&s));
    super::batches::update_batches(&s, |b| {
        b.unsent
            .extend((0..MAX_BATCH_RECORDS / 2 - 1).map(|i| record(i as u64 + 1)));
    })
    .unwrap();
    assert!(!backlog(&s));
    record_into(&s, 7);
    assert!(backlog(&s));
}

// === room on the request path ===

fn org_month_view(s: &FakeStore, p: &CompiledPolicy) -> LeaseView {
    LeaseView::read(s, p, "q", now(), 1, FailureMode::Closed).unwrap()
}

fn reservation(amount: u64) -> Reservation {
    Reservation {
        key: policy_counters(&policy(), now())[0].0.clone(),
        amount: Micros::new(amount),
        limit: Micros::new(1_600_000),
    }
}

/// The first slice (1/16 of the org month, 100000), as the first sync leaves it.
fn first_slice(s: &FakeStore, p: &CompiledPolicy) -> Vec<(pag0_policy::BudgetKey, Micros)> {
    let counters = policy_counters(p, now());
    let out = prepare_sync(s, "i", 0, &counters, 0).unwrap();
    let answer = json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
        "org.monthly/2026-11": { "granted": "100000", "spent": "0", "limit": "1600000" } }});
    apply_response(s, &out, &crate::testing::sync_answer(&answer)).unwrap();
    counters
}

#[test]
fn a_room_call_asks_for_the_short_counters_only_sized_to_the_request() {
    let s = FakeStore::default();
    let p = policy();
    let counters = first_slice(&s, &p);
    let view = org_month_view(&s, &p);
    assert!(
        prepare_room_call(&s, &view, &[reservation(50_000)], 3, 10)
            .unwrap()
            .is_none(),
        "a request that fits its slice needs no call"
    );
    let call = prepare_room_call(&s, &view, &[reservation(300_000)], 3, 10)
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(v["instanceId"], instance_id(&s).unwrap());
    assert_eq!(v["seq"], 1);
    assert_eq!(v["policyVersion"], 3);
    assert_eq!(
        v["usage"],
        json!([]),
        "never usage: no seq, no ack to disturb"
    );
    assert_eq!(
        v["leases"],
        json!([{"counter": "org.monthly/2026-11", "want": "1200000"}]),
        "4 requests of 300000"
    );
    assert_eq!(call.wants, [("org.monthly/2026-11".to_string(), 1_200_000)]);

    let answer = json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
        "org.monthly/2026-11": { "granted": "1200000", "spent": "0", "limit": "1600000" } }});
    assert!(apply_room_answer(&s, &call, &crate::testing::sync_answer(&answer)).unwrap());
    let l = lease(&s, "org.monthly/2026-11").unwrap().unwrap();
    assert_eq!(
        (l.granted, l.valid_until_ms, l.want),
        (1_200_000, 30_010, 1_200_000)
    );
    assert_eq!(
        org_month_view(&s, &p)
            .admission(&[reservation(300_000)])
            .unwrap()[0]
            .limit
            .get(),
        1_200_000,
        "admission checks against the new lease"
    );
    // The regular sync keeps the slice at the size the requests needed.
    let out = prepare_sync(&s, "i", 0, &counters, 20).unwrap();
    assert_eq!(body(&out)["leases"][0]["want"], "1200000");
}

#[test]
fn a_room_answer_is_not_taken_when_a_usage_batch_was_acknowledged_meanwhile() {
    let s = FakeStore::default();
    let p = policy();
    let counters = first_slice(&s, &p);
    // 40000 settled, sent in batch 1 (in flight), then a room call goes out.
    record_usage(&s, 40_000);
    let batch = prepare_sync(&s, "i", 0, &counters, 5).unwrap();
    assert_eq!(batch.seq, Some(1));
    let view = org_month_view(&s, &p);
    let call = prepare_room_call(&s, &view, &[reservation(300_000)], 0, 6)
        .unwrap()
        .unwrap();
    // The sidecar committed the room call first (granted not net of batch 1), then batch 1;
    // batch 1's answer arrives first and takes 40000 out of pending.
    let after_batch = json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
        "org.monthly/2026-11": { "granted": "1160000", "spent": "40000", "limit": "1600000" } }});
    assert_eq!(
        apply_response(&s, &batch, &crate::testing::sync_answer(&after_batch))
            .unwrap()
            .acked,
        Some(1)
    );
    assert_eq!(s.value("pag0/b/org.monthly/2026-11"), 0);
    // The room answer (1200000, not net of the 40000) would admit 40000 too many: not taken.
    let stale = json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
        "org.monthly/2026-11": { "granted": "1200000", "spent": "0", "limit": "1600000" } }});
    assert!(!apply_room_answer(&s, &call, &crate::testing::sync_answer(&stale)).unwrap());
    assert_eq!(
        lease(&s, "org.monthly/2026-11").unwrap().unwrap().granted,
        1_160_000
    );

    // A batch dropped as invalid meanwhile: not taken either.
    record_usage(&s, 1_000);
    let batch = prepare_sync(&s, "i", 0, &counters, 7).unwrap();
    let call = prepare_room_call(&s, &org_month_view(&s, &p), &[reservation(1_500_000)], 0, 8)
        .unwrap()
        .unwrap();
    assert!(drop_refused(&s, &batch).unwrap().is_some());
    assert!(!apply_room_answer(&s, &call, &crate::testing::sync_answer(&stale)).unwrap());
    // Nothing changed meanwhile: taken, and the counter is listed as leased.
    let call = prepare_room_call(&s, &org_month_view(&s, &p), &[reservation(1_500_000)], 0, 9)
        .unwrap()
        .unwrap();
    assert!(apply_room_answer(&s, &call, &crate::testing::sync_answer(&stale)).unwrap());
    assert_eq!(
        lease(&s, "org.monthly/2026-11").unwrap().unwrap().granted,
        1_200_000
    );
    let leased: Vec<String> =
        serde_json::from_slice(&s.get(LEASED_KEY).unwrap().0.unwrap()).unwrap();
    assert!(leased.contains(&"org.monthly/2026-11".to_string()));
}

#[test]
fn a_room_call_for_a_counter_without_a_lease_asks_for_it() {
    let s = FakeStore::default();
    let p = policy();
    let view = org_month_view(&s, &p);
    let call = prepare_room_call(&s, &view, &[reservation(1_000)], 0, 1)
        .unwrap()
        .unwrap();
    // No lease: at least the default slice (1/16 of 1600000).
    assert_eq!(call.wants, [("org.monthly/2026-11".to_string(), 100_000)]);
    assert!(!apply_room_answer(&s, &call, b"not json").is_ok_and(|t| t));
}

proptest::proptest! {
    #[test]
    fn a_sized_want_covers_the_request_and_never_passes_the_limit(
        limit in 1u64..10_000_000_000, pending in 0u64..10_000_000_000,
        amount in 0u64..10_000_000_000, current in 0u64..10_000_000_000,
    ) {
        let w = sized_want(limit, pending, amount, current);
        proptest::prop_assert!(w <= limit);
        proptest::prop_assert!(w >= (pending + amount).min(limit));
        proptest::prop_assert!(w >= (SIZING_REQUESTS * amount).min(limit));
        proptest::prop_assert!(w >= current.min(limit), "never below the current target");
        proptest::prop_assert!(w >= 1);
    }
}

/// Issue 23: the fleet's learned figures in a sync answer are folded into this Envoy's
/// (`max`). A malformed entry is no 0: the answer is refused whole (pag0_wire::SyncResponse),
/// nothing of it taken.
#[test]
fn an_answer_folds_the_fleets_learned_estimates_into_ours() {
    let s = FakeStore::default();
    crate::learned::observe(
        &s,
        "api.salesforce.com",
        Micros::new(1000),
        Micros::new(3500),
    )
    .unwrap();
    let out = prepare_sync(&s, "i", 0, &[], 5_000).unwrap();
    let answer = json!({ "leaseTtlMs": 1000, "learned": {
        "api.salesforce.com": { "highPermille": "120000", "samples": 7 },
        "api.tavily.com": { "highPermille": "3000", "samples": 2 },
        "api.nosamples.example": { "highPermille": "5000", "samples": 0 },
    }});
    for bad in [
        json!({ "highPermille": "-1", "samples": 2 }),
        json!({ "highPermille": "5000" }),
    ] {
        let mut refused = answer.clone();
        refused["learned"]["api.bad.example"] = bad;
        assert!(apply_response(&s, &out, &crate::testing::sync_answer(&refused)).is_err());
        assert_eq!(
            crate::learned::read(&s, "api.tavily.com"),
            None,
            "nothing taken"
        );
    }
    apply_response(&s, &out, &crate::testing::sync_answer(&answer)).unwrap();
    let sf = crate::learned::read(&s, "api.salesforce.com").unwrap();
    assert_eq!((sf.high_permille, sf.samples), (120_000, 7));
    let tv = crate::learned::read(&s, "api.tavily.com").unwrap();
    assert_eq!((tv.high_permille, tv.samples), (3000, 2));
    assert_eq!(
        crate::learned::read(&s, "api.nosamples.example"),
        None,
        "0 samples: no figure"
    );
    // A fleet figure below ours leaves ours.
    let answer = json!({ "leaseTtlMs": 1000, "learned": {
        "api.salesforce.com": { "highPermille": "2000", "samples": 1 } }});
    apply_response(&s, &out, &crate::testing::sync_answer(&answer)).unwrap();
    assert_eq!(
        crate::learned::read(&s, "api.salesforce.com")
            .unwrap()
            .high_permille,
        120_000
    );
}
