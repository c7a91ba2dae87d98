//! The request lifecycle against a fake host: what reaches the upstream, what the agent gets
//! back, and what the counters and metrics say afterwards.

use std::rc::Rc;

use crate::host::Action;
use chrono::{TimeZone, Utc};
use pag0_policy::validate::api_key_sha256_hex;
use pag0_policy::CompiledPolicy;
use serde_json::json;

use super::*;
use crate::config::PolicySlot;
use crate::metrics::Metrics;
use crate::testing::FakeHost;

const PROJECT_DAILY: &str = "pag0/b/project.daily/sales-ai/2026-11-24";
const ORG_MONTHLY: &str = "pag0/b/org.monthly/2026-11";

/// Metric names in definition order: the id of a name is its index.
fn metric_names() -> Vec<String> {
    let mut names = Vec::new();
    Metrics::define_with(Rc::default(), |n| {
        names.push(n.to_string());
        None
    });
    names
}

fn shared(project_daily: &str) -> Rc<Shared> {
    let doc = json!({
        "orgId": "acme-corp",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [
            { "host": "api.openai.com", "category": "llm",
              "pricing": { "models": { "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" } },
                           "defaultModel": "gpt-4" } },
            { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
            { "host": "api.salesforce.com", "category": "data-analysis",
              "pricing": { "perRequest": "1000" }, "costHeader": "x-request-cost" }
        ],
        "projects": [{ "id": "sales-ai", "name": "Sales AI",
                       "policy": { "dailyBudget": project_daily } }],
        "clients": [{ "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": api_key_sha256_hex("k1") }]
    });
    let mut next = 0;
    Rc::new(Shared {
        policy: PolicySlot::new(Some(Box::new(CompiledPolicy::from_value(&doc).unwrap()))),
        policy_version: 0,
        keys: Default::default(),
        mode: crate::root::Mode::Standalone { slices: None },
        api_key_header: "x-pag0-api-key".into(),
        max_body_bytes: 4096,
        cache: crate::cache::CacheConfig::default(),
        metrics: Rc::new(Metrics::define_with(Rc::default(), |_| {
            next += 1;
            Some(next - 1)
        })),
    })
}

fn host() -> FakeHost {
    FakeHost {
        now: Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
        ..FakeHost::default()
    }
}

fn request(host: &FakeHost, authority: &str, extra: &[(&str, &str)]) {
    let mut h = vec![
        (":method".to_string(), "POST".to_string()),
        (":authority".to_string(), authority.to_string()),
        (":path".to_string(), "/v1/x".to_string()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    *host.request_headers.borrow_mut() = h;
}

fn respond(host: &FakeHost, status: &str, extra: &[(&str, &str)]) {
    let mut h = vec![(":status".to_string(), status.to_string())];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    *host.response_headers.borrow_mut() = h;
}

/// The root context's tick: what the filter counted reaches the host's metrics.
fn tick(host: &FakeHost, f: &Filter<&FakeHost>) {
    let s = f.shared.as_ref().expect("a configured filter");
    s.metrics.increments().flush(&host);
}

/// A metric as the host shows it (counters: what the ticks so far added).
fn metric(host: &FakeHost, name: &str) -> i64 {
    let id = metric_names().iter().position(|n| n == name).unwrap();
    host.metrics
        .borrow()
        .get(&u32::try_from(id).unwrap())
        .copied()
        .unwrap_or(0)
}

fn reply(host: &FakeHost) -> (u32, Vec<(String, String)>, serde_json::Value) {
    let (status, headers, body) = host.local_reply.borrow().clone().expect("a local reply");
    (status, headers, serde_json::from_str(&body).unwrap())
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[test]
fn allowed_request_is_stripped_reserved_tagged_and_settled_once() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(
        &host,
        "api.salesforce.com",
        &[
            ("x-pag0-api-key", "k1"),
            ("x-pag0-justification", "quarterly report"),
            ("X-Pag0-Project", "someone-elses"),
            ("x-pag0-approval-id", "a1"),
            ("accept", "*/*"),
        ],
    );
    assert_eq!(f.on_http_request_headers(5, true), Action::Continue);
    let names: Vec<String> = host
        .request_headers
        .borrow()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        names,
        [":method", ":authority", ":path", "accept"],
        "every x-pag0-* removed"
    );
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        1000,
        "estimate reserved before forwarding"
    );
    assert_eq!(host.store.value(ORG_MONTHLY), 1000);

    respond(
        &host,
        "200",
        &[
            ("x-request-cost", "700"),
            ("x-pag0-code", "FORGED"),
            ("x-pag0-cache", "hit"),
            ("x-pag0-approval-id", "forged"),
            ("x-pag0-decision", "deny"),
        ],
    );
    assert_eq!(f.on_http_response_headers(3, false), Action::Continue);
    let resp = host.response_headers.borrow().clone();
    assert_eq!(header(&resp, "x-pag0-decision").as_deref(), Some("allow"));
    assert_eq!(header(&resp, "x-pag0-project").as_deref(), Some("sales-ai"));
    assert_eq!(
        header(&resp, "x-pag0-estimated-cost").as_deref(),
        Some("1000")
    );
    assert_eq!(
        header(&resp, "x-pag0-code"),
        None,
        "the upstream cannot forge pag0 headers"
    );
    for name in ["x-pag0-cache", "x-pag0-approval-id"] {
        assert_eq!(
            header(&resp, name),
            None,
            "{name} from the upstream removed"
        );
    }
    assert_eq!(
        resp.iter().filter(|(k, _)| k == "x-pag0-decision").count(),
        1,
        "the upstream's x-pag0-decision replaced, not doubled"
    );

    *host.response_chunk.borrow_mut() = b"{}".to_vec();
    assert_eq!(f.on_http_response_body(2, true), Action::Continue);
    f.on_log();
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        700,
        "cost header replaced the reservation, once"
    );
    assert_eq!(host.store.value(ORG_MONTHLY), 700);
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.requests.allowed"), 1);
    assert_eq!(metric(&host, "pag0.cost.reserved_micros"), 1000);
    assert_eq!(metric(&host, "pag0.cost.settled_micros"), 700);
    assert_eq!(metric(&host, "pag0.cost.released_micros"), 300);
    assert!(host.local_reply.borrow().is_none());
}

