//! Agent bytes never panic the core: arbitrary input to every parser that sees them.

use proptest::prelude::*;

use crate::fixtures::acme_policy;
use crate::matching::{EndpointPattern, RequestTarget};
use crate::pricing::parse_request_body;
use crate::settle::{usage_from_json, SseUsageScanner, Usage, MAX_SSE_EVENT_BYTES};
use crate::{decide, CompiledPolicy, Decision, RequestHead};

fn acme() -> &'static CompiledPolicy {
    static POLICY: std::sync::OnceLock<CompiledPolicy> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| CompiledPolicy::from_value(&acme_policy()).unwrap())
}

proptest! {
    #[test]
    fn body_and_usage_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_request_body(&bytes);
        let _ = usage_from_json(&bytes);
        let _ = CompiledPolicy::compile(&bytes);
    }

    #[test]
    fn matching_never_panics(a in ".{0,40}", p in ".{0,40}") {
        let _ = EndpointPattern::parse(&a);
        if let (Ok(t), Ok(pat)) = (RequestTarget::parse(&a, &p), EndpointPattern::parse("example.com/v1")) {
            let _ = pat.matches_target(&t, true);
            let _ = t.path();
        }
        let _ = crate::path::normalise(&p);
    }

    #[test]
    fn sse_scanner_is_bounded_and_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4096), 0..40)) {
        let mut s = SseUsageScanner::new();
        for c in &chunks {
            s.feed(c);
        }
        let _ = s.usage();
        let (line, event) = s.buffered();
        prop_assert!(line <= MAX_SSE_EVENT_BYTES + 16);
        prop_assert!(event <= MAX_SSE_EVENT_BYTES);
    }

    /// Chunking never changes what the scanner finds.
    #[test]
    fn sse_chunking_is_invisible(
        usages in prop::collection::vec((0u64..10_000, 0u64..10_000), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        crlf in any::<bool>(),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut stream = String::new();
        for (p, c) in &usages {
            stream.push_str(&format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"x\"}}}}]}}{nl}{nl}"));
            stream.push_str(&format!("data: {{\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c}}}}}{nl}{nl}"));
        }
        stream.push_str(&format!("data: [DONE]{nl}{nl}"));
        let bytes = stream.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut s = SseUsageScanner::new();
        let mut prev = 0;
        for p in points {
            s.feed(&bytes[prev..p]);
            prev = p;
        }
        s.feed(&bytes[prev..]);
        let (p, c) = usages[usages.len() - 1];
        prop_assert_eq!(s.usage(), Some(Usage { prompt_tokens: p, completion_tokens: c }));
    }

    /// Any byte soup made of SSE-ish tokens: chunking never changes the result.
    #[test]
    fn sse_chunking_is_invisible_for_any_bytes(
        parts in prop::collection::vec(prop::sample::select(vec![
            "data: ", "data:", "\r", "\n", "\r\n", ": c", "event: x", "[DONE]",
            "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
            "{\"usage\":{\"prompt_tokens\":3", ",\"completion_tokens\":4}}", "{}", "x",
        ]), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        empty_feeds in any::<bool>(),
    ) {
        let stream: String = parts.concat();
        let bytes = stream.as_bytes();
        let mut whole = SseUsageScanner::new();
        whole.feed(bytes);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunked = SseUsageScanner::new();
        let mut prev = 0;
        for p in points {
            chunked.feed(&bytes[prev..p]);
            if empty_feeds {
                chunked.feed(&[]);
            }
            prev = p;
        }
        chunked.feed(&bytes[prev..]);
        prop_assert_eq!(whole.usage(), chunked.usage(), "{:?}", stream);
    }

    #[test]
    fn decide_never_panics_on_agent_input(
        key in prop::option::of(".{0,20}"),
        authority in ".{0,30}",
        path in ".{0,30}",
        body in prop::option::of(prop::collection::vec(any::<u8>(), 0..256)),
        client in 0usize..50,
        use_real_key in any::<bool>(),
    ) {
        let policy = acme();
        let real = crate::fixtures::acme_api_key(client);
        let key = if use_real_key { Some(real.as_str()) } else { key.as_deref() };
        let head = RequestHead { api_key: key, method: "POST", authority: &authority, path: &path, requires_approval: false };
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let d = decide(policy, &head, body.as_deref(), &crate::budget::NothingSpent, now);
        if let Decision::Allow(a) = d {
            prop_assert!(a.reservations.iter().all(|r| r.amount <= r.limit));
        }
    }
}
