//! One guest VM: a wasmtime `Store<VmState>` with every import Envoy gives a proxy-wasm module
//! (ABI 0.2.1 in module `env`, Envoy's subset of WASI preview 1), and the guest's callbacks.
//!
//! All host state lives in [`VmState`] (per VM) and [`Shared`] (per host, behind an `Arc`), never
//! in globals, so any number of hosts run side by side in one test process.

use std::collections::{HashMap, HashSet};
use std::fmt;

use wasmtime::{
    format_err, Caller, Engine, Extern, Instance, Linker, Memory, Module, Store, WasmParams,
    WasmResults,
};

use crate::abi::{
    self, buffer_type, decode_map, map_type, metric_type, property_key, Headers, LogLevel, Status,
};
use crate::shared::{lock, LogLine, MetricKind, SharedRef};

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

// === guest memory ===

fn memory(caller: &mut Caller<'_, VmState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| format_err!("the guest exports no memory"))
}

fn read(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Result<Vec<u8>, Status>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    Ok(match mem.data(&*caller).get(ptr..ptr.saturating_add(len)) {
        Some(b) => Ok(b.to_vec()),
        None => Err(Status::InvalidMemoryAccess),
    })
}

fn write(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<Result<(), Status>> {
    let mem = memory(caller)?;
    let ptr = ptr as u32 as usize;
    Ok(
        match mem
            .data_mut(&mut *caller)
            .get_mut(ptr..ptr.saturating_add(bytes.len()))
        {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(Status::InvalidMemoryAccess),
        },
    )
}

/// Copy `bytes` into memory the guest allocates (`proxy_on_memory_allocate`, else `malloc`) and
/// store the pointer and size at `ptr_ptr` / `len_ptr`, as Envoy does for every returned buffer.
fn give(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ptr_ptr: i32,
    len_ptr: i32,
) -> wasmtime::Result<Status> {
    let alloc = caller
        .get_export("proxy_on_memory_allocate")
        .or_else(|| caller.get_export("malloc"))
        .and_then(Extern::into_func)
        .ok_or_else(|| {
            format_err!("the guest exports neither proxy_on_memory_allocate nor malloc")
        })?;
    let addr = alloc
        .typed::<i32, i32>(&*caller)?
        .call(&mut *caller, bytes.len() as i32)?;
    if addr == 0 && !bytes.is_empty() {
        return Ok(Status::InvalidMemoryAccess);
    }
    for r in [
        write(caller, addr, bytes)?,
        write(caller, ptr_ptr, &addr.to_le_bytes())?,
        write(caller, len_ptr, &(bytes.len() as u32).to_le_bytes())?,
    ] {
        if let Err(s) = r {
            return Ok(s);
        }
    }
    Ok(Status::Ok)
}

fn st(s: Status) -> wasmtime::Result<i32> {
    Ok(s as i32)
}

macro_rules! tri {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(s) => return Ok(s as i32),
        }
    };
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

// === the imports ===

fn linker(engine: &Engine) -> wasmtime::Result<Linker<VmState>> {
    let mut l: Linker<VmState> = Linker::new(engine);
    env(&mut l)?;
    wasi(&mut l, "wasi_snapshot_preview1")?;
    wasi(&mut l, "wasi_unstable")?;
    Ok(l)
}