#[test]
fn a_flat_priced_response_body_is_never_copied_out_of_the_host() {
    // api.deepl.com is priced per request: a `usage` report in its body cannot change the
    // cost, so the body is neither copied nor parsed and the estimate is charged.
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(4, true), Action::Continue);
    respond(&host, "200", &[("content-type", "application/json")]);
    assert_eq!(f.on_http_response_headers(2, false), Action::Continue);
    *host.response_chunk.borrow_mut() =
        br#"{"usage":{"prompt_tokens":100000,"completion_tokens":100000}}"#.to_vec();
    assert_eq!(f.on_http_response_body(60, false), Action::Continue);
    assert_eq!(f.on_http_response_body(60, true), Action::Continue);
    assert_eq!(host.response_body_reads.get(), 0);
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        2000,
        "the per-request price"
    );
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.cost.settled_micros"), 2000);

    // The per-token endpoint still reads its body (the usage report prices it).
    let host2 = self::host();
    let mut f = Filter::new(&host2, Some(shared("500000")));
    request(&host2, "api.openai.com", &[("x-pag0-api-key", "k1")]);
    *host2.request_body.borrow_mut() = br#"{"model":"gpt-4","max_tokens":10}"#.to_vec();
    assert_eq!(f.on_http_request_headers(4, false), Action::Continue);
    assert_eq!(f.on_http_request_body(34, true), Action::Continue);
    respond(&host2, "200", &[("content-type", "application/json")]);
    assert_eq!(f.on_http_response_headers(2, false), Action::Continue);
    // (Within the request's bound, 10 × its 870 estimate: a larger report would be suspect.)
    *host2.response_chunk.borrow_mut() = br#"{"usage":{"prompt_tokens":200}}"#.to_vec();
    assert_eq!(f.on_http_response_body(32, true), Action::Continue);
    assert_eq!(host2.response_body_reads.get(), 1);
    assert_eq!(host2.store.value(PROJECT_DAILY), 6_000, "priced from usage");
}

#[test]
fn refusal_is_a_json_local_reply_with_pag0_headers() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(
        &host,
        "api.deepl.com",
        &[("x-pag0-justification", "no key")],
    );
    assert_eq!(f.on_http_request_headers(4, true), Action::Pause);
    let (status, headers, body) = reply(&host);
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(header(&headers, "x-pag0-decision").as_deref(), Some("deny"));
    assert_eq!(
        header(&headers, "x-pag0-code").as_deref(),
        Some("MISSING_API_KEY")
    );
    assert_eq!(body["error"]["code"], "MISSING_API_KEY");
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.requests.denied.MISSING_API_KEY"), 1);
    // Our own local reply passes the response callbacks: nothing to settle or tag.
    respond(&host, "401", &[]);
    f.on_http_response_headers(1, true);
    f.on_log();
    assert_eq!(
        header(&host.response_headers.borrow(), "x-pag0-decision"),
        None
    );
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.requests.allowed"), 0);
}

