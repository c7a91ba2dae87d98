//! Approval branches of the filter against the fake host: the create call and the agent's `202`,
//! replays consumed at the sidecar, refusals, failures, and what stays reserved.

use std::rc::Rc;

use crate::host::Action;
use chrono::{TimeZone, Utc};
use pag0_policy::approval::{body_sha256_hex, request_binding};
use pag0_policy::validate::api_key_sha256_hex;
use pag0_policy::{CompiledPolicy, RequestHead};
use serde_json::{json, Value};

use super::*;
use crate::config::PolicySlot;
use crate::config::{FailureMode, SidecarConfig};
use crate::counters::SharedStore;
use crate::metrics::Metrics;
use crate::testing::FakeHost;

const PROJECT_DAILY: &str = "pag0/b/project.daily/sales-ai/2026-11-24";
const ID: &str = "apr_0123456789abcdef0123456789abcdef01234567";

fn metric_names() -> Vec<String> {
    let mut names = Vec::new();
    Metrics::define_with(Rc::default(), |n| {
        names.push(n.to_string());
        None
    });
    names
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

/// deepl (2000 per request) needs approval above 1500; salesforce (1000) does not.
fn shared(sidecar: bool, mode: FailureMode) -> Rc<Shared> {
    let doc = json!({
        "orgId": "acme-corp",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [
            { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
            { "host": "api.salesforce.com", "category": "data-analysis", "pricing": { "perRequest": "1000" } }
        ],
        "projects": [{ "id": "sales-ai", "name": "Sales AI",
                       "policy": { "dailyBudget": "10000",
                                   "approvalWorkflow": { "enabled": true, "approvers": ["lead@acme.com"],
                                                         "requireApprovalAbove": "1500" } },
                       "cache": { "enabled": true, "sharedCache": true, "defaultTTL": 600 } }],
        "clients": [{ "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": api_key_sha256_hex("k1") }]
    });
    let mut next = 0;
    Rc::new(Shared {
        policy: PolicySlot::new(Some(Box::new(CompiledPolicy::from_value(&doc).unwrap()))),
        policy_version: 7,
        keys: Default::default(),
        mode: if sidecar {
            crate::root::Mode::Managed {
                sidecar: SidecarConfig {
                    cluster: "pag0_sidecar".into(),
                    authority: "pag0-sidecar".into(),
                    sync_interval_ms: 1000,
                    timeout_ms: 200,
                    failure_mode: mode,
                    sync_secret: Some("s3cret-s3cret-s3cret".into()),
                    decision_queue_max: crate::managed::decisions::DEFAULT_QUEUE_MAX,
                },
                usage: None,
                decisions: None,
            }
        } else {
            crate::root::Mode::Standalone { slices: None }
        },
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
    let h = FakeHost {
        now: Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
        ..FakeHost::default()
    };
    let until = u64::try_from(h.now.timestamp_millis()).unwrap() + 60_000;
    for c in ["org.monthly/2026-11", "project.daily/sales-ai/2026-11-24"] {
        let l = crate::managed::Lease {
            granted: 1_000_000,
            valid_until_ms: until,
            want: 1_000_000,
            spent: 0,
            limit: 0,
        };
        h.store
            .set(
                &crate::managed::lease_key(c),
                &serde_json::to_vec(&l).unwrap(),
                None,
            )
            .unwrap();
    }
    h
}

fn request(host: &FakeHost, authority: &str, extra: &[(&str, &str)]) {
    let mut h = vec![
        (":method".to_string(), "POST".to_string()),
        (":authority".to_string(), authority.to_string()),
        (":path".to_string(), "/v2/translate?x=1".to_string()),
        ("x-pag0-api-key".to_string(), "k1".to_string()),
    ];
    // A request that may need approval names its requester (REQUESTED_BY_INVALID otherwise).
    if !extra.iter().any(|(k, _)| *k == "x-pag0-requested-by") {
        h.push(("x-pag0-requested-by".into(), "agent@acme.com".into()));
    }
    h.extend(
        extra
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    *host.request_headers.borrow_mut() = h;
}

fn answer(host: &FakeHost, status: &str, body: Value) {
    *host.call_response_headers.borrow_mut() = vec![(":status".into(), status.into())];
    *host.call_response_body.borrow_mut() = body.to_string().into_bytes();
}

/// Envoy calls back with the answer set by [`answer`].
fn deliver(f: &mut Filter<&FakeHost>, host: &FakeHost, token: u32) {
    let len = host.call_response_body.borrow().len();
    f.on_http_call_response(token, 1, len, 0);
}

fn last_call(host: &FakeHost) -> (String, Value) {
    let calls = host.calls.borrow();
    let (cluster, headers, body) = calls.last().expect("a call").clone();
    assert_eq!(cluster, "pag0_sidecar");
    let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(h(":method").as_deref(), Some("POST"));
    assert_eq!(h(":authority").as_deref(), Some("pag0-sidecar"));
    assert_eq!(
        h("authorization").as_deref(),
        Some("Bearer s3cret-s3cret-s3cret")
    );
    (h(":path").unwrap(), serde_json::from_slice(&body).unwrap())
}

fn reply(host: &FakeHost) -> (u32, Vec<(String, String)>, Value) {
    let (status, headers, body) = host.local_reply.borrow().clone().expect("a local reply");
    (status, headers, serde_json::from_str(&body).unwrap())
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn binding(body: &[u8]) -> String {
    let head = RequestHead {
        api_key: None,
        method: "POST",
        authority: "api.deepl.com",
        path: "/v2/translate?x=1",
        requires_approval: false,
    };
    request_binding("sales-agent", &head, body)
}

/// A request with a body, as Envoy delivers it: headers (not end of stream), then the body.
fn send_with_body(f: &mut Filter<&FakeHost>, host: &FakeHost, body: &[u8]) -> Action {
    *host.request_body.borrow_mut() = body.to_vec();
    let a = f.on_http_request_headers(5, false);
    if a != Action::Continue || host.local_reply.borrow().is_some() {
        return a;
    }
    f.on_http_request_body(body.len(), true)
}

#[test]
fn needs_approval_creates_it_at_the_sidecar_and_answers_202() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    request(
        &host,
        "api.deepl.com",
        &[
            ("x-pag0-justification", "Q4 pipeline"),
            ("x-pag0-requested-by", "agent@acme.com"),
            ("x-pag0-callback-url", "http://127.0.0.1:9/cb"),
        ],
    );
    let mut f = Filter::new(&host, Some(s.clone()));
    // The price needs no body, but the binding does: the body is buffered first.
    assert_eq!(
        send_with_body(&mut f, &host, b"{\"text\":\"hi\"}"),
        Action::Pause
    );
    // Nothing of pag0's reaches the upstream.
    assert!(host
        .request_headers
        .borrow()
        .iter()
        .all(|(k, _)| !k.starts_with("x-pag0-")));
    let (path, sent) = last_call(&host);
    assert_eq!(path, "/v1/approvals");
    assert_eq!(sent["projectId"], "sales-ai");
    assert_eq!(sent["clientId"], "sales-agent");
    assert_eq!(sent["method"], "POST");
    assert_eq!(sent["authority"], "api.deepl.com");
    assert_eq!(sent["path"], "/v2/translate?x=1");
    assert_eq!(sent["bodySha256"], body_sha256_hex(b"{\"text\":\"hi\"}"));
    assert_eq!(sent["binding"], binding(b"{\"text\":\"hi\"}"));
    assert_eq!(sent["estimatedCost"], "2000");
    assert_eq!(sent["policyVersion"], 7);
    assert_eq!(sent["justification"], "Q4 pipeline");
    assert_eq!(sent["requestedBy"], "agent@acme.com");
    assert_eq!(sent["callbackUrl"], "http://127.0.0.1:9/cb");
    assert!(host.local_reply.borrow().is_none(), "held while asking");

    answer(
        &host,
        "201",
        json!({ "approvalId": ID, "status": "pending", "projectId": "sales-ai",
                "estimatedCost": "2000", "expiresAt": "2026-11-25T12:00:00.000Z",
                "binding": "not for the agent" }),
    );
    deliver(&mut f, &host, 1);
    let (status, headers, body) = reply(&host);
    assert_eq!(status, 202);
    assert_eq!(header(&headers, "x-pag0-approval-id").as_deref(), Some(ID));
    assert_eq!(
        header(&headers, "x-pag0-decision").as_deref(),
        Some("pending")
    );
    assert_eq!(
        body,
        json!({ "approvalId": ID, "status": "pending", "projectId": "sales-ai",
                "estimatedCost": "2000", "expiresAt": "2026-11-25T12:00:00.000Z" })
    );
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.approvals.requested"), 1);
    assert_eq!(metric(&host, "pag0.requests.allowed"), 0);
    f.on_log();
    assert_eq!(host.store.value(PROJECT_DAILY), 0, "nothing reserved");
    assert_eq!(host.resumed.get(), 0);
}

#[test]
fn requires_approval_header_on_a_bodiless_request_holds_at_the_headers() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    request(
        &host,
        "api.salesforce.com",
        &[("x-pag0-requires-approval", "true")],
    );
    let mut f = Filter::new(&host, Some(s));
    assert_eq!(f.on_http_request_headers(5, true), Action::Pause);
    let (_, sent) = last_call(&host);
    assert_eq!(sent["bodySha256"], body_sha256_hex(b""));
    assert_eq!(sent["estimatedCost"], "1000");
    assert!(sent.get("justification").is_none());
}

#[test]
fn create_failure_is_503_in_both_failure_modes_and_never_forwards() {
    for mode in [FailureMode::Closed, FailureMode::Open] {
        // No answer (timeout), a sidecar error, and a dispatch that fails outright.
        for case in 0..3 {
            let host = host();
            let s = shared(true, mode);
            request(&host, "api.deepl.com", &[]);
            host.dispatch_fails.set(case == 2);
            let mut f = Filter::new(&host, Some(s));
            let a = f.on_http_request_headers(5, true);
            assert_eq!(a, Action::Pause);
            match case {
                0 => f.on_http_call_response(1, 0, 0, 0),
                1 => {
                    answer(&host, "400", json!({"error": {"code": "BAD_APPROVAL"}}));
                    deliver(&mut f, &host, 1);
                }
                _ => {}
            }
            let (status, headers, body) = reply(&host);
            assert_eq!(status, 503, "{mode:?} case {case}");
            assert_eq!(body["error"]["code"], "CONTROL_PLANE_UNAVAILABLE");
            assert_eq!(header(&headers, "x-pag0-approval-id"), None);
            assert_eq!(host.resumed.get(), 0);
            tick(&host, &f);
            assert_eq!(metric(&host, "pag0.approvals.requested"), 0);
        }
    }
}

/// Sends the replay up to the consume call; returns the filter holding it.
fn replay<'h>(host: &'h FakeHost, s: &Rc<Shared>, body: &[u8]) -> Filter<&'h FakeHost> {
    request(host, "api.deepl.com", &[("x-pag0-approval-id", ID)]);
    let mut f = Filter::new(host, Some(s.clone()));
    assert_eq!(send_with_body(&mut f, host, body), Action::Pause);
    f
}

#[test]
fn approved_replay_is_consumed_then_reserved_forwarded_and_settled() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    let mut f = replay(&host, &s, b"{\"text\":\"hi\"}");
    let (path, sent) = last_call(&host);
    assert_eq!(path, format!("/v1/approvals/{ID}/consume"));
    assert_eq!(
        sent,
        json!({ "binding": binding(b"{\"text\":\"hi\"}"), "estimatedCost": "2000", "policyVersion": 7 })
    );
    // Held, with its estimate reserved while the sidecar answers.
    assert_eq!(host.store.value(PROJECT_DAILY), 2000);
    assert_eq!(host.resumed.get(), 0);
    assert!(host
        .request_headers
        .borrow()
        .iter()
        .all(|(k, _)| !k.starts_with("x-pag0-")));

    answer(&host, "200", json!({ "approvalId": ID, "status": "used" }));
    deliver(&mut f, &host, 1);
    assert_eq!(host.resumed.get(), 1);
    assert!(host.local_reply.borrow().is_none());
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.approvals.replayed"), 1);
    assert_eq!(metric(&host, "pag0.requests.allowed"), 1);

    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into())];
    f.on_http_response_headers(1, true);
    assert_eq!(
        header(&host.response_headers.borrow(), "x-pag0-decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        2000,
        "per-request price charged"
    );
}

