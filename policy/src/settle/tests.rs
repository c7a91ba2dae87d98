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
        bound: Micros::new(1_230_000),
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
        bound: Micros::new(20_000),
    };
    assert_eq!(per_req.final_cost(200, None, usage), Micros::new(2000));
    // Overflowing usage charges the bound, never wraps nor saturates.
    let huge = Some(Usage {
        prompt_tokens: u64::MAX,
        completion_tokens: u64::MAX,
    });
    assert_eq!(s.final_cost(200, None, huge), Micros::new(1_230_000));
}

fn per_request_with_header() -> Settlement {
    Settlement {
        estimate: Micros::new(1500),
        cost_header: Some("x-request-cost".into()),
        model_price: None,
        streaming: false,
        bound: Settlement::bound_for(Micros::new(1500), None, [Micros::new(2_000_000)]),
    }
}

/// Issue 20 item 2: the reports that locked out an org are charged the bound, kept raw.
#[test]
fn absurd_cost_headers_are_suspect_and_charged_the_bound() {
    let s = per_request_with_header();
    assert_eq!(s.bound, Micros::new(15_000));
    for raw in [
        "18446744073709551615",
        "9223372036854775808",
        "99999999999999999999999",
        "15001",
        " 4611686018427387904 ",
    ] {
        let c = s.charge(200, Some(raw), None);
        assert_eq!(c.amount, Micros::new(15_000), "{raw}");
        let suspect = c.suspect.expect(raw);
        assert_eq!(suspect.reason, SuspectReason::AboveBound);
        assert_eq!(suspect.raw, raw, "the raw report is kept as received");
    }
    // At the bound and below: believed.
    assert_eq!(
        s.charge(200, Some("15000"), None),
        Charge::plain(Micros::new(15_000))
    );
    assert_eq!(
        s.charge(200, Some("20"), None),
        Charge::plain(Micros::new(20))
    );
    // Unparsable: suspect, and the estimate (no usable report) stands.
    for raw in ["-1", "1.5", "", "1e30", "$0.01", "0x10"] {
        let c = s.charge(200, Some(raw), None);
        assert_eq!(c.amount, Micros::new(1500), "{raw:?}");
        assert_eq!(c.suspect.map(|x| x.reason), Some(SuspectReason::Unparsable));
    }
    // A long raw value is cut on a char boundary.
    let long = "é".repeat(400);
    let c = s.charge(200, Some(&long), None);
    let raw = c.suspect.unwrap().raw;
    assert!(raw.len() <= MAX_RAW_REPORT_BYTES && long.starts_with(&raw));
}

#[test]
fn absurd_usage_is_suspect_and_charged_the_bound() {
    let s = gpt4();
    let c = s.charge(
        200,
        None,
        Some(Usage {
            prompt_tokens: 0,
            completion_tokens: 1 << 62,
        }),
    );
    assert_eq!(c.amount, Micros::new(1_230_000));
    let suspect = c.suspect.unwrap();
    assert_eq!(suspect.reason, SuspectReason::AboveBound);
    assert_eq!(
        suspect.raw,
        format!("prompt_tokens=0,completion_tokens={}", 1u64 << 62)
    );
    // Within the bound: the usage is charged as reported.
    let ok = s.charge(
        200,
        None,
        Some(Usage {
            prompt_tokens: 1000,
            completion_tokens: 20_000,
        }),
    );
    assert_eq!(ok, Charge::plain(Micros::new(30_000 + 1_200_000)));
}