#[test]
fn per_token_request_buffers_the_body_then_settles_on_usage() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(
        &host,
        "api.openai.com",
        &[("x-pag0-api-key", "k1"), ("accept-encoding", "gzip")],
    );
    // Headers continue (Envoy would never call the body callback after a paused header
    // callback); the body is held instead.
    assert_eq!(f.on_http_request_headers(5, false), Action::Continue);
    assert_eq!(
        host.request_headers
            .borrow()
            .iter()
            .find(|(k, _)| k == "accept-encoding"),
        None,
        "usage must be readable in the response"
    );
    let body = br#"{"model":"gpt-4","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    host.request_body
        .borrow_mut()
        .extend_from_slice(&body[..20]);
    assert_eq!(f.on_http_request_body(20, false), Action::Pause);
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        0,
        "nothing reserved before the body is priced"
    );
    host.request_body
        .borrow_mut()
        .extend_from_slice(&body[20..]);
    assert_eq!(f.on_http_request_body(body.len(), true), Action::Continue);
    let estimate = host.store.value(PROJECT_DAILY);
    assert!(
        estimate >= 6000,
        "100 output tokens at 60000/1k alone cost 6000, got {estimate}"
    );

    respond(&host, "200", &[("content-type", "text/event-stream")]);
    f.on_http_response_headers(2, false);
    for chunk in [
        &b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"[..],
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":10}}\n\n",
        b"data: [DONE]\n\n",
    ] {
        *host.response_chunk.borrow_mut() = chunk.to_vec();
        assert_eq!(
            f.on_http_response_body(chunk.len(), false),
            Action::Continue,
            "never held back"
        );
    }
    *host.response_chunk.borrow_mut() = Vec::new();
    f.on_http_response_body(0, true);
    // 1000 × 30000/1k + 10 × 60000/1k
    assert_eq!(host.store.value(PROJECT_DAILY), 30_600);
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.cost.settled_micros"), 30_600);
}

#[test]
fn a_body_over_max_body_bytes_is_refused_with_413() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.openai.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(4, false), Action::Continue);
    *host.request_body.borrow_mut() = vec![b' '; 4097];
    assert_eq!(f.on_http_request_body(4097, false), Action::Pause);
    let (status, headers, body) = reply(&host);
    assert_eq!(
        (status, header(&headers, "x-pag0-code").as_deref()),
        (413, Some("BODY_TOO_LARGE"))
    );
    assert_eq!(body["error"]["projectId"], "sales-ai");
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
    f.on_log();
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.requests.denied.BODY_TOO_LARGE"), 1);
}

#[test]
fn budget_refusal_names_the_scope_and_numbers() {
    let host = host();
    // Room for two deepl requests (2000 each).
    let shared = shared("4000");
    for _ in 0..2 {
        request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
        assert_eq!(
            Filter::new(&host, Some(shared.clone())).on_http_request_headers(4, true),
            Action::Continue
        );
    }
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(
        Filter::new(&host, Some(shared)).on_http_request_headers(4, true),
        Action::Pause
    );
    let (status, _, body) = reply(&host);
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "BUDGET_EXCEEDED");
    assert_eq!(body["error"]["scope"], "project.daily");
    assert_eq!(host.store.value(PROJECT_DAILY), 4000);
    assert_eq!(
        host.store.value(ORG_MONTHLY),
        4000,
        "nothing of the refused request stays reserved"
    );
}

#[test]
fn losing_the_room_between_decision_and_reservation_is_a_budget_refusal() {
    // The policy saw room; another worker takes it before our CAS lands.
    let mut host = host();
    host.store.steal_amount = 3_500;
    host.store.steal_key = Some(PROJECT_DAILY);
    let shared = shared("4000");
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    Filter::new(&host, Some(shared.clone())).on_http_request_headers(4, true);
    host.store
        .steal
        .store(1, std::sync::atomic::Ordering::SeqCst);
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(
        Filter::new(&host, Some(shared)).on_http_request_headers(4, true),
        Action::Pause
    );
    let (status, _, body) = reply(&host);
    assert_eq!(status, 402);
    assert_eq!(body["error"]["scope"], "project.daily", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("project sales-ai daily budget: 4000 limit"),
        "{body}"
    );
    assert_eq!(
        host.store.value(ORG_MONTHLY),
        2000,
        "the org reservation was rolled back"
    );
}

#[test]
fn no_response_at_all_releases_the_reservation_in_on_log() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    f.on_http_request_headers(4, true);
    assert_eq!(host.store.value(PROJECT_DAILY), 2000);
    f.on_log(); // upstream reset / client gone before any response
    f.on_log();
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.cost.released_micros"), 2000);
    assert_eq!(metric(&host, "pag0.cost.settled_micros"), 0);
}

#[test]
fn upstream_error_costs_nothing_and_trailers_settle() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    f.on_http_request_headers(4, true);
    respond(&host, "503", &[]);
    f.on_http_response_headers(1, false);
    f.on_http_response_trailers(0);
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
    f.on_log();
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
}

#[test]
fn an_approval_request_is_refused_in_standalone_mode() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(
        &host,
        "api.deepl.com",
        &[
            ("x-pag0-api-key", "k1"),
            ("x-pag0-requires-approval", "true"),
        ],
    );
    assert_eq!(f.on_http_request_headers(4, true), Action::Pause);
    let (status, headers, _) = reply(&host);
    assert_eq!(
        (status, header(&headers, "x-pag0-code").as_deref()),
        (403, Some("APPROVAL_REQUIRED"))
    );
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
}

#[test]
fn without_configuration_every_request_is_refused() {
    let host = host();
    let mut f = Filter::new(&host, None);
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(4, true), Action::Pause);
    let (status, headers, _) = reply(&host);
    assert_eq!(
        (status, header(&headers, "x-pag0-code").as_deref()),
        (503, Some("CONTROL_PLANE_UNAVAILABLE"))
    );
    assert!(host
        .request_headers
        .borrow()
        .iter()
        .all(|(k, _)| !k.starts_with("x-pag0-")));
}