#[test]
fn refused_replays_get_the_sidecars_code_and_release_the_reservation() {
    for code in [
        "APPROVAL_USED",
        "APPROVAL_DENIED",
        "APPROVAL_EXPIRED",
        "APPROVAL_MISMATCH",
    ] {
        let host = host();
        let s = shared(true, FailureMode::Closed);
        let mut f = replay(&host, &s, b"{}");
        answer(
            &host,
            "403",
            json!({"error": {"code": code, "message": "no", "details": [], "projectId": "sales-ai"}}),
        );
        deliver(&mut f, &host, 1);
        let (status, headers, body) = reply(&host);
        assert_eq!(status, 403);
        assert_eq!(header(&headers, "x-pag0-code").as_deref(), Some(code));
        assert_eq!(body["error"]["code"], code);
        assert_eq!(body["error"]["projectId"], "sales-ai");
        assert_eq!(host.store.value(PROJECT_DAILY), 0, "{code}: released");
        assert_eq!(host.resumed.get(), 0);
        tick(&host, &f);
        assert_eq!(metric(&host, &format!("pag0.requests.denied.{code}")), 1);
        assert_eq!(metric(&host, "pag0.requests.allowed"), 0);
        f.on_log();
        assert_eq!(host.store.value(PROJECT_DAILY), 0, "released once");
    }
}