#[test]
fn the_bound() {
    let m = Micros::new;
    // 10 × estimate, or the per-request cap when higher, never above the lowest limit.
    assert_eq!(Settlement::bound_for(m(100), None, []), m(1000));
    assert_eq!(Settlement::bound_for(m(100), Some(m(5000)), []), m(5000));
    assert_eq!(
        Settlement::bound_for(m(100), Some(m(5000)), [m(3000), m(900_000)]),
        m(3000)
    );
    // Nothing plausible (a free endpoint reporting a cost): the lowest limit.
    assert_eq!(
        Settlement::bound_for(m(0), None, [m(7000), m(9000)]),
        m(7000)
    );
    // Never 2^63 or more, whatever the inputs; never below the estimate.
    let top = m((1 << 63) - 1);
    assert_eq!(Settlement::bound_for(m(0), None, []), top);
    assert_eq!(
        Settlement::bound_for(Micros::MAX, Some(Micros::MAX), []),
        top
    );
    assert_eq!(Settlement::bound_for(m(500), None, [m(100)]), m(500));
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

mod counters_stay_usable {
    //! Issue 20 item 2, as a class: whatever project A's upstream reports, project B keeps
    //! being served. Requests of A go through the real `decide` of the acme policy, reserve
    //! and settle on a counter map as the filter does; reports are arbitrary.

    use std::collections::HashMap;

    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    use super::super::*;
    use crate::budget::{settle_counter, try_reserve, BudgetKey, BudgetView};
    use crate::fixtures::{acme_api_key, acme_policy, llm_host, per_request_host};
    use crate::{decide, CompiledPolicy, Decision, RequestHead};

    struct Map(HashMap<String, Micros>);

    impl BudgetView for Map {
        fn used(&self, key: &BudgetKey) -> Micros {
            self.0
                .get(&key.storage_key())
                .copied()
                .unwrap_or(Micros::ZERO)
        }
    }

    #[derive(Clone, Debug)]
    enum Report {
        Header(String),
        Usage(u64, u64),
        Nothing,
    }

    fn report() -> impl Strategy<Value = Report> {
        prop_oneof![
            any::<u64>().prop_map(|n| Report::Header(n.to_string())),
            Just(Report::Header("18446744073709551615".into())),
            "[0-9]{1,30}".prop_map(Report::Header),
            ".{0,12}".prop_map(Report::Header),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Report::Usage(a, b)),
            (0u64..5000, 0u64..5000).prop_map(|(a, b)| Report::Usage(a, b)),
            Just(Report::Nothing),
        ]
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn acme() -> &'static CompiledPolicy {
        static P: std::sync::OnceLock<CompiledPolicy> = std::sync::OnceLock::new();
        P.get_or_init(|| CompiledPolicy::from_value(&acme_policy()).unwrap())
    }

    /// One request: decide, reserve, settle with `report`. Returns whether it was allowed.
    fn run(counters: &mut Map, client: usize, host: &str, body: &[u8], report: &Report) -> bool {
        let key = acme_api_key(client);
        let head = RequestHead {
            api_key: Some(&key),
            method: "POST",
            authority: host,
            path: "/v1/x",
            requires_approval: false,
        };
        let Decision::Allow(a) = decide(acme(), &head, Some(body), &*counters, now()) else {
            return false;
        };
        for r in &a.reservations {
            let used = counters.used(&r.key);
            let next = try_reserve(used, r.amount, r.limit).expect("decide checked the room");
            counters.0.insert(r.key.storage_key(), next);
        }
        let (header, usage) = match report {
            Report::Header(h) => (Some(h.as_str()), None),
            Report::Usage(p, c) => (
                None,
                Some(Usage {
                    prompt_tokens: *p,
                    completion_tokens: *c,
                }),
            ),
            Report::Nothing => (None, None),
        };
        let charge = a.settlement.charge(200, header, usage);
        assert!(charge.amount <= a.settlement.bound);
        assert!(charge.amount < SUSPECT_ABSOLUTE);
        for r in &a.reservations {
            let used = counters.used(&r.key);
            counters.0.insert(
                r.key.storage_key(),
                settle_counter(used, r.amount, charge.amount),
            );
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn no_sequence_of_reports_locks_out_another_project(
            ops in prop::collection::vec((any::<bool>(), 0u64..4000, report()), 1..120),
        ) {
            let mut counters = Map(HashMap::new());
            // Project team-1 (agent-5): api.openai.com per token, and a per-request host
            // with a cost header (per_request_host(5)).
            for (llm, max_tokens, report) in &ops {
                if *llm {
                    let body = format!(r#"{{"model":"gpt-4","max_tokens":{max_tokens}}}"#);
                    run(&mut counters, 5, &llm_host(0), body.as_bytes(), report);
                } else {
                    run(&mut counters, 5, &per_request_host(5), b"", report);
                }
            }
            for (k, v) in &counters.0 {
                prop_assert!(*v < SUSPECT_ABSOLUTE, "{k} = {v}");
            }
            // team-1's share of the org counters is what team-1's own counters hold: at most
            // its daily limit plus one bounded charge (the lowest limit, 2 000 000).
            let org_daily = counters.0.get("org.daily/2026-11-24").copied().unwrap_or_default();
            prop_assert!(org_daily <= Micros::new(2_000_000 + 2_000_000), "{org_daily}");
            // Project team-2 (agent-10) is served: a small request is allowed, twice.
            let body = br#"{"model":"gpt-4o-mini","max_tokens":100}"#;
            prop_assert!(run(&mut counters, 10, &llm_host(0), body, &Report::Nothing));
            prop_assert!(run(&mut counters, 10, &llm_host(0), body, &Report::Usage(10, 10)));
        }
    }
}