#[test]
fn an_upstream_answer_before_the_priced_body_is_replaced_by_a_refusal() {
    // Without a buffer filter after pag0 the headers reach the upstream before the body is
    // priced; an upstream that answers early must not hand the agent an unpriced response.
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.openai.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(4, false), Action::Continue);
    respond(&host, "200", &[("content-type", "application/json")]);
    assert_eq!(f.on_http_response_headers(2, false), Action::Pause);
    let (status, headers, _) = reply(&host);
    assert_eq!(
        (status, header(&headers, "x-pag0-code").as_deref()),
        (400, Some("BAD_REQUEST_BODY"))
    );
    // The rest of the request body no longer decides anything.
    *host.request_body.borrow_mut() = b"{\"model\":\"gpt-4\"}".to_vec();
    assert_eq!(f.on_http_request_body(17, true), Action::Continue);
    f.on_log();
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.requests.allowed"), 0);
}

#[test]
fn a_request_with_trailers_is_decided_on_the_trailers() {
    let host = host();
    let mut f = Filter::new(&host, Some(shared("500000")));
    request(&host, "api.openai.com", &[("x-pag0-api-key", "k1")]);
    assert_eq!(f.on_http_request_headers(4, false), Action::Continue);
    let body = br#"{"model":"gpt-4","max_tokens":10,"messages":[]}"#;
    *host.request_body.borrow_mut() = body.to_vec();
    assert_eq!(f.on_http_request_body(body.len(), false), Action::Pause);
    assert_eq!(f.on_http_request_trailers(1), Action::Continue);
    assert!(
        host.store.value(PROJECT_DAILY) >= 600,
        "10 output tokens at 60000/1k"
    );
    assert!(host.local_reply.borrow().is_none());
}

// === managed mode ===

fn managed(mode: crate::config::FailureMode) -> Rc<Shared> {
    let s = shared("10000");
    Rc::new(Shared {
        policy: PolicySlot::new(s.policy.as_ref().map(|p| {
            Box::new(
                CompiledPolicy::from_value(&serde_json::to_value(p.document()).unwrap()).unwrap(),
            )
        })),
        policy_version: 1,
        keys: Default::default(),
        mode: crate::root::Mode::Managed {
            sidecar: crate::config::SidecarConfig {
                cluster: "pag0_sidecar".into(),
                authority: "pag0-sidecar".into(),
                sync_interval_ms: 1000,
                timeout_ms: 200,
                failure_mode: mode,
                sync_secret: None,
                decision_queue_max: crate::managed::decisions::DEFAULT_QUEUE_MAX,
            },
            usage: Some(Rc::new(crate::managed::UsageBuffer::new())),
            decisions: Some(Rc::new(crate::managed::DecisionBuffer::new())),
        },
        api_key_header: s.api_key_header.clone(),
        max_body_bytes: s.max_body_bytes,
        cache: s.cache,
        metrics: s.metrics.clone(),
    })
}

/// Leases as an answer would leave them: `granted` on each counter, valid until `until_ms`.
/// The shared batch state once the workers' waiting usage records are appended, as the root
/// context's tick does before it syncs; nothing is appended before that.
fn flushed(host: &FakeHost, workers: &[&Rc<Shared>]) -> crate::managed::Batches {
    let before = crate::managed::batches(&host).unwrap().unsent.len();
    for w in workers {
        let usage = w.usage().expect("a managed worker buffers its usage");
        usage.flush(&host).unwrap();
        assert!(usage.is_empty());
    }
    let b = crate::managed::batches(&host).unwrap();
    assert!(b.unsent.len() > before, "the records waited for the tick");
    b
}

fn lease_all(host: &FakeHost, granted: u64, until_ms: u64) {
    lease_all_fleet(host, granted, until_ms, 0, 0);
}

/// With the fleet's `spent` and `limit` of the last answer (0, 0: not known).
fn lease_all_fleet(host: &FakeHost, granted: u64, until_ms: u64, spent: u64, limit: u64) {
    use crate::counters::SharedStore;
    for c in ["org.monthly/2026-11", "project.daily/sales-ai/2026-11-24"] {
        let l = crate::managed::Lease {
            granted,
            valid_until_ms: until_ms,
            want: granted,
            spent,
            limit,
        };
        host.store
            .set(
                &crate::managed::lease_key(c),
                &serde_json::to_vec(&l).unwrap(),
                None,
            )
            .unwrap();
    }
}

fn now_ms(host: &FakeHost) -> u64 {
    u64::try_from(host.now.timestamp_millis()).unwrap()
}

