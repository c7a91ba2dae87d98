//! The response cache through a real Envoy (2 workers, shared data across them): a repeated
//! call is a local hit at cost 0 that never reaches the upstream (the mock's `/__stats` counts
//! arrivals), pools keep a project without `sharedCache` apart, a changed body misses, an
//! entry past its TTL misses, a streaming response is not stored, budgets are not charged for
//! hits (in managed mode the sidecar stores the hit and reports its savings in
//! `/v1/analytics`), and the cache's memory stays within `maxBytes` when filled with 10× that.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use pag0_envoy::{Call, EnvoyConfig, Reply};
use serde_json::{json, Value};

const CHAT: &str = "/v1/chat/completions";
/// 100 prompt + 50 completion tokens of gpt-4 = 6000 µ$ (the mock reports them when asked).
const USAGE_QUERY: &str = "?prompt_tokens=100&completion_tokens=50";
const USAGE_COST: u64 = 6000;

/// `a` and `b` share the pool; `c` keeps its own; `t` has a 1-second TTL; each project's
/// budget fits one chat reservation (~61000 µ$ for max_tokens 1000) but not two.
fn policy() -> Value {
    let cache = |shared: bool, ttl: u64| json!({ "enabled": true, "sharedCache": shared, "defaultTTL": ttl });
    let mut a = project("a", 100_000, json!({}));
    a["cache"] = cache(true, 600);
    let mut b = project("b", 100_000, json!({}));
    b["cache"] = cache(true, 600);
    let mut c = project("c", 100_000, json!({}));
    c["cache"] = cache(false, 600);
    let mut t = project("t", 100_000, json!({}));
    t["cache"] = cache(false, 1);
    let mut m = project("m", 1_000_000_000, json!({}));
    m["cache"] = cache(false, 600);
    json!({
        "orgId": "test-org", "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "1000000000" },
        "endpoints": endpoints(),
        "projects": [a, b, c, t, m],
        "clients": [client("ca", "a", "sk-a"), client("cb", "b", "sk-b"),
                    client("cc", "c", "sk-c"), client("ct", "t", "sk-t"),
                    client("cm", "m", "sk-m")]
    })
}

fn start(cache: Option<Value>) -> Stack {
    Stack::start_config(|port| {
        let mut cfg = json!({ "policy": policy() });
        if let Some(c) = cache {
            cfg["cache"] = c;
        }
        EnvoyConfig::new(cfg, port)
    })
}

fn chat_call(key: &str, content: &str, stream: bool) -> Call {
    let body = json!({ "model": "gpt-4", "max_tokens": 1000, "stream": stream,
                       "messages": [{ "role": "user", "content": content }] });
    Call::post("api.openai.com", &format!("{CHAT}{USAGE_QUERY}"))
        .key(key)
        .json(&body)
}

fn cache_header(r: &Reply) -> &str {
    r.header("x-pag0-cache").unwrap_or("")
}

fn chats(s: &Stack) -> u64 {
    s.mock.served_on(CHAT)
}

#[test]
fn second_identical_call_is_a_hit_at_cost_0_and_never_reaches_the_upstream() {
    let s = start(None);
    let mut c = Checks::default();
    let call = chat_call("sk-a", "What is 2+2?", false);
    let first = s.send(&call);
    c.allow("first", &first, "a");
    c.eq("first is a miss", cache_header(&first), "miss");
    c.eq("first reached the upstream", chats(&s), 1);
    // The entry is stored when the response stream ends (settlement at the same point).
    let settled = s.counter_at_least("pag0.cost.settled_micros", USAGE_COST);
    c.eq("first settled at the reported usage", settled, USAGE_COST);
    let spent_before = s.counter_at_least("pag0.cost.reserved_micros", 1);

    // Several repeats: with 2 workers, both reach the one shared-data entry.
    for i in 0..6 {
        let r = s.send(&call);
        c.eq(&format!("repeat {i}: status"), r.status, 200);
        c.eq(
            &format!("repeat {i}: x-pag0-cache"),
            cache_header(&r),
            "hit",
        );
        c.eq(&format!("repeat {i}: decision"), r.decision(), "allow");
        c.eq(
            &format!("repeat {i}: project"),
            r.header("x-pag0-project"),
            Some("a"),
        );
        c.eq(
            &format!("repeat {i}: cost"),
            r.header("x-pag0-estimated-cost"),
            Some("0"),
        );
        c.eq(&format!("repeat {i}: same body"), r.json(), first.json());
        c.eq(
            &format!("repeat {i}: content-type kept"),
            r.header("content-type"),
            first.header("content-type"),
        );
    }
    c.eq("repeats never reached the upstream", chats(&s), 1);
    // Counters reach Envoy's stats on the filter's tick (each worker's): wait for each value.
    c.eq("hits", s.counter_at_least("pag0.cache.hits", 6), 6);
    c.eq("misses", s.counter_at_least("pag0.cache.misses", 1), 1);
    c.eq(
        "savings = 6 × the stored actual cost",
        s.counter_at_least("pag0.cache.savings_micros", 6 * USAGE_COST),
        6 * USAGE_COST,
    );
    c.eq(
        "allowed counts hits",
        s.counter_at_least("pag0.requests.allowed", 7),
        7,
    );
    let m = s.envoy.pag0_counters();
    c.eq(
        "hits reserve nothing",
        m.get("pag0.cost.reserved_micros").copied(),
        Some(spent_before),
    );
    c.eq(
        "hits settle nothing",
        m.get("pag0.cost.settled_micros").copied(),
        Some(USAGE_COST),
    );
    c.finish(&s.envoy);
}

