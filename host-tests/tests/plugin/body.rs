//! Bodies read for pricing: the cap holds across chunks, unreadable bodies are refused, and
//! bodies pricing does not need pass untouched.

use pag0_host_tests::fixture::SALES_KEY;
use pag0_host_tests::{Action, Request};

use super::{assert_allowed, assert_denied_on_body, chat, host, ok, openai, MAX_BODY};

fn padded_chat(len: usize) -> String {
    let base = chat("gpt-4o-mini", 10);
    let pad = len.saturating_sub(base.len() + 12);
    format!(r#"{{"pad":"{}",{}"#, "a".repeat(pad), &base[1..])
}

#[test]
fn body_over_the_cap_in_many_chunks_is_413() {
    let body = padded_chat(MAX_BODY as usize + 500);
    let mut h = host();
    let ex = h.run(&openai(SALES_KEY, &body).chunked(300), &ok());
    assert_denied_on_body(&mut h, &ex, 413, "BODY_TOO_LARGE");
}

#[test]
fn body_just_under_the_cap_is_priced_and_forwarded_whole() {
    let body = padded_chat(MAX_BODY as usize - 10);
    assert!(body.len() <= MAX_BODY as usize);
    let mut h = host();
    let ex = h.run(&openai(SALES_KEY, &body).chunked(100), &ok());
    assert_allowed(&ex);
    let up = ex
        .upstream
        .as_ref()
        .map(|u| u.body.clone())
        .unwrap_or_default();
    assert_eq!(
        up,
        body.as_bytes(),
        "the upstream must get the whole body, once, in order"
    );
}

#[test]
fn no_body_byte_reaches_the_upstream_before_the_decision() {
    let mut h = host();
    let id = h.open(0);
    let req = openai(SALES_KEY, &chat("gpt-4o-mini", 10));
    let body = req.chunks.concat();
    h.request_headers(id, req.headers.clone(), false);
    let (a, b) = body.split_at(body.len() / 2);
    assert_eq!(
        h.request_body(id, a, false),
        Some(Action::Pause),
        "half a body cannot be priced\n{}",
        h.log_text()
    );
    let up = &h.flow(id).upstream;
    assert!(
        up.body.is_empty() && !up.end_of_stream,
        "body bytes left before the decision: {up:?}"
    );
    h.request_body(id, b, true);
    let up = &h.flow(id).upstream;
    assert!(
        up.end_of_stream,
        "the whole request goes upstream once priced: {up:?}\n{}",
        h.log_text()
    );
    assert_eq!(up.body, body);
}

#[test]
fn a_body_that_is_not_json_is_400() {
    let mut h = host();
    let ex = h.run(&openai(SALES_KEY, "model=gpt-4&max_tokens=10"), &ok());
    assert_denied_on_body(&mut h, &ex, 400, "BAD_REQUEST_BODY");
}

#[test]
fn a_json_body_cut_short_is_400() {
    let body = chat("gpt-4o-mini", 10);
    let mut h = host();
    let ex = h.run(
        &openai(SALES_KEY, &body[..body.len() - 5]).chunked(7),
        &ok(),
    );
    assert_denied_on_body(&mut h, &ex, 400, "BAD_REQUEST_BODY");
}

#[test]
fn a_body_pricing_does_not_need_passes_even_when_large() {
    let big = vec![b'x'; MAX_BODY as usize * 3];
    let req = Request::new("POST", "api.deepl.com", "/v2/translate")
        .api_key(SALES_KEY)
        .body(&big)
        .chunked(1000);
    let mut h = host();
    let ex = h.run(&req, &ok());
    assert_allowed(&ex);
    assert_eq!(ex.upstream.as_ref().map(|u| u.body.len()), Some(big.len()));
}

#[test]
fn request_trailers_do_not_lose_the_body() {
    let body = chat("gpt-4o-mini", 10);
    let req = openai(SALES_KEY, &body).chunked(20).trailer("x-trace", "1");
    let mut h = host();
    let ex = h.run(&req, &ok());
    assert_allowed(&ex);
    let up = ex.upstream.clone().unwrap_or_default();
    assert_eq!(up.body, body.as_bytes());
    assert!(up.end_of_stream);
}
