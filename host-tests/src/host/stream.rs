//! Streams step by step: headers, bodies and trailers each way, resets, the end of a stream.

use super::{Flow, Host, Step, StreamId};
use crate::abi::{Action, Headers};
use crate::vm::StreamData;

impl Host {
    /// A new HTTP stream on a VM (`proxy_on_context_create`).
    pub fn open(&mut self, vm: usize) -> StreamId {
        let w = &mut self.vms[vm];
        let context = w.next_context;
        w.next_context += 1;
        let root = w.vm.state().root_context;
        w.vm.state_mut()
            .streams
            .insert(context, StreamData::default());
        self.expect(vm, "proxy_on_context_create", |v| {
            v.call_as::<(i32, i32), ()>(
                context,
                "proxy_on_context_create",
                (context as i32, root as i32),
            )
        });
        let id = StreamId { vm, context };
        self.flows.insert(id, Flow::default());
        id
    }

    pub fn flow(&self, id: StreamId) -> &Flow {
        &self.flows[&id]
    }

    fn data(&mut self, id: StreamId) -> &mut StreamData {
        self.vms[id.vm]
            .vm
            .state_mut()
            .streams
            .entry(id.context)
            .or_default()
    }

    fn flow_mut(&mut self, id: StreamId) -> &mut Flow {
        self.flows.entry(id).or_default()
    }

    fn callback(&mut self, id: StreamId, name: &str, args: (i32, i32, i32)) -> Step {
        let r = self.expect(id.vm, name, |v| {
            v.call_as::<(i32, i32, i32), i32>(id.context, name, args)
        });
        let action = Action::from_i32(r.unwrap_or(0));
        Some(action)
    }

    fn callback2(&mut self, id: StreamId, name: &str, args: (i32, i32)) -> Step {
        let r = self.expect(id.vm, name, |v| {
            v.call_as::<(i32, i32), i32>(id.context, name, args)
        });
        Some(Action::from_i32(r.unwrap_or(0)))
    }

    fn request_open(&self, id: StreamId) -> bool {
        let f = &self.flows[&id];
        !f.request_done && !f.finished && !f.upstream_reset
    }

    /// Request headers arrive (pseudo-headers `:method`, `:path`, `:authority`, `:scheme`).
    pub fn request_headers(&mut self, id: StreamId, headers: Headers, end_of_stream: bool) -> Step {
        if !self.request_open(id) {
            return None;
        }
        let props = request_properties(&headers);
        let d = self.data(id);
        d.request_headers = headers;
        d.properties.extend(props);
        let n = d.request_headers.len() as i32;
        self.flow_mut(id).request_end_seen = end_of_stream;
        let action = self.callback(
            id,
            "proxy_on_request_headers",
            (id.context as i32, n, end_of_stream as i32),
        );
        match action {
            Some(Action::Continue) => self.forward_request(id),
            _ => {
                let f = self.flow_mut(id);
                f.request_paused = true;
                f.request_stopped_all = true;
            }
        }
        self.after(id);
        action
    }

    /// A chunk of request body. While the guest pauses, Envoy buffers: the next callback sees
    /// the whole buffered body (`body_size` = everything so far), as `StopIterationAndBuffer`.
    pub fn request_body(&mut self, id: StreamId, chunk: &[u8], end_of_stream: bool) -> Step {
        if !self.request_open(id) {
            return None;
        }
        if self.flows[&id].request_stopped_all {
            let f = self.flow_mut(id);
            f.held_request_body.extend_from_slice(chunk);
            f.request_end_seen = end_of_stream;
            return None;
        }
        self.request_body_inner(id, chunk, end_of_stream)
    }

    fn request_body_inner(&mut self, id: StreamId, chunk: &[u8], end_of_stream: bool) -> Step {
        let d = self.data(id);
        d.request_body.extend_from_slice(chunk);
        let n = d.request_body.len() as i32;
        self.flow_mut(id).request_end_seen = end_of_stream;
        let action = self.callback(
            id,
            "proxy_on_request_body",
            (id.context as i32, n, end_of_stream as i32),
        );
        match action {
            Some(Action::Continue) => self.forward_request(id),
            _ => self.flow_mut(id).request_paused = true,
        }
        self.after(id);
        action
    }

