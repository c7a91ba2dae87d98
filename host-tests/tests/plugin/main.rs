//! Black-box tests of the real pag0 .wasm through the host, against docs/policy.md#check-order-and-replies and §6.
//! Each test owns its host (its own VMs and shared data), so they run in parallel.

mod body;
mod budget;
mod config;
mod settle;
mod wire;

use std::time::Duration;

use pag0_host_tests::fixture::{self, SALES_KEY};
use pag0_host_tests::{Exchange, Host, Request, Response};

pub const MAX_BODY: u64 = 4096;

pub fn host() -> Host {
    Host::new(&fixture::config(MAX_BODY))
}

pub fn deepl(key: &str) -> Request {
    Request::get("api.deepl.com", "/v2/translate").api_key(key)
}

pub fn chat(model: &str, max_tokens: u64) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

pub fn openai(key: &str, body: &str) -> Request {
    Request::post_json("api.openai.com", "/v1/chat/completions", body).api_key(key)
}

pub fn ok() -> Response {
    Response::json(200, r#"{"ok":true}"#)
}

/// A counter as the host shows it once every VM's tick has run: the filter adds what it counted
/// to the host's counters on its tick, not per request.
pub fn counted(h: &mut Host, name: &str) -> i64 {
    h.tick_all();
    h.metric(name)
}

/// A refusal as docs/policy.md#check-order-and-replies words it: status, `x-pag0-decision: deny`, `x-pag0-code`, a JSON body
/// with the same code, and nothing sent upstream; counted once (the first of its code in `h`).
#[track_caller]
pub fn assert_denied(h: &mut Host, ex: &Exchange, status: u16, code: &str) {
    let ctx = || format!("\nexchange: {ex:?}\nlog:\n{}", ex.log_text());
    assert_eq!(ex.status(), Some(status), "status{}", ctx());
    assert_eq!(ex.code(), Some(code), "x-pag0-code{}", ctx());
    assert_eq!(
        ex.header("x-pag0-decision"),
        Some("deny"),
        "x-pag0-decision{}",
        ctx()
    );
    assert_eq!(
        ex.header("content-type"),
        Some("application/json"),
        "content-type{}",
        ctx()
    );
    let body = ex.body_json();
    assert_eq!(body["error"]["code"], code, "body.error.code{}", ctx());
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body.error.message{}",
        ctx()
    );
    assert!(
        !ex.forwarded(),
        "a refused request reached the upstream{}",
        ctx()
    );
    assert_eq!(ex.local_replies_sent, 1, "one local reply{}", ctx());
    assert_eq!(
        counted(h, &format!("pag0.requests.denied.{code}")),
        1,
        "denied metric{}",
        ctx()
    );
}

/// A refusal decided on the body. The filter lets the headers go on before the body arrives
/// (Envoy never calls the body callback after a paused header callback: proxy-wasm-cpp-host
/// turns `Pause` there into `StopAllIterationAndWatermark`), so the upstream may have seen the
/// headers, but never a byte of the body nor the end of the request.
#[track_caller]
pub fn assert_denied_on_body(h: &mut Host, ex: &Exchange, status: u16, code: &str) {
    if let Some(up) = &ex.upstream {
        assert!(
            up.body.is_empty() && !up.end_of_stream,
            "a request refused on its body reached the upstream whole: {up:?}\n{}",
            ex.log_text()
        );
    }
    let mut strict = ex.clone();
    strict.upstream = None;
    assert_denied(h, &strict, status, code);
}

#[track_caller]
pub fn assert_allowed(ex: &Exchange) {
    let ctx = || format!("\nexchange: {ex:?}\nlog:\n{}", ex.log_text());
    assert!(ex.forwarded(), "not forwarded{}", ctx());
    assert!(ex.local_reply.is_none(), "local reply{}", ctx());
    assert_eq!(
        ex.header("x-pag0-decision"),
        Some("allow"),
        "x-pag0-decision{}",
        ctx()
    );
}

/// The filter counts in its VM and adds that to the host's counters on its tick (standalone:
/// every second) and when the VM stops: not per request, and nothing twice.
#[test]
fn counters_reach_the_host_on_the_tick_and_when_the_vm_stops() {
    let mut h = host();
    for _ in 0..2 {
        assert_allowed(&h.run(&deepl(SALES_KEY), &ok()));
    }
    assert_eq!(
        h.metric("pag0.requests.allowed"),
        0,
        "no increment per request"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.metric("pag0.requests.allowed"), 2, "{}", h.log_text());
    assert_eq!(
        h.metric("pag0.cost.reserved_micros"),
        2 * fixture::DEEPL_PRICE
    );
    h.advance(Duration::from_secs(3));
    assert_eq!(h.metric("pag0.requests.allowed"), 2, "nothing added twice");
    assert_allowed(&h.run(&deepl(SALES_KEY), &ok()));
    h.stop(0);
    assert_eq!(
        h.metric("pag0.requests.allowed"),
        3,
        "on_done adds what no tick did"
    );
    assert_eq!(
        h.metric("pag0.cost.settled_micros"),
        3 * fixture::DEEPL_PRICE
    );
}

#[test]
fn an_allowed_request_reaches_the_upstream_and_is_labelled() {
    let mut h = host();
    let ex = h.run(&deepl(SALES_KEY), &ok());
    assert_allowed(&ex);
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.header("x-pag0-project"), Some("sales-ai"));
    assert_eq!(ex.header("x-pag0-estimated-cost"), Some("2000"));
    assert_eq!(ex.downstream.body, br#"{"ok":true}"#);
    assert_eq!(counted(&mut h, "pag0.requests.allowed"), 1);
    assert_eq!(
        counted(&mut h, "pag0.cost.reserved_micros"),
        fixture::DEEPL_PRICE
    );
}