#[test]
fn a_replay_before_the_decision_is_403_approval_pending() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    let mut f = replay(&host, &s, b"{}");
    answer(
        &host,
        "403",
        json!({"error": {"code": "APPROVAL_PENDING", "message": "not decided yet"}}),
    );
    deliver(&mut f, &host, 1);
    let (status, headers, body) = reply(&host);
    assert_eq!(status, 403);
    assert_eq!(
        header(&headers, "x-pag0-code").as_deref(),
        Some("APPROVAL_PENDING")
    );
    assert_eq!(body["error"]["code"], "APPROVAL_PENDING");
    tick(&host, &f);
    assert_eq!(metric(&host, "pag0.requests.denied.APPROVAL_PENDING"), 1);
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
}

#[test]
fn consume_failure_is_503_and_releases() {
    for (status, body) in [
        ("500", json!({})),
        ("403", json!({"error": {"code": "FORBIDDEN"}})),
    ] {
        let host = host();
        let s = shared(true, FailureMode::Open);
        let mut f = replay(&host, &s, b"{}");
        answer(&host, status, body);
        deliver(&mut f, &host, 1);
        let (st, _, b) = reply(&host);
        assert_eq!(st, 503);
        assert_eq!(b["error"]["code"], "CONTROL_PLANE_UNAVAILABLE");
        assert_eq!(host.store.value(PROJECT_DAILY), 0);
        assert_eq!(host.resumed.get(), 0);
    }
    // Timeout.
    let host = host();
    let s = shared(true, FailureMode::Closed);
    let mut f = replay(&host, &s, b"{}");
    f.on_http_call_response(1, 0, 0, 0);
    assert_eq!(reply(&host).0, 503);
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
}

