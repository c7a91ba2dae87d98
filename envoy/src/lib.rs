//! pag0-envoy: the real-Envoy side of Pag0.
//!
//! - [`mock`]: the mock upstream standing in for paid APIs (binary `pag0-mock-upstream`).
//! - [`harness`]: [`MockUpstream`] and [`Envoy`] processes for tests and the demo.
//! - [`yaml`]: the Envoy bootstrap template (also renders the shipped `envoy/standalone.yaml`).
//! - [`client`]: a blocking agent client.
//! - [`approval_demo`]: the approval part of `make demo` (managed mode, sidecar).
//! - [`policies`]: the shipped acme policy and helpers to build small test policies.

pub mod approval_demo;
pub mod client;
pub mod harness;
pub mod mock;
pub mod policies;
pub mod yaml;

pub use client::{Agent, Call, Reply};
pub use harness::{Envoy, EnvoyConfig, MockUpstream, StartFailure};
