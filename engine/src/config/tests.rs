use serde_json::json;

use super::*;

fn policy() -> serde_json::Value {
    json!({ "orgId": "acme-corp", "globalPolicy": { "monthlyBudget": "100000000" } })
}

fn parse_json(v: serde_json::Value) -> Result<PluginConfig, ConfigError> {
    parse(v.to_string().as_bytes())
}

fn errors(v: serde_json::Value) -> Vec<String> {
    match parse_json(v) {
        Err(ConfigError::Invalid(errs)) => errs.iter().map(ToString::to_string).collect(),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn standalone_config_gets_defaults() {
    let c = parse_json(json!({ "policy": policy() })).unwrap();
    assert!(c.sidecar.is_none());
    let s = c;
    assert_eq!(s.policy.as_ref().unwrap().org_id(), "acme-corp");
    assert_eq!(s.api_key_header, "x-pag0-api-key");
    assert_eq!(s.max_body_bytes, 1_048_576);
}

#[test]
fn explicit_values_are_kept_and_the_header_is_lower_cased() {
    let c = parse_json(json!({
        "policy": policy(), "apiKeyHeader": "X-Agent-Key", "maxBodyBytes": 4096
    }))
    .unwrap();
    assert_eq!(c.api_key_header, "x-agent-key");
    assert_eq!(c.max_body_bytes, 4096);
}

#[test]
fn sidecar_is_parsed_with_defaults() {
    let c = parse_json(json!({ "sidecar": { "cluster": "pag0_sidecar" } })).unwrap();
    assert!(c.policy.is_none());
    assert_eq!(
        c.sidecar,
        Some(SidecarConfig {
            cluster: "pag0_sidecar".into(),
            authority: "pag0-sidecar".into(),
            sync_interval_ms: 1000,
            timeout_ms: 200,
            failure_mode: FailureMode::Closed,
            sync_secret: None,
            decision_queue_max: crate::managed::decisions::DEFAULT_QUEUE_MAX,
        })
    );
    let c = parse_json(json!({ "sidecar": {
        "cluster": "c", "authority": "a", "syncIntervalMs": 5, "timeoutMs": 7, "failureMode": "open"
    }}))
    .unwrap();
    let s = c.sidecar.unwrap();
    assert_eq!(
        (s.sync_interval_ms, s.timeout_ms, s.failure_mode),
        (5, 7, FailureMode::Open)
    );
}

#[test]
fn every_error_is_reported_with_its_path() {
    let errs = errors(json!({
        "policy": policy(),
        "apiKeyHeader": "bad header",
        "maxBodyBytes": 0,
        "extra": true,
        "sidecar": { "timeoutMs": -1, "failureMode": "maybe", "colour": "blue" }
    }));
    let expect = [
        "extra: unknown field",
        "apiKeyHeader: \"bad header\" is not a valid header name",
        "maxBodyBytes: 0 is not a positive integer",
        "sidecar.colour: unknown field",
        "sidecar.cluster: required",
        "sidecar.timeoutMs: -1 is not a positive integer",
        "sidecar.failureMode: must be \"closed\" or \"open\"",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn policy_errors_are_rooted_under_policy() {
    let errs = errors(json!({ "policy": { "orgId": "x", "nonsense": 1 } }));
    assert!(!errs.is_empty());
    assert!(errs.iter().all(|e| e.starts_with("policy")), "{errs:#?}");
}

#[test]
fn neither_policy_nor_sidecar_is_an_error() {
    let errs = errors(json!({ "maxBodyBytes": 10 }));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("needs \"policy\""), "{errs:?}");
}

#[test]
fn non_json_and_non_objects_are_errors() {
    assert!(
        matches!(parse(b"{nope"), Err(ConfigError::Invalid(e)) if e[0].reason.starts_with("not valid JSON"))
    );
    assert!(matches!(parse(b""), Err(ConfigError::Invalid(_))));
    assert_eq!(
        errors(json!([1])),
        ["(configuration): must be a JSON object"]
    );
}

#[test]
fn sync_secret_is_read_and_must_be_a_non_empty_string() {
    let c = parse_json(json!({ "sidecar": { "cluster": "c", "syncSecret": "s3cret" } })).unwrap();
    assert_eq!(c.sidecar.unwrap().sync_secret.as_deref(), Some("s3cret"));
    assert_eq!(
        errors(json!({ "sidecar": { "cluster": "c", "syncSecret": "" } })),
        ["sidecar.syncSecret: must be a non-empty string"]
    );
}

#[test]
fn nested_paths_join_cleanly() {
    assert_eq!(FieldError::nested("policy", "$", "r").path, "policy");
    assert_eq!(FieldError::nested("policy", "", "r").path, "policy");
    assert_eq!(
        FieldError::nested("policy", "projects[2].id", "r").path,
        "policy.projects[2].id"
    );
    assert_eq!(
        FieldError::nested("policy", "$.orgId", "r").path,
        "policy.orgId"
    );
    assert_eq!(FieldError::nested("policy", "[0]", "r").path, "policy[0]");
}
