use serde_json::json;

use super::*;

#[test]
fn the_hash_is_sha256_of_prev_hash_and_the_canonical_entry() {
    let row = AuditRow::chain(
        1,
        AuditEvent::new("policy.updated", 5)
            .actor("alice")
            .details(json!({ "b": 1, "a": "x" })),
        GENESIS,
    )
    .unwrap();
    let canonical = String::from_utf8(canonical(&row.entry_json()).unwrap()).unwrap();
    // Keys sorted, no whitespace, nulls kept.
    assert!(canonical.starts_with(
        r#"{"actor":"alice","approvalId":null,"atMs":5,"clientId":null,"code":null,"cost":null,"decision":null,"details":{"a":"x","b":1},"#
    ), "{canonical}");
    let mut h = Sha256::new();
    h.update(GENESIS.as_bytes());
    h.update(canonical.as_bytes());
    assert_eq!(row.hash, hex::encode(h.finalize()));
}

#[test]
fn the_change_summary_names_keys_and_items_never_values() {
    let before = json!({ "projects": [{ "id": "a", "x": 1 }, { "id": "b" }], "clients": [{ "id": "c", "apiKeySha256": "old" }] });
    let after = json!({ "projects": [{ "id": "a", "x": 2 }, { "id": "n" }], "clients": [{ "id": "c", "apiKeySha256": "new" }], "globalPolicy": {} });
    let s = policy_change_summary(Some(&before), &after);
    assert_eq!(
        s,
        json!({
            "changedKeys": ["clients", "globalPolicy", "projects"],
            "projects": { "added": ["n"], "removed": ["b"], "edited": ["a"] },
            "clients": { "added": [], "removed": [], "edited": ["c"] },
        })
    );
    assert!(!s.to_string().contains("new"));
}

#[test]
fn retention_comes_from_the_policy_else_the_flag_and_warns_under_six_months_in_eu_mode() {
    let eu = |days: u64| json!({ "globalPolicy": { "complianceMode": "EU_AI_ACT", "auditLog": { "retention": days } } });
    assert_eq!(retention_days(Some(&eu(90)), Some(400)), Some(90));
    assert_eq!(retention_days(Some(&json!({})), Some(400)), Some(400));
    assert_eq!(retention_days(None, None), None);
    let w = retention_warning(Some(&eu(90)), Some(90)).unwrap();
    assert!(
        w.contains("Art. 19(1) and 26(6)") && w.contains("90 days"),
        "{w}"
    );
    assert!(retention_warning(Some(&eu(183)), Some(183)).is_none());
    assert!(retention_warning(Some(&json!({})), Some(30)).is_none());
    assert!(retention_warning(Some(&eu(90)), None).is_none());
}

#[tokio::test]
async fn a_job_run_logs_expiries_and_prunes_past_the_retention() {
    let (store, _dir) = crate::store::tests::sqlite_store();
    let store: &dyn crate::store::Store = &store;
    let old = 1_000 * DAY_MS;
    for i in 0..3 {
        store
            .audit_append(vec![AuditEvent::new("old", old + i)])
            .await
            .unwrap();
    }
    store
        .audit_append(vec![AuditEvent::new("recent", old + 40 * DAY_MS)])
        .await
        .unwrap();
    let now = old + 45 * DAY_MS;
    assert!(run_once(store, now, None).await.unwrap().is_none());
    let r = run_once(store, now, Some(30)).await.unwrap().unwrap();
    assert_eq!(r.event.kind, "audit.retention");
    assert_eq!(r.event.details["retentionDays"], 30);
    assert_eq!(r.event.details["deleted"], 3);
    let v = verify(store).await.unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["rowsChecked"].as_u64()),
        (Some(true), Some(2)),
        "{v}"
    );
    // The stored row is the returned one (its hash covers the details shown).
    let stored = store
        .audit_list(AuditQuery {
            after_seq: 4,
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(stored, vec![r]);
}