#[test]
fn stream_gone_while_consuming_releases_and_a_late_answer_is_ignored() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    let mut f = replay(&host, &s, b"{}");
    assert_eq!(host.store.value(PROJECT_DAILY), 2000);
    f.on_log();
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
    answer(&host, "200", json!({}));
    deliver(&mut f, &host, 1);
    assert_eq!(host.resumed.get(), 0);
    // An answer to another token changes nothing either.
    let mut g = replay(&host, &s, b"{}");
    deliver(&mut g, &host, 99);
    assert_eq!(host.store.value(PROJECT_DAILY), 2000);
    assert_eq!(host.resumed.get(), 0);
}

#[test]
fn a_replay_over_budget_is_refused_without_burning_the_approval() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    // The fleet has spent 9000 of the project's 10000 today; this Envoy's slice is 1000.
    let until = u64::try_from(host.now.timestamp_millis()).unwrap() + 60_000;
    for c in ["org.monthly/2026-11", "project.daily/sales-ai/2026-11-24"] {
        let l = crate::managed::Lease {
            granted: 1000,
            valid_until_ms: until,
            want: 1000,
            spent: 9000,
            limit: 10_000,
        };
        host.store
            .set(
                &crate::managed::lease_key(c),
                &serde_json::to_vec(&l).unwrap(),
                None,
            )
            .unwrap();
    }
    request(&host, "api.deepl.com", &[("x-pag0-approval-id", ID)]);
    let mut f = Filter::new(&host, Some(s));
    *host.request_body.borrow_mut() = b"{}".to_vec();
    assert_eq!(f.on_http_request_headers(5, false), Action::Continue);
    assert_eq!(f.on_http_request_body(2, true), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "BUDGET_EXCEEDED");
    assert!(host.calls.borrow().is_empty(), "no consume call");
}

