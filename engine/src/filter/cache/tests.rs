//! The response cache in the request flow, against the fake host: hits answer locally at no
//! cost, pools keep non-sharing projects apart, and only complete 2xx non-streaming responses
//! under the cap are stored, within the configured memory bound.

use std::rc::Rc;

use crate::host::Action;
use chrono::{Duration, TimeZone, Utc};
use pag0_policy::validate::api_key_sha256_hex;
use pag0_policy::CompiledPolicy;
use serde_json::json;

use crate::cache::CacheConfig;
use crate::config::PolicySlot;
use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::root::Shared;
use crate::testing::{FakeHost, LocalReply};

const A_DAILY: &str = "pag0/b/project.daily/a/2026-11-24";

fn policy() -> CompiledPolicy {
    let project = |id: &str, cache: serde_json::Value| json!({ "id": id, "policy": { "dailyBudget": "10000000" }, "cache": cache });
    let client = |id: &str, p: &str| {
        json!({ "id": id, "projectId": p, "apiKeySha256": api_key_sha256_hex(id),
                "tags": { "costCenter": format!("CC-{p}") } })
    };
    // Without a cost centre of its own: `kb2` falls back to project b's, `ka2` has none.
    let untagged = |id: &str, p: &str| json!({ "id": id, "projectId": p, "apiKeySha256": api_key_sha256_hex(id) });
    let mut b = project(
        "b",
        json!({ "enabled": true, "sharedCache": true, "defaultTTL": 60 }),
    );
    b["tags"] = json!({ "costCenter": "Sales/EMEA.1" });
    CompiledPolicy::from_value(&json!({
        "orgId": "acme", "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [
            { "host": "api.openai.com", "category": "llm",
              "pricing": { "models": { "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" } },
                           "defaultModel": "gpt-4" } },
            { "host": "api.deepl.com", "category": "translation",
              "pricing": { "perRequest": "2000" }, "costHeader": "x-request-cost" }
        ],
        "projects": [
            project("a", json!({ "enabled": true, "sharedCache": true, "defaultTTL": 60 })),
            b,
            project("c", json!({ "enabled": true, "sharedCache": false, "defaultTTL": 60 })),
            project("d", json!({ "enabled": false })),
        ],
        "clients": [client("ka", "a"), client("kb", "b"), client("kc", "c"), client("kd", "d"),
                    untagged("ka2", "a"), untagged("kb2", "b")]
    }))
    .unwrap()
}

/// Every metric of the filter, then the cache's series of [`policy`], with ids in that order.
fn metrics() -> Metrics {
    metrics_with(|_| true)
}

/// [`metrics`] where `define` refuses the names `accept` rejects (their ids are still taken).
fn metrics_with(accept: impl Fn(&str) -> bool) -> Metrics {
    let next = std::cell::Cell::new(0u32);
    let define = |n: &str| {
        next.set(next.get() + 1);
        accept(n).then_some(next.get() - 1)
    };
    let m = Metrics::define_with(Rc::default(), define);
    m.attribute_with(&policy(), define);
    m
}

fn shared_with(cache: CacheConfig) -> Rc<Shared> {
    Rc::new(Shared {
        policy: PolicySlot::new(Some(Box::new(policy()))),
        policy_version: 0,
        keys: Default::default(),
        mode: crate::root::Mode::Standalone { slices: None },
        api_key_header: "x-pag0-api-key".into(),
        max_body_bytes: 1 << 20,
        metrics: Rc::new(metrics()),
        cache,
    })
}

fn shared() -> Rc<Shared> {
    shared_with(CacheConfig::default())
}

/// The root context's tick: what the filter counted reaches the host's metrics.
fn tick(host: &FakeHost, s: &Shared) {
    s.metrics.increments().flush(&host);
}

