//! [`Host`]: Envoy's side of the filter for one listener — N worker VMs of one module sharing one
//! store of shared data, queues and metrics, a clock the test sets, scripted `dispatch_http_call`
//! answers, and HTTP streams the test drives step by step or in one go ([`Host::run`]).
//!
//! Nothing runs on its own: a step happens when the test calls it, so two requests on two VMs
//! interleave exactly as the test writes them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use wasmtime::Module;

use crate::abi::{Action, Headers};
use crate::http::{Downstream, Exchange, Request, Response, Upstream};
use crate::plugin;
use crate::shared::{lock, LogLine, Shared, SharedRef};
use crate::vm::{CallReply, GuestTrap, HttpCall, LocalReply, StreamData, Vm, VmState};

/// What the scripted upstream of a `dispatch_http_call` does.
#[derive(Debug, Clone)]
pub enum CallAnswer {
    Response {
        headers: Headers,
        body: Vec<u8>,
        trailers: Headers,
    },
    /// Envoy's answer to a timeout or a reset: the callback with no headers, body or trailers.
    Timeout,
    /// Leave the call pending (answer it later with [`Host::answer_call`]).
    Hold,
}

impl CallAnswer {
    pub fn json(status: u16, body: &str) -> CallAnswer {
        CallAnswer::Response {
            headers: vec![
                (":status".into(), status.to_string().into_bytes()),
                ("content-type".into(), b"application/json".to_vec()),
            ],
            body: body.as_bytes().to_vec(),
            trailers: Vec::new(),
        }
    }
}

type Responder = Box<dyn FnMut(&HttpCall) -> CallAnswer + Send>;

/// Why a host could not start: Envoy would refuse the listener.
#[derive(Debug)]
pub enum StartError {
    /// The module could not be loaded or linked (e.g. it imports something Envoy lacks).
    Load(wasmtime::Error),
    Trap(GuestTrap),
    /// `proxy_on_vm_start` returned false.
    VmStartRefused {
        vm: usize,
        log: Vec<LogLine>,
    },
    /// `proxy_on_configure` returned false: Envoy logs it and refuses the configuration.
    ConfigureRefused {
        vm: usize,
        log: Vec<LogLine>,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Load(e) => write!(f, "loading the module: {e:#}"),
            StartError::Trap(t) => write!(f, "{t}"),
            StartError::VmStartRefused { vm, log } => {
                write!(f, "on_vm_start returned false on VM {vm}; log: {log:#?}")
            }
            StartError::ConfigureRefused { vm, log } => {
                write!(f, "on_configure returned false on VM {vm}; log: {log:#?}")
            }
        }
    }
}

impl std::error::Error for StartError {}

pub struct HostBuilder {
    module: Option<Module>,
    plugin_configuration: Vec<u8>,
    vm_configuration: Vec<u8>,
    vms: usize,
    vm_id: String,
    root_id: String,
    clusters: Vec<String>,
    now_nanos: u64,
    responder: Option<Responder>,
}

impl HostBuilder {
    /// Another module than the pag0 plugin (e.g. a small WAT guest testing the host itself).
    pub fn module(mut self, module: Module) -> Self {
        self.module = Some(module);
        self
    }

    /// Worker VMs, like Envoy's `--concurrency`. Default 1.
    pub fn vms(mut self, n: usize) -> Self {
        self.vms = n.max(1);
        self
    }

    pub fn vm_configuration(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_configuration = bytes.into();
        self
    }

