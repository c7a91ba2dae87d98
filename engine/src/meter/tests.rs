use pag0_policy::settle::ModelPrice;

use super::*;

/// gpt-4-like prices: 30000 / 60000 micro-USD per 1k input / output tokens.
fn per_token(streaming: bool) -> Settlement {
    Settlement {
        estimate: Micros::new(90_000),
        cost_header: None,
        model_price: Some(ModelPrice {
            input_per_1k: Micros::new(30_000),
            output_per_1k: Micros::new(60_000),
        }),
        streaming,
        bound: Micros::new(10_000_000),
    }
}

fn per_request_with_header() -> Settlement {
    Settlement {
        estimate: Micros::new(1_000),
        cost_header: Some("x-request-cost".into()),
        model_price: None,
        streaming: false,
        bound: Micros::new(10_000_000),
    }
}

const JSON_BODY: &[u8] =
    br#"{"id":"x","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}"#;

#[test]
fn no_response_at_all_means_release() {
    let m = ResponseMeter::new(per_token(false), 1024);
    assert!(!m.wants_body());
    assert_eq!(m.final_cost(), None);
}

#[test]
fn json_usage_across_chunks_is_priced() {
    let mut m = ResponseMeter::new(per_token(false), 1024);
    m.on_headers(Some(200), Some("application/json"), None);
    let (a, b) = JSON_BODY.split_at(37);
    m.on_body(a);
    m.on_body(b);
    // 1000 in × 30000/1k + 500 out × 60000/1k
    assert_eq!(m.final_cost(), Some(Micros::new(60_000)));
}

#[test]
fn a_body_over_the_cap_leaves_the_estimate() {
    let mut m = ResponseMeter::new(per_token(false), 16);
    m.on_headers(Some(200), Some("application/json"), None);
    assert!(m.wants_body());
    m.on_body(JSON_BODY);
    assert!(!m.wants_body(), "past the cap, chunks need not be copied");
    assert_eq!(m.final_cost(), Some(Micros::new(90_000)));
}

#[test]
fn sse_usage_in_the_last_event_is_priced() {
    let mut m = ResponseMeter::new(per_token(false), 8);
    m.on_headers(Some(200), Some("text/event-stream; charset=utf-8"), None);
    m.on_body(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
    m.on_body(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2000,");
    m.on_body(b"\"completion_tokens\":1000}}\n\ndata: [DONE]\n\n");
    // The SSE path is not capped by the JSON buffer cap (8 bytes here).
    assert_eq!(m.final_cost(), Some(Micros::new(120_000)));
}

#[test]
fn a_stream_requested_with_stream_true_is_scanned_as_sse_whatever_its_content_type() {
    let mut m = ResponseMeter::new(per_token(true), 8);
    m.on_headers(Some(200), None, None);
    m.on_body(b"data: {\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":0}}\n\n");
    assert_eq!(m.final_cost(), Some(Micros::new(30_000)));
}

#[test]
fn a_broken_stream_without_usage_keeps_the_estimate() {
    let mut m = ResponseMeter::new(per_token(false), 1024);
    m.on_headers(Some(200), Some("text/event-stream"), None);
    m.on_body(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
    assert_eq!(m.final_cost(), Some(Micros::new(90_000)));
}

#[test]
fn upstream_error_without_report_costs_nothing() {
    let mut m = ResponseMeter::new(per_token(false), 1024);
    m.on_headers(Some(503), Some("text/plain"), None);
    m.on_body(b"upstream connect error");
    assert_eq!(m.final_cost(), Some(Micros::ZERO));
}

#[test]
fn cost_header_wins_and_can_come_as_a_trailer() {
    let mut m = ResponseMeter::new(per_request_with_header(), 1024);
    assert_eq!(m.cost_header_name(), Some("x-request-cost"));
    m.on_headers(Some(200), Some("application/json"), Some("1500".into()));
    assert_eq!(m.final_cost(), Some(Micros::new(1_500)));

    let mut m = ResponseMeter::new(per_request_with_header(), 1024);
    m.on_headers(Some(200), None, None);
    assert_eq!(
        m.final_cost(),
        Some(Micros::new(1_000)),
        "no report: the estimate stands"
    );
    m.on_cost_trailer("250".into());
    assert_eq!(m.final_cost(), Some(Micros::new(250)));
}

#[test]
fn a_request_not_priced_per_token_never_copies_the_body() {
    // A flat price: usage in the body cannot change the cost, so no chunk is copied out of
    // the host and nothing is parsed, whatever the content type.
    let flat = Settlement {
        estimate: Micros::new(2_000),
        cost_header: None,
        model_price: None,
        streaming: false,
        bound: Micros::new(10_000_000),
    };
    for ct in [Some("application/json"), Some("text/event-stream"), None] {
        let mut m = ResponseMeter::new(flat.clone(), 1024);
        assert!(!m.reads_body());
        m.on_headers(Some(200), ct, None);
        assert!(!m.wants_body(), "{ct:?}");
        m.on_body(JSON_BODY);
        assert_eq!(m.final_cost(), Some(Micros::new(2_000)), "{ct:?}");
    }
    let mut m = ResponseMeter::new(flat, 1024);
    m.on_headers(Some(500), None, None);
    assert_eq!(
        m.final_cost(),
        Some(Micros::ZERO),
        "an error status still costs nothing"
    );
    assert!(ResponseMeter::new(per_token(false), 1024).reads_body());
}

/// Issue 20 item 2: `u64::MAX` in the cost header (or a cost trailer) is charged the bound
/// and handed on as suspect with the raw value, never stored raw.
#[test]
fn an_absurd_cost_report_is_charged_the_bound_and_kept_raw() {
    for trailer in [false, true] {
        let mut m = ResponseMeter::new(per_request_with_header(), 1024);
        let raw = "18446744073709551615".to_string();
        if trailer {
            m.on_headers(Some(200), None, None);
            m.on_cost_trailer(raw.clone());
        } else {
            m.on_headers(Some(200), None, Some(raw.clone()));
        }
        let c = m.final_charge().unwrap();
        assert_eq!(c.amount, Micros::new(10_000_000));
        assert_eq!(c.suspect.map(|s| s.raw), Some(raw));
        assert_eq!(m.final_cost(), Some(Micros::new(10_000_000)));
    }
    // Usage whose price overflows, in a JSON body.
    let mut m = ResponseMeter::new(per_token(false), 1024);
    m.on_headers(Some(200), Some("application/json"), None);
    m.on_body(br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}"#);
    let c = m.final_charge().unwrap();
    assert_eq!(c.amount, Micros::new(10_000_000));
    assert!(c
        .suspect
        .unwrap()
        .raw
        .starts_with("prompt_tokens=18446744073709551615"));
}
