use super::*;

fn gpt4() -> Settlement {
    Settlement {
        estimate: Micros::new(123_000),
        cost_header: None,
        model_price: Some(ModelPrice {
            input_per_1k: Micros::new(30_000),
            output_per_1k: Micros::new(60_000),
        }),
        streaming: false,
    }
}

const STREAM: &str =
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n\
: keep-alive comment\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n\
event: message\n\
data: {\"id\":\"c1\",\"choices\":[],\n\
data: \"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n\
data: [DONE]\n\n";

#[test]
fn usage_from_json_bodies() {
    let u = usage_from_json(br#"{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":20}}"#);
    assert_eq!(
        u,
        Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 20
        })
    );
    let u = usage_from_json(br#"{"usage":{"input_tokens":3,"output_tokens":4}}"#);
    assert_eq!(
        u,
        Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 4
        })
    );
    assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
    assert_eq!(usage_from_json(br#"{"usage":{}}"#), None);
    assert_eq!(usage_from_json(br#"{"id":"x"}"#), None);
    assert_eq!(usage_from_json(b"not json"), None);
    assert_eq!(usage_from_json(b"[]"), None);
    assert_eq!(usage_from_json(b""), None);
}

#[test]
fn sse_usage_at_every_split_point() {
    let want = Some(Usage {
        prompt_tokens: 11,
        completion_tokens: 7,
    });
    let bytes = STREAM.as_bytes();
    for i in 0..=bytes.len() {
        let mut s = SseUsageScanner::new();
        s.feed(&bytes[..i]);
        s.feed(&bytes[i..]);
        assert_eq!(s.usage(), want, "split at {i}");
    }
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            let mut s = SseUsageScanner::new();
            s.feed(&bytes[..i]);
            s.feed(&bytes[i..j]);
            s.feed(&bytes[j..]);
            assert_eq!(s.usage(), want, "split at {i},{j}");
        }
    }
    // One byte at a time.
    let mut s = SseUsageScanner::new();
    for b in bytes {
        s.feed(std::slice::from_ref(b));
    }
    assert_eq!(s.usage(), want);
}

#[test]
fn sse_cr_only_line_endings_split_anywhere() {
    let stream = STREAM.replace("\r\n", "\n").replace('\n', "\r");
    let bytes = stream.as_bytes();
    for i in 0..=bytes.len() {
        let mut s = SseUsageScanner::new();
        s.feed(&bytes[..i]);
        s.feed(&bytes[i..]);
        assert_eq!(
            s.usage(),
            Some(Usage {
                prompt_tokens: 11,
                completion_tokens: 7
            }),
            "split at {i}"
        );
    }
}

#[test]
fn sse_last_usage_wins_and_unterminated_event_counts() {
    let mut s = SseUsageScanner::new();
    s.feed(b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
    s.feed(b"data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}");
    assert_eq!(
        s.usage(),
        Some(Usage {
            prompt_tokens: 2,
            completion_tokens: 3
        })
    );
    // usage() does not consume: more data still counts.
    s.feed(b"\n\ndata: {\"usage\":null}\n\ndata: [DONE]\n\n");
    assert_eq!(
        s.usage(),
        Some(Usage {
            prompt_tokens: 2,
            completion_tokens: 3
        })
    );
}

#[test]
fn sse_without_usage_and_overlong_events() {
    let mut s = SseUsageScanner::new();
    s.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
    assert_eq!(s.usage(), None);
    // An event over the bound is skipped, the scanner recovers afterwards.
    let mut s = SseUsageScanner::new();
    let big = vec![b'x'; MAX_SSE_EVENT_BYTES + 10];
    s.feed(b"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":5},\"pad\":\"");
    s.feed(&big);
    s.feed(b"\"}\n\n");
    assert_eq!(s.usage(), None);
    assert!(s.line.capacity() <= MAX_SSE_LINE_BYTES * 2);
    s.feed(b"data: {\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":1}}\n\n");
    assert_eq!(
        s.usage(),
        Some(Usage {
            prompt_tokens: 6,
            completion_tokens: 1
        })
    );
}

#[test]
fn final_cost_order() {
    let usage = Some(Usage {
        prompt_tokens: 100,
        completion_tokens: 1000,
    });
    let s = gpt4();
    // usage: ceil(30000*100/1000)=3000 + 60000 = 63000
    assert_eq!(s.final_cost(200, None, usage), Micros::new(63_000));
    assert_eq!(s.final_cost(500, None, usage), Micros::new(63_000));
    assert_eq!(s.final_cost(200, None, None), Micros::new(123_000));
    assert_eq!(s.final_cost(429, None, None), Micros::ZERO);
    assert_eq!(s.final_cost(399, None, None), Micros::new(123_000));
    // A cost header is ignored unless the endpoint names one.
    assert_eq!(s.final_cost(200, Some("5"), None), Micros::new(123_000));
    let with_header = Settlement {
        cost_header: Some("x-request-cost".into()),
        ..gpt4()
    };
    assert_eq!(
        with_header.final_cost(200, Some("5"), usage),
        Micros::new(5)
    );
    assert_eq!(
        with_header.final_cost(500, Some(" 7 "), None),
        Micros::new(7)
    );
    // An unparseable header falls back to usage, then status, then estimate.
    assert_eq!(
        with_header.final_cost(200, Some("$0.01"), usage),
        Micros::new(63_000)
    );
    assert_eq!(with_header.final_cost(502, Some("abc"), None), Micros::ZERO);
    // Per-request endpoints ignore usage.
    let per_req = Settlement {
        estimate: Micros::new(2000),
        cost_header: None,
        model_price: None,
        streaming: false,
    };
    assert_eq!(per_req.final_cost(200, None, usage), Micros::new(2000));
    // Overflowing usage charges the maximum, never wraps.
    let huge = Some(Usage {
        prompt_tokens: u64::MAX,
        completion_tokens: u64::MAX,
    });
    assert_eq!(s.final_cost(200, None, huge), Micros::MAX);
}

#[test]
fn cost_header_values() {
    assert_eq!(
        Settlement::cost_header_value("1500"),
        Some(Micros::new(1500))
    );
    assert_eq!(Settlement::cost_header_value(" 0 "), Some(Micros::ZERO));
    assert_eq!(Settlement::cost_header_value("-1"), None);
    assert_eq!(Settlement::cost_header_value("1.5"), None);
    assert_eq!(Settlement::cost_header_value(""), None);
    assert_eq!(
        Settlement::cost_header_value("99999999999999999999999"),
        None
    );
}

#[test]
fn empty_feed_between_cr_and_lf_keeps_the_line_ending_whole() {
    let parts: [&[u8]; 4] = [
        b"data: {\"usage\":{\"prompt_tokens\":3\r",
        b"",
        b"\ndata: ,\"completion_tokens\":4}}\n",
        b"\n",
    ];
    let mut chunked = SseUsageScanner::new();
    for p in parts {
        chunked.feed(p);
    }
    let mut whole = SseUsageScanner::new();
    whole.feed(&parts.concat());
    let want = Some(Usage {
        prompt_tokens: 3,
        completion_tokens: 4,
    });
    assert_eq!(whole.usage(), want);
    assert_eq!(chunked.usage(), want);
}
