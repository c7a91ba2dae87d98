//! Every docs/policy.md#check-order-and-replies code, and the headers the filter reads and strips.

use pag0_host_tests::fixture::{self, NIGHT_KEY, OPS_KEY, SALES_KEY};
use pag0_host_tests::{CallAnswer, Host, Request, Response};

use super::{assert_allowed, assert_denied, deepl, host, ok};

#[test]
fn missing_api_key_is_401() {
    let mut h = host();
    let ex = h.run(&Request::get("api.deepl.com", "/v2/translate"), &ok());
    assert_denied(&mut h, &ex, 401, "MISSING_API_KEY");
}

#[test]
fn unknown_api_key_is_401() {
    let mut h = host();
    let ex = h.run(&deepl("not-a-key"), &ok());
    assert_denied(&mut h, &ex, 401, "UNKNOWN_API_KEY");
}

#[test]
fn blocked_endpoint_is_403() {
    let mut h = host();
    let ex = h.run(
        &Request::get("suspicious-api.com", "/x").api_key(OPS_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "ENDPOINT_BLOCKED");
}

#[test]
fn a_block_rule_covers_subdomains_and_ignores_ports() {
    let mut h = host();
    let ex = h.run(
        &Request::get("eu.suspicious-api.com:8443", "/x").api_key(OPS_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "ENDPOINT_BLOCKED");
}

#[test]
fn endpoint_not_on_the_allow_list_is_403() {
    let mut h = host();
    let ex = h.run(
        &Request::get("api.search.example", "/q").api_key(SALES_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "ENDPOINT_NOT_ALLOWED");
}

#[test]
fn category_not_allowed_is_403() {
    let mut h = host();
    let ex = h.run(
        &Request::get("api.images.example", "/gen").api_key(OPS_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "CATEGORY_NOT_ALLOWED");
}

#[test]
fn a_host_outside_the_catalogue_has_no_category() {
    let mut h = host();
    let ex = h.run(
        &Request::get("unknown.example.org", "/").api_key(OPS_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "CATEGORY_NOT_ALLOWED");
}

// 2026-01-05 is a Monday. New York is UTC-5 in January, UTC-4 in July.
const MON_JAN_12_00_UTC: u64 = 1_767_614_400;
const SAT_JAN_10_15_00_UTC: u64 = 1_768_057_200;
const MON_JUL_06_13_30_UTC: u64 = 1_783_344_600;

#[test]
fn outside_working_hours_is_403() {
    let mut h = host();
    h.set_unix_time(MON_JAN_12_00_UTC); // 07:00 in New York
    let ex = h.run(&deepl(NIGHT_KEY), &ok());
    assert_denied(&mut h, &ex, 403, "OUTSIDE_WORKING_HOURS");
}

#[test]
fn inside_working_hours_passes() {
    let mut h = host();
    h.set_unix_time(MON_JAN_12_00_UTC + 3 * 3600); // 10:00 in New York
    assert_allowed(&h.run(&deepl(NIGHT_KEY), &ok()));
}

#[test]
fn working_days_are_checked_in_the_clients_timezone() {
    let mut h = host();
    h.set_unix_time(SAT_JAN_10_15_00_UTC); // Saturday 10:00 in New York
    let ex = h.run(&deepl(NIGHT_KEY), &ok());
    assert_denied(&mut h, &ex, 403, "OUTSIDE_WORKING_HOURS");
}

#[test]
fn working_hours_follow_daylight_saving_time() {
    let mut h = host();
    h.set_unix_time(MON_JUL_06_13_30_UTC); // 09:30 EDT (08:30 if DST were ignored)
    assert_allowed(&h.run(&deepl(NIGHT_KEY), &ok()));
}

#[test]
fn max_per_request_exceeded_is_403() {
    let mut h = host();
    let ex = h.run(
        &Request::get("api.pricey.example", "/").api_key(SALES_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "MAX_PER_REQUEST_EXCEEDED");
}

#[test]
fn max_per_request_uses_the_token_estimate() {
    // gpt-4, 10k output tokens: 600000 µ$ for output alone, above sales-ai's 200000.
    let mut h = host();
    let ex = h.run(
        &super::openai(SALES_KEY, &super::chat("gpt-4", 10_000)),
        &ok(),
    );
    super::assert_denied_on_body(&mut h, &ex, 403, "MAX_PER_REQUEST_EXCEEDED");
}

#[test]
fn approval_required_in_standalone_mode_is_403() {
    let mut h = host();
    let ex = h.run(
        &Request::get("api.approval.example", "/").api_key(OPS_KEY),
        &ok(),
    );
    assert_denied(&mut h, &ex, 403, "APPROVAL_REQUIRED");
}

#[test]
fn asking_for_approval_in_standalone_mode_is_403() {
    let req = deepl(OPS_KEY).header("x-pag0-requires-approval", "true");
    let mut h = host();
    let ex = h.run(&req, &ok());
    assert_denied(&mut h, &ex, 403, "APPROVAL_REQUIRED");
}

#[test]
fn control_plane_unavailable_is_503_when_failing_closed() {
    let cfg = serde_json::json!({
        "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar", "syncIntervalMs": 1000,
                     "timeoutMs": 200, "failureMode": "closed" },
        "maxBodyBytes": 4096
    });
    let host = Host::builder(cfg.to_string())
        .cluster("pag0_sidecar")
        .responder(|_| CallAnswer::Timeout)
        .build();
    let mut host = match host {
        Ok(h) => h,
        Err(e) => panic!("a managed-mode configuration (README.md#configuration-reference) must be accepted: {e}"),
    };
    host.advance(std::time::Duration::from_secs(2));
    let ex = host.run(&deepl(SALES_KEY), &ok());
    assert_denied(&mut host, &ex, 503, "CONTROL_PLANE_UNAVAILABLE");
}

#[test]
fn every_x_pag0_header_is_stripped_before_the_upstream() {
    let req = deepl(SALES_KEY)
        .header("x-pag0-justification", "quarterly report")
        .header("x-pag0-requested-by", "alice@acme.com")
        .header("x-pag0-project", "ops")
        .header("X-Pag0-Anything", "1")
        .header("x-other", "kept");
    let mut h = host();
    let ex = h.run(&req, &ok());
    assert_allowed(&ex);
    let up = ex
        .upstream
        .as_ref()
        .and_then(|u| u.headers.clone())
        .unwrap_or_default();
    let leaked: Vec<_> = up
        .iter()
        .filter(|(k, _)| k.starts_with("x-pag0-"))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        leaked.is_empty(),
        "x-pag0-* headers reached the upstream: {leaked:?}"
    );
    assert_eq!(
        ex.upstream.as_ref().and_then(|u| u.header("x-other")),
        Some("kept")
    );
    assert_eq!(
        ex.header("x-pag0-project"),
        Some("sales-ai"),
        "a header from the agent cannot name the project"
    );
}

#[test]
fn a_refusal_names_project_and_scope() {
    let mut h = Host::new(&fixture::config(4096));
    for _ in 0..1 {
        assert_allowed(&h.run(&deepl(fixture::RACE_KEY), &ok()));
    }
    let ex = h.run(&deepl(fixture::RACE_KEY), &ok());
    assert_denied(&mut h, &ex, 402, "BUDGET_EXCEEDED");
    let body = ex.body_json();
    assert_eq!(body["error"]["projectId"], "race", "{body}");
    assert_eq!(body["error"]["scope"], "project.monthly", "{body}");
}

#[test]
fn the_api_key_header_name_is_configurable() {
    let cfg = serde_json::json!({ "policy": fixture::policy(), "apiKeyHeader": "Authorization-Key", "maxBodyBytes": 4096 });
    let mut h = Host::new(&cfg.to_string());
    let ex = h.run(
        &Request::get("api.deepl.com", "/").header("authorization-key", SALES_KEY),
        &ok(),
    );
    assert_allowed(&ex);
    assert_eq!(
        ex.upstream
            .as_ref()
            .and_then(|u| u.header("authorization-key")),
        None,
        "the key must not reach the upstream"
    );
}

#[test]
fn a_response_without_body_or_trailers_is_labelled_too() {
    let mut h = host();
    let ex = h.run(&deepl(SALES_KEY), &Response::status(204));
    assert_allowed(&ex);
    assert_eq!(ex.status(), Some(204));
}

/// Managed mode: the policy arrives from the sidecar over `dispatch_http_call` (POST /v1/sync).
#[test]
fn managed_mode_decides_on_the_policy_the_sidecar_sends() {
    let cfg = serde_json::json!({
        "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar", "syncIntervalMs": 1000,
                     "timeoutMs": 200, "failureMode": "closed" },
        "maxBodyBytes": 4096
    });
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    // A complete answer (pag0_wire::SyncResponse): one missing a field is refused whole.
    let answer = serde_json::json!({ "ack": 0, "duplicate": false, "policy": fixture::policy(),
        "policyVersion": 1, "serverTimeMs": 0, "leaseTtlMs": 30000, "leases": {} })
    .to_string();
    let host = Host::builder(cfg.to_string())
        .cluster("pag0_sidecar")
        .responder(move |call| {
            if let Ok(mut c) = seen.lock() {
                c.push((
                    call.header(":method").map(str::to_string),
                    call.header(":path").map(str::to_string),
                    call.header(":authority").map(str::to_string),
                ));
            }
            CallAnswer::json(200, &answer)
        })
        .build();
    let mut host = match host {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    host.advance(std::time::Duration::from_secs(3));
    let calls = calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert!(
        !calls.is_empty(),
        "no sync call in 3 s\n{}",
        host.log_text()
    );
    let (method, path, authority) = &calls[0];
    assert_eq!(
        (method.as_deref(), authority.as_deref()),
        (Some("POST"), Some("pag0-sidecar")),
        "{calls:?}"
    );
    assert!(
        path.as_deref().is_some_and(|p| p.starts_with("/v1/sync")),
        "{calls:?}"
    );
    let ex = host.run(&deepl("not-a-key"), &ok());
    // Managed mode has its own tick (syncIntervalMs / 4), which adds the filter's counts too.
    let denied = "pag0.requests.denied.UNKNOWN_API_KEY";
    assert_eq!(
        host.metric(denied),
        0,
        "counted on the tick, not per request"
    );
    host.advance(std::time::Duration::from_millis(250));
    assert_eq!(host.metric(denied), 1, "{}", host.log_text());
    assert_denied(&mut host, &ex, 401, "UNKNOWN_API_KEY");
}
