//! Pag0 proxy-wasm filter: thin glue between Envoy and the pure decision core `pag0-policy`.
//!
//! - [`approval`]: approvals at the sidecar (create, consume) and the agent's `202`.
//! - [`cache`]: the response cache in shared data (slots, key, entries).
//! - [`config`]: the filter's JSON configuration (README.md#configuration-reference).
//! - [`root`]: parse once per `on_configure`, define metrics.
//! - [`filter`]: per-request decision, reservation, settlement.
//! - [`managed`]: managed mode's shared state (policy, leases, usage batches, sync election).
//! - [`counters`]: budget counters in shared data (CAS), behind a trait for native tests.
//! - [`meter`]: reads the upstream's cost report off the response as it passes.
//! - [`learned`]: learned estimates in shared data (what endpoints really cost).
//! - [`keys`]: this VM's cache of API-key digests (SHA-256 once per key, not per request).
//! - [`host`], [`reply`], [`metrics`]: host calls, local replies, counters for Envoy stats.

/// Talc instead of wasi-libc's dlmalloc: a request allocates and frees a few dozen small
/// values (header copies, keys, reservations). Guest instructions per allowed request,
/// measured in docs/performance.md.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static TALC: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

pub mod approval;
pub mod cache;
pub mod config;
pub mod counters;
pub mod filter;
pub mod host;
pub mod keys;
pub mod learned;
pub mod managed;
pub mod meter;
pub mod metrics;
pub mod reply;
pub mod root;

#[cfg(test)]
mod testing;

proxy_wasm::main! {{
    // Installs the SDK's panic hook, so a panic (there should be none) reaches Envoy's log.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