#[test]
fn an_id_that_cannot_name_an_approval_is_a_mismatch_without_a_call() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    request(
        &host,
        "api.deepl.com",
        &[("x-pag0-approval-id", "../policy")],
    );
    let mut f = Filter::new(&host, Some(s));
    assert_eq!(f.on_http_request_headers(5, true), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "APPROVAL_MISMATCH");
    assert!(host.calls.borrow().is_empty());
    assert_eq!(host.store.value(PROJECT_DAILY), 0);
}

#[test]
fn standalone_mode_ignores_the_approval_id_and_still_requires_approval() {
    let host = host();
    let s = shared(false, FailureMode::Closed);
    request(&host, "api.deepl.com", &[("x-pag0-approval-id", ID)]);
    let mut f = Filter::new(&host, Some(s));
    assert_eq!(f.on_http_request_headers(5, true), Action::Pause);
    let (status, _, body) = reply(&host);
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "APPROVAL_REQUIRED");
    assert!(host.calls.borrow().is_empty());
}

#[test]
fn below_the_threshold_managed_mode_does_not_buffer_or_call() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    request(&host, "api.salesforce.com", &[]);
    let mut f = Filter::new(&host, Some(s));
    assert_eq!(f.on_http_request_headers(5, false), Action::Continue);
    assert!(host.calls.borrow().is_empty());
    assert_eq!(
        host.store.value(PROJECT_DAILY),
        1000,
        "decided at the headers"
    );
}

#[test]
fn a_replay_is_never_answered_from_the_response_cache() {
    let host = host();
    let s = shared(true, FailureMode::Closed);
    let get = |extra: &[(&str, &str)]| {
        let mut h = vec![
            (":method".to_string(), "GET".to_string()),
            (":authority".to_string(), "api.salesforce.com".to_string()),
            (":path".to_string(), "/q".to_string()),
            ("x-pag0-api-key".to_string(), "k1".to_string()),
        ];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        *host.request_headers.borrow_mut() = h;
        *host.local_reply.borrow_mut() = None;
        let mut f = Filter::new(&host, Some(s.clone()));
        let a = f.on_http_request_headers(4, true);
        (f, a)
    };
    // A plain request fills the cache; the same one again is a hit.
    let (mut f, a) = get(&[]);
    assert_eq!(a, Action::Continue);
    *host.response_headers.borrow_mut() = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    f.on_http_response_headers(2, false);
    *host.response_chunk.borrow_mut() = b"{\"ok\":true}".to_vec();
    f.on_http_response_body(11, true);
    f.on_log();
    let (_, a) = get(&[]);
    assert_eq!(a, Action::Pause);
    let hit = host.local_reply.borrow().clone().expect("a cache hit");
    assert_eq!(header(&hit.1, "x-pag0-cache").as_deref(), Some("hit"));
    // The replay of an approval for the same request goes to the sidecar instead.
    let (_, a) = get(&[("x-pag0-approval-id", ID)]);
    assert_eq!(a, Action::Pause);
    assert!(
        host.local_reply.borrow().is_none(),
        "not answered from the cache"
    );
    let (path, _) = last_call(&host);
    assert_eq!(path, format!("/v1/approvals/{ID}/consume"));
}