/// A metric as the host shows it (counters: what the ticks so far added).
fn metric(host: &FakeHost, name: &str) -> i64 {
    let names = std::cell::RefCell::new(Vec::new());
    let define = |n: &str| {
        names.borrow_mut().push(n.to_string());
        None
    };
    Metrics::define_with(Rc::default(), define).attribute_with(&policy(), define);
    let names = names.into_inner();
    let id = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    host.metrics
        .borrow()
        .get(&u32::try_from(id).unwrap())
        .copied()
        .unwrap_or(0)
}

fn host() -> FakeHost {
    FakeHost {
        now: Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
        ..FakeHost::default()
    }
}

/// What the upstream answers with.
struct Upstream<'a> {
    status: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: Vec<u8>,
    /// Send trailers (the response then never counts as complete for the cache).
    trailers: bool,
}

fn ok(body: &str) -> Upstream<'_> {
    Upstream {
        status: "200",
        headers: vec![
            ("content-type", "application/json"),
            ("x-request-cost", "1500"),
        ],
        body: body.as_bytes().to_vec(),
        trailers: false,
    }
}

#[derive(Debug)]
enum Outcome {
    /// Answered by pag0 (hit or refusal).
    Local(LocalReply),
    /// Reached the upstream; the response headers the agent got.
    Forwarded(Vec<(String, String)>),
}

impl Outcome {
    fn header(&self, name: &str) -> Option<String> {
        let hs = match self {
            Outcome::Local((_, h, _)) => h,
            Outcome::Forwarded(h) => h,
        };
        hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
    fn is_hit(&self) -> bool {
        matches!(self, Outcome::Local(_)) && self.header("x-pag0-cache").as_deref() == Some("hit")
    }
}

/// One request through the filter: `body` empty means a body-less request.
#[allow(clippy::too_many_arguments)]
fn call(
    host: &FakeHost,
    shared: &Rc<Shared>,
    key: &str,
    method: &str,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    up: &Upstream<'_>,
) -> Outcome {
    host.local_reply.replace(None);
    let mut h = vec![
        (":method".to_string(), method.to_string()),
        (":authority".to_string(), authority.to_string()),
        (":path".to_string(), path.to_string()),
        ("x-pag0-api-key".to_string(), key.to_string()),
    ];
    if !body.is_empty() {
        h.push(("content-length".into(), body.len().to_string()));
    }
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    *host.request_headers.borrow_mut() = h;
    *host.request_body.borrow_mut() = body.to_vec();
    let mut f = Filter::new(host, Some(shared.clone()));
    let mut action = f.on_http_request_headers(4, body.is_empty());
    if host.local_reply.borrow().is_none() && !body.is_empty() {
        action = f.on_http_request_body(body.len(), true);
    }
    if let Some(r) = host.local_reply.borrow_mut().take() {
        assert_eq!(action, Action::Pause);
        f.on_log();
        return Outcome::Local(r);
    }
    assert_eq!(action, Action::Continue, "forwarded");
    let mut rh = vec![(":status".to_string(), up.status.to_string())];
    rh.extend(
        up.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    *host.response_headers.borrow_mut() = rh;
    f.on_http_response_headers(2, false);
    // Two chunks, as the host would deliver a larger body.
    let (first, second) = up.body.split_at(up.body.len() / 2);
    *host.response_chunk.borrow_mut() = first.to_vec();
    f.on_http_response_body(first.len(), false);
    *host.response_chunk.borrow_mut() = second.to_vec();
    f.on_http_response_body(second.len(), !up.trailers);
    if up.trailers {
        f.on_http_response_trailers(0);
    }
    f.on_log();
    Outcome::Forwarded(host.response_headers.borrow().clone())
}

fn chat(content: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "model": "gpt-4", "max_tokens": 10,
                                "messages": [{ "role": "user", "content": content }] }))
    .unwrap()
}

