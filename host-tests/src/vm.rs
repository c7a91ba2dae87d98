//! One guest VM: a wasmtime `Store<VmState>` with every import Envoy gives a proxy-wasm module
//! (ABI 0.2.1 in module `env`, Envoy's subset of WASI preview 1), and the guest's callbacks.
//!
//! All host state lives in [`VmState`] (per VM) and [`Shared`] (per host, behind an `Arc`), never
//! in globals, so any number of hosts run side by side in one test process.

use std::collections::{HashMap, HashSet};
use std::fmt;

use wasmtime::{format_err, Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};

use crate::abi::{buffer_type, map_type, Headers, LogLevel};
use crate::shared::{lock, LogLine, SharedRef};

/// Fuel for one callback: generous for real work, finite so a guest loop fails the test.
pub const FUEL_PER_CALLBACK: u64 = 300_000_000;

/// What the filter asked Envoy to send instead of forwarding.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for LocalReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalReply")
            .field("status", &self.status)
            .field("details", &self.details)
            .field("headers", &crate::http::show_headers(&self.headers))
            .field("body", &crate::http::show_body(&self.body))
            .finish()
    }
}

/// One `dispatch_http_call` the guest made and the host has not answered yet.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub token: u32,
    pub context: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout_ms: u32,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// The data of the http call response the guest is being told about.
#[derive(Debug, Clone, Default)]
pub struct CallReply {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// Per-HTTP-stream data that host functions read and write while the stream's callbacks run.
#[derive(Debug, Clone, Default)]
pub struct StreamData {
    pub request_headers: Headers,
    pub request_body: Vec<u8>,
    pub request_trailers: Headers,
    pub response_headers: Headers,
    pub response_body: Vec<u8>,
    pub response_trailers: Headers,
    pub properties: HashMap<String, Vec<u8>>,
    /// Every local reply the guest sent (Envoy honours the first).
    pub local_replies: Vec<LocalReply>,
    /// Set by `proxy_continue_stream`.
    pub resumed_request: bool,
    pub resumed_response: bool,
    /// Set by `proxy_close_stream`.
    pub closed: bool,
}

pub struct VmState {
    pub index: usize,
    pub vm_id: String,
    pub root_context: u32,
    pub shared: SharedRef,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    /// The context the running callback belongs to (or the one set by `set_effective_context`).
    pub effective: u32,
    pub streams: HashMap<u32, StreamData>,
    pub tick_period_ms: u32,
    next_token: u32,
    pub calls: Vec<HttpCall>,
    /// Clusters `dispatch_http_call` may name; Envoy refuses any other with BadArgument.
    pub clusters: Vec<String>,
    pub call_reply: Option<CallReply>,
    pub properties: HashMap<String, Vec<u8>>,
    pub log_level: LogLevel,
    rng: u64,
}

impl VmState {
    pub fn new(index: usize, vm_id: &str, shared: SharedRef) -> VmState {
        VmState {
            index,
            vm_id: vm_id.to_string(),
            root_context: 1,
            shared,
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            effective: 0,
            streams: HashMap::new(),
            tick_period_ms: 0,
            next_token: 0,
            calls: Vec::new(),
            clusters: Vec::new(),
            call_reply: None,
            properties: HashMap::new(),
            log_level: LogLevel::Trace,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
        }
    }

    fn stream(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective)
    }

    fn map(&mut self, map: i32) -> Option<&mut Headers> {
        match map {
            map_type::HTTP_CALL_RESPONSE_HEADERS => {
                self.call_reply.as_mut().map(|r| &mut r.headers)
            }
            map_type::HTTP_CALL_RESPONSE_TRAILERS => {
                self.call_reply.as_mut().map(|r| &mut r.trailers)
            }
            _ => {
                let s = self.stream()?;
                match map {
                    map_type::REQUEST_HEADERS => Some(&mut s.request_headers),
                    map_type::REQUEST_TRAILERS => Some(&mut s.request_trailers),
                    map_type::RESPONSE_HEADERS => Some(&mut s.response_headers),
                    map_type::RESPONSE_TRAILERS => Some(&mut s.response_trailers),
                    _ => None,
                }
            }
        }
    }

