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