/// A deepl call that stops at the request headers (held, refused or forwarded).
fn deepl_held<'a>(host: &'a FakeHost, shared: &Rc<Shared>) -> (Action, Filter<&'a FakeHost>) {
    *host.local_reply.borrow_mut() = None;
    request(host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    let mut f = Filter::new(host, Some(shared.clone()));
    let a = f.on_http_request_headers(4, true);
    (a, f)
}

fn answer(host: &FakeHost, status: &str, body: serde_json::Value) {
    *host.call_response_headers.borrow_mut() = vec![(":status".into(), status.into())];
    *host.call_response_body.borrow_mut() = body.to_string().into_bytes();
}

/// Envoy calls back with the answer set by [`answer`].
fn deliver(f: &mut Filter<&FakeHost>, host: &FakeHost, token: u32) {
    let len = host.call_response_body.borrow().len();
    f.on_http_call_response(token, 1, len, 0);
}

fn deepl(host: &FakeHost, shared: &Rc<Shared>) -> Action {
    *host.local_reply.borrow_mut() = None;
    request(host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
    let mut f = Filter::new(host, Some(shared.clone()));
    let a = f.on_http_request_headers(4, true);
    if a == Action::Continue {
        respond(host, "200", &[]);
        f.on_http_response_headers(1, true);
    }
    a
}

#[test]
fn managed_without_a_policy_yet_is_control_plane_unavailable() {
    let host = host();
    let mut s = managed(crate::config::FailureMode::Closed);
    Rc::get_mut(&mut s).unwrap().policy = PolicySlot::new(None);
    assert_eq!(deepl(&host, &s), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "CONTROL_PLANE_UNAVAILABLE");
}

#[test]
fn managed_admission_is_against_the_lease_and_names_the_scope() {
    let host = host();
    let s = managed(crate::config::FailureMode::Closed);
    // No lease yet, closed: held while the sidecar is asked for room; no answer in time: 503.
    let (a, mut f) = deepl_held(&host, &s);
    assert_eq!(a, Action::Pause);
    assert!(host.local_reply.borrow().is_none(), "held, not refused");
    f.on_http_call_response(1, 0, 0, 0);
    assert_eq!(reply(&host).0, 503);
    assert_eq!(host.resumed.get(), 0);
    assert!(crate::managed::take_early(&&host).unwrap());
    // A 5000 slice: two deepl calls (2000 each), the third is over the slice.
    lease_all(&host, 5000, now_ms(&host) + 30_000);
    assert_eq!(deepl(&host, &s), Action::Continue);
    assert_eq!(deepl(&host, &s), Action::Continue);
    assert_eq!(deepl(&host, &s), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "BUDGET_EXCEEDED");
    let scope = body["error"]["scope"].as_str().unwrap();
    assert!(
        scope == "project.daily" || scope == "org.monthly",
        "{scope}"
    );
    // Settled usage is pending (4000) and queued for the next batch, and an early sync asked.
    assert_eq!(host.store.value(PROJECT_DAILY), 4000);
    let b = flushed(&host, &[&s]);
    assert_eq!(b.unsent.len(), 2);
    assert_eq!(b.unsent[0].amount, Micros::new(2000));
    assert_eq!(
        b.unsent[0].counters,
        ["org.monthly/2026-11", "project.daily/sales-ai/2026-11-24"]
    );
    assert_eq!(b.unsent[0].host.as_deref(), Some("api.deepl.com"));
    assert!(crate::managed::take_early(&&host).unwrap());
}

#[test]
fn managed_sidecar_down_closed_refuses_past_the_lease_open_admits() {
    let host = host();
    let closed = managed(crate::config::FailureMode::Closed);
    let open = managed(crate::config::FailureMode::Open);
    lease_all(&host, 2000, now_ms(&host) + 30_000);
    crate::managed::set_down(&&host, true, 1).unwrap();
    assert_eq!(
        deepl(&host, &closed),
        Action::Continue,
        "the lease is spent first"
    );
    assert_eq!(deepl(&host, &closed), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("CONTROL_PLANE_UNAVAILABLE"))
    );
    assert_eq!(
        deepl(&host, &open),
        Action::Continue,
        "open: admitted and recorded"
    );
    assert_eq!(flushed(&host, &[&closed, &open]).unsent.len(), 2);
    assert!(
        host.calls.borrow().is_empty(),
        "the sidecar is down: no room call on the request path"
    );
    // An expired lease with the sidecar up is no lease either (closed): the request is held
    // for a room call, and a refused call is a 503.
    crate::managed::set_down(&&host, false, 2).unwrap();
    lease_all(&host, 100_000, now_ms(&host));
    let (a, mut f) = deepl_held(&host, &closed);
    assert_eq!(a, Action::Pause);
    answer(
        &host,
        "503",
        json!({"error": {"code": "STORE_UNAVAILABLE"}}),
    );
    deliver(&mut f, &host, 1);
    assert_eq!(reply(&host).0, 503);
    assert_eq!(host.resumed.get(), 0);
}

#[test]
fn managed_a_spent_slice_while_the_fleet_has_room_asks_for_room_and_503_if_none_comes() {
    let host = host();
    let s = managed(crate::config::FailureMode::Closed);
    // Slice of one call; the fleet had spent 1000 of 10000 at the last answer.
    lease_all_fleet(&host, 2000, now_ms(&host) + 30_000, 1000, 10_000);
    assert_eq!(deepl(&host, &s), Action::Continue);
    let (a, mut f) = deepl_held(&host, &s);
    assert_eq!(a, Action::Pause);
    // The sidecar had no more to give this Envoy (others hold the room): retry, not 402.
    answer(
        &host,
        "200",
        json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
            "org.monthly/2026-11": {"granted": "2000", "limit": "100000000", "spent": "1000"},
            "project.daily/sales-ai/2026-11-24": {"granted": "2000", "limit": "10000", "spent": "1000"}
        }}),
    );
    deliver(&mut f, &host, 1);
    let (status, _, body) = reply(&host);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("CONTROL_PLANE_UNAVAILABLE"))
    );
    assert_eq!(host.resumed.get(), 0);
    assert_eq!(host.calls.borrow().len(), 1, "one room call per request");
    // The fleet is at its limit: a real budget refusal.
    lease_all_fleet(&host, 2000, now_ms(&host) + 30_000, 8000, 10_000);
    assert_eq!(deepl(&host, &s), Action::Pause);
    assert_eq!(reply(&host).0, 402);
}

