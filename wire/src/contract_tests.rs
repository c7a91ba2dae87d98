//! The sync and approval messages: what the filter serialises is what the sidecar reads, and
//! a missing field the reader needs is an error, never 0.

use std::collections::BTreeMap;

use pag0_policy::Micros;
use serde_json::{json, Value};

use super::*;

fn record() -> UsageRecord {
    UsageRecord {
        amount: Micros::new(1_500),
        counters: vec!["p:sales-ai:daily:2026-12-07".into()],
        project_id: Some("sales-ai".into()),
        client_id: Some("sales-bot".into()),
        host: Some("api.openai.com".into()),
        at: Some(1_764_000_000_123),
        cache_hit: false,
        savings: None,
        suspect: Some(SuspectReport {
            raw: "9e9".into(),
            reason: "above_bound".into(),
        }),
        learn: Some(LearnFacts {
            key: "api.openai.com".into(),
            estimate: Micros::new(1_200),
        }),
    }
}

fn request() -> SyncRequest {
    SyncRequest {
        instance_id: "envoy-1".into(),
        seq: 42,
        policy_version: 7,
        usage: vec![record()],
        decisions: vec![json!({"at": 1, "decision": "allow"})],
        gaps: vec![DecisionGap::one(5)],
        leases: vec![
            LeaseAsk {
                counter: "p:sales-ai:daily:2026-12-07".into(),
                want: Some(Micros::new(6_250_000)),
            },
            LeaseAsk {
                counter: "o:acme:monthly:2026-12".into(),
                want: None,
            },
        ],
        release: vec!["p:old:daily:2026-12-06".into()],
    }
}

#[test]
fn a_sync_request_the_filter_sends_is_what_the_sidecar_reads() {
    let sent = request();
    let bytes = serde_json::to_vec(&sent).unwrap();
    // The sidecar's reading: the envelope, then each element on its own.
    let read: SyncRequest<Value, Value, Value> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(read.instance_id, "envoy-1");
    assert_eq!(read.seq, 42);
    assert_eq!(read.policy_version, 7);
    assert_eq!(read.leases, sent.leases);
    assert_eq!(read.release, sent.release);
    let usage: Vec<UsageIn> = read
        .usage
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].amount, Micros::new(1_500));
    assert_eq!(
        usage[0].learn,
        Some(json!({"key": "api.openai.com", "estimate": "1200"}))
    );
    let gaps: Vec<DecisionGap> = read
        .gaps
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    assert_eq!(gaps, sent.gaps);
    // And typed all the way back.
    let again: SyncRequest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(again, sent);
}

#[test]
fn money_travels_as_decimal_strings() {
    let v = serde_json::to_value(request()).unwrap();
    assert_eq!(v["usage"][0]["amount"], "1500");
    assert_eq!(v["usage"][0]["learn"]["estimate"], "1200");
    assert_eq!(v["leases"][0]["want"], "6250000");
    assert_eq!(v["leases"][1]["want"], Value::Null);
}

#[test]
fn a_batch_without_decision_events_has_no_such_fields() {
    let mut r = request();
    r.decisions.clear();
    r.gaps.clear();
    let v = serde_json::to_value(&r).unwrap();
    assert!(v.get("decisions").is_none(), "{v}");
    assert!(v.get("gaps").is_none(), "{v}");
}

/// The sidecar digests records in this form (a retried batch must be the same records): the
/// field order and the skipped fields are part of the contract.
#[test]
fn a_usage_record_serialises_in_the_digested_form() {
    let bare = UsageRecord::<LearnFacts> {
        amount: Micros::new(5),
        counters: vec!["c".into()],
        project_id: Some("p".into()),
        client_id: None,
        host: Some("h".into()),
        at: Some(1),
        cache_hit: false,
        savings: None,
        suspect: None,
        learn: None,
    };
    assert_eq!(
        serde_json::to_string(&bare).unwrap(),
        r#"{"amount":"5","counters":["c"],"projectId":"p","clientId":null,"host":"h","at":1}"#
    );
    let hit = UsageRecord::<LearnFacts> {
        cache_hit: true,
        savings: Some(Micros::new(9)),
        ..bare
    };
    assert_eq!(
        serde_json::to_string(&hit).unwrap(),
        r#"{"amount":"5","counters":["c"],"projectId":"p","clientId":null,"host":"h","at":1,"cacheHit":true,"savings":"9"}"#
    );
}

#[test]
fn a_usage_record_without_an_amount_is_an_error_not_zero() {
    let e = serde_json::from_value::<UsageIn>(json!({"counters": []})).unwrap_err();
    assert!(e.to_string().contains("amount"), "{e}");
    for bad in [
        json!("-5"),
        json!(1.5),
        json!("1e3"),
        json!(null),
        json!(-1),
    ] {
        assert!(
            serde_json::from_value::<UsageIn>(json!({ "amount": bad })).is_err(),
            "{bad}"
        );
    }
}

