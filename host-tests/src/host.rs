//! [`Host`]: Envoy's side of the filter for one listener — N worker VMs of one module sharing one
//! store of shared data, queues and metrics, a clock the test sets, scripted `dispatch_http_call`
//! answers, and HTTP streams the test drives step by step or in one go ([`Host::run`]).
//!
//! Nothing runs on its own: a step happens when the test calls it, so two requests on two VMs
//! interleave exactly as the test writes them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::abi::{Action, Headers};
use crate::http::{Downstream, Upstream};
use crate::shared::{lock, LogLine, Shared, SharedRef};
use crate::vm::{GuestTrap, HttpCall, LocalReply, Vm};

mod builder;
mod calls;
mod exchange;
mod stream;

pub use builder::HostBuilder;

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
}
