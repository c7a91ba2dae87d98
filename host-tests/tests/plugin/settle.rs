//! Settlement after the response: usage from JSON, from SSE split anywhere, from a cost header;
//! release of the reservation when the upstream fails.

use pag0_host_tests::fixture::{self, RACE_KEY, SALES_KEY};
use pag0_host_tests::{Exchange, Host, Request, Response};

use super::{assert_allowed, chat, counted, deepl, host, ok, openai};

/// gpt-4o-mini: 150 µ$ per 1k input tokens, 600 per 1k output: 1000 + 1000 tokens = 750 µ$.
const USAGE_JSON: &str = r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}"#;
const USAGE_COST: i64 = 750;

#[track_caller]
fn assert_no_leak(h: &mut Host, ex: &Exchange) {
    let (r, s, l) = (
        counted(h, "pag0.cost.reserved_micros"),
        counted(h, "pag0.cost.settled_micros"),
        counted(h, "pag0.cost.released_micros"),
    );
    assert!(
        s + l >= r.min(s + l) && r > 0,
        "reserved {r}, settled {s}, released {l}\n{}",
        ex.log_text()
    );
}

#[test]
fn usage_in_a_json_body_replaces_the_estimate() {
    let mut h = host();
    let ex = h.run(
        &openai(SALES_KEY, &chat("gpt-4o-mini", 100)),
        &Response::json(200, USAGE_JSON).chunked(17),
    );
    assert_allowed(&ex);
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        USAGE_COST,
        "{}",
        ex.log_text()
    );
    assert_eq!(
        ex.downstream.body,
        USAGE_JSON.as_bytes(),
        "the agent gets the body unchanged"
    );
}

fn sse_events() -> String {
    concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"llo\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":1000}}\n\n",
        "data: [DONE]\n\n",
    )
    .to_string()
}

#[test]
fn usage_in_the_last_sse_event_settles_the_stream() {
    let body = sse_events();
    let mut h = host();
    let ex = h.run(
        &openai(SALES_KEY, &chat("gpt-4o-mini", 100)),
        &Response::sse(&[&body]),
    );
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        USAGE_COST,
        "{}",
        ex.log_text()
    );
}

#[test]
fn sse_events_split_across_chunks_at_every_size_settle_the_same() {
    let body = sse_events();
    for n in [1, 2, 3, 5, 7, 13, 31, 64] {
        let mut h = host();
        let ex = h.run(
            &openai(SALES_KEY, &chat("gpt-4o-mini", 100)),
            &Response::sse(&[&body]).chunked(n),
        );
        assert_eq!(
            counted(&mut h, "pag0.cost.settled_micros"),
            USAGE_COST,
            "chunk size {n}\n{}",
            ex.log_text()
        );
        assert_eq!(
            ex.downstream.body,
            body.as_bytes(),
            "chunk size {n}: the stream reaches the agent unchanged"
        );
    }
}

#[test]
fn sse_with_trailers_settles_in_the_trailers_callback() {
    let body = sse_events();
    let resp = Response::sse(&[&body])
        .chunked(40)
        .trailer("grpc-status", "0");
    let mut h = host();
    let ex = h.run(&openai(SALES_KEY, &chat("gpt-4o-mini", 100)), &resp);
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        USAGE_COST,
        "{}",
        ex.log_text()
    );
}

#[test]
fn a_stream_without_usage_is_charged_the_estimate() {
    let mut h = host();
    let ex = h.run(
        &openai(SALES_KEY, &chat("gpt-4o-mini", 100)),
        &Response::sse(&["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"]),
    );
    let reserved = counted(&mut h, "pag0.cost.reserved_micros");
    assert!(reserved > 0);
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        reserved,
        "{}",
        ex.log_text()
    );
}

#[test]
fn the_cost_header_settles_the_request() {
    let req = Request::get("api.salesforce.com", "/q").api_key(SALES_KEY);
    let mut h = host();
    let ex = h.run(&req, &ok().header("x-request-cost", "1500"));
    assert_allowed(&ex);
    assert_eq!(
        counted(&mut h, "pag0.cost.reserved_micros"),
        fixture::SALESFORCE_PRICE
    );
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        1500,
        "{}",
        ex.log_text()
    );
}

#[test]
fn a_per_request_price_stands_without_a_report() {
    let mut h = host();
    assert_allowed(&h.run(&deepl(SALES_KEY), &ok()));
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        fixture::DEEPL_PRICE
    );
    assert_eq!(counted(&mut h, "pag0.cost.released_micros"), 0);
}

#[test]
fn a_5xx_without_usage_releases_the_reservation() {
    let mut h = host();
    let ex = h.run(
        &deepl(RACE_KEY),
        &Response::json(500, r#"{"error":"boom"}"#),
    );
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        0,
        "{}",
        ex.log_text()
    );
    assert_eq!(
        counted(&mut h, "pag0.cost.released_micros"),
        fixture::DEEPL_PRICE
    );
    assert_allowed(&h.run(&deepl(RACE_KEY), &ok()));
}

#[test]
fn an_upstream_reset_before_headers_releases_the_reservation() {
    let mut h = host();
    let ex = h.run(&deepl(RACE_KEY), &Response::reset());
    assert!(ex.forwarded());
    assert_eq!(
        ex.status(),
        Some(503),
        "Envoy answers a reset upstream with 503"
    );
    assert_eq!(
        counted(&mut h, "pag0.cost.settled_micros"),
        0,
        "{}",
        ex.log_text()
    );
    assert_eq!(
        counted(&mut h, "pag0.cost.released_micros"),
        fixture::DEEPL_PRICE,
        "{}",
        ex.log_text()
    );
    assert_allowed(&h.run(&deepl(RACE_KEY), &ok()));
}

#[test]
fn a_reset_in_the_middle_of_a_stream_leaves_nothing_reserved() {
    let mut h = host();
    let resp = Response::sse(&["data: {\"choices\":[]}\n\n"]).reset_after_headers();
    let ex = h.run(&deepl(RACE_KEY), &resp);
    assert!(ex.upstream_reset);
    assert_no_leak(&mut h, &ex);
    let (s, l) = (
        counted(&mut h, "pag0.cost.settled_micros"),
        counted(&mut h, "pag0.cost.released_micros"),
    );
    assert_eq!(
        s + l,
        fixture::DEEPL_PRICE,
        "settled {s} + released {l} must cover the reservation\n{}",
        ex.log_text()
    );
}

#[test]
fn the_agent_disappearing_before_the_response_releases_the_reservation() {
    let mut h = host();
    let id = h.open(0);
    h.request_headers(id, deepl(RACE_KEY).headers, true);
    assert!(h.flow(id).upstream.headers.is_some());
    h.finish(id); // downstream reset: on_done / on_log / on_delete without a response
    assert_eq!(
        counted(&mut h, "pag0.cost.released_micros"),
        fixture::DEEPL_PRICE,
        "{}",
        h.log_text()
    );
    assert_allowed(&h.run(&deepl(RACE_KEY), &ok()));
}