    pub fn request_trailers(&mut self, id: StreamId, trailers: Headers) -> Step {
        if !self.request_open(id) {
            return None;
        }
        if self.flows[&id].request_stopped_all {
            let f = self.flow_mut(id);
            f.held_request_trailers = Some(trailers);
            f.request_end_seen = true;
            return None;
        }
        self.request_trailers_inner(id, trailers)
    }

    fn request_trailers_inner(&mut self, id: StreamId, trailers: Headers) -> Step {
        let d = self.data(id);
        d.request_trailers = trailers;
        let n = d.request_trailers.len() as i32;
        {
            let f = self.flow_mut(id);
            f.request_end_seen = true;
            f.request_trailers_seen = true;
        }
        let action = self.callback2(id, "proxy_on_request_trailers", (id.context as i32, n));
        match action {
            Some(Action::Continue) => self.forward_request(id),
            _ => self.flow_mut(id).request_paused = true,
        }
        self.after(id);
        action
    }

    /// Iteration resumes on the request: what is held goes upstream.
    fn forward_request(&mut self, id: StreamId) {
        let (headers, body, trailers) = {
            let d = self.data(id);
            (
                d.request_headers.clone(),
                std::mem::take(&mut d.request_body),
                d.request_trailers.clone(),
            )
        };
        let f = self.flow_mut(id);
        f.request_paused = false;
        if f.upstream.headers.is_none() {
            f.upstream.headers = Some(headers);
        }
        f.upstream.body.extend_from_slice(&body);
        if f.request_end_seen {
            f.upstream.end_of_stream = true;
            if f.request_trailers_seen {
                f.upstream.trailers = trailers;
            }
        }
    }

    /// Look at what a callback left behind: a local reply, a resumed or closed stream.
    pub(super) fn after(&mut self, id: StreamId) {
        let (reply, resumed_req, resumed_resp, closed, count) = {
            let d = self.data(id);
            let r = (
                d.local_replies.first().cloned(),
                std::mem::take(&mut d.resumed_request),
                std::mem::take(&mut d.resumed_response),
                d.closed,
                d.local_replies.len(),
            );
            r
        };
        self.flow_mut(id).local_replies_sent = count;
        self.flow_mut(id).closed_by_guest = closed;
        if let Some(reply) = reply {
            if self.flows[&id].local_reply.is_none() {
                self.flow_mut(id).local_reply = Some(reply.clone());
                self.flow_mut(id).request_done = true;
                self.send_reply_downstream(id, reply.status, reply.headers, reply.body);
                return;
            }
        }
        if resumed_req && self.flows[&id].request_paused && !self.flows[&id].request_done {
            if self.flows[&id].request_stopped_all {
                self.resume_stopped_request(id);
            } else {
                self.forward_request(id);
            }
        }
        if resumed_resp && self.flows[&id].response_paused {
            if self.flows[&id].response_stopped_all {
                self.resume_stopped_response(id);
            } else {
                self.forward_response(id);
            }
        }
    }

    /// After a stop-all: the headers go on to the next filter, then what Envoy held passes
    /// through this filter's body and trailer callbacks (iteration restarts at this filter).
    fn resume_stopped_request(&mut self, id: StreamId) {
        let (body, trailers, end) = {
            let f = self.flow_mut(id);
            f.request_stopped_all = false;
            let end = f.request_end_seen;
            f.request_end_seen = false;
            (
                std::mem::take(&mut f.held_request_body),
                f.held_request_trailers.take(),
                end,
            )
        };
        self.forward_request(id);
        self.flow_mut(id).request_paused = false;
        if !body.is_empty() || (end && trailers.is_none()) {
            self.request_body_inner(id, &body, end && trailers.is_none());
        }
        if let Some(t) = trailers {
            self.request_trailers_inner(id, t);
        }
    }

