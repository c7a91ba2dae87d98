//! docs/policy.md#check-order-and-replies on the wire, in standalone mode, through a real Envoy (2 workers): every deny code
//! a standalone filter can produce, the allow headers, and header stripping.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use pag0_envoy::{Call, EnvoyConfig};
use serde_json::{json, Value};

const MAX_BODY: u64 = 1024;

/// One org with a project per situation:
/// - `p1` (c1, c-hours, c-in-hours): maxPerRequest 200000, approval above 100000;
/// - `p2` (c2): may call api.openai.com only;
/// - `p3` (c3): a monthly budget (1000) below one DeepL call (2000).
fn policy() -> Value {
    json!({
        "orgId": "codes-org",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "1000000000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"],
            "blockedEndpoints": ["suspicious-api.com"]
        },
        "endpoints": endpoints(),
        "projects": [
            project("p1", 100_000_000, json!({ "maxPerRequest": "200000", "requireApprovalAbove": "100000" })),
            project("p2", 100_000_000, json!({ "allowedEndpoints": ["api.openai.com"] })),
            project("p3", 1000, json!({}))
        ],
        "clients": [
            client("c1", "p1", "sk-test-1"),
            client("c2", "p2", "sk-test-2"),
            client("c3", "p3", "sk-test-3"),
            {
                "id": "c-hours", "projectId": "p1", "apiKeySha256": pag0_envoy::policies::key_sha256("sk-test-hours"),
                "additionalRestrictions": { "workingHours": hours_excluding_now() }
            },
            {
                "id": "c-in-hours", "projectId": "p1", "apiKeySha256": pag0_envoy::policies::key_sha256("sk-test-in-hours"),
                "additionalRestrictions": { "workingHours": hours_including_now() }
            }
        ]
    })
}

fn stack() -> Stack {
    Stack::start_config(|port| {
        EnvoyConfig::new(
            json!({ "policy": policy(), "maxBodyBytes": MAX_BODY }),
            port,
        )
    })
}

fn deepl(key: &str) -> Call {
    Call::post("api.deepl.com", "/v2/translate")
        .key(key)
        .body("Hello, world")
}

#[test]
fn every_standalone_deny_code_on_the_wire() {
    let s = stack();
    let mut c = Checks::default();

    let r = s.send(&Call::post("api.deepl.com", "/v2/translate").body("hi"));
    c.deny("no key", &r, 401, "MISSING_API_KEY");

    let r = s.send(&deepl("sk-not-a-client"));
    c.deny("unknown key", &r, 401, "UNKNOWN_API_KEY");

    let r = s.send(&Call::get("suspicious-api.com", "/v1/data").key("sk-test-1"));
    c.deny("blocked host", &r, 403, "ENDPOINT_BLOCKED");
    let r = s.send(&Call::get("eu.suspicious-api.com:8443", "/v1/data").key("sk-test-1"));
    c.deny(
        "blocked host: subdomain, port ignored",
        &r,
        403,
        "ENDPOINT_BLOCKED",
    );

    let r = s.send(&deepl("sk-test-2"));
    c.deny(
        "host not on the project's allow-list",
        &r,
        403,
        "ENDPOINT_NOT_ALLOWED",
    );

    let r = s.send(
        &Call::post("api.replicate.com", "/v1/predictions")
            .key("sk-test-1")
            .body("{}"),
    );
    c.deny(
        "category image-generation not allowed",
        &r,
        403,
        "CATEGORY_NOT_ALLOWED",
    );
    let r = s.send(&Call::get("unknown-api.io", "/v1/x").key("sk-test-1"));
    c.deny("host without a category", &r, 403, "CATEGORY_NOT_ALLOWED");

    let r = s.send(&deepl("sk-test-hours"));
    c.deny("outside working hours", &r, 403, "OUTSIDE_WORKING_HOURS");

    // gpt-4: 60000 µ$ per 1k output tokens. 4000 → 240000 > maxPerRequest 200000.
    let r = s.send(
        &Call::post("api.openai.com", "/v1/chat/completions")
            .key("sk-test-1")
            .json(&chat("gpt-4", 4000, false)),
    );
    c.deny(
        "estimate above maxPerRequest",
        &r,
        403,
        "MAX_PER_REQUEST_EXCEEDED",
    );

    // 2000 → ~121000: below the cap, above requireApprovalAbove 100000; standalone has no approvals.
    let r = s.send(
        &Call::post("api.openai.com", "/v1/chat/completions")
            .key("sk-test-1")
            .json(&chat("gpt-4", 2000, false)),
    );
    c.deny(
        "estimate above requireApprovalAbove",
        &r,
        403,
        "APPROVAL_REQUIRED",
    );
    c.eq(
        "approval deny names the project",
        r.json().pointer("/error/projectId").cloned(),
        Some(json!("p1")),
    );
    let r = s.send(&deepl("sk-test-1").header("x-pag0-requires-approval", "true"));
    c.deny("agent asks for approval", &r, 403, "APPROVAL_REQUIRED");

    let r = s.send(&deepl("sk-test-3"));
    c.deny(
        "project budget below the estimate",
        &r,
        402,
        "BUDGET_EXCEEDED",
    );
    let j = r.json();
    c.eq(
        "budget deny scope",
        j.pointer("/error/scope").cloned(),
        Some(json!("project.monthly")),
    );
    c.eq(
        "budget deny projectId",
        j.pointer("/error/projectId").cloned(),
        Some(json!("p3")),
    );

    let big = json!({ "model": "gpt-4", "max_tokens": 10, "messages": [{ "role": "user", "content": "x".repeat(4 * MAX_BODY as usize) }] });
    let r = s.send(
        &Call::post("api.openai.com", "/v1/chat/completions")
            .key("sk-test-1")
            .json(&big),
    );
    c.deny("body above maxBodyBytes", &r, 413, "BODY_TOO_LARGE");

    let r = s.send(
        &Call::post("api.openai.com", "/v1/chat/completions")
            .key("sk-test-1")
            .body("{\"model\": \"gpt-4\", \"max_tokens\": "),
    );
    c.deny(
        "unparseable body for a token-priced endpoint",
        &r,
        400,
        "BAD_REQUEST_BODY",
    );

    c.eq(
        "denied requests never reach the upstream",
        s.mock.served_total(),
        0,
    );

    // Counters reach Envoy's stats on the filter's tick: wait (bounded) for each value.
    for code in [
        "MISSING_API_KEY",
        "UNKNOWN_API_KEY",
        "ENDPOINT_BLOCKED",
        "ENDPOINT_NOT_ALLOWED",
        "CATEGORY_NOT_ALLOWED",
        "OUTSIDE_WORKING_HOURS",
        "MAX_PER_REQUEST_EXCEEDED",
        "APPROVAL_REQUIRED",
        "BUDGET_EXCEEDED",
        "BODY_TOO_LARGE",
        "BAD_REQUEST_BODY",
    ] {
        let name = format!("pag0.requests.denied.{code}");
        let v = s.counter_at_least(&name, 1);
        c.that(
            &format!("counter {name}"),
            v >= 1,
            format!("counters: {:?}", s.envoy.pag0_counters()),
        );
    }
    c.finish(&s.envoy);
}

