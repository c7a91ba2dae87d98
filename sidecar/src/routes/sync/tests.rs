//! `POST /v1/sync`: a batch is counted once, leases never exceed the room, the policy rides
//! along only when newer, a malformed batch is refused with paths.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::testing::{harness, policy, usage, ALICE, ORG_DAY, ORG_MONTH, PROJ_MONTH, SYNC};

#[tokio::test]
async fn a_usage_batch_is_counted_once() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let batch = json!({ "instanceId": "envoy-a", "seq": 1, "policyVersion": 1,
                        "usage": [usage("1000", &[ORG_MONTH, PROJ_MONTH]), usage("250", &[ORG_MONTH])] });
    let r = h.sync(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["ack"].as_u64(), r.body["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(h.spent(ORG_MONTH).await, "1250");
    assert_eq!(h.spent(PROJ_MONTH).await, "1000");

    let r = h.sync(batch).await;
    assert_eq!(
        (
            r.status,
            r.body["ack"].as_u64(),
            r.body["duplicate"].as_bool()
        ),
        (StatusCode::OK, Some(1), Some(true))
    );
    assert_eq!(
        h.spent(ORG_MONTH).await,
        "1250",
        "the retried batch is not counted again"
    );

    let r = h
        .sync(json!({ "instanceId": "envoy-a", "seq": 1, "usage": [usage("9", &[ORG_MONTH])] }))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("SEQ_REUSED"))
    );
    assert_eq!(h.spent(ORG_MONTH).await, "1250");

    let r = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        r.text
            .contains("pag0_sidecar_sync_batches_total{outcome=\"applied\"} 1"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("pag0_sidecar_sync_batches_total{outcome=\"duplicate\"} 1"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("pag0_sidecar_usage_micros_total 1250"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn two_instances_cannot_lease_more_than_the_room() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await; // org daily budget: 5_000_000
                                          // Someone already spent 1_000_000 today.
    h.sync(json!({ "instanceId": "envoy-c", "seq": 1, "usage": [usage("1000000", &[ORG_DAY])] }))
        .await;

    let ask = |inst: &str, want: &str| json!({ "instanceId": inst, "seq": 1, "leases": [ { "counter": ORG_DAY, "want": want } ] });
    let a = h.sync(ask("envoy-a", "3000000")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let b = h.sync(ask("envoy-b", "3000000")).await;
    let ga: u64 = a.body["leases"][ORG_DAY]["granted"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let gb: u64 = b.body["leases"][ORG_DAY]["granted"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((ga, gb), (3_000_000, 1_000_000));
    assert_eq!(b.body["leases"][ORG_DAY]["limit"], "5000000");
    assert_eq!(b.body["leases"][ORG_DAY]["spent"], "1000000");
    assert!(
        1_000_000 + ga + gb <= 5_000_000,
        "spent + slices never above the limit"
    );

    let r = h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await;
    let c = r.body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["counter"] == ORG_DAY)
        .unwrap()
        .clone();
    assert_eq!(
        (
            c["limit"].as_str(),
            c["spent"].as_str(),
            c["leased"].as_str(),
            c["unallocated"].as_str()
        ),
        (Some("5000000"), Some("1000000"), Some("4000000"), Some("0"))
    );
    assert_eq!(c["leases"].as_array().unwrap().len(), 2);

    // A lease with no budget behind it is not needed; the default want is 1/16 of the limit.
    let r = h
        .sync(json!({ "instanceId": "envoy-d", "seq": 1, "leases": [
        { "counter": "project.daily/nope/2026-11-24" }, { "counter": PROJ_MONTH } ] }))
        .await;
    assert_eq!(
        r.body["unlimited"],
        json!(["project.daily/nope/2026-11-24"])
    );
    assert_eq!(r.body["leases"][PROJ_MONTH]["granted"], "937500");

    // A's lease expires if A stops syncing; B can then have the room.
    h.clock.advance_ms(30_000);
    let b = h.sync(json!({ "instanceId": "envoy-b", "seq": 2, "leases": [ { "counter": ORG_DAY, "want": "4000000" } ] })).await;
    assert_eq!(b.body["leases"][ORG_DAY]["granted"], "4000000");
}

#[tokio::test]
async fn sync_carries_the_policy_only_when_newer() {
    let h = harness();
    let r = h.sync(json!({ "instanceId": "envoy-a", "seq": 1 })).await;
    assert_eq!(
        (r.body["policyVersion"].as_i64(), r.body.get("policy")),
        (Some(0), None)
    );
    h.put_policy(ALICE, &policy()).await;
    let r = h
        .sync(json!({ "instanceId": "envoy-a", "seq": 2, "policyVersion": 0 }))
        .await;
    assert_eq!(r.body["policyVersion"], 1);
    assert_eq!(r.body["policy"]["orgId"], "acme-corp");
    let r = h
        .sync(json!({ "instanceId": "envoy-a", "seq": 3, "policyVersion": 1 }))
        .await;
    assert_eq!(r.body["policyVersion"], 1);
    assert!(r.body.get("policy").is_none());
    assert_eq!(r.body["leaseTtlMs"], 30_000);
}

#[tokio::test]
async fn malformed_syncs_are_400_with_paths() {
    let h = harness();
    let r = h
        .sync(json!({ "instanceId": "bad id!", "seq": 0, "usage": [ { "amount": "5", "counters": ["nope"] } ],
                      "leases": [ { "counter": "org.daily" } ] }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "BAD_SYNC");
    let details = r.body["error"]["details"].to_string();
    for needle in ["instanceId:", "seq:", "leases[0].counter:"] {
        assert!(details.contains(needle), "{needle} in {details}");
    }
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": "nope" }))
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON", "usage is a list");
    // A policy version past SQL's BIGINT names none (schemathesis found it accepted).
    let r = h
        .sync(
            json!({ "instanceId": "a", "seq": 1, "policyVersion": 9_223_372_036_854_775_808_u64 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["error"]["details"]
            .to_string()
            .contains("policyVersion:"),
        "{}",
        r.body
    );
}

/// Issue 20 item 2: the sidecar refused a whole batch for one record (`usage[0].amount: above
/// …`), the filter resent it forever and the fleet answered 503. Now a bad record is
/// quarantined — stored, listed at `GET /v1/usage/exceptions`, applied to no counter — and the
/// rest of the batch is applied and acknowledged.
#[tokio::test]
async fn a_bad_record_is_quarantined_and_the_rest_of_the_batch_applied() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let good = json!({ "amount": "700", "counters": [ORG_DAY], "projectId": "sales-ai" });
    let bad = [
        json!({ "amount": "18446744073709551615", "counters": [ORG_DAY] }),
        json!({ "amount": "9223372036854775808", "counters": [ORG_DAY] }),
        json!({ "amount": "1.5", "counters": [ORG_DAY] }),
        json!({ "amount": "-3", "counters": [ORG_DAY] }),
        json!({ "amount": "5", "counters": ["nope"] }),
        json!({ "amount": "0", "cacheHit": true, "savings": "9223372036854775808" }),
        json!({ "amount": "0", "cacheHit": "yes" }),
        json!("not a record"),
        json!({ "counters": [ORG_DAY] }),
    ];
    for (i, b) in bad.iter().enumerate() {
        let seq = i as u64 + 1;
        let batch =
            json!({ "instanceId": "envoy-q", "seq": seq, "usage": [good.clone(), b.clone()] });
        let r = h.sync(batch.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{b}: {}", r.text);
        assert_eq!(r.body["ack"], seq, "{b}");
        // Resent (the answer was lost): a duplicate, not a 409, and nothing applied twice.
        let again = h.sync(batch).await;
        assert_eq!(again.status, StatusCode::OK, "{b}: {}", again.text);
        assert_eq!(again.body["duplicate"], true, "{b}");
    }
    // Only the good records reached the counter.
    let r = h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await;
    assert!(
        r.text.contains(&format!("{}", 700 * bad.len())),
        "{}",
        r.text
    );
    let r = h
        .call(
            Method::GET,
            "/v1/usage/exceptions?limit=1000",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.body["exceptions"].as_array().unwrap().clone();
    assert_eq!(items.len(), bad.len(), "{}", r.text);
    for e in &items {
        assert_eq!(e["kind"], "quarantined");
        assert_eq!(e["index"], 1);
        assert!(e["reason"].as_str().unwrap().starts_with("usage[1]"), "{e}");
    }
    let kept: Vec<Value> = items.iter().map(|e| e["record"].clone()).collect();
    for b in &bad {
        assert!(kept.contains(b), "{b} kept raw in {kept:?}");
    }
    // Admin only; limit as for approvals.
    let r = h
        .call(Method::GET, "/v1/usage/exceptions", Some(SYNC), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .call(
            Method::GET,
            "/v1/usage/exceptions?limit=1001",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// A record the filter charged at its bound carries `suspect`: applied as sent, and listed.
#[tokio::test]
async fn a_suspect_record_is_applied_and_listed() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let rec = json!({ "amount": "10000", "counters": [ORG_DAY], "projectId": "sales-ai",
                      "suspect": { "raw": "18446744073709551615", "reason": "above_bound" } });
    let r = h
        .sync(json!({ "instanceId": "envoy-s", "seq": 1, "usage": [rec.clone()] }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await;
    assert!(r.text.contains("10000"), "{}", r.text);
    let r = h
        .call(Method::GET, "/v1/usage/exceptions", Some(ALICE), None)
        .await;
    let e = &r.body["exceptions"][0];
    assert_eq!(e["kind"], "suspect", "{}", r.text);
    assert_eq!(e["reason"], "above_bound: 18446744073709551615");
    assert_eq!(e["record"], rec);
}

#[test]
fn a_hit_batch_keeps_its_pre_upgrade_digest_as_a_fallback() {
    use crate::routes::sync::{digest, legacy_digest, UsageIn};
    let plain = usage("1000", &[ORG_MONTH]);
    let mut hit = usage("0", &[]);
    let old_view: Vec<UsageIn> =
        serde_json::from_value(json!([plain.clone(), hit.clone()])).unwrap();
    hit["cacheHit"] = json!(true);
    hit["savings"] = json!("2000");
    let new_view: Vec<UsageIn> = serde_json::from_value(json!([plain.clone(), hit])).unwrap();
    // What an older sidecar (which ignored the two fields) stored for this batch.
    let stored_then = digest(&old_view).unwrap();
    assert_ne!(
        digest(&new_view).unwrap(),
        stored_then,
        "today's digest covers cacheHit and savings"
    );
    assert_eq!(legacy_digest(&new_view).unwrap(), Some(stored_then));
    let only_plain: Vec<UsageIn> = serde_json::from_value(json!([plain])).unwrap();
    assert_eq!(
        legacy_digest(&only_plain).unwrap(),
        None,
        "no cache fields: one digest, as before"
    );
}

fn decision(at: u64, kind: &str, code: Option<&str>) -> Value {
    let mut d = json!({ "at": at, "decision": kind, "method": "POST",
                        "authority": "api.openai.com", "path": "/v1/chat/completions",
                        "policyVersion": 1, "projectId": "sales-ai", "clientId": "sales-agent",
                        "estimate": "1500", "bodySha256": "ab".repeat(32) });
    if let Some(c) = code {
        d["code"] = json!(c);
        d["scope"] = json!("project.daily");
    } else {
        d["cost"] = json!("1200");
        d["upstreamStatus"] = json!(200);
        d["firstByteMs"] = json!(40);
        d["latencyMs"] = json!(95);
    }
    d
}

async fn audit_kind(h: &crate::testing::Harness, kind: &str) -> Vec<Value> {
    let r = h
        .call(
            Method::GET,
            &format!("/v1/audit?kind={kind}&limit=1000"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn decision_events_and_gaps_reach_the_audit_log_exactly_once() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let batch = json!({ "instanceId": "envoy-a", "seq": 1, "policyVersion": 1,
        "usage": [usage("1200", &[ORG_MONTH])],
        "decisions": [decision(1_000, "allow", None), decision(1_001, "deny", Some("BUDGET_EXCEEDED"))],
        "gaps": [{ "from": 900, "to": 950, "count": 7 }] });
    let r = h.sync(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["duplicate"].as_bool(), Some(false));
    let r = h.sync(batch.clone()).await;
    assert_eq!(r.body["duplicate"].as_bool(), Some(true), "{}", r.text);

    let rows = audit_kind(&h, "decision").await;
    assert_eq!(
        rows.len(),
        2,
        "each event once, the resend added none: {rows:?}"
    );
    let allow = &rows[0];
    assert_eq!(
        (
            allow["decision"].as_str(),
            allow["host"].as_str(),
            allow["projectId"].as_str(),
            allow["clientId"].as_str(),
            allow["cost"].as_u64(),
            allow["atMs"].as_i64(),
        ),
        (
            Some("allow"),
            Some("api.openai.com"),
            Some("sales-ai"),
            Some("sales-agent"),
            Some(1200),
            Some(1_000)
        ),
        "{allow}"
    );
    assert_eq!(allow["details"]["path"], json!("/v1/chat/completions"));
    assert_eq!(allow["details"]["upstreamStatus"], json!(200));
    assert_eq!(allow["details"]["instanceId"], json!("envoy-a"));
    assert_eq!(
        (rows[1]["decision"].as_str(), rows[1]["code"].as_str()),
        (Some("deny"), Some("BUDGET_EXCEEDED"))
    );
    let gaps = audit_kind(&h, "decision.gap").await;
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0]["details"]["count"], json!(7));

    // The same seq with other decisions is a reuse, not a silent duplicate.
    let mut other = batch;
    other["decisions"] = json!([decision(2_000, "allow", None)]);
    let r = h.sync(other).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("SEQ_REUSED"))
    );

    // A decisions-only batch is exactly-once too.
    let only = json!({ "instanceId": "envoy-a", "seq": 2,
                       "decisions": [decision(3_000, "cache_hit", None)] });
    assert_eq!(h.sync(only.clone()).await.body["duplicate"], json!(false));
    assert_eq!(h.sync(only).await.body["duplicate"], json!(true));
    assert_eq!(audit_kind(&h, "decision").await.len(), 3);

    let v = h
        .call(Method::GET, "/v1/audit/verify", Some(ALICE), None)
        .await;
    assert_eq!(v.body["ok"], json!(true), "{}", v.text);
}

#[tokio::test]
async fn a_malformed_decision_is_kept_as_rejected_and_the_batch_applies() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let mut bad_hash = decision(1_000, "allow", None);
    bad_hash["bodySha256"] = json!("not-hex");
    let mut query = decision(1_001, "allow", None);
    query["path"] = json!("/v1/chat?key=secret");
    let r = h
        .sync(json!({ "instanceId": "envoy-b", "seq": 1,
            "usage": [usage("10", &[ORG_MONTH])],
            "decisions": [bad_hash, {"decision": "maybe"}, query, decision(1_002, "pending", Some("APPROVAL_PENDING"))],
            "gaps": [{ "from": 5, "to": 4, "count": 1 }] }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(h.spent(ORG_MONTH).await, "10", "the usage applied");
    let good = audit_kind(&h, "decision").await;
    assert_eq!(good.len(), 1);
    assert_eq!(good[0]["decision"], json!("pending"));
    let rejected = audit_kind(&h, "decision.rejected").await;
    let reasons: Vec<&str> = rejected
        .iter()
        .filter_map(|r| r["details"]["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons[0].starts_with("gaps[0]: from 5 is after to 4"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("decisions[0]: bodySha256"),
        "{reasons:?}"
    );
    assert!(reasons[2].starts_with("decisions[1]: "), "{reasons:?}");
    assert!(
        reasons[3].contains("path: carries a query string"),
        "{reasons:?}"
    );
    assert!(
        !rejected[3]["details"]["record"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "the raw record is kept"
    );
}

#[tokio::test]
async fn too_many_decisions_refuse_the_batch_with_a_path() {
    let h = harness();
    let many: Vec<Value> = (0..=super::decisions::MAX_DECISIONS as u64)
        .map(|i| json!({ "at": i }))
        .collect();
    let r = h
        .sync(json!({ "instanceId": "envoy-c", "seq": 1, "decisions": many }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("decisions: at most 10000"), "{}", r.text);
}

/// Issue 23: believed reports with `learn` facts teach the fleet's figure, which every sync
/// answer carries; a duplicate batch teaches nothing twice; a malformed `learn` is not
/// learned from and the record's money is applied all the same; a suspect record is not learned.
#[tokio::test]
async fn learn_facts_teach_the_fleet_and_every_answer_carries_it() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let learned = |key: &str, estimate: Value| {
        let mut u = usage("120000", &[ORG_MONTH]);
        u["learn"] = json!({ "key": key, "estimate": estimate });
        u
    };
    let mut suspect = learned("api.salesforce.com", json!("1000"));
    suspect["suspect"] = json!({ "raw": "999999999", "reason": "above_bound" });
    let batch = json!({ "instanceId": "envoy-a", "seq": 1, "usage": [
        learned("api.salesforce.com", json!("1000")),
        learned("api.salesforce.com", json!(1000)),
        learned("api.bad.example", json!("1.5")),
        { "amount": "7", "counters": [ORG_MONTH], "learn": { "key": "api.nokey.example" } },
        suspect,
    ]});
    let r = h.sync(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["learned"],
        json!({ "api.salesforce.com": { "highPermille": "120000", "samples": 2 } }),
        "{}",
        r.text
    );
    // Every record's money counted, the malformed `learn` facts included.
    assert_eq!(h.spent(ORG_MONTH).await, (4 * 120_000 + 7).to_string());
    // The retried batch: a duplicate, nothing learned twice.
    let r = h.sync(batch).await;
    assert_eq!(r.body["duplicate"], true);
    assert_eq!(r.body["learned"]["api.salesforce.com"]["samples"], 2);
    // Another instance's answer carries it too, without sending anything.
    let r = h.sync(json!({ "instanceId": "envoy-b", "seq": 1 })).await;
    assert_eq!(
        r.body["learned"]["api.salesforce.com"]["highPermille"],
        "120000"
    );
}

/// A U+0000 anywhere in an element: PostgreSQL's TEXT cannot hold it (SQLite can), so it was a
/// 503 on one backend only (schemathesis found it on `/v1/sync`). On both, the element is put
/// aside like any malformed one and the batch applies; elsewhere a body or a path/query with a
/// NUL is a 400, never a store error.
async fn nul_is_refused_at_the_edge_over(h: crate::testing::Harness) {
    h.put_policy(ALICE, &policy()).await;
    let mut bad_usage = usage("5", &[ORG_MONTH]);
    bad_usage["projectId"] = json!("sales\u{0}ai");
    let mut bad_suspect = usage("7", &[ORG_MONTH]);
    bad_suspect["suspect"] = json!({ "raw": "1\u{0}0", "reason": "above the bound" });
    let mut bad_event = decision(1_000, "allow", None);
    bad_event["authority"] = json!("api.openai.com\u{0}");
    let mut bad_key = decision(1_001, "allow", None);
    bad_key["x\u{0}"] = json!(1);
    let r = h
        .sync(json!({ "instanceId": "envoy-nul", "seq": 1,
            "usage": [usage("10", &[ORG_MONTH]), bad_usage, bad_suspect],
            "decisions": [bad_event, bad_key, decision(1_002, "allow", None)] }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        h.spent(ORG_MONTH).await,
        "10",
        "only the good record applied"
    );
    let r = h
        .call(Method::GET, "/v1/usage/exceptions", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reasons: Vec<String> = r.body["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r == "usage[1].projectId: a string holds U+0000 (NUL)"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "usage[2].suspect.raw: a string holds U+0000 (NUL)"),
        "{reasons:?}"
    );
    assert_eq!(audit_kind(&h, "decision").await.len(), 1);
    let rejected = audit_kind(&h, "decision.rejected").await;
    let reasons: Vec<&str> = rejected
        .iter()
        .filter_map(|r| r["details"]["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "decisions[0]: .authority: a string holds U+0000 (NUL)",
            "decisions[1]: .x\\0: a string holds U+0000 (NUL)"
        ]
    );
    // A lease or release naming a counter with a NUL: 400 with the path (no usage record is
    // refused with it: such a batch is the sender's bug, not a record's).
    for (field, value) in [
        ("leases", json!([{ "counter": "org.monthly\u{0}" }])),
        ("release", json!(["org.monthly\u{0}"])),
    ] {
        let mut batch = json!({ "instanceId": "envoy-nul", "seq": 2 });
        batch[field] = value;
        let r = h.sync(batch).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}: {}", r.text);
        assert!(r.text.contains("holds U+0000"), "{field}: {}", r.text);
    }
    // Other bodies: 400 with the path, nothing stored.
    let r = h
        .call(
            Method::POST,
            "/v1/projects",
            Some(ALICE),
            Some(json!({ "id": "p-nul", "name": "a\u{0}b", "policy": {} })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.text.contains("request body.name: a string holds U+0000"),
        "{}",
        r.text
    );
    // Paths and queries.
    for uri in [
        "/v1/projects/a%00b",
        "/v1/audit?projectId=%00",
        "/v1/anomalies?project=x%00",
    ] {
        let r = h.call(Method::GET, uri, Some(ALICE), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(crate::testing::code(&r), "BAD_REQUEST", "{uri}");
    }
    let v = h
        .call(Method::GET, "/v1/audit/verify", Some(ALICE), None)
        .await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

#[tokio::test]
async fn nul_is_refused_at_the_edge_on_sqlite() {
    nul_is_refused_at_the_edge_over(harness()).await;
}

#[tokio::test]
async fn nul_is_refused_at_the_edge_on_postgres() {
    let Some(store) = crate::store::tests::pg_store("nul_is_refused_at_the_edge").await else {
        return;
    };
    let h = crate::testing::Harness::over(
        std::sync::Arc::new(store),
        crate::testing::tokens(),
        tempfile::tempdir().unwrap(),
    );
    nul_is_refused_at_the_edge_over(h).await;
}

/// The answer is `pag0_wire::SyncResponse`, the type the filter reads: a lease, the policy
/// and the versions come back as the filter expects them, and the filter's own typed request
/// (`pag0_wire::SyncRequest`) is what this route reads.
#[tokio::test]
async fn the_filter_s_typed_request_and_answer_travel_through_the_route() {
    use pag0_policy::Micros;
    use pag0_wire::{LeaseAsk, SyncRequest, SyncResponse, UsageRecord};
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let sent: SyncRequest = SyncRequest {
        instance_id: "envoy-typed".into(),
        seq: 1,
        policy_version: 0,
        usage: vec![UsageRecord {
            amount: Micros::new(700),
            counters: vec![ORG_MONTH.into()],
            project_id: Some("sales-ai".into()),
            client_id: Some("sales-agent".into()),
            host: Some("api.openai.com".into()),
            at: Some(1_764_000_000_000),
            cache_hit: false,
            savings: None,
            suspect: None,
            learn: None,
        }],
        decisions: Vec::new(),
        gaps: Vec::new(),
        leases: vec![LeaseAsk {
            counter: ORG_MONTH.into(),
            want: Some(Micros::new(1_000)),
        }],
        release: Vec::new(),
    };
    let r = h.sync(serde_json::to_value(&sent).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let answer: SyncResponse = serde_json::from_value(r.body.clone()).unwrap();
    assert_eq!((answer.ack, answer.duplicate), (1, false));
    assert_eq!(answer.policy_version, 1);
    assert!(
        answer.policy.is_some(),
        "the filter ran none: the policy rides along"
    );
    assert!(answer.lease_ttl_ms > 0);
    let lease = answer.leases.get(ORG_MONTH).expect("the lease asked for");
    assert_eq!(lease.spent, Micros::new(700));
    assert_eq!(lease.granted, Micros::new(1_000));
    assert_eq!(h.spent(ORG_MONTH).await, "700");
}

#[test]
fn a_lease_ttl_below_one_millisecond_is_refused_at_start() {
    use clap::Parser;
    for bad in ["--lease-ttl-ms=0", "--lease-ttl-ms=-5"] {
        let e = crate::cli::Cli::try_parse_from(["pag0-sidecar", bad])
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("lease-ttl-ms"), "{bad}: {e}");
    }
    assert!(crate::cli::Cli::try_parse_from(["pag0-sidecar", "--lease-ttl-ms", "1"]).is_ok());
}