fn response() -> SyncResponse {
    let mut leases = BTreeMap::new();
    leases.insert(
        "p:sales-ai:daily:2026-12-07".to_string(),
        LeaseGrant {
            granted: Micros::new(6_250_000),
            limit: Micros::new(100_000_000),
            spent: Micros::new(12_000),
            expires_at_ms: 1_764_000_030_000,
        },
    );
    let mut learned = BTreeMap::new();
    learned.insert(
        "api.openai.com".to_string(),
        LearnedFigure {
            high_permille: 1_250,
            samples: 12,
        },
    );
    SyncResponse {
        ack: 42,
        duplicate: false,
        policy_version: 8,
        policy: Some(json!({"version": 1})),
        server_time_ms: 1_764_000_000_500,
        lease_ttl_ms: 30_000,
        leases,
        unlimited: vec!["o:acme:monthly:2026-12".into()],
        learned,
    }
}

#[test]
fn a_sync_answer_round_trips() {
    let sent = response();
    let v = serde_json::to_value(&sent).unwrap();
    assert_eq!(
        v["leases"]["p:sales-ai:daily:2026-12-07"]["granted"],
        "6250000"
    );
    assert_eq!(v["learned"]["api.openai.com"]["highPermille"], "1250");
    assert_eq!(v["leaseTtlMs"], 30_000);
    let read: SyncResponse = serde_json::from_value(v).unwrap();
    assert_eq!(read, sent);
}

#[test]
fn a_sync_answer_missing_what_the_filter_acts_on_is_an_error() {
    let full = serde_json::to_value(response()).unwrap();
    for field in ["ack", "leaseTtlMs", "leases", "policyVersion"] {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(field);
        let e = serde_json::from_value::<SyncResponse>(v).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    for field in ["granted", "limit", "spent"] {
        let mut v = full.clone();
        v["leases"]["p:sales-ai:daily:2026-12-07"]
            .as_object_mut()
            .unwrap()
            .remove(field);
        let e = serde_json::from_value::<SyncResponse>(v).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let mut v = full.clone();
    v["learned"]["api.openai.com"]["highPermille"] = json!("12.5");
    assert!(serde_json::from_value::<SyncResponse>(v).is_err());
    // Money as an integer is read too; a policy and learned figures are optional.
    let mut v = full;
    v["leases"]["p:sales-ai:daily:2026-12-07"]["granted"] = json!(7);
    let o = v.as_object_mut().unwrap();
    o.remove("policy");
    o.remove("learned");
    let read: SyncResponse = serde_json::from_value(v).unwrap();
    assert_eq!(
        read.leases["p:sales-ai:daily:2026-12-07"].granted,
        Micros::new(7)
    );
    assert!(read.policy.is_none() && read.learned.is_empty());
}

#[test]
fn approval_calls_round_trip_and_leave_unset_options_out() {
    let create = CreateApproval {
        project_id: "sales-ai".into(),
        client_id: "sales-bot".into(),
        method: "POST".into(),
        authority: "api.openai.com".into(),
        path: "/v1/chat/completions?x=1".into(),
        body_sha256: "ab".repeat(32),
        binding: "cd".repeat(32),
        estimated_cost: Micros::new(2_000_000),
        policy_version: 3,
        justification: Some("quarterly report".into()),
        requested_by: None,
        callback_url: None,
    };
    let v = serde_json::to_value(&create).unwrap();
    assert_eq!(v["estimatedCost"], "2000000");
    assert!(v.get("requestedBy").is_none() && v.get("callbackUrl").is_none());
    assert_eq!(serde_json::from_value::<CreateApproval>(v).unwrap(), create);

    let consume = ConsumeApproval {
        binding: "cd".repeat(32),
        estimated_cost: Micros::new(2_000_000),
        policy_version: 3,
    };
    let v = serde_json::to_value(&consume).unwrap();
    assert_eq!(
        serde_json::from_value::<ConsumeApproval>(v.clone()).unwrap(),
        consume
    );
    let mut v = v;
    v.as_object_mut().unwrap().remove("estimatedCost");
    assert!(serde_json::from_value::<ConsumeApproval>(v).is_err());
}

#[test]
fn every_refusal_has_its_wire_code_and_policy_code() {
    for r in Refusal::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        assert_eq!(
            serde_json::from_value::<Refusal>(json!(r.as_str())).unwrap(),
            r
        );
        match r.deny_code() {
            None => assert_eq!(r, Refusal::Pending),
            Some(code) => assert_eq!(code.as_str(), r.as_str()),
        }
    }
    assert!(serde_json::from_value::<Refusal>(json!("BUDGET_EXCEEDED")).is_err());
    let body: RefusalBody = serde_json::from_value(json!({"error": {
        "code": "APPROVAL_USED", "message": "already used", "details": [], "projectId": "p"}}))
    .unwrap();
    assert_eq!(body.error.code, Refusal::Used);
    assert_eq!(body.error.project_id.as_deref(), Some("p"));
}