fn post_chat(host: &FakeHost, s: &Rc<Shared>, key: &str, content: &str) -> Outcome {
    let up = ok(r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#);
    call(
        host,
        s,
        key,
        "POST",
        "api.openai.com",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        &chat(content),
        &up,
    )
}

/// 10 prompt tokens × 30000/1k + 5 completion × 60000/1k.
const CHAT_COST: i64 = 600;

#[test]
fn second_identical_call_is_a_local_hit_at_no_cost_with_savings() {
    let host = host();
    let s = shared();
    let first = post_chat(&host, &s, "ka", "hello");
    assert!(matches!(first, Outcome::Forwarded(_)));
    assert_eq!(first.header("x-pag0-cache").as_deref(), Some("miss"));
    let spent = host.store.value(A_DAILY);
    assert_eq!(spent, 600, "the miss is charged its actual cost");

    let second = post_chat(&host, &s, "ka", "hello");
    let Outcome::Local((status, headers, body)) = &second else {
        panic!("a hit is answered locally: {second:?}");
    };
    assert_eq!(*status, 200);
    assert_eq!(
        body,
        r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#
    );
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("x-pag0-cache"), Some("hit"));
    assert_eq!(h("x-pag0-decision"), Some("allow"));
    assert_eq!(h("x-pag0-project"), Some("a"));
    assert_eq!(h("x-pag0-estimated-cost"), Some("0"));
    assert_eq!(h("content-type"), Some("application/json"));
    assert_eq!(host.store.value(A_DAILY), spent, "a hit charges nothing");
    tick(&host, &s);
    assert_eq!(metric(&host, "pag0.cache.hits"), 1);
    assert_eq!(metric(&host, "pag0.cache.misses"), 1);
    assert_eq!(metric(&host, "pag0.cache.savings_micros"), CHAT_COST);
    assert_eq!(metric(&host, "pag0.requests.allowed"), 2);
    assert_eq!(metric(&host, "pag0.cost.settled_micros"), CHAT_COST);
}

/// `(hits, savings_micros)` of one per-project or per-cost-centre series.
fn series(host: &FakeHost, kind: &str, id: &str) -> (i64, i64) {
    let prefix = format!("pag0.cache.{kind}.{id}");
    (
        metric(host, &format!("{prefix}.hits")),
        metric(host, &format!("{prefix}.savings_micros")),
    )
}

#[test]
fn a_hit_credits_the_requesting_project_and_cost_centre() {
    let host = host();
    let s = shared();
    // a stores the entry (a miss: no savings anywhere); b shares a's pool.
    assert!(!post_chat(&host, &s, "ka", "q").is_hit());
    tick(&host, &s);
    assert_eq!(series(&host, "project", "a"), (0, 0));
    assert_eq!(series(&host, "cost_center", "CC-a"), (0, 0));

    assert!(post_chat(&host, &s, "kb", "q").is_hit());
    tick(&host, &s);
    assert_eq!(series(&host, "project", "b"), (1, CHAT_COST));
    assert_eq!(series(&host, "cost_center", "CC-b"), (1, CHAT_COST));
    assert_eq!(
        series(&host, "project", "a"),
        (0, 0),
        "the storing project saved nothing"
    );
    assert_eq!(series(&host, "cost_center", "CC-a"), (0, 0));
    assert_eq!(series(&host, "project", "c"), (0, 0));
    assert_eq!(series(&host, "cost_center", "Sales_EMEA_1"), (0, 0));

    // kb2 has no tag: its project's cost centre (`Sales/EMEA.1`, one stats segment).
    assert!(post_chat(&host, &s, "kb2", "q").is_hit());
    tick(&host, &s);
    assert_eq!(series(&host, "project", "b"), (2, 2 * CHAT_COST));
    assert_eq!(series(&host, "cost_center", "Sales_EMEA_1"), (1, CHAT_COST));
    assert_eq!(
        series(&host, "cost_center", "CC-b"),
        (1, CHAT_COST),
        "not kb2's"
    );

    // ka2: neither it nor project a has a cost centre; the project still counts.
    assert!(post_chat(&host, &s, "ka2", "q").is_hit());
    tick(&host, &s);
    assert_eq!(series(&host, "project", "a"), (1, CHAT_COST));
    assert_eq!(series(&host, "cost_center", "CC-a"), (0, 0));

    assert_eq!(metric(&host, "pag0.cache.hits"), 3);
    assert_eq!(metric(&host, "pag0.cache.savings_micros"), 3 * CHAT_COST);
}