    fn buffer(&mut self, buffer: i32) -> Option<&mut Vec<u8>> {
        match buffer {
            buffer_type::REQUEST_BODY => self.stream().map(|s| &mut s.request_body),
            buffer_type::RESPONSE_BODY => self.stream().map(|s| &mut s.response_body),
            buffer_type::HTTP_CALL_RESPONSE_BODY => self.call_reply.as_mut().map(|r| &mut r.body),
            buffer_type::VM_CONFIGURATION => Some(&mut self.vm_configuration),
            buffer_type::PLUGIN_CONFIGURATION => Some(&mut self.plugin_configuration),
            _ => None,
        }
    }

    fn log(&self, level: LogLevel, message: String) {
        lock(&self.shared).log.push(LogLine {
            vm: self.index,
            level,
            message,
        });
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic per VM, so a failing test replays the same bytes.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A trap in the guest (a Rust panic under `panic = "abort"`, an out-of-bounds access, fuel
/// exhausted, `proc_exit`), with the log the guest wrote up to it.
#[derive(Debug, Clone)]
pub struct GuestTrap {
    pub vm: usize,
    pub callback: String,
    pub message: String,
    pub log: Vec<LogLine>,
}

impl fmt::Display for GuestTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "guest trapped in {} on VM {}: {}",
            self.callback, self.vm, self.message
        )?;
        writeln!(f, "--- guest log ---")?;
        for l in &self.log {
            writeln!(f, "[vm{} {:?}] {}", l.vm, l.level, l.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for GuestTrap {}

pub struct Vm {
    pub store: Store<VmState>,
    instance: Instance,
    pub trapped: Option<GuestTrap>,
}

impl Vm {
    /// Instantiate `module` and run its start function (`_initialize`, else `_start`). Fails with
    /// the names of every import this host does not provide, as Envoy would refuse the module.
    pub fn instantiate(engine: &Engine, module: &Module, state: VmState) -> wasmtime::Result<Vm> {
        let linker = linker(engine)?;
        let mut store = Store::new(engine, state);
        let provided: HashSet<(String, String)> = linker
            .iter(&mut store)
            .map(|(m, n, _)| (m.to_string(), n.to_string()))
            .collect();
        let missing: Vec<String> = module
            .imports()
            .filter(|i| !provided.contains(&(i.module().to_string(), i.name().to_string())))
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        if !missing.is_empty() {
            return Err(format_err!(
                "the module imports host functions this host (and Envoy) does not provide: {}",
                missing.join(", ")
            ));
        }
        if module.get_export("proxy_abi_version_0_2_1").is_none() {
            return Err(format_err!("the module does not export proxy_abi_version_0_2_1: not a proxy-wasm ABI 0.2.1 module"));
        }
        store.set_fuel(FUEL_PER_CALLBACK)?;
        let instance = linker.instantiate(&mut store, module)?;
        let mut vm = Vm {
            store,
            instance,
            trapped: None,
        };
        for start in ["_initialize", "_start"] {
            if vm.instance.get_func(&mut vm.store, start).is_some() {
                vm.call::<(), ()>(start, ())?;
                break;
            }
        }
        Ok(vm)
    }

    pub fn state(&self) -> &VmState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut VmState {
        self.store.data_mut()
    }

    /// Call an exported callback. `Ok(None)` when the guest does not export it (Envoy then does
    /// the default). A trap is kept: the VM is dead afterwards, as in Envoy.
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<Option<R>, GuestTrap> {
        if let Some(t) = &self.trapped {
            return Err(t.clone());
        }
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let result = func.typed::<P, R>(&self.store).and_then(|f| {
            self.store.set_fuel(FUEL_PER_CALLBACK)?;
            f.call(&mut self.store, params)
        });
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let trap = GuestTrap {
                    vm: self.store.data().index,
                    callback: name.to_string(),
                    message: format!("{e:?}"),
                    log: lock(&self.store.data().shared).log.clone(),
                };
                self.trapped = Some(trap.clone());
                Err(trap)
            }
        }
    }

    /// Run a callback as context `ctx`.
    pub fn call_as<P: WasmParams, R: WasmResults>(
        &mut self,
        ctx: u32,
        name: &str,
        params: P,
    ) -> Result<Option<R>, GuestTrap> {
        self.store.data_mut().effective = ctx;
        self.call(name, params)
    }
}

// === the imports ===

mod imports;

fn linker(engine: &Engine) -> wasmtime::Result<Linker<VmState>> {
    let mut l: Linker<VmState> = Linker::new(engine);
    imports::env(&mut l)?;
    imports::wasi(&mut l, "wasi_snapshot_preview1")?;
    imports::wasi(&mut l, "wasi_unstable")?;
    Ok(l)
}
