//! The decision event each request leaves: standalone as the `pag0_decision` property the
//! access log reads, managed in this worker's buffer for the sync, exactly once.

use serde_json::Value;

use super::*;

/// The last `pag0_decision` property the filter set (standalone mode).
fn published(host: &FakeHost) -> Option<Value> {
    host.properties
        .borrow()
        .iter()
        .rev()
        .find(|(n, _)| n == "pag0_decision")
        .map(|(_, v)| serde_json::from_slice(v).unwrap())
}

/// What a managed worker queued: its buffer flushed to shared data and read back.
fn queued(host: &FakeHost, s: &Rc<Shared>) -> Vec<Value> {
    let (_, buffer) = s.decision_log().expect("a managed worker buffers events");
    buffer.flush(&host, 100).unwrap();
    let out = crate::managed::prepare_sync(&host, "i", 1, &[], 1).unwrap();
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    body["decisions"].as_array().cloned().unwrap_or_default()
}

#[test]
fn standalone_an_allowed_request_publishes_its_settled_event_without_the_query() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.salesforce.com:443", &[("x-pag0-api-key", "k1")]);
    host.request_headers
        .borrow_mut()
        .retain(|(k, _)| k != ":path");
    host.request_headers
        .borrow_mut()
        .push((":path".into(), "/v1/query?q=secret".into()));
    assert_eq!(f.on_http_request_headers(4, true), Action::Continue);
    assert_eq!(published(&host), None, "not final before the response");
    respond(&host, "200", &[("x-request-cost", "700")]);
    f.on_http_response_headers(2, true);
    let e = published(&host).expect("published at settlement, before the access log");
    assert_eq!(e["decision"], "allow");
    assert_eq!(e["projectId"], "sales-ai");
    assert_eq!(e["clientId"], "sales-agent");
    assert_eq!(e["estimate"], "1000");
    assert_eq!(e["cost"], "700");
    assert_eq!(e["upstreamStatus"], 200);
    assert_eq!(e["authority"], "api.salesforce.com");
    assert_eq!(e["path"], "/v1/query");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["at"], now_ms(&host));
    assert_eq!(e["latencyMs"], 0);
    assert!(e.get("code").is_none());
    f.on_log();
    assert_eq!(
        host.properties.borrow().len(),
        1,
        "one property write per request"
    );
}

#[test]
fn standalone_a_refusal_publishes_its_code_and_scope() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("1500")));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(4, true), Action::Pause);
    let e = published(&host).unwrap();
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["code"], "BUDGET_EXCEEDED");
    assert_eq!(e["scope"], "project.daily");
    assert_eq!(e["clientId"], "sales-agent");
    assert!(e.get("cost").is_none(), "a refused request cost nothing");

    let host = self::host();
    let mut f = Filter::new(&host, Some(shared("1500")));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "nope")]);
    f.on_http_request_headers(4, true);
    let e = published(&host).unwrap();
    assert_eq!(e["code"], "UNKNOWN_API_KEY");
    assert!(e.get("clientId").is_none(), "no client for an unknown key");
}

#[test]
fn a_token_priced_request_records_its_model_and_body_hash_never_the_body() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.openai.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(5, false), Action::Continue);
    let body = br#"{"model":"gpt-4","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    host.request_body.borrow_mut().extend_from_slice(body);
    assert_eq!(f.on_http_request_body(body.len(), true), Action::Continue);
    respond(&host, "200", &[]);
    f.on_http_response_headers(1, true);
    let e = published(&host).unwrap();
    assert_eq!(e["model"], "gpt-4");
    assert_eq!(
        e["bodySha256"],
        pag0_policy::approval::body_sha256_hex(body)
    );
    assert!(
        !e.to_string().contains("hi\""),
        "the body itself is never in the event"
    );
}

#[test]
fn a_stream_gone_before_any_decision_logs_nothing() {
    let host = host();
    let s = managed(crate::config::FailureMode::Closed);
    let mut f = Filter::new(&host, Some(s.clone()));
    request(&host, "api.openai.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(5, false), Action::Continue);
    f.on_log();
    assert!(queued(&host, &s).is_empty());
}

#[test]
fn managed_each_request_queues_exactly_one_event_when_its_stream_ends() {
    let host = host();
    let s = managed(crate::config::FailureMode::Closed);
    lease_all(&host, 1_000_000, now_ms(&host) + 60_000);
    // Allowed and settled.
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    let mut f = Filter::new(&host, Some(s.clone()));
    assert_eq!(f.on_http_request_headers(4, true), Action::Continue);
    respond(&host, "201", &[]);
    f.on_http_response_headers(1, true);
    assert!(
        s.decision_log().unwrap().1.is_empty(),
        "queued when the stream ends, not before"
    );
    f.on_log();
    f.on_log();
    // Refused: a key nobody has.
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "nope")]);
    let mut g = Filter::new(&host, Some(s.clone()));
    assert_eq!(g.on_http_request_headers(4, true), Action::Pause);
    g.on_log();
    let events = queued(&host, &s);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["policyVersion"], 1);
    assert_eq!(events[0]["upstreamStatus"], 201);
    assert_eq!(events[0]["cost"], "2000");
    assert_eq!(events[1]["decision"], "deny");
    assert_eq!(events[1]["code"], "UNKNOWN_API_KEY");
    assert!(
        host.properties.borrow().is_empty(),
        "managed mode sets no property"
    );
    // Each event reads as the sidecar reads it.
    for e in &events {
        let _: pag0_wire::DecisionEvent = serde_json::from_value(e.clone()).unwrap();
    }
}

#[test]
fn an_agent_asking_for_approval_is_recorded_so_a_what_if_can_replay_it() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(
        &host,
        "api.deepl.com",
        &[
            ("x-pag0-api-key", "k1"),
            ("x-pag0-requires-approval", "true"),
        ],
    );
    assert_eq!(f.on_http_request_headers(4, true), Action::Pause);
    let e = published(&host).unwrap();
    assert_eq!(e["code"], "APPROVAL_REQUIRED", "standalone refuses it");
    assert_eq!(e["requiresApproval"], true);
    // Without the header the field is absent.
    let host = self::host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "nope")]);
    f.on_http_request_headers(4, true);
    assert!(published(&host).unwrap().get("requiresApproval").is_none());
}
