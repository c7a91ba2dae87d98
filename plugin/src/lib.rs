//! Pag0 proxy-wasm filter: the proxy-wasm glue over the filter engine `pag0-engine` (everything
//! host-independent: counters, cache, managed mode, the request lifecycle, the root's
//! configure/tick/sync) and the pure decision core `pag0-policy`.
//!
//! - [`root`]: the `RootContext` and the `HttpContext`, thin wrappers delegating to the
//!   engine's `Root` and `Filter` (mapping the engine's `Action` to proxy-wasm's).
//! - [`host`]: [`host::Hostcalls`], the engine's host traits over `proxy_wasm::hostcalls`.

/// Talc instead of wasi-libc's dlmalloc: a request allocates and frees a few dozen small
/// values (header copies, keys, reservations). Guest instructions per allowed request,
/// measured in docs/performance.md.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static TALC: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

pub mod host;
pub mod root;

proxy_wasm::main! {{
    // Installs the SDK's panic hook, so a panic (there should be none) reaches Envoy's log.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