    fn resume_stopped_response(&mut self, id: StreamId) {
        let (body, trailers, end) = {
            let f = self.flow_mut(id);
            f.response_stopped_all = false;
            let end = f.response_end_seen;
            f.response_end_seen = false;
            (
                std::mem::take(&mut f.held_response_body),
                f.held_response_trailers.take(),
                end,
            )
        };
        self.forward_response(id);
        if !body.is_empty() || (end && trailers.is_none()) {
            self.data(id).response_body.extend_from_slice(&body);
            self.response_body_inner(id, end && trailers.is_none());
        }
        if let Some(t) = trailers {
            self.response_trailers_inner(id, t);
        }
    }

    /// Envoy sends a reply it made (a local reply, or a 503 for a reset upstream) through the
    /// encoder filters, this one included: the guest's response callbacks run on it.
    fn send_reply_downstream(
        &mut self,
        id: StreamId,
        status: u32,
        headers: Headers,
        body: Vec<u8>,
    ) {
        let mut all: Headers = vec![(":status".into(), status.to_string().into_bytes())];
        all.extend(headers.into_iter().filter(|(k, _)| k != ":status"));
        if !body.is_empty() {
            all.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        {
            let d = self.data(id);
            d.response_headers = all;
            d.response_body.clear();
        }
        let has_body = !body.is_empty();
        self.response_headers_inner(id, !has_body);
        if has_body {
            self.data(id).response_body = body;
            self.response_body_inner(id, true);
        }
        let f = self.flow_mut(id);
        f.downstream.end_of_stream = true;
    }

    /// Upstream response headers (with `:status`).
    pub fn response_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Step {
        if self.flows[&id].request_done
            || self.flows[&id].finished
            || self.flows[&id].upstream_reset
        {
            return None;
        }
        self.data(id).response_headers = headers;
        let r = self.response_headers_inner(id, end_of_stream);
        self.after(id);
        r
    }

    fn response_headers_inner(&mut self, id: StreamId, end_of_stream: bool) -> Step {
        if let Some(code) = self
            .data(id)
            .response_headers
            .iter()
            .find(|(k, _)| k == ":status")
            .map(|(_, v)| v.clone())
        {
            self.data(id).properties.insert(
                "response.code".into(),
                String::from_utf8_lossy(&code)
                    .parse::<u64>()
                    .unwrap_or(0)
                    .to_le_bytes()
                    .to_vec(),
            );
        }
        let n = self.data(id).response_headers.len() as i32;
        self.flow_mut(id).response_end_seen = end_of_stream;
        let action = self.callback(
            id,
            "proxy_on_response_headers",
            (id.context as i32, n, end_of_stream as i32),
        );
        match action {
            Some(Action::Continue) => self.forward_response(id),
            _ => {
                let f = self.flow_mut(id);
                f.response_paused = true;
                f.response_stopped_all = true;
            }
        }
        action
    }

    pub fn response_body(&mut self, id: StreamId, chunk: &[u8], end_of_stream: bool) -> Step {
        if self.flows[&id].request_done
            || self.flows[&id].finished
            || self.flows[&id].upstream_reset
        {
            return None;
        }
        if self.flows[&id].response_stopped_all {
            let f = self.flow_mut(id);
            f.held_response_body.extend_from_slice(chunk);
            f.response_end_seen = end_of_stream;
            return None;
        }
        self.data(id).response_body.extend_from_slice(chunk);
        let r = self.response_body_inner(id, end_of_stream);
        self.after(id);
        r
    }

    fn response_body_inner(&mut self, id: StreamId, end_of_stream: bool) -> Step {
        let n = self.data(id).response_body.len() as i32;
        self.flow_mut(id).response_end_seen = end_of_stream;
        let action = self.callback(
            id,
            "proxy_on_response_body",
            (id.context as i32, n, end_of_stream as i32),
        );
        match action {
            Some(Action::Continue) => self.forward_response(id),
            _ => self.flow_mut(id).response_paused = true,
        }
        action
    }

    pub fn response_trailers(&mut self, id: StreamId, trailers: Headers) -> Step {
        if self.flows[&id].request_done
            || self.flows[&id].finished
            || self.flows[&id].upstream_reset
        {
            return None;
        }
        if self.flows[&id].response_stopped_all {
            let f = self.flow_mut(id);
            f.held_response_trailers = Some(trailers);
            f.response_end_seen = true;
            return None;
        }
        let r = self.response_trailers_inner(id, trailers);
        self.after(id);
        r
    }

    fn response_trailers_inner(&mut self, id: StreamId, trailers: Headers) -> Step {
        let n = trailers.len() as i32;
        self.data(id).response_trailers = trailers;
        self.flow_mut(id).response_end_seen = true;
        let action = self.callback2(id, "proxy_on_response_trailers", (id.context as i32, n));
        match action {
            Some(Action::Continue) => {
                self.forward_response(id);
                let t = self.data(id).response_trailers.clone();
                self.flow_mut(id).downstream.trailers = t;
            }
            _ => self.flow_mut(id).response_paused = true,
        }
        action
    }

    fn forward_response(&mut self, id: StreamId) {
        let (headers, body) = {
            let d = self.data(id);
            (
                d.response_headers.clone(),
                std::mem::take(&mut d.response_body),
            )
        };
        let f = self.flow_mut(id);
        f.response_paused = false;
        if f.downstream.headers.is_none() {
            f.downstream.headers = Some(headers);
        }
        f.downstream.body.extend_from_slice(&body);
        if f.response_end_seen {
            f.downstream.end_of_stream = true;
        }
    }

    /// The upstream resets the stream. Before response headers Envoy answers the client with its
    /// own 503, which passes through this filter; after them the client's stream is reset.
    pub fn reset_upstream(&mut self, id: StreamId) {
        let f = &self.flows[&id];
        if f.finished || f.request_done {
            return;
        }
        let headers_sent = f.downstream.headers.is_some();
        if !headers_sent {
            self.flow_mut(id).request_done = true;
            let body = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination".to_vec();
            self.send_reply_downstream(
                id,
                503,
                vec![("content-type".into(), b"text/plain".to_vec())],
                body,
            );
            self.after(id);
        }
        self.flow_mut(id).upstream_reset = true;
    }

    /// The stream ends: `on_done`, `on_log`, `on_delete`, in Envoy's order.
    pub fn finish(&mut self, id: StreamId) {
        if self.flows[&id].finished {
            return;
        }
        let ctx = id.context as i32;
        self.expect(id.vm, "proxy_on_done", |v| {
            v.call_as::<i32, i32>(id.context, "proxy_on_done", ctx)
        });
        self.expect(id.vm, "proxy_on_log", |v| {
            v.call_as::<i32, ()>(id.context, "proxy_on_log", ctx)
        });
        self.expect(id.vm, "proxy_on_delete", |v| {
            v.call_as::<i32, ()>(id.context, "proxy_on_delete", ctx)
        });
        self.flow_mut(id).finished = true;
        self.vms[id.vm].vm.state_mut().streams.remove(&id.context);
        self.dispatch();
    }
}

/// The request properties Envoy derives from the headers (`request.path`, `request.host`, ...).
fn request_properties(headers: &Headers) -> Vec<(String, Vec<u8>)> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for (prop, header) in [
        ("request.path", ":path"),
        ("request.host", ":authority"),
        ("request.method", ":method"),
        ("request.scheme", ":scheme"),
        ("request.id", "x-request-id"),
    ] {
        if let Some(v) = get(header) {
            out.push((prop.to_string(), v));
        }
    }
    if let Some(path) = get(":path") {
        let url_path = path
            .split(|b| *b == b'?')
            .next()
            .unwrap_or_default()
            .to_vec();
        out.push(("request.url_path".into(), url_path));
    }
    out.push(("request.protocol".into(), b"HTTP/1.1".to_vec()));
    out
}