#[test]
fn only_cache_enabled_projects_and_their_cost_centres_get_series() {
    let names = std::cell::RefCell::new(Vec::new());
    Metrics::none().attribute_with(&policy(), |n: &str| {
        names.borrow_mut().push(n.to_string());
        None
    });
    let mut names = names.into_inner();
    names.sort();
    let want: Vec<String> = [
        "cost_center.CC-a",
        "cost_center.CC-b",
        "cost_center.CC-c",
        "cost_center.Sales_EMEA_1",
        "project.a",
        "project.b",
        "project.c",
    ]
    .iter()
    .flat_map(|s| ["hits", "savings_micros"].map(|m| format!("pag0.cache.{s}.{m}")))
    .collect();
    assert_eq!(names, want, "no series for d (cache off) nor its CC-d");
}

#[test]
fn a_refused_series_is_skipped_and_the_hit_still_served_and_counted() {
    let host = host();
    let mut s = shared();
    Rc::get_mut(&mut s).unwrap().metrics =
        Rc::new(metrics_with(|n| !n.starts_with("pag0.cache.project.b.")));
    assert!(!post_chat(&host, &s, "ka", "r").is_hit());
    assert!(post_chat(&host, &s, "kb", "r").is_hit());
    tick(&host, &s);
    assert_eq!(
        series(&host, "project", "b"),
        (0, 0),
        "never defined: not counted"
    );
    assert_eq!(series(&host, "cost_center", "CC-b"), (1, CHAT_COST));
    assert_eq!(metric(&host, "pag0.cache.hits"), 1);
}

#[test]
fn pools_shared_projects_hit_each_other_a_private_project_never() {
    let host = host();
    let s = shared();
    assert!(!post_chat(&host, &s, "ka", "q").is_hit());
    assert!(
        post_chat(&host, &s, "kb", "q").is_hit(),
        "b shares a's pool"
    );
    let c = post_chat(&host, &s, "kc", "q");
    assert!(!c.is_hit(), "c (no sharedCache) never hits a's entry");
    assert!(post_chat(&host, &s, "kc", "q").is_hit(), "c hits its own");
    // And a's pool never sees c-only entries.
    assert!(!post_chat(&host, &s, "kc", "only-c").is_hit());
    assert!(!post_chat(&host, &s, "ka", "only-c").is_hit());
    // A project without the cache never hits nor gets the header.
    let d = post_chat(&host, &s, "kd", "q");
    assert!(matches!(d, Outcome::Forwarded(_)));
    assert_eq!(d.header("x-pag0-cache"), None);
}

#[test]
fn the_decision_runs_before_the_lookup() {
    let host = host();
    let s = shared();
    assert!(!post_chat(&host, &s, "ka", "q").is_hit());
    let r = post_chat(&host, &s, "nobody", "q");
    let Outcome::Local((status, _, _)) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(
        *status, 401,
        "an unknown key is refused, not served from the cache"
    );
    assert_eq!(r.header("x-pag0-decision").as_deref(), Some("deny"));
}

#[test]
fn changed_body_query_or_vary_header_misses() {
    let host = host();
    let s = shared();
    assert!(!post_chat(&host, &s, "ka", "one").is_hit());
    assert!(!post_chat(&host, &s, "ka", "two").is_hit(), "another body");
    assert!(post_chat(&host, &s, "ka", "one").is_hit());
    let up = ok("{}");
    let get = |path: &str, extra: &[(&str, &str)]| {
        call(
            &host,
            &s,
            "ka",
            "GET",
            "api.deepl.com",
            path,
            extra,
            b"",
            &up,
        )
    };
    assert!(!get("/v2/usage?x=1", &[]).is_hit());
    assert!(get("/v2/usage?x=1", &[]).is_hit(), "GET without a body");
    assert!(!get("/v2/usage?x=2", &[]).is_hit(), "another query");
    assert!(!get("/v2/usage?x=1", &[("authorization", "Bearer other")]).is_hit());
    assert!(!get("/v2/usage?x=1", &[("accept-language", "de")]).is_hit());
}

