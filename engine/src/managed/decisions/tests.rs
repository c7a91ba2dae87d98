//! The decision-event queue against the in-memory store: the cap and its gap, attaching to new
//! batches only, acknowledgement, refusal, and the sync body that carries them.

use serde_json::{json, Value};

use super::*;
use crate::managed::{apply_response, drop_refused, prepare_sync, record, UsageRecord};
use crate::testing::FakeStore;

fn event(at: u64) -> String {
    json!({"at": at, "decision": "deny", "code": "BUDGET_EXCEEDED", "method": "POST",
           "authority": "api.deepl.com", "path": "/v2/translate", "policyVersion": 3})
    .to_string()
}

fn events(from: u64, n: u64) -> Vec<String> {
    (from..from + n).map(event).collect()
}

fn body(out: &crate::managed::Outgoing) -> Value {
    serde_json::from_slice(&out.body).unwrap()
}

fn ats(v: &Value) -> Vec<u64> {
    v["decisions"]
        .as_array()
        .map(|a| a.iter().map(|e| e["at"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

fn ack(s: &FakeStore, out: &crate::managed::Outgoing) {
    let answer = json!({"ack": out.seq, "leaseTtlMs": 1000, "leases": {}});
    apply_response(s, out, &crate::testing::sync_answer(&answer)).unwrap();
}

#[test]
fn under_the_cap_nothing_is_dropped_and_nothing_parsed() {
    let s = FakeStore::default();
    assert_eq!(append(&s, &events(1, 3), 10).unwrap(), 0);
    assert_eq!(append(&s, &events(4, 2), 10).unwrap(), 0);
    assert_eq!(queued(&s).unwrap(), 5);
    assert_eq!(pending_gap(&s).unwrap(), None);
    assert!(waiting(&s).unwrap());
}

#[test]
fn past_the_cap_the_oldest_are_dropped_into_one_gap_with_the_exact_count() {
    let s = FakeStore::default();
    assert_eq!(append(&s, &events(100, 8), 10).unwrap(), 0);
    // 8 + 5 = 13 > 10: the 3 oldest (at 100, 101, 102) go.
    assert_eq!(append(&s, &events(200, 5), 10).unwrap(), 3);
    assert_eq!(queued(&s).unwrap(), 10);
    assert_eq!(
        pending_gap(&s).unwrap(),
        Some(DecisionGap {
            from: 100,
            to: 102,
            count: 3
        })
    );
    // More drops widen the same gap.
    assert_eq!(append(&s, &events(300, 4), 10).unwrap(), 4);
    assert_eq!(
        pending_gap(&s).unwrap(),
        Some(DecisionGap {
            from: 100,
            to: 106,
            count: 7
        })
    );
    // What is kept is the newest ten, in order.
    let out = prepare_sync(&s, "i", 3, &[], 1).unwrap();
    assert_eq!(
        ats(&body(&out)),
        vec![107, 200, 201, 202, 203, 204, 300, 301, 302, 303]
    );
    assert_eq!(
        body(&out)["gaps"],
        json!([{"from": 100, "to": 106, "count": 7}])
    );
}

#[test]
fn a_batch_of_only_decisions_gets_a_seq_and_a_resend_is_the_same_batch() {
    let s = FakeStore::default();
    append(&s, &events(1, 2), 100).unwrap();
    let first = prepare_sync(&s, "i", 3, &[], 10).unwrap();
    assert_eq!(first.seq, Some(1));
    assert_eq!(ats(&body(&first)), vec![1, 2]);
    assert_eq!(body(&first)["usage"], json!([]));
    // Not acknowledged (sidecar down); more events and usage arrive meanwhile.
    append(&s, &events(3, 1), 100).unwrap();
    record(&s, usage()).unwrap();
    let again = prepare_sync(&s, "i", 3, &[], 20).unwrap();
    assert_eq!(again.seq, Some(1));
    assert_eq!(
        body(&again),
        body(&first),
        "a resend is byte-for-byte the same batch"
    );
    ack(&s, &again);
    assert_eq!(sent(&s).unwrap(), None, "the acknowledged events are gone");
    let next = prepare_sync(&s, "i", 3, &[], 30).unwrap();
    assert_eq!(next.seq, Some(2));
    assert_eq!(ats(&body(&next)), vec![3]);
    assert_eq!(body(&next)["usage"].as_array().unwrap().len(), 1);
    ack(&s, &next);
    // Nothing waits: no batch, no decisions key in the body.
    let idle = prepare_sync(&s, "i", 3, &[], 40).unwrap();
    assert_eq!(idle.seq, None);
    assert!(body(&idle).get("decisions").is_none());
    assert!(!waiting(&s).unwrap());
}

#[test]
fn events_arriving_while_a_usage_batch_is_in_flight_wait_for_the_next_one() {
    let s = FakeStore::default();
    record(&s, usage()).unwrap();
    let first = prepare_sync(&s, "i", 3, &[], 10).unwrap();
    assert!(body(&first).get("decisions").is_none());
    append(&s, &events(5, 1), 100).unwrap();
    let again = prepare_sync(&s, "i", 3, &[], 20).unwrap();
    assert_eq!(body(&again), body(&first));
    ack(&s, &again);
    let next = prepare_sync(&s, "i", 3, &[], 30).unwrap();
    assert_eq!((next.seq, ats(&body(&next))), (Some(2), vec![5]));
}

#[test]
fn one_batch_carries_at_most_max_batch_decisions() {
    let s = FakeStore::default();
    let n = MAX_BATCH_DECISIONS as u64 + 20;
    append(&s, &events(1, n), 100_000).unwrap();
    let first = prepare_sync(&s, "i", 3, &[], 10).unwrap();
    assert_eq!(ats(&body(&first)).len(), MAX_BATCH_DECISIONS);
    ack(&s, &first);
    let second = prepare_sync(&s, "i", 3, &[], 20).unwrap();
    assert_eq!(
        ats(&body(&second)),
        (MAX_BATCH_DECISIONS as u64 + 1..=n).collect::<Vec<_>>()
    );
}

#[test]
fn a_batch_refused_as_invalid_leaves_a_gap_for_its_events() {
    let s = FakeStore::default();
    append(&s, &events(40, 3), 100).unwrap();
    let first = prepare_sync(&s, "i", 3, &[], 10).unwrap();
    assert_eq!(drop_refused(&s, &first).unwrap(), Some((0, 3)));
    assert_eq!(
        pending_gap(&s).unwrap(),
        Some(DecisionGap {
            from: 40,
            to: 42,
            count: 3
        })
    );
    let next = prepare_sync(&s, "i", 3, &[], 20).unwrap();
    assert_eq!(next.seq, Some(2));
    assert_eq!(
        body(&next)["gaps"],
        json!([{"from": 40, "to": 42, "count": 3}])
    );
    assert!(ats(&body(&next)).is_empty());
}

#[test]
fn events_of_an_earlier_batch_never_ride_a_new_seq_they_become_a_gap() {
    let s = FakeStore::default();
    append(&s, &events(7, 2), 100).unwrap();
    let first = prepare_sync(&s, "i", 3, &[], 10).unwrap();
    // The usage batch was cleared but the events' acknowledgement never applied.
    crate::managed::batches::update_batches(&s, |b| b.inflight = None).unwrap();
    append(&s, &events(9, 1), 100).unwrap();
    let next = prepare_sync(&s, "i", 3, &[], 20).unwrap();
    assert_ne!(next.seq, first.seq);
    assert_eq!(ats(&body(&next)), vec![9]);
    assert_eq!(
        body(&next)["gaps"],
        json!([{"from": 7, "to": 8, "count": 2}])
    );
}

fn usage() -> UsageRecord {
    UsageRecord {
        amount: pag0_policy::Micros::new(5),
        counters: vec!["org.monthly/2026-12".into()],
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
