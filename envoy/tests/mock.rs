//! The mock upstream's contract (no Envoy): deterministic usage, SSE shape, cost header,
//! echo, status, resets and per-path stats.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pag0_envoy::{Agent, Call, MockUpstream};
use serde_json::{json, Value};

fn direct() -> (MockUpstream, Agent) {
    let mock = MockUpstream::start().unwrap();
    let agent = Agent::new(mock.port()).unwrap();
    (mock, agent)
}

#[test]
fn chat_usage_is_computed_from_the_request() {
    let (mock, agent) = direct();
    let body = json!({ "model": "gpt-4", "max_tokens": 20, "messages": [{ "role": "user", "content": "hello there" }] });
    let len = body.to_string().len() as u64;
    let r = agent
        .send(&Call::post("api.openai.com", "/v1/chat/completions").json(&body))
        .unwrap();
    let u = &r.json()["usage"];
    assert_eq!(u["prompt_tokens"], json!(len / 4));
    assert_eq!(u["completion_tokens"], json!(20));
    assert_eq!(u["total_tokens"], json!(len / 4 + 20));

    let big = json!({ "model": "gpt-4", "max_completion_tokens": 5000, "messages": [] });
    let r = agent
        .send(&Call::post("x", "/v1/chat/completions").json(&big))
        .unwrap();
    assert_eq!(
        r.json()["usage"]["completion_tokens"],
        json!(50),
        "capped at 50"
    );

    let r = agent
        .send(
            &Call::post(
                "x",
                "/v1/chat/completions?prompt_tokens=7&completion_tokens=3",
            )
            .json(&big),
        )
        .unwrap();
    assert_eq!(
        r.json()["usage"],
        json!({ "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10 })
    );
    let r = agent
        .send(&Call::post("x", "/v1/chat/completions?no_usage=1").json(&big))
        .unwrap();
    assert!(r.json().get("usage").is_none());
    assert_eq!(mock.served_on("/v1/chat/completions"), 4);
}

#[test]
fn sse_stream_ends_with_usage_then_done() {
    let (_mock, agent) = direct();
    let body = json!({ "model": "gpt-4", "max_tokens": 9, "stream": true, "messages": [] });
    let r = agent
        .send(&Call::post("x", "/v1/chat/completions").json(&body))
        .unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = r.body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events.len(),
        6,
        "4 content events, usage, [DONE]: {events:?}"
    );
    assert_eq!(events[5], "data: [DONE]");
    let last: Value = serde_json::from_str(events[4].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["usage"]["completion_tokens"], json!(9));
    assert_eq!(last["choices"], json!([]));
}

#[test]
fn cost_echo_status_reset_and_stats() {
    let (mock, agent) = direct();
    let r = agent
        .send(&Call::get("api.salesforce.com", "/cost?cost=4321"))
        .unwrap();
    assert_eq!(r.header("x-request-cost"), Some("4321"));
    let r = agent
        .send(&Call::get("api.salesforce.com", "/cost"))
        .unwrap();
    assert_eq!(r.header("x-request-cost"), Some("1500"));

    let r = agent
        .send(&Call::get("api.deepl.com", "/echo").header("x-pag0-api-key", "k"))
        .unwrap();
    assert_eq!(
        r.json()["headers"]["x-pag0-api-key"],
        json!(["k"]),
        "echo shows what it got"
    );
    assert_eq!(r.json()["headers"]["host"], json!(["api.deepl.com"]));

    assert_eq!(
        agent.send(&Call::get("x", "/status/503")).unwrap().status,
        503
    );
    assert!(agent
        .send(&Call::get("x", "/reset-before-headers"))
        .is_err());
    let cut = agent.send(&Call::get("x", "/reset"));
    assert!(cut.is_err() || !cut.unwrap().body.ends_with('}'));

    let stats = agent.send(&Call::get("x", "/__stats")).unwrap().json();
    assert_eq!(stats["paths"]["/cost"], json!(2));
    assert_eq!(stats["paths"]["/echo"], json!(1));
    assert_eq!(stats["paths"]["/status"], json!(1));
    assert_eq!(stats["total"], json!(6));
    assert_eq!(mock.served_total(), 6, "/__stats itself is not counted");
    assert_eq!(stats["arrivedTotal"], json!(6), "every request head");
    assert_eq!(mock.arrived_total(), 6);
}
