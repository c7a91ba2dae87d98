//! `POST /v1/sync`: a batch is counted once, leases never exceed the room, the policy rides
//! along only when newer, a malformed batch is refused with paths.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::testing::{harness, policy, usage, ALICE, ORG_DAY, ORG_MONTH, PROJ_MONTH};

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
    for needle in [
        "instanceId:",
        "seq:",
        "usage[0].counters[0]:",
        "leases[0].counter:",
    ] {
        assert!(details.contains(needle), "{needle} in {details}");
    }
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "1.5" } ] }))
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON");
    // `savings` is money like `amount`: a decimal string or integer, storable, else refused.
    for bad in [json!("1.5"), json!("-3"), json!(2.5), json!("12x")] {
        let r = h.sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "0", "cacheHit": true, "savings": bad } ] })).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BAD_JSON")),
            "{bad}"
        );
    }
    let r = h.sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "0", "cacheHit": "yes" } ] })).await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON", "cacheHit is a boolean");
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "0", "cacheHit": true, "savings": "9223372036854775808" } ] }))
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_SYNC");
    assert!(
        r.body["error"]["details"]
            .to_string()
            .contains("usage[0].savings: above"),
        "{}",
        r.text
    );
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
