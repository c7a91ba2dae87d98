//! Streams in one go: a whole [`Request`] and [`Response`], and the [`Exchange`] seen.

use super::{Host, StreamId};
use crate::http::{Exchange, Request, Response};
use crate::shared::lock;

impl Host {
    /// Run one request on VM 0 to the end; see [`Host::run_on`].
    pub fn run(&mut self, request: &Request, response: &Response) -> Exchange {
        self.run_on(0, request, response)
    }

    /// Send `request` (headers, body chunks, trailers), let Envoy's loop answer any calls after
    /// each step, give the upstream's `response` if the request reached it, and end the stream.
    pub fn run_on(&mut self, vm: usize, request: &Request, response: &Response) -> Exchange {
        let log_from = lock(&self.shared).log.len();
        let id = self.open(vm);
        self.send_request(id, request);
        self.send_response(id, response);
        self.finish(id);
        self.exchange(id, log_from)
    }

    /// The request half of [`Host::run_on`].
    pub fn send_request(&mut self, id: StreamId, request: &Request) {
        let has_body = !request.chunks.is_empty();
        let has_trailers = !request.trailers.is_empty();
        self.request_headers(id, request.headers.clone(), !has_body && !has_trailers);
        self.dispatch();
        for (i, chunk) in request.chunks.iter().enumerate() {
            let last = i + 1 == request.chunks.len() && !has_trailers;
            self.request_body(id, chunk, last);
            self.dispatch();
        }
        if has_trailers {
            self.request_trailers(id, request.trailers.clone());
            self.dispatch();
        }
    }

    /// The response half of [`Host::run_on`]: only if the whole request reached the upstream.
    pub fn send_response(&mut self, id: StreamId, response: &Response) {
        if !self.flows[&id].upstream.end_of_stream || self.flows[&id].request_done {
            return;
        }
        if response.reset_before_headers {
            self.reset_upstream(id);
            self.dispatch();
            return;
        }
        let has_body = !response.chunks.is_empty();
        let has_trailers = !response.trailers.is_empty();
        self.response_headers(
            id,
            response.headers.clone(),
            !has_body && !has_trailers && !response.reset_after_headers,
        );
        self.dispatch();
        for (i, chunk) in response.chunks.iter().enumerate() {
            let last =
                i + 1 == response.chunks.len() && !has_trailers && !response.reset_after_headers;
            self.response_body(id, chunk, last);
            self.dispatch();
        }
        if response.reset_after_headers {
            self.reset_upstream(id);
            self.dispatch();
            return;
        }
        if has_trailers {
            self.response_trailers(id, response.trailers.clone());
            self.dispatch();
        }
    }

    /// What Envoy did with the stream, plus the metrics now and the log lines written since.
    pub fn exchange(&self, id: StreamId, log_from: usize) -> Exchange {
        let f = &self.flows[&id];
        let sh = lock(&self.shared);
        Exchange {
            upstream: f.upstream.headers.is_some().then(|| f.upstream.clone()),
            local_reply: f.local_reply.clone(),
            local_replies_sent: f.local_replies_sent,
            downstream: f.downstream.clone(),
            paused: f.upstream.headers.is_none() && f.local_reply.is_none(),
            upstream_reset: f.upstream_reset,
            metrics: sh.metrics_snapshot(),
            log: sh
                .log
                .get(log_from..)
                .map(|l| l.to_vec())
                .unwrap_or_default(),
        }
    }
}