    /// A cluster `dispatch_http_call` may name (Envoy refuses unknown clusters).
    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.push(name.to_string());
        self
    }

    /// The wall clock at start, in seconds since the Unix epoch.
    pub fn unix_time(mut self, secs: u64) -> Self {
        self.now_nanos = secs.saturating_mul(1_000_000_000);
        self
    }

    /// Answers every `dispatch_http_call` (default: time out).
    pub fn responder(mut self, f: impl FnMut(&HttpCall) -> CallAnswer + Send + 'static) -> Self {
        self.responder = Some(Box::new(f));
        self
    }

    pub fn build(self) -> Result<Host, StartError> {
        let module = match self.module {
            Some(m) => m,
            None => plugin::module().clone(),
        };
        let shared: SharedRef = Default::default();
        lock(&shared).now_nanos = self.now_nanos;
        let mut vms = Vec::with_capacity(self.vms);
        for index in 0..self.vms {
            let mut state = VmState::new(index, &self.vm_id, shared.clone());
            state.vm_configuration = self.vm_configuration.clone();
            state.plugin_configuration = self.plugin_configuration.clone();
            state.clusters = self.clusters.clone();
            for (k, v) in [
                ("plugin_name", &self.root_id),
                ("plugin_root_id", &self.root_id),
                ("plugin_vm_id", &self.vm_id),
            ] {
                state
                    .properties
                    .insert(k.to_string(), v.as_bytes().to_vec());
            }
            let mut vm =
                Vm::instantiate(plugin::engine(), &module, state).map_err(StartError::Load)?;
            let root = vm.state().root_context;
            let log = |shared: &SharedRef| lock(shared).log.clone();
            vm.call_as::<(i32, i32), ()>(root, "proxy_on_context_create", (root as i32, 0))
                .map_err(StartError::Trap)?;
            let vm_config_len = self.vm_configuration.len() as i32;
            if vm
                .call_as::<(i32, i32), i32>(root, "proxy_on_vm_start", (root as i32, vm_config_len))
                .map_err(StartError::Trap)?
                == Some(0)
            {
                return Err(StartError::VmStartRefused {
                    vm: index,
                    log: log(&shared),
                });
            }
            let config_len = self.plugin_configuration.len() as i32;
            if vm
                .call_as::<(i32, i32), i32>(root, "proxy_on_configure", (root as i32, config_len))
                .map_err(StartError::Trap)?
                == Some(0)
            {
                return Err(StartError::ConfigureRefused {
                    vm: index,
                    log: log(&shared),
                });
            }
            vms.push(Worker {
                vm,
                next_context: root + 1,
                next_tick_nanos: None,
            });
        }
        let mut host = Host {
            vms,
            shared,
            flows: HashMap::new(),
            responder: self
                .responder
                .unwrap_or_else(|| Box::new(|_| CallAnswer::Timeout)),
        };
        host.schedule_ticks();
        host.dispatch();
        Ok(host)
    }
}

struct Worker {
    vm: Vm,
    next_context: u32,
    next_tick_nanos: Option<u64>,
}

/// A stream on one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub vm: usize,
    pub context: u32,
}

/// Envoy's view of one stream: what went where.
#[derive(Debug, Default, Clone)]
pub struct Flow {
    pub request_paused: bool,
    /// The header callback paused: proxy-wasm-cpp-host turns that into
    /// `StopAllIterationAndWatermark`, so Envoy holds body and trailers *without* calling the
    /// filter until it resumes the stream.
    pub request_stopped_all: bool,
    held_request_body: Vec<u8>,
    held_request_trailers: Option<Headers>,
    pub response_stopped_all: bool,
    held_response_body: Vec<u8>,
    held_response_trailers: Option<Headers>,
    pub request_end_seen: bool,
    pub request_trailers_seen: bool,
    pub upstream: Upstream,
    pub response_paused: bool,
    pub response_end_seen: bool,
    pub downstream: Downstream,
    /// The guest's local reply, as it sent it (before its own response callbacks ran on it).
    pub local_reply: Option<LocalReply>,
    pub local_replies_sent: usize,
    /// The request ended without reaching the upstream: local reply or reset.
    pub request_done: bool,
    pub upstream_reset: bool,
    pub closed_by_guest: bool,
    pub finished: bool,
}

pub struct Host {
    vms: Vec<Worker>,
    shared: SharedRef,
    flows: HashMap<StreamId, Flow>,
    responder: Responder,
}