/// Issue 20 item 4: a request that needs approval without one parseable requester address is
/// refused with `400 REQUESTED_BY_INVALID` and nothing is asked of the sidecar; any spelling
/// of an address reaches the sidecar normalised.
#[test]
fn approval_needs_one_requester_address_sent_normalised() {
    // An empty value in `request` means "no header at all".
    for bad in [
        "",
        "Agent E",
        "agent-e@x.com, lead@acme.com",
        "@x.com",
        "<>",
    ] {
        let host = host();
        request(&host, "api.deepl.com", &[("x-pag0-requested-by", bad)]);
        let mut f = Filter::new(&host, Some(shared(true, FailureMode::Closed)));
        let _ = send_with_body(&mut f, &host, b"{}");
        let (status, headers, body) = reply(&host);
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "REQUESTED_BY_INVALID", "{bad:?}");
        assert_eq!(
            header(&headers, "x-pag0-code").as_deref(),
            Some("REQUESTED_BY_INVALID")
        );
        assert!(
            host.calls.borrow().is_empty(),
            "{bad:?}: no approval asked for"
        );
    }
    for spelling in [
        "Agent E <Agent-E@X.com.>",
        "agent-e@x.com.",
        "AGENT-E@x.com",
    ] {
        let host = host();
        request(&host, "api.deepl.com", &[("x-pag0-requested-by", spelling)]);
        let mut f = Filter::new(&host, Some(shared(true, FailureMode::Closed)));
        assert_eq!(send_with_body(&mut f, &host, b"{}"), Action::Pause);
        let (_, sent) = last_call(&host);
        assert_eq!(sent["requestedBy"], "agent-e@x.com", "{spelling:?}");
    }
}

/// Issue 20 (smaller items): the binding covers the upstream credential, so a replay with
/// another `authorization` (who pays upstream) does not match the approval. Asked and
/// replayed requests both go through `Incoming::binding`.
#[test]
fn the_binding_covers_the_upstream_credential() {
    let bind = |extra: &[(&str, &str)]| {
        let host = host();
        request(&host, "api.deepl.com", extra);
        let mut f = Filter::new(&host, Some(shared(true, FailureMode::Closed)));
        assert_eq!(send_with_body(&mut f, &host, b"{}"), Action::Pause);
        let (_, sent) = last_call(&host);
        sent["binding"].as_str().unwrap().to_string()
    };
    let none = bind(&[]);
    assert_eq!(none, binding(b"{}"), "no credential: the binding as before");
    let a = bind(&[("authorization", "Bearer sk-a")]);
    let b = bind(&[("authorization", "Bearer sk-b")]);
    let key = bind(&[("x-api-key", "sk-a")]);
    assert_ne!(a, none);
    assert_ne!(a, b);
    assert_ne!(a, key);
    assert_eq!(a, bind(&[("authorization", "Bearer sk-a")]));
}

#[test]
fn without_a_lease_yet_a_request_needing_approval_asks_for_room_then_for_the_approval() {
    // A fresh Envoy: the policy is in, the leases are not.
    let host = FakeHost {
        now: Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
        ..FakeHost::default()
    };
    let s = shared(true, FailureMode::Closed);
    request(&host, "api.deepl.com", &[]);
    let mut f = Filter::new(&host, Some(s.clone()));
    assert_eq!(send_with_body(&mut f, &host, b"{}"), Action::Pause);
    let (path, sent) = last_call(&host);
    assert_eq!(
        path, "/v1/sync",
        "room first: no approval without budget room"
    );
    assert_eq!(sent["usage"], json!([]));
    let counters: Vec<&str> = sent["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["counter"].as_str().unwrap())
        .collect();
    assert_eq!(
        counters,
        ["org.monthly/2026-11", "project.daily/sales-ai/2026-11-24"]
    );
    answer(
        &host,
        "200",
        crate::testing::sync_answer_value(&json!({"ack": 1, "leaseTtlMs": 30000, "leases": {
            "org.monthly/2026-11": {"granted": "6250000", "limit": "100000000", "spent": "0"},
            "project.daily/sales-ai/2026-11-24": {"granted": "8000", "limit": "10000", "spent": "0"}
        }})),
    );
    deliver(&mut f, &host, 1);
    assert!(host.local_reply.borrow().is_none(), "still held");
    let (path, sent) = last_call(&host);
    assert_eq!(path, "/v1/approvals");
    assert_eq!(sent["estimatedCost"], "2000");
    answer(
        &host,
        "201",
        json!({ "approvalId": ID, "status": "pending", "projectId": "sales-ai",
                "estimatedCost": "2000", "expiresAt": "2026-11-25T12:00:00.000Z" }),
    );
    deliver(&mut f, &host, 2);
    assert_eq!(reply(&host).0, 202);
    assert_eq!(host.resumed.get(), 0);
    assert_eq!(host.store.value(PROJECT_DAILY), 0, "nothing reserved");
}
