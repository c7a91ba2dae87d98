//! The path normaliser and authority parser see every request's `:path` and `:authority`.
//! Input: `authority \n path` (no newline: the whole input is the path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pag0_policy::matching::{parse_authority, EndpointPattern, RequestTarget};
use pag0_policy::path::normalise_str;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let (authority, path) = text
        .split_once('\n')
        .unwrap_or(("api.example.com", text.as_str()));

    if let Ok(host) = parse_authority(authority) {
        assert!(!host.is_empty());
        assert!(!host.contains([',', '@', ';', '%', '/', ' ']), "{authority:?} -> {host:?}");
    }

    if let Ok(once) = normalise_str(path) {
        assert!(once.starts_with('/'), "{path:?} -> {once:?}");
        assert!(!once.contains("//"), "{path:?} -> {once:?}");
        assert!(!once.contains("/./") && !once.ends_with("/."), "{path:?} -> {once:?}");
        assert!(!once.contains("/../") && !once.ends_with("/.."), "{path:?} -> {once:?}");
        assert!(
            !once.contains(['?', '#', ';', '\\', ' ']) && !once.bytes().any(|b| b < 0x20 || b >= 0x7f),
            "{path:?} -> {once:?}"
        );
        // Every escape left is canonical: upper-case hex, never an unreserved character.
        let b = once.as_bytes();
        for (i, _) in once.match_indices('%') {
            let esc = b.get(i + 1..i + 3).expect("a complete escape");
            assert!(esc.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)), "{once:?}");
        }
        assert_eq!(normalise_str(&once).as_deref(), Ok(once.as_str()), "not idempotent: {path:?}");

        // A normalised path under the block rule (in any letter case) is blocked.
        let block = EndpointPattern::parse("api.example.com/v1/admin").expect("rule");
        let lower = once.to_ascii_lowercase();
        if lower == "/v1/admin" || lower.starts_with("/v1/admin/") {
            assert!(block.matches("api.example.com", path, true), "{path:?} -> {once:?} not blocked");
        }
    } else {
        // Refused targets never match an allow rule.
        let allow = EndpointPattern::parse("api.example.com").expect("rule");
        assert!(RequestTarget::parse("api.example.com", path).is_err());
        assert!(!allow.matches("api.example.com", path, false));
        assert!(allow.matches("api.example.com", path, true));
    }
});
