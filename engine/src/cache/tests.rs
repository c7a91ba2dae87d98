//! Entries, keys, slots and configuration of the response cache.

use serde_json::json;

use super::*;
use crate::testing::FakeStore;

fn parts<'a>(body: &'a [u8], path: &'a str) -> RequestParts<'a> {
    RequestParts {
        method: "POST",
        authority: "API.openai.com",
        path,
        body,
        vary: vec![("accept", Some("*/*".into())), ("authorization", None)],
    }
}

fn entry(key: CacheKey, body: &[u8], expires_at_ms: u64) -> Entry {
    Entry {
        key,
        expires_at_ms,
        status: 201,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-é".into(), "".into()),
        ],
        body: body.to_vec(),
        cost_micros: 1234,
    }
}

#[test]
fn entry_round_trips_and_garbage_does_not_decode() {
    let k = CacheKey::new(&Pool::Shared, &parts(b"b", "/p"));
    let e = entry(k, b"hello", 99);
    let bytes = e.encode();
    assert_eq!(bytes.len(), e.encoded_len());
    assert_eq!(Entry::decode(&bytes), Some(e));
    for cut in [0, 3, 10, 40, 60] {
        assert_eq!(
            Entry::decode(bytes.get(..cut).unwrap()),
            None,
            "cut at {cut}"
        );
    }
    assert_eq!(Entry::decode(b"XXXX"), None);
}

#[test]
fn key_covers_pool_method_authority_case_path_body_and_vary() {
    let base = CacheKey::new(&Pool::Shared, &parts(b"b", "/p?q=1"));
    assert_eq!(base, CacheKey::new(&Pool::Shared, &parts(b"b", "/p?q=1")));
    let mut lower = parts(b"b", "/p?q=1");
    lower.authority = "api.openai.com";
    assert_eq!(
        base,
        CacheKey::new(&Pool::Shared, &lower),
        "authority is case-insensitive"
    );
    assert_ne!(
        base,
        CacheKey::new(&Pool::Project("x".into()), &parts(b"b", "/p?q=1"))
    );
    assert_ne!(base, CacheKey::new(&Pool::Shared, &parts(b"c", "/p?q=1")));
    assert_ne!(base, CacheKey::new(&Pool::Shared, &parts(b"b", "/p?q=2")));
    let mut get = parts(b"b", "/p?q=1");
    get.method = "GET";
    assert_ne!(base, CacheKey::new(&Pool::Shared, &get));
    let mut auth = parts(b"b", "/p?q=1");
    auth.vary[1].1 = Some(String::new());
    assert_ne!(
        base,
        CacheKey::new(&Pool::Shared, &auth),
        "empty differs from absent"
    );
    // Pools `p/<id>` cannot collide with `shared` through a project named "shared".
    assert_ne!(
        CacheKey::new(&Pool::Shared, &parts(b"b", "/p")),
        CacheKey::new(&Pool::Project("shared".into()), &parts(b"b", "/p"))
    );
}

#[test]
fn lookup_serves_only_the_same_key_before_expiry() {
    let s = FakeStore::default();
    let cfg = CacheConfig {
        max_bytes: 1024,
        max_entry_bytes: 1024,
    };
    assert_eq!(cfg.slots(), 1);
    let k1 = CacheKey::new(&Pool::Shared, &parts(b"1", "/p"));
    let k2 = CacheKey::new(&Pool::Shared, &parts(b"2", "/p"));
    let stored = store(&s, &cfg, &entry(k1, b"one", 1000)).unwrap().unwrap();
    assert_eq!(stored.replaced_bytes, 0);
    assert_eq!(
        lookup(&s, &cfg, &k1, 999).unwrap().map(|e| e.body),
        Some(b"one".to_vec())
    );
    assert_eq!(
        lookup(&s, &cfg, &k1, 1000).unwrap(),
        None,
        "stale at expiry"
    );
    assert_eq!(
        lookup(&s, &cfg, &k2, 0).unwrap(),
        None,
        "same slot, other key"
    );
    // One slot: k2 evicts k1.
    let again = store(&s, &cfg, &entry(k2, b"two", 1000)).unwrap().unwrap();
    assert_eq!(again.replaced_bytes, stored.stored_bytes);
    assert_eq!(lookup(&s, &cfg, &k1, 0).unwrap(), None);
    assert!(lookup(&s, &cfg, &k2, 0).unwrap().is_some());
    // Over the entry cap: not stored.
    assert_eq!(store(&s, &cfg, &entry(k1, &[0; 1024], 1000)).unwrap(), None);
}

#[test]
fn cache_control_directives() {
    assert!(directive(Some("No-Store"), "no-store"));
    assert!(directive(
        Some("max-age=0, no-cache=\"set-cookie\""),
        "no-cache"
    ));
    assert!(!directive(Some("no-storex"), "no-store"));
    assert!(!directive(None, "no-store"));
    assert_eq!(max_age(Some("public, max-age=60, s-maxage=30")), Some(30));
    assert_eq!(max_age(Some("max-age=\"7\"")), Some(7));
    assert_eq!(max_age(Some("public")), None);
    assert!(keeps_response_header("content-type"));
    assert!(!keeps_response_header("Content-Length"));
    assert!(!keeps_response_header("x-pag0-decision"));
    assert!(!keeps_response_header(":status"));
}

#[test]
fn config_defaults_bounds_and_errors() {
    let mut errors = Vec::new();
    assert_eq!(parse_config(None, &mut errors), CacheConfig::default());
    assert_eq!(CacheConfig::default().slots(), 64);
    let c = parse_config(
        Some(&json!({ "maxBytes": 1000, "maxEntryBytes": 300 })),
        &mut errors,
    );
    assert!(errors.is_empty());
    assert_eq!(c.slots(), 3);
    parse_config(
        Some(&json!({ "maxBytes": 0, "maxEntryBytes": "x", "ttl": 1 })),
        &mut errors,
    );
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["cache.maxBytes", "cache.maxEntryBytes", "cache.ttl"]
    );
    errors.clear();
    parse_config(
        Some(&json!({ "maxBytes": 10, "maxEntryBytes": 20 })),
        &mut errors,
    );
    assert_eq!(errors.len(), 1);
    let full = crate::config::parse(
        br#"{"sidecar":{"cluster":"c"},"cache":{"maxBytes":4096,"maxEntryBytes":1024}}"#,
    );
    assert_eq!(full.map(|c| c.cache.slots()).ok(), Some(4));
    let bad = crate::config::parse(br#"{"sidecar":{"cluster":"c"},"cache":{"maxByte":1}}"#);
    assert!(bad.is_err(), "unknown fields stay errors");
}
