//! The mock upstream: stands in for the paid APIs (there is no internet in tests or the demo).
//!
//! Envoy routes every host to it, so it routes by **path** only. Every endpoint accepts
//! `?delay_ms=N` (sleep before answering) so tests can keep many requests in flight at once.
//!
//! | route | reply |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI-compatible JSON with `usage`, or an SSE stream with `"stream": true` |
//! | `POST /v2/translate` | DeepL-style JSON, flat priced (no usage report) |
//! | `ANY /cost?cost=N` | JSON, header `x-request-cost: N` (micro-USD, default 1500) |
//! | `ANY /echo` | the request it received (method, path, headers) as JSON |
//! | `ANY /status/{code}` | that status, small JSON body, no usage |
//! | `ANY /reset` | `200` headers, one body chunk, then the connection is cut |
//! | `ANY /reset-before-headers` | the connection is closed before any response byte |
//! | `ANY /slow?ms=N` | JSON after N ms (default 1000) |
//! | `GET /__stats` | `{"total", "paths": {path: n}, "arrivedTotal", "arrived": {path: n}, "maxSlowInFlight"}` (excl. `/__stats`) |
//!
//! `paths` counts requests a handler served (`/status` for every `/status/{code}`); `arrived`
//! counts request heads by exact path as soon as they reach the mock, before the body is
//! read — the number to check for "this request never reached the upstream".
//! | anything else | `200` JSON `{"ok": true, "path": …}` |
//!
//! Usage for chat completions is deterministic, so tests can compute the settled cost:
//! - `prompt_tokens = request_body_bytes / 4` (integer division),
//! - `completion_tokens = min(max_tokens, 50)` where `max_tokens` is the body's `max_tokens`,
//!   else `max_completion_tokens`, else 50,
//! - `total_tokens = prompt_tokens + completion_tokens`,
//! - query parameters `?prompt_tokens=N&completion_tokens=M` override both.
//!
//! The SSE stream sends 4 `data:` content events (20 ms apart, one chunk each), then a final
//! `data:` event with empty `choices` and the `usage` object, then `data: [DONE]`.
//! `?no_usage=1` leaves `usage` out (JSON and SSE).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Words the stream sends as `delta.content`, one per event.
const STREAM_WORDS: [&str; 4] = ["Hello", " from", " the", " mock"];
/// Cap on completion tokens the mock "generates".
pub const MAX_COMPLETION_TOKENS: u64 = 50;
/// `x-request-cost` when `/cost` has no `?cost=`.
pub const DEFAULT_REPORTED_COST: u64 = 1500;

/// Requests served per path. Shared by every connection of one mock.
#[derive(Clone, Default)]
pub struct MockState {
    served: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Requests whose *headers* arrived, per exact path (counted before any body is read):
    /// a request Envoy started upstream and then cut off shows here and not in `served`.
    arrived: Arc<Mutex<BTreeMap<String, u64>>>,
    /// `(now, max)` requests inside `/slow` at once: proves requests were in flight together.
    slow_in_flight: Arc<Mutex<(u64, u64)>>,
}

impl MockState {
    fn count(&self, path: &str) {
        if let Ok(mut m) = self.served.lock() {
            *m.entry(path.to_owned()).or_insert(0) += 1;
        }
    }