#[test]
fn the_api_key_is_hashed_once_per_vm_and_a_wrong_key_is_still_refused() {
    let host = host();
    let s = shared("500000");
    for _ in 0..3 {
        let mut f = Filter::new(&host, Some(s.clone()));
        request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
        assert_eq!(f.on_http_request_headers(2, true), Action::Continue);
        f.on_log();
    }
    assert_eq!(s.keys.len(), 1, "one digest cached for three requests");
    let mut f = Filter::new(&host, Some(s.clone()));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1 ")]);
    assert_eq!(
        f.on_http_request_headers(2, true),
        Action::Continue,
        "the key is trimmed before it is hashed or cached"
    );
    assert_eq!(s.keys.len(), 1);
    let mut f = Filter::new(&host, Some(s.clone()));
    request(&host, "api.deepl.com", &[("x-pag0-api-key", "k2")]);
    assert_eq!(f.on_http_request_headers(2, true), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNKNOWN_API_KEY"))
    );
}

#[test]
fn requests_count_in_the_vm_and_one_tick_sends_each_counter_once() {
    let host = host();
    let s = shared("500000");
    let id = |name: &str| u32::try_from(metric_names().iter().position(|n| n == name).unwrap());
    for _ in 0..5 {
        let mut f = Filter::new(&host, Some(s.clone()));
        request(&host, "api.deepl.com", &[("x-pag0-api-key", "k1")]);
        assert_eq!(f.on_http_request_headers(4, true), Action::Continue);
        respond(&host, "200", &[]);
        f.on_http_response_headers(1, false);
        *host.response_chunk.borrow_mut() = b"{}".to_vec();
        f.on_http_response_body(2, true);
        f.on_log();
    }
    let mut f = Filter::new(&host, Some(s.clone()));
    request(&host, "api.deepl.com", &[]);
    assert_eq!(f.on_http_request_headers(3, true), Action::Pause);
    f.on_log();
    assert_eq!(host.store.value(PROJECT_DAILY), 5 * 2000);
    assert!(
        host.metric_calls.borrow().is_empty(),
        "no increment_metric per request"
    );

    tick(&host, &f);
    let mut calls = host.metric_calls.borrow().clone();
    calls.sort();
    let mut want = vec![
        (id("pag0.requests.allowed").unwrap(), 5),
        (id("pag0.requests.denied.MISSING_API_KEY").unwrap(), 1),
        (id("pag0.cost.reserved_micros").unwrap(), 5 * 2000),
        (id("pag0.cost.settled_micros").unwrap(), 5 * 2000),
    ];
    want.sort();
    assert_eq!(calls, want, "one call per counter touched, with the sum");
    tick(&host, &f);
    assert_eq!(host.metric_calls.borrow().len(), 4, "nothing sent twice");
    assert_eq!(metric(&host, "pag0.cost.released_micros"), 0);
}

#[cfg(test)]
mod decisions;

// === managed mode: slices sized to the requests, room on the request path ===

/// The seed's acme sizes: a project day of 500000 (\$0.50), a call of 120000 (\$0.12), and a
/// call above the whole day (600000).
fn acme_managed() -> Rc<Shared> {
    let doc = json!({
        "orgId": "acme-corp",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [
            { "host": "api.pricey.example", "category": "translation", "pricing": { "perRequest": "120000" } },
            { "host": "api.huge.example", "category": "translation", "pricing": { "perRequest": "600000" } }
        ],
        "projects": [{ "id": "sales-ai", "name": "Sales AI",
                       "policy": { "dailyBudget": "500000" } }],
        "clients": [{ "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": api_key_sha256_hex("k1") }]
    });
    let m = managed(crate::config::FailureMode::Closed);
    Rc::new(Shared {
        policy: PolicySlot::new(Some(Box::new(CompiledPolicy::from_value(&doc).unwrap()))),
        policy_version: 1,
        keys: Default::default(),
        mode: crate::root::Mode::Managed {
            sidecar: m.sidecar().cloned().unwrap(),
            usage: Some(Rc::new(crate::managed::UsageBuffer::new())),
            decisions: Some(Rc::new(crate::managed::DecisionBuffer::new())),
        },
        api_key_header: m.api_key_header.clone(),
        max_body_bytes: m.max_body_bytes,
        cache: m.cache,
        metrics: m.metrics.clone(),
    })
}