/// Project budgets of 100000 µ$ fit one ~61000 reservation at a time: after the miss settled
/// at 6000, 20 hits would be refused if they were charged or reserved anything.
#[test]
fn budgets_are_not_charged_for_hits() {
    let s = start(None);
    let mut c = Checks::default();
    let call = chat_call("sk-a", "budget", false);
    c.allow("miss", &s.send(&call), "a");
    s.counter_at_least("pag0.cost.settled_micros", USAGE_COST);
    for i in 0..20 {
        let r = s.send(&call);
        c.eq(
            &format!("hit {i}"),
            (r.status, cache_header(&r)),
            (200, "hit"),
        );
    }
    // 6000 spent of 100000: one more distinct call still fits (it would not if any hit had
    // been charged the 6000 it saved: 21 × 6000 > 100000).
    let other = s.send(&chat_call("sk-a", "budget, other question", false));
    c.allow("a distinct call still fits", &other, "a");
    c.eq("upstream saw exactly the two misses", chats(&s), 2);
    c.finish(&s.envoy);
}

#[test]
fn a_project_without_shared_cache_never_hits_anothers_entry() {
    let s = start(None);
    let mut c = Checks::default();
    let q = "shared question";
    let a = s.send(&chat_call("sk-a", q, false));
    c.eq("a: miss", cache_header(&a), "miss");
    s.counter_at_least("pag0.cost.settled_micros", USAGE_COST);
    let b = s.send(&chat_call("sk-b", q, false));
    c.eq("b (sharedCache) hits a's entry", cache_header(&b), "hit");
    c.eq(
        "b's hit is answered as b",
        b.header("x-pag0-project"),
        Some("b"),
    );
    let cc = s.send(&chat_call("sk-c", q, false));
    c.eq("c (no sharedCache) misses", cache_header(&cc), "miss");
    c.eq("c reached the upstream", chats(&s), 2);
    s.counter_at_least("pag0.cost.settled_micros", 2 * USAGE_COST);
    let cc2 = s.send(&chat_call("sk-c", q, false));
    c.eq("c hits its own entry", cache_header(&cc2), "hit");
    let only_c = s.send(&chat_call("sk-c", "only c asked this", false));
    c.eq("c: another miss", cache_header(&only_c), "miss");
    s.counter_at_least("pag0.cost.settled_micros", 3 * USAGE_COST);
    let a2 = s.send(&chat_call("sk-a", "only c asked this", false));
    c.eq("a never sees c's entry", cache_header(&a2), "miss");
    c.eq("upstream calls", chats(&s), 4);
    c.finish(&s.envoy);
}

#[test]
fn a_changed_body_misses_and_an_entry_past_its_ttl_misses() {
    let s = start(None);
    let mut c = Checks::default();
    let one = s.send(&chat_call("sk-a", "one", false));
    c.eq("one: miss", cache_header(&one), "miss");
    s.counter_at_least("pag0.cost.settled_micros", USAGE_COST);
    let two = s.send(&chat_call("sk-a", "two", false));
    c.eq("changed body: miss", cache_header(&two), "miss");
    c.eq("both reached the upstream", chats(&s), 2);
    s.counter_at_least("pag0.cost.settled_micros", 2 * USAGE_COST);

    // Project t: defaultTTL 1 s.
    let t1 = s.send(&chat_call("sk-t", "ttl", false));
    c.eq("t: miss", cache_header(&t1), "miss");
    s.counter_at_least("pag0.cost.settled_micros", 3 * USAGE_COST);
    std::thread::sleep(Duration::from_millis(1500));
    let t2 = s.send(&chat_call("sk-t", "ttl", false));
    c.eq("past its TTL: miss", cache_header(&t2), "miss");
    c.eq("the stale entry was not served", chats(&s), 4);
    c.finish(&s.envoy);
}