fn env(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let msg = tri!(read(&mut c, ptr, len));
            let Some(level) = LogLevel::from_i32(level) else {
                return st(Status::BadArgument);
            };
            c.data()
                .log(level, String::from_utf8_lossy(&msg).into_owned());
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, VmState>, ret: i32| -> wasmtime::Result<i32> {
            let level = c.data().log_level as i32;
            tri!(write(&mut c, ret, &level.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, VmState>, ret: i32| -> wasmtime::Result<i32> {
            let now = lock(&c.data().shared).now_nanos;
            tri!(write(&mut c, ret, &now.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, VmState>, period: i32| -> wasmtime::Result<i32> {
            c.data_mut().tick_period_ms = period as u32;
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         buf: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(b) = c.data_mut().buffer(buf) else {
                return st(Status::NotFound);
            };
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start > b.len() {
                return st(Status::BadArgument);
            }
            let end = start.saturating_add(max).min(b.len());
            let bytes = b[start..end].to_vec();
            if bytes.is_empty() {
                // Envoy answers NotFound for an empty body; the SDK turns that into None.
                return st(Status::NotFound);
            }
            st(give(&mut c, &bytes, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         buf: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let data = tri!(read(&mut c, ptr, len));
            if buf == buffer_type::VM_CONFIGURATION || buf == buffer_type::PLUGIN_CONFIGURATION {
                return st(Status::BadArgument);
            }
            let Some(b) = c.data_mut().buffer(buf) else {
                return st(Status::NotFound);
            };
            let start = (start as u32 as usize).min(b.len());
            let end = start.saturating_add(size as u32 as usize).min(b.len());
            b.splice(start..end, data);
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmState>,
         map: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            let bytes = abi::encode_map(m);
            st(give(&mut c, &bytes, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let bytes = tri!(read(&mut c, ptr, len));
            let Some(pairs) = decode_map(&bytes) else {
                return st(Status::SerializationFailure);
            };
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            *m = pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            let Some(v) = m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
                return st(Status::NotFound);
            };
            st(give(&mut c, &v, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let value = tri!(read(&mut c, vp, vl));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            match m.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    m[i].1 = value;
                    let mut seen = false;
                    m.retain(|(k, _)| {
                        if *k == key {
                            !std::mem::replace(&mut seen, true)
                        } else {
                            true
                        }
                    });
                }
                None => m.push((key, value)),
            }
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            m.retain(|(k, _)| *k != key);
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let value = tri!(read(&mut c, vp, vl));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            m.push((key, value));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, VmState>,
         pp: i32,
         pl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let key = property_key(&tri!(read(&mut c, pp, pl)));
            let s = c.data_mut();
            let value = s
                .stream()
                .and_then(|st| st.properties.get(&key).cloned())
                .or_else(|| s.properties.get(&key).cloned());
            let Some(v) = value else {
                return st(Status::NotFound);
            };
            st(give(&mut c, &v, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, VmState>, pp: i32, pl: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let key = property_key(&tri!(read(&mut c, pp, pl)));
            let value = tri!(read(&mut c, vp, vl));
            let s = c.data_mut();
            match s.stream() {
                Some(st) => st.properties.insert(key, value),
                None => s.properties.insert(key, value),
            };
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8_lossy(&tri!(read(&mut c, kp, kl))).into_owned();
            let found = lock(&c.data().shared).get_data(&c.data().vm_id, &key);
            let Some((value, cas)) = found else {
                return st(Status::NotFound);
            };
            tri!(write(&mut c, ret_cas, &cas.to_le_bytes()));
            st(give(&mut c, &value, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32,
         cas: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8_lossy(&tri!(read(&mut c, kp, kl))).into_owned();
            let value = tri!(read(&mut c, vp, vl));
            let vm_id = c.data().vm_id.clone();
            let status = lock(&c.data().shared).set_data(&vm_id, &key, value, cas as u32);
            st(status)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_, VmState>, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let name = String::from_utf8_lossy(&tri!(read(&mut c, np, nl))).into_owned();
            let (vm_id, vm, ctx) = (c.data().vm_id.clone(), c.data().index, c.data().effective);
            let id = lock(&c.data().shared).register_queue(&vm_id, &name, vm, ctx);
            tri!(write(&mut c, ret, &id.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, VmState>,
         vp: i32,
         vl: i32,
         np: i32,
         nl: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let vm_id = String::from_utf8_lossy(&tri!(read(&mut c, vp, vl))).into_owned();
            let name = String::from_utf8_lossy(&tri!(read(&mut c, np, nl))).into_owned();
            let Some(id) = lock(&c.data().shared).resolve_queue(&vm_id, &name) else {
                return st(Status::NotFound);
            };
            tri!(write(&mut c, ret, &id.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, VmState>,
         id: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let item = {
                let mut sh = lock(&c.data().shared);
                let Some(q) = sh.queue_mut(id as u32) else {
                    return st(Status::NotFound);
                };
                q.items.pop_front()
            };
            let Some(item) = item else {
                return st(Status::Empty);
            };
            st(give(&mut c, &item, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_, VmState>, id: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let value = tri!(read(&mut c, vp, vl));
            let mut sh = lock(&c.data().shared);
            let Some(q) = sh.queue_mut(id as u32) else {
                return st(Status::NotFound);
            };
            q.items.push_back(value);
            sh.ready_queues.push_back(id as u32);
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, VmState>, stream: i32| -> wasmtime::Result<i32> {
            let Some(s) = c.data_mut().stream() else {
                return st(Status::NotFound);
            };
            match stream {
                abi::stream_type::REQUEST => s.resumed_request = true,
                abi::stream_type::RESPONSE => s.resumed_response = true,
                _ => return st(Status::BadArgument),
            }
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Caller<'_, VmState>, _stream: i32| -> wasmtime::Result<i32> {
            let Some(s) = c.data_mut().stream() else {
                return st(Status::NotFound);
            };
            s.closed = true;
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, VmState>,
         status: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> wasmtime::Result<i32> {
            let details = String::from_utf8_lossy(&tri!(read(&mut c, dp, dl))).into_owned();
            let body = tri!(read(&mut c, bp, bl));
            let Some(headers) = decode_map(&tri!(read(&mut c, hp, hl))) else {
                return st(Status::SerializationFailure);
            };
            let Some(s) = c.data_mut().stream() else {
                return st(Status::NotFound);
            };
            let headers = headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            s.local_replies.push(LocalReply {
                status: status as u32,
                details,
                headers,
                body,
            });
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, VmState>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let cluster = String::from_utf8_lossy(&tri!(read(&mut c, up, ul))).into_owned();
            let Some(headers) = decode_map(&tri!(read(&mut c, hp, hl))) else {
                return st(Status::SerializationFailure);
            };
            let body = tri!(read(&mut c, bp, bl));
            let Some(trailers) = decode_map(&tri!(read(&mut c, tp, tl))) else {
                return st(Status::SerializationFailure);
            };
            let s = c.data_mut();
            if !s.clusters.contains(&cluster) {
                return st(Status::BadArgument);
            }
            for required in [":method", ":path", ":authority"] {
                if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                    return st(Status::BadArgument);
                }
            }
            s.next_token += 1;
            let token = s.next_token;
            let context = s.effective;
            s.calls.push(HttpCall {
                token,
                context,
                cluster,
                headers,
                body,
                trailers,
                timeout_ms: timeout as u32,
            });
            tri!(write(&mut c, ret, &token.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    // Pag0 uses no gRPC; a guest that does gets a clear status rather than a missing import.
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { st(Status::Unimplemented) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { st(Status::Unimplemented) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            st(Status::Unimplemented)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_c: Caller<'_, VmState>, _: i32| -> wasmtime::Result<i32> { st(Status::NotFound) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |_c: Caller<'_, VmState>, _: i32| -> wasmtime::Result<i32> { st(Status::NotFound) },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_, VmState>, code: i32, mp: i32, ml: i32| -> wasmtime::Result<i32> {
            tri!(write(&mut c, code, &0u32.to_le_bytes()));
            st(give(&mut c, b"", mp, ml)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_, VmState>, ctx: i32| -> wasmtime::Result<i32> {
            let ctx = ctx as u32;
            let s = c.data_mut();
            if ctx != s.root_context && !s.streams.contains_key(&ctx) {
                return st(Status::BadArgument);
            }
            s.effective = ctx;
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { st(Status::NotFound) },
    )?;
    l.func_wrap(
        "env",
        "proxy_done",
        |_c: Caller<'_, VmState>| -> wasmtime::Result<i32> { st(Status::Ok) },
    )?;
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmState>,
         kind: i32,
         np: i32,
         nl: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let name = String::from_utf8_lossy(&tri!(read(&mut c, np, nl))).into_owned();
            let kind = match kind {
                metric_type::COUNTER => MetricKind::Counter,
                metric_type::GAUGE => MetricKind::Gauge,
                metric_type::HISTOGRAM => MetricKind::Histogram,
                _ => return st(Status::BadArgument),
            };
            let id = lock(&c.data().shared).define_metric(kind, &name);
            tri!(write(&mut c, ret, &id.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_, VmState>, id: i32, ret: i32| -> wasmtime::Result<i32> {
            let v = {
                let mut sh = lock(&c.data().shared);
                let Some(m) = sh.metric_mut(id as u32) else {
                    return st(Status::NotFound);
                };
                if m.kind == MetricKind::Histogram {
                    return st(Status::BadArgument);
                }
                m.value as u64
            };
            tri!(write(&mut c, ret, &v.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_, VmState>, id: i32, value: i64| -> wasmtime::Result<i32> {
            let mut sh = lock(&c.data().shared);
            let Some(m) = sh.metric_mut(id as u32) else {
                return st(Status::NotFound);
            };
            match m.kind {
                MetricKind::Counter => m.value = m.value.saturating_add(value),
                MetricKind::Gauge => m.value = value,
                MetricKind::Histogram => {
                    m.samples.push(value as u64);
                    m.value = m.value.saturating_add(value);
                }
            }
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, VmState>, id: i32, offset: i64| -> wasmtime::Result<i32> {
            let mut sh = lock(&c.data().shared);
            let Some(m) = sh.metric_mut(id as u32) else {
                return st(Status::NotFound);
            };
            match m.kind {
                MetricKind::Counter if offset < 0 => return st(Status::BadArgument),
                MetricKind::Histogram => return st(Status::BadArgument),
                _ => m.value = m.value.saturating_add(offset),
            }
            st(Status::Ok)
        },
    )?;
    Ok(())
}

/// The WASI preview-1 functions Envoy implements for proxy-wasm modules (proxy-wasm-cpp-host
/// `exports.cc`): stdout/stderr go to the log, the clock is the host's, randomness is seeded,
/// and there is no file system. Anything else is a missing import, as in Envoy.
fn wasi(l: &mut Linker<VmState>, m: &str) -> wasmtime::Result<()> {
    const ESUCCESS: i32 = 0;
    const EBADF: i32 = 8;
    const ENOSYS: i32 = 52;
    l.func_wrap(
        m,
        "fd_write",
        |mut c: Caller<'_, VmState>,
         fd: i32,
         iovs: i32,
         n: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> {
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Error,
                _ => return Ok(EBADF),
            };
            let Ok(list) = read(&mut c, iovs, n.saturating_mul(8))? else {
                return Ok(21);
            };
            let mut text = Vec::new();
            for iov in list.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Ok(b) = read(&mut c, ptr, len)? else {
                    return Ok(21);
                };
                text.extend_from_slice(&b);
            }
            let Ok(()) = write(&mut c, nwritten, &(text.len() as u32).to_le_bytes())? else {
                return Ok(21);
            };
            let msg = String::from_utf8_lossy(&text)
                .trim_end_matches('\n')
                .to_string();
            c.data().log(level, msg);
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_read",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            Ok(ENOSYS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_seek",
        |_c: Caller<'_, VmState>, _: i32, _: i64, _: i32, _: i32| -> wasmtime::Result<i32> {
            Ok(ENOSYS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_close",
        |_c: Caller<'_, VmState>, _: i32| -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    l.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: Caller<'_, VmState>, fd: i32, buf: i32| -> wasmtime::Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            // filetype character device (2), no flags, rights fd_write only.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8] = 1 << 6;
            let Ok(()) = write(&mut c, buf, &stat)? else {
                return Ok(21);
            };
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_fdstat_set_flags",
        |_c: Caller<'_, VmState>, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    l.func_wrap(
        m,
        "fd_prestat_get",
        |_c: Caller<'_, VmState>, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(EBADF) },
    )?;
    l.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    l.func_wrap(
        m,
        "path_open",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i64,
         _: i64,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    for (get, sizes) in [
        ("environ_get", "environ_sizes_get"),
        ("args_get", "args_sizes_get"),
    ] {
        l.func_wrap(
            m,
            get,
            |_c: Caller<'_, VmState>, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(ESUCCESS) },
        )?;
        l.func_wrap(
            m,
            sizes,
            |mut c: Caller<'_, VmState>, count: i32, size: i32| -> wasmtime::Result<i32> {
                let Ok(()) = write(&mut c, count, &0u32.to_le_bytes())? else {
                    return Ok(21);
                };
                let Ok(()) = write(&mut c, size, &0u32.to_le_bytes())? else {
                    return Ok(21);
                };
                Ok(ESUCCESS)
            },
        )?;
    }
    l.func_wrap(
        m,
        "clock_time_get",
        |mut c: Caller<'_, VmState>,
         _id: i32,
         _precision: i64,
         ret: i32|
         -> wasmtime::Result<i32> {
            let now = lock(&c.data().shared).now_nanos;
            let Ok(()) = write(&mut c, ret, &now.to_le_bytes())? else {
                return Ok(21);
            };
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "random_get",
        |mut c: Caller<'_, VmState>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            let mut bytes = Vec::with_capacity(len as u32 as usize);
            while bytes.len() < len as u32 as usize {
                bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
            }
            bytes.truncate(len as u32 as usize);
            let Ok(()) = write(&mut c, buf, &bytes)? else {
                return Ok(21);
            };
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "proc_exit",
        |_c: Caller<'_, VmState>, code: i32| -> wasmtime::Result<()> {
            Err(format_err!("the guest called proc_exit({code})"))
        },
    )?;
    l.func_wrap(
        m,
        "sched_yield",
        |_c: Caller<'_, VmState>| -> wasmtime::Result<i32> { Ok(ESUCCESS) },
    )?;
    l.func_wrap(
        m,
        "poll_oneoff",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            Ok(ENOSYS)
        },
    )?;
    Ok(())
}