fn call_to<'a>(
    host: &'a FakeHost,
    s: &Rc<Shared>,
    authority: &str,
) -> (Action, Filter<&'a FakeHost>) {
    *host.local_reply.borrow_mut() = None;
    request(host, authority, &[("x-pag0-api-key", "k1")]);
    let mut f = Filter::new(host, Some(s.clone()));
    let a = f.on_http_request_headers(4, true);
    (a, f)
}

fn finish_ok(host: &FakeHost, f: &mut Filter<&FakeHost>) {
    respond(host, "200", &[]);
    f.on_http_response_headers(1, true);
    f.on_log();
}

/// The lease asks of the last call the filter dispatched: (counter, want).
fn last_room_call(host: &FakeHost) -> Vec<(String, u64)> {
    let calls = host.calls.borrow();
    let (cluster, headers, body) = calls.last().expect("a call").clone();
    assert_eq!(cluster, "pag0_sidecar");
    assert!(headers.iter().any(|(k, v)| k == ":path" && v == "/v1/sync"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"], json!([]), "a room call carries no usage");
    assert_eq!(v["release"], json!([]));
    v["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["counter"].as_str().unwrap().to_string(),
                l["want"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn day_lease(granted: u64, spent: u64) -> serde_json::Value {
    crate::testing::sync_answer_value(&json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
        "project.daily/sales-ai/2026-11-24": {"granted": granted.to_string(),
                                               "limit": "500000", "spent": spent.to_string()}
    }}))
}

#[test]
fn a_first_slice_too_small_for_one_call_is_topped_up_on_the_request_path() {
    let host = host();
    let s = acme_managed();
    let until = now_ms(&host) + 30_000;
    // The first sync's slices: 1/16 of each limit. 31250 of the day cannot hold one call.
    lease_all_fleet(&host, 6_250_000, until, 0, 100_000_000);
    lease_all_fleet_one(
        &host,
        "project.daily/sales-ai/2026-11-24",
        31_250,
        until,
        0,
        500_000,
    );

    let (a, mut f) = call_to(&host, &s, "api.pricey.example");
    assert_eq!(a, Action::Pause, "held, not refused");
    assert!(host.local_reply.borrow().is_none());
    // Only the short counter, sized for 4 calls of this size.
    assert_eq!(
        last_room_call(&host),
        [("project.daily/sales-ai/2026-11-24".to_string(), 480_000)]
    );
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        0,
        "nothing reserved while held"
    );
    answer(&host, "200", day_lease(480_000, 0));
    deliver(&mut f, &host, 1);
    assert_eq!(host.resumed.get(), 1, "admitted after the one call");
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(host.store.value(PROJECT_DAILY), 120_000);
    finish_ok(&host, &mut f);

    // Calls 2–4 fit the sized slice: no call, no hold.
    for i in 2..=4 {
        let (a, mut f) = call_to(&host, &s, "api.pricey.example");
        assert_eq!(a, Action::Continue, "call {i}");
        finish_ok(&host, &mut f);
    }
    assert_eq!(host.calls.borrow().len(), 1);
    assert_eq!(host.store.value(PROJECT_DAILY), 480_000);

    // Call 5: the slice is short again, the fleet showed room: one more call, for the rest of
    // the day (capped at the limit), which is not enough: a real 402 with its scope.
    let (a, mut f) = call_to(&host, &s, "api.pricey.example");
    assert_eq!(a, Action::Pause);
    assert_eq!(
        last_room_call(&host),
        [("project.daily/sales-ai/2026-11-24".to_string(), 500_000)]
    );
    answer(&host, "200", day_lease(500_000, 0));
    deliver(&mut f, &host, 2);
    let (status, _, body) = reply(&host);
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            body["error"]["scope"].as_str()
        ),
        (402, Some("BUDGET_EXCEEDED"), Some("project.daily"))
    );
    assert_eq!(host.resumed.get(), 1);
    assert_eq!(host.store.value(PROJECT_DAILY), 480_000, "nothing reserved");

    // The fleet's answer now shows the day used up: the 6th is a 402 at once, no call.
    let (a, _f) = call_to(&host, &s, "api.pricey.example");
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&host).0, 402);
    assert_eq!(host.calls.borrow().len(), 2);
}