#[test]
fn an_entry_past_its_ttl_misses() {
    let mut host = host();
    let s = shared();
    assert!(!post_chat(&host, &s, "ka", "t").is_hit());
    host.now += Duration::seconds(59);
    assert!(post_chat(&host, &s, "ka", "t").is_hit());
    host.now += Duration::seconds(1);
    assert!(
        !post_chat(&host, &s, "ka", "t").is_hit(),
        "TTL 60 s is over"
    );
    assert!(post_chat(&host, &s, "ka", "t").is_hit(), "stored again");
}

#[test]
fn response_max_age_shortens_the_ttl() {
    let mut host = host();
    let s = shared();
    let mut up = ok("{}");
    up.headers.push(("cache-control", "public, max-age=5"));
    let get = |host: &FakeHost| {
        call(
            host,
            &s,
            "ka",
            "GET",
            "api.deepl.com",
            "/v2/x",
            &[],
            b"",
            &up,
        )
    };
    assert!(!get(&host).is_hit());
    host.now += Duration::seconds(4);
    assert!(get(&host).is_hit());
    host.now += Duration::seconds(1);
    assert!(!get(&host).is_hit());
}

fn get_with(
    host: &FakeHost,
    s: &Rc<Shared>,
    path: &str,
    req: &[(&str, &str)],
    up: &Upstream<'_>,
) -> Outcome {
    call(host, s, "ka", "GET", "api.deepl.com", path, req, b"", up)
}

#[test]
fn only_complete_2xx_non_streaming_storable_responses_are_stored() {
    let host = host();
    let s = shared();
    let twice = |path: &str, req: &[(&str, &str)], up: &Upstream<'_>| {
        let first = get_with(&host, &s, path, req, up);
        assert_eq!(
            first.header("x-pag0-cache").as_deref(),
            Some("miss"),
            "{path}"
        );
        get_with(&host, &s, path, req, up).is_hit()
    };
    assert!(twice("/ok", &[], &ok("{}")), "the control case is stored");
    let mut e = ok("{}");
    e.status = "500";
    assert!(!twice("/500", &[], &e), "5xx");
    e.status = "404";
    assert!(!twice("/404", &[], &e), "4xx");
    let mut sse = ok("data: {}\n\n");
    sse.headers = vec![("content-type", "text/event-stream")];
    assert!(!twice("/sse", &[], &sse), "SSE");
    for cc in ["no-store", "no-cache", "private, max-age=60"] {
        let mut u = ok("{}");
        u.headers.push(("cache-control", cc));
        assert!(!twice(&format!("/cc/{cc}"), &[], &u), "response {cc}");
    }
    let mut cookie = ok("{}");
    cookie.headers.push(("set-cookie", "a=b"));
    assert!(!twice("/cookie", &[], &cookie));
    let mut trailers = ok("{}");
    trailers.trailers = true;
    assert!(
        !twice("/trailers", &[], &trailers),
        "not seen to end normally"
    );
    assert!(!twice(
        "/rq-no-store",
        &[("cache-control", "no-store")],
        &ok("{}")
    ));
    // A request's no-cache skips the lookup but refreshes the entry.
    assert!(twice("/fresh", &[], &ok("{}")));
    let r = get_with(
        &host,
        &s,
        "/fresh",
        &[("cache-control", "no-cache")],
        &ok("{}"),
    );
    assert!(matches!(r, Outcome::Forwarded(_)), "no-cache goes upstream");
    // A streaming chat request (stream: true) is never stored even if it looks like JSON.
    let body = serde_json::to_vec(&json!({ "model": "gpt-4", "max_tokens": 10, "stream": true,
                                           "messages": [] }))
    .unwrap();
    for _ in 0..2 {
        let r = call(
            &host,
            &s,
            "ka",
            "POST",
            "api.openai.com",
            "/v1/chat/completions",
            &[],
            &body,
            &ok("{}"),
        );
        assert!(
            matches!(r, Outcome::Forwarded(_)),
            "stream: true never hits"
        );
    }
}

