//! Pag0's filter engine: everything of the proxy-wasm filter that does not depend on the host,
//! over the pure decision core `pag0-policy`. No proxy-wasm here: the host is behind the traits
//! of [`host`], which the cdylib `pag0-plugin` implements with proxy-wasm hostcalls, so the
//! whole request lifecycle and the root's configure/tick/sync run natively in tests.
//!
//! - [`approval`]: approvals at the sidecar (create, consume) and the agent's `202`.
//! - [`cache`]: the response cache in shared data (slots, key, entries).
//! - [`config`]: the filter's JSON configuration (README.md#configuration-reference).
//! - [`root`]: parse once per `on_configure`, define metrics, the tick and the sync loop.
//! - [`filter`]: per-request decision, reservation, settlement.
//! - [`managed`]: managed mode's shared state (policy, leases, usage batches, sync election).
//! - [`counters`]: budget counters in shared data (CAS), behind a trait for native tests.
//! - [`meter`]: reads the upstream's cost report off the response as it passes.
//! - [`learned`]: learned estimates in shared data (what endpoints really cost).
//! - [`keys`]: this VM's cache of API-key digests (SHA-256 once per key, not per request).
//! - [`host`], [`reply`], [`metrics`]: the host traits and types, local replies, counters for
//!   Envoy stats.

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
