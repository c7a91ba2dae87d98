use pag0_policy::Micros;
use serde_json::json;

use super::*;

fn full() -> DecisionEvent {
    DecisionEvent {
        at: 1_764_000_000_123,
        decision: DecisionKind::Deny,
        code: Some("BUDGET_EXCEEDED".into()),
        scope: Some("project.daily".into()),
        client_id: Some("sales-bot".into()),
        project_id: Some("sales-ai".into()),
        method: "POST".into(),
        authority: "api.openai.com".into(),
        path: "/v1/chat/completions".into(),
        model: Some("gpt-4o".into()),
        estimate: Some(Micros::new(1_500)),
        cost: None,
        savings: None,
        upstream_status: None,
        first_byte_ms: None,
        latency_ms: None,
        policy_version: 7,
        approval_id: None,
        body_sha256: Some("ab".repeat(32)),
        requires_approval: false,
    }
}

#[test]
fn round_trip_keeps_every_field() {
    let e = DecisionEvent {
        cost: Some(Micros::new(1_234)),
        savings: Some(Micros::new(9)),
        upstream_status: Some(200),
        first_byte_ms: Some(12),
        latency_ms: Some(40),
        approval_id: Some("apr_1".into()),
        decision: DecisionKind::Allow,
        requires_approval: true,
        ..full()
    };
    let bytes = serde_json::to_vec(&e).unwrap();
    let back: DecisionEvent = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, e);
}

#[test]
fn money_is_a_decimal_string_and_absent_fields_are_omitted() {
    let v = serde_json::to_value(full()).unwrap();
    assert_eq!(v["estimate"], json!("1500"));
    assert_eq!(v["decision"], json!("deny"));
    assert_eq!(v["policyVersion"], json!(7));
    assert!(v.get("cost").is_none());
    assert!(v.get("upstreamStatus").is_none());
    assert!(v.get("requiresApproval").is_none(), "false is left out");
}

#[test]
fn a_missing_required_field_is_an_error_not_a_zero() {
    let mut v = serde_json::to_value(full()).unwrap();
    v.as_object_mut().unwrap().remove("policyVersion");
    assert!(serde_json::from_value::<DecisionEvent>(v).is_err());
    let mut v = serde_json::to_value(full()).unwrap();
    v.as_object_mut().unwrap().remove("at");
    assert!(serde_json::from_value::<DecisionEvent>(v).is_err());
}

#[test]
fn money_must_be_a_whole_number_of_micros() {
    let mut v = serde_json::to_value(full()).unwrap();
    v["estimate"] = json!("1.5");
    assert!(serde_json::from_value::<DecisionEvent>(v.clone()).is_err());
    v["estimate"] = json!(-3);
    assert!(serde_json::from_value::<DecisionEvent>(v).is_err());
}

#[test]
fn decision_kinds_spell_as_the_audit_log_does() {
    for k in DecisionKind::ALL {
        let s = serde_json::to_value(k).unwrap();
        assert_eq!(s, json!(k.as_str()));
        assert_eq!(DecisionKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(DecisionKind::parse("cache-hit"), None);
}

#[test]
fn a_gap_widens_to_cover_every_dropped_event() {
    let mut g = DecisionGap::one(50);
    g.widen(40);
    g.widen(70);
    assert_eq!(
        g,
        DecisionGap {
            from: 40,
            to: 70,
            count: 3
        }
    );
    let v = serde_json::to_value(g).unwrap();
    assert_eq!(v, json!({"from": 40, "to": 70, "count": 3}));
}

#[test]
fn fit_cuts_at_a_character_boundary_and_never_leaves_an_empty_field() {
    assert_eq!(crate::fit("", 10), "-");
    assert_eq!(crate::fit("abc", 10), "abc");
    assert_eq!(crate::fit("abcdef", 4), "abcd");
    // "é" is two bytes: cutting inside it backs off to the boundary before.
    assert_eq!(crate::fit("aé", 2), "a");
    assert!(
        crate::fit(&"x".repeat(5000), crate::limits::MAX_PATH).len() == crate::limits::MAX_PATH
    );
}