#[test]
fn allowed_requests_carry_decision_project_and_estimate() {
    let s = stack();
    let mut c = Checks::default();

    let r = s.send(&deepl("sk-test-1"));
    c.allow("deepl", &r, "p1");
    c.eq(
        "deepl estimate = perRequest",
        r.header("x-pag0-estimated-cost"),
        Some("2000"),
    );
    c.that(
        "deepl reply from the mock",
        r.json().pointer("/translations/0/text").is_some(),
        &r.body,
    );

    let r = s.send(&deepl("sk-test-in-hours"));
    c.allow("client inside its working hours", &r, "p1");

    let r = s.send(
        &Call::post("api.openai.com", "/v1/chat/completions")
            .key("sk-test-2")
            .json(&chat("gpt-4", 100, false)),
    );
    c.allow("openai on the allow-list", &r, "p2");
    let est: u64 = r
        .header("x-pag0-estimated-cost")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // 100 output tokens at 60000/1k = 6000, plus some input tokens at 30000/1k.
    c.that(
        "openai estimate covers max_tokens",
        est > 6000,
        format!("estimate {est}"),
    );
    c.that(
        "openai estimate is plausible for a short prompt",
        est < 6000 + 30_000,
        format!("estimate {est}"),
    );

    c.eq(
        "allowed requests reach the upstream",
        s.mock.served_total(),
        3,
    );
    c.finish(&s.envoy);
}

#[test]
fn agent_pag0_headers_never_reach_the_upstream() {
    let s = stack();
    let mut c = Checks::default();
    let r = s.send(
        &Call::get("api.deepl.com", "/echo")
            .key("sk-test-1")
            .header("x-pag0-justification", "Lead 42 qualification")
            .header("x-pag0-requested-by", "john.doe@acme.com")
            .header("x-pag0-project", "p2")
            .header("X-Pag0-Decision", "allow")
            .header("x-pag0-anything", "1")
            .header("x-other", "kept"),
    );
    c.allow("echo", &r, "p1");
    let j = r.json();
    let headers = j
        .get("headers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let leaked: Vec<&String> = headers
        .keys()
        .filter(|k| k.to_ascii_lowercase().starts_with("x-pag0-"))
        .collect();
    c.that(
        "no x-pag0-* header at the upstream",
        leaked.is_empty(),
        format!("leaked {leaked:?}; upstream saw {headers:?}"),
    );
    c.eq(
        "other headers pass",
        headers.get("x-other").cloned(),
        Some(json!(["kept"])),
    );
    c.eq(
        "authority passes",
        headers.get("host").cloned(),
        Some(json!(["api.deepl.com"])),
    );
    c.finish(&s.envoy);
}

/// The request head arrives first and the body 300 ms later (as from a slow agent): a refusal
/// that needs the body must still keep the request away from the upstream entirely. pag0
/// lets the headers continue to read the body, so this holds thanks to the buffer filter the
/// shipped YAML puts after pag0.
#[test]
fn a_body_priced_refusal_never_reaches_the_upstream_even_with_a_slow_body() {
    use std::io::{Read, Write};
    let s = stack();
    let body = chat("gpt-4", 4000, false).to_string();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.envoy.port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\nx-pag0-api-key: sk-test-1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let upstream_saw_head_early = s.mock.arrived_total();
    conn.write_all(body.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    let mut c = Checks::default();
    c.that(
        "403 MAX_PER_REQUEST_EXCEEDED",
        reply.starts_with("HTTP/1.1 403") && reply.contains("MAX_PER_REQUEST_EXCEEDED"),
        &reply,
    );
    c.eq(
        "upstream saw nothing while the body was pending",
        upstream_saw_head_early,
        0,
    );
    c.eq("upstream saw nothing at all", s.mock.arrived_total(), 0);
    c.finish(&s.envoy);
}