#[test]
fn a_call_above_a_whole_limit_is_402_at_once_with_or_without_a_lease() {
    let host = host();
    let s = acme_managed();
    // No lease at all yet (a fresh Envoy), then a healthy one, then the sidecar down.
    for case in ["no lease", "leased", "down"] {
        match case {
            "leased" => {
                let until = now_ms(&host) + 30_000;
                lease_all_fleet(&host, 6_250_000, until, 0, 100_000_000);
                lease_all_fleet_one(
                    &host,
                    "project.daily/sales-ai/2026-11-24",
                    31_250,
                    until,
                    0,
                    500_000,
                );
            }
            "down" => {
                crate::managed::set_down(&&host, true, 1).unwrap();
            }
            _ => {}
        }
        let (a, _f) = call_to(&host, &s, "api.huge.example");
        assert_eq!(a, Action::Pause, "{case}");
        let (status, _, body) = reply(&host);
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                body["error"]["scope"].as_str()
            ),
            (402, Some("BUDGET_EXCEEDED"), Some("project.daily")),
            "{case}: {body}"
        );
        assert!(host.calls.borrow().is_empty(), "{case}: no room call");
        assert_eq!(host.store.value(PROJECT_DAILY), 0);
    }
}

#[test]
fn a_room_call_that_cannot_be_sent_is_a_503_and_an_early_sync() {
    let host = host();
    let s = acme_managed();
    host.dispatch_fails.set(true);
    let (a, _f) = call_to(&host, &s, "api.pricey.example");
    assert_eq!(a, Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("CONTROL_PLANE_UNAVAILABLE"))
    );
    assert!(crate::managed::take_early(&&host).unwrap());
}

#[test]
fn the_upstream_answering_a_request_held_for_room_is_refused() {
    let host = host();
    let s = acme_managed();
    let (a, mut f) = call_to(&host, &s, "api.pricey.example");
    assert_eq!(a, Action::Pause);
    respond(&host, "200", &[]);
    assert_eq!(f.on_http_response_headers(1, true), Action::Pause);
    assert_eq!(reply(&host).0, 503);
    // The late answer of the room call changes nothing for this stream.
    answer(&host, "200", day_lease(480_000, 0));
    deliver(&mut f, &host, 1);
    assert_eq!(host.resumed.get(), 0);
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
}

fn lease_all_fleet_one(
    host: &FakeHost,
    c: &str,
    granted: u64,
    until_ms: u64,
    spent: u64,
    limit: u64,
) {
    use crate::counters::SharedStore;
    let l = crate::managed::Lease {
        granted,
        valid_until_ms: until_ms,
        want: granted,
        spent,
        limit,
    };
    host.store
        .set(
            &crate::managed::lease_key(c),
            &serde_json::to_vec(&l).unwrap(),
            None,
        )
        .unwrap();
}

/// Issue 23: a cost report is learned at settlement; the next request to the same catalogue
/// entry reserves the learned figure (the catalogue's estimate still shows), and the request
/// that would cross the budget is refused with its scope instead of overshooting.
#[test]
fn a_cost_report_is_learned_and_the_next_request_reserves_it() {
    let host = host();
    let shared = shared("12000");
    let send = |reported: &str| {
        let mut f = Filter::new(&host, Some(shared.clone()));
        request(&host, "api.salesforce.com", &[("x-pag0-api-key", "k1")]);
        let before = host.store.value(PROJECT_DAILY);
        let action = f.on_http_request_headers(4, true);
        let reserved = host.store.value(PROJECT_DAILY) - before;
        if action == Action::Continue {
            respond(&host, "200", &[("x-request-cost", reported)]);
            f.on_http_response_headers(2, true);
            let resp = host.response_headers.borrow().clone();
            assert_eq!(
                header(&resp, "x-pag0-estimated-cost").as_deref(),
                Some("1000"),
                "the header shows the catalogue's estimate"
            );
            f.on_log();
        }
        tick(&host, &f);
        (action, reserved)
    };
    // The bound is 10 × $0.001 (no maxPerRequest): a $0.005 report is believed.
    assert_eq!(
        send("5000"),
        (Action::Continue, 1000),
        "nothing learned yet"
    );
    assert_eq!(host.store.value(PROJECT_DAILY), 5000);
    assert_eq!(
        send("5000"),
        (Action::Continue, 5000),
        "learned from one report"
    );
    // 10000 spent: the next learned $0.005 does not fit the $0.012 day (the $0.001 estimate
    // would have, and the day would have ended at $0.015).
    assert_eq!(send("5000").0, Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(status, 402);
    assert_eq!(body["error"]["scope"], "project.daily");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .ends_with("10000 spent, 5000 requested"));
    assert_eq!(host.store.value(PROJECT_DAILY), 10000);
    assert_eq!(metric(&host, "pag0.cost.reserved_micros"), 1000 + 5000);
    assert_eq!(metric(&host, "pag0.cost.settled_micros"), 10000);
    let key = pag0_policy::learn::key(
        "api.salesforce.com",
        &pag0_policy::pricing::EndpointPricing::PerRequest(Micros::new(1000)),
    );
    let learned = crate::learned::read(&&host, &key).unwrap();
    assert_eq!((learned.high_permille, learned.samples), (5000, 2));
    // A flat endpoint without a cost header learns nothing (no key, no read).
    assert!(host
        .store
        .map
        .lock()
        .unwrap()
        .0
        .keys()
        .all(|k| !k.starts_with("pag0/e/") || *k == format!("pag0/e/{key}")));
}