/// The result of a step the test drove: the callback's answer (None: the guest does not
/// implement it, or the stream no longer takes this step, e.g. after a local reply).
pub type Step = Option<Action>;

impl Host {
    /// A builder for a host running the pag0 plugin with this plugin configuration (JSON).
    pub fn builder(plugin_configuration: impl Into<Vec<u8>>) -> HostBuilder {
        HostBuilder {
            module: None,
            plugin_configuration: plugin_configuration.into(),
            vm_configuration: Vec::new(),
            vms: 1,
            vm_id: "pag0".into(),
            root_id: "pag0".into(),
            clusters: Vec::new(),
            // 2026-01-05T12:00:00Z, a Monday.
            now_nanos: 1_767_614_400 * 1_000_000_000,
            responder: None,
        }
    }

    /// One VM running the pag0 plugin; panics (failing the test) if it does not start.
    pub fn new(plugin_configuration: &str) -> Host {
        match Host::builder(plugin_configuration).build() {
            Ok(h) => h,
            Err(e) => panic!("the host did not start: {e}"),
        }
    }

    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    pub fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    pub fn log(&self) -> Vec<LogLine> {
        lock(&self.shared).log.clone()
    }

    pub fn log_text(&self) -> String {
        self.log()
            .iter()
            .map(|l| format!("[vm{} {:?}] {}\n", l.vm, l.level, l.message))
            .collect()
    }

    pub fn metrics(&self) -> BTreeMap<String, i64> {
        lock(&self.shared).metrics_snapshot()
    }

    /// A metric's value; 0 when the guest never defined it.
    pub fn metric(&self, name: &str) -> i64 {
        self.metrics().get(name).copied().unwrap_or(0)
    }

    pub fn now_unix_nanos(&self) -> u64 {
        lock(&self.shared).now_nanos
    }

    /// Set the wall clock (no ticks fire: use [`Host::advance`] for time that passes).
    pub fn set_unix_time(&mut self, secs: u64) {
        lock(&self.shared).now_nanos = secs.saturating_mul(1_000_000_000);
        self.schedule_ticks();
    }