    /// Requests whose headers reached the mock, per path (`/__stats` excluded).
    pub fn arrived(&self) -> BTreeMap<String, u64> {
        self.arrived.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn arrive(&self, path: &str) {
        if path == "/__stats" {
            return;
        }
        if let Ok(mut m) = self.arrived.lock() {
            *m.entry(path.to_owned()).or_insert(0) += 1;
        }
    }

    /// The most requests that were inside `/slow` at the same time.
    pub fn max_slow_in_flight(&self) -> u64 {
        self.slow_in_flight.lock().map(|g| g.1).unwrap_or(0)
    }

    fn slow_enter(&self) {
        if let Ok(mut g) = self.slow_in_flight.lock() {
            g.0 += 1;
            g.1 = g.1.max(g.0);
        }
    }

    fn slow_leave(&self) {
        if let Ok(mut g) = self.slow_in_flight.lock() {
            g.0 = g.0.saturating_sub(1);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.served.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The mock's router (also usable with `tower::ServiceExt::oneshot`, without a socket).
pub fn app(state: MockState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v2/translate", post(translate))
        .route("/cost", any(cost))
        .route("/echo", any(echo))
        .route("/status/{code}", any(status))
        .route("/reset", any(reset))
        .route("/reset-before-headers", any(reset_before_headers))
        .route("/slow", any(slow))
        .route("/__stats", get(stats))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_arrival,
        ))
        .with_state(state)
}

/// Runs when the request head arrives, before any handler reads the body.
async fn count_arrival(
    State(st): State<MockState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    st.arrive(req.uri().path());
    next.run(req).await
}

/// The usage the mock reports for a chat request (see the module docs).
pub fn chat_usage(body: &[u8], query: &HashMap<String, String>) -> (u64, u64) {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let asked = parsed
        .get("max_tokens")
        .or_else(|| parsed.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(MAX_COMPLETION_TOKENS);
    let prompt = q_u64(query, "prompt_tokens").unwrap_or(body.len() as u64 / 4);
    let completion = q_u64(query, "completion_tokens").unwrap_or(asked.min(MAX_COMPLETION_TOKENS));
    (prompt, completion)
}

fn q_u64(query: &HashMap<String, String>, key: &str) -> Option<u64> {
    query.get(key).and_then(|v| v.parse().ok())
}

async fn delay(query: &HashMap<String, String>) {
    if let Some(ms) = q_u64(query, "delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn usage_json(prompt: u64, completion: u64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion) })
}

async fn chat_completions(
    State(st): State<MockState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    st.count("/v1/chat/completions");
    delay(&q).await;
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4")
        .to_owned();
    let (prompt, completion) = chat_usage(&body, &q);
    let with_usage = !q.contains_key("no_usage");
    let streaming = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !streaming {
        let mut reply = json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": STREAM_WORDS.concat() } }],
        });
        if let (true, Some(o)) = (with_usage, reply.as_object_mut()) {
            o.insert("usage".into(), usage_json(prompt, completion));
        }
        return Json(reply).into_response();
    }
    let mut events: Vec<String> = STREAM_WORDS
        .iter()
        .map(|w| {
            let chunk = json!({ "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                                "choices": [{ "index": 0, "delta": { "content": w } }] });
            format!("data: {chunk}\n\n")
        })
        .collect();
    let mut last = json!({ "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model, "choices": [] });
    if let (true, Some(o)) = (with_usage, last.as_object_mut()) {
        o.insert("usage".into(), usage_json(prompt, completion));
    }
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".to_owned());
    let stream =
        futures_util::stream::unfold((events.into_iter(), true), |(mut it, first)| async move {
            let ev = it.next()?;
            if !first {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some((Ok::<_, Infallible>(Bytes::from(ev)), (it, false)))
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn translate(
    State(st): State<MockState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    st.count("/v2/translate");
    delay(&q).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    Json(json!({ "translations": [{ "detected_source_language": "EN", "text": format!("[de] {text}") }] }))
        .into_response()
}

async fn cost(State(st): State<MockState>, Query(q): Query<HashMap<String, String>>) -> Response {
    st.count("/cost");
    delay(&q).await;
    let cost = q_u64(&q, "cost").unwrap_or(DEFAULT_REPORTED_COST);
    (
        [("x-request-cost", cost.to_string())],
        Json(json!({ "records": [], "reportedCost": cost.to_string() })),
    )
        .into_response()
}

async fn echo(
    State(st): State<MockState>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    st.count("/echo");
    delay(&q).await;
    let mut hs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &headers {
        hs.entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Json(json!({ "method": method.as_str(), "path": uri.to_string(), "headers": hs }))
        .into_response()
}

async fn status(
    State(st): State<MockState>,
    Path(code): Path<u16>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.count("/status");
    delay(&q).await;
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        Json(json!({ "error": { "message": "mock status", "status": code.as_u16() } })),
    )
        .into_response()
}

async fn reset(State(st): State<MockState>, Query(q): Query<HashMap<String, String>>) -> Response {
    st.count("/reset");
    delay(&q).await;
    // One chunk, a pause so it reaches Envoy, then an error: hyper aborts the connection
    // without the terminating chunk, which Envoy sees as an upstream reset mid-response.
    let stream = futures_util::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((Ok(Bytes::from_static(b"{\"partial\": ")), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Err(std::io::Error::other("mock reset")), 2))
            }
            _ => None,
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn reset_before_headers(
    State(st): State<MockState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.count("/reset-before-headers");
    delay(&q).await;
    // A body that fails on its first poll: hyper has not flushed the head yet, so it closes
    // the connection with nothing written — Envoy sees a reset before response headers.
    let stream =
        futures_util::stream::once(async { Err::<Bytes, _>(std::io::Error::other("mock reset")) });
    Response::builder()
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn slow(State(st): State<MockState>, Query(q): Query<HashMap<String, String>>) -> Response {
    st.count("/slow");
    let ms = q_u64(&q, "ms").unwrap_or(1000);
    st.slow_enter();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    st.slow_leave();
    Json(json!({ "ok": true, "sleptMs": ms })).into_response()
}

async fn stats(State(st): State<MockState>) -> Response {
    let paths = st.snapshot();
    let total: u64 = paths.values().sum();
    let arrived = st.arrived();
    let arrived_total: u64 = arrived.values().sum();
    Json(
        json!({ "total": total, "paths": paths, "arrivedTotal": arrived_total, "arrived": arrived,
                 "maxSlowInFlight": st.max_slow_in_flight() }),
    )
    .into_response()
}

async fn fallback(
    State(st): State<MockState>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    st.count(uri.path());
    delay(&q).await;
    Json(json!({ "ok": true, "path": uri.path() })).into_response()
}
