//! Cost per request inside the guest, through the host: one whole stream (context create,
//! headers, response headers, body, done/log/delete) on the allowed and the denied path.
//! Host overhead is included; compare the two paths with each other, not with Envoy.

use criterion::{criterion_group, criterion_main, Criterion};
use pag0_host_tests::{fixture, Host, Request, Response};

fn host() -> Host {
    host_with(|_| {})
}

/// The response cache on for project `ops` (index 1).
fn cached_host() -> Host {
    host_with(|policy| {
        policy["projects"][1]["cache"] =
            serde_json::json!({ "enabled": true, "sharedCache": false, "defaultTTL": 3600 });
    })
}

fn host_with(edit: impl FnOnce(&mut serde_json::Value)) -> Host {
    let mut policy = fixture::policy();
    edit(&mut policy);
    let big = "100000000000000";
    policy["globalPolicy"]["monthlyBudget"] = big.into();
    policy["globalPolicy"]["dailyBudget"] = big.into();
    policy["projects"][1]["policy"]["monthlyBudget"] = big.into();
    let cfg = serde_json::json!({ "policy": policy, "maxBodyBytes": 1_048_576 }).to_string();
    match Host::builder(cfg).build() {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    }
}

fn per_request(c: &mut Criterion) {
    let mut h = host();
    let allowed = Request::get("api.deepl.com", "/v2/translate").api_key(fixture::OPS_KEY);
    let ok = Response::json(200, r#"{"translations":[]}"#);
    assert_eq!(
        h.run(&allowed, &ok).header("x-pag0-decision"),
        Some("allow")
    );
    c.bench_function("allowed per-request price", |b| {
        b.iter(|| h.run(&allowed, &ok))
    });

    let mut h = host();
    let chat = Request::post_json(
        "api.openai.com",
        "/v1/chat/completions",
        r#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .api_key(fixture::OPS_KEY);
    let usage = Response::json(
        200,
        r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20}}"#,
    );
    assert_eq!(
        h.run(&chat, &usage).header("x-pag0-decision"),
        Some("allow")
    );
    c.bench_function("allowed token-priced with JSON usage", |b| {
        b.iter(|| h.run(&chat, &usage))
    });

    // The cache lookup path: the same chat call answered from shared data (decision, key =
    // SHA-256 over the request line, body hash and vary headers, one shared-data read, local
    // reply). Compare with "allowed token-priced with JSON usage" above.
    let mut h = cached_host();
    let first = h.run(&chat, &usage);
    assert_eq!(first.header("x-pag0-cache"), Some("miss"));
    let hit = h.run(&chat, &usage);
    assert_eq!(hit.header("x-pag0-cache"), Some("hit"));
    c.bench_function("cache hit token-priced (local reply)", |b| {
        b.iter(|| h.run(&chat, &usage))
    });

    let mut h = host();
    let denied = Request::get("api.deepl.com", "/v2/translate").api_key("unknown");
    assert_eq!(h.run(&denied, &ok).status(), Some(401));
    c.bench_function("denied unknown key", |b| b.iter(|| h.run(&denied, &ok)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = per_request
}
criterion_main!(benches);