#[test]
fn a_streaming_response_is_not_stored() {
    let s = start(None);
    let mut c = Checks::default();
    let call = chat_call("sk-a", "stream me", true);
    for i in 0..2u64 {
        let r = s.send(&call);
        c.eq(&format!("stream {i}: status"), r.status, 200);
        c.eq(&format!("stream {i}: miss"), cache_header(&r), "miss");
        c.that(
            &format!("stream {i}: SSE"),
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/event-stream")),
            format!("{:?}", r.headers),
        );
        s.counter_at_least("pag0.cost.settled_micros", USAGE_COST * (i + 1));
    }
    c.eq("both streams reached the upstream", chats(&s), 2);
    c.eq(
        "nothing stored",
        s.envoy.pag0_counter("pag0.cache.bytes"),
        0,
    );
    c.finish(&s.envoy);
}

/// Envoy's heap (`/memory` `allocated`, tcmalloc) and the cache's own gauge while 10× the
/// configured bound of distinct responses pass.
#[test]
fn memory_stays_within_the_bound_when_filled_with_ten_times_its_size() {
    const MAX: u64 = 256 * 1024;
    const ENTRY: u64 = 16 * 1024;
    let s = start(Some(json!({ "maxBytes": MAX, "maxEntryBytes": ENTRY })));
    let mut c = Checks::default();
    let admin = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let allocated = || -> u64 {
        let v: Value = admin
            .get(s.envoy.admin_url("/memory"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["allocated"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    };
    // Warm up (connections, first-request allocations) before the baseline.
    for i in 0..20 {
        s.send(&Call::get("api.deepl.com", &format!("/echo?warm={i}")).key("sk-m"));
    }
    let before = allocated();
    // /echo answers with its path: ~12 KiB of padding makes each response ~12 KiB.
    let pad = "p".repeat(12 * 1024);
    let n = 10 * MAX / (12 * 1024) + 1;
    let mut hits = 0;
    for i in 0..n {
        let r = s.send(&Call::get("api.deepl.com", &format!("/echo?i={i}&pad={pad}")).key("sk-m"));
        c.eq(&format!("fill {i}: status"), r.status, 200);
        hits += u64::from(cache_header(&r) == "hit");
    }
    c.eq("every fill response was distinct (a miss)", hits, 0);
    let bytes = s.envoy.pag0_counter("pag0.cache.bytes");
    c.that(
        "the gauge is within maxBytes",
        bytes <= MAX,
        format!("{bytes} bytes"),
    );
    c.that(
        "responses were stored",
        bytes >= MAX / 4,
        format!("{bytes} bytes for {n} stored responses of ~12 KiB in 16 slots"),
    );
    let after = allocated();
    let growth = after.saturating_sub(before);
    let filled = n * 12 * 1024;
    eprintln!(
        "cache memory: {n} distinct responses ({filled} bytes) through maxBytes {MAX}: gauge \
         {bytes} bytes; Envoy allocated {before} -> {after} (+{growth})"
    );
    c.that(
        "Envoy's heap grew by less than half of what passed",
        growth < filled / 2,
        format!("allocated {before} → {after} (+{growth}) after {filled} bytes of distinct responses, bound {MAX}"),
    );
    // The last response is still there (the cache kept working while evicting).
    let last =
        s.send(&Call::get("api.deepl.com", &format!("/echo?i={}&pad={pad}", n - 1)).key("sk-m"));
    c.eq(
        "the most recent response is served from the cache",
        cache_header(&last),
        "hit",
    );
    c.finish(&s.envoy);
}

/// Managed mode: a hit goes to the sidecar as a usage record (`amount: "0"`, `cacheHit`,
/// `savings`). The sidecar accepts the batch (usage is stop-and-wait, so a refused batch would
/// hold back every later record) and charges nothing for the hit.
#[test]
fn managed_mode_hits_reach_the_sidecar_and_charge_nothing() {
    use pag0_envoy::harness::{Sidecar, SidecarConfig};
    use pag0_envoy::Agent;
    use std::time::Instant;

    const ADMIN: &str = "admin-token-0123456789abcdef";
    const SECRET: &str = "sync-secret-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(&SidecarConfig {
        data_dir: dir.path().to_path_buf(),
        database_url: None,
        database_schema: None,
        admin_token: ADMIN.into(),
        sync_secret: SECRET.into(),
        lease_ttl_ms: 30_000,
        port: 0,
    })
    .unwrap();
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let mut doc = simple_policy(100_000_000);
    doc["projects"][0]["cache"] =
        json!({ "enabled": true, "sharedCache": false, "defaultTTL": 600 });
    let r = http
        .put(sc.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(doc.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "PUT /v1/policy: {}", r.status());
    let spent = |counter: &str| -> u64 {
        let v: Value = http
            .get(sc.url("/v1/budgets"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap_or(Value::Null);
        find_spent(&v, counter).unwrap_or(0)
    };
    let mock = pag0_envoy::MockUpstream::start().unwrap();
    let mut cfg = EnvoyConfig::new(
        json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                             "syncIntervalMs": 300, "timeoutMs": 1000, "failureMode": "closed",
                             "syncSecret": SECRET } }),
        mock.port(),
    );
    cfg.sidecar_port = Some(sc.port);
    let envoy = pag0_envoy::Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(envoy.port).unwrap();
    let send = |path: &str| {
        agent
            .send(&Call::get("api.deepl.com", path).key("sk-test-1"))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", envoy.log()))
    };
    // Until the first policy and leases arrived (refusals meanwhile are 503s, not charged).
    let t0 = Instant::now();
    let mut first = send("/v2/first");
    while first.status != 200 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        first = send("/v2/first");
    }
    let mut c = Checks::default();
    c.allow("first", &first, "p1");
    c.eq("first: miss", cache_header(&first), "miss");
    let hit = send("/v2/first");
    c.eq("second: hit", cache_header(&hit), "hit");
    let last = send("/v2/last");
    c.eq("another path: miss", cache_header(&last), "miss");
    // 2 misses × 2000 (deepl per request); the hit adds 0, and its record does not block the
    // batch that carries the last miss.
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let counter = format!("project.monthly/p1/{month}");
    let t0 = Instant::now();
    while spent(&counter) < 4000 && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more acknowledged syncs: a hit charged late would arrive with them.
    let acked = envoy.pag0_counter("pag0.sync.acked");
    let later = envoy.wait_counter("pag0.sync.acked", Duration::from_secs(15), |v| {
        v >= acked + 4
    });
    c.that(
        "syncs go on",
        later >= acked + 4,
        format!("{acked} -> {later}"),
    );
    c.eq(
        "spent at the sidecar: the two misses only",
        spent(&counter),
        4000,
    );
    c.that(
        "the sidecar never refused a sync",
        !sc.log().contains("BAD_SYNC"),
        sc.log(),
    );
    // Counters reach Envoy's stats on the filter's tick: wait (bounded) for each value.
    let wait = Duration::from_secs(15);
    c.eq(
        "hits",
        envoy.wait_counter("pag0.cache.hits", wait, |v| v >= 1),
        1,
    );
    c.eq(
        "savings",
        envoy.wait_counter("pag0.cache.savings_micros", wait, |v| v >= 2000),
        2000,
    );
    // The sidecar keeps the hit's record: GET /v1/analytics reports it with its savings.
    let p1 = || -> Value {
        let v: Value = http
            .get(sc.url("/v1/analytics?period=month&groupBy=project"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap_or(Value::Null);
        v["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["key"] == "p1"))
            .cloned()
            .unwrap_or(v)
    };
    let t0 = Instant::now();
    let mut g = p1();
    while g["savings"] != "2000" && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        g = p1();
    }
    c.eq("analytics p1: savings", g["savings"].as_str(), Some("2000"));
    c.eq("analytics p1: cacheHits", g["cacheHits"].as_u64(), Some(1));
    c.eq(
        "analytics p1: totalCost",
        g["totalCost"].as_str(),
        Some("4000"),
    );
    c.eq(
        "analytics p1: totalRequests (2 charged misses + 1 hit)",
        g["totalRequests"].as_u64(),
        Some(3),
    );
    c.finish(&envoy);
}
