//! The test's words for a request, an upstream response, and what came of them.

use std::collections::BTreeMap;

use crate::abi::Headers;
use crate::shared::LogLine;
use crate::vm::LocalReply;

fn h(k: &str, v: &str) -> (String, Vec<u8>) {
    (k.to_ascii_lowercase(), v.as_bytes().to_vec())
}

/// A request from an agent: headers, body chunks, trailers.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: Headers,
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Headers,
}

impl Request {
    pub fn new(method: &str, authority: &str, path: &str) -> Request {
        Request {
            headers: vec![
                h(":method", method),
                h(":scheme", "https"),
                h(":authority", authority),
                h(":path", path),
            ],
            chunks: Vec::new(),
            trailers: Vec::new(),
        }
    }

    pub fn get(authority: &str, path: &str) -> Request {
        Request::new("GET", authority, path)
    }

    /// A POST with a JSON body in one chunk.
    pub fn post_json(authority: &str, path: &str, body: &str) -> Request {
        Request::new("POST", authority, path)
            .header("content-type", "application/json")
            .body(body.as_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push(h(name, value));
        self
    }

    pub fn api_key(self, key: &str) -> Request {
        self.header("x-pag0-api-key", key)
    }

    /// The body as one chunk.
    pub fn body(mut self, body: &[u8]) -> Request {
        self.chunks = if body.is_empty() {
            Vec::new()
        } else {
            vec![body.to_vec()]
        };
        self
    }

    /// Split the body into chunks of at most `n` bytes.
    pub fn chunked(mut self, n: usize) -> Request {
        let all: Vec<u8> = self.chunks.concat();
        self.chunks = all.chunks(n.max(1)).map(<[u8]>::to_vec).collect();
        self
    }

    pub fn chunks(mut self, chunks: Vec<Vec<u8>>) -> Request {
        self.chunks = chunks;
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Request {
        self.trailers.push(h(name, value));
        self
    }
}

/// What the upstream does once the request reached it.
#[derive(Debug, Clone)]
pub struct Response {
    pub headers: Headers,
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Headers,
    pub reset_before_headers: bool,
    pub reset_after_headers: bool,
}

impl Response {
    pub fn status(code: u16) -> Response {
        Response {
            headers: vec![h(":status", &code.to_string())],
            chunks: Vec::new(),
            trailers: Vec::new(),
            reset_before_headers: false,
            reset_after_headers: false,
        }
    }

    pub fn ok() -> Response {
        Response::status(200)
    }

    pub fn json(code: u16, body: &str) -> Response {
        Response::status(code)
            .header("content-type", "application/json")
            .body(body.as_bytes())
    }

    /// An SSE stream, one chunk per string (split events across chunks on purpose if you like).
    pub fn sse(chunks: &[&str]) -> Response {
        Response::status(200)
            .header("content-type", "text/event-stream")
            .chunks(chunks.iter().map(|c| c.as_bytes().to_vec()).collect())
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push(h(name, value));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Response {
        self.chunks = if body.is_empty() {
            Vec::new()
        } else {
            vec![body.to_vec()]
        };
        self
    }

    pub fn chunked(mut self, n: usize) -> Response {
        let all: Vec<u8> = self.chunks.concat();
        self.chunks = all.chunks(n.max(1)).map(<[u8]>::to_vec).collect();
        self
    }

    pub fn chunks(mut self, chunks: Vec<Vec<u8>>) -> Response {
        self.chunks = chunks;
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Response {
        self.trailers.push(h(name, value));
        self
    }

    /// The upstream resets the stream before sending headers.
    pub fn reset() -> Response {
        Response {
            reset_before_headers: true,
            ..Response::ok()
        }
    }

    /// The upstream sends headers (and any chunks), then resets.
    pub fn reset_after_headers(mut self) -> Response {
        self.reset_after_headers = true;
        self
    }
}

fn find<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Headers and bodies as text, so a failing assertion is readable.
pub(crate) fn show_headers(h: &Headers) -> Vec<String> {
    h.iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
        .collect()
}

pub(crate) fn show_body(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 400 {
        format!(
            "{}… ({} bytes)",
            &s[..s.char_indices().nth(400).map_or(s.len(), |(i, _)| i)],
            b.len()
        )
    } else {
        s.into_owned()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("headers", &self.headers.as_ref().map(show_headers))
            .field("body", &show_body(&self.body))
            .field("trailers", &show_headers(&self.trailers))
            .field("end_of_stream", &self.end_of_stream)
            .finish()
    }
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("headers", &self.headers.as_ref().map(show_headers))
            .field("body", &show_body(&self.body))
            .field("trailers", &show_headers(&self.trailers))
            .field("end_of_stream", &self.end_of_stream)
            .finish()
    }
}

/// What the upstream received.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    pub headers: Option<Headers>,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub end_of_stream: bool,
}

impl Upstream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref().and_then(|h| find(h, name))
    }
}

/// What the agent received.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Downstream {
    pub headers: Option<Headers>,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub end_of_stream: bool,
}

impl Downstream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref().and_then(|h| find(h, name))
    }

    pub fn status(&self) -> Option<u16> {
        self.header(":status").and_then(|s| s.parse().ok())
    }
}

/// What Envoy would have done with one request.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// What reached the upstream (`None`: nothing did).
    pub upstream: Option<Upstream>,
    /// The guest's local reply as it sent it.
    pub local_reply: Option<LocalReply>,
    pub local_replies_sent: usize,
    /// What the agent got (local reply or upstream response, after the guest's response callbacks).
    pub downstream: Downstream,
    /// Neither forwarded nor answered: the request hangs in Envoy.
    pub paused: bool,
    pub upstream_reset: bool,
    /// The host's metrics when the stream ended. The filter adds its counters' increments on
    /// its tick: for counters read [`crate::Host::metric`] after [`crate::Host::tick_all`].
    pub metrics: BTreeMap<String, i64>,
    pub log: Vec<LogLine>,
}

impl Exchange {
    pub fn status(&self) -> Option<u16> {
        self.downstream.status()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.downstream.header(name)
    }

    /// `x-pag0-code` of the reply.
    pub fn code(&self) -> Option<&str> {
        self.header("x-pag0-code")
    }

    pub fn forwarded(&self) -> bool {
        self.upstream.is_some()
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.downstream.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn metric(&self, name: &str) -> i64 {
        self.metrics.get(name).copied().unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        self.log
            .iter()
            .map(|l| format!("[vm{} {:?}] {}\n", l.vm, l.level, l.message))
            .collect()
    }
}