#[test]
fn large_responses_are_not_stored_and_memory_stays_bounded() {
    let host = host();
    let cfg = CacheConfig {
        max_bytes: 64 * 1024,
        max_entry_bytes: 4 * 1024,
    };
    let s = shared_with(cfg);
    let x = "x".repeat(5000);
    let big = ok(&x);
    assert!(!get_with(&host, &s, "/big", &[], &big).is_hit());
    assert!(
        !get_with(&host, &s, "/big", &[], &big).is_hit(),
        "over maxEntryBytes"
    );

    // 10× the bound in distinct responses of ~3.5 KiB.
    let body = "y".repeat(3500);
    let n = 10 * cfg.max_bytes / 3500;
    for i in 0..n {
        get_with(&host, &s, &format!("/fill/{i}"), &[], &ok(&body));
    }
    let map = host.store.map.lock().unwrap();
    let entries: Vec<_> = map
        .0
        .iter()
        .filter(|(k, _)| k.starts_with("pag0/c/"))
        .collect();
    let total: usize = entries.iter().map(|(_, (v, _))| v.len()).sum();
    assert!(entries.len() <= 16, "{} keys", entries.len());
    assert!(total <= cfg.max_bytes, "{total} bytes held");
    assert!(entries
        .iter()
        .all(|(_, (v, _))| v.len() <= cfg.max_entry_bytes));
    drop(map);
    assert_eq!(
        metric(&host, "pag0.cache.bytes"),
        i64::try_from(total).unwrap(),
        "the gauge tracks the bytes held"
    );
    // The most recent response is still served.
    assert!(get_with(&host, &s, &format!("/fill/{}", n - 1), &[], &ok(&body)).is_hit());
}

#[test]
fn a_hit_in_managed_mode_is_reported_with_its_savings() {
    let host = host();
    let base = shared();
    let s = Rc::new(Shared {
        policy: PolicySlot::new(Some(Box::new(policy()))),
        policy_version: 1,
        keys: Default::default(),
        mode: crate::root::Mode::Managed {
            sidecar: crate::config::SidecarConfig {
                cluster: "pag0_sidecar".into(),
                authority: "pag0-sidecar".into(),
                sync_interval_ms: 1000,
                timeout_ms: 200,
                failure_mode: crate::config::FailureMode::Open,
                sync_secret: None,
                decision_queue_max: crate::managed::decisions::DEFAULT_QUEUE_MAX,
            },
            usage: Some(Rc::new(crate::managed::UsageBuffer::new())),
            decisions: Some(Rc::new(crate::managed::DecisionBuffer::new())),
        },
        api_key_header: base.api_key_header.clone(),
        max_body_bytes: base.max_body_bytes,
        metrics: base.metrics.clone(),
        cache: base.cache,
    });
    // Store an entry as a standalone miss would (same shared data, same pool).
    assert!(!post_chat(&host, &base, "ka", "m").is_hit());
    let hit = post_chat(&host, &s, "ka", "m");
    assert!(hit.is_hit(), "{hit:?}");
    let usage = s.usage().unwrap();
    assert_eq!(usage.len(), 1, "the hit's record waits for the tick");
    usage.flush(&&host).unwrap();
    let b = crate::managed::batches(&&host).unwrap();
    let rec = b.unsent.last().expect("a usage record for the hit");
    assert!(rec.cache_hit);
    assert_eq!(rec.amount, pag0_policy::Micros::ZERO);
    assert!(rec.counters.is_empty());
    assert_eq!(rec.savings, Some(pag0_policy::Micros::new(600)));
    assert_eq!(rec.client_id.as_deref(), Some("ka"));
    let wire = serde_json::to_value(rec).unwrap();
    assert_eq!(wire["cacheHit"], json!(true));
    assert_eq!(wire["savings"], json!("600"));
}