    /// Let time pass: every VM's `on_tick` fires for each period that elapses, in time order.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now_unix_nanos().saturating_add(by.as_nanos() as u64);
        loop {
            let next = self
                .vms
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.next_tick_nanos.map(|t| (t, i)))
                .filter(|(t, _)| *t <= end)
                .min();
            let Some((t, i)) = next else { break };
            lock(&self.shared).now_nanos = t;
            let root = self.vms[i].vm.state().root_context;
            self.expect(i, "proxy_on_tick", |vm| {
                vm.call_as::<i32, ()>(root, "proxy_on_tick", root as i32)
            });
            let period = self.vms[i].vm.state().tick_period_ms as u64 * 1_000_000;
            self.vms[i].next_tick_nanos = (period > 0).then(|| t + period);
            self.dispatch();
        }
        lock(&self.shared).now_nanos = end;
        self.schedule_ticks();
    }

    fn schedule_ticks(&mut self) {
        let now = self.now_unix_nanos();
        for w in &mut self.vms {
            let period = w.vm.state().tick_period_ms as u64 * 1_000_000;
            w.next_tick_nanos = match (period, w.next_tick_nanos) {
                (0, _) => None,
                (_, Some(t)) if t > now => Some(t),
                _ => Some(now + period),
            };
        }
    }

    /// Fire `on_tick` on one VM now, as if its timer expired.
    pub fn tick(&mut self, vm: usize) {
        let root = self.vms[vm].vm.state().root_context;
        self.expect(vm, "proxy_on_tick", |v| {
            v.call_as::<i32, ()>(root, "proxy_on_tick", root as i32)
        });
        self.dispatch();
    }

    /// Fire `on_tick` on every VM now, in VM order. The filter adds what it counted to the
    /// host's counters on its tick, not per request: a test reads them after this.
    pub fn tick_all(&mut self) {
        for vm in 0..self.vms.len() {
            self.tick(vm);
        }
    }

    /// The VM stops, as when Envoy drains its configuration: the root context's `on_done`.
    /// Send that VM nothing afterwards.
    pub fn stop(&mut self, vm: usize) {
        let root = self.vms[vm].vm.state().root_context;
        self.expect(vm, "proxy_on_done", |v| {
            v.call_as::<i32, i32>(root, "proxy_on_done", root as i32)
        });
        // Envoy stops the VM's timer with it.
        self.vms[vm].vm.state_mut().tick_period_ms = 0;
        self.vms[vm].next_tick_nanos = None;
        self.dispatch();
    }

    /// Calls the guest made that nobody answered yet.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.vms
            .iter()
            .flat_map(|w| w.vm.state().calls.clone())
            .collect()
    }

    /// Answer pending `dispatch_http_call`s with the responder and tell queue owners about new
    /// items, until nothing is left to do (what Envoy's event loop does between steps).
    pub fn dispatch(&mut self) {
        for _ in 0..1000 {
            let mut did = false;
            for i in 0..self.vms.len() {
                let calls = std::mem::take(&mut self.vms[i].vm.state_mut().calls);
                for call in calls {
                    match (self.responder)(&call) {
                        CallAnswer::Hold => self.vms[i].vm.state_mut().calls.push(call),
                        answer => {
                            did = true;
                            self.deliver(i, call, answer);
                        }
                    }
                }
            }
            let ready = lock(&self.shared).ready_queues.pop_front();
            if let Some(q) = ready {
                did = true;
                let owner = lock(&self.shared)
                    .queue_mut(q)
                    .map(|q| (q.owner_vm, q.owner_ctx));
                if let Some((vm, ctx)) = owner {
                    if vm < self.vms.len() {
                        self.expect(vm, "proxy_on_queue_ready", |v| {
                            v.call_as::<(i32, i32), ()>(
                                ctx,
                                "proxy_on_queue_ready",
                                (ctx as i32, q as i32),
                            )
                        });
                    }
                }
            }
            if !did {
                return;
            }
        }
        panic!(
            "dispatch did not settle after 1000 rounds: the guest keeps making calls\n{}",
            self.log_text()
        );
    }

    /// Answer one held call (by token) now.
    pub fn answer_call(&mut self, vm: usize, token: u32, answer: CallAnswer) {
        let calls = &mut self.vms[vm].vm.state_mut().calls;
        let Some(i) = calls.iter().position(|c| c.token == token) else {
            panic!("no pending call {token} on VM {vm}");
        };
        let call = calls.remove(i);
        self.deliver(vm, call, answer);
        self.dispatch();
    }

    fn deliver(&mut self, vm: usize, call: HttpCall, answer: CallAnswer) {
        let reply = match answer {
            CallAnswer::Response {
                headers,
                body,
                trailers,
            } => CallReply {
                headers,
                body,
                trailers,
            },
            _ => CallReply::default(),
        };
        let args = (
            call.context as i32,
            call.token as i32,
            reply.headers.len() as i32,
            reply.body.len() as i32,
            reply.trailers.len() as i32,
        );
        self.vms[vm].vm.state_mut().call_reply = Some(reply);
        self.expect(vm, "proxy_on_http_call_response", |v| {
            v.call_as::<(i32, i32, i32, i32, i32), ()>(
                call.context,
                "proxy_on_http_call_response",
                args,
            )
        });
        self.vms[vm].vm.state_mut().call_reply = None;
        let id = StreamId {
            vm,
            context: call.context,
        };
        if self.flows.contains_key(&id) {
            self.after(id);
        }
    }

    fn expect<R>(
        &mut self,
        vm: usize,
        what: &str,
        f: impl FnOnce(&mut Vm) -> Result<R, GuestTrap>,
    ) -> R {
        match f(&mut self.vms[vm].vm) {
            Ok(r) => r,
            Err(t) => panic!("{what}: {t}"),
        }
    }

    // === streams, step by step ===

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
    fn after(&mut self, id: StreamId) {
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

    // === streams, in one go ===

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
